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
//! Restore: the archive's first entry is checked before the target is touched; then each
//! bucket is emptied (every version, delete marker and unfinished multipart upload), deleted,
//! recreated with its recorded versioning and policy, and the objects are uploaded from the
//! archive as it is decoded: small objects a few at a time, big ones by multipart upload in
//! parts of bounded size. Every bucket of the backup is restored (`buckets` in the restore
//! side's config is not used: the counts of every backed-up bucket are verified). Only the
//! latest version of each object is backed up; object tags, retention and lifecycle rules are
//! not.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration, Delete,
    ObjectIdentifier, VersioningConfiguration,
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{RestoreFiles, Store};
use crate::layout::RunWriter;
use crate::secret::SecretFile;
use crate::stores::{Datastore, StoreContext, StoreSettings, StoreType};
use crate::error::{Error, Result};
use crate::layout::manifest::{Counts, Manifest, StoreBackup};

const STORE: &str = "minio";
/// The one stored file of a run.
pub const ARCHIVE_FILE: &str = "objects.tar.zst.age";
/// First entry of the archive; bucket names cannot start with `_`.
pub const HEADER_ENTRY: &str = "_lifeboat-minio.json";
const ARCHIVE_FORMAT: u32 = 1;
const PAX_PREFIX: &str = "LIFEBOAT.";
const META_PREFIX: &str = "LIFEBOAT.meta.";
/// Standard object headers kept besides user metadata (pax keys `LIFEBOAT.<name>`).
const HEADER_FIELDS: [&str; 5] = ["content-type", "cache-control", "content-disposition", "content-encoding", "content-language"];

/// GET requests started ahead of the object being written.
const PREFETCH: usize = 8;
/// Archive bytes handed to the pipeline at a time.
const FLUSH_AT: usize = 256 * 1024;
/// Multipart part size on restore (MinIO and S3 need at least 5 MiB per part but the last).
const PART_SIZE: u64 = 16 << 20;
/// S3 allows at most 10,000 parts per upload; bigger objects get bigger parts.
const MAX_PARTS: u64 = 10_000;
/// Objects up to this size are uploaded several at a time on restore.
const SMALL_OBJECT: u64 = 1 << 20;
const PARALLEL_SMALL_UPLOADS: usize = 16;
/// Decoded bytes per message from the archive reader thread.
const READ_CHUNK: usize = 1 << 20;

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

/// The archive's first entry.
#[derive(Debug, Serialize, Deserialize)]
struct ArchiveHeader {
    format: u32,
    buckets: BTreeMap<String, BucketSettings>,
}

/// One object as described by its pax header.
#[derive(Debug, Default, Clone, PartialEq)]
struct ObjectMeta {
    bucket: String,
    key: String,
    size: u64,
    /// `content-type` and the other [`HEADER_FIELDS`], when set.
    headers: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
}

/// Sets the recorded standard headers on a PutObject or CreateMultipartUpload builder.
macro_rules! apply_headers {
    ($builder:expr, $meta:expr) => {{
        let h = &$meta.headers;
        $builder
            .set_content_type(h.get("content-type").cloned())
            .set_cache_control(h.get("cache-control").cloned())
            .set_content_disposition(h.get("content-disposition").cloned())
            .set_content_encoding(h.get("content-encoding").cloned())
            .set_content_language(h.get("content-language").cloned())
    }};
}

fn err(message: impl Into<String>) -> Error {
    Error::store(STORE, message)
}

// ---------------------------------------------------------------------------------------------
// S3 errors

/// What went wrong in one S3 call, reduced to what an operator needs.
#[derive(Debug)]
struct S3Error {
    code: Option<String>,
    detail: String,
    unreachable: bool,
}

impl S3Error {
    fn from_sdk<E>(e: SdkError<E, HttpResponse>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = e.code().map(str::to_string);
        let unreachable = matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_));
        let detail = match &e {
            SdkError::ServiceError(s) => {
                let status = s.raw().status().as_u16();
                match (s.err().code(), s.err().message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => format!("{c} (HTTP {status})"),
                    _ => format!("HTTP {status}"),
                }
            }
            SdkError::TimeoutError(_) => "timed out".into(),
            // The innermost cause is the informative one ("Connection refused (os error 111)").
            _ => innermost(&e),
        };
        S3Error { code, detail: detail.replace('\n', " "), unreachable }
    }

    fn is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Streaming body errors (connection dropped mid-object).
fn body_error(e: impl std::error::Error + 'static) -> S3Error {
    S3Error { code: None, detail: innermost(&e).replace('\n', " "), unreachable: true }
}

// ---------------------------------------------------------------------------------------------
// The store

pub struct Minio {
    cfg: MinioConfig,
    access_key: SecretFile,
    secret_key: SecretFile,
}

