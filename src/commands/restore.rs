//! `lifeboat restore`: bring the newest complete backup (or `--from ID`) onto the target.
//!
//! Order matters: every file of every store's run is downloaded into a private folder, its size and
//! SHA-256 checked against the manifest, and its age header opened with the configured key,
//! before the store is allowed to touch the target. After the restore, the counts recorded at
//! backup time are compared with what the target now holds; any difference fails the restore.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::layout::drill::{self, DrillReport};
use crate::layout::manifest::{Counts, compare_counts};
use crate::layout::{Manifest, Run, RunFolder, RunReader};
use crate::legacy::adopt::{AdoptedRun, fetch_and_adopt};
use crate::legacy::{self, LegacyRun};
use crate::monitoring::{self, JobResult};
use crate::pipeline::DecryptKey;
use crate::progress::summary;
use crate::server;
use crate::stop;
use crate::stores::{ConfiguredStore, DifferentialStore, RepoAccess, RepoPrepared, RepoRestoreRequest, RestoreFiles};

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreOutcome {
    pub store: String,
    pub id: String,
    pub stored_bytes: u64,
    /// Plain bytes of the backup (what was decoded), for the closing line.
    pub raw_bytes: u64,
    pub seconds: f64,
    /// What was restored, e.g. `1200 rows`.
    pub restored: String,
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
        return Err(Error::Usage("restore replaces the data of the target; pass --yes to confirm (no terminal to ask on)".into()));
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
    let mut results = Vec::new();
    let started_at = Utc::now();
    let outcome = restore_stores(config, &stores, &opts, key, &mut results).await;
    if let Err(e) = &outcome {
        // Stores that never got to their own restore failed with the whole job.
        for store in &stores {
            if !results.iter().any(|r: &JobResult| r.store == store.name) {
                results.push(JobResult::failed(store.name, started_at, e));
            }
        }
    }
    monitoring::publish(&config.monitoring, Role::Restore, &results).await;
    outcome
}

