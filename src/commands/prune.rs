//! `lifeboat prune [--dry-run]`: the retention policy applied per store (see
//! [`crate::layout::retention`] for exactly what is kept), to the date folders and, for a
//! differential store, through its own tool (pgBackRest `expire`).
//!
//! Meant to run on the backup server itself with a `file://` configuration (the production key
//! may not delete); works over `ssh://` with a key that may. Either role's configuration will
//! do: prune reads no key and decrypts nothing. Each store is pruned holding its lock, so a
//! running backup of it is waited for (or named) and never pruned under; `--dry-run` takes no
//! lock and changes nothing.
//!
//! With `--legacy`, the original scripts' one-store files (the chart's) join each store's runs,
//! planned by the same policy as runs of their date that sort before any Lifeboat run of that
//! day: once a day holds a Lifeboat run (its own, or the file imported), the file is the older
//! of the two and goes; a day with nothing else is kept as long as the policy keeps that day.
//! The Swarm era's archives hold several stores and are never removed by prune.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::lock::with_lock;
use crate::layout::retention::Retention;
use crate::layout::retention::{self, RunKind, Verdict};
use crate::layout::{Run, RunId, RunReader, RunState};
use crate::legacy::{self, Era, LegacyRun};
use crate::progress::human_bytes;
use crate::server::{self, BackupServer};
use crate::stores::{ConfiguredStore, RepoAccess, RepoBackup};

/// One run folder and what prune did (or would do) with it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrunedRun {
    pub id: String,
    pub path: String,
    /// `complete`, `incomplete` or `damaged`.
    pub state: &'static str,
    pub bytes: u64,
    pub reason: String,
}

/// A backup a differential store's own tool removed (or would remove).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrunedRepoBackup {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub bytes: u64,
    pub path: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StorePrune {
    pub store: String,
    pub kept: Vec<PrunedRun>,
    pub removed: Vec<PrunedRun>,
    /// For a differential store: what its tool expired.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repository_removed: Vec<PrunedRepoBackup>,
    pub freed_bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneOutcome {
    pub dry_run: bool,
    pub stores: Vec<StorePrune>,
    pub freed_bytes: u64,
}

/// What `prune` is asked to do besides applying the policy to the stores' runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneOptions {
    pub dry_run: bool,
    /// Also the original scripts' files (`--legacy`).
    pub legacy: bool,
}

pub async fn run(config: &Config, only: &[String], options: PruneOptions, json: bool) -> Result<PruneOutcome> {
    let dry_run = options.dry_run;
    let stores = config.configured_stores(only)?;
    let server = server::connect(&config.server).await?;
    let today = chrono::Utc::now().with_timezone(&config.tz()?).date_naive();
    let mut outcome = PruneOutcome { dry_run, stores: Vec::new(), freed_bytes: 0 };
    let mut failures = Vec::new();
    for store in stores {
        let job = prune_store(config, server.as_ref(), store, today, options);
        let result = match dry_run {
            true => job.await,
            false => with_lock(server.as_ref(), &config.locking, store.folder(), "prune", job).await,
        };
        match result {
            Ok(pruned) => {
                if !json {
                    print_store(&pruned, dry_run);
                }
                outcome.freed_bytes += pruned.freed_bytes;
                outcome.stores.push(pruned);
            }
            Err(e) => {
                tracing::error!("{e}");
                failures.push(e);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome).expect("serialises"));
    } else {
        let verb = if dry_run { "would free" } else { "freed" };
        println!("prune {verb} {} on {}", human_bytes(outcome.freed_bytes), server.describe());
    }
    match failures.len() {
        0 => Ok(outcome),
        1 => Err(failures.remove(0)),
        n => Err(Error::store("prune", format!("{n} stores failed (see above): {}", failures[0]))),
    }
}

/// The labels of a repository's backups that `retention:` keeps (the same policy as for the date
/// folders, by the day each finished); a store whose own tool applies its retention ignores them.
fn repository_keeps(policy: &Retention, backups: &[RepoBackup], tz: chrono_tz::Tz, today: chrono::NaiveDate) -> BTreeSet<String> {
    let mut seq_of_day: BTreeMap<chrono::NaiveDate, u32> = BTreeMap::new();
    let runs: Vec<(RunId, RunKind)> = backups
        .iter()
        .map(|b| {
            let date = b.finished_at.with_timezone(&tz).date_naive();
            let seq = seq_of_day.entry(date).or_insert(0);
            *seq += 1;
            let kind = match (b.complete, b.damaged.is_some()) {
                (true, _) => RunKind::Complete,
                (false, true) => RunKind::Damaged,
                (false, false) => RunKind::Incomplete,
            };
            (RunId { date, seq: *seq }, kind)
        })
        .collect();
    let verdicts = retention::plan(policy, &runs, today);
    backups.iter().zip(verdicts).filter(|(_, v)| !v.removes()).map(|(b, _)| b.label.clone()).collect()
}

