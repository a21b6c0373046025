//! Restoring a mirror run. Everything read from the backup server is untrusted. Before any
//! bucket is touched, [`Minio::mirror_prepare`] chooses the run, checks its catalogue against its
//! manifest, downloads every index the run needs and every stored file it refers to into a
//! private folder, checks each one's size and SHA-256 against the catalogue, opens it with the key
//! and decodes it to the recorded size, joins catalogue and indexes, and checks that the objects
//! and bytes per bucket add up to the manifest's counts. Then [`Minio::mirror_restore`] rebuilds
//! each bucket with the same code as a dump restore and compares the counts it finds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::archive::ObjectMeta;
use super::mirror::{MirrorExtra, fetch_catalogue, scan_runs};
use super::mirror_format::{INDEX_FILE, IndexRecord, MirrorId, StoredFile, check_stored_path, parse_index};
use super::s3::{BodySource, S3Error};
use super::{BucketSettings, Minio, err};
use crate::error::{Error, Result};
use crate::layout::manifest::{Counts, compare_counts};
use crate::layout::{RunState, StoredDigest, download_checked};
use crate::pipeline::{self, DecryptKey};
use crate::progress::{Counters, Progress};
use crate::server::{BackupServer, join};
use crate::stores::{RepoAccess, RepoRestoreDone, RepoVerified};

/// Stored files downloaded (and decoded to check them) at once.
const PARALLEL_DOWNLOADS: usize = 4;
/// Objects uploaded at once on restore.
const PARALLEL_UPLOADS: usize = 4;

/// A mirror run downloaded and checked, ready to be restored.
pub(super) struct Prepared {
    id: MirrorId,
    buckets: BTreeMap<String, BucketSettings>,
    /// Each object and its verified local stored file.
    objects: Vec<(IndexRecord, PathBuf)>,
    counts: Counts,
    stored_bytes: u64,
    /// Holds the downloaded files; removed when dropped.
    _work: tempfile::TempDir,
}

fn damaged(id: &MirrorId, why: impl std::fmt::Display) -> Error {
    Error::Integrity(format!(
        "mirror run {id} of minio is damaged: {why}; nothing was restored; choose an older run with --from (see `lifeboat list`)"
    ))
}

impl Minio {
    /// Chooses the run (`from`, or the newest complete), downloads and checks everything it refers
    /// to. With `for_restore`, also checks that the S3 target answers and may receive its buckets.
    pub(super) async fn mirror_prepare(&self, from: Option<&str>, access: &RepoAccess<'_>, for_restore: bool) -> Result<Prepared> {
        let (folder, context) = self.mirror.as_ref().ok_or_else(|| err("not a mirror store (a bug)"))?;
        let server = access.server;
        let key = access
            .key
            .clone()
            .ok_or_else(|| Error::Usage("restoring the MinIO mirror needs encryption.identity_file or passphrase_file".into()))?;
        if for_restore {
            let client = self.client()?;
            client.list_buckets().send().await.map_err(|e| self.fail("listing buckets", S3Error::from_sdk(e)))?;
        }
        let (id, manifest) = choose(server, folder, access.trust, from).await?;
        let catalogue = fetch_catalogue(server, folder, &id, &manifest).await.map_err(|why| damaged(&id, why))?;
        tracing::info!("minio: downloading and verifying mirror run {id} ({} objects) from {}", catalogue.entries.len(), server.describe());
        let work = context.private_dir("lifeboat-restore-")?;
        let counters = Arc::new(Counters::default());
        let _progress = Progress::start(format!("minio: downloading mirror run {id}"), counters.clone());
        let fetcher = Fetcher { server, folder, work: work.path(), key: &key, counters: &counters, id: &id };

        // The indexes first: they say which object each stored file holds.
        let mut records: HashMap<MirrorId, HashMap<String, IndexRecord>> = HashMap::new();
        let mut buckets = None;
        for index in &catalogue.header.indexes {
            let (data, _) = check_stored_path(&index.path).map_err(|why| damaged(&id, why))?;
            let local = fetcher.fetch(index, None).await?;
            let plain = pipeline::open_decoded(&local, &key, INDEX_FILE)?;
            let run = data.to_string();
            let (header, list) = tokio::task::spawn_blocking(move || parse_index(plain, &run))
                .await
                .map_err(|e| err(format!("index reader: {e}")))?
                .map_err(|why| damaged(&id, format!("{} {why}", index.path)))?;
            if data == id {
                buckets = Some(header.buckets);
            }
            records.insert(data, list.into_iter().map(|r| (r.fp.clone(), r)).collect());
        }
        let buckets = buckets.ok_or_else(|| damaged(&id, "its catalogue does not list the run's own index"))?;
        self.check_targets(&buckets)?;

        // Join: every catalogue entry is an object one of those indexes describes, in a listed bucket.
        let mut plan = Vec::with_capacity(catalogue.entries.len());
        let mut counts: Counts =
            buckets.keys().map(|b| (b.clone(), BTreeMap::from([("objects".into(), 0), ("bytes".into(), 0)]))).collect();
        for entry in &catalogue.entries {
            let (data, name) = check_stored_path(&entry.file.path).map_err(|why| damaged(&id, why))?;
            let record = records.get(&data).and_then(|r| r.get(&entry.fp)).filter(|r| r.file == name);
            let record = record.ok_or_else(|| damaged(&id, format!("no index describes the object stored in {}", entry.file.path)))?;
            let scope = counts
                .get_mut(&record.bucket)
                .ok_or_else(|| damaged(&id, format!("an object is in bucket {}, which the run does not list", record.bucket)))?;
            *scope.get_mut("objects").expect("set above") += 1;
            *scope.get_mut("bytes").expect("set above") += record.size;
            plan.push((record.clone(), entry.file.clone()));
        }
        if let Some(problem) = compare_counts(&manifest.counts, &counts).first() {
            return Err(damaged(&id, format!("its catalogue and indexes do not add up to its manifest's counts ({problem})")));
        }

        // Every stored file, checked and decoded once before anything is changed.
        let fetches: Vec<_> = plan
            .into_iter()
            .map(|(record, file)| {
                let fetcher = &fetcher;
                async move {
                    let local = fetcher.fetch(&file, Some(record.size)).await?;
                    Ok::<_, Error>((record, local))
                }
            })
            .collect();
        let objects: Vec<(IndexRecord, PathBuf)> =
            futures::stream::iter(fetches).buffer_unordered(PARALLEL_DOWNLOADS).try_collect().await?;
        let stored_bytes = manifest.extra::<MirrorExtra>().map(|e| e.stored_bytes).unwrap_or_default();
        Ok(Prepared { id, buckets, objects, counts, stored_bytes, _work: work })
    }

