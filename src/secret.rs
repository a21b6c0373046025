//! Secrets live in files (Kubernetes mounts them); Lifeboat holds only their paths, reads them
//! late, and never prints their contents.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_trimmed_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "  hunter2\n").unwrap();
        let secret = SecretFile::new("passphrase", &path);
        assert_eq!(secret.read().unwrap(), "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        std::fs::write(&path, "\n").unwrap();
        assert!(secret.read().unwrap_err().to_string().contains("empty"));
        let missing = SecretFile::new("passphrase", &dir.path().join("nope"));
        assert_eq!(missing.read().unwrap_err().exit_code(), 2);
    }
}
