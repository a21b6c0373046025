//! The datastores. Each module knows how to produce its dump streams and counts, how to check a
//! target, and how to restore and re-count; none knows how bytes are compressed, encrypted or
//! stored. The list of stores lives in [`configured`]: a new datastore is one module and one line.

pub mod influxdb;
pub mod minio;
pub mod mongodb;
pub mod postgres;
pub mod stderr_tail;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::config::{Compression, Config, StoreType};
use crate::error::{Error, Result};
use crate::manifest::{Counts, FileEntry, Manifest};
use crate::pipeline::{self, Counters, DecryptKey, EncryptKey};
use crate::progress::Progress;
use crate::server::{BackupServer, join};

/// What a store's backup reports besides its files.
#[derive(Debug, Default)]
pub struct StoreBackup {
    pub tool_versions: BTreeMap<String, String>,
    pub count_unit: String,
    pub counts: Counts,
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Hands a store's dump streams to the pipeline and the backup server.
pub struct BackupSink<'a> {
    pub server: &'a dyn BackupServer,
    pub run_path: String,
    pub key: &'a EncryptKey,
    pub compression: &'a Compression,
    pub store: String,
    pub files: Vec<FileEntry>,
    pub counters: Arc<Counters>,
}

impl BackupSink<'_> {
    /// Streams `source` to `<name>.partial` in the run folder (compressed, encrypted, hashed).
    /// The file gets its final name only when the whole run succeeds.
    pub async fn put(&mut self, name: &str, source: Box<dyn AsyncRead + Send + Unpin>) -> Result<()> {
        let path = join(&self.run_path, &format!("{name}.partial"));
        let dest = self.server.create(&path).await?;
        let file_counters = Arc::new(Counters::default());
        let _progress = Progress::start(format!("{}: {name}", self.store), file_counters.clone());
        let encoded = pipeline::encode_stream(source, dest, self.key, self.compression, file_counters).await?;
        self.counters.read.fetch_add(encoded.raw_size, std::sync::atomic::Ordering::Relaxed);
        self.counters.stored.fetch_add(encoded.size, std::sync::atomic::Ordering::Relaxed);
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
}

/// A restore's verified local copies of the stored files.
pub struct RestoreFiles {
    pub dir: PathBuf,
    pub key: Arc<DecryptKey>,
}

impl RestoreFiles {
    /// The plain bytes of a stored file, decrypted and decompressed as they are read.
    pub fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        pipeline::open_decoded(&self.dir.join(name), &self.key, name)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// The configured store name (its key under `stores:`).
    fn name(&self) -> &'static str;

    /// The configured `server_dir` override, if any.
    fn server_dir(&self) -> Option<&str>;

    /// Its folder inside a run: `server_dir`, or the name.
    fn folder(&self) -> String {
        self.server_dir().unwrap_or(self.name()).to_string()
    }

    fn kind(&self) -> StoreType;

    /// Checks that everything named in the configuration exists, then streams the dumps into
    /// `sink` and returns the counts describing exactly what was dumped.
    async fn backup(&self, sink: &mut BackupSink<'_>) -> Result<StoreBackup>;

    /// Checks that the restore target is reachable, before anything is downloaded.
    async fn check_target(&self) -> Result<()>;

    /// Replaces the target's data with the verified files, then returns the counts found in it.
    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts>;
}

/// The enabled stores of a configuration, in backup order, filtered by `only` when not empty.
pub fn configured(config: &Config, only: &[String]) -> Result<Vec<Box<dyn Store>>> {
    const KNOWN: [&str; 4] = ["postgres", "mongodb", "influxdb", "minio"];
    for name in only {
        if !KNOWN.contains(&name.as_str()) {
            return Err(Error::Usage(format!("--store {name}: unknown store; choose from {}", KNOWN.join(", "))));
        }
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut stores: Vec<Box<dyn Store>> = Vec::new();
    let s = &config.stores;
    if let Some(pg) = s.postgres.as_ref().filter(|c| c.enabled && wanted("postgres")) {
        stores.push(Box::new(postgres::Postgres::new(pg.clone(), config)?));
    }
    if let Some(c) = s.mongodb.as_ref().filter(|c| c.enabled && wanted("mongodb")) {
        stores.push(Box::new(mongodb::MongoDb::new(c.clone(), config)?));
    }
    if let Some(c) = s.influxdb.as_ref().filter(|c| c.enabled && wanted("influxdb")) {
        stores.push(Box::new(influxdb::InfluxDb::new(c.clone(), config)?));
    }
    if let Some(c) = s.minio.as_ref().filter(|c| c.enabled && wanted("minio")) {
        stores.push(Box::new(minio::Minio::new(c.clone(), config)?));
    }
    for name in only {
        if !stores.iter().any(|st| st.name() == name) {
            return Err(Error::Usage(format!("--store {name}: stores.{name} is not configured or not enabled in {}", config.file.display())));
        }
    }
    if stores.is_empty() {
        return Err(Error::Usage(format!("no enabled stores in {}", config.file.display())));
    }
    Ok(stores)
}
