//! MinIO `differential`: an encrypted incremental mirror of the buckets on the backup server,
//! outside the date folders, in `<server root>/<server_dir>/` (default `minio/`):
//!
//! ```text
//! minio/runs/<id>/catalogue.jsonl.zst   every object of the run: fingerprint → stored file (plain, no keys)
//! minio/runs/<id>/manifest.json         written last: the run is complete once it exists
//! minio/data/<id>/<n>.zst.age           one object uploaded by run <id>: zstd then age, as dump files
//! minio/data/<id>/index.jsonl.zst.age   what run <id> uploaded (bucket, key, headers, metadata) and
//!                                       each bucket's policy and versioning, encrypted
//! ```
//!
//! A run (`mirror_backup.rs`) lists the buckets and fingerprints each object from the listing
//! alone (bucket, key, size, ETag, Last-Modified); an object whose fingerprint the newest complete
//! run's catalogue holds is not fetched at all, its stored file is referred to again. S3 rewrites
//! an object whole to change its headers or metadata, which gives it a new Last-Modified, so a
//! metadata-only change is seen too. Deleted objects are simply not in the new catalogue.
//!
//! Nothing on the server is ever renamed, overwritten or deleted by the backup side (an
//! append-only key is enough): the run folder is claimed by creating its `run.claim` only if absent, every file is
//! created new, and the manifest written last is the commit. A run that dies part-way leaves the
//! previous complete run as it was; its leftovers are removed by [`super::prune_mirror`].
//!
//! At rest, without the key, the catalogue shows how many objects a run holds and their stored
//! sizes, and which stored files runs share. Its fingerprints are keyed with the MinIO secret key
//! (HMAC-SHA-256): whoever holds only the backup server cannot confirm a guessed object key and
//! ETag; whoever also holds the MinIO secret can (and can read MinIO anyway). Changing the MinIO
//! secret key changes every fingerprint: the next run uploads everything once.
//!
//! Restore (`mirror_restore.rs`) downloads and checks every stored file the chosen run refers to
//! (size, SHA-256, the key opens it, it decodes to the recorded size) before any bucket is touched,
//! then rebuilds each bucket as dump restores do and compares objects and bytes per bucket.
//! `mirror_prune.rs`: removing runs and unreferenced data, and `verify`; `mirror_format.rs`: run
//! ids, the catalogue and index formats; `mirror_store.rs`: the mirror as a `DifferentialStore`.

use chrono::{DateTime, Utc};

use super::mirror_format::{CATALOGUE_FILE, Catalogue, MAX_CATALOGUE, MirrorId, StoredFile};
use crate::error::Result;
use crate::layout::manifest::StoreType;
use crate::layout::{MANIFEST_NAME, Manifest, RunState, signed};
use crate::server::{BackupServer, DirEntry, join};
use crate::signing::{SIGNATURE_NAME, Trust};
use crate::stores::RepoBackup;

/// The mirror's default folder on the backup server (`server_dir` overrides it).
pub const MIRROR_FOLDER: &str = "minio";

pub(super) fn run_dir(folder: &str, id: &MirrorId) -> String {
    format!("{folder}/runs/{id}")
}

pub(super) fn data_dir(folder: &str, id: &MirrorId) -> String {
    format!("{folder}/data/{id}")
}

/// The manifest's `extra` for a mirror run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct MirrorExtra {
    pub(super) format: u32,
    /// The run's own encrypted index.
    pub(super) index: StoredFile,
    pub(super) uploaded_objects: u64,
    pub(super) reused_objects: u64,
    /// Plain bytes of the objects this run uploaded.
    pub(super) uploaded_bytes: u64,
    /// Bytes this run added to the server (data, index, catalogue).
    pub(super) stored_bytes: u64,
}

/// One run folder as found on the server.
pub(super) struct MirrorRun {
    pub(super) id: MirrorId,
    pub(super) state: RunState,
    /// Files in the run folder.
    pub(super) files: Vec<DirEntry>,
}

impl MirrorRun {
    pub(super) fn manifest(&self) -> Option<&Manifest> {
        match &self.state {
            RunState::Complete(m) => Some(m),
            _ => None,
        }
    }
}

