//! `lifeboat backup`: run the enabled backups now.

use std::time::Instant;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::layout::RunWriter;
use crate::config::Compression;
use crate::pipeline::{self, Counters, EncodedFile, EncryptKey};
use crate::progress::summary;
use crate::server::{self, BackupServer};
use crate::stores::{BackupKind, ConfiguredStore, DifferentialStore, FileEncoder, RepoAccess};

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
    let key = EncryptKey::from_config(&config.encryption)?;
    // pgBackRest reaches the server itself: connect only for dump stores and the MinIO mirror.
    let server = match stores.iter().any(|s| s.store.differential().is_none_or(|d| d.uses_server())) {
        true => Some(server::connect(&config.server).await?),
        false => None,
    };
    let encoder = Encoder { key: &key, compression: &config.compression };
    let access = RepoAccess { server: server.as_deref(), encoder: Some(&encoder), key: None };
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for store in &stores {
        let result = match store.store.differential() {
            Some(differential) => backup_differential(config, store.name, differential, kind, &access).await,
            None => backup_store(config, server.as_deref().expect("connected for dump stores"), store, &key).await,
        };
        match result {
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
    match failures.len() {
        0 => Ok(outcomes),
        1 => Err(failures.remove(0)),
        n => Err(Error::store("backup", format!("{n} stores failed (see above): {}", failures[0]))),
    }
}

/// A differential store's run: its own tool writes into its repository, outside the date folders.
async fn backup_differential(
    config: &Config,
    name: &str,
    store: &dyn DifferentialStore,
    kind: Option<BackupKind>,
    access: &RepoAccess<'_>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let today = chrono::Utc::now().with_timezone(&config.tz()?).date_naive();
    let done = store.backup(kind, today, access).await?;
    Ok(BackupOutcome {
        store: name.to_string(),
        id: done.backup.label,
        path: done.backup.path,
        read_bytes: done.read_bytes,
        stored_bytes: done.backup.stored_bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn backup_store(config: &Config, server: &dyn BackupServer, store: &ConfiguredStore, key: &EncryptKey) -> Result<BackupOutcome> {
    let started = Instant::now();
    let today = chrono::Utc::now().with_timezone(&config.tz()?).date_naive();
    let mut run = RunWriter::claim(server, today, store.name, store.folder(), key, &config.compression).await?;
    tracing::info!("{}: backing up to {}/{}", store.name, server.describe(), run.path());
    match store.store.backup(&mut run).await {
        Ok(info) => {
            let (id, path, read_bytes) = (run.id().to_string(), run.path().to_string(), run.counters().read());
            let manifest = run.commit(store.kind(), info).await?;
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
            // Never leave anything that could pass for a backup; the run has no manifest anyway.
            run.abort().await;
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
        pipeline::encode_stream(source, dest, self.key, self.compression, counters).await
    }

    fn describe(&self) -> (String, String) {
        (format!("zstd-{}", self.compression.level), self.key.scheme().to_string())
    }
}