async fn restore_stores(
    config: &Config,
    stores: &[&ConfiguredStore],
    opts: &RestoreOptions<'_>,
    key: Arc<DecryptKey>,
    results: &mut Vec<JobResult>,
) -> Result<Vec<RestoreOutcome>> {
    let server = server::connect(&config.server).await?;
    let trust = config.signing.trust()?;
    let reader = RunReader::new(server.as_ref(), &trust);
    let folders = reader.folders().await?;
    let context = config.store_context();

    // Phase 1, for every store: find the run, check it and the target, download and verify it.
    // No target is touched until the whole backup of every store is here and verified.
    let request = RepoRestoreRequest { from: opts.from, target_time: opts.target_time };
    let access = RepoAccess { server: server.as_ref(), trust: &trust, key: Some(key.clone()) };
    let prepare = async {
        // Backups of the original scripts sit in the same date folders; only dump stores read them.
        let legacy_runs = match stores.iter().any(|s| s.store.differential().is_none()) {
            true => legacy::find_runs(server.as_ref()).await?,
            false => Vec::new(),
        };
        let mut jobs = Vec::new();
        for store in stores {
            if let Some(repo) = store.store.differential() {
                let prepared = repo.check_target(request, &access).await?;
                jobs.push(Job::Repo { store, repo, prepared });
                continue;
            }
            let run = match choose(config, &reader, &folders, &legacy_runs, store, opts.from).await? {
                Chosen::Run(run) => run,
                Chosen::Legacy(run) => {
                    store.store.check_target().await?;
                    let passphrase = config.legacy.passphrase().map_err(|message| Error::Config { file: config.file.clone(), message })?;
                    let adopted = fetch_and_adopt(server.as_ref(), &run, store.store.as_ref(), &passphrase, &context).await?;
                    let manifest = Box::new(adopted.manifest(store.name)?);
                    jobs.push(Job::Legacy { store, adopted: Box::new(adopted), manifest });
                    continue;
                }
            };
            let manifest = run.manifest().expect("chosen runs are complete").clone();
            check_run_matches(store, &run, &manifest)?;
            store.store.check_target().await?;
            tracing::info!("{}: downloading and verifying backup {} from {}", store.name, run.id, server.describe());
            let work = context.private_dir("lifeboat-restore-")?;
            for entry in &manifest.files {
                match store.store.wants_plain_file(&manifest, entry, work.path()) {
                    true => reader.fetch_verified_decoded(&run, entry, work.path(), key.clone()).await?,
                    false => reader.fetch_verified(&run, entry, work.path(), &key).await?,
                };
            }
            jobs.push(Job::Run { store, run, manifest: Box::new(manifest), work });
        }
        Ok::<_, Error>(jobs)
    };
    let Some(jobs) = stop::unless_requested(prepare).await else {
        return Err(Error::Stopped(format!(
            "restore stopped by {} while downloading and verifying: no target was touched; run the restore again",
            stop::signal_name()
        )));
    };
    let jobs = jobs?;

    // Phase 2: replace each target's data, then prove it with the recorded counts. Every store's
    // restore leaves a drill report, whatever its result.
    let drills_dir = drill::local_dir(&config.file);
    let names: Vec<&str> = jobs.iter().map(Job::name).collect();
    let mut outcomes = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let started_at = Utc::now();
        let started = Instant::now();
        let (report_dir, mut report) = job.report(started_at);
        let result = stop::unless_requested(job.restore(&key, request, &access)).await;
        report.duration_seconds = started.elapsed().as_secs_f64();
        report.finished_at = Utc::now().to_rfc3339();
        let verdict = match result {
            None => Err(Error::Stopped(stopped_line(&names[..i], names[i], &names[i + 1..]))),
            Some(Ok((outcome, found))) => {
                report.counts_found = found;
                let problems = compare_counts(&report.counts_expected, &report.counts_found);
                match problems.is_empty() {
                    true => Ok(outcome),
                    false => Err(Error::Verification {
                        store: names[i].to_string(),
                        message: format!(
                            "{} difference(s) against the backup's counts: {}; the target does not hold what was backed up",
                            problems.len(),
                            problems.join("; ")
                        ),
                    }),
                }
            }
            Some(Err(e)) => Err(e),
        };
        report.result = match &verdict {
            Ok(_) => "ok",
            Err(Error::Stopped(_)) => "stopped",
            Err(_) => "failed",
        }
        .into();
        report.error = verdict.as_ref().err().map(ToString::to_string);
        if let Ok(outcome) = &verdict {
            report.restored.clone_from(&outcome.restored);
        }
        if let Some(place) = drill::write(server.as_ref(), &report_dir, &drills_dir, &report).await {
            tracing::info!("{}: drill report written to {place}", report.store);
        }
        results.push(match &verdict {
            Ok(o) => JobResult::succeeded(&o.store, started_at, &o.id, o.seconds, o.raw_bytes, o.stored_bytes),
            Err(e) => JobResult::failed(names[i], started_at, e),
        });
        let outcome = verdict?;
        eprintln!("{}", outcome.closing_line());
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The one line a stopped restore ends with: which stores hold their backup and which do not.
fn stopped_line(done: &[&str], interrupted: &str, not_started: &[&str]) -> String {
    let list = |names: &[&str]| {
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    };
    format!(
        "restore stopped by {}: restored and verified: {}; interrupted part-way (its data is incomplete): {interrupted}; \
         not started: {}; run the same restore again to complete it",
        stop::signal_name(),
        list(done),
        list(not_started)
    )
}

/// A run whose manifest names another store or type is never restored under this one's name.
fn check_run_matches(store: &ConfiguredStore, run: &Run, manifest: &Manifest) -> Result<()> {
    if manifest.store != store.name {
        return Err(Error::Usage(format!(
            "backup {} in folder {} holds a {} backup, not {}: check server_dir in the configuration",
            run.id, run.folder, manifest.store, store.name
        )));
    }
    if manifest.kind != store.kind() {
        return Err(Error::Usage(format!(
            "backup {} of {} is of type {}, but the configuration says {}",
            run.id,
            manifest.store,
            manifest.kind,
            store.kind()
        )));
    }
    Ok(())
}

/// One store's restore, ready to run: a verified run in a private folder, or a differential repository.
enum Job<'a> {
    Run {
        store: &'a ConfiguredStore,
        run: Run,
        manifest: Box<Manifest>,
        work: tempfile::TempDir,
    },
    /// A backup of the original scripts, decrypted, unpacked and read whole by its store.
    Legacy {
        store: &'a ConfiguredStore,
        adopted: Box<AdoptedRun>,
        manifest: Box<Manifest>,
    },
    Repo {
        store: &'a ConfiguredStore,
        repo: &'a dyn DifferentialStore,
        prepared: RepoPrepared,
    },
}

