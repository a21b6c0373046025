//! `s3://BUCKET/PREFIX`: an S3-compatible object store as the backup server (MinIO, Ceph RGW,
//! Garage, AWS S3). The same layout as a folder server under the prefix; the contract kept with
//! what object stores promise:
//!
//! - create-if-absent is a conditional `PUT` (`If-None-Match: *`): of two jobs claiming one run,
//!   the server lets exactly one write. A server that ignores the condition would let both win,
//!   so [`S3Server::connect`] writes a probe twice and refuses such a server in one line.
//! - write once: a new object streams in as a multipart upload whose parts grow with the stream
//!   (8 MiB for the first thousand, doubling every thousand after: 10,000 parts hold 8 TB), and
//!   is completed (conditionally again) only when the writer is shut down. A writer dropped or
//!   failed before that aborts the upload: no orphan parts, and no object appears (the upload
//!   itself is `s3_upload.rs`).
//! - list a prefix a page at a time: `ListObjectsV2` with the delimiter `/`, one request per page.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{BackupServer, DirEntry, ListPage, PAGE};
use crate::error::{Error, Result};
use crate::secret::SecretFile;

/// The keys of `server:` an `s3://` server needs (flattened into [`super::ServerConfig`]).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct S3Settings {
    /// `http(s)://host:port` of an S3-compatible server; absent: AWS S3 of `region`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_file: Option<PathBuf>,
    pub secret_key_file: Option<PathBuf>,
    /// Path-style addressing (`endpoint/bucket/key`), which MinIO and Ceph need; default: on
    /// with an `endpoint`, off for AWS.
    pub path_style: Option<bool>,
}

/// An `s3://bucket/prefix` server with the keys to reach it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_file: PathBuf,
    pub secret_key_file: PathBuf,
    pub path_style: bool,
}

impl S3Settings {
    /// Keys set that only an `s3://` server reads (named when another kind of server is used).
    pub fn set_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        for (key, set) in [
            ("endpoint", self.endpoint.is_some()),
            ("region", self.region.is_some()),
            ("access_key_file", self.access_key_file.is_some()),
            ("secret_key_file", self.secret_key_file.is_some()),
            ("path_style", self.path_style.is_some()),
        ] {
            if set {
                keys.push(key);
            }
        }
        keys
    }

    /// Reads `url` (`s3://bucket/prefix`) with these keys; the message names the key.
    pub fn location(&self, url: &str) -> std::result::Result<S3Location, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("server.url `{url}` is not s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(format!(
                "server.url `{url}`: `{bucket}` is not an S3 bucket name (3-63 lowercase letters, digits, dots and hyphens); expected s3://BUCKET/PREFIX"
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
            return Err(format!("server.url `{url}`: the prefix must be plain names separated by /"));
        }
        if let Some(endpoint) = &self.endpoint {
            let ok = url::Url::parse(endpoint).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !ok {
                return Err(format!("server.endpoint `{endpoint}` is not an http(s) URL, e.g. https://minio.example.org:9000"));
            }
        }
        let access_key_file =
            self.access_key_file.clone().ok_or("server.access_key_file is required for an s3:// server (the access key, in a file)")?;
        let secret_key_file =
            self.secret_key_file.clone().ok_or("server.secret_key_file is required for an s3:// server (the secret key, in a file)")?;
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix,
            endpoint: self.endpoint.as_ref().map(|e| e.trim_end_matches('/').to_string()),
            region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_file,
            secret_key_file,
            path_style: self.path_style.unwrap_or(self.endpoint.is_some()),
        })
    }
}

fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// What went wrong in one S3 call, reduced to what an operator needs.
#[derive(Debug)]
pub struct S3Error {
    pub code: Option<String>,
    pub status: Option<u16>,
    pub detail: String,
    /// The server could not be reached or did not answer (no HTTP status).
    pub unreachable: bool,
}

