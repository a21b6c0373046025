//! InfluxDB 1.x: `influxd backup -portable` per database, streamed as one tar per database, and
//! `influxd restore -portable` back.
//!
//! influxd can only back up into a folder, so each database is backed up into a private (0700)
//! temporary folder (under `work_dir` or the system temp dir), streamed from there as a tar through
//! the pipeline, and the folder is removed afterwards by a guard, also when anything fails. Only
//! one database's backup is on local disk at a time; its shards are already gzip-compressed by
//! influxd.
//!
//! Counts that describe exactly what the backup holds. `influxd backup -start/-end` cannot be used
//! to bound the backup: checked against influxd 1.6.7, a portable backup with `-end T` still
//! holds every point of a shard's TSM files, even points after T (even with `-end` before all the
//! points), so the bound is not applied to points. Lifeboat therefore backs up everything and
//! bounds the *counts* instead: it takes T from the server's clock (the HTTP `Date` header), counts
//! series and field values with `time < T` per retention policy and measurement, runs the backup,
//! and counts again with the same T. Ordinary writes carry timestamps of "now", which are ≥ T, so
//! they never disturb the counts. If the two counts (or the retention policies) differ, something
//! with an older timestamp was written or deleted during the backup (a backfill, a DELETE, a shard
//! expiring): the backup is taken again, up to three times, and the run fails clearly if it never
//! settles. When both counts agree, every shard snapshot taken between them held exactly those
//! points before T, so the counts describe the backup. The restore counts with the same T, so
//! writes on the target after the restore do not disturb it either. Points at or after T that
//! reached the backup are restored but not counted.
//!
//! What is counted: per `<rp>.<measurement>`, `:values` (field values before T: a point with three
//! fields counts three). InfluxQL cannot count points (distinct timestamps) across fields; counting
//! values is stricter anyway. Series are not counted: `count(*) ... GROUP BY *` answers per series
//! and cost 86 s and 6.5 GB of influxd memory for 3 M points in 30 k series (scripts/bench-stores),
//! while one row per measurement takes seconds; `SHOW SERIES EXACT CARDINALITY` cannot be bounded
//! by time and still counts series whose points were deleted, so it cannot be compared.
//!
//! A restore unpacks and checks every database's archive (into the restore's private work folder)
//! before it drops any database, then drops and restores them one by one.
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

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use super::stderr_tail::StderrTail;
use super::{RestoreFiles, Store};
use crate::layout::RunWriter;
use crate::secret::SecretFile;
use crate::stores::{Datastore, StoreContext, StoreSettings, StoreType};
use crate::error::{Error, Result};
use crate::layout::manifest::{Counts, Manifest, StoreBackup};

const STORE: &str = "influxdb";
/// Backups taken when points older than the backup's start keep changing while it runs.
const ATTEMPTS: usize = 3;
/// Rows per chunk of a chunked /query response: bounds memory whatever the series cardinality.
const CHUNK_ROWS: usize = 1000;
/// In each archive beside influxd's files: the database's continuous queries, one statement a line.
const CQ_FILE: &str = "continuous_queries.influxql";
/// Bytes per message from the tar thread to the upload.
const TAR_CHUNK: usize = 256 * 1024;

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
    work_dir: Option<PathBuf>,
}

fn err(message: impl Into<String>) -> Error {
    Error::store(STORE, message)
}

/// A file name for a database's archive (the real name is kept in the manifest).
fn archive_name(db: &str) -> String {
    let safe: String = db.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect();
    format!("db-{safe}.tar.zst.age")
}

/// An InfluxQL identifier, always quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A name as it appears in a count item: bare when plain, quoted otherwise, so items stay unique.
fn item_part(name: &str) -> String {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        name.to_string()
    } else {
        ident(name)
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub name: String,
    pub duration: String,
    pub shard_group_duration: String,
    pub replication: u64,
    pub default: bool,
}

/// `influxd restore -db` leaves continuous queries out, so Lifeboat records and recreates them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuousQuery {
    pub name: String,
    /// The full `CREATE CONTINUOUS QUERY` statement, as `SHOW CONTINUOUS QUERIES` gives it.
    pub query: String,
}

