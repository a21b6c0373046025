//! One mirror run on the backup side: find the newest usable complete run, claim a new one,
//! list every bucket, upload only what is new or changed, then write the run's index, its
//! catalogue and, last, its manifest. The layout and the reasons are in `mirror.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::mirror::{MirrorExtra, data_dir, fetch_catalogue, run_dir, scan_runs};
use super::mirror_format::{
    CATALOGUE_FILE, Catalogue, CatalogueEntry, CatalogueHeader, FORMAT, Fingerprinter, INDEX_FILE, IndexHeader, IndexRecord, MirrorId,
    StoredFile, check_stored_path, encode_index,
};
use super::s3::{Listed, S3Error, list_detailed};
use super::{BucketSettings, Minio, described, err};
use crate::error::{Error, Result};
use crate::layout::manifest::{Counts, FORMAT_VERSION, FileEntry, Manifest, StoreType};
use crate::layout::{CLAIM_NAME, claim_by_this_process};
use crate::progress::{Counters, Progress};
use crate::server::{BackupServer, join};
use crate::stores::{BackupAccess, FileEncoder, RepoBackup, RepoBackupDone};

/// Objects fetched and encoded at once: hides per-object latency on small objects (each encoder
/// holds a few MiB of buffers, so peak memory grows with it).
const PARALLEL_UPLOADS: usize = 4;
/// Files made durable at once before the manifest is written.
const PARALLEL_SYNCS: usize = 16;

/// What the newest usable complete run holds, for change detection.
#[derive(Default)]
struct Previous {
    id: Option<MirrorId>,
    /// Fingerprint → stored file, for the objects whose stored files are still on the server.
    files: HashMap<String, StoredFile>,
    /// The encrypted indexes those files need, by data run.
    indexes: HashMap<MirrorId, StoredFile>,
}

/// Why one object could not be mirrored: an S3 call (with the key, none for the listing), or
/// storing it on the backup server.
enum Failure {
    S3(Option<String>, S3Error),
    Stored(Error),
}

/// What happened to one listed object.
enum Mirrored {
    Reused(CatalogueEntry, u64),
    Uploaded(CatalogueEntry, IndexRecord),
    /// Deleted between the listing and the GET.
    Gone,
}

/// The run being written.
struct Run<'a> {
    server: &'a dyn BackupServer,
    encoder: &'a dyn FileEncoder,
    folder: &'a str,
    id: MirrorId,
    counters: Arc<Counters>,
}

