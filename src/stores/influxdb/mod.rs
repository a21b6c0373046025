//! InfluxDB 1.x: `influxd backup -portable` per database, streamed as one tar per database, and
//! `influxd restore -portable` back.
//!
//! influxd can only back up into a folder, so each database is backed up into a private (0700)
//! temporary folder (under `work_dir` or the system temp dir), streamed from there as a tar through
//! the pipeline, and the folder is removed afterwards by a guard, also when anything fails. Only
//! one database's backup is on local disk at a time; its shards are already gzip-compressed by
//! influxd.
//!
//! Counts that describe exactly what the backup holds, read from the backup itself
//! (`counts.rs`, `tsm.rs`): while the archive uploads, each shard's TSM files are read and every
//! key's distinct timestamps before T are counted, leaving out what the files' tombstones delete.
//! T is the server's clock (the HTTP `Date` header) when the backup starts, so the points of
//! ordinary writes during the backup (timestamps of "now", at or after T) are never counted, and
//! a restore counts with the same T, so writes on the target after the restore do not disturb it
//! either. Points at or after T that reached the backup are restored but not counted. Writes or
//! deletes of older points during the backup cannot make the counts wrong: they describe the
//! shard snapshots the backup took, whatever the server holds meanwhile. (`influxd backup
//! -start/-end` cannot bound the backup instead: checked against influxd 1.6.7, a portable backup
//! with `-end T` still holds every point of a shard's TSM files.) Until this, Lifeboat counted
//! with InfluxQL before and after the backup and compared: as slow as the backup itself, twice.
//! Retention policies and continuous queries are still read over HTTP before and after; when they
//! changed during the backup it is taken again, up to three times.
//!
//! What is counted: per `<rp>.<measurement>`, `:values` (field values before T: a point with three
//! fields counts three), which is what `SELECT count(*) FROM <rp>.<measurement> WHERE time < T`
//! answers, as the restore checks it. Series are not counted: `count(*) ... GROUP BY *` answers
//! per series and cost 86 s and 6.5 GB of influxd memory for 3 M points in 30 k series
//! (scripts/bench-stores); `SHOW SERIES EXACT CARDINALITY` cannot be bounded by time and still
//! counts series whose points were deleted, so it cannot be compared.
//!
//! A restore unpacks and checks every database's archive (into the restore's private work folder)
//! before it drops any database, then drops and restores them one by one. The archives come from
//! the backup server and are not trusted (`unpack.rs`): only regular files with plain names are
//! written, and only into that folder. When the restore side's config lists `databases`, a backup
//! holding any other database is refused, so a tampered manifest cannot name a database to drop.
//!
//! Continuous queries are in the backup's metadata, but `influxd restore -db` does not bring them
//! back; Lifeboat records them (in the manifest, and as `continuous_queries.influxql` in each
//! archive for a restore by hand) and recreates them after counting, since a continuous query may
//! write into the restored data. Users and privileges are server-wide, not part of a database.
//!
//! One restore at a time per server: influxd imports a restore's metadata by copying the whole
//! metastore, changing the copy and writing it back, so a metadata change made meanwhile (another
//! restore, a new database or shard group from a live writer) can be lost. Lifeboat restores
//! databases one after the other; stop writers on the target during a restore.
//!
//! Quirks of influxd 1.6.7 handled here: `backup -db` of a missing database fails with a bare
//! "EOF" (so databases are checked over HTTP first); when the RPC port cannot be reached it retries
//! for about four minutes (so on its first retry message Lifeboat checks the server and stops at
//! once when it is down); restoring a database that has no shards reports "DB metadata not
//! changed" although it did create the database and its retention policies (accepted only in that
//! case, and only when the database then exists with the policies of the backup).