impl S3Error {
    pub fn from_sdk<E>(e: SdkError<E, HttpResponse>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = e.code().map(str::to_string);
        let unreachable = matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_));
        let mut status = None;
        let detail = match &e {
            SdkError::ServiceError(s) => {
                let http = s.raw().status().as_u16();
                status = Some(http);
                match (s.err().code(), s.err().message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => format!("{c} (HTTP {http})"),
                    _ => format!("HTTP {http}"),
                }
            }
            SdkError::TimeoutError(_) => "timed out".into(),
            // The innermost cause is the informative one ("Connection refused (os error 111)").
            _ => innermost(&e),
        };
        S3Error { code, status, detail: detail.replace('\n', " "), unreachable }
    }

    pub fn is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }

    fn not_found(&self) -> bool {
        self.status == Some(404) || self.is(&["NoSuchKey", "NotFound"])
    }

    /// The condition of a conditional write failed: the object exists.
    pub(super) fn exists(&self) -> bool {
        self.status == Some(412) || self.is(&["PreconditionFailed"])
    }
}

pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// An S3 client for `endpoint` (or AWS), bounded in how long a silent server may hold a job.
pub fn client(
    endpoint: Option<&str>,
    region: &str,
    access: &SecretFile,
    secret: &SecretFile,
    path_style: bool,
    timeout: Duration,
) -> Result<Client> {
    let credentials = Credentials::new(access.read()?, secret.read()?, None, None, "lifeboat");
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .force_path_style(path_style)
        .region(Region::new(region.to_string()))
        .credentials_provider(credentials)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        // A server that accepts connections but never answers must fail the job, not hang it.
        // The attempt timeout ends when response headers arrive, so long bodies are unaffected
        // (a stalled body is caught by the SDK's stalled-stream protection).
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .operation_attempt_timeout(timeout.max(Duration::from_secs(300)))
                .build(),
        );
    if let Some(endpoint) = endpoint {
        config = config.endpoint_url(endpoint);
    }
    Ok(Client::from_conf(config.build()))
}

pub struct S3Server {
    client: Client,
    bucket: String,
    prefix: String,
    describe: String,
}

impl S3Server {
    /// Connects: the bucket must exist and be readable with these keys, and the server must
    /// honour conditional writes (checked with a probe object under the prefix).
    pub async fn connect(location: &S3Location, timeout: Duration) -> Result<S3Server> {
        let access = SecretFile::new("S3 access key", &location.access_key_file);
        let secret = SecretFile::new("S3 secret key", &location.secret_key_file);
        let client = client(location.endpoint.as_deref(), &location.region, &access, &secret, location.path_style, timeout)?;
        let describe = match (&location.endpoint, location.prefix.is_empty()) {
            (Some(e), true) => format!("s3://{} at {e}", location.bucket),
            (Some(e), false) => format!("s3://{}/{} at {e}", location.bucket, location.prefix),
            (None, true) => format!("s3://{}", location.bucket),
            (None, false) => format!("s3://{}/{}", location.bucket, location.prefix),
        };
        let server = S3Server { client, bucket: location.bucket.clone(), prefix: location.prefix.clone(), describe };
        server.client.head_bucket().bucket(&server.bucket).send().await.map_err(|e| {
            let e = S3Error::from_sdk(e);
            match e.status {
                Some(404) => server.error(format!(
                    "bucket {} does not exist: create it (e.g. `mc mb ALIAS/{}`) or fix server.url",
                    server.bucket, server.bucket
                )),
                // A HEAD answer has no body, so no error code: the status says it.
                Some(403) => server.error(format!(
                    "the S3 server refused these keys for bucket {} (HTTP 403): check server.access_key_file and secret_key_file, and that the key's policy may read the bucket",
                    server.bucket
                )),
                _ => server.fail("opening the bucket", e),
            }
        })?;
        server.check_conditional_writes().await?;
        Ok(server)
    }

