//! Configuration: one YAML file shaped like the Helm chart's values (see SPEC.md).
//!
//! Parsed once and strictly: unknown keys and wrong types are errors naming the key and the file.
//! Secrets are never in the file itself, only paths to files holding them ([`SecretFile`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::deployment::Role;
use crate::error::{Error, Result};
use crate::layout::lock::Locking;
use crate::layout::retention::Retention;
use crate::legacy::LegacySettings;
use crate::monitoring::MonitoringConfig;
use crate::pipeline::Compression;
use crate::pipeline::keys::EncryptionConfig;
use crate::server::ServerConfig;
use crate::signing::SigningConfig;
use crate::stores::{self, ConfiguredStore, StoreConfigs, StoreContext};

/// The whole file: each block is owned, and checked, by the module that uses it.
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
    pub signing: SigningConfig,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub locking: Locking,
    #[serde(default)]
    pub stores: StoreConfigs,
    /// How to read the backups OpenCRVS's original scripts made (their passphrase).
    #[serde(default)]
    pub legacy: LegacySettings,
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
        self.encryption.check(self.role).map_err(|e| self.invalid(e))?;
        self.signing.check(self.role).map_err(|e| self.invalid(e))?;
        self.monitoring.check().map_err(|e| self.invalid(e))?;
        self.compression.check().map_err(|e| self.invalid(e))?;
        self.server.check().map_err(|e| self.invalid(e))?;
        Ok(())
    }

    pub fn tz(&self) -> Result<chrono_tz::Tz> {
        self.timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| self.invalid(format!("timezone `{}` is not a known IANA time zone (e.g. UTC, Africa/Lagos)", self.timezone)))
    }

    /// What a store may know of this configuration beyond its own block.
    pub fn store_context(&self) -> StoreContext {
        // `validate` has checked the server block before any store is built.
        let server = self.server.location().expect("server block checked by Config::parse");
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
            (backup("").replace("file:///tmp/x", "ftp://h/x"), 2, "ssh://, s3:// or file://"),
            // The s3 keys are checked as strictly, and only an s3:// server takes them.
            (
                backup("").replace("file:///tmp/x' }", "file:///tmp/x', endpoint: 'http://h:9000' }"),
                2,
                "server.endpoint is only for an s3:// server",
            ),
            (backup("").replace("'file:///tmp/x'", "'s3://backups/prod', access_key_file: /a"), 2, "server.secret_key_file is required"),
            (backup("").replace("'file:///tmp/x'", "'s3://Backups/prod'"), 2, "not an S3 bucket name"),
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
            // The server block's keys, its ssh ones flattened in, are checked as strictly.
            (backup("").replace("file:///tmp/x' }", "file:///tmp/x', ssh_keyfile: /k }"), 2, "ssh_keyfile"),
            (backup("").replace("'file:///tmp/x'", "'ssh://backup@h/srv'"), 2, "server.ssh_key_file is required"),
            (backup("").replace("'file:///tmp/x' }", "'ssh://backup@h/srv', ssh_key_file: /k }"), 2, "server.known_hosts_file is required"),
            (backup("").replace("'file:///tmp/x'", "'ssh://h/srv', ssh_key_file: /k, known_hosts_file: /h"), 2, "no user"),
            (backup("").replace("'file:///tmp/x'", "'file://relative/x'"), 2, "absolute path"),
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
    fn server_timeouts_parse() {
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