mod counts;
mod http;
mod influxd;
mod legacy;
mod tsm;
mod unpack;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use self::counts::count_portable_backup;
use self::http::{Census, ContinuousQuery, RetentionPolicy};
use self::influxd::{check_portable_backup, tar_folder};
use self::unpack::unpack;
use super::{RestoreFiles, Store};
use crate::error::{Error, Result};
use crate::layout::RunWriter;
use crate::layout::manifest::{Counts, Manifest, StoreBackup};
use crate::secret::SecretFile;
use crate::stores::{Datastore, StoreContext, StoreSettings, StoreType};

const STORE: &str = "influxdb";
/// Backups taken when retention policies or continuous queries keep changing while it runs.
const ATTEMPTS: usize = 3;
/// In each archive beside influxd's files: the database's continuous queries, one statement a line.
const CQ_FILE: &str = "continuous_queries.influxql";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    #[serde(flatten)]
    pub settings: StoreSettings,
    /// The RPC (backup) address, `host:8088`.
    pub host: String,
    /// The HTTP API, used to count series and points (default: same host, port 8086).
    pub http_url: Option<String>,
    #[serde(default)]
    pub databases: Vec<String>,
    /// Folder holding `influxd` (default: found on PATH).
    pub bin_dir: Option<PathBuf>,
    /// HTTP API user, when InfluxDB has auth enabled (with `password_file`).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

pub struct InfluxDb {
    cfg: InfluxConfig,
    http: url::Url,
    client: reqwest::Client,
    password: Option<SecretFile>,
    ctx: StoreContext,
}

fn err(message: impl Into<String>) -> Error {
    Error::store(STORE, message)
}

/// A file name for a database's archive (the real name is kept in the manifest); a backup
/// taken again because the counts moved gets a name of its own.
fn archive_name(db: &str, attempt: usize) -> String {
    match attempt {
        1 => super::database_file_name(db, "tar.zst.age"),
        n => super::database_file_name(db, &format!("attempt-{n}.tar.zst.age")),
    }
}

/// The default HTTP API address: the RPC host on port 8086.
fn default_http_url(host: &str) -> Option<String> {
    let (name, port) = host.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    if name.is_empty() {
        return None;
    }
    Some(format!("http://{name}:8086"))
}

/// The manifest's `extra`: per database, its archive, the time its counts stop at, its retention
/// policies and its continuous queries.
#[derive(Debug, Default, Serialize, Deserialize)]
struct InfluxExtra {
    databases: BTreeMap<String, String>,
    counted_before: BTreeMap<String, String>,
    retention_policies: BTreeMap<String, Vec<RetentionPolicy>>,
    continuous_queries: BTreeMap<String, Vec<ContinuousQuery>>,
    /// Per database, field values deleted before the backup that its TSM files still hold, and
    /// that `influxd restore` brings back (`counts.rs`). Absent when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    deleted_values_in_files: BTreeMap<String, u64>,
    /// Set for a backup of the original scripts: its retention policies and continuous queries
    /// are only in influxd's metadata file, so a restore takes them from there unchecked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    schema_not_recorded: bool,
}

