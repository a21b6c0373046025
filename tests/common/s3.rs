//! A synchronous S3 client for setting up and checking buckets on the real MinIO
//! (scripts/servers/s3.sh) or s3s-fs (scripts/servers/s3s-fs.sh). Imported by name where used.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, MetadataDirective, VersioningConfiguration};
use sha2::{Digest, Sha256};

pub use super::ports::{MINIO_PORT, S3S_PORT};
use super::servers::{ensure_server, state};

pub fn s3_endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

pub fn s3_key_file(name: &str) -> PathBuf {
    state().join(name)
}

/// A `stores.minio` block for `buckets` on the S3 server at `port`, with `extra` lines.
pub fn minio_store_block(buckets: &[&str], port: u16, extra: &str) -> String {
    let list = if buckets.is_empty() { String::new() } else { format!("    buckets: [{}]\n", buckets.join(", ")) };
    format!(
        "stores:\n  minio:\n    endpoint: {}\n    access_key_file: {}\n    secret_key_file: {}\n{list}{extra}",
        s3_endpoint(port),
        s3_key_file("s3-access-key").display(),
        s3_key_file("s3-secret-key").display()
    )
}

pub struct S3 {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    versioned: bool,
}

impl S3 {
    pub fn minio() -> S3 {
        ensure_server("s3");
        S3::at(MINIO_PORT, true)
    }

    pub fn s3s() -> S3 {
        ensure_server("s3s-fs");
        S3::at(S3S_PORT, false)
    }

    fn at(port: u16, versioned: bool) -> S3 {
        let key = |f: &str| std::fs::read_to_string(s3_key_file(f)).unwrap().trim().to_string();
        S3::with_keys(port, versioned, &key("s3-access-key"), &key("s3-secret-key"))
    }

    /// A client of the real MinIO with other keys (a user made with `mc admin user add`).
    pub fn minio_as(access: &str, secret: &str) -> S3 {
        ensure_server("s3");
        S3::with_keys(MINIO_PORT, true, access, secret)
    }

