//! PostgreSQL `differential`: pgBackRest does the backups (weekly full, daily differential,
//! continuous WAL archiving) into its own repository `<server root>/<server_dir>/` on the backup
//! server; Lifeboat renders its configuration, creates the stanza when missing, checks that
//! PostgreSQL archives WAL through it, and runs it. The restore side is in `recovery.rs`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::TimeZone;
use serde::Deserialize;

use super::pgbackrest::{self, Hints, Owner, PgBackRest, Rendering, Repository};
use super::repo_info;
use super::tools::Tools;
use super::{PostgresConfig, connect, err, maintenance_db, schedule};
use crate::error::Result;
use crate::secret::SecretFile;
use crate::server::Location;
use crate::stores::{
    BackupAccess, BackupKind, DifferentialStore, RepoAccess, RepoBackup, RepoBackupDone, RepoPrepared, RepoPruned, RepoRestoreDone,
    RepoRestoreRequest, RepoVerified, Schedule, StoreContext,
};

/// The `stores.postgres` keys of `type: differential`; refused with `type: dump`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DifferentialConfig {
    /// The cluster's data directory (pgBackRest's `pg1-path`); on the restore side, the one replaced.
    pub data_directory: Option<PathBuf>,
    /// A private folder where Lifeboat writes `pgbackrest.conf` (and copies of the SSH key and
    /// known_hosts) for pgBackRest; PostgreSQL's `archive_command` names the file in it.
    pub pgbackrest_dir: Option<PathBuf>,
    /// The pgBackRest binary, 2.46 or newer (default: `pgbackrest` on PATH).
    pub pgbackrest: Option<PathBuf>,
    /// pgBackRest's name for this cluster (default `main`).
    pub stanza: Option<String>,
    /// The repository passphrase (aes-256-cbc); the same file on the backup and restore sides.
    pub passphrase_file: Option<PathBuf>,
    /// Full backups kept (default 4: four weeks of weekly fulls).
    pub retention_full: Option<u32>,
    /// Differential backups kept (default 6: a week of daily differentials).
    pub retention_diff: Option<u32>,
    /// pgBackRest's parallel processes (default 1).
    pub process_max: Option<u32>,
    /// PostgreSQL's socket folder (default: asked from the server when backing up; on restore,
    /// the restored configuration's own).
    pub socket_directory: Option<PathBuf>,
}

impl DifferentialConfig {
    /// The keys that are set, by name (for refusing them with `type: dump`).
    pub fn set_keys(&self) -> Vec<&'static str> {
        let set = [
            ("data_directory", self.data_directory.is_some()),
            ("pgbackrest_dir", self.pgbackrest_dir.is_some()),
            ("pgbackrest", self.pgbackrest.is_some()),
            ("stanza", self.stanza.is_some()),
            ("passphrase_file", self.passphrase_file.is_some()),
            ("retention_full", self.retention_full.is_some()),
            ("retention_diff", self.retention_diff.is_some()),
            ("process_max", self.process_max.is_some()),
            ("socket_directory", self.socket_directory.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect()
    }
}

/// A PostgreSQL cluster backed up by pgBackRest.
pub struct Differential {
    pub(super) url: url::Url,
    pub(super) password: Option<SecretFile>,
    pub(super) tools: Tools,
    pub(super) data_directory: PathBuf,
    pub(super) socket_directory: Option<PathBuf>,
    dir: PathBuf,
    program: PathBuf,
    stanza: String,
    passphrase: SecretFile,
    retention_full: u32,
    retention_diff: u32,
    process_max: u32,
    repository: Repository,
    server_dir: String,
    ssh_key_file: Option<PathBuf>,
    known_hosts_file: Option<PathBuf>,
    schedule: Option<Schedule>,
}

fn required<'a, T>(value: &'a Option<T>, key: &str, what: &str, ctx: &StoreContext) -> Result<&'a T> {
    value.as_ref().ok_or_else(|| ctx.invalid(format!("stores.postgres.{key} is required for type: differential ({what})")))
}

