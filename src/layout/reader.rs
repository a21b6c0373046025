//! [`RunReader`]: the restore and verify side of a run's life. List the runs once, choose one,
//! fetch and verify its files. Everything read from the server is untrusted: names are checked
//! before use, and a damaged run is reported as damaged without hiding the good ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{FileEntry, MANIFEST_NAME};
use super::{Run, RunFolder, RunId, RunState, check_file_name, drill, signed};
use crate::error::{Error, Result};
use crate::pipeline::bridge::{PipeWriter, pipe_with};
use crate::pipeline::{self, DecryptKey};
use crate::progress::{Counters, Progress};
use crate::server::{BackupServer, join};
use crate::signing::{SIGNATURE_NAME, Trust};

use super::signed::MAX_MANIFEST;

pub struct RunReader<'a> {
    server: &'a dyn BackupServer,
    trust: &'a Trust,
}

impl<'a> RunReader<'a> {
    /// A reader that counts a run as complete only when its manifest is signed as `trust` wants.
    pub fn new(server: &'a dyn BackupServer, trust: &'a Trust) -> Self {
        RunReader { server, trust }
    }

    /// Every run folder on the server, oldest first, without reading any manifest: listing
    /// stays cheap however many runs there are, and a manifest is read only when a command
    /// needs that run ([`RunReader::open`]).
    pub async fn folders(&self) -> Result<Vec<RunFolder>> {
        let mut folders = Vec::new();
        for day in self.server.list("").await? {
            let Some(id) = day.is_dir.then(|| RunId::parse(&day.name)).flatten() else {
                continue;
            };
            for store in self.server.list(&day.name).await? {
                if !store.is_dir || check_file_name(&store.name).is_err() {
                    continue;
                }
                let files = self.server.list(&join(&day.name, &store.name)).await?;
                // A folder without any object is no run (every run begins with its claim): an
                // object store may still list a prefix whose objects were all deleted (MinIO on a
                // versioned bucket lists it by its delete markers).
                if files.is_empty() {
                    continue;
                }
                let (drills, stored): (Vec<_>, Vec<_>) = files.iter().filter(|f| !f.is_dir).partition(|f| drill::is_report(&f.name));
                let mut drills: Vec<String> = drills.into_iter().map(|f| f.name.clone()).collect();
                drills.sort();
                folders.push(RunFolder {
                    id: id.clone(),
                    folder: store.name,
                    bytes: stored.iter().map(|f| f.size).sum(),
                    manifest_size: files.iter().find(|f| f.name == MANIFEST_NAME && !f.is_dir).map(|f| f.size),
                    signed: files.iter().any(|f| f.name == SIGNATURE_NAME && !f.is_dir),
                    drills,
                });
            }
        }
        folders.sort_by(|a, b| a.id.cmp(&b.id).then(a.folder.cmp(&b.folder)));
        Ok(folders)
    }

