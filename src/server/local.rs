//! `file:///path`: a local folder or an NFS mount as the backup server.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{BackupServer, DirEntry, FreeSpace};
use crate::error::{Error, Result};

pub struct LocalServer {
    root: PathBuf,
}

impl LocalServer {
    pub fn open(path: &str) -> Result<LocalServer> {
        let root = PathBuf::from(path);
        if !root.is_absolute() {
            return Err(Error::Usage(format!("server.url file://{path} must name an absolute path (file:///...)")));
        }
        std::fs::create_dir_all(&root).map_err(|e| Error::Server {
            server: format!("file://{path}"),
            message: format!("cannot create the backup folder: {e}; check the mount and permissions"),
        })?;
        Ok(LocalServer { root })
    }

    fn path(&self, rel: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() { self.root.clone() } else { self.root.join(rel) }
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

    async fn create_dir(&self, path: &str) -> Result<bool> {
        let p = self.path(path);
        match tokio::fs::create_dir(&p).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.fail("cannot create folder", &p, e)),
        }
    }

    async fn create(&self, path: &str) -> Result<Box<dyn AsyncWrite + Send + Unpin>> {
        let p = self.path(path);
        let file =
            tokio::fs::OpenOptions::new().write(true).create_new(true).open(&p).await.map_err(|e| self.fail("cannot create", &p, e))?;
        Ok(Box::new(file))
    }

    async fn open(&self, path: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let p = self.path(path);
        let file = tokio::fs::File::open(&p).await.map_err(|e| self.fail("cannot open", &p, e))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(256 * 1024, file)))
    }

    async fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let p = self.path(path);
        let mut dir = match tokio::fs::read_dir(&p).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
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
            out.push(DirEntry { name: entry.file_name().to_string_lossy().into_owned(), is_dir: meta.is_dir(), size: meta.len() });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn exists(&self, path: &str) -> Result<bool> {
        Ok(tokio::fs::try_exists(self.path(path)).await.unwrap_or(false))
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

    async fn remove_file(&self, path: &str) -> Result<()> {
        let p = self.path(path);
        tokio::fs::remove_file(&p).await.map_err(|e| self.fail("cannot remove", &p, e))
    }

    async fn remove_empty_dir(&self, path: &str) -> Result<()> {
        let p = self.path(path);
        tokio::fs::remove_dir(&p).await.map_err(|e| self.fail("cannot remove folder", &p, e))
    }
}