impl InfluxDb {
    /// Backs up `db`; returns the archive's name, the time the counts stop at, the census, and
    /// how many deleted field values the files still hold.
    /// The counts come from the backup's own TSM files while the archive uploads
    /// (`counts.rs`); the retention policies and continuous queries are read before and after
    /// the backup, and it is taken again when they changed meanwhile.
    async fn backup_database(&self, db: &str, sink: &mut RunWriter<'_>) -> Result<(String, String, Census, u64)> {
        for attempt in 1..=ATTEMPTS {
            let (now, _) = self.ping().await?;
            let before = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let before_ns = chrono::DateTime::parse_from_rfc3339(&before)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| err(format!("the server's clock ({before}) is outside the range InfluxDB can store")))?;
            let (policies, continuous_queries) = self.schema(db).await?;
            let dir = self.ctx.private_dir("lifeboat-influxdb-")?;
            let scratch = self.ctx.private_dir("lifeboat-influxdb-count-")?;
            self.run_backup(db, dir.path()).await?;
            // For a restore by hand: influxd restore leaves continuous queries out.
            let statements: String = continuous_queries.iter().map(|c| format!("{}\n", c.query.replace('\n', " "))).collect();
            std::fs::write(dir.path().join(CQ_FILE), statements).map_err(|e| Error::io(format!("writing {CQ_FILE}"), e))?;
            let name = archive_name(db, attempt);
            let (reader, tar) = tar_folder(dir.path().to_path_buf());
            let counting = {
                let (dir, scratch) = (dir.path().to_path_buf(), scratch.path().to_path_buf());
                tokio::task::spawn_blocking(move || count_portable_backup(&dir, &scratch, before_ns))
            };
            let (put, counted, after) = tokio::join!(sink.put(&name, Box::new(reader)), counting, self.schema(db));
            let tarred = tar.await.map_err(|e| err(format!("archiving the influxd backup of {db}: {e}")))?;
            put?;
            tarred.map_err(|e| err(format!("archiving the influxd backup of {db}: {e}")))?;
            drop((dir, scratch));
            let counted = counted
                .map_err(|e| err(e.to_string()))?
                .map_err(|e| err(format!("{db}: {e}; the run was not completed, earlier backups are untouched")))?;
            let after = after.map_err(|e| match e {
                Error::Store { message, .. } => {
                    err(format!("{message} (after the backup of {db}); the run was not completed, earlier backups are untouched"))
                }
                other => other,
            })?;
            if after != (policies.clone(), continuous_queries.clone()) {
                // The archive just uploaded stays in the run, unused: an append-only server
                // cannot remove it, and the next attempt writes under another name.
                tracing::warn!(
                    "influxdb: the retention policies or continuous queries of {db} changed during the backup (attempt {attempt} of {ATTEMPTS}); backing it up again"
                );
                continue;
            }
            if counted.deleted_in_files > 0 {
                tracing::warn!(
                    "influxdb: {} field value(s) of {db} deleted before this backup are still in influxd's files (not compacted yet); influxd restore leaves the deletions out, so a restore of this backup brings them back and reports the difference; influxd compacts them away within hours (compact-full-write-cold-duration), take a backup after that",
                    counted.deleted_in_files
                );
            }
            let census = Census { policies, continuous_queries, counts: counted.counts };
            return Ok((name, before, census, counted.deleted_in_files));
        }
        Err(err(format!(
            "the retention policies or continuous queries of {db} kept changing during {ATTEMPTS} attempts, so no backup could record them; run it again when nobody changes them; earlier backups are untouched"
        )))
    }
}

#[async_trait]
impl Store for InfluxDb {
    async fn backup(&self, sink: &mut RunWriter<'_>) -> Result<StoreBackup> {
        let (_, server_version) = self.ping().await?;
        let databases = self.databases().await?;
        let tool_version = self.tool_version().await?;
        let mut counts = Counts::new();
        let mut extra = InfluxExtra::default();
        for db in &databases {
            tracing::info!("influxdb: backing up database {db}");
            let (archive, before, census, deleted) = self.backup_database(db, sink).await?;
            if deleted > 0 {
                extra.deleted_values_in_files.insert(db.clone(), deleted);
            }
            counts.insert(db.clone(), census.counts);
            extra.databases.insert(db.clone(), archive);
            extra.counted_before.insert(db.clone(), before);
            extra.retention_policies.insert(db.clone(), census.policies);
            extra.continuous_queries.insert(db.clone(), census.continuous_queries);
        }
        Ok(StoreBackup::new("field values", counts, &extra).tool("influxd", tool_version).tool("influxdb", server_version))
    }

    async fn adopt_legacy(&self, unpacked: &std::path::Path, out: &std::path::Path) -> Result<crate::stores::Adopted> {
        self.adopt(unpacked, out).await
    }