fn absolute(path: &Path, key: &str, ctx: &StoreContext) -> Result<PathBuf> {
    if !path.is_absolute() {
        return Err(ctx.invalid(format!("stores.postgres.{key} must be an absolute path, not {}", path.display())));
    }
    Ok(path.to_path_buf())
}

/// The repository on the backup server, `<server root>/<server_dir>`, reached the way the server
/// module says the server is (every kind of server must be named here); None for a kind
/// pgBackRest is not given yet (an object store: its own S3 repository type is not wired).
fn repository(server: &Location, server_dir: &str) -> Option<Repository> {
    let path = format!("{}/{server_dir}", server.root().trim_end_matches('/'));
    match server {
        Location::Sftp(s) => Some(Repository::Sftp { host: s.host.clone(), port: s.port, user: s.user.clone(), path }),
        Location::Folder { .. } => Some(Repository::Posix { path }),
        Location::S3(_) => None,
    }
}

impl Differential {
    pub fn new(cfg: &PostgresConfig, url: &url::Url, password: Option<SecretFile>, ctx: &StoreContext) -> Result<Differential> {
        let keys = &cfg.differential;
        if !cfg.databases.is_empty() {
            return Err(ctx.invalid(
                "stores.postgres.databases is not used by type: differential (pgBackRest backs up the whole cluster); remove it",
            ));
        }
        let data_directory =
            absolute(required(&keys.data_directory, "data_directory", "the cluster's data directory", ctx)?, "data_directory", ctx)?;
        let dir = absolute(
            required(&keys.pgbackrest_dir, "pgbackrest_dir", "where Lifeboat writes pgbackrest.conf", ctx)?,
            "pgbackrest_dir",
            ctx,
        )?;
        let passphrase_file = required(&keys.passphrase_file, "passphrase_file", "the repository's encryption passphrase", ctx)?;
        let stanza = keys.stanza.clone().unwrap_or_else(|| "main".into());
        if stanza.is_empty() || !stanza.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
            return Err(ctx.invalid(format!("stores.postgres.stanza `{stanza}` may hold only letters, digits, _ and -")));
        }
        let positive = |value: Option<u32>, default: u32, key: &str| -> Result<u32> {
            match value.unwrap_or(default) {
                0 => Err(ctx.invalid(format!("stores.postgres.{key} must be at least 1"))),
                n => Ok(n),
            }
        };
        if let Some(Schedule::PerKind(kinds)) = &cfg.settings.schedule {
            let full = schedule::full_cron(cfg.settings.schedule.as_ref());
            if kinds.contains_key("full") && schedule::day_matches(full, chrono::NaiveDate::MIN).is_none() {
                return Err(ctx.invalid(format!("stores.postgres.schedule.full `{full}` is not a five-field cron expression")));
            }
        }
        let server_dir = cfg.settings.server_dir.clone().unwrap_or_else(|| "postgres".into());
        let sftp = match &ctx.server {
            Location::Sftp(s) => Some(s),
            Location::Folder { .. } | Location::S3(_) => None,
        };
        let repository = repository(&ctx.server, &server_dir).ok_or_else(|| {
            ctx.invalid(
                "stores.postgres type: differential cannot use an s3:// server yet (pgBackRest's own S3 repository is not wired): use an ssh:// or file:// server for it, or type: dump",
            )
        })?;
        Ok(Differential {
            url: url.clone(),
            tools: Tools { bin_dir: cfg.bin_dir.clone(), password: password.clone() },
            password,
            data_directory,
            socket_directory: keys.socket_directory.clone(),
            dir,
            program: keys.pgbackrest.clone().unwrap_or_else(|| crate::external::PGBACKREST.name.into()),
            stanza,
            passphrase: SecretFile::new("pgBackRest repository passphrase", passphrase_file),
            retention_full: positive(keys.retention_full, 4, "retention_full")?,
            retention_diff: positive(keys.retention_diff, 6, "retention_diff")?,
            process_max: positive(keys.process_max, 1, "process_max")?,
            repository,
            server_dir,
            ssh_key_file: sftp.map(|s| s.key_file.clone()),
            known_hosts_file: sftp.map(|s| s.known_hosts_file.clone()),
            schedule: cfg.settings.schedule.clone(),
        })
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join(pgbackrest::CONFIG_FILE)
    }

    /// The `archive_command` PostgreSQL must have.
    fn archive_command(&self) -> String {
        format!("{} --config={} --stanza={} archive-push %p", self.program.display(), self.config_path().display(), self.stanza)
    }

    /// Renders pgBackRest's configuration (and key copies) for `data_directory`, owned by its
    /// owner, and returns the tool ready to run.
    pub(super) async fn tool(&self, data_directory: &Path, socket: Option<&Path>) -> Result<PgBackRest> {
        let owner = Owner::of(data_directory)?;
        let cipher_pass = self.passphrase.read()?;
        let user = self.url.username();
        let text = pgbackrest::render(&Rendering {
            dir: &self.dir,
            stanza: &self.stanza,
            repository: &self.repository,
            cipher_pass: &cipher_pass,
            retention_full: self.retention_full,
            retention_diff: self.retention_diff,
            process_max: self.process_max,
            pg_path: data_directory,
            pg_port: self.url.port().unwrap_or(5432),
            pg_user: if user.is_empty() { "postgres" } else { user },
            pg_database: &maintenance_db(&self.url),
            pg_socket: socket,
        });
        let mut files: Vec<(&'static str, Vec<u8>)> = vec![(pgbackrest::CONFIG_FILE, text.into_bytes())];
        if let (Repository::Sftp { .. }, Some(key), Some(known)) = (&self.repository, &self.ssh_key_file, &self.known_hosts_file) {
            let read = |what: &'static str, path: &Path| SecretFile::new(what, path).read().map(|s| format!("{s}\n").into_bytes());
            files.push((pgbackrest::SSH_KEY, read("SSH key", key)?));
            files.push((pgbackrest::SSH_PUBLIC_KEY, public_key(key).await?));
            files.push((pgbackrest::KNOWN_HOSTS, read("known_hosts", known)?));
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || pgbackrest::write_private(&dir, owner, &files)).await.map_err(|e| err(e.to_string()))??;
        Ok(PgBackRest {
            program: self.program.clone(),
            dir: self.dir.clone(),
            stanza: self.stanza.clone(),
            owner,
            hints: Hints {
                repository: self.repository.describe(),
                known_hosts_file: self.known_hosts_file.clone(),
                passphrase_file: self.passphrase.path.clone(),
            },
        })
    }

    /// The stanza's backups, after making sure the repository answered.
    pub(super) async fn readable_info(&self, tool: &PgBackRest) -> Result<repo_info::StanzaInfo> {
        let info = tool.info().await?;
        if info.code == 99 {
            return Err(err(pgbackrest::explain("info", &format!("ERROR: {}", info.message), &tool.hints)));
        }
        Ok(info)
    }

    pub(super) fn repo_backup(&self, b: &repo_info::InfoBackup) -> RepoBackup {
        RepoBackup {
            label: b.label.clone(),
            kind: b.kind.clone(),
            finished_at: chrono::Utc.timestamp_opt(b.timestamp.stop, 0).single().unwrap_or_default(),
            stored_bytes: b.info.repository.delta,
            path: format!("{}/backup/{}/{}", self.server_dir, self.stanza, b.label),
            // pgBackRest lists only the backups it finished.
            complete: true,
            damaged: None,
            signed_by: None,
        }
    }

    /// Checks that the server is the configured cluster and archives WAL through this
    /// configuration; returns its socket folder (where pgBackRest connects).
    async fn check_source(&self) -> Result<PathBuf> {
        let client = connect(&self.url, self.password.as_ref(), &maintenance_db(&self.url)).await?;
        let mut settings = Vec::new();
        for name in ["data_directory", "archive_mode", "archive_command", "unix_socket_directories"] {
            let row = client.query_one(&format!("SHOW {name}"), &[]).await.map_err(|e| {
                err(format!(
                    "cannot read setting {name} ({e}); stores.postgres.url must name a superuser (or a member of pg_read_all_settings)"
                ))
            })?;
            settings.push(row.get::<_, String>(0));
        }
        let [data_directory, archive_mode, archive_command, sockets] = &settings[..] else { unreachable!("four settings") };
        let host = format!("{}:{}", self.url.host_str().unwrap_or(""), self.url.port().unwrap_or(5432));
        if Path::new(data_directory) != self.data_directory {
            return Err(err(format!(
                "the server at {host} runs on data directory {data_directory}, but stores.postgres.data_directory is {}; fix one of them",
                self.data_directory.display()
            )));
        }
        let expected = self.archive_command();
        let fix = format!("set archive_mode = on and archive_command = '{expected}' in postgresql.conf, then restart PostgreSQL");
        if archive_mode != "on" && archive_mode != "always" {
            return Err(err(format!("archive_mode is {archive_mode} on {host}: WAL is not archived; {fix}")));
        }
        let config_flag = format!("--config={}", self.config_path().display());
        let stanza_flag = format!("--stanza={}", self.stanza);
        if !(archive_command.contains("archive-push") && archive_command.contains(&config_flag) && archive_command.contains(&stanza_flag)) {
            return Err(err(format!(
                "archive_command on {host} is `{archive_command}`, which does not push WAL with Lifeboat's pgBackRest configuration; {fix}"
            )));
        }
        let socket = self
            .socket_directory
            .clone()
            .unwrap_or_else(|| PathBuf::from(sockets.split(',').next().unwrap_or("/var/run/postgresql").trim()));
        Ok(socket)
    }
}