impl Minio {
    pub fn new(cfg: MinioConfig, ctx: &StoreContext) -> Result<Minio> {
        let bad = |message: String| ctx.invalid(message);
        let url = url::Url::parse(&cfg.endpoint).map_err(|e| {
            bad(format!("stores.minio.endpoint `{}` is not a URL ({e}); expected e.g. http://minio:9000", cfg.endpoint))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad(format!("stores.minio.endpoint `{}` must be an http:// or https:// URL with a host", cfg.endpoint)));
        }
        if cfg.region.trim().is_empty() {
            return Err(bad("stores.minio.region is empty; leave it out for us-east-1".into()));
        }
        let access_key = SecretFile::new("MinIO access key", &cfg.access_key_file);
        let secret_key = SecretFile::new("MinIO secret key", &cfg.secret_key_file);
        Ok(Minio { cfg, access_key, secret_key })
    }

    fn client(&self) -> Result<Client> {
        let credentials = Credentials::new(self.access_key.read()?, self.secret_key.read()?, None, None, "lifeboat");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.cfg.endpoint.trim_end_matches('/'))
            .force_path_style(true)
            .region(Region::new(self.cfg.region.clone()))
            .credentials_provider(credentials)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            // A server that accepts connections but never answers must fail the job, not hang it.
            // The attempt timeout ends when response headers arrive, so long bodies are unaffected
            // (a stalled body is caught by the SDK's stalled-stream protection).
            .timeout_config(
                TimeoutConfig::builder().connect_timeout(Duration::from_secs(10)).operation_attempt_timeout(Duration::from_secs(300)).build(),
            )
            .build();
        Ok(Client::from_conf(config))
    }

    /// Turns an S3 failure into one line naming the server, what was being done and the fix.
    fn fail(&self, doing: &str, e: S3Error) -> Error {
        let endpoint = &self.cfg.endpoint;
        if e.unreachable {
            err(format!(
                "cannot reach the S3 server at {endpoint} while {doing} ({}): check that MinIO is up and stores.minio.endpoint",
                e.detail
            ))
        } else if e.is(&["InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"]) {
            err(format!(
                "the S3 server at {endpoint} refused the credentials while {doing} ({}): check stores.minio.access_key_file and secret_key_file",
                e.detail
            ))
        } else if e.is(&["AccessDenied"]) {
            err(format!("access denied while {doing} ({}): give this key the S3 permissions a full backup/restore needs", e.detail))
        } else {
            err(format!("{doing} failed on {endpoint}: {}", e.detail))
        }
    }

    async fn all_buckets(&self, client: &Client) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_buckets()
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.fail("listing buckets", S3Error::from_sdk(e)))?;
            names.extend(out.buckets().iter().filter_map(|b| b.name().map(str::to_string)));
            match out.continuation_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        names.sort();
        Ok(names)
    }

    async fn bucket_exists(&self, client: &Client, bucket: &str) -> Result<bool> {
        match client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => {
                let e = S3Error::from_sdk(e);
                if e.is(&["NoSuchBucket", "NotFound"]) {
                    Ok(false)
                } else {
                    Err(self.fail(&format!("checking bucket {bucket}"), e))
                }
            }
        }
    }

    /// The buckets to back up: the configured ones (each must exist) or all of them.
    async fn buckets_to_back_up(&self, client: &Client) -> Result<Vec<String>> {
        if self.cfg.buckets.is_empty() {
            return self.all_buckets(client).await;
        }
        let mut wanted: Vec<String> = Vec::new();
        for b in &self.cfg.buckets {
            if !wanted.contains(b) {
                wanted.push(b.clone());
            }
        }
        for b in &wanted {
            if !self.bucket_exists(client, b).await? {
                return Err(err(format!(
                    "bucket `{b}` named in stores.minio.buckets does not exist on {}; fix the list (or leave it empty for all buckets)",
                    self.cfg.endpoint
                )));
            }
        }
        Ok(wanted)
    }

    /// Policy and versioning of a bucket; `None` when the bucket is gone.
    async fn bucket_settings(&self, client: &Client, bucket: &str) -> Result<Option<BucketSettings>> {
        let policy = match client.get_bucket_policy().bucket(bucket).send().await {
            Ok(out) => out.policy().filter(|p| !p.trim().is_empty()).map(str::to_string),
            Err(e) => {
                let e = S3Error::from_sdk(e);
                if e.is(&["NoSuchBucketPolicy"]) {
                    None
                } else if e.is(&["NoSuchBucket"]) {
                    return Ok(None);
                } else if e.is(&["NotImplemented"]) {
                    tracing::warn!("minio: the server does not expose bucket policies; {bucket}'s policy is not recorded");
                    None
                } else {
                    return Err(self.fail(&format!("reading the policy of bucket {bucket}"), e));
                }
            }
        };
        let versioning = match client.get_bucket_versioning().bucket(bucket).send().await {
            Ok(out) => out.status().map(|s| s.as_str().to_string()),
            Err(e) => {
                let e = S3Error::from_sdk(e);
                if e.is(&["NoSuchBucket"]) {
                    return Ok(None);
                } else if e.is(&["NotImplemented"]) {
                    tracing::warn!("minio: the server does not expose versioning; {bucket}'s setting is not recorded");
                    None
                } else {
                    return Err(self.fail(&format!("reading the versioning of bucket {bucket}"), e));
                }
            }
        };
        Ok(Some(BucketSettings { policy, versioning }))
    }

    // -----------------------------------------------------------------------------------------
    // Backup: the archive writer

    /// Writes the whole archive into `out`; returns what it holds per bucket.
    async fn write_archive(&self, client: &Client, buckets: &BTreeMap<String, BucketSettings>, out: &mut TarOut) -> Result<Counts, Stop> {
        let header = ArchiveHeader { format: ARCHIVE_FORMAT, buckets: buckets.clone() };
        let json = serde_json::to_vec_pretty(&header).expect("archive header serialises");
        out.entry(HEADER_ENTRY, &[], tar::EntryType::Regular, json.len() as u64, now_secs()).await?;
        out.write(&json).await?;
        out.pad().await?;

        let mut counts = Counts::new();
        for bucket in buckets.keys() {
            let (mut objects, mut bytes) = (0u64, 0u64);
            tracing::info!("minio: archiving bucket {bucket}");
            out.entry(&format!("{bucket}/"), &[("LIFEBOAT.bucket", bucket.as_bytes())], tar::EntryType::Directory, 0, now_secs())
                .await?;
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
                        tracing::warn!("minio: bucket {bucket} was deleted during the backup; it holds {objects} object(s) in this archive");
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
        out.flush().await?;
        Ok(counts)
    }

    async fn write_object(&self, bucket: &str, key: &str, mut object: GetObjectOutput, out: &mut TarOut) -> Result<u64, Stop> {
        let size = u64::try_from(object.content_length().unwrap_or(-1))
            .map_err(|_| Stop::Failed(err(format!("the S3 server sent no size for {bucket}/{key}; cannot archive it"))))?;
        let mut headers: Vec<(String, String)> = Vec::new();
        let fields = [
            object.content_type(),
            object.cache_control(),
            object.content_disposition(),
            object.content_encoding(),
            object.content_language(),
        ];
        for (name, value) in HEADER_FIELDS.iter().zip(fields) {
            if let Some(v) = value {
                headers.push((format!("{PAX_PREFIX}{name}"), v.to_string()));
            }
        }
        if let Some(meta) = object.metadata() {
            let sorted: BTreeMap<&String, &String> = meta.iter().collect();
            for (k, v) in sorted {
                headers.push((format!("{META_PREFIX}{k}"), v.clone()));
            }
        }
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

    // -----------------------------------------------------------------------------------------
    // Restore

    /// Empties `bucket` (all versions, delete markers, unfinished uploads) and deletes it.
    async fn remove_bucket(&self, client: &Client, bucket: &str) -> Result<()> {
        let doing = format!("emptying bucket {bucket}");
        loop {
            let page = client.list_object_versions().bucket(bucket).send().await.map_err(|e| self.fail(&doing, S3Error::from_sdk(e)))?;
            let mut ids = Vec::new();
            for v in page.versions() {
                ids.push(object_id(v.key(), v.version_id())?);
            }
            for m in page.delete_markers() {
                ids.push(object_id(m.key(), m.version_id())?);
            }
            if ids.is_empty() {
                break;
            }
            for batch in ids.chunks(1000) {
                let delete = Delete::builder().set_objects(Some(batch.to_vec())).quiet(true).build().map_err(|e| err(e.to_string()))?;
                let out = client
                    .delete_objects()
                    .bucket(bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| self.fail(&doing, S3Error::from_sdk(e)))?;
                if let Some(first) = out.errors().first() {
                    return Err(err(format!(
                        "cannot delete {bucket}/{} ({}: {}); nothing of this bucket was restored yet; fix it (object lock or retention?) and re-run",
                        first.key().unwrap_or("?"),
                        first.code().unwrap_or("error"),
                        first.message().unwrap_or("")
                    )));
                }
            }
        }
        loop {
            let page =
                client.list_multipart_uploads().bucket(bucket).send().await.map_err(|e| self.fail(&doing, S3Error::from_sdk(e)))?;
            if page.uploads().is_empty() {
                break;
            }
            for u in page.uploads() {
                client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .set_key(u.key().map(str::to_string))
                    .set_upload_id(u.upload_id().map(str::to_string))
                    .send()
                    .await
                    .map_err(|e| self.fail(&doing, S3Error::from_sdk(e)))?;
            }
        }
        client.delete_bucket().bucket(bucket).send().await.map_err(|e| self.fail(&format!("deleting bucket {bucket}"), S3Error::from_sdk(e)))?;
        Ok(())
    }

    /// Replaces `bucket` by an empty one with the recorded versioning and policy.
    async fn recreate_bucket(&self, client: &Client, bucket: &str, settings: &BucketSettings) -> Result<()> {
        if self.bucket_exists(client, bucket).await? {
            self.remove_bucket(client, bucket).await?;
        }
        let mut create = client.create_bucket().bucket(bucket);
        if self.cfg.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(self.cfg.region.as_str())).build(),
            );
        }
        create.send().await.map_err(|e| self.fail(&format!("creating bucket {bucket}"), S3Error::from_sdk(e)))?;
        if let Some(status) = &settings.versioning {
            client
                .put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::from(status.as_str())).build())
                .send()
                .await
                .map_err(|e| self.fail(&format!("setting versioning {status} on bucket {bucket}"), S3Error::from_sdk(e)))?;
        }
        if let Some(policy) = &settings.policy {
            client
                .put_bucket_policy()
                .bucket(bucket)
                .policy(policy)
                .send()
                .await
                .map_err(|e| self.fail(&format!("setting the policy of bucket {bucket}"), S3Error::from_sdk(e)))?;
        }
        Ok(())
    }

    /// Uploads one object whose bytes follow in `pieces`.
    async fn upload_object(&self, client: &Client, meta: &ObjectMeta, pieces: &mut Pieces) -> Result<()> {
        let part_size = PART_SIZE.max(meta.size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
        if meta.size <= part_size {
            let body = pieces.take_bytes(meta, meta.size).await?;
            return put_small(client, meta, body).await.map_err(|e| self.fail(&format!("uploading {}/{}", meta.bucket, meta.key), e));
        }
        let doing = format!("uploading {}/{} ({} bytes, multipart)", meta.bucket, meta.key, meta.size);
        let mut create = client.create_multipart_upload().bucket(&meta.bucket).key(&meta.key).set_metadata(user_metadata(meta));
        create = apply_headers!(create, meta);
        let upload = create.send().await.map_err(|e| self.fail(&doing, S3Error::from_sdk(e)))?;
        let upload_id = upload.upload_id().ok_or_else(|| err(format!("{doing}: the server returned no upload id")))?.to_string();
        let result = async {
            let mut parts = Vec::new();
            let mut remaining = meta.size;
            let mut number = 1i32;
            while remaining > 0 {
                let len = remaining.min(part_size);
                let body = pieces.take_bytes(meta, len).await?;
                let out = client
                    .upload_part()
                    .bucket(&meta.bucket)
                    .key(&meta.key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(len as i64)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| self.fail(&doing, S3Error::from_sdk(e)))?;
                parts.push(CompletedPart::builder().set_e_tag(out.e_tag().map(str::to_string)).part_number(number).build());
                remaining -= len;
                number += 1;
            }
            client
                .complete_multipart_upload()
                .bucket(&meta.bucket)
                .key(&meta.key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| self.fail(&doing, S3Error::from_sdk(e)))?;
            Ok::<_, Error>(())
        }
        .await;
        if result.is_err() {
            // Best effort: an unfinished upload is also cleared by the next restore.
            let _ = client.abort_multipart_upload().bucket(&meta.bucket).key(&meta.key).upload_id(&upload_id).send().await;
        }
        result
    }

    /// Objects and bytes per bucket, as the server lists them now.
    async fn count_bucket(&self, client: &Client, bucket: &str) -> Result<BTreeMap<String, u64>> {
        let (mut objects, mut bytes) = (0u64, 0u64);
        let mut keys = std::pin::pin!(list_objects(client.clone(), bucket.to_string()));
        while let Some(item) = keys.next().await {
            let (_, size) = item.map_err(|e| self.fail(&format!("counting the objects of bucket {bucket}"), e))?;
            objects += 1;
            bytes += size;
        }
        Ok(BTreeMap::from([("objects".to_string(), objects), ("bytes".to_string(), bytes)]))
    }
}


