//! `lifeboat status`: the newest complete backup of each configured store, its age, how many
//! newer runs are damaged or incomplete, the last failed run and the last restore drill, and the
//! space left on the backup server; with `--max-age`, a non-zero exit when any store's newest
//! backup is older (or missing), for alerting. Only the manifests from the newest run back to the
//! newest complete one are read, and one drill report per store.

use std::fmt::Write as _;

use crate::commands::Report;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::drill::{self, DrillReport};
use crate::layout::{Run, RunFolder, RunReader, RunState};
use crate::progress::human_bytes;
use crate::server::{self, BackupServer, FreeSpace, join};
use crate::stores::RepoAccess;
use crate::units::parse_duration;

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreStatus {
    pub store: String,
    pub newest: Option<String>,
    pub finished_at: Option<String>,
    pub age_seconds: Option<u64>,
    /// Runs newer than the newest complete one whose manifest is damaged (never restored).
    pub damaged_since: usize,
    /// Runs newer than the newest complete one without a manifest (failed, interrupted, running).
    pub incomplete_since: usize,
    /// The newest run that is not complete: its id and `incomplete` or `damaged`.
    pub last_failed: Option<FailedRun>,
    /// The newest restore drill report of this store, wherever it was found.
    pub last_drill: Option<DrillReport>,
    pub ok: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedRun {
    pub id: String,
    pub state: &'static str,
}

/// What `status` found; `ok` of each store is false only when `--max-age` was given and its newest
/// complete backup is older (or missing).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub server: String,
    /// Space left where the server tells it (`statvfs`), else null.
    pub free_space: Option<FreeSpace>,
    pub stores: Vec<StoreStatus>,
}

