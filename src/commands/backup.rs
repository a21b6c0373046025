//! `lifeboat backup`: run the enabled backups now.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::{FORMAT_VERSION, MANIFEST_NAME, Manifest};
use crate::pipeline::{Counters, EncryptKey};
use crate::progress::summary;
use crate::server::{self, BackupServer, join};
use crate::stores::{self, BackupSink, Store};

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupOutcome {
    pub store: String,
    pub id: String,
    pub path: String,
    pub read_bytes: u64,
    pub stored_bytes: u64,
    pub seconds: f64,
}

pub async fn run(config: &Config, only: &[String]) -> Result<Vec<BackupOutcome>> {
    config.require_role(Role::Backup, "backup")?;
    let stores = stores::configured(config, only)?;
    let key = EncryptKey::from_config(&config.encryption)?;
    let server = server::connect(&config.server).await?;
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for store in &stores {
        match backup_store(config, server.as_ref(), store.as_ref(), &key).await {
            Ok(outcome) => {
                eprintln!(
                    "{}",
                    summary(&outcome.store, "backup", &outcome.id, outcome.read_bytes, outcome.stored_bytes, std::time::Duration::from_secs_f64(outcome.seconds))
                );
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

async fn backup_store(config: &Config, server: &dyn BackupServer, store: &dyn Store, key: &EncryptKey) -> Result<BackupOutcome> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let today = started_at.with_timezone(&config.tz()?).date_naive();
    let folder = store.folder();
    let id = layout::claim_run(server, today, &folder).await?;
    let run_path = join(&id.to_string(), &folder);
    tracing::info!("{}: backing up to {}/{run_path}", store.name(), server.describe());

    let counters = Arc::new(Counters::default());
    let mut sink = BackupSink {
        server,
        run_path: run_path.clone(),
        key,
        compression: &config.compression,
        store: store.name().to_string(),
        files: Vec::new(),
        counters: counters.clone(),
    };
    let result = store.backup(&mut sink).await;
    let files = std::mem::take(&mut sink.files);
    let info = match result {
        Ok(info) => info,
        Err(e) => {
            // Never leave anything that could pass for a backup; the run has no manifest anyway.
            if let Err(cleanup) = server.remove_dir_all(&run_path).await {
                tracing::warn!("could not remove the failed run {run_path}: {cleanup}");
            }
            // The date folder goes too if this run was its only content (fails harmlessly otherwise).
            let _ = server.remove_empty_dir(&id.to_string()).await;
            return Err(e);
        }
    };

    // Every file is uploaded: give them their final names, then write the manifest last.
    for f in &files {
        server.rename(&join(&run_path, &format!("{}.partial", f.name)), &join(&run_path, &f.name)).await?;
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        store: store.name().to_string(),
        kind: store.kind().to_string(),
        id: id.to_string(),
        started_at: started_at.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        tool_versions: info.tool_versions,
        compression: format!("zstd-{}", config.compression.level),
        encryption: key.scheme().to_string(),
        files,
        count_unit: info.count_unit,
        counts: info.counts,
        extra: info.extra,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    server.write_small(&join(&run_path, MANIFEST_NAME), &json).await?;
    Ok(BackupOutcome {
        store: store.name().to_string(),
        id: id.to_string(),
        path: run_path,
        read_bytes: counters.read.load(std::sync::atomic::Ordering::Relaxed),
        stored_bytes: manifest.stored_bytes(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