fn user_metadata(meta: &ObjectMeta) -> Option<HashMap<String, String>> {
    if meta.metadata.is_empty() { None } else { Some(meta.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()) }
}

async fn put_small(client: &Client, meta: &ObjectMeta, body: Bytes) -> Result<(), S3Error> {
    let mut put = client
        .put_object()
        .bucket(&meta.bucket)
        .key(&meta.key)
        .content_length(body.len() as i64)
        .body(ByteStream::from(body))
        .set_metadata(user_metadata(meta));
    put = apply_headers!(put, meta);
    put.send().await.map_err(S3Error::from_sdk)?;
    Ok(())
}

fn object_id(key: Option<&str>, version: Option<&str>) -> Result<ObjectIdentifier> {
    ObjectIdentifier::builder()
        .set_key(key.map(str::to_string))
        .set_version_id(version.map(str::to_string))
        .build()
        .map_err(|e| err(format!("listing versions: {e}")))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Listing and fetching

/// Every object of a bucket as (key, size), page by page.
fn list_objects(client: Client, bucket: String) -> impl Stream<Item = Result<(String, u64), S3Error>> {
    futures::stream::try_unfold(Some(None::<String>), move |state| {
        let (client, bucket) = (client.clone(), bucket.clone());
        async move {
            let Some(token) = state else { return Ok(None) };
            let page = client.list_objects_v2().bucket(&bucket).set_continuation_token(token).send().await.map_err(S3Error::from_sdk)?;
            let items: Vec<Result<(String, u64), S3Error>> =
                page.contents().iter().filter_map(|o| o.key().map(|k| Ok((k.to_string(), o.size().unwrap_or(0).max(0) as u64)))).collect();
            let next = match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => Some(Some(t.to_string())),
                _ => None,
            };
            Ok(Some((futures::stream::iter(items), next)))
        }
    })
    .try_flatten()
}