/// The public half of the SSH key pgBackRest is given: `<key>.pub`, or derived from the key.
async fn public_key(key: &Path) -> Result<Vec<u8>> {
    let mut beside = key.as_os_str().to_owned();
    beside.push(".pub");
    if let Ok(text) = std::fs::read(&beside) {
        return Ok(text);
    }
    let out = tokio::process::Command::new(crate::external::SSH_KEYGEN.name).arg("-y").arg("-f").arg(key).output().await.map_err(|e| {
        err(format!(
            "cannot run ssh-keygen to derive the public key of {} ({e}): put it beside the key as {}.pub",
            key.display(),
            key.display()
        ))
    })?;
    if !out.status.success() {
        return Err(err(format!("ssh-keygen cannot read {}: put its public key beside it as {}.pub", key.display(), key.display())));
    }
    Ok(out.stdout)
}

#[async_trait]
impl DifferentialStore for Differential {
    async fn backup(&self, kind: Option<BackupKind>, today: chrono::NaiveDate, _: &BackupAccess<'_>) -> Result<RepoBackupDone> {
        let socket = self.check_source().await?;
        let tool = self.tool(&self.data_directory, Some(&socket)).await?;
        let mut info = tool.info().await?;
        if info.missing() {
            tracing::info!("postgres: creating pgBackRest stanza {} in {}", self.stanza, self.repository.describe());
            tool.run(&["stanza-create"]).await?;
            info = tool.info().await?;
        }
        if info.code == 99 {
            return Err(err(pgbackrest::explain("info", &format!("ERROR: {}", info.message), &tool.hints)));
        }
        let has_full = info.backups.iter().any(|b| b.kind == "full");
        let (kind, why) = schedule::choose(kind, has_full, self.schedule.as_ref(), today);
        tracing::info!("postgres: pgBackRest {kind} backup ({why}) to {}", self.repository.describe());
        tool.run(&["backup", &format!("--type={kind}")]).await?;
        let before: Vec<&str> = info.backups.iter().map(|b| b.label.as_str()).collect();
        let after = self.readable_info(&tool).await?;
        let made = after.backups.iter().rev().find(|b| !before.contains(&b.label.as_str())).ok_or_else(|| {
            err("pgbackrest backup succeeded but `pgbackrest info` lists no new backup; run `lifeboat list` to check the repository")
        })?;
        Ok(RepoBackupDone { backup: self.repo_backup(made), read_bytes: made.info.delta })
    }

