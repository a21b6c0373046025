//! InfluxDB 1.x portable backups (work in progress: the config shape is final, backup and restore are not built yet).

use async_trait::async_trait;
use serde::Deserialize;

use super::{BackupSink, RestoreFiles, Store, StoreBackup};
use crate::config::{Config, Schedule, StoreType, yes};
use crate::error::{Error, Result};
use crate::manifest::{Counts, Manifest};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: StoreType,
    /// The RPC (backup) address, `host:8088`.
    pub host: String,
    /// The HTTP API, used to count series and points (default: same host, port 8086).
    pub http_url: Option<String>,
    #[serde(default)]
    pub databases: Vec<String>,
    pub schedule: Option<Schedule>,
    pub server_dir: Option<String>,
}

pub struct InfluxDb {
    cfg: InfluxConfig,
}

impl InfluxDb {
    pub fn new(cfg: InfluxConfig, _config: &Config) -> Result<InfluxDb> {
        let _ = &cfg;
        Err(Error::Usage("stores.influxdb is enabled but this version of Lifeboat cannot back it up yet; set enabled: false".into()))
    }
}

#[async_trait]
impl Store for InfluxDb {
    fn name(&self) -> &'static str {
        "influxdb"
    }

    fn folder(&self) -> String {
        self.cfg.server_dir.clone().unwrap_or_else(|| "influxdb".into())
    }

    fn kind(&self) -> StoreType {
        self.cfg.kind
    }

    async fn backup(&self, _sink: &mut BackupSink<'_>) -> Result<StoreBackup> {
        Err(Error::Usage("stores.influxdb: not supported yet".into()))
    }

    async fn check_target(&self) -> Result<()> {
        Err(Error::Usage("stores.influxdb: not supported yet".into()))
    }

    async fn restore(&self, _manifest: &Manifest, _files: &RestoreFiles) -> Result<Counts> {
        Err(Error::Usage("stores.influxdb: not supported yet".into()))
    }
}
