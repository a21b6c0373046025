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
pub(super) const HEADER_FIELDS: [&str; 5] = ["content-type", "cache-control", "content-disposition", "content-encoding", "content-language"];
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
// Tar reading (restore): a blocking thread decodes, the async side uploads

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
        let mut body = BytesMut::with_capacity(len as usize);
        while (body.len() as u64) < len {
            match self.next().await? {
                Some(Piece::Data(chunk)) => body.extend_from_slice(&chunk),
                _ => return Err(err(format!("the archive ends inside object {}/{}: the backup is damaged", meta.bucket, meta.key))),
            }
        }
        Ok(body.freeze())
    }
}

/// Decodes the archive on the calling (blocking) thread and sends its pieces.
pub(super) fn read_archive(reader: Box<dyn Read + Send>, tx: &mpsc::Sender<Result<Piece>>) -> Result<(), Option<Error>> {
    let send = |piece: Piece| tx.blocking_send(Ok(piece)).map_err(|_| None);
    let damaged = |e: io::Error| Some(err(format!("reading {ARCHIVE_FILE}: {e}")));
    let foreign = |e: io::Error| {
        Some(err(format!("{ARCHIVE_FILE} is not a Lifeboat MinIO archive ({e}); nothing was changed")))
    };
    let mut archive = tar::Archive::new(reader);
    let mut first = true;
    for entry in archive.entries().map_err(foreign)? {
        let mut entry = entry.map_err(if first { foreign } else { damaged })?;
        let pax = pax_map(&mut entry).map_err(if first { foreign } else { damaged })?;
        let kind = entry.header().entry_type();
        if first {
            first = false;
            let path = entry.path_bytes().into_owned();
            if path != HEADER_ENTRY.as_bytes() || kind != tar::EntryType::Regular || entry.size() > 16 << 20 {
                return Err(Some(err(format!(
                    "{ARCHIVE_FILE} does not start with {HEADER_ENTRY}: it is not a Lifeboat MinIO archive; nothing was changed"
                ))));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(damaged)?;
            let header: ArchiveHeader = serde_json::from_slice(&text)
                .map_err(|e| Some(err(format!("{HEADER_ENTRY} in {ARCHIVE_FILE} is unreadable ({e}); nothing was changed"))))?;
            send(Piece::Header(header))?;
            continue;
        }
        match (pax.get("LIFEBOAT.bucket"), pax.get("LIFEBOAT.key")) {
            (Some(bucket), None) if kind == tar::EntryType::Directory => send(Piece::Bucket(bucket.clone()))?,
            (Some(_), Some(_)) if matches!(kind, tar::EntryType::Regular | tar::EntryType::Directory) => {
                let meta = object_meta(&pax, entry.size());
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
            }
            _ => {
                return Err(Some(err(format!(
                    "{ARCHIVE_FILE} holds an entry Lifeboat did not write ({}); the backup is damaged",
                    String::from_utf8_lossy(&entry.path_bytes())
                ))));
            }
        }
    }
    if first {
        return Err(Some(err(format!("{ARCHIVE_FILE} is empty: it is not a Lifeboat MinIO archive; nothing was changed"))));
    }
    Ok(())
}

/// The `LIFEBOAT.*` pax records of an entry.
fn pax_map<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let key = ext.key().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if key.starts_with(PAX_PREFIX) {
                let value = ext.value().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                map.insert(key.to_string(), value.to_string());
            }
        }
    }
    Ok(map)
}

