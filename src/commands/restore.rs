//! `lifeboat restore`: bring the newest complete backup (or `--from ID`) onto the target.
//!
//! Order matters: every file of every store's run is downloaded into a private folder, its size and
//! SHA-256 checked against the manifest, and its age header opened with the configured key,
//! before the store is allowed to touch the target. After the restore, the counts recorded at
//! backup time are compared with what the target now holds; any difference fails the restore.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::layout::RunReader;
use crate::layout::manifest::compare_counts;
use crate::pipeline::DecryptKey;
use crate::progress::summary;
use crate::server;
use crate::stores::{RepoAccess, RepoRestoreRequest, RestoreFiles};

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreOutcome {
    pub store: String,
    pub id: String,
    pub stored_bytes: u64,
    pub seconds: f64,
    /// For a differential store: what recovery reached (WAL position, last transaction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
}

pub struct RestoreOptions<'a> {
    pub only: &'a [String],
    pub from: Option<&'a str>,
    /// `--target-time`: a moment to recover to, for a differential PostgreSQL store.
    pub target_time: Option<&'a str>,
    pub yes: bool,
}

fn confirm(stores: &[&str]) -> Result<()> {
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
    let stores = config.configured_stores(opts.only)?;
    if let Some(time) = opts.target_time
        && let Some(store) = stores.iter().find(|s| s.store.differential().is_none())
    {
        return Err(Error::Usage(format!(
            "--target-time {time} is for a store of type differential; {} is type {}: restore it separately",
            store.name,
            store.kind()
        )));
    }
    let key = Arc::new(DecryptKey::from_config(&config.encryption)?);
    if !opts.yes {
        confirm(&stores.iter().map(|s| s.name).collect::<Vec<_>>())?;
    }
    let server = server::connect(&config.server).await?;
    let reader = RunReader::new(server.as_ref());
    let folders = reader.folders().await?;
    let context = config.store_context();

    // Phase 1, for every store: find the run, check it and the target, download and verify it.
    // No target is touched until the whole backup of every store is here and verified.
    let mut prepared = Vec::new();
    let mut differential = Vec::new();
    let request = RepoRestoreRequest { from: opts.from, target_time: opts.target_time };
    let access = RepoAccess { server: Some(server.as_ref()), encoder: None, key: Some(key.clone()) };
    for store in &stores {
        if let Some(repo) = store.store.differential() {
            let prepared = repo.check_target(request, &access).await?;
            differential.push((store.name, repo, prepared));
            continue;
        }
        let run = reader.choose(&folders, store.folder(), opts.from).await?;
        let manifest = run.manifest().expect("chosen runs are complete").clone();
        if manifest.store != store.name {
            return Err(Error::Usage(format!(
                "backup {} in folder {} holds a {} backup, not {}: check server_dir in the configuration",
                run.id, run.folder, manifest.store, store.name
            )));
        }
        if manifest.kind != store.kind().to_string() {
            return Err(Error::Usage(format!(
                "backup {} of {} is of type {}, but the configuration says {}",
                run.id,
                manifest.store,
                manifest.kind,
                store.kind()
            )));
        }
        store.store.check_target().await?;
        tracing::info!("{}: downloading and verifying backup {} from {}", store.name, run.id, server.describe());
        let started = Instant::now();
        let work = context.private_dir("lifeboat-restore-")?;
        for entry in &manifest.files {
            reader.fetch_verified(&run, entry, work.path(), &key).await?;
        }
        prepared.push((store, run, manifest, work, started));
    }

    // Phase 2: replace each target's data, then prove it with the recorded counts.
    let mut outcomes = Vec::new();
    for (store, run, manifest, work, started) in prepared {
        tracing::info!("{}: restoring backup {}", store.name, run.id);
        let files = RestoreFiles { dir: work.path().to_path_buf(), key: key.clone() };
        let found = store.store.restore(&manifest, &files).await?;
        let problems = compare_counts(&manifest.counts, &found);
        if !problems.is_empty() {
            return Err(Error::Verification {
                store: store.name.to_string(),
                message: format!(
                    "{} difference(s) against the backup's counts: {}; the target does not hold what was backed up",
                    problems.len(),
                    problems.join("; ")
                ),
            });
        }
        let what = store.store.describe_counts(&manifest);
        tracing::info!("{}: verified {what} across {} scope(s): all match the backup", store.name, manifest.counts.len());
        let outcome = RestoreOutcome {
            store: store.name.to_string(),
            id: run.id.to_string(),
            stored_bytes: manifest.stored_bytes(),
            seconds: started.elapsed().as_secs_f64(),
            recovered: None,
        };
        eprintln!("{}", summary(store.name, "restore", &outcome.id, manifest.raw_bytes(), outcome.stored_bytes, started.elapsed()));
        outcomes.push(outcome);
        drop(work);
    }
    for (name, repo, prepared) in differential {
        tracing::info!("{name}: restoring from its repository");
        let started = Instant::now();
        let done = repo.restore(request, &access, prepared).await?;
        eprintln!("{name}: restore {} done: {}", done.label, done.recovered);
        outcomes.push(RestoreOutcome {
            store: name.to_string(),
            id: done.label,
            stored_bytes: done.stored_bytes,
            seconds: started.elapsed().as_secs_f64(),
            recovered: Some(done.recovered),
        });
    }
    Ok(outcomes)
}
