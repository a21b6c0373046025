//! The archive's wire format, a POSIX pax tar: the writer (pax records, ustar headers, padding
//! to 512-byte blocks) and the reader that turns an archive back into [`Piece`]s on a blocking
//! thread.

use std::collections::BTreeMap;
use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{ARCHIVE_FILE, BucketSettings, err};
use crate::error::{Error, Result};
use crate::pipeline::bridge::PipeWriter;

/// First entry of the archive; bucket names cannot start with `_`.
pub const HEADER_ENTRY: &str = "_lifeboat-minio.json";
pub(super) const ARCHIVE_FORMAT: u32 = 1;
pub(super) const PAX_PREFIX: &str = "LIFEBOAT.";
pub(super) const META_PREFIX: &str = "LIFEBOAT.meta.";
/// Standard object headers kept besides user metadata (pax keys `LIFEBOAT.<name>`).
pub(super) const HEADER_FIELDS: [&str; 5] =
    ["content-type", "cache-control", "content-disposition", "content-encoding", "content-language"];
/// Decoded bytes per message from the archive reader thread.
const READ_CHUNK: usize = 1 << 20;

/// The archive's first entry.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ArchiveHeader {
    pub(super) format: u32,
    pub(super) buckets: BTreeMap<String, BucketSettings>,
}

/// One object as described by its pax header.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct ObjectMeta {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) size: u64,
    /// `content-type` and the other [`HEADER_FIELDS`], when set.
    pub(super) headers: BTreeMap<String, String>,
    pub(super) metadata: BTreeMap<String, String>,
}

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Tar writing

/// Why the archive writer stopped.
pub(super) enum Stop {
    /// The pipeline stopped reading (its own error is the one to report).
    ConsumerGone,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

/// A write into the pipe failed: `BrokenPipe` means the pipeline stopped reading.
fn not_sent(e: io::Error) -> Stop {
    if e.kind() == io::ErrorKind::BrokenPipe { Stop::ConsumerGone } else { Stop::Failed(err(format!("writing {ARCHIVE_FILE}: {e}"))) }
}

/// Tar bytes out to the pipeline, through the bridge's pipe.
pub(super) struct TarWriter {
    out: PipeWriter,
    written: u64,
}

impl TarWriter {
    pub(super) fn new(out: PipeWriter) -> Self {
        TarWriter { out, written: 0 }
    }

    pub(super) async fn write(&mut self, data: &[u8]) -> Result<(), Stop> {
        self.written += data.len() as u64;
        self.out.write_async(data).await.map_err(not_sent)
    }

    /// Ends the stream after `result`: cleanly only on success. On failure the pipeline must see
    /// a failed stream, never a clean (truncated) end.
    pub(super) async fn close<T>(self, result: Result<T, Stop>) -> Result<T, Stop> {
        match result {
            Ok(value) => {
                self.out.finish_async().await.map_err(not_sent)?;
                Ok(value)
            }
            Err(Stop::Failed(e)) => {
                self.out.fail_async(io::Error::other(e.to_string())).await;
                Err(Stop::Failed(e))
            }
            Err(Stop::ConsumerGone) => Err(Stop::ConsumerGone),
        }
    }

    /// Zero bytes up to the next 512-byte block.
    pub(super) async fn pad(&mut self) -> Result<(), Stop> {
        let rem = (self.written % 512) as usize;
        if rem != 0 {
            self.write(&[0u8; 512][..512 - rem]).await?;
        }
        Ok(())
    }

