//! `file:///path`: a local folder or an NFS mount as the backup server.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{BackupServer, DirEntry, FreeSpace, ListPage, page_of};
use crate::error::{Error, Result};

pub struct LocalServer {
    root: PathBuf,
}

impl LocalServer {
    pub fn open(root: &Path) -> Result<LocalServer> {
        if !root.is_absolute() {
            return Err(Error::Usage(format!("server.url file://{} must name an absolute path (file:///...)", root.display())));
        }
        let root = root.to_path_buf();
        std::fs::create_dir_all(&root).map_err(|e| Error::Server {
            server: format!("file://{}", root.display()),
            message: format!("cannot create the backup folder: {e}; check the mount and permissions"),
        })?;
        Ok(LocalServer { root })
    }

    fn path(&self, rel: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() { self.root.clone() } else { self.root.join(rel) }
    }

    /// Opens `p` as a new file (exclusive create), making its missing parent folders.
    async fn create_new(&self, p: &Path) -> std::io::Result<tokio::fs::File> {
        let open = || async { tokio::fs::OpenOptions::new().write(true).create_new(true).open(p).await };
        match open().await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = p.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                open().await
            }
            other => other,
        }
    }

    fn fail(&self, what: &str, path: &Path, e: std::io::Error) -> Error {
        self.error(format!("{what} {}: {e}", path.display()))
    }
}

#[async_trait]
impl BackupServer for LocalServer {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn create(&self, path: &str) -> Result<Box<dyn AsyncWrite + Send + Unpin>> {
        let p = self.path(path);
        let file = self.create_new(&p).await.map_err(|e| self.fail("cannot create", &p, e))?;
        Ok(Box::new(file))
    }

    async fn open(&self, path: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let p = self.path(path);
        let file = tokio::fs::File::open(&p).await.map_err(|e| self.fail("cannot open", &p, e))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(256 * 1024, file)))
    }

    async fn list_page(&self, prefix: &str, after: Option<&str>) -> Result<ListPage> {
        let p = self.path(prefix);
        let mut dir = match tokio::fs::read_dir(&p).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ListPage::default()),
            Err(e) => return Err(self.fail("cannot list", &p, e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = dir.next_entry().await.map_err(|e| self.fail("cannot list", &p, e))? {
            let meta = match entry.metadata().await {
                Ok(meta) => meta,
                // Removed between the listing and the stat (a failed run's folder being cleaned
                // up by another job): it is gone, as a listing a moment later would show.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.fail("cannot stat", &entry.path(), e)),
            };
            let is_dir = meta.is_dir();
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir,
                size: if is_dir { 0 } else { meta.len() },
            });
        }
        Ok(page_of(out, after))
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.path(path)).await {
            Ok(meta) if meta.is_dir() => Ok(None),
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail("cannot stat", &self.path(path), e)),
        }
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let p = self.path(path);
        match tokio::fs::remove_file(&p).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.fail("cannot remove", &p, e)),
            _ => Ok(()),
        }
    }

    async fn remove_empty_prefix(&self, prefix: &str) -> Result<()> {
        let p = self.path(prefix);
        match tokio::fs::remove_dir(&p).await {
            // Gone already, or holding something put there meanwhile: both are fine.
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty) => {
                Err(self.fail("cannot remove folder", &p, e))
            }
            _ => Ok(()),
        }
    }

    async fn make_durable(&self, path: &str) -> Result<()> {
        let p = self.path(path);
        let file = std::fs::File::open(&p).map_err(|e| self.fail("cannot open", &p, e))?;
        file.sync_all().map_err(|e| self.fail("cannot sync", &p, e))?;
        // The file's name in its folder too.
        if let Some(dir) = p.parent().and_then(|parent| std::fs::File::open(parent).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    async fn free_space(&self) -> Result<Option<FreeSpace>> {
        use std::os::unix::ffi::OsStrExt;
        let path =
            std::ffi::CString::new(self.root.as_os_str().as_bytes()).map_err(|_| self.error("the folder path holds a NUL byte".into()))?;
        // SAFETY: statvfs only writes into the zeroed struct we own; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(self.fail("cannot read the free space of", &self.root, std::io::Error::last_os_error()));
        }
        let frsize = st.f_frsize as u64;
        Ok(Some(FreeSpace {
            available_bytes: (st.f_bavail as u64).saturating_mul(frsize),
            total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        }))
    }
}
