//! `lifeboat backup`: run the enabled backups now.

use std::time::Instant;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::layout::RunWriter;
use crate::layout::lock::with_lock;
use crate::monitoring::{self, JobResult};
use crate::pipeline::Compression;
use crate::pipeline::{self, EncodedFile, EncryptKey};
use crate::progress::Counters;
use crate::progress::{human_bytes, summary};
use crate::server::{self, BackupServer};
use crate::signing::ManifestSigner;
use crate::stop;
use crate::stores::{BackupAccess, BackupKind, ConfiguredStore, DifferentialStore, FileEncoder};

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupOutcome {
    pub store: String,
    pub id: String,
    pub path: String,
    pub read_bytes: u64,
    pub stored_bytes: u64,
    pub seconds: f64,
}

/// Runs the backups of the enabled stores (or of `only`); `kind` (`--type`) is for differential stores.
pub async fn run(config: &Config, only: &[String], kind: Option<BackupKind>) -> Result<Vec<BackupOutcome>> {
    config.require_role(Role::Backup, "backup")?;
    let stores = config.configured_stores(only)?;
    if let Some(kind) = kind
        && !stores.iter().any(|s| s.store.differential().is_some())
    {
        return Err(Error::Usage(format!("--type {kind} is for a store of type differential; none of the selected stores is")));
    }
    let started_at = chrono::Utc::now();
    let setup = async {
        let key = EncryptKey::from_config(&config.encryption)?;
        let signer = config.signing.signer()?;
        let trust = config.signing.trust()?;
        // pgBackRest reaches the server itself, but the connection also holds every store's lock.
        let server = server::connect(&config.server).await?;
        Ok::<_, Error>((key, signer, trust, server))
    };
    let (key, signer, trust, server) = match setup.await {
        Ok(setup) => setup,
        Err(e) => {
            // An unreachable server (or an unreadable key) fails every store: say so where alerts look.
            let results: Vec<JobResult> = stores.iter().map(|s| JobResult::failed(s.name, started_at, &e)).collect();
            monitoring::publish(&config.monitoring, Role::Backup, &results).await;
            return Err(e);
        }
    };
    let encoder = Encoder { key: &key, compression: &config.compression };
    let access = BackupAccess { server: server.as_ref(), trust: &trust, encoder: &encoder, signer: &signer };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    let mut stopped: Option<&str> = None;
    let mut not_started = Vec::new();
    let mut results = Vec::new();
    for store in &stores {
        if stop::is_requested() {
            not_started.push(store.name);
            continue;
        }
        let started_at = chrono::Utc::now();
        let job = async {
            match store.store.differential() {
                Some(differential) => backup_differential(config, store.name, differential, kind, &access).await,
                None => backup_store(config, server.as_ref(), store, &key, &signer).await,
            }
        };
        let result = with_lock(server.as_ref(), &config.locking, store.folder(), "backup", job).await;
        results.push(job_result(store.name, started_at, &result));
        match result {
            Err(Error::Stopped(_)) => stopped = Some(store.name),
            Ok(outcome) => {
                let elapsed = std::time::Duration::from_secs_f64(outcome.seconds);
                eprintln!("{}", summary(&outcome.store, "backup", &outcome.id, outcome.read_bytes, outcome.stored_bytes, elapsed));
                outcomes.push(outcome);
            }
            Err(e) => {
                tracing::error!("{e}");
                failures.push(e);
            }
        }
    }
    monitoring::publish(&config.monitoring, Role::Backup, &results).await;
    if stopped.is_some() || !not_started.is_empty() {
        return Err(stopped_error(&outcomes, stopped, &not_started));
    }
    match failures.len() {
        0 => Ok(outcomes),
        1 => Err(failures.remove(0)),
        n => Err(Error::store("backup", format!("{n} stores failed (see above): {}", failures[0]))),
    }
}

/// What metrics and the webhook say of one store's backup.
fn job_result(store: &str, started_at: chrono::DateTime<chrono::Utc>, result: &Result<BackupOutcome>) -> JobResult {
    match result {
        Ok(o) => {
            let seconds = (chrono::Utc::now() - started_at).num_milliseconds() as f64 / 1000.0;
            JobResult::succeeded(store, started_at, &o.id, seconds, o.read_bytes, o.stored_bytes)
        }
        Err(e) => JobResult::failed(store, started_at, e),
    }
}