enum Fetched {
    Object(String, Box<GetObjectOutput>),
    /// Deleted between the listing and the GET.
    Gone(String),
}

/// GET responses for every listed object, in listing order, [`PREFETCH`] requests ahead.
/// Errors carry the key they concern (none for listing errors).
fn fetch_objects(client: Client, bucket: String) -> impl Stream<Item = Result<Fetched, (Option<String>, S3Error)>> {
    list_objects(client.clone(), bucket.clone())
        .map(move |listed| {
            let (client, bucket) = (client.clone(), bucket.clone());
            async move {
                let (key, _) = listed.map_err(|e| (None, e))?;
                match client.get_object().bucket(&bucket).key(&key).send().await {
                    Ok(object) => Ok(Fetched::Object(key, Box::new(object))),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(Fetched::Gone(key)),
                    Err(e) => Err((Some(key), S3Error::from_sdk(e))),
                }
            }
        })
        .buffered(PREFETCH)
}

// ---------------------------------------------------------------------------------------------
// Tar writing

/// Why the archive writer stopped.
enum Stop {
    /// The pipeline stopped reading (its own error is the one to report).
    ConsumerGone,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

/// Tar bytes out to the pipeline, in chunks of about [`FLUSH_AT`].
struct TarOut {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    written: u64,
}

impl TarOut {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        TarOut { tx, buf: BytesMut::with_capacity(FLUSH_AT), written: 0 }
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), Stop> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(FLUSH_AT)).freeze();
        self.tx.send(Ok(chunk)).await.map_err(|_| Stop::ConsumerGone)
    }

    /// Zero bytes up to the next 512-byte block.
    async fn pad(&mut self) -> Result<(), Stop> {
        let rem = (self.written % 512) as usize;
        if rem != 0 {
            self.write(&[0u8; 512][..512 - rem]).await?;
        }
        Ok(())
    }

    /// A pax extended header (the exact path plus `records`), then the ustar header.
    async fn entry(&mut self, path: &str, records: &[(&str, &[u8])], kind: tar::EntryType, size: u64, mtime: u64) -> Result<(), Stop> {
        let pax = pax_block(path, records, size);
        self.write(&ustar_header("././@PaxHeader", tar::EntryType::XHeader, pax.len() as u64, mtime).as_bytes()[..]).await?;
        self.write(&pax).await?;
        self.pad().await?;
        self.write(&ustar_header(path, kind, size, mtime).as_bytes()[..]).await
    }
}

