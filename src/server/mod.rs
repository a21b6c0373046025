//! The backup server: where stored files go. One small trait, [`BackupServer`], stated in what
//! every kind of server can promise, so that a folder tree (`ssh://` over SFTP,
//! [`ssh::SshServer`]; `file://`, [`local::LocalServer`]) and an object store (`s3://`,
//! [`s3::S3Server`]) fit it alike.
//! `tests/server.rs` checks the contract for every kind.
//!
//! The server module owns the `server:` settings block ([`ServerConfig`]) and what it means
//! ([`Location`]), so that a store whose own tool writes to the server (pgBackRest) asks here
//! where that is instead of reading the URL itself.

pub mod local;
pub mod s3;
mod s3_upload;
mod sftp_upload;
pub mod ssh;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};

/// `server:` of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `ssh://user@host:port/path`, `s3://bucket/prefix` or `file:///path`.
    pub url: String,
    /// How long a server may stay silent (connecting, or mid-transfer) before the job fails
    /// instead of hanging, e.g. `60s`, `5m`. Default 60s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// The keys an `ssh://` server needs.
    #[serde(flatten)]
    pub ssh: ssh::SshSettings,
    /// The keys an `s3://` server needs.
    #[serde(flatten)]
    pub s3: s3::S3Settings,
}

impl ServerConfig {
    /// A `file://` server at `path` (tests, tools).
    pub fn folder(path: &std::path::Path) -> ServerConfig {
        ServerConfig { url: format!("file://{}", path.display()), timeout: None, ssh: Default::default(), s3: Default::default() }
    }

    /// [`ServerConfig::timeout`], checked by [`ServerConfig::check`].
    pub fn timeout(&self) -> Duration {
        self.timeout.as_deref().and_then(|t| crate::units::parse_duration(t).ok()).unwrap_or(Duration::from_secs(60))
    }

    /// The block's own rules, without network; the message names the key and the fix.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(t) = &self.timeout {
            match crate::units::parse_duration(t) {
                Ok(d) if d.as_secs() >= 2 => {}
                Ok(_) => return Err("server.timeout must be at least 2s".into()),
                Err(e) => return Err(format!("server.timeout {e}")),
            }
        }
        self.location().map(|_| ())
    }

    /// Where the server is and how it is reached, read from `url` and the keys its kind needs.
    pub fn location(&self) -> std::result::Result<Location, String> {
        let url = &self.url;
        if !url.starts_with("s3://")
            && let Some(key) = self.s3.set_keys().first()
        {
            return Err(format!("server.{key} is only for an s3:// server; remove it or use an s3:// url"));
        }
        if url.starts_with("s3://") {
            return self.s3.location(url).map(Location::S3);
        }
        if let Some(path) = url.strip_prefix("file://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("server.url {url} must name an absolute path (file:///...)"));
            }
            return Ok(Location::Folder { path });
        }
        if url.starts_with("ssh://") {
            return self.ssh.location(url).map(Location::Sftp);
        }
        Err(format!("server.url must start with ssh://, s3:// or file://, not `{url}`"))
    }
}

/// Where the backup server is: what a tool of a store's own (pgBackRest) needs to reach the same
/// place. Adding a kind of server adds a variant, and every tool that writes there must say how
/// it reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `file:///path`: a local folder or a mount.
    Folder { path: PathBuf },
    /// `ssh://user@host:port/path`.
    Sftp(ssh::SftpLocation),
    /// `s3://bucket/prefix` on an S3-compatible object store.
    S3(s3::S3Location),
}

impl Location {
    /// The root folder on the server, absolute.
    pub fn root(&self) -> String {
        match self {
            Location::Folder { path } => path.display().to_string(),
            Location::Sftp(s) => s.path.clone(),
            Location::S3(s) => format!("/{}", s.prefix),
        }
    }
}

/// One entry directly under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    /// A prefix with objects under it (a folder), rather than an object.
    pub is_dir: bool,
    /// An object's size in bytes; 0 for a prefix.
    pub size: u64,
}

/// One page of a listing ([`BackupServer::list_page`]).
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub entries: Vec<DirEntry>,
    /// The name to list after for the next page; None on the last page.
    pub next: Option<String>,
}

/// Entries per page of a folder server's listing (an object store answers 1,000 at most too).
pub const PAGE: usize = 1000;

/// Space on the file system holding the server's root, where the server tells it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FreeSpace {
    /// Bytes this user may still write.
    pub available_bytes: u64,
    pub total_bytes: u64,
}

/// The contract every kind of backup server keeps (checked by `tests/server.rs` for each).
///
/// Paths are object names relative to the server's root, `/`-separated, never starting with
/// `/`. A *prefix* (`2026-11-24/postgres`) is what a folder is on a folder server: it exists
/// while an object lies under it. No kind is asked for rename, append or overwrite:
///
/// - **create-if-absent** ([`create_if_absent`](Self::create_if_absent)): a small object is
///   written only when no object of that name exists, atomically: of two jobs making the same
///   name at once exactly one succeeds. This is how a run is claimed and a lock taken (an object
///   store's conditional `PUT` with `If-None-Match: *`; `O_EXCL` in a folder).
/// - **write once** ([`create`](Self::create)): a new object is streamed in and is whole once
///   the writer is shut down; an existing name is refused and keeps its content.
/// - **read** ([`open`](Self::open)) a whole object as a stream; a missing one is an error that
///   names the server.
/// - **list a prefix** ([`list_page`](Self::list_page)): the objects and sub-prefixes directly
///   under it, by name, a page at a time; a missing prefix lists as empty.
/// - **stat** ([`stat`](Self::stat)) one object: its size, or None (a prefix is not an object).
/// - **delete** ([`delete`](Self::delete)) one object, where the server's key allows it (an
///   append-only key refuses all but lock files); deleting a missing object is not an error.
///
/// Parents are implied: writing `a/b/c` needs no folder made first.
#[async_trait]
pub trait BackupServer: Send + Sync {
    /// A short description for messages, e.g. `ssh://backup@host:22/path`.
    fn describe(&self) -> String;

