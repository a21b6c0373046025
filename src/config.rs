//! Configuration: one YAML file shaped like the Helm chart's values (see SPEC.md).
//!
//! Parsed once and strictly: unknown keys and wrong types are errors naming the key and the file.
//! Secrets are never in the file itself, only paths to files holding them ([`SecretFile`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::monitoring::MonitoringConfig;
use crate::stores::{self, ConfiguredStore, ServerAccess, StoreConfigs, StoreContext};

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
    /// Who signs manifests (backup) and whose signatures are trusted (restore, verify, list, prune).
    #[serde(default)]
    pub signing: crate::signing::SigningConfig,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub locking: Locking,
    #[serde(default)]
    pub stores: StoreConfigs,
    /// Metrics and the failure webhook, after each job.
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    /// Where restores keep downloaded files while verifying them (default: the system temp dir).
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// The file this configuration was read from (for error messages).
    #[serde(skip)]
    pub file: PathBuf,
    /// Every configured store, checked and built once by [`Config::parse`].
    #[serde(skip)]
    built: std::sync::Arc<Vec<ConfiguredStore>>,
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
    /// How long an ssh:// server may stay silent (connecting, or mid-transfer) before the job
    /// fails instead of hanging, e.g. `60s`, `5m`. Default 60s.
    #[serde(default)]
    pub timeout: Option<String>,
}

impl ServerConfig {
    /// [`ServerConfig::timeout`], checked by [`Config::parse`].
    pub fn timeout(&self) -> Duration {
        self.timeout.as_deref().and_then(|t| parse_duration(t).ok()).unwrap_or(Duration::from_secs(60))
    }
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
    /// level 3 (2.50x vs 2.47x in scripts/bench/postgres) at about 1.6x the speed, and a backup must
    /// keep up with pg_dump on a small machine.
    #[serde(default = "level_one")]
    pub level: i32,
    /// zstd worker threads; 0 means one per CPU core.
    #[serde(default)]
    pub threads: u32,
}

fn level_one() -> i32 {
    1
}

impl Default for Compression {
    fn default() -> Self {
        Compression { level: 1, threads: 0 }
    }
}

/// Parses `250ms`, `30s`, `30m`, `26h`, `2d`, `1w` or plain seconds; the error says what is
/// wrong with `text`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("`{text}`: expected e.g. 26h, 2d, 90m, 30s"))?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => {
            return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m, h, d or w)"));
        }
    };
    Ok(Duration::from_millis(n.saturating_mul(millis)))
}

/// `locking:`: one job at a time per store (see `layout::lock`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locking {
    /// How long a job waits for another job of the same store before failing; 0: fail at once.
    #[serde(default = "ten_minutes", deserialize_with = "duration")]
    pub wait: Duration,
    /// A lock older than this whose holder cannot be seen alive is taken over.
    #[serde(default = "twelve_hours", deserialize_with = "duration")]
    pub stale_after: Duration,
    /// How often a waiting job looks at the lock again.
    #[serde(default = "five_seconds", deserialize_with = "duration")]
    pub poll: Duration,
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn twelve_hours() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

impl Default for Locking {
    fn default() -> Self {
        Locking { wait: ten_minutes(), stale_after: twelve_hours(), poll: five_seconds() }
    }
}

/// A config value written as a number or as a word (`90` or `10m`; `2` or `auto`), for keys
/// that take either.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrText<N> {
    Number(N),
    Text(String),
}