/// Pax records: `path`, `size` when the ustar field cannot hold it, then `records`.
fn pax_block(path: &str, records: &[(&str, &[u8])], size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    pax_record(&mut out, "path", path.as_bytes());
    if size >= 0o77777777777 {
        pax_record(&mut out, "size", size.to_string().as_bytes());
    }
    for (k, v) in records {
        pax_record(&mut out, k, v);
    }
    out
}

/// One `"<len> <key>=<value>\n"` record; `len` counts the whole record, its own digits included.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + rest.to_string().len();
    if len.to_string().len() + rest != len {
        len += 1;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A ustar header; the name field holds a truncated path (the pax `path` record is the real one).
fn ustar_header(path: &str, kind: tar::EntryType, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let name = path.as_bytes();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

// ---------------------------------------------------------------------------------------------
// Tar reading (restore): a blocking thread decodes, the async side uploads

enum Piece {
    Header(ArchiveHeader),
    Bucket(String),
    Object(ObjectMeta),
    Data(Bytes),
}

/// The archive reader thread's messages.
struct Pieces {
    rx: mpsc::Receiver<Result<Piece>>,
}

impl Pieces {
    async fn next(&mut self) -> Result<Option<Piece>> {
        self.rx.recv().await.transpose()
    }

    /// Exactly `len` bytes of the current object's body, gathered from data pieces.
    async fn take_bytes(&mut self, meta: &ObjectMeta, len: u64) -> Result<Bytes> {
        let mut body = BytesMut::with_capacity(len as usize);
        while (body.len() as u64) < len {
            match self.next().await? {
                Some(Piece::Data(chunk)) => body.extend_from_slice(&chunk),
                _ => return Err(err(format!("the archive ends inside object {}/{}: the backup is damaged", meta.bucket, meta.key))),
            }
        }
        Ok(body.freeze())
    }
}

/// Decodes the archive on the calling (blocking) thread and sends its pieces.
fn read_archive(reader: Box<dyn Read + Send>, tx: &mpsc::Sender<Result<Piece>>) -> Result<(), Option<Error>> {
    let send = |piece: Piece| tx.blocking_send(Ok(piece)).map_err(|_| None);
    let damaged = |e: io::Error| Some(err(format!("reading {ARCHIVE_FILE}: {e}")));
    let foreign = |e: io::Error| {
        Some(err(format!("{ARCHIVE_FILE} is not a Lifeboat MinIO archive ({e}); nothing was changed")))
    };
    let mut archive = tar::Archive::new(reader);
    let mut first = true;
    for entry in archive.entries().map_err(foreign)? {
        let mut entry = entry.map_err(if first { foreign } else { damaged })?;
        let pax = pax_map(&mut entry).map_err(if first { foreign } else { damaged })?;
        let kind = entry.header().entry_type();
        if first {
            first = false;
            let path = entry.path_bytes().into_owned();
            if path != HEADER_ENTRY.as_bytes() || kind != tar::EntryType::Regular || entry.size() > 16 << 20 {
                return Err(Some(err(format!(
                    "{ARCHIVE_FILE} does not start with {HEADER_ENTRY}: it is not a Lifeboat MinIO archive; nothing was changed"
                ))));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(damaged)?;
            let header: ArchiveHeader = serde_json::from_slice(&text)
                .map_err(|e| Some(err(format!("{HEADER_ENTRY} in {ARCHIVE_FILE} is unreadable ({e}); nothing was changed"))))?;
            send(Piece::Header(header))?;
            continue;
        }
        match (pax.get("LIFEBOAT.bucket"), pax.get("LIFEBOAT.key")) {
            (Some(bucket), None) if kind == tar::EntryType::Directory => send(Piece::Bucket(bucket.clone()))?,
            (Some(_), Some(_)) if matches!(kind, tar::EntryType::Regular | tar::EntryType::Directory) => {
                let meta = object_meta(&pax, entry.size());
                let mut remaining = meta.size;
                let label = format!("{}/{}", meta.bucket, meta.key);
                send(Piece::Object(meta))?;
                while remaining > 0 {
                    let mut chunk = vec![0u8; remaining.min(READ_CHUNK as u64) as usize];
                    entry
                        .read_exact(&mut chunk)
                        .map_err(|e| Some(err(format!("reading object {label} from {ARCHIVE_FILE}: {e}; the backup is damaged"))))?;
                    remaining -= chunk.len() as u64;
                    send(Piece::Data(Bytes::from(chunk)))?;
                }
            }
            _ => {
                return Err(Some(err(format!(
                    "{ARCHIVE_FILE} holds an entry Lifeboat did not write ({}); the backup is damaged",
                    String::from_utf8_lossy(&entry.path_bytes())
                ))));
            }
        }
    }
    if first {
        return Err(Some(err(format!("{ARCHIVE_FILE} is empty: it is not a Lifeboat MinIO archive; nothing was changed"))));
    }
    Ok(())
}

/// The `LIFEBOAT.*` pax records of an entry.
fn pax_map<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let key = ext.key().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if key.starts_with(PAX_PREFIX) {
                let value = ext.value().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                map.insert(key.to_string(), value.to_string());
            }
        }
    }
    Ok(map)
}

