//! The mirror's upkeep, both without the key: [`prune_mirror`] (on the backup server, with a key
//! that may delete) removes runs that are not kept and every stored file no kept run refers to;
//! [`verify_at_rest`] checks a run's stored files against its catalogue.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::mirror::{MirrorRun, data_dir, fetch_catalogue, run_dir, scan_runs};
use super::mirror_format::{Catalogue, MirrorId, StoredFile};
use crate::error::{Error, Result};
use crate::layout::{MANIFEST_NAME, RunState};
use crate::pipeline;
use crate::progress::Counters;
use crate::server::{BackupServer, join};
use crate::signing::Trust;
use crate::stores::RepoVerified;

/// A run without a manifest younger than this may still be running: it and its data are left alone.
const IN_PROGRESS: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// Stored files hashed at once by `verify`.
const PARALLEL_READS: usize = 4;

/// What [`prune_mirror`] removed, or would remove with `dry_run`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MirrorPruned {
    /// Run ids whose folders go.
    pub runs: Vec<String>,
    /// Every file that goes, relative to the server's root.
    pub files: Vec<String>,
    /// Their total size.
    pub bytes: u64,
}

/// Removes from the mirror in `folder` every run not in `keep` and every stored file that no kept
/// run refers to, and, with `dry_run`, only says what it would remove.
///
/// Never removed: the newest complete run (whatever `keep` says), runs without a manifest younger
/// than a day (they may be running) and their data. Incomplete runs older than a day and their
/// leftover data go. Every kept complete run's catalogue is read and checked first: if one cannot
/// be read, nothing is removed (its files might be taken for unreferenced ones). Within a run
/// folder the manifest goes first, so a run half removed reads as incomplete, never as complete.
/// `now` is the current time (a parameter for tests). Must not run while a backup of the same
/// mirror runs (that backup may be about to refer to a file that looks unreferenced).
pub async fn prune_mirror(
    server: &dyn BackupServer,
    folder: &str,
    trust: &Trust,
    keep: &BTreeSet<String>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<MirrorPruned> {
    let runs = scan_runs(server, folder, trust).await?;
    let newest_complete = runs.iter().rev().find(|r| r.manifest().is_some()).map(|r| r.id.clone());
    let young = |run: &MirrorRun| matches!(run.state, RunState::Incomplete) && now - run.id.started() < IN_PROGRESS;
    let kept = |run: &MirrorRun| keep.contains(&run.id.to_string()) || Some(&run.id) == newest_complete.as_ref() || young(run);

    let mut referenced: HashSet<String> = HashSet::new();
    for run in runs.iter().filter(|r| kept(r)) {
        let Some(manifest) = run.manifest() else {
            continue;
        };
        let catalogue = fetch_catalogue(server, folder, &run.id, manifest).await.map_err(|why| {
            Error::Integrity(format!(
                "cannot prune the minio mirror: kept run {} is damaged ({why}); nothing was removed; check it with `lifeboat verify`",
                run.id
            ))
        })?;
        referenced.extend(stored_files(&catalogue).map(|f| f.path.clone()));
    }
    // Data folders whose unreferenced files must stay: those of kept runs that are not complete
    // (running, or kept on purpose), and of very recent ids without a run folder (a claim under way).
    let protected: HashSet<MirrorId> = runs.iter().filter(|r| kept(r) && r.manifest().is_none()).map(|r| r.id.clone()).collect();
    let with_folder: HashSet<&MirrorId> = runs.iter().map(|r| &r.id).collect();

    let mut pruned = MirrorPruned::default();
    for run in runs.iter().filter(|r| !kept(r)) {
        let dir = run_dir(folder, &run.id);
        pruned.runs.push(run.id.to_string());
        // The manifest first: a run half removed must read as incomplete.
        let mut files: Vec<_> = run.files.iter().filter(|f| !f.is_dir).collect();
        files.sort_by_key(|f| f.name != MANIFEST_NAME);
        for f in files {
            pruned.files.push(join(&dir, &f.name));
            pruned.bytes += f.size;
            if !dry_run {
                server.delete(&join(&dir, &f.name)).await?;
            }
        }
        if !dry_run {
            server.delete_prefix(&dir).await?;
        }
    }
    for entry in server.list(&join(folder, "data")).await? {
        let Some(id) = entry.is_dir.then(|| MirrorId::parse(&entry.name)).flatten() else {
            continue;
        };
        if protected.contains(&id) || (!with_folder.contains(&id) && now - id.started() < IN_PROGRESS) {
            continue;
        }
        let dir = data_dir(folder, &id);
        let files = server.list(&dir).await?;
        let mut left = files.len();
        for f in files.iter().filter(|f| !f.is_dir && !referenced.contains(&format!("data/{id}/{}", f.name))) {
            pruned.files.push(join(&dir, &f.name));
            pruned.bytes += f.size;
            left -= 1;
            if !dry_run {
                server.delete(&join(&dir, &f.name)).await?;
            }
        }
        if left == 0 && !dry_run {
            server.remove_empty_prefix(&dir).await?;
        }
    }
    Ok(pruned)
}

/// Every stored file a catalogue refers to: its indexes and its objects' files.
fn stored_files(catalogue: &Catalogue) -> impl Iterator<Item = &StoredFile> {
    catalogue.header.indexes.iter().chain(catalogue.entries.iter().map(|e| &e.file))
}

/// `verify` without the key: the run `from` names (None when there is none), or the newest run
/// with a manifest. Its manifest, its catalogue, and every stored file it refers to (size and
/// SHA-256, read whole).
pub(super) async fn verify_at_rest(
    server: &dyn BackupServer,
    folder: &str,
    trust: &Trust,
    from: Option<&str>,
) -> Result<Option<RepoVerified>> {
    let runs = scan_runs(server, folder, trust).await?;
    let run = match from {
        Some(id) => runs.iter().find(|r| r.id.to_string() == id),
        None => runs.iter().rev().find(|r| !matches!(r.state, RunState::Incomplete)),
    };
    let Some(run) = run else { return Ok(None) };
    let id = run.id.to_string();
    let checked = |files, bytes, problems: Vec<String>| {
        let how = format!("{files} stored files checked against the catalogue");
        Ok(Some(RepoVerified { id: id.clone(), files, bytes, problems, how }))
    };
    let manifest = match &run.state {
        RunState::Complete(m) => m,
        RunState::Damaged(why) => return checked(0, 0, vec![why.clone()]),
        RunState::Incomplete => {
            return checked(0, 0, vec!["the run is not complete (no manifest)".into()]);
        }
    };
    let catalogue = match fetch_catalogue(server, folder, &run.id, manifest).await {
        Ok(c) => c,
        Err(why) => return checked(0, 0, vec![why]),
    };
    let files: Vec<&StoredFile> = stored_files(&catalogue).collect();
    let checks: Vec<_> = files.iter().map(|f| check_stored(server, folder, f)).collect();
    let problems: Vec<Option<String>> = futures::stream::iter(checks).buffered(PARALLEL_READS).collect().await;
    checked(files.len(), files.iter().map(|f| f.size).sum(), problems.into_iter().flatten().collect())
}

/// Reads one stored file whole: `Some(problem)` when it is missing or differs from the catalogue.
async fn check_stored(server: &dyn BackupServer, folder: &str, file: &StoredFile) -> Option<String> {
    let path = join(folder, &file.path);
    let source = match server.open(&path).await {
        Ok(s) => s,
        Err(e) => return Some(format!("{path}: cannot be read ({e})")),
    };
    match pipeline::copy_hashed(source, &mut tokio::io::sink(), &Counters::default().stored).await {
        Ok((size, sha)) if size == file.size && sha == file.sha256 => None,
        Ok((size, _)) => Some(format!("{path}: checksum or size differs from the catalogue (size {size} vs {})", file.size)),
        Err(e) => Some(format!("{path}: cannot be read ({e})")),
    }
}
