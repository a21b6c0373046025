//! PostgreSQL `dump`: `pg_dump -Fc` per database and `pg_dumpall --roles-only` for roles.
//! (`type: differential`, through pgBackRest, is in `differential.rs` and `recovery.rs`.)
//!
//! Counts are taken inside the very snapshot pg_dump dumps: Lifeboat opens a REPEATABLE READ
//! transaction, exports its snapshot (`pg_export_snapshot()`), counts rows there, and runs
//! `pg_dump --snapshot=...` while holding it open. Writes during the backup therefore never make
//! the counts disagree with the dump.
//!
//! pg_dump is run with `-Z0`: Lifeboat compresses (multi-threaded zstd) so pg_dump does not
//! spend its single core on gzip.

mod differential;
mod dump_restore;
mod legacy;
mod pgbackrest;
mod recovery;
mod repo_info;
mod schedule;
mod sql;
mod tools;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

use super::stderr_tail::StderrTail;
use super::{Datastore, DifferentialStore, RestoreFiles, Store, StoreContext, StoreSettings, StoreType};
use crate::error::{Error, Result};
use crate::external;
use crate::layout::RunWriter;
use crate::layout::manifest::{Counts, FileEntry, Manifest, StoreBackup};
use crate::pipeline::Source;
use crate::secret::SecretFile;
use sql::{count_rows, dump_file_name, idempotent_roles};
use tools::Tools;

use differential::Differential;
pub use differential::DifferentialConfig;
pub use dump_restore::RestoreJobs;

const STORE: &str = "postgres";
const ROLES_FILE: &str = "roles.sql.zst.age";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    #[serde(flatten)]
    pub settings: StoreSettings,
    /// `postgres://user@host:port/maintenance_db`, without a password (use `password_file`).
    pub url: String,
    pub password_file: Option<PathBuf>,
    /// Databases to back up; empty means every database that accepts connections.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Folder holding pg_dump, pg_dumpall, pg_restore and psql (default: found on PATH).
    pub bin_dir: Option<PathBuf>,
    /// pg_restore jobs: a number, or `auto` (one per core for large dumps; dump_restore.rs).
    /// Above 1 the dump is first decoded to a private file in the restore's work folder.
    #[serde(default)]
    pub restore_jobs: RestoreJobs,
    /// The keys of `type: differential` (pgBackRest).
    #[serde(flatten)]
    pub differential: DifferentialConfig,
}

/// What a PostgreSQL dump's manifest records besides counts.
#[derive(Debug, Serialize, Deserialize)]
struct PostgresExtra {
    /// Database name → its dump file.
    databases: BTreeMap<String, String>,
    /// The roles (`pg_dumpall --roles-only`); a backup of the original scripts may have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roles_file: Option<String>,
    /// Set for a backup of the original scripts, whose roles file lost every role's attributes
    /// (they removed each `ALTER ROLE ... PASSWORD` line whole): a restore then creates only
    /// the roles the target lacks, and changes none it has.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    roles_without_attributes: bool,
}

pub struct Postgres {
    cfg: PostgresConfig,
    url: url::Url,
    password: Option<SecretFile>,
    tools: Tools,
    /// Set for `type: differential`: pgBackRest does the backups.
    differential: Option<Differential>,
}

fn err(message: impl Into<String>) -> Error {
    Error::store(STORE, message)
}

/// Connects to database `db` of the server `url` names.
async fn connect(url: &url::Url, password: Option<&SecretFile>, db: &str) -> Result<Client> {
    let mut config: tokio_postgres::Config = url.as_str().parse().map_err(|e| err(format!("stores.postgres.url cannot be used ({e})")))?;
    config.dbname(db);
    config.application_name("lifeboat");
    if let Some(secret) = password {
        config.password(secret.read()?);
    }
    let host = format!("{}:{}", url.host_str().unwrap_or("localhost"), url.port().unwrap_or(5432));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| err(format!("cannot connect to database {db} at {host}: {e}; check that PostgreSQL is up and stores.postgres.url")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres connection closed: {e}");
        }
    });
    Ok(client)
}