    /// Writes a probe twice with `If-None-Match: *`: the second must be refused. A key that may
    /// not write (the restore side's) cannot tell, and never claims a run.
    async fn check_conditional_writes(&self) -> Result<()> {
        let key = self.key(".lifeboat/conditional-write-probe");
        for attempt in 0..2 {
            let put = self.client.put_object().bucket(&self.bucket).key(&key).if_none_match("*").body(ByteStream::from_static(b"probe"));
            match put.send().await.map_err(S3Error::from_sdk) {
                Ok(_) if attempt == 1 => {
                    return Err(self.error(
                        "this S3 server does not honour conditional writes (If-None-Match: *), so two jobs could claim the same run or lock: use a server that does (MinIO, Ceph RGW 18+, AWS S3)".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.exists() => {}
                Err(e) if e.is(&["AccessDenied"]) => {
                    tracing::debug!("{}: this key may not write; conditional writes not probed", self.describe);
                    return Ok(());
                }
                Err(e) => return Err(self.fail("probing conditional writes", e)),
            }
        }
        Ok(())
    }

    fn key(&self, path: &str) -> String {
        super::join(&self.prefix, path)
    }

    /// Turns an S3 failure into one line naming the server, what was being done and the fix.
    fn fail(&self, doing: &str, e: S3Error) -> Error {
        let message = if e.unreachable {
            format!("cannot reach the S3 server while {doing} ({}): check that it is up and server.endpoint", e.detail)
        } else if e.is(&["InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"]) {
            format!("the S3 server refused the keys while {doing} ({}): check server.access_key_file and secret_key_file", e.detail)
        } else if e.is(&["AccessDenied"]) {
            format!("access denied while {doing} ({}): this key's policy does not allow it", e.detail)
        } else {
            format!("{doing} failed: {}", e.detail)
        };
        self.error(message)
    }
}

/// Writes `data` as `key` unless it exists: Ok(false) when it did. A conflicting write in
/// progress (409 on AWS) is retried a few times.
pub(super) async fn put_if_absent(client: &Client, bucket: &str, key: &str, data: ByteStream) -> std::result::Result<bool, S3Error> {
    let mut body = Some(data);
    for attempt in 0..5u64 {
        let data = body.take().expect("a body per attempt");
        // A stream body can be sent once: keep a copy of small ones for a retry.
        let bytes =
            data.collect().await.map_err(|e| S3Error { code: None, status: None, detail: innermost(&e), unreachable: true })?.into_bytes();
        let put = client.put_object().bucket(bucket).key(key).if_none_match("*").body(ByteStream::from(bytes.clone()));
        match put.send().await.map_err(S3Error::from_sdk) {
            Ok(_) => return Ok(true),
            Err(e) if e.exists() => return Ok(false),
            Err(e) if (e.status == Some(409) || e.is(&["ConditionalRequestConflict"])) && attempt < 4 => {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                body = Some(ByteStream::from(bytes));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}

#[async_trait]
impl BackupServer for S3Server {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn create_if_absent(&self, path: &str, data: &[u8]) -> Result<bool> {
        put_if_absent(&self.client, &self.bucket, &self.key(path), ByteStream::from(data.to_vec()))
            .await
            .map_err(|e| self.fail(&format!("writing {path}"), e))
    }

    async fn create(&self, path: &str) -> Result<Box<dyn AsyncWrite + Send + Unpin>> {
        if self.stat(path).await?.is_some() {
            return Err(self.error(format!("{path} exists already: nothing stored is ever replaced")));
        }
        Ok(Box::new(super::s3_upload::start(self.client.clone(), self.bucket.clone(), self.key(path))))
    }

    async fn open(&self, path: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let got = self.client.get_object().bucket(&self.bucket).key(self.key(path)).send().await.map_err(S3Error::from_sdk);
        match got {
            Ok(object) => Ok(Box::new(object.body.into_async_read())),
            Err(e) if e.not_found() => Err(self.error(format!("{path} is missing"))),
            Err(e) => Err(self.fail(&format!("reading {path}"), e)),
        }
    }

    async fn list_page(&self, prefix: &str, after: Option<&str>) -> Result<ListPage> {
        let base = match self.key(prefix) {
            k if k.is_empty() => String::new(),
            k => format!("{}/", k.trim_end_matches('/')),
        };
        // `after` is a page's `next`: an object's name, or a prefix's with its `/`, after which
        // nothing under that prefix may come again.
        let start_after = after.map(|a| if a.ends_with('/') { format!("{base}{a}\u{10FFFF}") } else { format!("{base}{a}") });
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&base)
            .delimiter("/")
            .max_keys(PAGE as i32)
            .set_start_after(start_after)
            .send()
            .await
            .map_err(|e| self.fail(&format!("listing {prefix}"), S3Error::from_sdk(e)))?;
        // (position after the base, entry), in the server's order.
        let mut found: Vec<(String, DirEntry)> = Vec::new();
        for p in page.common_prefixes() {
            let Some(rel) = p.prefix().and_then(|p| p.strip_prefix(&base)) else { continue };
            let name = rel.trim_end_matches('/');
            if !name.is_empty() {
                found.push((rel.to_string(), DirEntry { name: name.to_string(), is_dir: true, size: 0 }));
            }
        }
        for o in page.contents() {
            let Some(rel) = o.key().and_then(|k| k.strip_prefix(&base)) else { continue };
            if !rel.is_empty() && !rel.contains('/') {
                let size = o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                found.push((rel.to_string(), DirEntry { name: rel.to_string(), is_dir: false, size }));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let next = match page.is_truncated() {
            Some(true) => found.last().map(|(position, _)| position.clone()),
            _ => None,
        };
        let mut entries: Vec<DirEntry> = found.into_iter().map(|(_, e)| e).collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ListPage { entries, next })
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>> {
        match self.client.head_object().bucket(&self.bucket).key(self.key(path)).send().await.map_err(S3Error::from_sdk) {
            Ok(head) => Ok(Some(head.content_length().and_then(|s| u64::try_from(s).ok()).unwrap_or(0))),
            Err(e) if e.not_found() => Ok(None),
            Err(e) => Err(self.fail(&format!("looking at {path}"), e)),
        }
    }

    async fn upload_failed(&self, path: &str, e: std::io::Error) -> Error {
        self.error(format!(
            "writing {path}: {e}; the run was not completed and earlier backups are untouched: check that the S3 server is up and server.endpoint, then run the backup again"
        ))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(path))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.fail(&format!("removing {path}"), S3Error::from_sdk(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys_are_checked() {
        let keys = S3Settings { access_key_file: Some("/a".into()), secret_key_file: Some("/s".into()), ..Default::default() };
        let l = keys.location("s3://backups/opencrvs/production/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str(), l.path_style, l.region.as_str()),
            ("backups", "opencrvs/production", false, "us-east-1")
        );
        let minio = S3Settings { endpoint: Some("http://127.0.0.1:9000/".into()), ..keys.clone() };
        let l = minio.location("s3://backups").unwrap();
        assert_eq!((l.prefix.as_str(), l.path_style, l.endpoint.as_deref()), ("", true, Some("http://127.0.0.1:9000")));
        for (url, needle) in [
            ("s3://Backups/x", "not an S3 bucket name"),
            ("s3://ab/x", "not an S3 bucket name"),
            ("s3://backups/../x", "plain names"),
            ("s3://backups/a//b", "plain names"),
        ] {
            assert!(keys.location(url).unwrap_err().contains(needle), "{url}");
        }
        let no_secret = S3Settings { secret_key_file: None, ..keys.clone() };
        assert!(no_secret.location("s3://backups").unwrap_err().contains("server.secret_key_file is required"));
        let bad_endpoint = S3Settings { endpoint: Some("minio:9000".into()), ..keys };
        assert!(bad_endpoint.location("s3://backups").unwrap_err().contains("server.endpoint"));
    }
}