pub async fn run(config: &Config, max_age: Option<&str>) -> Result<Status> {
    let max_age = max_age.map(|m| parse_duration(m).map_err(|e| Error::Usage(format!("--max-age {e}")))).transpose()?;
    let stores = config.configured_stores(&[])?;
    let server = server::connect(&config.server).await?;
    let trust = config.signing.trust()?;
    let reader = RunReader::new(server.as_ref(), &trust);
    let folders = reader.folders().await?;
    let access = RepoAccess { server: server.as_ref(), trust: &trust, key: None };
    let now = chrono::Utc::now();
    let drills_dir = drill::local_dir(&config.file);
    let mut out = Vec::new();
    for store in &stores {
        let (newest_id, finished, damaged_since, incomplete_since, last_failed, drill_on_server) = match store.store.differential() {
            // A differential store's backups are in its repository (pgBackRest lists only finished ones).
            Some(repo) => {
                let backups = repo.backups(&access).await?;
                let newest = backups.iter().rposition(|b| b.complete);
                let since = &backups[newest.map_or(0, |i| i + 1)..];
                let newest = newest.map(|i| &backups[i]);
                let damaged = since.iter().filter(|b| b.damaged.is_some()).count();
                let incomplete = since.iter().filter(|b| !b.complete && b.damaged.is_none()).count();
                let failed = backups
                    .iter()
                    .rfind(|b| !b.complete)
                    .map(|b| FailedRun { id: b.label.clone(), state: if b.damaged.is_some() { "damaged" } else { "incomplete" } });
                let drill = drill::newest_in(server.as_ref(), &drill::repository_dir(store.folder())).await?;
                (newest.map(|b| b.label.clone()), newest.map(|b| b.finished_at.fixed_offset()), damaged, incomplete, failed, drill)
            }
            None => {
                let (newest, since) = reader.newest_complete(&folders, store.folder()).await;
                let finished =
                    newest.as_ref().and_then(|r| r.manifest()).and_then(|m| chrono::DateTime::parse_from_rfc3339(&m.finished_at).ok());
                let damaged = since.iter().filter(|r| matches!(r.state, RunState::Damaged(_))).count();
                let incomplete = since.iter().filter(|r| matches!(r.state, RunState::Incomplete)).count();
                let failed = last_failed(&folders, store.folder(), &since);
                let drill = newest_drill_on_server(server.as_ref(), &folders, store.folder()).await;
                (newest.map(|r| r.id.to_string()), finished, damaged, incomplete, failed, drill)
            }
        };
        let local = drill::newest_local(&drills_dir.join(store.name)).map(|(_, r)| r);
        let last_drill = [drill_on_server, local].into_iter().flatten().max_by(|a, b| a.finished_at.cmp(&b.finished_at));
        let age = finished.map(|f| (now - f.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64);
        let ok = match (max_age, age) {
            (Some(max), Some(age)) => age <= max.as_secs(),
            (Some(_), None) => false,
            (None, _) => true,
        };
        out.push(StoreStatus {
            store: store.name.to_string(),
            newest: newest_id,
            finished_at: finished.map(|f| f.to_rfc3339()),
            age_seconds: age,
            damaged_since,
            incomplete_since,
            last_failed,
            last_drill,
            ok,
        });
    }
    let free_space = match server.free_space().await {
        Ok(space) => space,
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    Ok(Status { server: server.describe(), free_space, stores: out })
}

impl Report for Status {
    /// The server's free space, then per store its newest complete backup, the last failed run
    /// and the last restore drill.
    fn text(&self) -> String {
        let mut out = String::new();
        match &self.free_space {
            Some(space) => {
                let _ = writeln!(
                    out,
                    "backup server {}: {} free of {}",
                    self.server,
                    human_bytes(space.available_bytes),
                    human_bytes(space.total_bytes)
                );
            }
            None => {
                let _ = writeln!(out, "backup server {}: free space unknown (the server does not tell)", self.server);
            }
        }
        for s in &self.stores {
            let since = match (s.damaged_since, s.incomplete_since) {
                (0, 0) => String::new(),
                (d, i) => format!("; since then {d} damaged and {i} incomplete run(s), see `lifeboat list`"),
            };
            let _ = match (&s.newest, s.age_seconds) {
                (Some(id), Some(age)) => writeln!(
                    out,
                    "{}: newest complete backup {id}, {:.1} h old{}{since}",
                    s.store,
                    age as f64 / 3600.0,
                    if s.ok { "" } else { " (TOO OLD)" }
                ),
                _ => writeln!(out, "{}: no complete backup{}{since}", s.store, if s.ok { "" } else { " (ALERT)" }),
            };
            if let Some(failed) = &s.last_failed {
                let _ = writeln!(out, "  last failed run: {} ({})", failed.id, failed.state);
            }
            let _ = match &s.last_drill {
                Some(d) => writeln!(
                    out,
                    "  last restore drill: {} on {}, of backup {}: {}{}",
                    d.finished_at,
                    d.host,
                    d.backup,
                    d.result,
                    if d.restored.is_empty() { String::new() } else { format!(" ({})", d.restored) }
                ),
                None => writeln!(out, "  last restore drill: none found"),
            };
        }
        out
    }

    /// With `--max-age`, an error naming every store whose newest complete backup is older (or missing).
    fn verdict(&self) -> Result<()> {
        let stale: Vec<&str> = self.stores.iter().filter(|s| !s.ok).map(|s| s.store.as_str()).collect();
        if !stale.is_empty() {
            return Err(Error::Stale(format!("no recent enough complete backup for: {}; check the backup jobs' logs", stale.join(", "))));
        }
        Ok(())
    }
}

/// The newest run of a store that is not complete: among those newer than the newest complete
/// one (already read), else the newest older folder without a manifest (no manifest is read).
fn last_failed(folders: &[RunFolder], store_folder: &str, since: &[Run]) -> Option<FailedRun> {
    if let Some(run) = since.first() {
        let state = if matches!(run.state, RunState::Damaged(_)) { "damaged" } else { "incomplete" };
        return Some(FailedRun { id: run.id.to_string(), state });
    }
    folders
        .iter()
        .rev()
        .find(|f| f.folder == store_folder && f.manifest_size.is_none())
        .map(|f| FailedRun { id: f.id.to_string(), state: "incomplete" })
}

/// The newest drill report in any of a store's run folders (the names sort by time).
async fn newest_drill_on_server(server: &dyn BackupServer, folders: &[RunFolder], store_folder: &str) -> Option<DrillReport> {
    let (folder, name) = folders
        .iter()
        .filter(|f| f.folder == store_folder)
        .filter_map(|f| f.drills.last().map(|name| (f, name)))
        .max_by(|a, b| a.1.cmp(b.1))?;
    drill::read(server, &join(&folder.path(), name)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{json, json_keys};

    fn drill() -> DrillReport {
        DrillReport {
            store: "postgres".into(),
            backup: "2025-06-01".into(),
            backup_finished_at: Some("2025-06-01T01:02:03+00:00".into()),
            started_at: "2025-06-01T05:00:00+00:00".into(),
            finished_at: "2025-06-01T05:01:00+00:00".into(),
            duration_seconds: 60.0,
            result: "ok".into(),
            error: None,
            restored: "33 rows".into(),
            counts_expected: Default::default(),
            counts_found: Default::default(),
            host: "drill-host".into(),
        }
    }

    fn status() -> Status {
        Status {
            server: "file:///srv/backups".into(),
            free_space: Some(FreeSpace { available_bytes: 5 << 30, total_bytes: 20 << 30 }),
            stores: vec![
                StoreStatus {
                    store: "postgres".into(),
                    newest: Some("2025-06-01".into()),
                    finished_at: Some("2025-06-01T01:02:03+00:00".into()),
                    age_seconds: Some(5400),
                    damaged_since: 1,
                    incomplete_since: 0,
                    last_failed: Some(FailedRun { id: "2025-06-01_9".into(), state: "damaged" }),
                    last_drill: Some(drill()),
                    ok: true,
                },
                StoreStatus {
                    store: "mongodb".into(),
                    newest: None,
                    finished_at: None,
                    age_seconds: None,
                    damaged_since: 0,
                    incomplete_since: 2,
                    last_failed: Some(FailedRun { id: "2025-06-02".into(), state: "incomplete" }),
                    last_drill: None,
                    ok: true,
                },
            ],
        }
    }

    #[test]
    fn text_says_space_then_each_store() {
        assert_eq!(
            status().text(),
            "\
backup server file:///srv/backups: 5.0 GiB free of 20.0 GiB
postgres: newest complete backup 2025-06-01, 1.5 h old; since then 1 damaged and 0 incomplete run(s), see `lifeboat list`
  last failed run: 2025-06-01_9 (damaged)
  last restore drill: 2025-06-01T05:01:00+00:00 on drill-host, of backup 2025-06-01: ok (33 rows)
mongodb: no complete backup; since then 0 damaged and 2 incomplete run(s), see `lifeboat list`
  last failed run: 2025-06-02 (incomplete)
  last restore drill: none found
"
        );
        assert!(status().verdict().is_ok());
    }

    #[test]
    fn stale_stores_are_marked_and_fail_the_command() {
        let mut status = status();
        status.free_space = None;
        status.stores.iter_mut().for_each(|s| s.ok = false);
        status.stores[0].last_drill.as_mut().unwrap().restored.clear();
        let text = status.text();
        assert!(text.starts_with("backup server file:///srv/backups: free space unknown (the server does not tell)\n"), "{text}");
        assert!(text.contains("postgres: newest complete backup 2025-06-01, 1.5 h old (TOO OLD); since then"), "{text}");
        assert!(text.contains("of backup 2025-06-01: ok\n"), "{text}");
        assert!(text.contains("mongodb: no complete backup (ALERT); since then"), "{text}");
        match status.verdict() {
            Err(Error::Stale(why)) => {
                assert_eq!(why, "no recent enough complete backup for: postgres, mongodb; check the backup jobs' logs")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_has_the_server_space_and_each_store() {
        let value: serde_json::Value = serde_json::from_str(&json(&status())).unwrap();
        assert_eq!(json_keys(&value), ["free_space", "server", "stores"]);
        assert_eq!(value["free_space"]["available_bytes"], 5u64 << 30);
        let store = &value["stores"][0];
        assert_eq!(
            json_keys(store),
            ["age_seconds", "damaged_since", "finished_at", "incomplete_since", "last_drill", "last_failed", "newest", "ok", "store"]
        );
        assert_eq!(store["last_failed"]["state"], "damaged");
        assert_eq!(store["last_drill"]["restored"], "33 rows");
        assert_eq!(value["stores"][1]["newest"], serde_json::Value::Null);
        assert_eq!(value["stores"][1]["last_drill"], serde_json::Value::Null);
    }
}