impl Minio {
    pub(super) async fn mirror_backup(&self, access: &BackupAccess<'_>) -> Result<RepoBackupDone> {
        let folder = self.mirror_folder();
        let server = access.server;
        let encoder = access.encoder;
        let signer = access.signer;
        let client = self.client()?;
        let buckets = self.buckets_with_settings(&client).await?;
        let fingerprints = Fingerprinter::new(&self.secret_key.read()?);
        let previous = load_previous(server, folder, access.trust).await?;
        let id = claim(server, folder).await?;
        let run = Run { server, encoder, folder, id, counters: Arc::new(Counters::default()) };
        let started_at = chrono::Utc::now();
        match &previous.id {
            Some(p) => tracing::info!("minio: mirror run {} to {}/{folder}, against run {p}", run.id, server.describe()),
            None => tracing::info!(
                "minio: mirror run {} to {}/{folder}: no earlier complete run, every object is uploaded",
                run.id,
                server.describe()
            ),
        }
        let _progress = Progress::start(format!("minio: mirror {}", run.id), run.counters.clone());

        let (mut entries, mut records, mut counts) = (Vec::new(), Vec::new(), Counts::new());
        let mut reused = 0u64;
        let mut next_file = 0u64;
        for bucket in buckets.keys() {
            let (mut objects, mut bytes) = (0u64, 0u64);
            let listing = list_detailed(client.clone(), bucket.clone());
            let mut work = std::pin::pin!(
                listing
                    .map_err(|e| Failure::S3(None, e))
                    .map_ok(|listed| {
                        let fp = fingerprints.of(bucket, &listed.key, listed.size, &listed.etag, &listed.modified);
                        let known = previous.files.get(&fp).cloned();
                        next_file += u64::from(known.is_none());
                        self.mirror_object(&client, &run, bucket, listed, fp, known, next_file)
                    })
                    .try_buffered(PARALLEL_UPLOADS)
            );
            while let Some(item) = work.next().await {
                let (entry, size) = match item {
                    Ok(Mirrored::Reused(entry, size)) => {
                        reused += 1;
                        (entry, size)
                    }
                    Ok(Mirrored::Uploaded(entry, record)) => {
                        let size = record.size;
                        records.push(record);
                        (entry, size)
                    }
                    Ok(Mirrored::Gone) => continue,
                    Err(Failure::S3(_, e)) if e.is(&["NoSuchBucket"]) && self.cfg.buckets.is_empty() => {
                        tracing::warn!("minio: bucket {bucket} was deleted during the run; it holds {objects} object(s) in this run");
                        break;
                    }
                    Err(Failure::S3(key, e)) => {
                        let what = key.map_or(format!("listing bucket {bucket}"), |k| format!("reading object {bucket}/{k}"));
                        return Err(self.fail(&what, e));
                    }
                    Err(Failure::Stored(e)) => return Err(e),
                };
                entries.push(entry);
                objects += 1;
                bytes += size;
            }
            tracing::info!("minio: bucket {bucket}: {objects} object(s)");
            counts.insert(bucket.clone(), BTreeMap::from([("objects".into(), objects), ("bytes".into(), bytes)]));
        }
        let uploaded = records.len() as u64;
        let uploaded_bytes = records.iter().map(|r| r.size).sum();
        let index = run.put_index(&buckets, &records).await?;
        run.make_durable(&records).await?;
        let catalogue = catalogue(&run.id, &previous, index.clone(), entries);
        let stored_catalogue = catalogue.encode();
        let catalogue_entry = FileEntry {
            name: CATALOGUE_FILE.into(),
            size: stored_catalogue.len() as u64,
            sha256: hex::encode(Sha256::digest(&stored_catalogue)),
            raw_size: stored_catalogue.len() as u64,
        };
        let dir = run_dir(folder, &run.id);
        server.write_new(&join(&dir, CATALOGUE_FILE), &stored_catalogue).await?;
        server.make_durable(&join(&dir, CATALOGUE_FILE)).await?;

        let stored_bytes = run.counters.stored() + catalogue_entry.size;
        let extra = MirrorExtra { format: FORMAT, index, uploaded_objects: uploaded, reused_objects: reused, uploaded_bytes, stored_bytes };
        let (compression, encryption) = encoder.describe();
        let info =
            crate::layout::manifest::StoreBackup::new("objects/bytes", counts, &extra).tool("aws-sdk-s3", aws_sdk_s3::meta::PKG_VERSION);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            store: "minio".into(),
            kind: StoreType::Differential,
            id: run.id.to_string(),
            started_at: started_at.to_rfc3339(),
            finished_at: chrono::Utc::now().to_rfc3339(),
            lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
            tool_versions: info.tool_versions,
            compression,
            encryption,
            files: vec![catalogue_entry],
            count_unit: info.count_unit,
            counts: info.counts,
            extra: info.extra,
            imported_from: None,
            signature: None,
        };
        crate::layout::signed::commit_manifest(server, &dir, &manifest, signer).await?;
        tracing::info!("minio: mirror run {}: {uploaded} object(s) uploaded, {reused} unchanged and not fetched", run.id);
        Ok(RepoBackupDone {
            backup: RepoBackup {
                label: run.id.to_string(),
                kind: "mirror".into(),
                finished_at: chrono::Utc::now(),
                stored_bytes,
                path: dir,
                complete: true,
                damaged: None,
                signed_by: Some("this backup's signing key".into()),
            },
            read_bytes: uploaded_bytes,
        })
    }

    /// Refers to the stored file of an unchanged object, or fetches and uploads a new or changed one.
    #[allow(clippy::too_many_arguments)]
    async fn mirror_object(
        &self,
        client: &Client,
        run: &Run<'_>,
        bucket: &str,
        listed: Listed,
        fp: String,
        known: Option<StoredFile>,
        number: u64,
    ) -> std::result::Result<Mirrored, Failure> {
        if let Some(file) = known {
            return Ok(Mirrored::Reused(CatalogueEntry { fp, file }, listed.size));
        }
        let object = match client.get_object().bucket(bucket).key(&listed.key).send().await {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(Mirrored::Gone);
            }
            Err(e) => return Err(Failure::S3(Some(listed.key), S3Error::from_sdk(e))),
        };
        let size = u64::try_from(object.content_length().unwrap_or(-1)).unwrap_or(u64::MAX);
        let (headers, metadata) = described(&object);
        let name = format!("{number}.zst.age");
        let label = format!("{bucket}/{}", listed.key);
        let stored = run.put(&name, Box::new(object.body.into_async_read()), &label).await.map_err(Failure::Stored)?;
        if stored.1 != size {
            return Err(Failure::Stored(err(format!(
                "object {label}: the S3 server sent {} bytes instead of {size}; the run was not completed, earlier runs are untouched",
                stored.1
            ))));
        }
        let record = IndexRecord { fp: fp.clone(), bucket: bucket.to_string(), key: listed.key, size, headers, metadata, file: name };
        Ok(Mirrored::Uploaded(CatalogueEntry { fp, file: stored.0 }, record))
    }
}

