//! [`RunWriter`]: the backup side of a run's life. Claim a folder, put each file once, then
//! commit (write `manifest.json.sig`, then `manifest.json`, last) or abort.
//!
//! Nothing is ever renamed or replaced on the server: every file is created new, and the
//! manifest written last is the commit. A run that dies before it has no manifest and is never
//! complete. `abort` removes what it can; a server that refuses (an append-only key) keeps the
//! leftovers for `prune` on the server side.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::io::AsyncRead;

use super::manifest::{FORMAT_VERSION, FileEntry, ImportedFrom, MANIFEST_NAME, Manifest, StoreBackup, StoreType};
use super::{CLAIM_NAME, RunId, check_file_name, claim_by_this_process};
use crate::error::{Error, Result};
use crate::pipeline::{self, Compression, EncryptKey, Source};
use crate::progress::{Counters, Progress};
use crate::server::{BackupServer, join};
use crate::signing::ManifestSigner;

pub struct RunWriter<'a> {
    server: &'a dyn BackupServer,
    key: &'a EncryptKey,
    compression: &'a Compression,
    store: &'static str,
    id: RunId,
    path: String,
    started_at: DateTime<Utc>,
    files: Vec<FileEntry>,
    counters: Arc<Counters>,
    /// For an imported run: where from, and the time its manifest records.
    imported: Option<(ImportedFrom, DateTime<Utc>)>,
}

impl<'a> RunWriter<'a> {
    /// Claims a new run folder for `folder` on `date`: the first free `<date>[_n]/<folder>`,
    /// taken by creating its [`CLAIM_NAME`] object only if absent, so two runs never share one.
    pub async fn claim(
        server: &'a dyn BackupServer,
        date: NaiveDate,
        store: &'static str,
        folder: &str,
        key: &'a EncryptKey,
        compression: &'a Compression,
    ) -> Result<RunWriter<'a>> {
        check_file_name(folder)?;
        let started_at = Utc::now();
        let claim = claim_by_this_process(store);
        for seq in 1..10_000 {
            let id = RunId { date, seq };
            let path = join(&id.to_string(), folder);
            if server.create_if_absent(&join(&path, CLAIM_NAME), &claim).await? {
                let counters = Arc::new(Counters::default());
                return Ok(RunWriter {
                    server,
                    key,
                    compression,
                    store,
                    id,
                    path,
                    started_at,
                    files: Vec::new(),
                    counters,
                    imported: None,
                });
            }
        }
        Err(server.error(format!("too many runs of {folder} on {date}")))
    }

    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The run folder, relative to the server's root.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Plain bytes read and bytes stored so far, over all files.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Streams `source` into a new file `name` of the run (compressed, encrypted, hashed).
    /// It counts only once the manifest lists it.
    pub async fn put(&mut self, name: &str, source: Box<dyn AsyncRead + Send + Unpin>) -> Result<()> {
        self.put_source(name, Source::Stream(source)).await
    }

    /// [`Self::put`] from any [`Source`], e.g. a dump tool's stdout read directly.
    pub async fn put_source(&mut self, name: &str, source: Source) -> Result<()> {
        check_file_name(name)?;
        if name == MANIFEST_NAME || self.files.iter().any(|f| f.name == name) {
            return Err(Error::store(self.store, format!("the run already has a file named {name} (a bug in the store)")));
        }
        let dest = self.server.create(&join(&self.path, name)).await?;
        let file_counters = Arc::new(Counters::default());
        let _progress = Progress::start(format!("{}: {name}", self.store), file_counters.clone());
        let encoded = match pipeline::encode_stream(source, dest, self.key, self.compression, file_counters).await {
            Ok(encoded) => encoded,
            Err(Error::Upload(source)) => {
                return Err(self.server.upload_failed(&join(&self.path, name), source).await);
            }
            Err(e) => return Err(e),
        };
        self.counters.read.fetch_add(encoded.raw_size, Ordering::Relaxed);
        self.counters.stored.fetch_add(encoded.size, Ordering::Relaxed);
        tracing::debug!(
            "{}: {name}: {} plain bytes → {} stored in {:.1} s (encode thread busy {:.1} s)",
            self.store,
            encoded.raw_size,
            encoded.size,
            encoded.elapsed.as_secs_f64(),
            encoded.encode_time.as_secs_f64()
        );
        self.files.push(FileEntry { name: name.to_string(), size: encoded.size, sha256: encoded.sha256, raw_size: encoded.raw_size });
        Ok(())
    }

    /// Marks the run as imported from `from`, a backup made at `made_at`: its manifest records
    /// that time (not the import's), so its age and retention are the original backup's.
    pub fn imported(&mut self, from: ImportedFrom, made_at: DateTime<Utc>) {
        self.imported = Some((from, made_at));
    }

    /// Makes the run complete: every file durable, then `manifest.json` written last.
    pub async fn commit(self, kind: StoreType, info: StoreBackup, signer: &ManifestSigner) -> Result<Manifest> {
        for f in &self.files {
            self.server.make_durable(&join(&self.path, &f.name)).await?;
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            store: self.store.to_string(),
            kind,
            id: self.id.to_string(),
            started_at: self.imported.as_ref().map_or(self.started_at, |(_, at)| *at).to_rfc3339(),
            finished_at: self.imported.as_ref().map_or_else(Utc::now, |(_, at)| *at).to_rfc3339(),
            lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
            tool_versions: info.tool_versions,
            compression: format!("zstd-{}", self.compression.level),
            encryption: self.key.scheme().to_string(),
            files: self.files,
            count_unit: info.count_unit,
            counts: info.counts,
            extra: info.extra,
            imported_from: self.imported.map(|(from, _)| from),
            signature: None,
        };
        super::signed::commit_manifest(self.server, &self.path, &manifest, signer).await?;
        Ok(manifest)
    }

    /// Gives up the run: removes its folder (and the date folder if that was all it held).
    /// Best effort; what a server refuses to delete stays incomplete (no manifest) for `prune`.
    pub async fn abort(self) {
        if let Err(e) = self.server.delete_prefix(&self.path).await {
            tracing::warn!("could not remove the failed run {}: {e}; it has no manifest and is never restored", self.path);
        }
        let _ = self.server.remove_empty_prefix(&self.id.to_string()).await;
    }
}