    /// Rebuilds every bucket of the prepared run and compares what it finds with the run's counts.
    pub(super) async fn mirror_restore(&self, prepared: Prepared, access: &RepoAccess<'_>) -> Result<RepoRestoreDone> {
        let key = access.key.clone().ok_or_else(|| err("restoring needs the key (a bug)"))?;
        let client = self.client()?;
        tracing::info!(
            "minio: restoring mirror run {}: {} bucket(s), {} object(s)",
            prepared.id,
            prepared.buckets.len(),
            prepared.objects.len()
        );
        for (bucket, settings) in &prepared.buckets {
            self.recreate_bucket(&client, bucket, settings).await?;
        }
        let uploads: Vec<_> = prepared
            .objects
            .iter()
            .map(|(record, local)| {
                let (client, key) = (&client, &key);
                async move {
                    let meta = ObjectMeta {
                        bucket: record.bucket.clone(),
                        key: record.key.clone(),
                        size: record.size,
                        headers: record.headers.clone(),
                        metadata: record.metadata.clone(),
                    };
                    let mut body = Decoded { reader: pipeline::open_decoded(local, key, &record.file)? };
                    self.upload_object(client, &meta, &mut body).await
                }
            })
            .collect();
        futures::stream::iter(uploads).buffer_unordered(PARALLEL_UPLOADS).try_collect::<Vec<()>>().await?;
        let mut found = Counts::new();
        for bucket in prepared.buckets.keys() {
            found.insert(bucket.clone(), self.count_bucket(&client, bucket).await?);
        }
        let problems = compare_counts(&prepared.counts, &found);
        if !problems.is_empty() {
            return Err(Error::Verification {
                store: "minio".into(),
                message: format!(
                    "{} difference(s) against the mirror run's counts: {}; the target does not hold what was backed up",
                    problems.len(),
                    problems.join("; ")
                ),
            });
        }
        let objects = prepared.objects.len();
        tracing::info!("minio: verified objects and bytes of {} bucket(s): all match mirror run {}", prepared.buckets.len(), prepared.id);
        Ok(RepoRestoreDone {
            label: prepared.id.to_string(),
            recovered: format!("{objects} object(s) in {} bucket(s), objects and bytes per bucket verified", prepared.buckets.len()),
            stored_bytes: prepared.stored_bytes,
        })
    }

