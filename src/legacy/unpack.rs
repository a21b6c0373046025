//! A backup of the original scripts read whole into a private folder before anything is done
//! with it: downloaded, decrypted (`openssl enc`), gunzipped and untarred as one stream. Its
//! format has no checksum and no MAC, so reading every byte to the end is the only check there
//! is: a wrong passphrase, a cut-short file or a damaged one fails here, with one line, before a
//! restore touches its target.
//!
//! The archive is untrusted (`tar czf - -C DIR .` of the scripts): only folders and regular files
//! are taken, every path made of plain names (no `..`, no absolute path, no link of any kind), each
//! file once, created new with mode 0600, and no more bytes in all than `limit`. Nothing is ever
//! written outside the folder.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::LegacyRun;
use super::openssl_enc::OpensslDecrypt;
use crate::error::{Error, Result};
use crate::layout::check_file_name;
use crate::pipeline::bridge;
use crate::server::BackupServer;

/// One file of an unpacked archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedFile {
    /// Its path inside the archive, `/`-separated, without the leading `./`.
    pub name: String,
    pub size: u64,
}

fn refused(archive: &str, what: String) -> Error {
    Error::Integrity(format!("{archive} {what}: it is damaged or tampered with; nothing was changed"))
}

/// Downloads `run` and unpacks it whole into `dir`, decrypting with `passphrase`; at most
/// `limit` plain bytes. Returns its files, in archive order.
pub async fn fetch_and_unpack(
    server: &dyn BackupServer,
    run: &LegacyRun,
    passphrase: String,
    dir: &Path,
    limit: u64,
) -> Result<Vec<UnpackedFile>> {
    let source = server.open(&run.path).await?;
    let (reader, pump) = bridge::to_blocking(source, Arc::new(AtomicU64::new(0)));
    let (label, dir) = (format!("{}/{}", server.describe(), run.path), dir.to_path_buf());
    let unpacked = tokio::task::spawn_blocking(move || -> Result<Vec<UnpackedFile>> {
        let plain = OpensslDecrypt::new(reader, passphrase.as_bytes()).map_err(|e| refused(&label, format!("cannot be read ({e})")))?;
        unpack(Box::new(flate2::read::GzDecoder::new(plain)), &dir, &label, limit)
    })
    .await
    .map_err(|e| Error::io("unpacking thread", io::Error::other(e.to_string())))?;
    // The download's own failure (a lost connection) is the cause of whatever the reader saw.
    match pump.await {
        Ok(Err(e)) => Err(server.error(format!("downloading {}: {e}", run.path))),
        _ => unpacked,
    }
}

/// Unpacks the tar stream `reader` of `archive` into `dir`, within `limit` bytes.
pub fn unpack(reader: Box<dyn Read + Send>, dir: &Path, archive: &str, limit: u64) -> Result<Vec<UnpackedFile>> {
    let unreadable = |e: io::Error| refused(archive, format!("cannot be read to its end ({e}; a wrong passphrase shows so too)"));
    let mut tar = tar::Archive::new(reader);
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let path = entry.path().map_err(unreadable)?.into_owned();
        let label = path.display().to_string().escape_debug().to_string();
        let Some(relative) = plain_path(&path) else {
            return Err(refused(archive, format!("holds `{label}`, which is not a path of plain names inside it")));
        };
        let kind = entry.header().entry_type();
        let target = dir.join(&relative);
        if relative.as_os_str().is_empty() && !kind.is_dir() {
            return Err(refused(archive, format!("holds `{label}`, which is not a path of plain names inside it")));
        }
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
            continue;
        }
        if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
            return Err(refused(archive, format!("holds `{label}`, which is not a regular file or a folder")));
        }
        total = total.saturating_add(entry.size());
        if total > limit {
            return Err(refused(archive, format!("holds more than {limit} bytes (at `{label}`): more than there is room for")));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&target).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                refused(archive, format!("holds `{label}` twice"))
            } else {
                Error::io(format!("writing {}", target.display()), e)
            }
        })?;
        let copied = io::copy(&mut entry, &mut file).map_err(unreadable)?;
        if copied != entry.size() {
            return Err(unreadable(io::Error::new(io::ErrorKind::UnexpectedEof, format!("`{label}` is cut short"))));
        }
        let name = relative.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/");
        files.push(UnpackedFile { name, size: copied });
    }
    // Read to the end: gzip's own checksum and length are at the very end, and the padding of
    // the encryption after them.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(unreadable)?;
    Ok(files)
}

/// `path` as plain names only (a leading `./` dropped), or None.
fn plain_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(name) => {
                check_file_name(name.to_str()?).ok()?;
                out.push(name);
            }
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_taken() {
        assert_eq!(plain_path(Path::new("./events.dump")), Some(PathBuf::from("events.dump")));
        assert_eq!(plain_path(Path::new("./bucket/a/b.txt")), Some(PathBuf::from("bucket/a/b.txt")));
        assert_eq!(plain_path(Path::new(".")), Some(PathBuf::new()));
        for bad in ["../x", "./a/../../x", "/etc/passwd", "a/./../b"] {
            assert_eq!(plain_path(Path::new(bad)), None, "{bad}");
        }
    }
}
