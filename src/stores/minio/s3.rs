//! The S3 client side: client construction, errors reduced to one line, listing and fetching
//! objects as streams, uploads and counting. Bucket-level operations are in `buckets.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};

use super::archive::{ObjectMeta, Pieces};
use super::{Minio, err};
use crate::error::{Error, Result};

/// GET requests started ahead of the object being written.
const PREFETCH: usize = 8;
/// Multipart part size on restore (MinIO and S3 need at least 5 MiB per part but the last).
const PART_SIZE: u64 = 16 << 20;
/// S3 allows at most 10,000 parts per upload; bigger objects get bigger parts.
const MAX_PARTS: u64 = 10_000;

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

pub(super) use crate::server::s3::S3Error;
use crate::server::s3::innermost;

/// Streaming body errors (connection dropped mid-object).
pub(super) fn body_error(e: impl std::error::Error + 'static) -> S3Error {
    S3Error { code: None, status: None, detail: innermost(&e).replace('\n', " "), unreachable: true }
}

impl Minio {
    pub(super) fn client(&self) -> Result<Client> {
        let endpoint = self.cfg.endpoint.trim_end_matches('/');
        crate::server::s3::client(Some(endpoint), &self.cfg.region, &self.access_key, &self.secret_key, true, Duration::from_secs(300))
    }

    /// Turns an S3 failure into one line naming the server, what was being done and the fix.
    pub(super) fn fail(&self, doing: &str, e: S3Error) -> Error {
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

    /// Uploads one object whose bytes follow in `pieces`.
    pub(super) async fn upload_object(&self, client: &Client, meta: &ObjectMeta, pieces: &mut (dyn BodySource + Send)) -> Result<()> {
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
    pub(super) async fn count_bucket(&self, client: &Client, bucket: &str) -> Result<BTreeMap<String, u64>> {
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

/// Where an object's bytes come from on restore: the dump's archive, or a mirror's decoded file.
#[async_trait::async_trait]
pub(super) trait BodySource {
    /// Exactly the next `len` bytes of `meta`'s body.
    async fn take_bytes(&mut self, meta: &ObjectMeta, len: u64) -> Result<Bytes>;
}

#[async_trait::async_trait]
impl BodySource for Pieces {
    async fn take_bytes(&mut self, meta: &ObjectMeta, len: u64) -> Result<Bytes> {
        Pieces::take_bytes(self, meta, len).await
    }
}

fn user_metadata(meta: &ObjectMeta) -> Option<HashMap<String, String>> {
    if meta.metadata.is_empty() { None } else { Some(meta.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()) }
}

pub(super) async fn put_small(client: &Client, meta: &ObjectMeta, body: Bytes) -> Result<(), S3Error> {
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

/// One object as the bucket listing describes it: what the mirror compares between runs.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) etag: String,
    /// Last-Modified at the listing's own precision, as `seconds.nanoseconds`.
    pub(super) modified: String,
}

/// Every object of a bucket as (key, size), page by page.
fn list_objects(client: Client, bucket: String) -> impl Stream<Item = Result<(String, u64), S3Error>> {
    list_detailed(client, bucket).map_ok(|l| (l.key, l.size))
}

/// Every object of a bucket with its ETag and Last-Modified, page by page.
pub(super) fn list_detailed(client: Client, bucket: String) -> impl Stream<Item = Result<Listed, S3Error>> {
    futures::stream::try_unfold(Some(None::<String>), move |state| {
        let (client, bucket) = (client.clone(), bucket.clone());
        async move {
            let Some(token) = state else { return Ok(None) };
            let page = client.list_objects_v2().bucket(&bucket).set_continuation_token(token).send().await.map_err(S3Error::from_sdk)?;
            let items: Vec<Result<Listed, S3Error>> = page
                .contents()
                .iter()
                .filter_map(|o| {
                    let modified = o.last_modified().map(|t| format!("{}.{:09}", t.secs(), t.subsec_nanos())).unwrap_or_default();
                    let size = o.size().unwrap_or(0).max(0) as u64;
                    o.key().map(|k| Ok(Listed { key: k.to_string(), size, etag: o.e_tag().unwrap_or_default().to_string(), modified }))
                })
                .collect();
            let next = match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => Some(Some(t.to_string())),
                _ => None,
            };
            Ok(Some((futures::stream::iter(items), next)))
        }
    })
    .try_flatten()
}

pub(super) enum Fetched {
    Object(String, Box<GetObjectOutput>),
    /// Deleted between the listing and the GET.
    Gone(String),
}

/// GET responses for every listed object, in listing order, [`PREFETCH`] requests ahead.
/// Errors carry the key they concern (none for listing errors).
pub(super) fn fetch_objects(client: Client, bucket: String) -> impl Stream<Item = Result<Fetched, (Option<String>, S3Error)>> {
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