/// What a database holds before T: its retention policies, continuous queries and the counts of
/// each measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Census {
    policies: Vec<RetentionPolicy>,
    continuous_queries: Vec<ContinuousQuery>,
    counts: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct QueryResponse {
    #[serde(default)]
    results: Vec<StatementResult>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Series {
    #[serde(default)]
    name: String,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

/// Adds up a `SELECT count(*) FROM rp./.*/` answer: one series per measurement, maybe split
/// across chunks.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, rp: &str, s: Series) {
        let key = format!("{}.{}", item_part(rp), item_part(&s.name));
        let values: u64 = s
            .values
            .iter()
            .flat_map(|row| row.iter().zip(&s.columns).filter(|(_, c)| c.as_str() != "time").filter_map(|(v, _)| v.as_u64()))
            .sum();
        *self.counts.entry(format!("{key}:values")).or_default() += values;
    }
}

/// The contents of the `<timestamp>.manifest` file of a portable backup (the fields used here).
#[derive(Debug, Deserialize)]
struct PortableManifest {
    /// `null` for a database without shards.
    files: Option<Vec<PortableFile>>,
}

#[derive(Debug, Deserialize)]
struct PortableFile {
    database: String,
    #[serde(rename = "fileName")]
    file_name: String,
}

/// Checks that `dir` holds an influxd portable backup of `db` and returns how many shard files it has.
fn check_portable_backup(dir: &Path, db: &str, archive: &str) -> Result<usize> {
    let not_it = |why: String| {
        err(format!("archive {archive} is not an influxd portable backup of database {db} ({why}); nothing was changed; restore another backup with --from ID"))
    };
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let manifests: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "manifest"))
        .collect();
    if manifests.len() != 1 {
        return Err(not_it(format!("{} .manifest files instead of one", manifests.len())));
    }
    let text = std::fs::read(&manifests[0]).map_err(|e| Error::io(format!("reading {}", manifests[0].display()), e))?;
    let manifest: PortableManifest = serde_json::from_slice(&text).map_err(|e| not_it(format!("unreadable manifest: {e}")))?;
    let files = manifest.files.unwrap_or_default();
    for f in &files {
        if f.database != db {
            return Err(not_it(format!("it holds shards of database {}", f.database)));
        }
        if !dir.join(&f.file_name).is_file() {
            return Err(not_it(format!("shard file {} is missing", f.file_name)));
        }
    }
    Ok(files.len())
}

/// Writes into a bounded channel read by the upload; blocks while the upload is behind.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(TAR_CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(TAR_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= TAR_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Streams the files of `dir` (flat, as influxd writes them) as a tar, built on a blocking thread.
/// A failure on that thread reaches the reader as an error, never as a clean end.
fn tar_stream(dir: PathBuf) -> (Box<dyn AsyncRead + Send + Unpin>, tokio::task::JoinHandle<io::Result<()>>) {
    let (tx, rx) = mpsc::channel::<io::Result<bytes::Bytes>>(8);
    let errors = tx.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let build = || -> io::Result<()> {
            let mut names: Vec<String> = std::fs::read_dir(&dir)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<_>>()?;
            names.sort();
            let mut tar = tar::Builder::new(ChannelWriter { tx, buf: Vec::with_capacity(TAR_CHUNK) });
            for name in &names {
                tar.append_path_with_name(dir.join(name), name)?;
            }
            tar.into_inner()?.flush()
        };
        let result = build();
        if let Err(e) = &result {
            let _ = errors.blocking_send(Err(io::Error::new(e.kind(), format!("archiving the influxd backup: {e}"))));
        }
        result
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (Box::new(tokio_util::io::StreamReader::new(Box::pin(stream))), handle)
}

/// Keeps the last lines of influxd's stderr and reports its "retrying" lines.
fn watch_stderr(stderr: tokio::process::ChildStderr) -> (StderrTail, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tail = StderrTail::watch(stderr, move |line| {
        tracing::debug!("influxd: {line}");
        if line.contains("failed") && line.contains("retrying") {
            let _ = tx.send(());
        }
    });
    (tail, rx)
}

/// The errors queries get from a shard while a restore loads data into it.
fn shard_loading(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("shard is disabled") || text.contains("engine is closed")
}

/// A private (0700) temporary folder, removed when dropped.
fn private_dir(parent: Option<&Path>, prefix: &str) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    match parent {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| Error::io("creating a private temporary folder for influxd (set work_dir to a folder with room)", e))
}