fn object_meta(pax: &BTreeMap<String, String>, size: u64) -> ObjectMeta {
    let mut meta = ObjectMeta {
        bucket: pax["LIFEBOAT.bucket"].clone(),
        key: pax["LIFEBOAT.key"].clone(),
        size,
        ..Default::default()
    };
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
mod tests {
    use super::*;
    use crate::pipeline::bridge::pipe;
    use tokio::io::AsyncReadExt;

    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", b"a");
        assert_eq!(out, b"9 path=a\n");
        // Around 99→100 and 999→1000 the length's own digits change the length.
        for n in 0..1100 {
            let mut out = Vec::new();
            pax_record(&mut out, "LIFEBOAT.key", "k".repeat(n).as_bytes());
            let text = String::from_utf8(out.clone()).unwrap();
            assert_eq!(text.split_once(' ').unwrap().0.parse::<usize>().unwrap(), out.len(), "value length {n}");
        }
    }

    /// Builds an archive the way the backup does (headers and bodies) and reads it back.
    /// (bucket, key, body, extra pax records)
    type SampleObject<'a> = (&'a str, &'a str, &'a [u8], &'a [(&'a str, &'a str)]);

    fn sample_archive(objects: &[SampleObject<'_>]) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (writer, mut reader) = pipe();
            let mut out = TarWriter::new(writer);
            let write = async {
                let header = serde_json::to_vec(&ArchiveHeader { format: 1, buckets: BTreeMap::from([("b".into(), BucketSettings::default())]) }).unwrap();
                let _ = out.entry(HEADER_ENTRY, &[], tar::EntryType::Regular, header.len() as u64, 0).await;
                let _ = out.write(&header).await;
                let _ = out.pad().await;
                let _ = out.entry("b/", &[("LIFEBOAT.bucket", b"b")], tar::EntryType::Directory, 0, 0).await;
                for (bucket, key, body, extra) in objects {
                    let mut records: Vec<(&str, &[u8])> = vec![("LIFEBOAT.bucket", bucket.as_bytes()), ("LIFEBOAT.key", key.as_bytes())];
                    records.extend(extra.iter().map(|(k, v)| (*k, v.as_bytes())));
                    let _ = out.entry(&format!("{bucket}/{key}"), &records, tar::EntryType::Regular, body.len() as u64, 1_700_000_000).await;
                    let _ = out.write(body).await;
                    let _ = out.pad().await;
                }
                let _ = out.write(&[0u8; 1024]).await;
                out.close(Ok(())).await
            };
            let mut all = Vec::new();
            let (written, read) = tokio::join!(write, AsyncReadExt::read_to_end(&mut reader, &mut all));
            assert!(written.is_ok() && read.is_ok());
            all
        })
    }

    #[test]
    fn archive_round_trips_keys_bodies_and_metadata() {
        let long_key = format!("deep/{}/file with space ü.txt", "segment/".repeat(30));
        let archive = sample_archive(&[
            ("b", "plain.txt", b"hello", &[("LIFEBOAT.content-type", "text/plain"), ("LIFEBOAT.meta.owner", "Zoë")]),
            ("b", &long_key, b"", &[]),
            ("b", "x", &[7u8; 1500], &[]),
        ]);
        assert_eq!(archive.len() % 512, 0);
        let (tx, mut rx) = mpsc::channel(1024);
        read_archive(Box::new(std::io::Cursor::new(archive)), &tx).map_err(|e| e.map(|e| e.to_string())).unwrap();
        drop(tx);
        let mut pieces = Vec::new();
        while let Ok(p) = rx.try_recv() {
            pieces.push(p.unwrap());
        }
        assert!(matches!(&pieces[0], Piece::Header(h) if h.format == 1 && h.buckets.contains_key("b")));
        assert!(matches!(&pieces[1], Piece::Bucket(b) if b == "b"));
        let Piece::Object(m) = &pieces[2] else { panic!("object expected") };
        assert_eq!((m.bucket.as_str(), m.key.as_str(), m.size), ("b", "plain.txt", 5));
        assert_eq!(m.headers["content-type"], "text/plain");
        assert_eq!(m.metadata["owner"], "Zoë");
        assert!(matches!(&pieces[3], Piece::Data(d) if &d[..] == b"hello"));
        let Piece::Object(m) = &pieces[4] else { panic!("object expected") };
        assert_eq!((m.key.as_str(), m.size), (long_key.as_str(), 0));
        let Piece::Object(m) = &pieces[5] else { panic!("object expected") };
        assert_eq!(m.size, 1500);
        assert!(matches!(&pieces[6], Piece::Data(d) if d.len() == 1500 && d.iter().all(|b| *b == 7)));
        assert_eq!(pieces.len(), 7);
    }

    #[test]
    fn archives_not_written_by_lifeboat_are_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        builder.append_data(&mut h, "db.dump", &b"abc"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let (tx, _rx) = mpsc::channel(16);
        let e = read_archive(Box::new(std::io::Cursor::new(bytes)), &tx).unwrap_err().unwrap();
        assert!(e.to_string().contains("not a Lifeboat MinIO archive"), "{e}");
    }
}