fn object_meta(pax: &BTreeMap<String, String>, size: u64) -> ObjectMeta {
    let mut meta = ObjectMeta {
        bucket: pax["LIFEBOAT.bucket"].clone(),
        key: pax["LIFEBOAT.key"].clone(),
        size,
        ..Default::default()
    };
    for (k, v) in pax {
        if let Some(name) = k.strip_prefix(META_PREFIX) {
            meta.metadata.insert(name.to_string(), v.clone());
        } else if let Some(field) = k.strip_prefix(PAX_PREFIX).filter(|f| HEADER_FIELDS.contains(f)) {
            meta.headers.insert(field.to_string(), v.clone());
        }
    }
    meta
}

/// The bucket settings a manifest records (`extra.buckets`).
fn manifest_buckets(manifest: &Manifest) -> Result<BTreeMap<String, BucketSettings>> {
    let buckets = manifest
        .extra
        .get("buckets")
        .ok_or_else(|| err("the manifest lists no buckets: this is not a minio dump backup; nothing was changed"))?;
    serde_json::from_value(buckets.clone()).map_err(|e| err(format!("the manifest's bucket list is unreadable ({e}); nothing was changed")))
}

#[async_trait]
impl Store for Minio {
    /// Objects and bytes do not add up to one total: say how many counts were compared.
    fn describe_counts(&self, manifest: &Manifest) -> String {
        format!("{} counts ({})", manifest.counts.values().map(|m| m.len()).sum::<usize>(), manifest.count_unit)
    }