impl Run<'_> {
    /// Encodes `source` into the new file `name` of the run's data folder; returns it and its plain size.
    async fn put(&self, name: &str, source: Box<dyn tokio::io::AsyncRead + Send + Unpin>, label: &str) -> Result<(StoredFile, u64)> {
        let dest = self.server.create(&join(&data_dir(self.folder, &self.id), name)).await?;
        let encoded = self.encoder.encode(source, dest, self.counters.clone()).await.map_err(|e| err(format!("mirroring {label}: {e}")))?;
        let path = format!("data/{}/{name}", self.id);
        Ok((StoredFile { path, size: encoded.size, sha256: encoded.sha256 }, encoded.raw_size))
    }

    async fn put_index(&self, buckets: &BTreeMap<String, BucketSettings>, records: &[IndexRecord]) -> Result<StoredFile> {
        let header = IndexHeader { format: FORMAT, run: self.id.to_string(), buckets: buckets.clone() };
        let plain = encode_index(&header, records);
        let read_before = self.counters.read.load(Ordering::Relaxed);
        let file = self.put(INDEX_FILE, Box::new(std::io::Cursor::new(plain)), INDEX_FILE).await?.0;
        // The index is not object data: keep `read` to the objects' bytes.
        self.counters.read.store(read_before, Ordering::Relaxed);
        Ok(file)
    }

    /// Every new file durable before the catalogue that refers to them is written.
    async fn make_durable(&self, records: &[IndexRecord]) -> Result<()> {
        let data = data_dir(self.folder, &self.id);
        let paths: Vec<String> = records.iter().map(|r| join(&data, &r.file)).chain([join(&data, INDEX_FILE)]).collect();
        // Collected first: a lazily mapped iterator here trips the compiler's Send check.
        let syncs: Vec<_> = paths.iter().map(|p| self.server.make_durable(p)).collect();
        futures::stream::iter(syncs).buffer_unordered(PARALLEL_SYNCS).try_collect::<Vec<()>>().await?;
        Ok(())
    }
}

/// The new run's catalogue: its objects and every index they need (the run's own included).
fn catalogue(id: &MirrorId, previous: &Previous, own: StoredFile, entries: Vec<CatalogueEntry>) -> Catalogue {
    let mut indexes: BTreeMap<MirrorId, StoredFile> = BTreeMap::from([(id.clone(), own)]);
    for entry in &entries {
        if let Ok((data, _)) = check_stored_path(&entry.file.path)
            && let Some(index) = previous.indexes.get(&data)
        {
            indexes.entry(data).or_insert_with(|| index.clone());
        }
    }
    Catalogue { header: CatalogueHeader { format: FORMAT, run: id.to_string(), indexes: indexes.into_values().collect() }, entries }
}

/// Claims a new run: `runs/<id>/` by creating its claim object only if absent; `data/<id>/` is
/// then this run's too.
async fn claim(server: &dyn BackupServer, folder: &str) -> Result<MirrorId> {
    let claim = claim_by_this_process("minio");
    let now = chrono::Utc::now().naive_utc();
    for seq in 1..1000 {
        let id = MirrorId::parse(&format!("{}{}", now.format("%Y%m%dT%H%M%SZ"), if seq > 1 { format!("_{seq}") } else { String::new() }))
            .expect("a well-formed id");
        if server.create_if_absent(&join(&run_dir(folder, &id), CLAIM_NAME), &claim).await? {
            return Ok(id);
        }
    }
    Err(server.error(format!("too many mirror runs in {folder} within one second")))
}

/// The newest complete run whose catalogue is sound, with the stored files it refers to that are
/// still on the server at their recorded size (a file lost since is uploaded again).
async fn load_previous(server: &dyn BackupServer, folder: &str, trust: &crate::signing::Trust) -> Result<Previous> {
    let runs = scan_runs(server, folder, trust).await?;
    let mut found = None;
    for run in runs.iter().rev() {
        let Some(manifest) = run.manifest() else {
            continue;
        };
        match fetch_catalogue(server, folder, &run.id, manifest).await {
            Ok(catalogue) => {
                found = Some((run.id.clone(), catalogue));
                break;
            }
            Err(why) => tracing::warn!("minio: passing over mirror run {}: {why}", run.id),
        }
    }
    let Some((id, catalogue)) = found else {
        return Ok(Previous::default());
    };
    let mut listed: HashMap<MirrorId, HashMap<String, u64>> = HashMap::new();
    let mut present = async |path: &str, size: u64| -> Result<Option<MirrorId>> {
        let Ok((data, name)) = check_stored_path(path) else {
            return Ok(None);
        };
        if !listed.contains_key(&data) {
            let files = server.list(&data_dir(folder, &data)).await?;
            listed.insert(data.clone(), files.into_iter().filter(|f| !f.is_dir).map(|f| (f.name, f.size)).collect());
        }
        Ok((listed[&data].get(name) == Some(&size)).then_some(data))
    };
    let mut indexes = HashMap::new();
    for index in catalogue.header.indexes {
        if let Some(data) = present(&index.path, index.size).await? {
            indexes.insert(data, index);
        }
    }
    let mut files = HashMap::new();
    let total = catalogue.entries.len();
    for entry in catalogue.entries {
        if let Some(data) = present(&entry.file.path, entry.file.size).await?
            && indexes.contains_key(&data)
        {
            files.insert(entry.fp, entry.file);
        }
    }
    if files.len() < total {
        tracing::warn!(
            "minio: {} stored file(s) of run {id} are missing or changed on the server; those objects are uploaded again",
            total - files.len()
        );
    }
    Ok(Previous { id: Some(id), files, indexes })
}
