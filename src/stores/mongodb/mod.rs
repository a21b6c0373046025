//! MongoDB `dump`: one archive per database, in the mongodump archive format, so that
//! `age -d | zstd -d | mongorestore --archive` restores it without Lifeboat.
//!
//! Lifeboat writes the archive itself with the official Rust driver rather than running mongodump:
//! no MongoDB tools can be installed on these machines, and writing the format directly keeps the
//! stream in one process (driver cursor → archive framing → zstd → age → backup server) with
//! memory bounded by one cursor batch and a few 256 KiB buffers. Documents are copied as raw BSON
//! bytes, never decoded, so every BSON type survives exactly.
//!
//! The format (mongo-tools `common/archive`): a little-endian magic number, a header document, one
//! metadata document per collection (its options and indexes as canonical Extended JSON, as in
//! mongodump's `metadata.json`), a terminator; then for each collection a block headed by
//! `{db, collection, EOF: false}` holding its documents, and a closing `{db, collection, EOF: true,
//! CRC}` block whose CRC (CRC-64/ECMA as Go computes it) covers all of the collection's document
//! bytes. mongorestore checks that CRC, and so does Lifeboat's own restore.
//!
//! The archive comes from the backup server and is not trusted: a restore reads each archive whole
//! before any database is dropped (every namespace must belong to the database being restored and
//! be one Lifeboat writes, every length is bounded before it is allocated, every CRC must match),
//! then reads it again to insert. When the restore side's config lists `databases`, a backup
//! holding any other database is refused.
//!
//! Counts are the documents written to the archive per collection: they describe exactly what the
//! backup holds, whatever is written to the database meanwhile.

mod archive;
mod client;
mod dump;
mod legacy;
mod restore;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::Client;

use serde::{Deserialize, Serialize};

use super::{RestoreFiles, Store};
use crate::error::{Error, Result};
use crate::layout::RunWriter;
use crate::layout::manifest::{Counts, Manifest, StoreBackup};
use crate::pipeline::bridge::pipe;
use crate::secret::SecretFile;
use crate::stores::{Datastore, StoreContext, StoreSettings, StoreType};
use client::{DatabasePlan, url_has_password, url_hosts};
use dump::{Stop, write_archive};

const STORE: &str = "mongodb";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    #[serde(flatten)]
    pub settings: StoreSettings,
    /// `mongodb://[user@]host:port/[?options]` (or `mongodb+srv://`), without a password.
    pub url: String,
    /// File holding the password of the url's user.
    pub password_file: Option<PathBuf>,
    /// Databases to back up; empty means every database except admin, config and local.
    #[serde(default)]
    pub databases: Vec<String>,
}

pub struct MongoDb {
    cfg: MongoConfig,
    password: Option<SecretFile>,
}

/// What a MongoDB dump's manifest records besides counts.
#[derive(Debug, Serialize, Deserialize)]
struct MongoExtra {
    /// Database name → its archive file.
    databases: BTreeMap<String, String>,
    /// Always `mongodump-archive`.
    format: String,
}

fn err(message: impl Into<String>) -> Error {
    Error::store(STORE, message)
}

/// A file name for a database's archive (the real name is kept in the manifest).
fn archive_file_name(db: &str) -> String {
    super::database_file_name(db, "archive.zst.age")
}