    async fn backup(&self, sink: &mut RunWriter<'_>) -> Result<StoreBackup> {
        let client = self.client()?;
        let names = self.buckets_to_back_up(&client).await?;
        let mut buckets = BTreeMap::new();
        for name in names {
            match self.bucket_settings(&client, &name).await? {
                Some(settings) => {
                    buckets.insert(name, settings);
                }
                None if self.cfg.buckets.is_empty() => tracing::warn!("minio: bucket {name} was deleted before it could be read; skipped"),
                None => return Err(err(format!("bucket `{name}` named in stores.minio.buckets was deleted during the backup"))),
            }
        }

        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let mut out = TarOut::new(tx.clone());
        drop(tx);
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        let produce = async {
            let result = self.write_archive(&client, &buckets, &mut out).await;
            if let Err(Stop::Failed(e)) = &result {
                // The pipeline must see a failed stream, never a clean (truncated) end.
                let _ = out.tx.send(Err(io::Error::other(e.to_string()))).await;
            }
            drop(out);
            result
        };
        let (put, produced) = tokio::join!(sink.put(ARCHIVE_FILE, Box::new(reader)), produce);
        let counts = match produced {
            Ok(counts) => counts,
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::ConsumerGone) => return Err(put.err().unwrap_or_else(|| err("the backup pipeline stopped reading the archive"))),
        };
        put?;