/// Every run folder of the mirror, oldest first, each manifest read and checked (a run never
/// counts as complete unless its manifest parses, names this run and lists a catalogue).
/// Folders whose names are not mirror ids are not the mirror's and are left out.
pub(super) async fn scan_runs(server: &dyn BackupServer, folder: &str, trust: &Trust) -> Result<Vec<MirrorRun>> {
    let mut runs = Vec::new();
    for entry in server.list(&join(folder, "runs")).await? {
        let Some(id) = entry.is_dir.then(|| MirrorId::parse(&entry.name)).flatten() else {
            continue;
        };
        let dir = run_dir(folder, &id);
        let files = server.list(&dir).await?;
        let listed = |name: &str| files.iter().any(|f| f.name == name && !f.is_dir);
        let state = match listed(MANIFEST_NAME) {
            false => RunState::Incomplete,
            true => signed::read_manifest(server, &dir, &id.to_string(), listed(SIGNATURE_NAME), trust, is_mirror_run).await,
        };
        runs.push(MirrorRun { id, state, files });
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(runs)
}

/// A run counts only if its manifest is a mirror run's, with a catalogue and readable extras.
fn is_mirror_run(m: &Manifest) -> std::result::Result<(), String> {
    if m.store != "minio" || m.kind != StoreType::Differential || m.file(CATALOGUE_FILE).is_none() {
        return Err(format!("{MANIFEST_NAME} is not a MinIO mirror run's ({} {})", m.store.escape_debug(), m.kind));
    }
    m.extra::<MirrorExtra>().map(|_| ()).map_err(|e| e.to_string())
}

/// Downloads run `id`'s catalogue and checks it against its manifest. `Err` says why it cannot be used.
pub(super) async fn fetch_catalogue(
    server: &dyn BackupServer,
    folder: &str,
    id: &MirrorId,
    manifest: &Manifest,
) -> std::result::Result<Catalogue, String> {
    let entry = manifest.file(CATALOGUE_FILE).ok_or_else(|| format!("the manifest lists no {CATALOGUE_FILE}"))?;
    if entry.size > MAX_CATALOGUE {
        return Err(format!("{CATALOGUE_FILE} is said to be {} bytes, far larger than any real one", entry.size));
    }
    let path = join(&run_dir(folder, id), CATALOGUE_FILE);
    let data = server.read_small(&path, entry.size).await.map_err(|e| format!("{CATALOGUE_FILE} cannot be read ({e})"))?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    if data.len() as u64 != entry.size || sha != entry.sha256 {
        return Err(format!("{CATALOGUE_FILE} does not match its manifest (size {} vs {}, sha256 {})", data.len(), entry.size, &sha[..12]));
    }
    Catalogue::parse(&data, &id.to_string()).map_err(|why| format!("{CATALOGUE_FILE} {why}"))
}

/// The mirror's runs as `list` and `status` show them, oldest first: complete, incomplete (no
/// manifest: failed, interrupted or still running) or damaged. A complete run's size is what it
/// added to the server.
pub async fn list_mirror_runs(server: &dyn BackupServer, folder: &str, trust: &Trust) -> Result<Vec<RepoBackup>> {
    let mut out = Vec::new();
    for run in scan_runs(server, folder, trust).await? {
        let extra = run.manifest().and_then(|m| m.extra::<MirrorExtra>().ok());
        let finished = run.manifest().and_then(|m| DateTime::parse_from_rfc3339(&m.finished_at).ok()).map(|t| t.with_timezone(&Utc));
        let stored_bytes = match &extra {
            Some(extra) => extra.stored_bytes,
            None => {
                let data: u64 = server.list(&data_dir(folder, &run.id)).await?.iter().map(|f| f.size).sum();
                data + run.files.iter().map(|f| f.size).sum::<u64>()
            }
        };
        let signed_by = run.manifest().and_then(|m| m.signature.as_ref()).map(|s| s.to_string());
        out.push(RepoBackup {
            signed_by,
            label: run.id.to_string(),
            kind: "mirror".into(),
            finished_at: finished.unwrap_or_else(|| run.id.started()),
            stored_bytes,
            path: run_dir(folder, &run.id),
            complete: extra.is_some(),
            damaged: match run.state {
                RunState::Damaged(why) => Some(why),
                _ => None,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_ids_parse_print_and_order() {
        for (text, ok) in [
            ("20260115T010203Z", true),
            ("20260115T010203Z_2", true),
            ("20260115T010203Z_12", true),
            ("20260115T010203Z_1", false),
            ("20260115T010203Z_02", false),
            ("20260115T010203", false),
            ("20261315T010203Z", false),
            ("2026-01-15", false),
            ("../x", false),
            ("", false),
        ] {
            assert_eq!(MirrorId::parse(text).is_some(), ok, "{text}");
        }
        let mut ids: Vec<MirrorId> = ["20260115T010203Z_10", "20260116T000000Z", "20260115T010203Z", "20260115T010203Z_2"]
            .iter()
            .map(|s| MirrorId::parse(s).unwrap())
            .collect();
        ids.sort();
        let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["20260115T010203Z", "20260115T010203Z_2", "20260115T010203Z_10", "20260116T000000Z"]);
    }
}
