//! What every datastore's configuration shares (`enabled`, `type`, `schedule`, `server_dir`) and
//! what a store is given besides its own configuration. Lives here, not in `config`, so that
//! `config` depends on `stores` and never the reverse.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use crate::layout::manifest::StoreType;

/// A cron schedule: one expression, or one per backup kind (`dump`, `full`, `differential`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Schedule {
    One(String),
    PerKind(BTreeMap<String, String>),
}

/// The keys every `stores.<name>` block has; flattened into each store's own config type.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: StoreType,
    pub schedule: Option<Schedule>,
    /// The store's folder on the backup server (default: the store's name).
    pub server_dir: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// What a store may know of the configuration beyond its own block.
#[derive(Debug, Clone)]
pub struct StoreContext {
    /// The configuration file, for error messages.
    pub config_file: PathBuf,
    /// Where large temporary files go (restores, influxd's backup folder); None: the system's.
    pub work_dir: Option<PathBuf>,
    /// Where the backup server is, for a store whose own tool writes there (pgBackRest's
    /// repository).
    pub server: crate::server::Location,
}

impl StoreContext {
    /// A configuration error naming the file (exit code 2).
    pub fn invalid(&self, message: impl Into<String>) -> crate::Error {
        crate::Error::Config { file: self.config_file.clone(), message: message.into() }
    }

    /// A private (0700) temporary folder under `work_dir`, removed when dropped.
    pub fn private_dir(&self, prefix: &str) -> crate::Result<tempfile::TempDir> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        match &self.work_dir {
            Some(dir) => builder.tempdir_in(dir),
            None => builder.tempdir(),
        }
        .map_err(|e| crate::Error::io("creating a private work folder (set work_dir to a folder with room)", e))
    }
}

/// Bytes free for an unprivileged writer on the filesystem holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed statvfs we own.
    (unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod free_space_tests {
    #[test]
    fn free_bytes_reads_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(super::free_bytes(&dir.path().join("missing")), None);
    }
}