        let mut info = StoreBackup { count_unit: "objects/bytes".into(), counts, ..Default::default() };
        info.tool_versions.insert("aws-sdk-s3".into(), aws_sdk_s3::meta::PKG_VERSION.to_string());
        info.extra.insert("archive".into(), ARCHIVE_FILE.into());
        info.extra.insert("buckets".into(), serde_json::to_value(&buckets).expect("bucket settings serialise"));
        Ok(info)
    }

    async fn check_target(&self) -> Result<()> {
        let client = self.client()?;
        client.list_buckets().send().await.map_err(|e| self.fail("listing buckets", S3Error::from_sdk(e)))?;
        Ok(())
    }

    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts> {
        let buckets = manifest_buckets(manifest)?;
        if manifest.file(ARCHIVE_FILE).is_none() {
            return Err(err(format!("the manifest lists no {ARCHIVE_FILE}: this is not a minio dump backup; nothing was changed")));
        }
        let client = self.client()?;
        let reader = files.open(ARCHIVE_FILE)?;
        let (tx, rx) = mpsc::channel::<Result<Piece>>(8);
        let decoder = tokio::task::spawn_blocking(move || {
            if let Err(Some(e)) = read_archive(reader, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut pieces = Pieces { rx };

        // The archive must be the one the manifest describes before any bucket is touched.
        match pieces.next().await? {
            Some(Piece::Header(h)) if h.format == ARCHIVE_FORMAT => {
                if h.buckets.keys().ne(buckets.keys()) {
                    return Err(err(format!(
                        "{ARCHIVE_FILE} holds buckets {:?} but the manifest lists {:?}: the backup is inconsistent; nothing was changed",
                        h.buckets.keys().collect::<Vec<_>>(),
                        buckets.keys().collect::<Vec<_>>()
                    )));
                }
            }
            Some(Piece::Header(h)) => {
                return Err(err(format!(
                    "{ARCHIVE_FILE} has archive format {}, this Lifeboat reads format {ARCHIVE_FORMAT}; use a matching Lifeboat version",
                    h.format
                )));
            }
            _ => return Err(err(format!("{ARCHIVE_FILE} is not a Lifeboat MinIO archive; nothing was changed"))),
        }

        for (bucket, settings) in &buckets {
            tracing::info!("minio: replacing bucket {bucket}");
            self.recreate_bucket(&client, bucket, settings).await?;
        }

        let mut uploads = tokio::task::JoinSet::new();
        let mut uploaded = 0u64;
        while let Some(piece) = pieces.next().await? {
            match piece {
                Piece::Bucket(b) if buckets.contains_key(&b) => tracing::info!("minio: uploading the objects of bucket {b}"),
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
                    return Err(err(format!("{ARCHIVE_FILE} holds bucket {b}, which the manifest does not list: the backup is inconsistent")));
                }
                Piece::Header(_) | Piece::Data(_) => return Err(err(format!("{ARCHIVE_FILE} is out of order: the backup is damaged"))),
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

type UploadResult = std::result::Result<(), (ObjectMeta, S3Error)>;

async fn join_upload(uploads: &mut tokio::task::JoinSet<UploadResult>, store: &Minio) -> Result<()> {
    match uploads.join_next().await {
        Some(Ok(Ok(()))) | None => Ok(()),
        Some(Ok(Err((meta, e)))) => Err(store.fail(&format!("uploading {}/{}", meta.bucket, meta.key), e)),
        Some(Err(e)) => Err(err(format!("upload task: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", b"a");
        assert_eq!(out, b"9 path=a\n");
        // Around 99→100 and 999→1000 the length's own digits change the length.
        for n in 0..1100 {
            let mut out = Vec::new();
            pax_record(&mut out, "LIFEBOAT.key", "k".repeat(n).as_bytes());
            let text = String::from_utf8(out.clone()).unwrap();
            assert_eq!(text.split_once(' ').unwrap().0.parse::<usize>().unwrap(), out.len(), "value length {n}");
        }
    }

    /// Builds an archive the way the backup does (headers and bodies) and reads it back.
    /// (bucket, key, body, extra pax records)
    type SampleObject<'a> = (&'a str, &'a str, &'a [u8], &'a [(&'a str, &'a str)]);

    fn sample_archive(objects: &[SampleObject<'_>]) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel(1024);
            let mut out = TarOut::new(tx);
            let header = serde_json::to_vec(&ArchiveHeader { format: 1, buckets: BTreeMap::from([("b".into(), BucketSettings::default())]) }).unwrap();
            let _ = out.entry(HEADER_ENTRY, &[], tar::EntryType::Regular, header.len() as u64, 0).await;
            let _ = out.write(&header).await;
            let _ = out.pad().await;
            let _ = out.entry("b/", &[("LIFEBOAT.bucket", b"b")], tar::EntryType::Directory, 0, 0).await;
            for (bucket, key, body, extra) in objects {
                let mut records: Vec<(&str, &[u8])> = vec![("LIFEBOAT.bucket", bucket.as_bytes()), ("LIFEBOAT.key", key.as_bytes())];
                records.extend(extra.iter().map(|(k, v)| (*k, v.as_bytes())));
                let _ = out.entry(&format!("{bucket}/{key}"), &records, tar::EntryType::Regular, body.len() as u64, 1_700_000_000).await;
                let _ = out.write(body).await;
                let _ = out.pad().await;
            }
            let _ = out.write(&[0u8; 1024]).await;
            let _ = out.flush().await;
            drop(out);
            let mut all = Vec::new();
            while let Some(chunk) = rx.recv().await {
                all.extend_from_slice(&chunk.unwrap());
            }
            all
        })
    }

    #[test]
    fn archive_round_trips_keys_bodies_and_metadata() {
        let long_key = format!("deep/{}/file with space ü.txt", "segment/".repeat(30));
        let archive = sample_archive(&[
            ("b", "plain.txt", b"hello", &[("LIFEBOAT.content-type", "text/plain"), ("LIFEBOAT.meta.owner", "Zoë")]),
            ("b", &long_key, b"", &[]),
            ("b", "x", &[7u8; 1500], &[]),
        ]);
        assert_eq!(archive.len() % 512, 0);
        let (tx, mut rx) = mpsc::channel(1024);
        read_archive(Box::new(std::io::Cursor::new(archive)), &tx).map_err(|e| e.map(|e| e.to_string())).unwrap();
        drop(tx);
        let mut pieces = Vec::new();
        while let Ok(p) = rx.try_recv() {
            pieces.push(p.unwrap());
        }
        assert!(matches!(&pieces[0], Piece::Header(h) if h.format == 1 && h.buckets.contains_key("b")));
        assert!(matches!(&pieces[1], Piece::Bucket(b) if b == "b"));
        let Piece::Object(m) = &pieces[2] else { panic!("object expected") };
        assert_eq!((m.bucket.as_str(), m.key.as_str(), m.size), ("b", "plain.txt", 5));
        assert_eq!(m.headers["content-type"], "text/plain");
        assert_eq!(m.metadata["owner"], "Zoë");
        assert!(matches!(&pieces[3], Piece::Data(d) if &d[..] == b"hello"));
        let Piece::Object(m) = &pieces[4] else { panic!("object expected") };
        assert_eq!((m.key.as_str(), m.size), (long_key.as_str(), 0));
        let Piece::Object(m) = &pieces[5] else { panic!("object expected") };
        assert_eq!(m.size, 1500);
        assert!(matches!(&pieces[6], Piece::Data(d) if d.len() == 1500 && d.iter().all(|b| *b == 7)));
        assert_eq!(pieces.len(), 7);
    }

    #[test]
    fn archives_not_written_by_lifeboat_are_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        builder.append_data(&mut h, "db.dump", &b"abc"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let (tx, _rx) = mpsc::channel(16);
        let e = read_archive(Box::new(std::io::Cursor::new(bytes)), &tx).unwrap_err().unwrap();
        assert!(e.to_string().contains("not a Lifeboat MinIO archive"), "{e}");
    }
}

impl Datastore for Minio {
    type Config = MinioConfig;
    const TYPES: &'static [StoreType] = &[StoreType::Dump];

    fn new(cfg: MinioConfig, ctx: &StoreContext) -> Result<Minio> {
        Minio::new(cfg, ctx)
    }
}
