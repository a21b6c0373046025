//! Configuration: one YAML file shaped like the Helm chart's values (see SPEC.md).
//!
//! Parsed once and strictly: unknown keys and wrong types are errors naming the key and the file.
//! Secrets are never in the file itself, only paths to files holding them ([`SecretFile`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
pub use crate::stores::influxdb::InfluxConfig;
pub use crate::stores::minio::MinioConfig;
pub use crate::stores::mongodb::MongoConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Backup,
    Restore,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Backup => "backup",
            Role::Restore => "restore",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub role: Role,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    pub server: ServerConfig,
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub stores: Stores,
    /// Where restores keep downloaded files while verifying them (default: the system temp dir).
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// The file this configuration was read from (for error messages).
    #[serde(skip)]
    pub file: PathBuf,
}

fn default_timezone() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `ssh://user@host:port/path` or `file:///path`.
    pub url: String,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age X25519 public keys (`age1...`): the backup side encrypts to these.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// age identity file: the restore side decrypts with it.
    pub identity_file: Option<PathBuf>,
    /// A passphrase file, the simple alternative to recipients and identity.
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default = "seven")]
    pub keep_daily: u32,
    #[serde(default = "four")]
    pub keep_weekly: u32,
    #[serde(default = "six")]
    pub keep_monthly: u32,
}

fn seven() -> u32 {
    7
}
fn four() -> u32 {
    4
}
fn six() -> u32 {
    6
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_daily: 7, keep_weekly: 4, keep_monthly: 6 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// zstd level (1-19). 1 is the default: on registry-like dumps it compresses as well as
    /// level 3 (2.50x vs 2.47x in scripts/bench) at about 1.6x the speed, and a backup must
    /// keep up with pg_dump on a small machine.
    #[serde(default = "one")]
    pub level: i32,
    /// zstd worker threads; 0 means one per CPU core.
    #[serde(default)]
    pub threads: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression { level: 1, threads: 0 }
    }
}

/// The four datastores; each is optional. The order here is the order backups run in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stores {
    pub postgres: Option<PostgresConfig>,
    pub mongodb: Option<MongoConfig>,
    pub influxdb: Option<InfluxConfig>,
    pub minio: Option<MinioConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    #[default]
    Dump,
    Differential,
}

impl fmt::Display for StoreType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreType::Dump => "dump",
            StoreType::Differential => "differential",
        })
    }
}

/// A cron schedule: one expression, or one per backup kind (`dump`, `full`, `differential`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Schedule {
    One(String),
    PerKind(BTreeMap<String, String>),
}

pub(crate) fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: StoreType,
    /// `postgres://user@host:port/maintenance_db`, without a password (use `password_file`).
    pub url: String,
    pub password_file: Option<PathBuf>,
    /// Databases to back up; empty means every database that accepts connections.
    #[serde(default)]
    pub databases: Vec<String>,
    pub schedule: Option<Schedule>,
    pub server_dir: Option<String>,
    /// Folder holding pg_dump, pg_dumpall, pg_restore and psql (default: found on PATH).
    pub bin_dir: Option<PathBuf>,
    /// Parallel pg_restore jobs; above 1 the dump is first decrypted to a private temp file.
    #[serde(default = "one")]
    pub restore_jobs: u32,
}

fn one<T: From<u8>>() -> T {
    T::from(1)
}

/// A path to a file holding a secret. The secret is read only when needed and never printed.
#[derive(Clone)]
pub struct SecretFile {
    pub what: &'static str,
    pub path: PathBuf,
}

impl SecretFile {
    pub fn new(what: &'static str, path: &Path) -> Self {
        SecretFile { what, path: path.to_path_buf() }
    }

    /// Reads the secret, trimmed of surrounding whitespace.
    pub fn read(&self) -> Result<String> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| Error::SecretFile {
            what: self.what,
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let text = text.trim().to_string();
        if text.is_empty() {
            return Err(Error::SecretFile { what: self.what, path: self.path.clone(), reason: "the file is empty".into() });
        }
        Ok(text)
    }
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretFile({})", self.path.display())
    }
}