/// The database named in the url, `postgres` when none.
fn maintenance_db(url: &url::Url) -> String {
    let db = url.path().trim_start_matches('/');
    if db.is_empty() { "postgres".into() } else { db.to_string() }
}

impl Datastore for Postgres {
    type Config = PostgresConfig;
    const TYPES: &'static [StoreType] = &[StoreType::Dump, StoreType::Differential];

    fn new(cfg: PostgresConfig, ctx: &StoreContext) -> Result<Postgres> {
        let url = url::Url::parse(&cfg.url).map_err(|e| {
            ctx.invalid(format!("stores.postgres.url `{}` is not a URL ({e}); expected postgres://user@host:port/db", cfg.url))
        })?;
        if url.password().is_some() {
            return Err(ctx.invalid("stores.postgres.url contains a password: remove it and put it in stores.postgres.password_file"));
        }
        if cfg.restore_jobs == RestoreJobs::Jobs(0) {
            return Err(ctx.invalid("stores.postgres.restore_jobs must be at least 1"));
        }
        let password = cfg.password_file.as_deref().map(|p| SecretFile::new("postgres password", p));
        let tools = Tools { bin_dir: cfg.bin_dir.clone(), password: password.clone() };
        let differential = match cfg.settings.kind {
            StoreType::Differential => Some(Differential::new(&cfg, &url, password.clone(), ctx)?),
            StoreType::Dump => {
                if let Some(key) = cfg.differential.set_keys().first() {
                    return Err(
                        ctx.invalid(format!("stores.postgres.{key} is only for type: differential; remove it or set type: differential"))
                    );
                }
                None
            }
        };
        Ok(Postgres { cfg, url, password, tools, differential })
    }
}

impl Postgres {
    fn psql_args(&self) -> Vec<String> {
        let args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname"].map(String::from);
        [&args[..], &[self.url_for(&self.maintenance_db())]].concat()
    }