    /// Writes `data` as the object `path` only if there is none of that name. Ok(true): written;
    /// Ok(false): it existed (and is untouched). A folder server has it from its exclusive
    /// [`create`](Self::create); an object store overrides it with its conditional write.
    async fn create_if_absent(&self, path: &str, data: &[u8]) -> Result<bool> {
        use tokio::io::AsyncWriteExt;
        let mut w = match self.create(path).await {
            Ok(w) => w,
            // Why the exclusive create failed is not told alike by every server (SFTP v3 has no
            // "already exists" status): look before deciding.
            Err(e) => return if self.stat(path).await?.is_some() { Ok(false) } else { Err(e) },
        };
        w.write_all(data).await.map_err(|e| self.error(format!("writing {path}: {e}")))?;
        w.shutdown().await.map_err(|e| self.error(format!("writing {path}: {e}")))?;
        Ok(true)
    }

    /// Opens a new object for writing; fails if an object of that name exists (nothing stored is
    /// ever replaced).
    async fn create(&self, path: &str) -> Result<Box<dyn AsyncWrite + Send + Unpin>>;

    /// Opens an object for reading.
    async fn open(&self, path: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>>;

    /// Up to [`PAGE`] entries directly under `prefix`, by name, after the name `after`.
    async fn list_page(&self, prefix: &str, after: Option<&str>) -> Result<ListPage>;

    /// One object's size, or None when there is no object of that name.
    async fn stat(&self, path: &str) -> Result<Option<u64>>;

    /// Removes one object; a missing one is not an error.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Where a prefix is a folder of its own: removes it once it holds nothing, and leaves it
    /// (without an error) when something was put there meanwhile. Object stores have nothing to
    /// remove.
    async fn remove_empty_prefix(&self, _prefix: &str) -> Result<()> {
        Ok(())
    }

    /// Makes a written object's content durable before anything that refers to it is written
    /// (a manifest). Where the server offers no such call, a no-op.
    async fn make_durable(&self, _path: &str) -> Result<()> {
        Ok(())
    }

    /// Space left on the file system of the root; None where the server cannot tell (an SFTP
    /// server without the `statvfs@openssh.com` extension, an object store).
    async fn free_space(&self) -> Result<Option<FreeSpace>> {
        Ok(None)
    }

    /// Every entry directly under `prefix`, by name (all pages).
    async fn list(&self, prefix: &str) -> Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_page(prefix, after.as_deref()).await?;
            entries.extend(page.entries);
            match page.next {
                // A server that answers the same page again would loop for ever.
                Some(next) if after.as_deref().is_none_or(|a| a < next.as_str()) => after = Some(next),
                Some(_) => return Err(self.error(format!("listing {prefix}: the server's pages do not advance"))),
                None => return Ok(entries),
            }
        }
    }

    /// Whether an object of that name exists.
    async fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.stat(path).await?.is_some())
    }

    /// Removes every object under `prefix` (and the prefix itself, where it is a folder).
    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        for entry in self.list(prefix).await? {
            let child = join(prefix, &entry.name);
            if entry.is_dir {
                Box::pin(self.delete_prefix(&child)).await?;
            } else {
                self.delete(&child).await?;
            }
        }
        self.remove_empty_prefix(prefix).await
    }

    /// Reads a whole small object (manifests), refusing one larger than `max` bytes.
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

    /// Writes a small new object (a manifest) in one piece; fails if it exists.
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

/// The page of `names` (sorted) after `after`, for servers that read a whole folder at once.
fn page_of(mut entries: Vec<DirEntry>, after: Option<&str>) -> ListPage {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let start = after.map_or(0, |after| entries.partition_point(|e| e.name.as_str() <= after));
    let mut page: Vec<DirEntry> = entries.drain(start..).collect();
    let next = (page.len() > PAGE).then(|| page[PAGE - 1].name.clone());
    page.truncate(PAGE);
    ListPage { entries: page, next }
}

/// Connects to the server the configuration names.
pub async fn connect(config: &ServerConfig) -> Result<Box<dyn BackupServer>> {
    match config.location().map_err(Error::Usage)? {
        Location::Folder { path } => Ok(Box::new(local::LocalServer::open(&path)?)),
        Location::Sftp(location) => Ok(Box::new(ssh::SshServer::connect(&location, config.timeout()).await?)),
        Location::S3(location) => Ok(Box::new(s3::S3Server::connect(&location, config.timeout()).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<DirEntry> {
        (0..n).rev().map(|i| DirEntry { name: format!("{i:05}"), is_dir: i % 2 == 0, size: i as u64 }).collect()
    }

    #[test]
    fn folder_listings_come_in_pages_in_name_order() {
        let first = page_of(entries(2 * PAGE + 3), None);
        assert_eq!((first.entries.len(), first.entries[0].name.as_str(), first.next.as_deref()), (PAGE, "00000", Some("00999")));
        let second = page_of(entries(2 * PAGE + 3), first.next.as_deref());
        assert_eq!((second.entries[0].name.as_str(), second.next.as_deref()), ("01000", Some("01999")));
        let last = page_of(entries(2 * PAGE + 3), second.next.as_deref());
        assert_eq!((last.entries.len(), last.next), (3, None));
        let exact = page_of(entries(PAGE), None);
        assert_eq!((exact.entries.len(), exact.next), (PAGE, None));
        assert!(page_of(Vec::new(), Some("x")).entries.is_empty());
    }
}
