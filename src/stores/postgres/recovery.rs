//! Restoring a PostgreSQL cluster from pgBackRest's repository: refuse while a PostgreSQL runs on
//! the data directory, `pgbackrest restore --delta` (the newest state, a chosen backup, or a point
//! in time), start the cluster, wait until recovery has finished, and check it with a query.
//!
//! The restored cluster never archives (`--archive-mode=off`): a staging copy must not push its
//! WAL into production's repository.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::differential::Differential;
use super::pgbackrest::PgBackRest;
use super::{connect, err, maintenance_db};
use crate::error::{Error, Result};
use crate::external;
use crate::stores::{RepoRestoreDone, RepoRestoreRequest};

/// How long replaying archived WAL may take before Lifeboat stops waiting.
const RECOVERY_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// `--target-time` as pgBackRest is given it (UTC), and as seconds since the epoch.
pub fn parse_target_time(text: &str) -> Result<(String, i64)> {
    let trimmed = text.trim();
    let parsed = chrono::DateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f%#z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(&trimmed.replacen(' ', "T", 1)))
        .map_err(|_| {
            Error::Usage(format!(
                "--target-time `{text}`: expected a time with its UTC offset, e.g. '2025-06-01 14:30:00+00' or 2025-06-01T14:30:00Z"
            ))
        })?;
    let utc = parsed.with_timezone(&chrono::Utc);
    Ok((utc.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(), utc.timestamp()))
}

/// Fails when a PostgreSQL runs on `data_directory` (or left its pid file behind).
pub fn refuse_running(data_directory: &Path) -> Result<()> {
    let pid_file = data_directory.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let dir = data_directory.display();
    let pid: i32 = text.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
    if alive {
        return Err(err(format!(
            "PostgreSQL (pid {pid}) is running on data directory {dir}: stop it first (pg_ctl -D {dir} stop); nothing was changed"
        )));
    }
    Err(err(format!(
        "data directory {dir} holds postmaster.pid of a PostgreSQL not seen running here (pid {pid}); a PostgreSQL in another \
         container or host sharing this volume would not be seen: stop it first, and only if none runs anywhere, remove {}; nothing was changed",
        pid_file.display()
    )))
}

/// The backup set pgBackRest says it restored (`repo1: restore backup set <label>, recovery will start at ...`).
pub fn restored_set(output: &str) -> Option<String> {
    let rest = output.split("restore backup set ").nth(1)?;
    let label = rest.split(|c: char| c == ',' || c.is_whitespace()).next()?;
    (!label.is_empty()).then(|| label.to_string())
}

/// The last non-empty lines of a log file, joined on one line.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => format!("nothing in {}", path.display()),
        n => lines[n.saturating_sub(3)..].join(" / "),
    }
}

impl Differential {
    /// Checks the target and the repository; returns the tool and the target time for pgBackRest.
    pub(super) async fn prepare_restore(&self, request: RepoRestoreRequest<'_>) -> Result<(PgBackRest, Option<String>)> {
        let target = request.target_time.map(parse_target_time).transpose()?;
        refuse_running(&self.data_directory)?;
        let tool = self.tool(&self.data_directory, self.socket_directory.as_deref()).await?;
        let info = self.readable_info(&tool).await?;
        let repo = &tool.hints.repository;
        let Some(oldest) = info.backups.first() else {
            return Err(Error::NotFound(format!(
                "no pgBackRest backup of stanza {} in {repo}; run `lifeboat backup` on the backup side",
                tool.stanza
            )));
        };
        if let Some(label) = request.from
            && !info.backups.iter().any(|b| b.label == label)
        {
            let labels: Vec<&str> = info.backups.iter().rev().take(5).map(|b| b.label.as_str()).collect();
            return Err(Error::NotFound(format!(
                "no pgBackRest backup {label} in {repo} (newest: {}); see `lifeboat list`",
                labels.join(", ")
            )));
        }
        if let Some((text, epoch)) = &target
            && oldest.timestamp.stop > *epoch
        {
            let oldest_at = self.repo_backup(oldest).finished_at;
            return Err(Error::NotFound(format!(
                "--target-time {text} is before the oldest backup in {repo} finished ({oldest_at}); choose a later time"
            )));
        }
        Ok((tool, target.map(|(text, _)| text)))
    }