impl InfluxDb {
    pub fn new(cfg: InfluxConfig, ctx: &StoreContext) -> Result<InfluxDb> {
        let bad = |message: String| ctx.invalid(message);
        if default_http_url(&cfg.host).is_none() {
            return Err(bad(format!("stores.influxdb.host `{}` is not host:port; expected the RPC (backup) address, e.g. 127.0.0.1:8088", cfg.host)));
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
        Ok(InfluxDb { cfg, http, client, password, work_dir: ctx.work_dir.clone() })
    }

    fn endpoint(&self, path: &str) -> url::Url {
        let mut u = self.http.clone();
        let base = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base}/{path}"));
        u
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Error {
        err(format!("cannot reach InfluxDB's HTTP API at {} ({e}); check that InfluxDB is up and stores.influxdb.http_url", self.http))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let mut req = self.client.request(method, self.endpoint(path));
        if let (Some(user), Some(secret)) = (&self.cfg.username, &self.password) {
            req = req.basic_auth(user, Some(secret.read()?));
        }
        Ok(req)
    }

    /// Pings the HTTP API; returns the server's clock (its `Date` header) and version.
    async fn ping(&self) -> Result<(chrono::DateTime<chrono::Utc>, String)> {
        let resp = self
            .request(reqwest::Method::GET, "ping")?
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(self.unreachable(format!("HTTP {}", resp.status())));
        }
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let version = header("X-Influxdb-Version").unwrap_or_else(|| "unknown".into());
        let now = header("Date")
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(&d).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
            .ok_or_else(|| err(format!("{} answered /ping without a Date header: is it InfluxDB 1.x?", self.http)))?;
        Ok((now, version))
    }