async fn prune_store(
    config: &Config,
    server: &dyn BackupServer,
    store: &ConfiguredStore,
    today: chrono::NaiveDate,
    options: PruneOptions,
) -> Result<StorePrune> {
    let dry_run = options.dry_run;
    let trust = config.signing.trust()?;
    let reader = RunReader::new(server, &trust);
    // Listed under the lock: a backup that finished before it is seen, none can start during it.
    let mut runs: Vec<Run> = Vec::new();
    for folder in reader.folders().await?.iter().filter(|f| f.folder == store.folder()) {
        runs.push(reader.open(folder).await);
    }
    let originals: Vec<LegacyRun> = match options.legacy {
        true => legacy::find_runs(server).await?.into_iter().filter(|r| r.store == store.name && r.era == Era::Chart).collect(),
        false => Vec::new(),
    };
    let mut kinds: Vec<_> = runs.iter().map(|r| (r.id.clone(), kind_of(&r.state))).collect();
    // Sequence 0: before the day's first Lifeboat run, so the newest of a day is always Lifeboat's.
    kinds.extend(originals.iter().map(|r| (RunId { date: r.date, seq: 0 }, RunKind::Complete)));
    let mut verdicts = retention::plan(&config.retention, &kinds, today);
    let legacy_verdicts = verdicts.split_off(runs.len());
    let mut pruned =
        StorePrune { store: store.name.to_string(), kept: Vec::new(), removed: Vec::new(), repository_removed: Vec::new(), freed_bytes: 0 };
    for (run, verdict) in runs.iter().zip(verdicts) {
        let (state, bytes) = (state_name(&run.state), run.bytes);
        let entry = |reason: String| PrunedRun { id: run.id.to_string(), path: run.path(), state, bytes, reason };
        match verdict {
            Verdict::Keep(why) => {
                if let RunState::Damaged(what) = &run.state {
                    tracing::warn!("{}: kept damaged run {}: {what}; look at it, then remove it by hand", store.name, run.path());
                }
                pruned.kept.push(entry(why));
            }
            Verdict::Remove(why) => {
                if !dry_run {
                    remove_run(server, run).await?;
                }
                pruned.freed_bytes += bytes;
                pruned.removed.push(entry(why.to_string()));
            }
        }
    }
    for (original, verdict) in originals.iter().zip(legacy_verdicts) {
        let entry = |reason: String| PrunedRun {
            id: original.date.to_string(),
            path: original.path.clone(),
            state: "made by the original scripts",
            bytes: original.size,
            reason,
        };
        match verdict {
            Verdict::Keep(why) => pruned.kept.push(entry(why)),
            Verdict::Remove(why) => {
                if !dry_run {
                    remove_original(server, original).await?;
                }
                pruned.freed_bytes += original.size;
                pruned.removed.push(entry(why.to_string()));
            }
        }
    }
    if let Some(repo) = store.store.differential() {
        let access = RepoAccess { server, trust: &trust, key: None };
        let keep = repository_keeps(&config.retention, &repo.backups(&access).await?, config.tz()?, today);
        let done = repo.prune(&access, &keep, dry_run).await?;
        pruned.freed_bytes += done.freed_bytes;
        for b in done.removed {
            pruned.repository_removed.push(PrunedRepoBackup { label: b.label, kind: b.kind, bytes: b.stored_bytes, path: b.path });
        }
    }
    Ok(pruned)
}

/// Removes a run folder, then its date folder once nothing else is in it.
async fn remove_run(server: &dyn BackupServer, run: &Run) -> Result<()> {
    let refused = |e: Error| {
        server.error(format!(
            "cannot remove {} ({e}); run prune on the backup server with a file:// configuration, or with a key that may delete",
            run.path()
        ))
    };
    server.delete_prefix(&run.path()).await.map_err(refused)?;
    server.remove_empty_prefix(&run.id.to_string()).await.map_err(refused)
}

/// Removes a file of the original scripts, then its date folder once nothing else is in it.
async fn remove_original(server: &dyn BackupServer, original: &LegacyRun) -> Result<()> {
    let refused = |e: Error| {
        server.error(format!(
            "cannot remove {} ({e}); run prune on the backup server with a file:// configuration, or with a key that may delete",
            original.path
        ))
    };
    server.delete(&original.path).await.map_err(refused)?;
    server.remove_empty_prefix(&original.date.format("%Y-%m-%d").to_string()).await.map_err(refused)
}

fn kind_of(state: &RunState) -> RunKind {
    match state {
        RunState::Complete(_) => RunKind::Complete,
        RunState::Incomplete => RunKind::Incomplete,
        RunState::Damaged(_) => RunKind::Damaged,
    }
}

fn state_name(state: &RunState) -> &'static str {
    match state {
        RunState::Complete(_) => "complete",
        RunState::Incomplete => "incomplete",
        RunState::Damaged(_) => "damaged",
    }
}

fn print_store(p: &StorePrune, dry_run: bool) {
    let verb = if dry_run { "would remove" } else { "removed" };
    for r in &p.removed {
        println!("{}: {verb} {} ({}, {}): {}", p.store, r.path, r.state, human_bytes(r.bytes), r.reason);
    }
    for b in &p.repository_removed {
        println!("{}: {verb} {} backup {} ({})", p.store, b.kind, b.label, human_bytes(b.bytes));
    }
    let repository = match p.repository_removed.len() {
        0 => String::new(),
        n => format!(" and {n} repository backup(s)"),
    };
    println!("{}: kept {} run(s), {verb} {} run(s){repository}, {}", p.store, p.kept.len(), p.removed.len(), human_bytes(p.freed_bytes));
}
