//! Bucket-level S3 operations: which buckets to back up and their settings; on restore,
//! emptying, deleting and recreating each bucket with its recorded settings.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Delete, ObjectIdentifier, VersioningConfiguration,
};

use super::s3::S3Error;
use super::{BucketSettings, Minio, err};
use crate::error::Result;

/// Why a bucket setting read as none.
enum Unread {
    /// The bucket was deleted.
    BucketGone,
    /// The bucket has no such setting, or the server does not support it.
    NoValue,
}

impl Minio {
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

    pub(super) async fn bucket_exists(&self, client: &Client, bucket: &str) -> Result<bool> {
        match client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => {
                let e = S3Error::from_sdk(e);
                if e.is(&["NoSuchBucket", "NotFound"]) { Ok(false) } else { Err(self.fail(&format!("checking bucket {bucket}"), e)) }
            }
        }
    }

    /// The buckets to back up: the configured ones (each must exist) or all of them.
    pub(super) async fn buckets_to_back_up(&self, client: &Client) -> Result<Vec<String>> {
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
    pub(super) async fn bucket_settings(&self, client: &Client, bucket: &str) -> Result<Option<BucketSettings>> {
        let policy = match client.get_bucket_policy().bucket(bucket).send().await {
            Ok(out) => out.policy().filter(|p| !p.trim().is_empty()).map(str::to_string),
            Err(e) => {
                let unsupported = format!("the server does not expose bucket policies; {bucket}'s policy is not recorded");
                match self.unread_setting(bucket, "policy", &["NoSuchBucketPolicy"], &unsupported, S3Error::from_sdk(e))? {
                    Unread::BucketGone => return Ok(None),
                    Unread::NoValue => None,
                }
            }
        };
        let versioning = match client.get_bucket_versioning().bucket(bucket).send().await {
            Ok(out) => out.status().map(|s| s.as_str().to_string()),
            Err(e) => {
                let unsupported = format!("the server does not expose versioning; {bucket}'s setting is not recorded");
                match self.unread_setting(bucket, "versioning", &[], &unsupported, S3Error::from_sdk(e))? {
                    Unread::BucketGone => return Ok(None),
                    Unread::NoValue => None,
                }
            }
        };
        Ok(Some(BucketSettings { policy, versioning }))
    }

    /// What a failed read of one bucket setting means: `unset` are the codes of a bucket that
    /// has none; a server without the feature is warned about (`unsupported`) and read as none.
    fn unread_setting(&self, bucket: &str, setting: &str, unset: &[&str], unsupported: &str, e: S3Error) -> Result<Unread> {
        if e.is(unset) {
            Ok(Unread::NoValue)
        } else if e.is(&["NoSuchBucket"]) {
            Ok(Unread::BucketGone)
        } else if e.is(&["NotImplemented"]) {
            tracing::warn!("minio: {unsupported}");
            Ok(Unread::NoValue)
        } else {
            Err(self.fail(&format!("reading the {setting} of bucket {bucket}"), e))
        }
    }

    /// Empties `bucket` (all versions, delete markers, unfinished uploads) and deletes it. A
    /// server without versioning (no ListObjectVersions) is emptied by plain listing.
    async fn remove_bucket(&self, client: &Client, bucket: &str) -> Result<()> {
        let doing = format!("emptying bucket {bucket}");
        loop {
            let ids = match client.list_object_versions().bucket(bucket).send().await.map_err(S3Error::from_sdk) {
                Ok(page) => {
                    let versions = page.versions().iter().map(|v| object_id(v.key(), v.version_id()));
                    versions.chain(page.delete_markers().iter().map(|m| object_id(m.key(), m.version_id()))).collect::<Result<Vec<_>>>()?
                }
                Err(e) if e.is(&["NotImplemented"]) => {
                    let page = client.list_objects_v2().bucket(bucket).send().await.map_err(|e| self.fail(&doing, S3Error::from_sdk(e)))?;
                    page.contents().iter().map(|o| object_id(o.key(), None)).collect::<Result<Vec<_>>>()?
                }
                Err(e) => return Err(self.fail(&doing, e)),
            };
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
            let page = match client.list_multipart_uploads().bucket(bucket).send().await.map_err(S3Error::from_sdk) {
                Ok(page) => page,
                // A server without multipart listing has no unfinished uploads to show.
                Err(e) if e.is(&["NotImplemented"]) => break,
                Err(e) => return Err(self.fail(&doing, e)),
            };
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
        client
            .delete_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| self.fail(&format!("deleting bucket {bucket}"), S3Error::from_sdk(e)))?;
        Ok(())
    }

    /// Replaces `bucket` by an empty one with the recorded versioning and policy.
    pub(super) async fn recreate_bucket(&self, client: &Client, bucket: &str, settings: &BucketSettings) -> Result<()> {
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
}

fn object_id(key: Option<&str>, version: Option<&str>) -> Result<ObjectIdentifier> {
    ObjectIdentifier::builder()
        .set_key(key.map(str::to_string))
        .set_version_id(version.map(str::to_string))
        .build()
        .map_err(|e| err(format!("listing versions: {e}")))
}