    /// Runs one InfluxQL statement (POST, so DDL works too) and hands each series of the answer
    /// to `each`, reading the chunked response piece by piece.
    async fn query(&self, db: Option<&str>, q: &str, mut each: impl FnMut(Series)) -> Result<()> {
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("q", q).append_pair("chunked", "true").append_pair("chunk_size", &CHUNK_ROWS.to_string());
            if let Some(db) = db {
                form.append_pair("db", db);
            }
            form.finish()
        };
        let mut resp = self
            .request(reqwest::Method::POST, "query")?
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let failed = |detail: String| err(format!("query `{q}` failed: {detail}"));
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(err(format!(
                "InfluxDB at {} refused the query (HTTP {status}); set stores.influxdb.username and password_file",
                self.http
            )));
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut handle_line = |line: &[u8]| -> Result<()> {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let answer: QueryResponse =
                serde_json::from_slice(line).map_err(|e| failed(format!("HTTP {status}, unreadable answer ({e})")))?;
            if let Some(e) = answer.error {
                return Err(failed(e));
            }
            for result in answer.results {
                if let Some(e) = result.error {
                    return Err(failed(e));
                }
                result.series.into_iter().for_each(&mut each);
            }
            Ok(())
        };
        loop {
            let chunk = resp.chunk().await.map_err(|e| failed(format!("reading the answer: {e}")))?;
            let Some(chunk) = chunk else { break };
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                handle_line(&line)?;
            }
        }
        handle_line(&pending)?;
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        Ok(())
    }

    async fn show_databases(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        self.query(None, "SHOW DATABASES", |s| {
            names.extend(s.values.iter().filter_map(|row| row.first().and_then(|v| v.as_str()).map(str::to_string)))
        })
        .await?;
        Ok(names)
    }

    /// The databases to back up: the configured ones (each must exist) or all but `_internal`.
    async fn databases(&self) -> Result<Vec<String>> {
        let existing = self.show_databases().await?;
        if self.cfg.databases.is_empty() {
            return Ok(existing.into_iter().filter(|d| d != "_internal").collect());
        }
        for db in &self.cfg.databases {
            if !existing.contains(db) {
                return Err(err(format!(
                    "database `{db}` named in stores.influxdb.databases does not exist on {}; fix the list (existing: {})",
                    self.http,
                    existing.join(", ")
                )));
            }
        }
        Ok(self.cfg.databases.clone())
    }

    async fn retention_policies(&self, db: &str) -> Result<Vec<RetentionPolicy>> {
        let mut policies = Vec::new();
        self.query(None, &format!("SHOW RETENTION POLICIES ON {}", ident(db)), |s| {
            let col = |name: &str| s.columns.iter().position(|c| c == name);
            let (n, d, sg, r, def) = (col("name"), col("duration"), col("shardGroupDuration"), col("replicaN"), col("default"));
            for row in &s.values {
                let get = |i: Option<usize>| i.and_then(|i| row.get(i));
                let text = |i| get(i).and_then(|v: &serde_json::Value| v.as_str()).unwrap_or_default().to_string();
                policies.push(RetentionPolicy {
                    name: text(n),
                    duration: text(d),
                    shard_group_duration: text(sg),
                    replication: get(r).and_then(|v| v.as_u64()).unwrap_or(0),
                    default: get(def).and_then(|v| v.as_bool()).unwrap_or(false),
                });
            }
        })
        .await?;
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(policies)
    }

    async fn continuous_queries(&self, db: &str) -> Result<Vec<ContinuousQuery>> {
        let mut queries = Vec::new();
        self.query(None, "SHOW CONTINUOUS QUERIES", |s| {
            if s.name == db {
                queries.extend(s.values.iter().filter_map(|row| match (row.first()?.as_str(), row.get(1)?.as_str()) {
                    (Some(name), Some(query)) => Some(ContinuousQuery { name: name.into(), query: query.into() }),
                    _ => None,
                }));
            }
        })
        .await?;
        queries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(queries)
    }

    /// Retention policies, continuous queries, and series and field values with `time < before`
    /// per measurement. A shard being restored into fails queries for a moment (a restore on the
    /// same server, at backup time): wait for it.
    async fn census(&self, db: &str, before: &str) -> Result<Census> {
        let mut waited = Duration::ZERO;
        loop {
            match self.census_once(db, before).await {
                Err(e) if shard_loading(&e) && waited < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    waited += Duration::from_millis(250);
                }
                other => return other,
            }
        }
    }

    /// The census of a database just restored. `influxd restore` sends each shard over its own
    /// connection and exits without waiting for the server to load it; the server disables the
    /// shard while it loads it. So: wait while shards are loading, and until the counts match
    /// the backup or have not changed for a few seconds (then the caller reports the difference).
    async fn settled_census(&self, db: &str, before: &str, expected: &BTreeMap<String, u64>) -> Result<Census> {
        const LOADING_LIMIT: Duration = Duration::from_secs(30 * 60);
        const SETTLED: Duration = Duration::from_secs(5);
        let started = std::time::Instant::now();
        let mut last: Option<(Census, std::time::Instant)> = None;
        loop {
            match self.census_once(db, before).await {
                Err(e) if shard_loading(&e) => {
                    if started.elapsed() > LOADING_LIMIT {
                        return Err(err(format!(
                            "{db}: InfluxDB was still loading the restored shards after {} minutes; check its log, then run the restore again",
                            LOADING_LIMIT.as_secs() / 60
                        )));
                    }
                    last = None;
                }
                Err(e) => return Err(e),
                Ok(census) if &census.counts == expected => return Ok(census),
                Ok(census) => match &last {
                    Some((previous, since)) if *previous == census => {
                        if since.elapsed() >= SETTLED {
                            return Ok(census);
                        }
                    }
                    _ => last = Some((census, std::time::Instant::now())),
                },
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn census_once(&self, db: &str, before: &str) -> Result<Census> {
        let policies = self.retention_policies(db).await?;
        let mut tally = Tally::default();
        for rp in &policies {
            let q = format!("SELECT count(*) FROM {}.{}./.*/ WHERE time < '{before}'", ident(db), ident(&rp.name));
            self.query(Some(db), &q, |s| tally.add(&rp.name, s)).await.map_err(|e| match e {
                Error::Store { message, .. } => err(format!("{db}: counting points: {message}")),
                other => other,
            })?;
        }
        let continuous_queries = self.continuous_queries(db).await?;
        Ok(Census { policies, continuous_queries, counts: tally.counts })
    }

    fn tool(&self) -> tokio::process::Command {
        let program = match &self.cfg.bin_dir {
            Some(dir) => dir.join("influxd"),
            None => PathBuf::from("influxd"),
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.kill_on_drop(true).stdin(Stdio::null());
        cmd
    }

    fn tool_missing(e: io::Error) -> Error {
        err(format!("cannot run influxd ({e}): install InfluxDB 1.x (the influxd binary) or set stores.influxdb.bin_dir"))
    }

    async fn tool_version(&self) -> Result<String> {
        let out = self.tool().arg("version").output().await.map_err(Self::tool_missing)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Whether InfluxDB still answers on both its HTTP API and its RPC port.
    async fn probe(&self) -> std::result::Result<(), String> {
        match self.ping().await {
            Err(Error::Store { message, .. }) => return Err(message),
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
        let connect = tokio::net::TcpStream::connect(self.cfg.host.as_str());
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("its RPC port {} refuses connections: {e}", self.cfg.host)),
            Err(_) => Err(format!("its RPC port {} does not answer", self.cfg.host)),
        }
    }

    /// Runs `influxd backup -portable` for `db` into `dir`. influxd retries a lost connection for
    /// minutes; on its first retry message Lifeboat checks the server and stops when it is down.
    async fn run_backup(&self, db: &str, dir: &Path) -> Result<()> {
        let mut child = self
            .tool()
            .args(["backup", "-portable", "-host", &self.cfg.host, "-db", db])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Self::tool_missing)?;
        let (lines, mut retries) = watch_stderr(child.stderr.take().expect("piped"));
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(|e| err(format!("waiting for influxd backup: {e}")))?,
                Some(()) = retries.recv() => {
                    if let Err(why) = self.probe().await {
                        let _ = child.kill().await;
                        return Err(err(format!(
                            "InfluxDB went away during the backup of {db}: {why}; the run was not completed, earlier backups are untouched"
                        )));
                    }
                    tracing::warn!("influxdb: influxd backup of {db} is retrying: {}", lines.last(2));
                }
            }
        };
        if !status.success() {
            return Err(err(format!(
                "influxd backup of {db} failed ({status}): {}; check stores.influxdb.host (the RPC address, port 8088 by default); the run was not completed, earlier backups are untouched",
                lines.last(2)
            )));
        }
        Ok(())
    }

    /// Backs up `db` until the counts before and after agree, then streams it to `sink`.
    async fn backup_database(&self, db: &str, sink: &mut RunWriter<'_>) -> Result<(String, Census)> {
        for attempt in 1..=ATTEMPTS {
            let (now, _) = self.ping().await?;
            let before = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let first = self.census(db, &before).await?;
            let dir = private_dir(self.work_dir.as_deref(), "lifeboat-influxdb-")?;
            self.run_backup(db, dir.path()).await?;
            let second = self.census(db, &before).await.map_err(|e| match e {
                Error::Store { message, .. } => err(format!(
                    "{message} (after the backup of {db}); the run was not completed, earlier backups are untouched"
                )),
                other => other,
            })?;
            if first != second {
                tracing::warn!(
                    "influxdb: data of {db} older than {before} changed during the backup (attempt {attempt} of {ATTEMPTS}); backing it up again"
                );
                continue;
            }
            // For a restore by hand: influxd restore leaves continuous queries out.
            let statements: String = first.continuous_queries.iter().map(|c| format!("{}\n", c.query.replace('\n', " "))).collect();
            std::fs::write(dir.path().join(CQ_FILE), statements).map_err(|e| Error::io(format!("writing {CQ_FILE}"), e))?;
            let (reader, tar) = tar_stream(dir.path().to_path_buf());
            let put = sink.put(&archive_name(db), reader).await;
            let tarred = tar.await.map_err(|e| err(format!("archiving the influxd backup of {db}: {e}")))?;
            put?;
            tarred.map_err(|e| err(format!("archiving the influxd backup of {db}: {e}")))?;
            drop(dir);
            return Ok((before, first));
        }
        Err(err(format!(
            "points of {db} older than the backup's start kept changing during {ATTEMPTS} attempts (writes with old timestamps, deletes or expiring shards), so no count could describe the backup; run it again when writers are quiet; earlier backups are untouched"
        )))
    }

    async fn drop_database(&self, db: &str) -> Result<()> {
        self.query(None, &format!("DROP DATABASE {}", ident(db)), |_| {}).await
    }

    /// `influxd restore -portable` of `db` from `dir`, which holds `shards` shard files.
    async fn run_restore(&self, db: &str, dir: &Path, shards: usize) -> Result<()> {
        let out = self
            .tool()
            .args(["restore", "-portable", "-host", &self.cfg.host, "-db", db])
            .arg(dir)
            .output()
            .await
            .map_err(Self::tool_missing)?;
        if out.status.success() {
            return Ok(());
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(2)..].join(" / ");
        if text.contains("DB metadata not changed") {
            // influxd 1.6 says this after restoring a database without shards, having done it.
            if shards == 0 && self.show_databases().await?.iter().any(|d| d == db) {
                return Ok(());
            }
            return Err(err(format!(
                "influxd restore of {db} failed: {tail}; the database was dropped just before, so something recreated it: stop the services writing to InfluxDB and run the restore again"
            )));
        }
        Err(err(format!(
            "influxd restore of {db} failed ({}): {tail}; check stores.influxdb.host (the RPC address) and run the restore again",
            out.status
        )))
    }
}