    /// Replays a roles file: each role created when missing, then given its attributes.
    async fn replay_roles(&self, file: &str, files: &RestoreFiles) -> Result<()> {
        let mut roles_sql = String::new();
        files.open(file)?.read_to_string(&mut roles_sql).map_err(|e| err(format!("reading {file}: {e}")))?;
        let roles = idempotent_roles(&roles_sql);
        let args = self.psql_args();
        // Roles live in the cluster's shared catalogue: another session changing a role at the
        // same moment (another restore into this cluster, an administrator) makes PostgreSQL fail
        // the statement with "tuple concurrently updated". Every statement of the replay is
        // idempotent, so it is run again, a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let replay = Box::new(std::io::Cursor::new(roles.clone().into_bytes()));
            match self.tools.run_with_input(external::PSQL.name, &args, replay).await {
                Err(e) if attempt < 4 && e.to_string().contains("tuple concurrently updated") => {
                    tracing::warn!("postgres: replaying the roles met a concurrent change of a role ({e}); replaying them again");
                    tokio::time::sleep(std::time::Duration::from_millis(300 * attempt)).await;
                }
                done => return done,
            }
        }
    }

    /// For a backup of the original scripts, whose roles file lost every role's attributes:
    /// the roles the target lacks are created (without LOGIN or a password), so that the
    /// restored objects keep their owners; the roles it has are left exactly as they are.
    async fn create_missing_roles(&self, file: &str, files: &RestoreFiles) -> Result<()> {
        let mut roles_sql = String::new();
        files.open(file)?.read_to_string(&mut roles_sql).map_err(|e| err(format!("reading {file}: {e}")))?;
        let admin = self.connect(&self.maintenance_db()).await?;
        let existing: std::collections::BTreeSet<String> = admin
            .query("SELECT quote_ident(rolname) FROM pg_roles", &[])
            .await
            .map_err(|e| err(format!("cannot list the target's roles: {e}")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let missing: Vec<String> = legacy::created_roles(&roles_sql).into_iter().filter(|r| !existing.contains(r)).collect();
        tracing::warn!(
            "postgres: this backup was made by the original scripts, which drop each role's ALTER ROLE line (its LOGIN and other attributes with the password): the target's roles are left as they are{}",
            match missing.is_empty() {
                true => String::new(),
                false => format!(
                    "; created the roles it lacks without LOGIN or a password, give them both before an application connects as them: {}",
                    missing.join(", ")
                ),
            }
        );
        for role in &missing {
            admin
                .batch_execute(&format!(
                    "DO $lifeboat$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $lifeboat$"
                ))
                .await
                .map_err(|e| err(format!("cannot create role {role}: {e}")))?;
        }
        Ok(())
    }

    fn url_for(&self, db: &str) -> String {
        let mut u = self.url.clone();
        u.set_path(&format!("/{}", db));
        u.to_string()
    }

    fn maintenance_db(&self) -> String {
        maintenance_db(&self.url)
    }

    async fn connect(&self, db: &str) -> Result<Client> {
        connect(&self.url, self.password.as_ref(), db).await
    }

    /// The databases to back up: the configured ones (each must exist) or all that accept connections.
    async fn databases(&self, client: &Client) -> Result<Vec<String>> {
        let rows = client
            .query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1", &[])
            .await
            .map_err(|e| err(format!("cannot list databases: {e}")))?;
        let existing: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if self.cfg.databases.is_empty() {
            return Ok(existing);
        }
        for db in &self.cfg.databases {
            if !existing.contains(db) {
                return Err(err(format!(
                    "database `{db}` named in stores.postgres.databases does not exist on {}; fix the list (existing: {})",
                    self.url.host_str().unwrap_or(""),
                    existing.join(", ")
                )));
            }
        }
        Ok(self.cfg.databases.clone())
    }

    /// Runs a dump tool and streams its stdout into the run as `file`. The stdout is a plain pipe
    /// that the encoder thread reads itself (`pipeline::Source::ChildPipe`): pg_dump writes
    /// 4 KiB at a time, and an async reader would be woken for each write.
    async fn put_tool_output(&self, run: &mut RunWriter<'_>, file: &str, mut cmd: tokio::process::Command, what: &str) -> Result<()> {
        let (stdout, child_end) = std::io::pipe().map_err(|e| err(format!("cannot make a pipe for {what}: {e}")))?;
        crate::pipeline::widen_pipe(&stdout);
        let spawned = cmd.stdin(Stdio::null()).stdout(child_end).stderr(Stdio::piped()).spawn();
        // The command holds our copy of the pipe's writing end: dropped now, so that the pipe
        // ends when the tool does.
        drop(cmd);
        let mut child = spawned
            .map_err(|e| err(format!("cannot run {what} ({e}): install the PostgreSQL client tools or set stores.postgres.bin_dir")))?;
        let stderr = StderrTail::watch(child.stderr.take().expect("piped"), |_| {});
        let put = run.put_source(file, Source::ChildPipe(stdout)).await;
        if put.is_err() {
            let _ = child.kill().await;
        }
        let status = child.wait().await.map_err(|e| err(format!("waiting for {what}: {e}")))?;
        put?;
        if !status.success() {
            return Err(err(format!(
                "{what} failed ({status}): {}; the run was not completed, earlier backups are untouched",
                stderr.last(3).await
            )));
        }
        Ok(())
    }

    /// Dumps one database inside an exported snapshot and returns its row counts.
    async fn dump_database(&self, db: &str, run: &mut RunWriter<'_>) -> Result<BTreeMap<String, u64>> {
        let client = self.connect(db).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| err(format!("{db}: cannot start the snapshot transaction: {e}")))?;
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| err(format!("{db}: cannot export a snapshot: {e}")))?
            .get(0);
        let counts = count_rows(&client, db).await?;
        let mut cmd = self.tools.command(external::PG_DUMP.name)?;
        cmd.args(["--format=custom", "--compress=0", "--snapshot", &snapshot, "--dbname", &self.url_for(db)]);
        self.put_tool_output(run, &dump_file_name(db), cmd, &format!("pg_dump of {db}")).await?;
        // The snapshot may be released only now that pg_dump has finished with it.
        let _ = client.batch_execute("COMMIT").await;
        Ok(counts)
    }

    async fn dump_roles(&self, run: &mut RunWriter<'_>) -> Result<()> {
        let mut cmd = self.tools.command(external::PG_DUMPALL.name)?;
        cmd.args(["--roles-only", "--no-role-passwords", "--dbname", &self.url_for(&self.maintenance_db())]);
        self.put_tool_output(run, ROLES_FILE, cmd, "pg_dumpall --roles-only").await
    }
}

