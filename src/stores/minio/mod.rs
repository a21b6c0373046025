//! MinIO (S3) `dump`: every object of the configured buckets (all by default), through the S3
//! API, as one tar archive per run (`objects.tar.zst.age`).
//!
//! Client: `aws-sdk-s3`. It is maintained by AWS, speaks to any S3 server (path-style
//! addressing, custom endpoint, static keys), and covers everything this store needs: bucket
//! create/delete, policy and versioning get/put, user metadata, content type, multipart upload
//! and streaming GET bodies, with one crate. `object_store` has no bucket operations at all, and
//! `rust-s3` covers less of the bucket-level API (policy, versioning) for the same purpose. Request checksums are sent only when an operation requires them, so older
//! MinIO releases and other S3 servers accept the uploads; response checksums are still checked.
//! `https://` endpoints are verified against the system's CA certificates (`SSL_CERT_FILE`
//! points at another bundle, e.g. a private CA's).
//!
//! Archive layout (POSIX pax tar, readable by GNU tar, bsdtar and Python's tarfile):
//! - `_lifeboat-minio.json` first: format version and each bucket's policy and versioning
//!   (bucket names cannot start with `_`, so it never collides with a bucket folder);
//! - per bucket a directory entry `<bucket>/`, then one entry per object at `<bucket>/<key>`.
//!   Object keys ending in `/` with no bytes ("folder" markers) are directory entries.
//!   Each object's pax header holds `path`, `LIFEBOAT.bucket`, `LIFEBOAT.key` (exact, never
//!   normalised), `LIFEBOAT.content-type`, `LIFEBOAT.cache-control`,
//!   `LIFEBOAT.content-disposition`, `LIFEBOAT.content-encoding`, `LIFEBOAT.content-language`
//!   and `LIFEBOAT.meta.<name>` per user metadata entry.
//!
//! Each tar header is written once the object's GET response has arrived: its Content-Length is
//! the exact size of the body that follows, so an object rewritten between listing and reading
//! cannot corrupt the archive. Objects deleted after the listing are skipped. Counts (objects
//! and bytes per bucket) are summed from what was written, so they describe the archive exactly.
//! A few GETs are started ahead (their bodies wait unread), which hides per-object latency
//! without holding objects in memory.
//!
//! Restore: the archive comes from the backup server and is not trusted. It is read once whole
//! before the target is touched: its format version, every bucket name (a valid S3 name, listed
//! in its header and the manifest), every entry (only what Lifeboat writes: no links or devices),
//! object key (no NUL, at most 1024 bytes) and size (at most 5 TiB) is checked, and nothing is
//! allocated from a length before it is bounded. Then each bucket is emptied (every version,
//! delete marker and unfinished multipart upload), deleted, recreated with its recorded
//! versioning and policy, and the objects are uploaded from the archive as it is decoded a second
//! time: small objects a few at a time, big ones by multipart upload in parts of bounded size.
//! Every bucket of the backup is restored and its counts verified; when the restore side's config
//! lists `buckets`, a backup holding any other bucket is refused, so a tampered manifest cannot
//! name a bucket to replace. Only the latest version of each object is backed up; object tags,
//! retention and lifecycle rules are not.
//!
//! Here: the configuration and the backup and restore flow. `s3.rs`: the S3 client, its errors,
//! listing, fetching, uploads and counting; `buckets.rs`: bucket settings, removal and
//! re-creation; `archive.rs`: the pax tar format, written into the pipeline's pipe and read back.
//! `type: differential`, an encrypted incremental mirror outside the date folders: `mirror*.rs`
//! (start with `mirror.rs`).

mod archive;
mod buckets;
mod legacy;
mod mirror;
mod mirror_backup;
mod mirror_format;
mod mirror_prune;
mod mirror_restore;
mod mirror_store;
mod s3;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use archive::HEADER_ENTRY;
use archive::{
    ARCHIVE_FORMAT, ArchiveHeader, HEADER_FIELDS, META_PREFIX, ObjectMeta, PAX_PREFIX, Piece, Pieces, Stop, TarWriter, now_secs,
    read_archive, valid_bucket_name,
};
pub use mirror::{MIRROR_FOLDER, list_mirror_runs};
pub use mirror_prune::{MirrorPruned, prune_mirror};
use s3::{Fetched, S3Error, body_error, fetch_objects, put_small};

