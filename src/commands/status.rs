//! `lifeboat status`: the newest complete backup of each configured store, its age, how many
//! newer runs are damaged or incomplete, the last failed run and the last restore drill, and the
//! space left on the backup server; with `--max-age`, a non-zero exit when any store's newest
//! backup is older (or missing), for alerting. Only the manifests from the newest run back to the
//! newest complete one are read, and one drill report per store.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::drill::{self, DrillReport};
use crate::layout::{Run, RunFolder, RunReader, RunState};
use crate::progress::human_bytes;
use crate::server::{self, BackupServer, FreeSpace, join};
use crate::stores::RepoAccess;
use crate::units::parse_duration;

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreStatus {
    pub store: String,
    pub newest: Option<String>,
    pub finished_at: Option<String>,
    pub age_seconds: Option<u64>,
    /// Runs newer than the newest complete one whose manifest is damaged (never restored).
    pub damaged_since: usize,
    /// Runs newer than the newest complete one without a manifest (failed, interrupted, running).
    pub incomplete_since: usize,
    /// The newest run that is not complete: its id and `incomplete` or `damaged`.
    pub last_failed: Option<FailedRun>,
    /// The newest restore drill report of this store, wherever it was found.
    pub last_drill: Option<DrillReport>,
    pub ok: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedRun {
    pub id: String,
    pub state: &'static str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub server: String,
    /// Space left where the server tells it (`statvfs`), else null.
    pub free_space: Option<FreeSpace>,
    pub stores: Vec<StoreStatus>,
}

pub async fn run(config: &Config, max_age: Option<&str>, json: bool) -> Result<Status> {
    let max_age = max_age.map(|m| parse_duration(m).map_err(|e| Error::Usage(format!("--max-age {e}")))).transpose()?;
    let stores = config.configured_stores(&[])?;
    let server = server::connect(&config.server).await?;
    let trust = config.signing.trust()?;
    let reader = RunReader::new(server.as_ref(), &trust);
    let folders = reader.folders().await?;
    let access = RepoAccess { server: server.as_ref(), trust: &trust, key: None };
    let now = chrono::Utc::now();
    let drills_dir = drill::local_dir(&config.file);
    let mut out = Vec::new();
    for store in &stores {
        let (newest_id, finished, damaged_since, incomplete_since, last_failed, drill_on_server) = match store.store.differential() {
            // A differential store's backups are in its repository (pgBackRest lists only finished ones).
            Some(repo) => {
                let backups = repo.backups(&access).await?;
                let newest = backups.iter().rposition(|b| b.complete);
                let since = &backups[newest.map_or(0, |i| i + 1)..];
                let newest = newest.map(|i| &backups[i]);
                let damaged = since.iter().filter(|b| b.damaged.is_some()).count();
                let incomplete = since.iter().filter(|b| !b.complete && b.damaged.is_none()).count();
                let failed = backups
                    .iter()
                    .rfind(|b| !b.complete)
                    .map(|b| FailedRun { id: b.label.clone(), state: if b.damaged.is_some() { "damaged" } else { "incomplete" } });
                let drill = drill::newest_in(server.as_ref(), &drill::repository_dir(store.folder())).await?;
                (newest.map(|b| b.label.clone()), newest.map(|b| b.finished_at.fixed_offset()), damaged, incomplete, failed, drill)
            }
            None => {
                let (newest, since) = reader.newest_complete(&folders, store.folder()).await;
                let finished =
                    newest.as_ref().and_then(|r| r.manifest()).and_then(|m| chrono::DateTime::parse_from_rfc3339(&m.finished_at).ok());
                let damaged = since.iter().filter(|r| matches!(r.state, RunState::Damaged(_))).count();
                let incomplete = since.iter().filter(|r| matches!(r.state, RunState::Incomplete)).count();
                let failed = last_failed(&folders, store.folder(), &since);
                let drill = newest_drill_on_server(server.as_ref(), &folders, store.folder()).await;
                (newest.map(|r| r.id.to_string()), finished, damaged, incomplete, failed, drill)
            }
        };
        let local = drill::newest_local(&drills_dir.join(store.name)).map(|(_, r)| r);
        let last_drill = [drill_on_server, local].into_iter().flatten().max_by(|a, b| a.finished_at.cmp(&b.finished_at));
        let age = finished.map(|f| (now - f.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64);
        let ok = match (max_age, age) {
            (Some(max), Some(age)) => age <= max.as_secs(),
            (Some(_), None) => false,
            (None, _) => true,
        };
        out.push(StoreStatus {
            store: store.name.to_string(),
            newest: newest_id,
            finished_at: finished.map(|f| f.to_rfc3339()),
            age_seconds: age,
            damaged_since,
            incomplete_since,
            last_failed,
            last_drill,
            ok,
        });
    }
    let free_space = match server.free_space().await {
        Ok(space) => space,
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    let status = Status { server: server.describe(), free_space, stores: out };
    if json {
        println!("{}", serde_json::to_string_pretty(&status).expect("serialises"));
    } else {
        match &status.free_space {
            Some(space) => println!(
                "backup server {}: {} free of {}",
                status.server,
                human_bytes(space.available_bytes),
                human_bytes(space.total_bytes)
            ),
            None => println!("backup server {}: free space unknown (the server does not tell)", status.server),
        }
        for s in &status.stores {
            let since = match (s.damaged_since, s.incomplete_since) {
                (0, 0) => String::new(),
                (d, i) => format!("; since then {d} damaged and {i} incomplete run(s), see `lifeboat list`"),
            };
            match (&s.newest, s.age_seconds) {
                (Some(id), Some(age)) => println!(
                    "{}: newest complete backup {id}, {:.1} h old{}{since}",
                    s.store,
                    age as f64 / 3600.0,
                    if s.ok { "" } else { " (TOO OLD)" }
                ),
                _ => println!("{}: no complete backup{}{since}", s.store, if s.ok { "" } else { " (ALERT)" }),
            }
            if let Some(failed) = &s.last_failed {
                println!("  last failed run: {} ({})", failed.id, failed.state);
            }
            match &s.last_drill {
                Some(d) => println!(
                    "  last restore drill: {} on {}, of backup {}: {}{}",
                    d.finished_at,
                    d.host,
                    d.backup,
                    d.result,
                    if d.restored.is_empty() { String::new() } else { format!(" ({})", d.restored) }
                ),
                None => println!("  last restore drill: none found"),
            }
        }
    }
    let stale: Vec<&str> = status.stores.iter().filter(|s| !s.ok).map(|s| s.store.as_str()).collect();
    if !stale.is_empty() {
        return Err(Error::Stale(format!("no recent enough complete backup for: {}; check the backup jobs' logs", stale.join(", "))));
    }
    Ok(status)
}

/// The newest run of a store that is not complete: among those newer than the newest complete
/// one (already read), else the newest older folder without a manifest (no manifest is read).
fn last_failed(folders: &[RunFolder], store_folder: &str, since: &[Run]) -> Option<FailedRun> {
    if let Some(run) = since.first() {
        let state = if matches!(run.state, RunState::Damaged(_)) { "damaged" } else { "incomplete" };
        return Some(FailedRun { id: run.id.to_string(), state });
    }
    folders
        .iter()
        .rev()
        .find(|f| f.folder == store_folder && f.manifest_size.is_none())
        .map(|f| FailedRun { id: f.id.to_string(), state: "incomplete" })
}

/// The newest drill report in any of a store's run folders (the names sort by time).
async fn newest_drill_on_server(server: &dyn BackupServer, folders: &[RunFolder], store_folder: &str) -> Option<DrillReport> {
    let (folder, name) = folders
        .iter()
        .filter(|f| f.folder == store_folder)
        .filter_map(|f| f.drills.last().map(|name| (f, name)))
        .max_by(|a, b| a.1.cmp(b.1))?;
    drill::read(server, &join(&folder.path(), name)).await
}