    /// A pax extended header (the exact path plus `records`), then the ustar header.
    pub(super) async fn entry(
        &mut self,
        path: &str,
        records: &[(&str, &[u8])],
        kind: tar::EntryType,
        size: u64,
        mtime: u64,
    ) -> Result<(), Stop> {
        let pax = pax_block(path, records, size);
        self.write(&ustar_header("././@PaxHeader", tar::EntryType::XHeader, pax.len() as u64, mtime).as_bytes()[..]).await?;
        self.write(&pax).await?;
        self.pad().await?;
        self.write(&ustar_header(path, kind, size, mtime).as_bytes()[..]).await
    }
}

/// Pax records: `path`, `size` when the ustar field cannot hold it, then `records`.
fn pax_block(path: &str, records: &[(&str, &[u8])], size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    pax_record(&mut out, "path", path.as_bytes());
    if size >= 0o77777777777 {
        pax_record(&mut out, "size", size.to_string().as_bytes());
    }
    for (k, v) in records {
        pax_record(&mut out, k, v);
    }
    out
}

/// One `"<len> <key>=<value>\n"` record; `len` counts the whole record, its own digits included.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + rest.to_string().len();
    if len.to_string().len() + rest != len {
        len += 1;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A ustar header; the name field holds a truncated path (the pax `path` record is the real one).
fn ustar_header(path: &str, kind: tar::EntryType, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let name = path.as_bytes();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

// ---------------------------------------------------------------------------------------------
// Tar reading (restore): a blocking thread decodes, the async side uploads. The archive comes
// from the backup server and is not trusted: every name and size is checked before it is used.

/// Largest pax header read: far above what Lifeboat writes (a path, a bucket, a key, five
/// standard headers and user metadata, which S3 caps at 2 KiB).
const MAX_PAX: u64 = 1 << 20;
/// Largest archive header read (bucket names, policies and versioning).
const MAX_HEADER: u64 = 16 << 20;
/// The largest object S3 stores (5 TiB).
pub(super) const MAX_OBJECT: u64 = 5 << 40;
/// S3's longest object key, in bytes.
const MAX_KEY: usize = 1024;
/// Bytes reserved ahead for an object body; more grows only as data really arrives.
const PREALLOC: u64 = 16 << 20;

#[derive(Debug)]
pub(super) enum Piece {
    Header(ArchiveHeader),
    Bucket(String),
    Object(ObjectMeta),
    Data(Bytes),
}

/// The archive reader thread's messages.
pub(super) struct Pieces {
    pub(super) rx: mpsc::Receiver<Result<Piece>>,
}

impl Pieces {
    pub(super) async fn next(&mut self) -> Result<Option<Piece>> {
        self.rx.recv().await.transpose()
    }

    /// Exactly `len` bytes of the current object's body, gathered from data pieces.
    pub(super) async fn take_bytes(&mut self, meta: &ObjectMeta, len: u64) -> Result<Bytes> {
        let mut body = BytesMut::with_capacity(len.min(PREALLOC) as usize);
        while (body.len() as u64) < len {
            match self.next().await? {
                Some(Piece::Data(chunk)) => body.extend_from_slice(&chunk),
                _ => {
                    return Err(err(format!("the archive ends inside object {}/{}: the backup is damaged", meta.bucket, meta.key)));
                }
            }
        }
        Ok(body.freeze())
    }
}

/// Whether `name` is a valid S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens,
/// starting and ending with a letter or digit, no two dots in a row.
pub(super) fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// What an entry type is called in messages.
fn kind_name(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink => "a symbolic link".into(),
        tar::EntryType::Link => "a hard link".into(),
        tar::EntryType::Char | tar::EntryType::Block => "a device".into(),
        tar::EntryType::Fifo => "a FIFO".into(),
        other => format!("of tar type `{}`", (other.as_byte() as char).escape_debug()),
    }
}

/// Why reading stopped: `None` when the consumer went away (its own error is the one to report).
type Refusal = Option<Error>;

fn refuse(message: String) -> Refusal {
    Some(err(format!("{ARCHIVE_FILE} {message}; the backup is damaged or tampered with; nothing more was read")))
}

/// Decodes the archive on the calling (blocking) thread and hands each piece to `send`, which
/// answers false when it wants no more. Only what Lifeboat writes passes: the header first (its
/// format version checked before anything else in it), then bucket directories and objects of
/// the header's buckets, each described by one pax header.
pub(super) fn read_archive(reader: Box<dyn Read + Send>, send: &mut dyn FnMut(Piece) -> bool) -> Result<(), Refusal> {
    let mut send = |piece: Piece| if send(piece) { Ok(()) } else { Err(None) };
    let damaged = |e: io::Error| Some(err(format!("reading {ARCHIVE_FILE}: {e}")));
    let foreign = |e: io::Error| Some(err(format!("{ARCHIVE_FILE} is not a Lifeboat MinIO archive ({e}); nothing was changed")));
    let mut archive = tar::Archive::new(reader);
    // Raw entries: the tar crate would read pax and long-name entries whole, at any size.
    let entries = archive.entries().map_err(foreign)?.raw(true);
    let mut buckets: Option<BTreeMap<String, BucketSettings>> = None;
    let mut pax: Option<BTreeMap<String, String>> = None;
    for entry in entries {
        let mut entry = entry.map_err(if buckets.is_none() { foreign } else { damaged })?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XHeader {
            if pax.is_some() || entry.size() > MAX_PAX {
                return Err(refuse(format!("holds a pax header of {} bytes that Lifeboat did not write", entry.size())));
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut data).map_err(damaged)?;
            pax = Some(pax_records(&data, entry.size()).map_err(refuse)?);
            continue;
        }
        let records = pax.take().unwrap_or_default();
        let path = match records.get("path") {
            Some(p) => p.clone(),
            None => String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
        };
        let label = path.escape_debug().to_string();
        if records.get("size").is_some_and(|s| s.parse::<u64>().ok() != Some(entry.size())) {
            return Err(refuse(format!("gives entry `{label}` two different sizes")));
        }
        let Some(known) = &buckets else {
            if path != HEADER_ENTRY || kind != tar::EntryType::Regular || entry.size() > MAX_HEADER {
                return Err(Some(err(format!(
                    "{ARCHIVE_FILE} does not start with {HEADER_ENTRY}: it is not a Lifeboat MinIO archive; nothing was changed"
                ))));
            }
            let header = read_header(&mut entry)?;
            buckets = Some(header.buckets.clone());
            send(Piece::Header(header))?;
            continue;
        };
        let bucket = records.get("LIFEBOAT.bucket");
        if let Some(b) = bucket.filter(|b| !known.contains_key(*b)) {
            return Err(refuse(format!("holds bucket `{}` (entry `{label}`), which its header does not list", b.escape_debug())));
        }
        // The path is what `tar -x` would write: it must name the same bucket and key.
        let key = records.get("LIFEBOAT.key");
        if bucket.is_some_and(|b| path != format!("{b}/{}", key.map_or("", |k| k.as_str()))) {
            return Err(refuse(format!("holds entry `{label}`, whose path is not its bucket and key")));
        }
        match (bucket, key) {
            (Some(bucket), None) if kind == tar::EntryType::Directory && entry.size() == 0 => send(Piece::Bucket(bucket.clone()))?,
            (Some(_), Some(key)) if matches!(kind, tar::EntryType::Regular | tar::EntryType::Directory) => {
                if key.is_empty() || key.len() > MAX_KEY || key.contains('\0') {
                    return Err(refuse(format!("holds object key `{}` (empty, over {MAX_KEY} bytes or with a NUL)", key.escape_debug())));
                }
                if entry.size() > MAX_OBJECT || (kind == tar::EntryType::Directory && entry.size() != 0) {
                    return Err(refuse(format!("gives object `{label}` a size of {} bytes, which S3 cannot hold", entry.size())));
                }
                let meta = object_meta(&records, entry.size());
                send_object(&mut entry, meta, &mut send)?;
            }
            _ => {
                return Err(refuse(format!("holds an entry Lifeboat did not write (`{label}`, {})", kind_name(kind))));
            }
        }
    }
    if pax.is_some() {
        return Err(refuse("ends with a pax header that describes no entry".into()));
    }
    if buckets.is_none() {
        return Err(Some(err(format!("{ARCHIVE_FILE} is empty: it is not a Lifeboat MinIO archive; nothing was changed"))));
    }
    Ok(())
}

/// The archive header: its format version is read first, so that a newer archive is named as
/// such rather than as unreadable.
fn read_header<R: Read>(entry: &mut R) -> Result<ArchiveHeader, Refusal> {
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let mut text = Vec::new();
    entry.read_to_end(&mut text).map_err(|e| Some(err(format!("reading {ARCHIVE_FILE}: {e}"))))?;
    let unreadable = |e: serde_json::Error| Some(err(format!("{HEADER_ENTRY} in {ARCHIVE_FILE} is unreadable ({e}); nothing was changed")));
    let version: Version = serde_json::from_slice(&text).map_err(unreadable)?;
    if version.format != ARCHIVE_FORMAT {
        return Err(Some(err(format!(
            "{ARCHIVE_FILE} has archive format {}, this Lifeboat reads format {ARCHIVE_FORMAT}: restore it with the Lifeboat version that wrote it; nothing was changed",
            version.format
        ))));
    }
    let header: ArchiveHeader = serde_json::from_slice(&text).map_err(unreadable)?;
    if let Some(bad) = header.buckets.keys().find(|b| !valid_bucket_name(b)) {
        return Err(refuse(format!("lists bucket `{}`, which is not a valid S3 bucket name", bad.escape_debug())));
    }
    Ok(header)
}

/// Sends an object's description, then its body in chunks.
fn send_object<R: Read>(entry: &mut R, meta: ObjectMeta, send: &mut dyn FnMut(Piece) -> Result<(), Refusal>) -> Result<(), Refusal> {
    let mut remaining = meta.size;
    let label = format!("{}/{}", meta.bucket, meta.key);
    send(Piece::Object(meta))?;
    while remaining > 0 {
        let mut chunk = vec![0u8; remaining.min(READ_CHUNK as u64) as usize];
        entry
            .read_exact(&mut chunk)
            .map_err(|e| Some(err(format!("reading object {label} from {ARCHIVE_FILE}: {e}; the backup is damaged"))))?;
        remaining -= chunk.len() as u64;
        send(Piece::Data(Bytes::from(chunk)))?;
    }
    Ok(())
}

/// The records of a pax header Lifeboat reads: `path`, `size` and the `LIFEBOAT.*` ones.
fn pax_records(data: &[u8], size: u64) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for ext in tar::PaxExtensions::new(data) {
        let bad = |what: &str| format!("holds a pax header ({size} bytes) with {what}");
        let ext = ext.map_err(|_| bad("a malformed record"))?;
        let key = ext.key().map_err(|_| bad("a key that is not UTF-8"))?;
        if key.starts_with(PAX_PREFIX) || key == "path" || key == "size" {
            let value = ext.value().map_err(|_| bad(&format!("a value of {key} that is not UTF-8")))?;
            map.insert(key.to_string(), value.to_string());
        }
    }
    Ok(map)
}

fn object_meta(pax: &BTreeMap<String, String>, size: u64) -> ObjectMeta {
    let mut meta = ObjectMeta { bucket: pax["LIFEBOAT.bucket"].clone(), key: pax["LIFEBOAT.key"].clone(), size, ..Default::default() };
    for (k, v) in pax {
        if let Some(name) = k.strip_prefix(META_PREFIX) {
            meta.metadata.insert(name.to_string(), v.clone());
        } else if let Some(field) = k.strip_prefix(PAX_PREFIX).filter(|f| HEADER_FIELDS.contains(f)) {
            meta.headers.insert(field.to_string(), v.clone());
        }
    }
    meta
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