    fn with_keys(port: u16, versioned: bool, access: &str, secret: &str) -> S3 {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(s3_endpoint(port))
            .force_path_style(true)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(access, secret, None, None, "test"))
            .build();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        S3 { rt, client: Client::from_conf(config), versioned }
    }

    pub fn bucket_exists(&self, bucket: &str) -> bool {
        self.rt.block_on(self.client.head_bucket().bucket(bucket).send()).is_ok()
    }

    /// Every key of a bucket, in listing order.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.rt.block_on(async {
            let mut keys = Vec::new();
            let mut token = None;
            loop {
                let page = self.client.list_objects_v2().bucket(bucket).set_continuation_token(token).send().await.unwrap();
                keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break keys,
                }
            }
        })
    }

    /// Removes the bucket with everything in it (every version on MinIO, unfinished multipart
    /// uploads), if it exists.
    pub fn remove_bucket(&self, bucket: &str) {
        if !self.bucket_exists(bucket) {
            return;
        }
        self.rt.block_on(async {
            loop {
                let ids: Vec<(String, Option<String>)> = if self.versioned {
                    let page = self.client.list_object_versions().bucket(bucket).send().await.unwrap();
                    let versions = page.versions().iter().map(|v| (v.key().unwrap().to_string(), v.version_id().map(str::to_string)));
                    versions
                        .chain(page.delete_markers().iter().map(|m| (m.key().unwrap().to_string(), m.version_id().map(str::to_string))))
                        .collect()
                } else {
                    let page = self.client.list_objects_v2().bucket(bucket).send().await.unwrap();
                    page.contents().iter().map(|o| (o.key().unwrap().to_string(), None)).collect()
                };
                if ids.is_empty() {
                    break;
                }
                for (key, version) in ids {
                    self.client.delete_object().bucket(bucket).key(key).set_version_id(version).send().await.unwrap();
                }
            }
            if let Ok(uploads) = self.client.list_multipart_uploads().bucket(bucket).send().await {
                for u in uploads.uploads() {
                    let abort = self.client.abort_multipart_upload().bucket(bucket).key(u.key().unwrap()).upload_id(u.upload_id().unwrap());
                    let _ = abort.send().await;
                }
            }
            self.client.delete_bucket().bucket(bucket).send().await.unwrap();
        });
    }

    pub fn fresh_bucket(&self, bucket: &str) {
        self.remove_bucket(bucket);
        self.rt.block_on(self.client.create_bucket().bucket(bucket).send()).unwrap();
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8], content_type: Option<&str>, meta: &[(&str, &str)]) {
        let mut put = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .set_content_type(content_type.map(str::to_string));
        for (k, v) in meta {
            put = put.metadata(*k, *v);
        }
        self.rt.block_on(put.send()).unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
    }

    /// An object with the standard headers a web client is served with.
    pub fn put_served(&self, bucket: &str, key: &str, body: &[u8]) {
        let put = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .content_type("text/html; charset=utf-8")
            .cache_control("max-age=3600")
            .content_disposition("attachment; filename=\"certificate.html\"")
            .content_language("fr");
        self.rt.block_on(put.send()).unwrap();
    }

    /// A big object of a repeated 1 MiB of pseudo-random bytes (each part's copy changed),
    /// uploaded in 16 MiB parts.
    pub fn put_big(&self, bucket: &str, key: &str, size: usize) {
        let block = noise(1, 1 << 20);
        self.rt.block_on(async {
            let up = self
                .client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .content_type("application/x-scan")
                .metadata("pages", "4000")
                .send()
                .await
                .unwrap();
            let id = up.upload_id().unwrap();
            let mut parts = Vec::new();
            let mut offset = 0usize;
            let mut n = 1;
            while offset < size {
                let len = (size - offset).min(16 << 20);
                let body: Vec<u8> = (0..len).map(|i| block[(offset + i) % block.len()] ^ (n as u8)).collect();
                let part = self.client.upload_part().bucket(bucket).key(key).upload_id(id).part_number(n);
                let out = part.body(ByteStream::from(body)).send().await.unwrap();
                parts.push(CompletedPart::builder().e_tag(out.e_tag().unwrap()).part_number(n).build());
                offset += len;
                n += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .unwrap();
        });
    }

    /// Multipart uploads begun in the bucket and neither completed nor aborted.
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        self.rt.block_on(self.client.list_multipart_uploads().bucket(bucket).send()).map(|o| o.uploads().len()).unwrap_or(0)
    }

    /// Replaces an object's user metadata and content type in place (its bytes stay).
    pub fn set_metadata(&self, bucket: &str, key: &str, content_type: &str, meta: &[(&str, &str)]) {
        let mut copy = self
            .client
            .copy_object()
            .bucket(bucket)
            .key(key)
            .copy_source(format!("{bucket}/{key}"))
            .metadata_directive(MetadataDirective::Replace)
            .content_type(content_type);
        for (k, v) in meta {
            copy = copy.metadata(*k, *v);
        }
        self.rt.block_on(copy.send()).unwrap_or_else(|e| panic!("copy {bucket}/{key}: {e:?}"));
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.rt.block_on(self.client.delete_object().bucket(bucket).key(key).send()).unwrap();
    }

    pub fn set_versioning(&self, bucket: &str) {
        let config = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        self.rt.block_on(self.client.put_bucket_versioning().bucket(bucket).versioning_configuration(config).send()).unwrap();
    }

    pub fn set_policy(&self, bucket: &str) {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":["*"]}},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::{bucket}/public/*"]}}]}}"#
        );
        self.rt.block_on(self.client.put_bucket_policy().bucket(bucket).policy(policy).send()).unwrap();
    }

    pub fn delete_policy(&self, bucket: &str) {
        self.rt.block_on(self.client.delete_bucket_policy().bucket(bucket).send()).unwrap();
    }

    /// Everything a restore must bring back: per object its key, size, SHA-256, content type,
    /// standard headers and user metadata; the bucket's policy and versioning.
    pub fn fingerprint(&self, bucket: &str) -> String {
        if !self.bucket_exists(bucket) {
            return "no bucket".into();
        }
        let keys = self.keys(bucket);
        self.rt.block_on(async {
            let mut lines = Vec::new();
            for key in keys {
                let mut got = self.client.get_object().bucket(bucket).key(&key).send().await.unwrap();
                let mut hash = Sha256::new();
                let mut size = 0;
                while let Some(chunk) = got.body.next().await {
                    let chunk = chunk.unwrap();
                    size += chunk.len();
                    hash.update(&chunk);
                }
                let meta: BTreeMap<_, _> = got.metadata().cloned().unwrap_or_default().into_iter().collect();
                lines.push(format!(
                    "{key:?} {size} {} {:?} {:?} {:?} {:?} {meta:?}",
                    hex::encode(hash.finalize()),
                    got.content_type(),
                    got.cache_control(),
                    got.content_disposition(),
                    got.content_language()
                ));
            }
            let policy = self.client.get_bucket_policy().bucket(bucket).send().await.ok().and_then(|p| p.policy().map(str::to_string));
            let versioning = match self.client.get_bucket_versioning().bucket(bucket).send().await {
                Ok(v) => format!("{:?}", v.status()),
                Err(e) if e.as_service_error().and_then(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(e)) == Some("NotImplemented") => {
                    "not implemented".into()
                }
                Err(e) => panic!("versioning of {bucket}: {e:?}"),
            };
            lines.push(format!("policy {policy:?} versioning {versioning}"));
            lines.join("\n")
        })
    }
}

/// `n` pseudo-random bytes from `seed` (incompressible, so stored sizes follow plain sizes).
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The MinIO client as scripts/install-deps installs it, as the test MinIO's admin (alias `local`).
pub fn mc() -> std::process::Command {
    let bin = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lifeboat-tools/bin/mc");
    assert!(bin.exists(), "{} is missing: run scripts/install-deps", bin.display());
    let key = |f: &str| std::fs::read_to_string(s3_key_file(f)).unwrap().trim().to_string();
    let mut cmd = std::process::Command::new(bin);
    cmd.env("MC_HOST_local", format!("http://{}:{}@127.0.0.1:{MINIO_PORT}", key("s3-access-key"), key("s3-secret-key")));
    cmd.env("MC_CONFIG_DIR", std::env::temp_dir().join(format!("lifeboat-mc-{}", std::process::id())));
    cmd
}