    async fn check_target(&self) -> Result<()> {
        self.ping().await?;
        self.tool_version().await?;
        // influxd restore talks to the RPC port: make sure it answers before anything is dropped.
        self.probe().await.map_err(|why| err(format!("InfluxDB cannot take a restore: {why}; check stores.influxdb.host")))
    }

    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts> {
        let InfluxExtra {
            databases,
            counted_before,
            retention_policies: policies,
            continuous_queries: queries,
            deleted_values_in_files,
            schema_not_recorded,
        } = manifest.extra()?;
        if schema_not_recorded {
            tracing::warn!(
                "influxdb: this backup was made by the original scripts and records no retention policies or continuous queries: influxd restore brings back those of its metadata, and they are not compared"
            );
        }

        // Unpack and check every archive before any database is dropped.
        let mut unpacked = Vec::new();
        for (db, file) in &databases {
            self.check_target_database(db)?;
            if let Some(cq) = queries.get(db).into_iter().flatten().find(|c| !is_one_cq_statement(&c.query)) {
                return Err(err(format!(
                    "the manifest's continuous query {} of {db} is not one CREATE CONTINUOUS QUERY statement: the backup is damaged or tampered with; nothing was changed",
                    cq.name.escape_debug()
                )));
            }
            let before = counted_before.get(db).ok_or_else(|| err(format!("the manifest has no count time for {db}")))?.clone();
            let want = match schema_not_recorded {
                true => None,
                false => Some(policies.get(db).ok_or_else(|| err(format!("the manifest has no retention policies for {db}")))?.clone()),
            };
            let cqs = queries.get(db).cloned().unwrap_or_default();
            // Inside the restore's own private folder, beside the downloaded files.
            let dir = StoreContext { work_dir: Some(files.dir.clone()), ..self.ctx.clone() }.private_dir("influxdb-")?;
            let raw_size =
                manifest.file(file).map(|f| f.raw_size).ok_or_else(|| err(format!("the manifest lists no file {file} for {db}")))?;
            let reader = files.open(file)?;
            let target = dir.path().to_path_buf();
            let name = file.clone();
            tokio::task::spawn_blocking(move || unpack(reader, &target, &name, raw_size)).await.map_err(|e| err(e.to_string()))??;
            let shards = check_portable_backup(dir.path(), db, file)?;
            unpacked.push((db.clone(), dir, shards, before, want, cqs));
        }

        let mut found = Counts::new();
        let differ = |db: &str, what: &str, found: String, want: String| Error::Verification {
            store: STORE.into(),
            message: format!("{db}: {what} after the restore [{found}] differ from the backup's [{want}]"),
        };
        for (db, dir, shards, before, want, cqs) in unpacked {
            self.drop_database(&db).await?;
            tracing::info!("influxdb: dropped {db}; restoring it with influxd restore");
            self.run_restore(&db, dir.path(), shards).await?;
            drop(dir);
            let empty = BTreeMap::new();
            let expected = manifest.counts.get(&db).unwrap_or(&empty);
            let census = self.settled_census(&db, &before, expected).await?;
            if let Some(n) = deleted_values_in_files.get(&db).filter(|_| &census.counts != expected) {
                return Err(Error::Verification {
                    store: STORE.into(),
                    message: format!(
                        "{db}: the restored database does not hold what was counted at backup time: the backup's files still held {n} field value(s) deleted before the backup, and influxd restore brings them back (it leaves the deletions out); delete them again, or restore a backup taken after influxd compacted them away"
                    ),
                });
            }
            let Some(want) = want else {
                found.insert(db, census.counts);
                continue;
            };
            if census.policies != want {
                let names = |p: &[RetentionPolicy]| {
                    p.iter()
                        .map(|r| format!("{}({}{})", r.name, r.duration, if r.default { ",default" } else { "" }))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                return Err(differ(&db, "retention policies", names(&census.policies), names(&want)));
            }
            // Created only once counted: a continuous query may write into the restored data.
            for cq in &cqs {
                if !census.continuous_queries.iter().any(|c| c.name == cq.name) {
                    self.query(None, &cq.query, |_| {}).await.map_err(|e| match e {
                        Error::Store { message, .. } => err(format!("{db}: recreating continuous query {}: {message}", cq.name)),
                        other => other,
                    })?;
                }
            }
            let now = self.continuous_queries(&db).await?;
            if now != cqs {
                let names = |q: &[ContinuousQuery]| q.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(" ");
                return Err(differ(&db, "continuous queries", names(&now), names(&cqs)));
            }
            found.insert(db, census.counts);
        }
        Ok(found)
    }
}

impl InfluxDb {
    /// A database the restore may drop and replace: one of `stores.influxdb.databases` when the
    /// restore side lists them, and never `_internal` otherwise (a backup never holds it then).
    fn check_target_database(&self, db: &str) -> Result<()> {
        let listed = self.cfg.databases.iter().any(|d| d == db);
        if (!self.cfg.databases.is_empty() && !listed) || (self.cfg.databases.is_empty() && db == "_internal") || db.is_empty() {
            return Err(err(format!(
                "the backup holds database `{}`, which stores.influxdb.databases does not list: nothing was changed; add it to the list to restore it",
                db.escape_debug()
            )));
        }
        Ok(())
    }
}

/// Whether a recorded continuous query is one `CREATE CONTINUOUS QUERY` statement and nothing
/// more: it is run as it stands, and it comes from the backup server.
fn is_one_cq_statement(query: &str) -> bool {
    query.get(..24).is_some_and(|start| start.eq_ignore_ascii_case("CREATE CONTINUOUS QUERY ")) && !query.contains([';', '\0'])
}

impl Datastore for InfluxDb {
    type Config = InfluxConfig;
    const TYPES: &'static [StoreType] = &[StoreType::Dump];