#[async_trait]
impl Store for Postgres {
    fn differential(&self) -> Option<&dyn DifferentialStore> {
        self.differential.as_ref().map(|d| d as &dyn DifferentialStore)
    }

    async fn backup(&self, run: &mut RunWriter<'_>) -> Result<StoreBackup> {
        let admin = self.connect(&self.maintenance_db()).await?;
        let databases = self.databases(&admin).await?;
        let server_version: String =
            admin.query_one("SHOW server_version", &[]).await.map_err(|e| err(format!("cannot read the server version: {e}")))?.get(0);
        let pg_dump = self.tools.version(external::PG_DUMP.name).await?;

        self.dump_roles(run).await?;
        let mut counts = Counts::new();
        let mut extra = PostgresExtra { databases: BTreeMap::new(), roles_file: Some(ROLES_FILE.into()), roles_without_attributes: false };
        for db in &databases {
            tracing::info!("postgres: dumping database {db}");
            counts.insert(db.clone(), self.dump_database(db, run).await?);
            extra.databases.insert(db.clone(), dump_file_name(db));
        }
        Ok(StoreBackup::new("rows", counts, &extra).tool("pg_dump", pg_dump).tool("postgresql", server_version))
    }

    async fn check_target(&self) -> Result<()> {
        let admin = self.connect(&self.maintenance_db()).await?;
        admin.simple_query("SELECT 1").await.map_err(|e| err(format!("target not usable: {e}")))?;
        self.tools.version(external::PG_RESTORE.name).await?;
        self.tools.version(external::PSQL.name).await?;
        Ok(())
    }

    async fn adopt_legacy(&self, unpacked: &std::path::Path, out: &std::path::Path) -> Result<crate::stores::Adopted> {
        self.adopt(unpacked, out).await
    }

    fn wants_plain_file(&self, manifest: &Manifest, entry: &FileEntry, work_dir: &std::path::Path) -> bool {
        let is_dump = manifest.extra::<PostgresExtra>().is_ok_and(|extra| extra.databases.values().any(|f| f == &entry.name));
        is_dump && self.jobs_for(&entry.name, entry.raw_size, work_dir) > 1
    }

    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts> {
        let extra: PostgresExtra = manifest.extra()?;

        // Roles first, so that restored objects keep their owners and grants.
        match (&extra.roles_file, extra.roles_without_attributes) {
            (Some(file), false) => self.replay_roles(file, files).await?,
            (Some(file), true) => self.create_missing_roles(file, files).await?,
            (None, _) => tracing::warn!("postgres: this backup holds no roles; the target's roles are left as they are"),
        }

        let mut found = Counts::new();
        for (db, file) in &extra.databases {
            let raw_size = manifest.files.iter().find(|f| &f.name == file).map(|f| f.raw_size).ok_or_else(|| {
                Error::Integrity(format!("the manifest names {file} for database {db} but lists no such file: the backup is damaged"))
            })?;
            let feed = self.feed(db, file, raw_size, files)?;
            self.restore_database(db, file, feed, files).await?;
            let client = self.connect(db).await?;
            found.insert(db.clone(), count_rows(&client, db).await?);
        }
        Ok(found)
    }
}
