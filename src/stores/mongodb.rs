//! MongoDB dump backups (work in progress: the config shape is final, backup and restore are not built yet).

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;

use super::{BackupSink, RestoreFiles, Store, StoreBackup};
use crate::config::{Config, Schedule, StoreType, yes};
use crate::error::{Error, Result};
use crate::manifest::{Counts, Manifest};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: StoreType,
    pub url: String,
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub databases: Vec<String>,
    pub schedule: Option<Schedule>,
    pub server_dir: Option<String>,
}

pub struct MongoDb {
    cfg: MongoConfig,
}

impl MongoDb {
    pub fn new(cfg: MongoConfig, _config: &Config) -> Result<MongoDb> {
        let _ = &cfg;
        Err(Error::Usage("stores.mongodb is enabled but this version of Lifeboat cannot back it up yet; set enabled: false".into()))
    }
}

#[async_trait]
impl Store for MongoDb {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    fn folder(&self) -> String {
        self.cfg.server_dir.clone().unwrap_or_else(|| "mongodb".into())
    }

    fn kind(&self) -> StoreType {
        self.cfg.kind
    }

    async fn backup(&self, _sink: &mut BackupSink<'_>) -> Result<StoreBackup> {
        Err(Error::Usage("stores.mongodb: not supported yet".into()))
    }

    async fn check_target(&self) -> Result<()> {
        Err(Error::Usage("stores.mongodb: not supported yet".into()))
    }

    async fn restore(&self, _manifest: &Manifest, _files: &RestoreFiles) -> Result<Counts> {
        Err(Error::Usage("stores.mongodb: not supported yet".into()))
    }
}