#[async_trait]
impl Store for InfluxDb {
    async fn backup(&self, sink: &mut RunWriter<'_>) -> Result<StoreBackup> {
        let (_, server_version) = self.ping().await?;
        let databases = self.databases().await?;
        let mut out = StoreBackup { count_unit: "field values".into(), ..Default::default() };
        out.tool_versions.insert("influxd".into(), self.tool_version().await?);
        out.tool_versions.insert("influxdb".into(), server_version);

        let mut files = serde_json::Map::new();
        let mut counted_before = serde_json::Map::new();
        let mut policies = serde_json::Map::new();
        let mut continuous_queries = serde_json::Map::new();
        for db in &databases {
            tracing::info!("influxdb: backing up database {db}");
            let (before, census) = self.backup_database(db, sink).await?;
            out.counts.insert(db.clone(), census.counts);
            files.insert(db.clone(), archive_name(db).into());
            counted_before.insert(db.clone(), before.into());
            policies.insert(db.clone(), serde_json::to_value(&census.policies).expect("serialises"));
            continuous_queries.insert(db.clone(), serde_json::to_value(&census.continuous_queries).expect("serialises"));
        }
        out.extra.insert("databases".into(), serde_json::Value::Object(files));
        out.extra.insert("counted_before".into(), serde_json::Value::Object(counted_before));
        out.extra.insert("retention_policies".into(), serde_json::Value::Object(policies));
        out.extra.insert("continuous_queries".into(), serde_json::Value::Object(continuous_queries));
        Ok(out)
    }

