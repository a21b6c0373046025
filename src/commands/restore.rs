//! `lifeboat restore`: bring the newest complete backup (or `--from ID`) onto the target.
//!
//! Order matters: every file of every store's run is downloaded into a private folder, its size and
//! SHA-256 checked against the manifest, and its age header opened with the configured key,
//! before the store is allowed to touch the target. After the restore, the counts recorded at
//! backup time are compared with what the target now holds; any difference fails the restore.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::layout::{self, Run};
use crate::manifest::{Manifest, compare_counts};
use crate::pipeline::{self, Counters, DecryptKey};
use crate::progress::{Progress, summary};
use crate::server::{self, BackupServer, join};
use crate::stores::{self, RestoreFiles};

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreOutcome {
    pub store: String,
    pub id: String,
    pub stored_bytes: u64,
    pub seconds: f64,
}

pub struct RestoreOptions<'a> {
    pub only: &'a [String],
    pub from: Option<&'a str>,
    pub yes: bool,
}

fn confirm(stores: &[String]) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "restore replaces the data of the target; pass --yes to confirm (no terminal to ask on)".into(),
        ));
    }
    eprint!("This REPLACES the current data of: {}. Type yes to go on: ", stores.join(", "));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Error::io("reading the answer", e))?;
    if answer.trim() != "yes" {
        return Err(Error::Usage("restore not confirmed; nothing was changed".into()));
    }
    Ok(())
}

pub async fn run(config: &Config, opts: RestoreOptions<'_>) -> Result<Vec<RestoreOutcome>> {
    config.require_role(Role::Restore, "restore")?;
    let stores = stores::configured(config, opts.only)?;
    let key = DecryptKey::from_config(&config.encryption)?;
    if !opts.yes {
        confirm(&stores.iter().map(|s| s.name().to_string()).collect::<Vec<_>>())?;
    }
    let server = server::connect(&config.server).await?;
    let key = Arc::new(key);

    // Phase 1, for every store: find the run, check it and the target, download and verify it.
    // No target is touched until the whole backup of every store is here and verified.
    let mut prepared = Vec::new();
    for store in &stores {
        let run = layout::find_complete_run(server.as_ref(), &store.folder(), opts.from).await?;
        let manifest = run.manifest.clone().expect("complete runs have a manifest");
        if manifest.store != store.name() {
            return Err(Error::Usage(format!(
                "backup {} in folder {} holds a {} backup, not {}: check server_dir in the configuration",
                run.id, run.folder, manifest.store, store.name()
            )));
        }
        if manifest.kind != store.kind().to_string() {
            return Err(Error::Usage(format!(
                "backup {} of {} is of type {}, but the configuration says {}",
                run.id, manifest.store, manifest.kind, store.kind()
            )));
        }
        store.check_target().await?;
        tracing::info!("{}: downloading and verifying backup {} from {}", store.name(), run.id, server.describe());
        let started = Instant::now();
        let work = work_dir(config)?;
        download_verified(server.as_ref(), &run, &manifest, work.path(), &key).await?;
        prepared.push((store, run, manifest, work, started));
    }

    // Phase 2: replace each target's data, then prove it with the recorded counts.
    let mut outcomes = Vec::new();
    for (store, run, manifest, work, started) in prepared {
        tracing::info!("{}: restoring backup {}", store.name(), run.id);
        let files = RestoreFiles { dir: work.path().to_path_buf(), key: key.clone() };
        let found = store.restore(&manifest, &files).await?;
        let problems = compare_counts(&manifest.counts, &found);
        if !problems.is_empty() {
            return Err(Error::Verification {
                store: store.name().to_string(),
                message: format!(
                    "{} difference(s) against the backup's counts: {}; the target does not hold what was backed up",
                    problems.len(),
                    problems.join("; ")
                ),
            });
        }
        // A total is meaningful for one unit (rows, documents), not for mixed ones (objects/bytes).
        let what = if manifest.count_unit.contains('/') {
            format!("{} counts ({})", manifest.counts.values().map(|m| m.len()).sum::<usize>(), manifest.count_unit)
        } else {
            format!("{} {}", manifest.counts.values().flat_map(|m| m.values()).sum::<u64>(), manifest.count_unit)
        };
        tracing::info!("{}: verified {what} across {} scope(s): all match the backup", store.name(), manifest.counts.len());
        let outcome = RestoreOutcome {
            store: store.name().to_string(),
            id: run.id.to_string(),
            stored_bytes: manifest.stored_bytes(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let raw: u64 = manifest.files.iter().map(|f| f.raw_size).sum();
        eprintln!("{}", summary(store.name(), "restore", &outcome.id, raw, outcome.stored_bytes, started.elapsed()));
        outcomes.push(outcome);
        drop(work);
    }
    Ok(outcomes)
}

/// A private (0700) folder for downloaded files, removed when dropped.
pub fn work_dir(config: &Config) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("lifeboat-restore-");
    match &config.work_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| Error::io("creating a private work folder (set work_dir to a folder with room)", e))
}

/// Downloads every file of `run` into `dir`, checking size and SHA-256 against the manifest and
/// that `key` opens each one. Nothing is restored unless all of this succeeds.
pub async fn download_verified(
    server: &dyn BackupServer,
    run: &Run,
    manifest: &Manifest,
    dir: &Path,
    key: &DecryptKey,
) -> Result<()> {
    for entry in &manifest.files {
        let remote = join(&run.path(), &entry.name);
        let local = dir.join(&entry.name);
        let counters = Arc::new(Counters::default());
        let _progress = Progress::start(format!("{}: downloading {}", manifest.store, entry.name), counters.clone());
        let source = server.open(&remote).await?;
        let mut file = tokio::fs::File::create(&local).await.map_err(|e| Error::io(format!("creating {}", local.display()), e))?;
        let (size, sha256) = pipeline::copy_hashed(source, &mut file, &counters)
            .await
            .map_err(|e| server.error(format!("downloading {remote}: {e}")))?;
        if size != entry.size || sha256 != entry.sha256 {
            return Err(Error::Integrity(format!(
                "stored file {remote} does not match its manifest (size {size} vs {}, sha256 {} vs {}): \
                 the backup is damaged; nothing was restored; restore an older backup with --from ID",
                entry.size,
                &sha256[..12],
                &entry.sha256[..entry.sha256.len().min(12)]
            )));
        }
        pipeline::check_decryptable(&local, key, &entry.name)?;
    }
    Ok(())
}