impl Job<'_> {
    fn name(&self) -> &'static str {
        match self {
            Job::Run { store, .. } | Job::Legacy { store, .. } | Job::Repo { store, .. } => store.name,
        }
    }

    /// Replaces the target's data; returns the outcome and the counts found afterwards.
    async fn restore(
        self,
        key: &Arc<DecryptKey>,
        request: RepoRestoreRequest<'_>,
        access: &RepoAccess<'_>,
    ) -> Result<(RestoreOutcome, Counts)> {
        let started = Instant::now();
        match self {
            Job::Run { store, run, manifest, work } => {
                tracing::info!("{}: restoring backup {}", store.name, run.id);
                let files = RestoreFiles::stored(work.path().to_path_buf(), key.clone());
                let found = store.store.restore(&manifest, &files).await?;
                let what = store.store.describe_counts(&manifest);
                tracing::info!("{}: found {what} across {} scope(s)", store.name, found.len());
                let outcome = RestoreOutcome {
                    store: store.name.to_string(),
                    id: run.id.to_string(),
                    stored_bytes: manifest.stored_bytes(),
                    raw_bytes: manifest.raw_bytes(),
                    seconds: started.elapsed().as_secs_f64(),
                    restored: what,
                    recovered: None,
                };
                Ok((outcome, found))
            }
            Job::Legacy { store, adopted, manifest } => {
                tracing::info!("{}: restoring {} (made by the original scripts)", store.name, adopted.run.path);
                let found = store.store.restore(&manifest, &adopted.restore_files()).await?;
                let what = store.store.describe_counts(&manifest);
                tracing::info!("{}: found {what} across {} scope(s)", store.name, found.len());
                let outcome = RestoreOutcome {
                    store: store.name.to_string(),
                    id: manifest.id.clone(),
                    stored_bytes: adopted.run.size,
                    raw_bytes: manifest.raw_bytes(),
                    seconds: started.elapsed().as_secs_f64(),
                    restored: format!("{what} (from a backup made by the original scripts)"),
                    recovered: None,
                };
                Ok((outcome, found))
            }
            Job::Repo { store, repo, prepared } => {
                tracing::info!("{}: restoring from its repository", store.name);
                let done = repo.restore(request, access, prepared).await?;
                let outcome = RestoreOutcome {
                    store: store.name.to_string(),
                    id: done.label,
                    stored_bytes: done.stored_bytes,
                    raw_bytes: done.stored_bytes,
                    seconds: started.elapsed().as_secs_f64(),
                    restored: done.recovered.clone(),
                    recovered: Some(done.recovered),
                };
                Ok((outcome, Counts::new()))
            }
        }
    }

    /// Where this store's drill report goes on the server, and the report as far as known before the restore.
    fn report(&self, started_at: chrono::DateTime<Utc>) -> (String, DrillReport) {
        let (dir, backup, finished, expected) = match self {
            Job::Run { run, manifest, .. } => (run.path(), run.id.to_string(), Some(manifest.finished_at.clone()), manifest.counts.clone()),
            // The date folder is shared with Lifeboat's runs: a report there would look like a run.
            Job::Legacy { store, manifest, .. } => {
                (drill::repository_dir(store.folder()), manifest.id.clone(), Some(manifest.finished_at.clone()), manifest.counts.clone())
            }
            Job::Repo { store, .. } => (drill::repository_dir(store.folder()), String::new(), None, Counts::new()),
        };
        let report = DrillReport {
            store: self.name().to_string(),
            backup,
            backup_finished_at: finished,
            started_at: started_at.to_rfc3339(),
            finished_at: String::new(),
            duration_seconds: 0.0,
            result: String::new(),
            error: None,
            restored: String::new(),
            counts_expected: expected,
            counts_found: Counts::new(),
            host: crate::deployment::host_name(),
        };
        (dir, report)
    }
}