/// A duration in the configuration: seconds as a number, or text like `90s`, `10m`, `12h`, `2d`.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    match NumberOrText::<u64>::deserialize(d)? {
        NumberOrText::Number(n) => Ok(Duration::from_secs(n)),
        NumberOrText::Text(t) => {
            parse_duration(&t).map_err(|_| serde::de::Error::custom(format!("`{t}` is not a duration: use e.g. 30s, 10m, 12h or 2d")))
        }
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
        // Each store checks its own block (no network), so a bad one fails every command alike.
        config.built = std::sync::Arc::new(config.stores.build_all(&config.store_context())?);
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
                    return Err(self.invalid("encryption needs identity_file (or passphrase_file) for role restore"));
                }
            }
        }
        if !enc.recipients.is_empty() && enc.passphrase_file.is_some() {
            return Err(self.invalid("encryption: set either recipients or passphrase_file, not both"));
        }
        for (i, r) in enc.recipients.iter().enumerate() {
            if r.parse::<age::x25519::Recipient>().is_err() {
                return Err(
                    self.invalid(format!("encryption.recipients[{i}] is not an age public key (age1...); `lifeboat keygen` prints one"))
                );
            }
        }
        self.signing.check(self.role).map_err(|e| self.invalid(e))?;
        self.monitoring.check().map_err(|e| self.invalid(e))?;
        if self.compression.level < 1 || self.compression.level > 19 {
            return Err(self.invalid("compression.level must be between 1 and 19"));
        }
        if let Some(t) = &self.server.timeout {
            match parse_duration(t) {
                Ok(d) if d.as_secs() >= 2 => {}
                Ok(_) => return Err(self.invalid("server.timeout must be at least 2s")),
                Err(e) => return Err(self.invalid(format!("server.timeout {e}"))),
            }
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
            return Err(self.invalid(format!("server.url must start with ssh:// or file://, not `{url}`")));
        }
        Ok(())
    }

    pub fn tz(&self) -> Result<chrono_tz::Tz> {
        self.timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| self.invalid(format!("timezone `{}` is not a known IANA time zone (e.g. UTC, Africa/Lagos)", self.timezone)))
    }

    /// What a store may know of this configuration beyond its own block.
    pub fn store_context(&self) -> StoreContext {
        let server = ServerAccess {
            url: self.server.url.clone(),
            ssh_key_file: self.server.ssh_key_file.clone(),
            known_hosts_file: self.server.known_hosts_file.clone(),
        };
        StoreContext { config_file: self.file.clone(), work_dir: self.work_dir.clone(), server }
    }

    /// The enabled stores, in backup order, filtered by `only` (`--store`) when not empty.
    pub fn configured_stores(&self, only: &[String]) -> Result<Vec<&ConfiguredStore>> {
        stores::configured(&self.built, &self.file, only)
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

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/lifeboat/test.yaml"))
    }

    fn backup(stores: &str) -> String {
        format!(
            "role: backup\nserver: {{ url: 'file:///tmp/x' }}\nencryption: {{ recipients: [{RECIPIENT}] }}\nsigning: {{ key_file: /etc/lifeboat/signing_key }}\nstores:\n{stores}"
        )
    }

    fn message(e: Error) -> (i32, String) {
        (e.exit_code(), e.to_string())
    }

    #[test]
    fn a_minimal_backup_config_parses_with_defaults() {
        let c = parse(&backup("  postgres: { url: 'postgres://postgres@127.0.0.1:5432/postgres' }\n")).unwrap();
        assert_eq!(c.timezone, "UTC");
        assert_eq!((c.retention.keep_daily, c.compression.level), (7, 1));
        let stores = c.configured_stores(&[]).unwrap();
        assert_eq!(stores.len(), 1);
        assert_eq!((stores[0].name, stores[0].folder(), stores[0].kind()), ("postgres", "postgres", stores::StoreType::Dump));
    }

    #[test]
    fn config_errors_name_the_key_and_the_file() {
        for (text, code, needle) in [
            (backup("  postgres: { url: 'postgres://x@h/db', databses: [a] }\n"), 2, "databses"),
            (backup("  postgress: { url: 'postgres://x@h/db' }\n"), 2, "postgress"),
            (
                backup("  minio: { endpoint: 'http://h:9000', access_key_file: /a, secret_key_file: /b, enabled: maybe }\n"),
                2,
                "stores.minio",
            ),
            (backup("  postgres: { url: 'postgres://x:secret@h/db' }\n"), 2, "password_file"),
            (backup("  mongodb: { url: 'mongodb://h:27017', type: differential }\n"), 2, "not supported"),
            (backup("  postgres: { url: 'postgres://x@h/db', type: differential }\n"), 2, "stores.postgres.data_directory is required"),
            (
                backup("  postgres: { url: 'postgres://x@h/db', stanza: main }\n"),
                2,
                "stores.postgres.stanza is only for type: differential",
            ),
            (backup("  postgres: { url: 'postgres://x@h/db', type: differential, stanzza: main }\n"), 2, "stanzza"),
            (backup("").replace("file:///tmp/x", "ftp://h/x"), 2, "ssh:// or file://"),
            (backup("").replace("role: backup", "role: both"), 2, "role"),
            (backup("").replace("role: backup", "role: restore"), 2, "identity_file"),
            (backup("").replace("server: {", "timezone: Mars/Olympus\nserver: {"), 2, "Mars/Olympus"),
            (
                backup("").replace("signing: { key_file: /etc/lifeboat/signing_key }\n", ""),
                2,
                "signing.key_file is required for role backup",
            ),
            (
                backup("")
                    .replace("role: backup", "role: restore")
                    .replace("recipients: [", "identity_file: /k, x: [")
                    .replace(", x: [", " }\n#"),
                2,
                "signing.allowed_signers_file is required for role restore",
            ),
            (backup("").replace("key_file:", "keyfile:"), 2, "keyfile"),
        ] {
            let (got_code, text_err) = message(parse(&text).unwrap_err());
            assert_eq!(got_code, code, "{text_err}");
            assert!(text_err.contains(needle), "`{needle}` missing from: {text_err}");
            assert!(!text_err.contains("secret@"), "a password leaked: {text_err}");
            if needle != "not supported" {
                assert!(text_err.contains("/etc/lifeboat/test.yaml"), "file missing from: {text_err}");
            }
        }
    }

    #[test]
    fn durations_parse() {
        for (text, secs) in [("90", 90), ("30m", 1800), ("26h", 93600), ("2d", 172800), ("1w", 604800)] {
            assert_eq!(parse_duration(text).unwrap().as_secs(), secs, "{text}");
        }
        assert!(parse_duration("2x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("h").is_err());
        let bad = parse(&backup("").replace("file:///tmp/x' }", "file:///tmp/x', timeout: 5q }")).unwrap_err();
        assert!(bad.to_string().contains("server.timeout `5q`"), "{bad}");
        let c = parse(&backup("").replace("file:///tmp/x' }", "file:///tmp/x', timeout: 5s }")).unwrap();
        assert_eq!(c.server.timeout().as_secs(), 5);
    }

    #[test]
    fn locking_durations_parse_and_unknown_keys_are_named() {
        let c = parse(&backup("  postgres: { url: 'postgres://x@h/db' }\n")).unwrap();
        assert_eq!((c.locking.wait.as_secs(), c.locking.stale_after.as_secs(), c.locking.poll.as_secs()), (600, 43200, 5));
        let with = |block: &str| parse(&format!("locking: {block}\n{}", backup("  postgres: { url: 'postgres://x@h/db' }\n")));
        let c = with("{ wait: 0, stale_after: 2d, poll: 250ms }").unwrap();
        assert_eq!((c.locking.wait.as_millis(), c.locking.stale_after.as_secs(), c.locking.poll.as_millis()), (0, 172800, 250));
        assert_eq!(with("{ wait: 90 }").unwrap().locking.wait.as_secs(), 90);
        assert_eq!(with("{ wait: 10m }").unwrap().locking.wait.as_secs(), 600);
        for (block, needle) in
            [("{ wiat: 10m }", "wiat"), ("{ wait: 10x }", "`10x` is not a duration"), ("{ stale_after: soon }", "`soon`")]
        {
            let (code, text) = message(with(block).unwrap_err());
            assert_eq!(code, 2, "{text}");
            assert!(text.contains(needle) && text.contains("/etc/lifeboat/test.yaml"), "`{needle}` missing from: {text}");
        }
    }

    #[test]
    fn store_selection_is_checked() {
        let c =
            parse(&backup("  postgres: { url: 'postgres://x@h/db' }\n  mongodb: { url: 'mongodb://h:27017', enabled: false }\n")).unwrap();
        assert_eq!(message(c.configured_stores(&["nosuch".into()]).unwrap_err()).0, 2);
        assert!(message(c.configured_stores(&["mongodb".into()]).unwrap_err()).1.contains("not configured or not enabled"));
        assert_eq!(c.configured_stores(&["postgres".into()]).unwrap().len(), 1);
    }
}