use super::{RestoreFiles, Store};
use crate::error::{Error, Result};
use crate::layout::RunWriter;
use crate::layout::manifest::{Counts, Manifest, StoreBackup};
use crate::pipeline::bridge::pipe;
use crate::secret::SecretFile;
use crate::stores::{Datastore, StoreContext, StoreSettings, StoreType};

const STORE: &str = "minio";
/// The one stored file of a run.
pub const ARCHIVE_FILE: &str = "objects.tar.zst.age";
/// Objects up to this size are uploaded several at a time on restore.
const SMALL_OBJECT: u64 = 1 << 20;
const PARALLEL_SMALL_UPLOADS: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinioConfig {
    #[serde(flatten)]
    pub settings: StoreSettings,
    pub endpoint: String,
    pub access_key_file: PathBuf,
    pub secret_key_file: PathBuf,
    #[serde(default)]
    pub buckets: Vec<String>,
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// A bucket's settings, recorded in the manifest and the archive header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketSettings {
    /// The bucket policy document as the server returned it, if any.
    pub policy: Option<String>,
    /// `Enabled` or `Suspended`; none for a bucket that never had versioning.
    pub versioning: Option<String>,
}

/// The manifest's `extra`: the stored file and each bucket's settings.
#[derive(Debug, Serialize, Deserialize)]
struct MinioExtra {
    archive: String,
    buckets: BTreeMap<String, BucketSettings>,
    /// Set for a backup of the original scripts (`mc mirror`), which records no bucket settings
    /// and no object metadata: a restore keeps each bucket's settings as the target has them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    settings_not_recorded: bool,
}

fn err(message: impl Into<String>) -> Error {
    Error::store(STORE, message)
}

pub struct Minio {
    cfg: MinioConfig,
    access_key: SecretFile,
    secret_key: SecretFile,
    /// Set for `type: differential`: the mirror's folder on the backup server, and where
    /// restores download to.
    mirror: Option<(String, StoreContext)>,
}

impl Minio {
    /// Writes the whole archive into `out`; returns what it holds per bucket.
    async fn write_archive(
        &self,
        client: &Client,
        buckets: &BTreeMap<String, BucketSettings>,
        out: &mut TarWriter,
    ) -> Result<Counts, Stop> {
        let header = ArchiveHeader { format: ARCHIVE_FORMAT, buckets: buckets.clone() };
        let json = serde_json::to_vec_pretty(&header).expect("archive header serialises");
        out.entry(HEADER_ENTRY, &[], tar::EntryType::Regular, json.len() as u64, now_secs()).await?;
        out.write(&json).await?;
        out.pad().await?;

        let mut counts = Counts::new();
        for bucket in buckets.keys() {
            let (mut objects, mut bytes) = (0u64, 0u64);
            tracing::info!("minio: archiving bucket {bucket}");
            out.entry(&format!("{bucket}/"), &[("LIFEBOAT.bucket", bucket.as_bytes())], tar::EntryType::Directory, 0, now_secs()).await?;
            let mut fetched = std::pin::pin!(fetch_objects(client.clone(), bucket.clone()));
            while let Some(item) = fetched.next().await {
                let (key, object) = match item {
                    Ok(Fetched::Object(key, object)) => (key, object),
                    Ok(Fetched::Gone(key)) => {
                        tracing::debug!("minio: {bucket}/{key} was deleted after the listing; skipped");
                        continue;
                    }
                    Err((_, e)) if e.is(&["NoSuchBucket"]) && self.cfg.buckets.is_empty() => {
                        // Only when backing up "all buckets": one that disappears mid-run is
                        // simply no longer there; the archive holds what was read of it.
                        tracing::warn!(
                            "minio: bucket {bucket} was deleted during the backup; it holds {objects} object(s) in this archive"
                        );
                        break;
                    }
                    Err((key, e)) => {
                        let what = match key {
                            Some(key) => format!("reading object {bucket}/{key}"),
                            None => format!("listing bucket {bucket}"),
                        };
                        return Err(Stop::Failed(self.fail(&what, e)));
                    }
                };
                let written = self.write_object(bucket, &key, *object, out).await?;
                objects += 1;
                bytes += written;
            }
            let scope = counts.entry(bucket.clone()).or_default();
            scope.insert("objects".into(), objects);
            scope.insert("bytes".into(), bytes);
        }
        // End of archive: two zero blocks.
        out.write(&[0u8; 1024]).await?;
        Ok(counts)
    }