impl RestoreOutcome {
    fn closing_line(&self) -> String {
        match &self.recovered {
            Some(recovered) => format!("{}: restore {} done: {recovered}", self.store, self.id),
            None => {
                tracing::info!("{}: verified {}: all match the backup", self.store, self.restored);
                summary(
                    &self.store,
                    "restore",
                    &self.id,
                    self.raw_bytes,
                    self.stored_bytes,
                    std::time::Duration::from_secs_f64(self.seconds),
                )
            }
        }
    }
}

/// Which backup a dump store's restore takes: one of Lifeboat's runs, or one of the original scripts.
enum Chosen {
    Run(Run),
    Legacy(LegacyRun),
}

/// `--from ID` names a Lifeboat run, or else a date of the original scripts' backups. Without
/// it, the newest of either kind: the original scripts' only when no Lifeboat run is as new (on
/// the same day Lifeboat's, which can be verified, wins). The log says which kind was chosen.
async fn choose(
    config: &Config,
    reader: &RunReader<'_>,
    folders: &[RunFolder],
    legacy_runs: &[LegacyRun],
    store: &ConfiguredStore,
    from: Option<&str>,
) -> Result<Chosen> {
    let theirs = || legacy_runs.iter().filter(|r| r.store == store.name);
    if let Some(id) = from {
        return match reader.choose(folders, store.folder(), Some(id)).await {
            Err(Error::NotFound(message)) => match theirs().find(|r| r.date.format("%Y-%m-%d").to_string() == id) {
                Some(run) => {
                    tracing::info!("{}: restoring {} (made by the original scripts), as --from {id} names", store.name, run.path);
                    Ok(Chosen::Legacy(run.clone()))
                }
                None => Err(Error::NotFound(message)),
            },
            chosen => chosen.map(Chosen::Run),
        };
    }
    let newest_legacy = theirs().max_by_key(|r| r.date);
    let can_read_legacy = config.legacy.passphrase_file.is_some();
    match (reader.choose(folders, store.folder(), None).await, newest_legacy) {
        (Ok(run), Some(old)) if old.date > run.id.date && can_read_legacy => {
            tracing::info!(
                "{}: choosing {} (made by the original scripts, {}): it is newer than Lifeboat's newest backup {}",
                store.name,
                old.path,
                old.date,
                run.id
            );
            Ok(Chosen::Legacy(old.clone()))
        }
        (Ok(run), Some(old)) if old.date > run.id.date => {
            tracing::warn!(
                "{}: {} (made by the original scripts) is newer than Lifeboat's newest backup {}, but legacy.passphrase_file is not set: restoring {}",
                store.name,
                old.path,
                run.id,
                run.id
            );
            Ok(Chosen::Run(run))
        }
        (Ok(run), _) => {
            tracing::info!("{}: choosing Lifeboat's backup {}, the newest", store.name, run.id);
            Ok(Chosen::Run(run))
        }
        (Err(Error::NotFound(_)), Some(old)) => {
            config.legacy.passphrase().map_err(|message| Error::Config { file: config.file.clone(), message })?;
            tracing::info!(
                "{}: no Lifeboat backup yet; choosing the newest made by the original scripts, {} ({})",
                store.name,
                old.path,
                old.date
            );
            Ok(Chosen::Legacy(old.clone()))
        }
        (Err(e), _) => Err(e),
    }
}
