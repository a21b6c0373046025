//! PostgreSQL `dump`: `pg_dump -Fc` per database and `pg_dumpall --roles-only` for roles.
//!
//! Counts are taken inside the very snapshot pg_dump dumps: Lifeboat opens a REPEATABLE READ
//! transaction, exports its snapshot (`pg_export_snapshot()`), counts rows there, and runs
//! `pg_dump --snapshot=...` while holding it open. Writes during the backup therefore never make
//! the counts disagree with the dump.
//!
//! pg_dump is run with `-Z0`: Lifeboat compresses (multi-threaded zstd) so pg_dump does not
//! spend its single core on gzip.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use tokio_postgres::{Client, NoTls};

use super::stderr_tail::StderrTail;
use super::{BackupSink, RestoreFiles, Store, StoreBackup};
use crate::config::{Config, PostgresConfig, SecretFile, StoreType};
use crate::error::{Error, Result};
use crate::manifest::{Counts, Manifest};

const STORE: &str = "postgres";
const ROLES_FILE: &str = "roles.sql.zst.age";

pub struct Postgres {
    cfg: PostgresConfig,
    url: url::Url,
    password: Option<SecretFile>,
}

/// Tables whose rows are counted: ordinary and partitioned tables outside the system schemas,
/// excluding tables that belong to extensions (pg_dump does not dump those as data).
const TABLES_SQL: &str = "
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1";

fn err(message: impl Into<String>) -> Error {
    Error::store(STORE, message)
}

/// A file name for a database's dump (the real name is kept in the manifest).
fn dump_file_name(db: &str) -> String {
    let safe: String = db.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect();
    format!("db-{safe}.dump.zst.age")
}