    async fn write_object(&self, bucket: &str, key: &str, mut object: GetObjectOutput, out: &mut TarWriter) -> Result<u64, Stop> {
        let size = u64::try_from(object.content_length().unwrap_or(-1))
            .map_err(|_| Stop::Failed(err(format!("the S3 server sent no size for {bucket}/{key}; cannot archive it"))))?;
        let (headers, metadata) = described(&object);
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(k, v)| (format!("{PAX_PREFIX}{k}"), v))
            .chain(metadata.into_iter().map(|(k, v)| (format!("{META_PREFIX}{k}"), v)))
            .collect();
        let mtime = object.last_modified().map(|t| t.secs().max(0) as u64).unwrap_or_else(now_secs);
        let mut records: Vec<(&str, &[u8])> = vec![("LIFEBOAT.bucket", bucket.as_bytes()), ("LIFEBOAT.key", key.as_bytes())];
        records.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        let path = format!("{bucket}/{key}");
        // A zero-byte key ending in `/` is a "folder" marker: a directory for tar.
        let kind = if size == 0 && key.ends_with('/') { tar::EntryType::Directory } else { tar::EntryType::Regular };
        out.entry(&path, &records, kind, size, mtime).await?;

        let mut written = 0u64;
        while let Some(chunk) = object.body.next().await {
            let chunk = chunk.map_err(|e| Stop::Failed(self.fail(&format!("reading object {bucket}/{key}"), body_error(e))))?;
            written += chunk.len() as u64;
            if written > size {
                break;
            }
            out.write(&chunk).await?;
        }
        if written != size {
            return Err(Stop::Failed(err(format!(
                "object {bucket}/{key}: the S3 server sent {written} bytes instead of {size}; the run was not completed, earlier backups are untouched"
            ))));
        }
        out.pad().await?;
        Ok(size)
    }
}

/// An object's standard headers (the [`HEADER_FIELDS`] that are set) and user metadata, sorted.
fn described(object: &GetObjectOutput) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let fields =
        [object.content_type(), object.cache_control(), object.content_disposition(), object.content_encoding(), object.content_language()];
    let headers = HEADER_FIELDS.iter().zip(fields).filter_map(|(name, value)| Some((name.to_string(), value?.to_string()))).collect();
    let metadata = object.metadata().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    (headers, metadata)
}

impl Datastore for Minio {
    type Config = MinioConfig;
    const TYPES: &'static [StoreType] = &[StoreType::Dump, StoreType::Differential];

    fn new(cfg: MinioConfig, ctx: &StoreContext) -> Result<Minio> {
        let bad = |message: String| ctx.invalid(message);
        let url = url::Url::parse(&cfg.endpoint)
            .map_err(|e| bad(format!("stores.minio.endpoint `{}` is not a URL ({e}); expected e.g. http://minio:9000", cfg.endpoint)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad(format!("stores.minio.endpoint `{}` must be an http:// or https:// URL with a host", cfg.endpoint)));
        }
        if cfg.region.trim().is_empty() {
            return Err(bad("stores.minio.region is empty; leave it out for us-east-1".into()));
        }
        let access_key = SecretFile::new("MinIO access key", &cfg.access_key_file);
        let secret_key = SecretFile::new("MinIO secret key", &cfg.secret_key_file);
        let mirror = match cfg.settings.kind {
            StoreType::Differential => {
                let folder = cfg.settings.server_dir.clone().unwrap_or_else(|| MIRROR_FOLDER.into());
                crate::layout::check_file_name(&folder)
                    .map_err(|_| bad(format!("stores.minio.server_dir `{folder}` must be one plain folder name")))?;
                Some((folder, ctx.clone()))
            }
            StoreType::Dump => None,
        };
        Ok(Minio { cfg, access_key, secret_key, mirror })
    }
}

#[async_trait]
impl Store for Minio {
    /// Objects and bytes do not add up to one total: say how many counts were compared.
    fn describe_counts(&self, manifest: &Manifest) -> String {
        format!("{} counts ({})", manifest.counts.values().map(|m| m.len()).sum::<usize>(), manifest.count_unit)
    }