impl Config {
    /// Reads and validates the configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: path.to_path_buf(),
            message: format!("cannot read it ({e}); pass --config FILE or set LIFEBOAT_CONFIG"),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = serde_norway::from_str(text).map_err(|e| Error::Config {
            file: path.to_path_buf(),
            message: format!("{e}; see SPEC.md or the README for the accepted keys"),
        })?;
        config.file = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, message: impl Into<String>) -> Error {
        Error::Config { file: self.file.clone(), message: message.into() }
    }

    fn validate(&self) -> Result<()> {
        self.tz()?;
        let enc = &self.encryption;
        match self.role {
            Role::Backup => {
                if enc.identity_file.is_some() {
                    return Err(self.invalid(
                        "encryption.identity_file is set but role is backup: the backup side holds only \
                         the public recipients; move the identity to the restore configuration",
                    ));
                }
                if enc.recipients.is_empty() && enc.passphrase_file.is_none() {
                    return Err(self.invalid(
                        "encryption needs recipients (age public keys) or passphrase_file for role backup; \
                         `lifeboat keygen` makes a key pair",
                    ));
                }
            }
            Role::Restore => {
                if enc.identity_file.is_none() && enc.passphrase_file.is_none() {
                    return Err(self.invalid(
                        "encryption needs identity_file (or passphrase_file) for role restore",
                    ));
                }
            }
        }
        if !enc.recipients.is_empty() && enc.passphrase_file.is_some() {
            return Err(self.invalid("encryption: set either recipients or passphrase_file, not both"));
        }
        for (i, r) in enc.recipients.iter().enumerate() {
            if r.parse::<age::x25519::Recipient>().is_err() {
                return Err(self.invalid(format!(
                    "encryption.recipients[{i}] is not an age public key (age1...); `lifeboat keygen` prints one"
                )));
            }
        }
        if self.compression.level < 1 || self.compression.level > 19 {
            return Err(self.invalid("compression.level must be between 1 and 19"));
        }
        let url = &self.server.url;
        if url.starts_with("ssh://") {
            if self.server.ssh_key_file.is_none() {
                return Err(self.invalid("server.ssh_key_file is required for an ssh:// server"));
            }
            if self.server.known_hosts_file.is_none() {
                return Err(self.invalid(
                    "server.known_hosts_file is required for an ssh:// server: host keys are always checked \
                     (get it with `ssh-keyscan -p PORT HOST`, then compare the fingerprint out of band)",
                ));
            }
        } else if !url.starts_with("file://") {
            return Err(self.invalid(format!(
                "server.url must start with ssh:// or file://, not `{url}`"
            )));
        }
        if let Some(pg) = &self.stores.postgres {
            if pg.url.contains('@') && url::Url::parse(&pg.url).ok().and_then(|u| u.password().map(|_| ())).is_some() {
                return Err(self.invalid(
                    "stores.postgres.url contains a password: remove it and put it in stores.postgres.password_file",
                ));
            }
            if pg.restore_jobs == 0 {
                return Err(self.invalid("stores.postgres.restore_jobs must be at least 1"));
            }
        }
        Ok(())
    }

    pub fn tz(&self) -> Result<chrono_tz::Tz> {
        self.timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            self.invalid(format!("timezone `{}` is not a known IANA time zone (e.g. UTC, Africa/Lagos)", self.timezone))
        })
    }

    /// Fails with exit code 2 unless this configuration has the given role.
    pub fn require_role(&self, role: Role, command: &str) -> Result<()> {
        if self.role != role {
            return Err(Error::Usage(format!(
                "`{command}` needs a configuration with role {role}, but {} has role {}: \
                 use the {role}-side configuration",
                self.file.display(),
                self.role
            )));
        }
        Ok(())
    }
}