/// Makes `pg_dumpall --roles-only` output safe to replay on a server that has some roles already:
/// each `CREATE ROLE x;` tolerates an existing role, the `ALTER ROLE` after it sets attributes.
fn idempotent_roles(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 1024);
    for line in sql.lines() {
        if line.starts_with("CREATE ROLE ") && line.ends_with(';') {
            out.push_str(&format!(
                "DO $lifeboat$ BEGIN {line} EXCEPTION WHEN duplicate_object THEN NULL; END $lifeboat$;\n"
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl Postgres {
    pub fn new(cfg: PostgresConfig, config: &Config) -> Result<Postgres> {
        let url = url::Url::parse(&cfg.url).map_err(|e| Error::Config {
            file: config.file.clone(),
            message: format!("stores.postgres.url `{}` is not a URL ({e}); expected postgres://user@host:port/db", cfg.url),
        })?;
        if cfg.kind == StoreType::Differential {
            return Err(Error::Usage(
                "stores.postgres.type differential (pgBackRest) is not supported by this version; use type: dump".into(),
            ));
        }
        let password = cfg.password_file.as_deref().map(|p| SecretFile::new("postgres password", p));
        Ok(Postgres { cfg, url, password })
    }

    fn url_for(&self, db: &str) -> String {
        let mut u = self.url.clone();
        u.set_path(&format!("/{}", db));
        u.to_string()
    }

    fn maintenance_db(&self) -> String {
        let db = self.url.path().trim_start_matches('/');
        if db.is_empty() { "postgres".into() } else { db.to_string() }
    }

    fn tool(&self, name: &str) -> Result<tokio::process::Command> {
        let program = match &self.cfg.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
        let mut cmd = tokio::process::Command::new(program);
        if let Some(secret) = &self.password {
            // Via the environment of the child only: never on a command line.
            cmd.env("PGPASSWORD", secret.read()?);
        }
        cmd.kill_on_drop(true);
        Ok(cmd)
    }

    async fn tool_version(&self, name: &str) -> Result<String> {
        let out = self
            .tool(name)?
            .arg("--version")
            .output()
            .await
            .map_err(|e| err(format!("cannot run {name} ({e}): install the PostgreSQL client tools or set stores.postgres.bin_dir")))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    async fn connect(&self, db: &str) -> Result<Client> {
        let mut config: tokio_postgres::Config = self
            .cfg
            .url
            .parse()
            .map_err(|e| err(format!("stores.postgres.url cannot be used ({e})")))?;
        config.dbname(db);
        config.application_name("lifeboat");
        if let Some(secret) = &self.password {
            config.password(secret.read()?);
        }
        let host = format!("{}:{}", self.url.host_str().unwrap_or("localhost"), self.url.port().unwrap_or(5432));
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

    async fn count_rows(client: &Client, db: &str) -> Result<BTreeMap<String, u64>> {
        let tables = client.query(TABLES_SQL, &[]).await.map_err(|e| err(format!("{db}: cannot list tables: {e}")))?;
        let mut counts = BTreeMap::new();
        for row in tables {
            let table: String = row.get(0);
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .map_err(|e| err(format!("{db}: cannot count rows of {table}: {e}")))?
                .get(0);
            counts.insert(table, n as u64);
        }
        Ok(counts)
    }

    /// Dumps one database inside an exported snapshot and returns its row counts.
    async fn dump_database(&self, db: &str, sink: &mut BackupSink<'_>) -> Result<BTreeMap<String, u64>> {
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
        let counts = Self::count_rows(&client, db).await?;

        let mut child = self
            .tool("pg_dump")?
            .args(["--format=custom", "--compress=0", "--snapshot", &snapshot, "--dbname", &self.url_for(db)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run pg_dump ({e}): install the PostgreSQL client tools or set stores.postgres.bin_dir")))?;
        let stderr = StderrTail::watch(child.stderr.take().expect("piped"), |_| {});
        let stdout = child.stdout.take().expect("piped");
        crate::pipeline::widen_pipe(&stdout);
        let put = sink.put(&dump_file_name(db), Box::new(stdout)).await;
        if put.is_err() {
            let _ = child.kill().await;
        }
        let status = child.wait().await.map_err(|e| err(format!("waiting for pg_dump: {e}")))?;
        put?;
        if !status.success() {
            return Err(err(format!(
                "pg_dump of {db} failed ({status}): {}; the run was not completed, earlier backups are untouched",
                stderr.last(3)
            )));
        }
        // The snapshot may be released only now that pg_dump has finished with it.
        let _ = client.batch_execute("COMMIT").await;
        Ok(counts)
    }

    async fn dump_roles(&self, sink: &mut BackupSink<'_>) -> Result<()> {
        let mut child = self
            .tool("pg_dumpall")?
            .args(["--roles-only", "--no-role-passwords", "--dbname", &self.url_for(&self.maintenance_db())])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run pg_dumpall ({e}): install the PostgreSQL client tools")))?;
        let stderr = StderrTail::watch(child.stderr.take().expect("piped"), |_| {});
        let stdout = child.stdout.take().expect("piped");
        let put = sink.put(ROLES_FILE, Box::new(stdout)).await;
        let status = child.wait().await.map_err(|e| err(format!("waiting for pg_dumpall: {e}")))?;
        put?;
        if !status.success() {
            return Err(err(format!("pg_dumpall --roles-only failed ({status}): {}", stderr.last(3))));
        }
        Ok(())
    }

    /// Runs a client tool with `input` on its stdin, on a blocking thread.
    async fn run_with_input(&self, name: &str, args: Vec<String>, mut input: Box<dyn Read + Send>) -> Result<()> {
        let mut cmd: std::process::Command = self.tool(name)?.into_std();
        cmd.args(&args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let name = name.to_string();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut child = cmd.spawn().map_err(|e| err(format!("cannot run {name} ({e}): install the PostgreSQL client tools")))?;
            let mut stderr = child.stderr.take().expect("piped");
            let stderr_thread = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            });
            let mut stdin = child.stdin.take().expect("piped");
            let copied = std::io::copy(&mut input, &mut stdin).and_then(|_| stdin.flush());
            drop(stdin);
            let status = child.wait().map_err(|e| err(format!("waiting for {name}: {e}")))?;
            let text = stderr_thread.join().unwrap_or_default();
            let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
            if let Err(e) = copied {
                // A decode error is the cause; a broken pipe means the tool stopped first.
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(err(format!("{name}: reading the backup failed: {e}")));
                }
            }
            if !status.success() {
                return Err(err(format!("{name} failed ({status}): {tail}")));
            }
            Ok(())
        })
        .await
        .map_err(|e| err(format!("{e}")))?
    }

    async fn restore_database(&self, db: &str, file: &str, files: &RestoreFiles) -> Result<()> {
        let maintenance = self.maintenance_db();
        if db == maintenance {
            return Err(err(format!(
                "cannot restore database {db}: it is the maintenance database of stores.postgres.url; point the url at another database (e.g. /postgres or /template1)"
            )));
        }
        let admin = self.connect(&maintenance).await?;
        admin
            .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", &[&db])
            .await
            .map_err(|e| err(format!("cannot end connections to {db}: {e}")))?;
        let quoted = format!("\"{}\"", db.replace('"', "\"\""));
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            .await
            .map_err(|e| err(format!("cannot drop database {db}: {e}")))?;
        tracing::info!("postgres: dropped {db}; restoring it with pg_restore");

        // --create recreates the database with its original encoding, locale, owner and settings.
        let mut args: Vec<String> =
            vec!["--create".into(), "--exit-on-error".into(), "--dbname".into(), self.url_for(&maintenance)];
        if self.cfg.restore_jobs > 1 {
            // Parallel pg_restore needs a seekable file: decode into the private restore folder.
            let plain = files.dir.join(format!("{file}.plain"));
            let mut reader = files.open(file)?;
            let plain_path = plain.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut out = std::fs::File::create(&plain_path).map_err(|e| Error::io("writing the decoded dump", e))?;
                std::io::copy(&mut reader, &mut out).map_err(|e| err(format!("decoding {}: {e}", plain_path.display())))?;
                Ok(())
            })
            .await
            .map_err(|e| err(e.to_string()))??;
            args.push(format!("--jobs={}", self.cfg.restore_jobs));
            args.push(plain.display().to_string());
            let result = self.run_with_input("pg_restore", args, Box::new(std::io::empty())).await;
            let _ = std::fs::remove_file(&plain);
            result
        } else {
            self.run_with_input("pg_restore", args, files.open(file)?).await
        }
    }
}

#[async_trait]
impl Store for Postgres {
    fn name(&self) -> &'static str {
        STORE
    }

    fn server_dir(&self) -> Option<&str> {
        self.cfg.server_dir.as_deref()
    }

    fn kind(&self) -> StoreType {
        self.cfg.kind
    }

    async fn backup(&self, sink: &mut BackupSink<'_>) -> Result<StoreBackup> {
        let admin = self.connect(&self.maintenance_db()).await?;
        let databases = self.databases(&admin).await?;
        let server_version: String = admin
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| err(format!("cannot read the server version: {e}")))?
            .get(0);
        let mut out = StoreBackup { count_unit: "rows".into(), ..Default::default() };
        out.tool_versions.insert("pg_dump".into(), self.tool_version("pg_dump").await?);
        out.tool_versions.insert("postgresql".into(), server_version);

        self.dump_roles(sink).await?;
        let mut files = serde_json::Map::new();
        for db in &databases {
            tracing::info!("postgres: dumping database {db}");
            let counts = self.dump_database(db, sink).await?;
            out.counts.insert(db.clone(), counts);
            files.insert(db.clone(), dump_file_name(db).into());
        }
        out.extra.insert("databases".into(), serde_json::Value::Object(files));
        out.extra.insert("roles_file".into(), ROLES_FILE.into());
        Ok(out)
    }

    async fn check_target(&self) -> Result<()> {
        let admin = self.connect(&self.maintenance_db()).await?;
        admin.simple_query("SELECT 1").await.map_err(|e| err(format!("target not usable: {e}")))?;
        self.tool_version("pg_restore").await?;
        self.tool_version("psql").await?;
        Ok(())
    }

    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts> {
        let databases: BTreeMap<String, String> = manifest
            .extra
            .get("databases")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| err("the manifest lists no databases: this is not a postgres dump backup"))?;

        // Roles first, so that restored objects keep their owners and grants.
        let mut roles_sql = String::new();
        files
            .open(ROLES_FILE)?
            .read_to_string(&mut roles_sql)
            .map_err(|e| err(format!("reading {ROLES_FILE}: {e}")))?;
        let roles = idempotent_roles(&roles_sql);
        self.run_with_input(
            "psql",
            vec!["-X".into(), "-q".into(), "-v".into(), "ON_ERROR_STOP=1".into(), "--dbname".into(), self.url_for(&self.maintenance_db())],
            Box::new(std::io::Cursor::new(roles.into_bytes())),
        )
        .await?;

        let mut found = Counts::new();
        for (db, file) in &databases {
            self.restore_database(db, file, files).await?;
            let client = self.connect(db).await?;
            found.insert(db.clone(), Self::count_rows(&client, db).await?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_are_safe_file_names() {
        assert_eq!(dump_file_name("events"), "db-events.dump.zst.age");
        assert_eq!(dump_file_name("user-mgnt"), "db-user-mgnt.dump.zst.age");
        assert_eq!(dump_file_name("a/b c"), "db-a_b_c.dump.zst.age");
    }

    #[test]
    fn roles_replay_tolerates_existing_roles() {
        let sql = "SET x = 1;\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN;\n";
        let out = idempotent_roles(sql);
        assert!(out.contains("DO $lifeboat$ BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END $lifeboat$;"));
        assert!(out.contains("ALTER ROLE app WITH LOGIN;"));
        assert!(!out.contains("\nCREATE ROLE app;"));
    }
}