    fn new(cfg: InfluxConfig, ctx: &StoreContext) -> Result<InfluxDb> {
        let bad = |message: String| ctx.invalid(message);
        if default_http_url(&cfg.host).is_none() {
            return Err(bad(format!(
                "stores.influxdb.host `{}` is not host:port; expected the RPC (backup) address, e.g. 127.0.0.1:8088",
                cfg.host
            )));
        }
        let http = match &cfg.http_url {
            Some(u) => u.clone(),
            None => default_http_url(&cfg.host).expect("checked above"),
        };
        let http = url::Url::parse(&http)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| bad(format!("stores.influxdb.http_url `{http}` is not an http(s) URL; expected e.g. http://127.0.0.1:8086")))?;
        if cfg.username.is_some() != cfg.password_file.is_some() {
            return Err(bad("stores.influxdb: set both username and password_file, or neither".into()));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| err(format!("cannot set up the HTTP client: {e}")))?;
        let password = cfg.password_file.as_deref().map(|p| SecretFile::new("influxdb password", p));
        Ok(InfluxDb { cfg, http, client, password, ctx: ctx.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_plain_file_names() {
        assert_eq!(archive_name("ocrvs", 1), "db-ocrvs.tar.zst.age");
        assert_eq!(archive_name("a/b c", 1), "db-a_b_c.tar.zst.age");
        assert_eq!(archive_name("ocrvs", 2), "db-ocrvs.attempt-2.tar.zst.age");
    }

    #[test]
    fn only_one_create_continuous_query_statement_is_run() {
        assert!(is_one_cq_statement(
            "CREATE CONTINUOUS QUERY \"daily totals\" ON db BEGIN SELECT sum(count) INTO x FROM y GROUP BY time(1d) END"
        ));
        assert!(is_one_cq_statement("create continuous query cq ON db BEGIN SELECT mean(v) INTO x FROM y GROUP BY time(1h) END"));
        assert!(!is_one_cq_statement("DROP DATABASE other"));
        assert!(!is_one_cq_statement("CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT 1 END; DROP DATABASE other"));
        assert!(!is_one_cq_statement(""));
    }

    #[test]
    fn default_http_url_uses_the_rpc_host() {
        assert_eq!(default_http_url("influxdb:8088").as_deref(), Some("http://influxdb:8086"));
        assert_eq!(default_http_url("[::1]:8088").as_deref(), Some("http://[::1]:8086"));
        assert_eq!(default_http_url("influxdb"), None);
        assert_eq!(default_http_url(":8088"), None);
    }
}