    async fn check_target(&self) -> Result<()> {
        self.ping().await?;
        self.tool_version().await?;
        // influxd restore talks to the RPC port: make sure it answers before anything is dropped.
        self.probe().await.map_err(|why| err(format!("InfluxDB cannot take a restore: {why}; check stores.influxdb.host")))
    }

    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts> {
        fn extra<T: serde::de::DeserializeOwned>(manifest: &Manifest, key: &str) -> Result<T> {
            manifest
                .extra
                .get(key)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .ok_or_else(|| err(format!("the manifest has no valid `{key}`: this is not an influxdb backup made by Lifeboat")))
        }
        let databases: BTreeMap<String, String> = extra(manifest, "databases")?;
        let counted_before: BTreeMap<String, String> = extra(manifest, "counted_before")?;
        let policies: BTreeMap<String, Vec<RetentionPolicy>> = extra(manifest, "retention_policies")?;
        let queries: BTreeMap<String, Vec<ContinuousQuery>> = extra(manifest, "continuous_queries")?;

        // Unpack and check every archive before any database is dropped.
        let mut unpacked = Vec::new();
        for (db, file) in &databases {
            let before = counted_before.get(db).ok_or_else(|| err(format!("the manifest has no count time for {db}")))?.clone();
            let want = policies.get(db).ok_or_else(|| err(format!("the manifest has no retention policies for {db}")))?.clone();
            let cqs = queries.get(db).cloned().unwrap_or_default();
            let dir = private_dir(Some(&files.dir), "influxdb-")?;
            let reader = files.open(file)?;
            let target = dir.path().to_path_buf();
            let name = file.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut archive = tar::Archive::new(reader);
                archive.set_preserve_permissions(false);
                archive.unpack(&target).map_err(|e| err(format!("unpacking {name}: {e}")))?;
                // Read to the end so that a damaged tail is noticed too.
                io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| err(format!("reading {name}: {e}")))?;
                Ok(())
            })
            .await
            .map_err(|e| err(e.to_string()))??;
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
            let census = self.settled_census(&db, &before, manifest.counts.get(&db).unwrap_or(&empty)).await?;
            if census.policies != want {
                let names = |p: &[RetentionPolicy]| p.iter().map(|r| format!("{}({}{})", r.name, r.duration, if r.default { ",default" } else { "" })).collect::<Vec<_>>().join(" ");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_when_needed() {
        assert_eq!(ident("my \"db\""), "\"my \\\"db\\\"\"");
        assert_eq!(item_part("cpu_load-1"), "cpu_load-1");
        assert_eq!(item_part("a.b"), "\"a.b\"");
        assert_eq!(archive_name("ocrvs"), "db-ocrvs.tar.zst.age");
        assert_eq!(archive_name("a/b c"), "db-a_b_c.tar.zst.age");
    }

    #[test]
    fn default_http_url_uses_the_rpc_host() {
        assert_eq!(default_http_url("influxdb:8088").as_deref(), Some("http://influxdb:8086"));
        assert_eq!(default_http_url("[::1]:8088").as_deref(), Some("http://[::1]:8086"));
        assert_eq!(default_http_url("influxdb"), None);
        assert_eq!(default_http_url(":8088"), None);
    }

    fn series(json: &str) -> Series {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tally_adds_field_values_per_measurement_across_chunks() {
        let mut t = Tally::default();
        t.add("autogen", series(r#"{"name":"cpu","columns":["time","count_v","count_s"],"values":[["1970-01-01T00:00:00Z",3,null]],"partial":true}"#));
        t.add("autogen", series(r#"{"name":"cpu","columns":["time","count_v","count_s"],"values":[["1970-01-01T00:00:00Z",2,3]]}"#));
        t.add("autogen", series(r#"{"name":"mem","columns":["time","count_free"],"values":[["1970-01-01T00:00:00Z",4]]}"#));
        t.add("my rp", series(r#"{"name":"cpu","columns":["time","count_v"],"values":[["1970-01-01T00:00:00Z",7]]}"#));
        assert_eq!(t.counts["autogen.cpu:values"], 8);
        assert_eq!(t.counts["autogen.mem:values"], 4);
        assert_eq!(t.counts["\"my rp\".cpu:values"], 7);
        assert_eq!(t.counts.len(), 3, "values only: {:?}", t.counts);
    }

    #[tokio::test]
    async fn tar_stream_holds_the_folder_and_errors_reach_the_reader() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20260101T000000Z.manifest"), b"{}").unwrap();
        let big: Vec<u8> = (0..3 * TAR_CHUNK).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("20260101T000000Z.s1.tar.gz"), &big).unwrap();
        let (mut reader, handle) = tar_stream(dir.path().to_path_buf());
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.unwrap();
        handle.await.unwrap().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            if name.ends_with(".tar.gz") {
                assert_eq!(content, big);
            }
            names.push(name);
        }
        assert_eq!(names, vec!["20260101T000000Z.manifest", "20260101T000000Z.s1.tar.gz"]);

        let (mut reader, _) = tar_stream(dir.path().join("missing"));
        let mut sink = Vec::new();
        assert!(reader.read_to_end(&mut sink).await.is_err(), "a failed archive is never a clean end");
    }

    #[test]
    fn portable_backup_check_names_the_wrong_database() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.manifest"),
            r#"{"files":[{"database":"other","policy":"autogen","shardID":1,"fileName":"x.s1.tar.gz"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("x.s1.tar.gz"), b"").unwrap();
        let e = check_portable_backup(dir.path(), "ocrvs", "db-ocrvs.tar.zst.age").unwrap_err().to_string();
        assert!(e.contains("holds shards of database other"), "{e}");
        std::fs::write(dir.path().join("x.manifest"), r#"{"meta":{},"limited":false,"files":null}"#).unwrap();
        assert_eq!(check_portable_backup(dir.path(), "ocrvs", "f").unwrap(), 0);
    }
}

impl Datastore for InfluxDb {
    type Config = InfluxConfig;
    const TYPES: &'static [StoreType] = &[StoreType::Dump];

    fn new(cfg: InfluxConfig, ctx: &StoreContext) -> Result<InfluxDb> {
        InfluxDb::new(cfg, ctx)
    }
}