    async fn check_target(&self, request: RepoRestoreRequest<'_>, _: &RepoAccess<'_>) -> Result<RepoPrepared> {
        self.prepare_restore(request).await?;
        Ok(Box::new(()))
    }

    async fn restore(&self, request: RepoRestoreRequest<'_>, _: &RepoAccess<'_>, _: RepoPrepared) -> Result<RepoRestoreDone> {
        self.restore_cluster(request).await
    }

    async fn backups(&self, _: &RepoAccess<'_>) -> Result<Vec<RepoBackup>> {
        let tool = self.tool(&self.data_directory, self.socket_directory.as_deref()).await?;
        let info = self.readable_info(&tool).await?;
        Ok(info.backups.iter().map(|b| self.repo_backup(b)).collect())
    }

    /// `pgbackrest verify` checks the whole repository; `--from` names dump runs only.
    async fn verify(&self, access: &RepoAccess<'_>, from: Option<&str>, _deep: bool) -> Result<Option<RepoVerified>> {
        if from.is_some() {
            return Ok(None);
        }
        let backups = self.backups(access).await?;
        let tool = self.tool(&self.data_directory, self.socket_directory.as_deref()).await?;
        // --verbose: a sound repository is said to be (`status: ok`), not left unsaid.
        let text = tool.run(&["verify", "--output=text", "--verbose"]).await?;
        Ok(Some(RepoVerified {
            id: "repository".into(),
            files: backups.len(),
            bytes: backups.iter().map(|b| b.stored_bytes).sum(),
            problems: repo_info::verify_problems(&text),
            how: format!("{} backups, checked by pgbackrest verify", backups.len()),
        }))
    }

