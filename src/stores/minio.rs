//! MinIO (S3) dump backups (work in progress: the config shape is final, backup and restore are not built yet).

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;

use super::{BackupSink, RestoreFiles, Store, StoreBackup};
use crate::config::{Config, Schedule, StoreType, yes};
use crate::error::{Error, Result};
use crate::manifest::{Counts, Manifest};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinioConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: StoreType,
    pub endpoint: String,
    pub access_key_file: PathBuf,
    pub secret_key_file: PathBuf,
    #[serde(default)]
    pub buckets: Vec<String>,
    #[serde(default = "default_region")]
    pub region: String,
    pub schedule: Option<Schedule>,
    pub server_dir: Option<String>,
}

pub struct Minio {
    cfg: MinioConfig,
}

impl Minio {
    pub fn new(cfg: MinioConfig, _config: &Config) -> Result<Minio> {
        let _ = &cfg;
        Err(Error::Usage("stores.minio is enabled but this version of Lifeboat cannot back it up yet; set enabled: false".into()))
    }
}

#[async_trait]
impl Store for Minio {
    fn name(&self) -> &'static str {
        "minio"
    }

    fn folder(&self) -> String {
        self.cfg.server_dir.clone().unwrap_or_else(|| "minio".into())
    }

    fn kind(&self) -> StoreType {
        self.cfg.kind
    }

    async fn backup(&self, _sink: &mut BackupSink<'_>) -> Result<StoreBackup> {
        Err(Error::Usage("stores.minio: not supported yet".into()))
    }

    async fn check_target(&self) -> Result<()> {
        Err(Error::Usage("stores.minio: not supported yet".into()))
    }

    async fn restore(&self, _manifest: &Manifest, _files: &RestoreFiles) -> Result<Counts> {
        Err(Error::Usage("stores.minio: not supported yet".into()))
    }
}

fn default_region() -> String {
    "us-east-1".into()
}