/// The one line a stopped backup ends with: what is safely stored and what must be run again.
fn stopped_error(done: &[BackupOutcome], stopped: Option<&str>, not_started: &[&str]) -> Error {
    let mut parts = Vec::new();
    if !done.is_empty() {
        parts.push(format!("backed up: {}", done.iter().map(|o| o.store.as_str()).collect::<Vec<_>>().join(", ")));
    }
    if let Some(name) = stopped {
        parts.push(format!("stopped part-way, nothing committed: {name}"));
    }
    if !not_started.is_empty() {
        parts.push(format!("not started: {}", not_started.join(", ")));
    }
    Error::Stopped(format!("backup stopped by {} ({}); run the backup again", stop::signal_name(), parts.join("; ")))
}

/// Below this, a failed write is most likely the backup server's disk being full.
const NEARLY_FULL: u64 = 16 << 20;

/// A write that fails on a full disk reads as a bare "Failure" over SFTP: when the server says
/// it is (nearly) full, the error says so and what to do.
async fn explain_full_disk(server: &dyn BackupServer, e: Error) -> Error {
    if matches!(e, Error::Stopped(_)) {
        return e;
    }
    match server.free_space().await {
        Ok(Some(space)) if space.available_bytes < NEARLY_FULL => {
            let hint = format!(
                "the backup server's disk is full ({} free of {}): free space there (`lifeboat prune`, or a bigger disk) and run the backup again",
                human_bytes(space.available_bytes),
                human_bytes(space.total_bytes)
            );
            match e {
                Error::Server { server, message } => Error::Server { server, message: format!("{message}; {hint}") },
                other => Error::Server { server: server.describe(), message: format!("{other}; {hint}") },
            }
        }
        _ => e,
    }
}

/// A differential store's run: its own tool writes into its repository, outside the date folders.
async fn backup_differential(
    config: &Config,
    name: &str,
    store: &dyn DifferentialStore,
    kind: Option<BackupKind>,
    access: &BackupAccess<'_>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let today = chrono::Utc::now().with_timezone(&config.tz()?).date_naive();
    let Some(done) = stop::unless_requested(store.backup(kind, today, access)).await else {
        tracing::warn!("{name}: stopped; the tool was killed before it recorded the backup, which it never lists as complete");
        return Err(Error::Stopped(format!("{name}: backup stopped")));
    };
    let done = done?;
    Ok(BackupOutcome {
        store: name.to_string(),
        id: done.backup.label,
        path: done.backup.path,
        read_bytes: done.read_bytes,
        stored_bytes: done.backup.stored_bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn backup_store(
    config: &Config,
    server: &dyn BackupServer,
    store: &ConfiguredStore,
    key: &EncryptKey,
    signer: &ManifestSigner,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let today = chrono::Utc::now().with_timezone(&config.tz()?).date_naive();
    let mut run = RunWriter::claim(server, today, store.name, store.folder(), key, &config.compression).await?;
    tracing::info!("{}: backing up to {}/{}", store.name, server.describe(), run.path());
    let result = stop::unless_requested(store.store.backup(&mut run)).await;
    match result.unwrap_or_else(|| Err(Error::Stopped(format!("{}: backup stopped", store.name)))) {
        Ok(info) => {
            let (id, path, read_bytes) = (run.id().to_string(), run.path().to_string(), run.counters().read());
            let manifest = run.commit(store.kind(), info, signer).await?;
            Ok(BackupOutcome {
                store: store.name.to_string(),
                id,
                path,
                read_bytes,
                stored_bytes: manifest.stored_bytes(),
                seconds: started.elapsed().as_secs_f64(),
            })
        }
        Err(e) => {
            // Asked before the unfinished run is removed, which frees the space again.
            let e = explain_full_disk(server, e).await;
            // Never leave anything that could pass for a backup; the run has no manifest anyway.
            // Bounded, so that a stop stays quick even when the server is slow to answer.
            let path = run.path().to_string();
            if tokio::time::timeout(std::time::Duration::from_secs(3), run.abort()).await.is_err() {
                tracing::warn!(
                    "{}: removing the unfinished run {path} took too long; it has no manifest and `prune` removes it",
                    store.name
                );
            }
            Err(e)
        }
    }
}

/// The dump files' pipeline, lent to a differential store that writes its own files.
struct Encoder<'a> {
    key: &'a EncryptKey,
    compression: &'a Compression,
}

#[async_trait::async_trait]
impl FileEncoder for Encoder<'_> {
    async fn encode(
        &self,
        source: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        dest: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        counters: std::sync::Arc<Counters>,
    ) -> Result<EncodedFile> {
        pipeline::encode_stream(source.into(), dest, self.key, self.compression, counters).await
    }

    fn describe(&self) -> (String, String) {
        (format!("zstd-{}", self.compression.level), self.key.scheme().to_string())
    }
}