    /// pgBackRest `expire` with the store's `retention_full` / `retention_diff` (what each backup
    /// also runs on its own). On the backup server (a `file://` configuration) there is no data
    /// directory: pgBackRest then runs as the repository's owner, and expire never reads `pg1-path`.
    /// pgBackRest `expire` with the store's own retention (`retention_full`, `retention_diff`).
    async fn prune(&self, _access: &RepoAccess<'_>, _keep: &std::collections::BTreeSet<String>, dry_run: bool) -> Result<RepoPruned> {
        let run_as = match (&self.repository, self.data_directory.exists()) {
            (Repository::Posix { path }, false) => PathBuf::from(path),
            _ => self.data_directory.clone(),
        };
        let tool = self.tool(&run_as, self.socket_directory.as_deref()).await?;
        let before = self.readable_info(&tool).await?;
        let mut args = vec!["expire", "--log-level-console=info"];
        if dry_run {
            args.push("--dry-run");
        }
        let out = tool.run(&args).await?;
        let gone: Vec<&str> = match dry_run {
            // `[DRY-RUN] repo1: expire full backup set 20250601-010000F, 20250601-010000F_20250602-010000D`
            true => out.lines().filter(|l| l.contains("expire") && l.contains("backup set")).flat_map(|l| l.split([' ', ','])).collect(),
            false => {
                let after = self.readable_info(&tool).await?;
                before.backups.iter().map(|b| b.label.as_str()).filter(|l| !after.backups.iter().any(|a| a.label == *l)).collect()
            }
        };
        let removed: Vec<RepoBackup> =
            before.backups.iter().filter(|b| gone.contains(&b.label.as_str())).map(|b| self.repo_backup(b)).collect();
        Ok(RepoPruned { freed_bytes: removed.iter().map(|b| b.stored_bytes).sum(), removed })
    }
}