    /// Every run on the server with its manifest read, oldest first (what `list` shows). One
    /// damaged run is listed as damaged; it never stops the listing.
    pub async fn list(&self) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        for folder in self.folders().await? {
            runs.push(self.open(&folder).await);
        }
        Ok(runs)
    }

    /// Reads a run folder's manifest, if it has one. Never fails: what is wrong with the
    /// manifest becomes [`RunState::Damaged`].
    pub async fn open(&self, folder: &RunFolder) -> Run {
        let state = match folder.manifest_size {
            None => RunState::Incomplete,
            Some(size) => self.read_manifest(folder, size).await,
        };
        Run { id: folder.id.clone(), folder: folder.folder.clone(), state, bytes: folder.bytes }
    }

    async fn read_manifest(&self, folder: &RunFolder, size: u64) -> RunState {
        if size > MAX_MANIFEST {
            return RunState::Damaged(format!("{MANIFEST_NAME} is {size} bytes, far larger than any real one"));
        }
        let id = folder.id.to_string();
        signed::read_manifest(self.server, &folder.path(), &id, folder.signed, self.trust, |_| Ok(())).await
    }

    /// Walks one store folder's runs from the newest back to the newest complete one, reading
    /// only those manifests. Returns that run (if any) and the newer runs passed over.
    pub async fn newest_complete(&self, folders: &[RunFolder], store_folder: &str) -> (Option<Run>, Vec<Run>) {
        let mut passed = Vec::new();
        for folder in folders.iter().rev().filter(|f| f.folder == store_folder) {
            let run = self.open(folder).await;
            if run.complete() {
                return (Some(run), passed);
            }
            passed.push(run);
        }
        (None, passed)
    }

    /// The run to restore for a store folder: the newest complete one (damaged ones on the way
    /// are named in the log and passed over), or the one named by `from`.
    pub async fn choose(&self, folders: &[RunFolder], store_folder: &str, from: Option<&str>) -> Result<Run> {
        let server = self.server.describe();
        let Some(wanted) = from else {
            let (newest, passed) = self.newest_complete(folders, store_folder).await;
            for run in &passed {
                if let RunState::Damaged(why) = &run.state {
                    tracing::warn!("{store_folder}: passing over damaged backup {}: {why}", run.id);
                }
            }
            let damaged = passed.iter().filter(|r| matches!(r.state, RunState::Damaged(_))).count();
            return newest.ok_or_else(|| {
                let also = if damaged > 0 { format!(" ({damaged} damaged run(s) found, see `lifeboat list`)") } else { String::new() };
                Error::NotFound(format!(
                    "no complete backup of {store_folder} on {server}{also}: nothing was restored; run a backup first or check server.url"
                ))
            });
        };
        let id = RunId::parse(wanted).ok_or_else(|| {
            Error::Usage(format!("--from `{wanted}` is not a backup id (YYYY-MM-DD or YYYY-MM-DD_N); see `lifeboat list`"))
        })?;
        let folder = folders
            .iter()
            .find(|f| f.folder == store_folder && f.id == id)
            .ok_or_else(|| Error::NotFound(format!("no backup {wanted} of {store_folder} on {server}; see `lifeboat list`")))?;
        let run = self.open(folder).await;
        match &run.state {
            RunState::Complete(_) => Ok(run),
            RunState::Incomplete => Err(Error::NotFound(format!(
                "backup {wanted} of {store_folder} is not complete (no manifest: it failed or was interrupted); choose another with --from"
            ))),
            RunState::Damaged(why) => Err(Error::Integrity(format!(
                "backup {wanted} of {store_folder} is damaged: {why}; nothing was restored; choose another with --from"
            ))),
        }
    }

    /// Streams one stored file of `run` into `dest`, returning its server path, size and
    /// SHA-256. `doing` names the transfer in errors (`downloading`, `reading`).
    async fn copy_stored(
        &self,
        run: &Run,
        entry: &FileEntry,
        dest: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        tap: Option<&mut PipeWriter>,
        counters: &Counters,
        doing: &str,
    ) -> Result<(String, u64, String)> {
        check_file_name(&entry.name)?;
        let remote = join(&run.path(), &entry.name);
        let source = self.server.open(&remote).await?;
        let (size, sha256) = pipeline::copy_hashed_tapped(source, dest, tap, &counters.stored)
            .await
            .map_err(|e| self.server.error(format!("{doing} {remote}: {e}")))?;
        Ok((remote, size, sha256))
    }

    /// Downloads one file of `run` into `dir`, checking its size and SHA-256 against the
    /// manifest and that `key` opens it. Returns the local path.
    pub async fn fetch_verified(&self, run: &Run, entry: &FileEntry, dir: &Path, key: &DecryptKey) -> Result<PathBuf> {
        let local = self.download(run, entry, dir, None).await?;
        pipeline::check_decryptable(&local, key, &entry.name)?;
        Ok(local)
    }

    /// As [`Self::fetch_verified`], and decodes the file while it downloads, into
    /// [`plain_name`] beside it, for a store that needs the plain bytes as a file (a parallel
    /// pg_restore). The decoding overlaps the download instead of following it. The plain file
    /// counts only once the download matched the manifest and decoded to exactly its `raw_size`.
    pub async fn fetch_verified_decoded(&self, run: &Run, entry: &FileEntry, dir: &Path, key: Arc<DecryptKey>) -> Result<PathBuf> {
        check_file_name(&entry.name)?;
        let plain = dir.join(plain_name(&entry.name));
        let (mut tap, tapped) = pipe_with(1 << 20, 8);
        let (name, raw_size, path) = (entry.name.clone(), entry.raw_size, plain.clone());
        let decoder = tokio::task::spawn_blocking(move || -> Result<u64> {
            let mut out = std::fs::File::create_new(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            let mut reader = pipeline::decode_stream(tapped, &key, &name)?;
            // Never more than the manifest says: the decoded size is part of what it records.
            std::io::copy(&mut std::io::Read::take(&mut reader, raw_size + 1), &mut out)
                .map_err(|e| Error::Integrity(format!("{name}: {e}")))
        });
        let downloaded = self.download(run, entry, dir, Some(&mut tap)).await;
        match downloaded {
            Ok(_) => tap.finish_async().await.unwrap_or(()),
            Err(_) => tap.fail_async(std::io::Error::other("the download failed")).await,
        }
        let decoded = decoder.await.map_err(|e| Error::io("decoding thread", std::io::Error::other(e.to_string())))?;
        let local = downloaded?;
        let written = decoded?;
        if written != raw_size {
            return Err(Error::Integrity(format!(
                "{} decodes to {written} bytes where its manifest says {raw_size}: the backup is damaged; nothing was restored; restore an older backup with --from ID",
                entry.name
            )));
        }
        Ok(local)
    }

    /// Downloads one file into `dir` (never over an existing file), handing its bytes to `tap`
    /// too, and checks its size and SHA-256 against the manifest.
    async fn download(&self, run: &Run, entry: &FileEntry, dir: &Path, tap: Option<&mut PipeWriter>) -> Result<PathBuf> {
        check_file_name(&entry.name)?;
        let local = dir.join(&entry.name);
        let counters = Arc::new(Counters::default());
        let _progress = Progress::start(format!("{}: downloading {}", run.folder, entry.name), counters.clone());
        let remote = join(&run.path(), &entry.name);
        let source = self.server.open(&remote).await?;
        let want = StoredDigest { size: entry.size, sha256: &entry.sha256 };
        if let Some(differs) = download_checked(self.server, &remote, source, &local, want, tap, &counters).await? {
            return Err(Error::Integrity(format!(
                "stored file {remote} does not match its manifest ({differs}): \
                 the backup is damaged; nothing was restored; restore an older backup with --from ID"
            )));
        }
        Ok(local)
    }

    /// Checks one stored file at rest (size and SHA-256, no key needed). `Some(problem)` when
    /// it differs from the manifest.
    pub async fn check_at_rest(&self, run: &Run, entry: &FileEntry) -> Result<Option<String>> {
        let (remote, size, sha) = self.copy_stored(run, entry, &mut tokio::io::sink(), None, &Counters::default(), "reading").await?;
        Ok((size != entry.size || sha != entry.sha256)
            .then(|| format!("{remote}: checksum or size differs from the manifest (size {size} vs {})", entry.size)))
    }
}