    fn differential(&self) -> Option<&dyn super::DifferentialStore> {
        self.mirror.as_ref().map(|_| self as &dyn super::DifferentialStore)
    }

    async fn backup(&self, sink: &mut RunWriter<'_>) -> Result<StoreBackup> {
        let client = self.client()?;
        let buckets = self.buckets_with_settings(&client).await?;
        let (writer, reader) = pipe();
        let produce = async {
            let mut out = TarWriter::new(writer);
            let result = self.write_archive(&client, &buckets, &mut out).await;
            out.close(result).await
        };
        let (put, produced) = tokio::join!(sink.put(ARCHIVE_FILE, Box::new(reader)), produce);
        let counts = match produced {
            Ok(counts) => counts,
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::ConsumerGone) => {
                return Err(put.err().unwrap_or_else(|| err("the backup pipeline stopped reading the archive")));
            }
        };
        put?;

        let extra = MinioExtra { archive: ARCHIVE_FILE.into(), buckets, settings_not_recorded: false };
        Ok(StoreBackup::new("objects/bytes", counts, &extra).tool("aws-sdk-s3", aws_sdk_s3::meta::PKG_VERSION))
    }

    async fn adopt_legacy(&self, unpacked: &std::path::Path, out: &std::path::Path) -> Result<crate::stores::Adopted> {
        self.adopt(unpacked, out).await
    }

    async fn check_target(&self) -> Result<()> {
        let client = self.client()?;
        client.list_buckets().send().await.map_err(|e| self.fail("listing buckets", S3Error::from_sdk(e)))?;
        Ok(())
    }

    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts> {
        let MinioExtra { buckets, settings_not_recorded, .. } = manifest.extra()?;
        if manifest.file(ARCHIVE_FILE).is_none() {
            return Err(err(format!("the manifest lists no {ARCHIVE_FILE}: this is not a minio dump backup; nothing was changed")));
        }
        self.check_targets(&buckets)?;
        // The whole archive is read and checked once before any bucket is touched: a bad entry
        // anywhere in it must not leave the buckets emptied.
        let header = check_archive(files.open(ARCHIVE_FILE)?).await?;
        if header.buckets.keys().ne(buckets.keys()) {
            return Err(err(format!(
                "{ARCHIVE_FILE} holds buckets {:?} but the manifest lists {:?}: the backup is inconsistent; nothing was changed",
                header.buckets.keys().collect::<Vec<_>>(),
                buckets.keys().collect::<Vec<_>>()
            )));
        }
        let client = self.client()?;
        let reader = files.open(ARCHIVE_FILE)?;
        let (tx, rx) = mpsc::channel::<Result<Piece>>(8);
        let decoder = tokio::task::spawn_blocking(move || {
            if let Err(Some(e)) = read_archive(reader, &mut |piece| tx.blocking_send(Ok(piece)).is_ok()) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut pieces = Pieces { rx };
        if !matches!(pieces.next().await?, Some(Piece::Header(_))) {
            return Err(err(format!("{ARCHIVE_FILE} changed while it was read: nothing was changed; run the restore again")));
        }

        if settings_not_recorded {
            tracing::warn!(
                "minio: this backup was made by the original scripts (mc mirror), which keep no object metadata and no bucket settings: the restored objects carry no content type or user metadata, and each bucket keeps the policy and versioning the target gives it now"
            );
        }
        for (bucket, settings) in &buckets {
            tracing::info!("minio: replacing bucket {bucket}");
            let settings = match settings_not_recorded {
                true => self.bucket_settings(&client, bucket).await?.unwrap_or_default(),
                false => settings.clone(),
            };
            self.recreate_bucket(&client, bucket, &settings).await?;
        }

        let mut uploads = tokio::task::JoinSet::new();
        let mut uploaded = 0u64;
        while let Some(piece) = pieces.next().await? {
            match piece {
                Piece::Bucket(b) if buckets.contains_key(&b) => {
                    tracing::info!("minio: uploading the objects of bucket {b}")
                }
                Piece::Object(meta) if buckets.contains_key(&meta.bucket) => {
                    if meta.size <= SMALL_OBJECT {
                        let body = pieces.take_bytes(&meta, meta.size).await?;
                        while uploads.len() >= PARALLEL_SMALL_UPLOADS {
                            join_upload(&mut uploads, self).await?;
                        }
                        let client = client.clone();
                        uploads.spawn(async move { put_small(&client, &meta, body).await.map_err(|e| (meta, e)) });
                    } else {
                        self.upload_object(&client, &meta, &mut pieces).await?;
                    }
                    uploaded += 1;
                }
                Piece::Bucket(b) | Piece::Object(ObjectMeta { bucket: b, .. }) => {
                    return Err(err(format!(
                        "{ARCHIVE_FILE} holds bucket {b}, which the manifest does not list: the backup is inconsistent"
                    )));
                }
                Piece::Header(_) | Piece::Data(_) => {
                    return Err(err(format!("{ARCHIVE_FILE} is out of order: the backup is damaged")));
                }
            }
        }
        while !uploads.is_empty() {
            join_upload(&mut uploads, self).await?;
        }
        decoder.await.map_err(|e| err(format!("archive reader: {e}")))?;
        tracing::info!("minio: uploaded {uploaded} object(s); counting");

        let mut found = Counts::new();
        for bucket in buckets.keys() {
            found.insert(bucket.clone(), self.count_bucket(&client, bucket).await?);
        }
        Ok(found)
    }
}

impl Minio {
    /// The buckets to back up with their settings; one deleted meanwhile is skipped when backing
    /// up all buckets, and fails the run when the configuration names it.
    async fn buckets_with_settings(&self, client: &Client) -> Result<BTreeMap<String, BucketSettings>> {
        let mut buckets = BTreeMap::new();
        for name in self.buckets_to_back_up(client).await? {
            match self.bucket_settings(client, &name).await? {
                Some(settings) => {
                    buckets.insert(name, settings);
                }
                None if self.cfg.buckets.is_empty() => tracing::warn!("minio: bucket {name} was deleted before it could be read; skipped"),
                None => {
                    return Err(err(format!("bucket `{name}` named in stores.minio.buckets was deleted during the backup")));
                }
            }
        }
        Ok(buckets)
    }

    /// Every bucket the backup holds is one the restore may write: a valid S3 bucket name and,
    /// when `stores.minio.buckets` is set on the restore side, one of those.
    fn check_targets(&self, buckets: &BTreeMap<String, BucketSettings>) -> Result<()> {
        for bucket in buckets.keys() {
            if !valid_bucket_name(bucket) {
                return Err(err(format!(
                    "the manifest names bucket `{}`, which is not a valid S3 bucket name: the backup is damaged or tampered with; nothing was changed",
                    bucket.escape_debug()
                )));
            }
            if !self.cfg.buckets.is_empty() && !self.cfg.buckets.contains(bucket) {
                return Err(err(format!(
                    "the backup holds bucket {bucket}, which stores.minio.buckets does not list: nothing was changed; add it to the list to restore it"
                )));
            }
        }
        Ok(())
    }
}

/// Reads the whole archive, checking every entry, and returns its header.
async fn check_archive(reader: Box<dyn std::io::Read + Send>) -> Result<ArchiveHeader> {
    tokio::task::spawn_blocking(move || {
        let mut header = None;
        let read = read_archive(reader, &mut |piece| {
            if let Piece::Header(h) = piece {
                header = Some(h);
            }
            true
        });
        match (read, header) {
            (Ok(()), Some(header)) => Ok(header),
            (Err(Some(e)), _) => Err(e),
            _ => Err(err(format!("{ARCHIVE_FILE} is not a Lifeboat MinIO archive; nothing was changed"))),
        }
    })
    .await
    .map_err(|e| err(format!("archive reader: {e}")))?
}

type UploadResult = std::result::Result<(), (ObjectMeta, S3Error)>;

async fn join_upload(uploads: &mut tokio::task::JoinSet<UploadResult>, store: &Minio) -> Result<()> {
    match uploads.join_next().await {
        Some(Ok(Ok(()))) | None => Ok(()),
        Some(Ok(Err((meta, e)))) => Err(store.fail(&format!("uploading {}/{}", meta.bucket, meta.key), e)),
        Some(Err(e)) => Err(err(format!("upload task: {e}"))),
    }
}
