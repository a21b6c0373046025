//! The backup server: where stored files go. One small trait, two implementations: `ssh://` over
//! SFTP with host key verification ([`ssh::SshServer`]) and `file://` for a local or NFS folder
//! ([`local::LocalServer`]). Paths are relative to the server's root, with `/` separators.

pub mod local;
mod sftp_upload;
pub mod ssh;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::ServerConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// Space on the file system holding the server's root, where the server tells it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FreeSpace {
    /// Bytes this user may still write.
    pub available_bytes: u64,
    pub total_bytes: u64,
}

#[async_trait]
pub trait BackupServer: Send + Sync {
    /// A short description for messages, e.g. `ssh://backup@host:22/path`.
    fn describe(&self) -> String;

    /// Creates one directory (parents must exist). Returns false if it already existed, which
    /// makes it usable as an atomic claim of a run folder.
    async fn create_dir(&self, path: &str) -> Result<bool>;

    /// Opens a new file for writing; fails if a file of that name exists (nothing stored is
    /// ever replaced).
    async fn create(&self, path: &str) -> Result<Box<dyn AsyncWrite + Send + Unpin>>;

    /// Opens a file for reading.
    async fn open(&self, path: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>>;

    /// Lists a directory; a missing directory lists as empty.
    async fn list(&self, path: &str) -> Result<Vec<DirEntry>>;

    /// Whether a file or directory exists.
    async fn exists(&self, path: &str) -> Result<bool>;

    /// Makes a written file's content durable before anything that refers to it is written
    /// (a manifest). Where the server offers no such call, a no-op.
    async fn make_durable(&self, _path: &str) -> Result<()> {
        Ok(())
    }

    async fn remove_file(&self, path: &str) -> Result<()>;

    /// Space left on the file system of the root; None where the server cannot tell (an SFTP
    /// server without the `statvfs@openssh.com` extension).
    async fn free_space(&self) -> Result<Option<FreeSpace>> {
        Ok(None)
    }

    async fn remove_empty_dir(&self, path: &str) -> Result<()>;

    /// Removes a directory and everything under it.
    async fn remove_dir_all(&self, path: &str) -> Result<()> {
        for entry in self.list(path).await? {
            let child = join(path, &entry.name);
            if entry.is_dir {
                Box::pin(self.remove_dir_all(&child)).await?;
            } else {
                self.remove_file(&child).await?;
            }
        }
        self.remove_empty_dir(path).await
    }

    /// Creates every missing directory along `path`.
    async fn create_dir_all(&self, path: &str) -> Result<()> {
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            current = join(&current, part);
            if !self.exists(&current).await? {
                self.create_dir(&current).await?;
            }
        }
        Ok(())
    }

    /// Reads a whole small file (manifests), refusing one larger than `max` bytes.
    async fn read_small(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        // Bounded whatever the listing said: the server may grow the file after it was listed.
        let mut reader = self.open(path).await?.take(max + 1);
        let mut buf = Vec::new();
        reader.read_to_end(&mut buf).await.map_err(|e| self.error(format!("reading {path}: {e}")))?;
        if buf.len() as u64 > max {
            return Err(Error::Integrity(format!("{path} on {} is larger than {max} bytes: it is damaged", self.describe())));
        }
        Ok(buf)
    }

    /// Writes a small new file (a manifest) in one piece.
    async fn write_new(&self, path: &str, data: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut w = self.create(path).await?;
        w.write_all(data).await.map_err(|e| self.error(format!("writing {path}: {e}")))?;
        w.shutdown().await.map_err(|e| self.error(format!("writing {path}: {e}")))
    }

    /// Explains a failed upload of `path` (the connection lost, the disk full, ...).
    async fn upload_failed(&self, path: &str, e: std::io::Error) -> Error {
        self.error(format!("writing {path}: {e}"))
    }

    fn error(&self, message: String) -> Error {
        Error::Server { server: self.describe(), message }
    }
}

/// Joins two relative server paths.
pub fn join(a: &str, b: &str) -> String {
    if a.is_empty() { b.to_string() } else { format!("{}/{}", a.trim_end_matches('/'), b) }
}

/// Connects to the server the configuration names.
pub async fn connect(config: &ServerConfig) -> Result<Box<dyn BackupServer>> {
    let url = &config.url;
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Box::new(local::LocalServer::open(path)?));
    }
    if url.starts_with("ssh://") {
        return Ok(Box::new(ssh::SshServer::connect(config).await?));
    }
    Err(Error::Usage(format!("server.url `{url}` must start with ssh:// or file://")))
}