/// A stored file's size and SHA-256 (hex), as its manifest, or a mirror's catalogue, records them.
#[derive(Debug, Clone, Copy)]
pub struct StoredDigest<'a> {
    pub size: u64,
    pub sha256: &'a str,
}

/// Downloads the stored file `remote` (opened as `source`) into the new local file `local` (never
/// over an existing one), hashing it as it comes and handing its bytes to `tap` too. `Ok(None)`
/// when it is what `want` says; `Ok(Some(how))` names how it differs. The one download of a
/// stored file, for runs and for the MinIO mirror alike.
pub async fn download_checked(
    server: &dyn BackupServer,
    remote: &str,
    source: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    local: &Path,
    want: StoredDigest<'_>,
    tap: Option<&mut PipeWriter>,
    counters: &Counters,
) -> Result<Option<String>> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(local)
        .await
        .map_err(|e| Error::io(format!("creating {}", local.display()), e))?;
    let (size, sha256) = pipeline::copy_hashed_tapped(source, &mut file, tap, &counters.stored)
        .await
        .map_err(|e| server.error(format!("downloading {remote}: {e}")))?;
    Ok((size != want.size || sha256 != want.sha256)
        .then(|| format!("size {size} vs {}, sha256 {} vs {}", want.size, &sha256[..12], &want.sha256[..want.sha256.len().min(12)])))
}

/// The name of a stored file's decoded copy beside it ([`RunReader::fetch_verified_decoded`]).
pub fn plain_name(name: &str) -> String {
    format!("{name}.plain")
}
