//! `lifeboat backup`: run the enabled backups now.

use std::time::Instant;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::layout::RunWriter;
use crate::layout::lock::with_lock;
use crate::pipeline::EncryptKey;
use crate::progress::summary;
use crate::server::{self, BackupServer};
use crate::stores::{BackupKind, ConfiguredStore, DifferentialStore};

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
    // Differential stores reach the server through their own tool; the connection holds the locks.
    let server = server::connect(&config.server).await?;
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for store in &stores {
        let job = async {
            match store.store.differential() {
                Some(differential) => backup_differential(config, store.name, differential, kind).await,
                None => backup_store(config, server.as_ref(), store, &key).await,
            }
        };
        let result = with_lock(server.as_ref(), &config.locking, store.folder(), "backup", job).await;
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
async fn backup_differential(config: &Config, name: &str, store: &dyn DifferentialStore, kind: Option<BackupKind>) -> Result<BackupOutcome> {
    let started = Instant::now();
    let today = chrono::Utc::now().with_timezone(&config.tz()?).date_naive();
    let done = store.backup(kind, today).await?;
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