/// Why the archive writer stopped early.
impl MongoDb {
    async fn dump_database(
        &self,
        client: &Client,
        plan: DatabasePlan,
        server_version: &str,
        sink: &mut RunWriter<'_>,
    ) -> Result<BTreeMap<String, u64>> {
        let (mut writer, reader) = pipe();
        let name = plan.name.clone();
        let mut producer = {
            let (client, server_version) = (client.clone(), archive::server_version(server_version));
            tokio::spawn(async move {
                match write_archive(client, plan, server_version, &mut writer).await {
                    Ok(counts) => {
                        writer.finish_async().await?;
                        Ok(counts)
                    }
                    Err(Stop::Failed(e)) => {
                        // The pipeline must see a failure, never a clean (truncated) end.
                        writer.fail_async(std::io::Error::other(e.to_string())).await;
                        Err(Stop::Failed(e))
                    }
                    Err(Stop::Closed) => Err(Stop::Closed),
                }
            })
        };
        match sink.put(&archive_file_name(&name), Box::new(reader)).await {
            Ok(()) => match producer.await.map_err(|e| err(format!("the dump of {name} stopped: {e}")))? {
                Ok(counts) => Ok(counts),
                Err(Stop::Failed(e)) => Err(e),
                Err(Stop::Closed) => Err(err(format!("the dump of {name} was cut short"))),
            },
            Err(put_error) => {
                // When the dump failed first, its error is the cause; when the upload failed
                // first, the dump may be waiting on the server and is stopped.
                match tokio::time::timeout(Duration::from_secs(2), &mut producer).await {
                    Ok(Ok(Err(Stop::Failed(e)))) => Err(e),
                    Ok(_) => Err(put_error),
                    Err(_) => {
                        producer.abort();
                        Err(put_error)
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Store for MongoDb {
    async fn backup(&self, sink: &mut RunWriter<'_>) -> Result<StoreBackup> {
        let client = self.client().await?;
        let databases = self.databases(&client).await?;
        let server_version = Self::server_version(&client).await?;
        // Every database is listed before any data moves, so a collection Lifeboat cannot back
        // up fails the run before anything is uploaded.
        let mut plans = Vec::new();
        for db in &databases {
            plans.push(self.plan(&client, db).await?);
        }
        let mut counts = Counts::new();
        let mut extra = MongoExtra { databases: BTreeMap::new(), format: "mongodump-archive".into() };
        for plan in plans {
            let name = plan.name.clone();
            tracing::info!("mongodb: dumping database {name} ({} collection(s))", plan.collections.len());
            counts.insert(name.clone(), self.dump_database(&client, plan, &server_version, sink).await?);
            extra.databases.insert(name.clone(), archive_file_name(&name));
        }
        Ok(StoreBackup::new("documents", counts, &extra)
            .tool("mongodb", server_version)
            .tool("archive", format!("mongodump archive format {}", archive::FORMAT_VERSION)))
    }

    async fn check_target(&self) -> Result<()> {
        self.client().await.map(|_| ())
    }

    async fn adopt_legacy(&self, unpacked: &std::path::Path, out: &std::path::Path) -> Result<crate::stores::Adopted> {
        self.adopt(unpacked, out).await
    }

    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts> {
        let extra: MongoExtra = manifest.extra()?;
        // Every archive must read whole as the right database before any database is dropped.
        for (name, file) in &extra.databases {
            restore::check_target_database(name, &self.cfg.databases)?;
            restore::check_archive(files, file, name).await?;
        }
        let client = self.client().await?;
        let mut found = Counts::new();
        for (name, file) in &extra.databases {
            tracing::info!("mongodb: restoring database {name}");
            found.insert(name.clone(), restore::restore_database(&client, name, file, files).await?);
        }
        Ok(found)
    }
}

impl Datastore for MongoDb {
    type Config = MongoConfig;
    const TYPES: &'static [StoreType] = &[StoreType::Dump];

    fn new(cfg: MongoConfig, ctx: &StoreContext) -> Result<MongoDb> {
        let invalid = |message: String| ctx.invalid(message);
        if !(cfg.url.starts_with("mongodb://") || cfg.url.starts_with("mongodb+srv://")) {
            return Err(invalid(format!(
                "stores.mongodb.url `{}` is not a MongoDB URL; expected mongodb://[user@]host:port/",
                url_hosts(&cfg.url)
            )));
        }
        if url_has_password(&cfg.url) {
            return Err(invalid("stores.mongodb.url contains a password: remove it and put it in stores.mongodb.password_file".into()));
        }
        for db in &cfg.databases {
            if db.is_empty() || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
                return Err(invalid(format!("stores.mongodb.databases: `{db}` is not a valid MongoDB database name")));
            }
        }
        let password = cfg.password_file.as_deref().map(|p| SecretFile::new("mongodb password", p));
        Ok(MongoDb { cfg, password })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_file_names() {
        assert_eq!(archive_file_name("user-mgnt"), "db-user-mgnt.archive.zst.age");
        assert_eq!(archive_file_name("a b"), "db-a_b.archive.zst.age");
    }
}