    /// `verify --deep`: everything a restore checks before touching a bucket, nothing restored.
    pub(super) async fn verify_deep(&self, access: &RepoAccess<'_>, from: Option<&str>) -> Result<Option<RepoVerified>> {
        let runs = scan_runs(access.server, self.mirror_folder(), access.trust).await?;
        let Some(run) = (match from {
            Some(id) => runs.iter().find(|r| r.id.to_string() == id),
            None => runs.iter().rev().find(|r| !matches!(r.state, RunState::Incomplete)),
        }) else {
            return Ok(None);
        };
        let id = run.id.to_string();
        let (files, bytes, problems) = match self.mirror_prepare(Some(&id), access, false).await {
            Ok(p) => (p.objects.len(), p.stored_bytes, Vec::new()),
            Err(e @ (Error::Integrity(_) | Error::Decrypt(_) | Error::NotFound(_))) => (0, 0, vec![e.to_string()]),
            Err(e) => return Err(e),
        };
        Ok(Some(RepoVerified { id, files, bytes, problems, how: format!("{files} objects downloaded, decrypted and decompressed") }))
    }
}

/// The run to restore: `from`, or the newest complete one (damaged ones on the way are named).
async fn choose(
    server: &dyn BackupServer,
    folder: &str,
    trust: &crate::signing::Trust,
    from: Option<&str>,
) -> Result<(MirrorId, crate::layout::Manifest)> {
    let runs = scan_runs(server, folder, trust).await?;
    let where_ = format!("{}/{folder}", server.describe());
    if let Some(wanted) = from {
        let run = runs.iter().find(|r| r.id.to_string() == wanted).ok_or_else(|| {
            Error::NotFound(format!(
                "no mirror run {wanted} of minio on {where_}; see `lifeboat list` (mirror ids look like 20260115T010203Z)"
            ))
        })?;
        return match &run.state {
            RunState::Complete(m) => Ok((run.id.clone(), (**m).clone())),
            RunState::Incomplete => Err(Error::NotFound(format!(
                "mirror run {wanted} of minio is not complete (no manifest: it failed or was interrupted); choose another with --from"
            ))),
            RunState::Damaged(why) => Err(damaged(&run.id, why)),
        };
    }
    for run in runs.iter().rev() {
        match &run.state {
            RunState::Complete(m) => return Ok((run.id.clone(), (**m).clone())),
            RunState::Damaged(why) => {
                tracing::warn!("minio: passing over damaged mirror run {}: {why}", run.id)
            }
            RunState::Incomplete => {}
        }
    }
    Err(Error::NotFound(format!(
        "no complete mirror run of minio on {where_}: nothing was restored; run a backup first or check server.url"
    )))
}

/// Downloads stored files of a run into the work folder and checks them.
struct Fetcher<'a> {
    server: &'a dyn BackupServer,
    folder: &'a str,
    work: &'a Path,
    key: &'a Arc<DecryptKey>,
    counters: &'a Counters,
    id: &'a MirrorId,
}

impl Fetcher<'_> {
    /// Downloads `file`, checks its size and SHA-256, that the key opens it and, given a plain
    /// size, that it decodes to exactly that many bytes. Returns the local path.
    async fn fetch(&self, file: &StoredFile, plain: Option<u64>) -> Result<PathBuf> {
        let (data, name) = check_stored_path(&file.path).map_err(|why| damaged(self.id, why))?;
        let dir = self.work.join(data.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let local = dir.join(name);
        let remote = join(self.folder, &file.path);
        let source = self.server.open(&remote).await.map_err(|e| damaged(self.id, format!("{} cannot be read ({e})", file.path)))?;
        let want = StoredDigest { size: file.size, sha256: &file.sha256 };
        if let Some(differs) = download_checked(self.server, &remote, source, &local, want, None, self.counters).await? {
            return Err(damaged(self.id, format!("stored file {} does not match the catalogue ({differs})", file.path)));
        }
        let (path, key, label) = (local.clone(), self.key.clone(), file.path.clone());
        let decoded = tokio::task::spawn_blocking(move || match plain {
            Some(_) => pipeline::decode_to_sink(&path, &key, &label).map(Some),
            None => pipeline::check_decryptable(&path, &key, &label).map(|_| None),
        })
        .await
        .map_err(|e| err(format!("decoding thread: {e}")))??;
        if let (Some(got), Some(want)) = (decoded, plain)
            && got != want
        {
            return Err(damaged(self.id, format!("{} decodes to {got} bytes, but its index says {want}", file.path)));
        }
        Ok(local)
    }
}

/// An object's bytes decoded from its verified local stored file.
struct Decoded {
    reader: Box<dyn std::io::Read + Send>,
}

#[async_trait::async_trait]
impl BodySource for Decoded {
    async fn take_bytes(&mut self, meta: &ObjectMeta, len: u64) -> Result<Bytes> {
        let mut body = vec![0u8; len as usize];
        tokio::task::block_in_place(|| std::io::Read::read_exact(&mut self.reader, &mut body))
            .map_err(|e| err(format!("reading {}/{} from its stored file: {e}", meta.bucket, meta.key)))?;
        Ok(Bytes::from(body))
    }
}