    pub(super) async fn restore_cluster(&self, request: RepoRestoreRequest<'_>) -> Result<RepoRestoreDone> {
        let started = Instant::now();
        let (tool, target) = self.prepare_restore(request).await?;
        let set = request.from.map(|label| format!("--set={label}"));
        let target_arg = target.as_ref().map(|t| format!("--target={t}"));
        let mut args = vec!["restore", "--delta", "--archive-mode=off", "--log-level-console=info"];
        args.extend(set.as_deref());
        let goal = match (&target_arg, &set) {
            (Some(t), _) => {
                args.extend(["--type=time", t, "--target-action=promote"]);
                format!("recovery target {} reached", target.as_deref().unwrap_or_default())
            }
            // Exactly the chosen backup: recovery stops as soon as it is consistent.
            (None, Some(_)) => {
                args.extend(["--type=immediate", "--target-action=promote"]);
                "the backup's own end reached".to_string()
            }
            // The newest state: the newest backup, then every archived WAL segment.
            (None, None) => "all archived WAL replayed".to_string(),
        };
        tracing::info!("postgres: pgbackrest restore into {} ({goal})", self.data_directory.display());
        let output = tool.run(&args).await?;
        let label = restored_set(&output).unwrap_or_else(|| request.from.unwrap_or("newest").to_string());
        let log = tool.dir.join("postgresql-restore.log");
        self.start(&tool, &log).await?;
        let (lsn, last_transaction, databases) = self.wait_until_promoted(&log).await?;
        let info = self.readable_info(&tool).await?;
        let stored_bytes = info.backups.iter().find(|b| b.label == label).map(|b| b.info.repository.size).unwrap_or(0);
        let recovered = format!(
            "{goal}: WAL replayed to {lsn}, {}, {databases} database(s) answer, in {:.1} s",
            if last_transaction.is_empty() {
                "no transaction in the replayed WAL".into()
            } else {
                format!("last transaction at {last_transaction}")
            },
            started.elapsed().as_secs_f64()
        );
        Ok(RepoRestoreDone { label, recovered, stored_bytes })
    }

    /// `pg_ctl start` as the data directory's owner, on the configured port (and socket folder).
    async fn start(&self, tool: &PgBackRest, log: &Path) -> Result<()> {
        let mut options = format!("-p {}", self.url.port().unwrap_or(5432));
        if let Some(socket) = &self.socket_directory {
            options.push_str(&format!(" -k '{}'", socket.display()));
        }
        let mut cmd = self.tools.command(external::PG_CTL.name)?;
        tool.owner.apply(&mut cmd);
        cmd.arg("start").arg("-D").arg(&self.data_directory).arg("-l").arg(log).args(["-w", "-t", "3600", "-o", &options]);
        let out = cmd
            .current_dir(&tool.dir)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| err(format!("cannot run pg_ctl ({e}): set stores.postgres.bin_dir to PostgreSQL's bin folder")))?;
        if !out.status.success() {
            return Err(err(format!(
                "the restored cluster did not start ({}): {}; see {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log_tail(log),
                log.display()
            )));
        }
        Ok(())
    }

    /// Waits until the started cluster has finished recovery and been promoted; returns the WAL
    /// position replayed to, the last replayed transaction's time, and how many databases answer.
    async fn wait_until_promoted(&self, log: &Path) -> Result<(String, String, i64)> {
        let started = Instant::now();
        let db = maintenance_db(&self.url);
        loop {
            if refuse_running(&self.data_directory).is_ok() || started.elapsed() > RECOVERY_LIMIT {
                return Err(err(format!(
                    "the restored cluster stopped or did not finish recovery: {}; see {}",
                    log_tail(log),
                    log.display()
                )));
            }
            if let Ok(client) = connect(&self.url, self.password.as_ref(), &db).await
                && let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
                && !row.get::<_, bool>(0)
            {
                let row = client
                    .query_one(
                        "SELECT coalesce(pg_last_wal_replay_lsn()::text, ''), coalesce(pg_last_xact_replay_timestamp()::text, ''),
                                (SELECT count(*) FROM pg_database WHERE NOT datistemplate)",
                        &[],
                    )
                    .await
                    .map_err(|e| err(format!("the restored cluster does not answer a query: {e}")))?;
                return Ok((row.get(0), row.get(1), row.get(2)));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_times_need_an_offset_and_become_utc() {
        assert_eq!(parse_target_time("2025-06-01 14:30:00.25+01").unwrap().0, "2025-06-01 13:30:00.250000+00");
        assert_eq!(parse_target_time("2025-06-01T14:30:00Z").unwrap(), ("2025-06-01 14:30:00.000000+00".into(), 1748788200));
        assert_eq!(parse_target_time("2025-06-01 14:30:00+00:00").unwrap().1, 1748788200);
        for bad in ["2025-06-01 14:30:00", "yesterday", ""] {
            assert_eq!(parse_target_time(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn the_restored_set_is_read_from_pgbackrest_output() {
        let out = "P00   INFO: repo1: restore backup set 20261124-190231F_20261124-190239D, recovery will start at 2026-11-24 19:02:39\n";
        assert_eq!(restored_set(out).as_deref(), Some("20261124-190231F_20261124-190239D"));
        assert_eq!(restored_set("nothing"), None);
    }

    #[test]
    fn a_running_or_stale_postgres_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refuse_running(dir.path()).is_ok());
        std::fs::write(dir.path().join("postmaster.pid"), format!("{}\n/data\n", std::process::id())).unwrap();
        assert!(refuse_running(dir.path()).unwrap_err().to_string().contains("is running"));
        std::fs::write(dir.path().join("postmaster.pid"), "999999999\n").unwrap();
        assert!(refuse_running(dir.path()).unwrap_err().to_string().contains("not seen running here (pid 999999999)"));
    }
}
