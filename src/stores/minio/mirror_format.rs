//! The mirror's two file formats, both JSON Lines, and the fingerprint that links them.
//!
//! - The **catalogue** (`runs/<id>/catalogue.jsonl.zst`, zstd, not encrypted): a header line
//!   (format, run id, the encrypted indexes the run needs, each with size and SHA-256), then one
//!   line per object: its fingerprint and the stored file holding it (path, size, SHA-256). It
//!   holds no object key, bucket or metadata in clear. The backup side reads the previous one to
//!   find what changed; `prune` and `verify` read it without any key.
//! - The **index** (`data/<id>/index.jsonl.zst.age`, zstd then age, like every dump file): a
//!   header line (format, run id, each bucket's policy and versioning), then one line per object
//!   *uploaded by that run*: fingerprint, bucket, key, size, standard headers, user metadata and
//!   its file name in `data/<id>/`. The backup side holds only age recipients, so it can never
//!   read an older index: an unchanged object's description stays in the index of the run that
//!   uploaded it, which lives beside that run's data and is kept as long as the data is.
//!
//! Everything here is read back from the backup server, which is not trusted: sizes are bounded
//! before anything is allocated, every path is `data/<mirror id>/<plain name>`, every checksum is
//! hex SHA-256, every bucket name and key is one S3 accepts.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BucketSettings;
use super::archive::{HEADER_FIELDS, MAX_OBJECT, valid_bucket_name};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

pub(super) const FORMAT: u32 = 1;
pub(super) const CATALOGUE_FILE: &str = "catalogue.jsonl.zst";
pub(super) const INDEX_FILE: &str = "index.jsonl.zst.age";
/// Largest catalogue read from the server (stored), and decompressed: far above any real one
/// (about 200 bytes per object).
pub(super) const MAX_CATALOGUE: u64 = 1 << 30;
const MAX_PLAIN: u64 = 8 << 30;
/// Longest line of either file: a key (1 KiB), metadata (2 KiB in S3) and headers fit many times.
const MAX_LINE: u64 = 1 << 20;
/// S3's longest object key, in bytes.
const MAX_KEY: usize = 1024;

/// One stored file: its path under the mirror folder, stored size and SHA-256.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredFile {
    pub(super) path: String,
    pub(super) size: u64,
    pub(super) sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CatalogueHeader {
    pub(super) format: u32,
    pub(super) run: String,
    pub(super) indexes: Vec<StoredFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CatalogueEntry {
    /// [`Fingerprinter::of`] the object as listed.
    pub(super) fp: String,
    #[serde(flatten)]
    pub(super) file: StoredFile,
}

#[derive(Debug, Clone)]
pub(super) struct Catalogue {
    pub(super) header: CatalogueHeader,
    pub(super) entries: Vec<CatalogueEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct IndexHeader {
    pub(super) format: u32,
    pub(super) run: String,
    pub(super) buckets: BTreeMap<String, BucketSettings>,
}

/// One uploaded object as the index describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct IndexRecord {
    pub(super) fp: String,
    pub(super) bucket: String,
    pub(super) key: String,
    /// Plain size in bytes.
    pub(super) size: u64,
    /// `content-type` and the other standard headers the dump keeps, when set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) metadata: BTreeMap<String, String>,
    /// The stored file's name in the run's data folder.
    pub(super) file: String,
}

/// A keyed fingerprint (HMAC-SHA-256) of an object as listed: bucket, key, size, ETag and
/// Last-Modified. Keyed with the MinIO secret key, which the backup side has and the backup
/// server does not, so whoever holds only the backup server cannot confirm a guessed key.
pub(super) struct Fingerprinter {
    inner: Sha256,
    outer: Sha256,
}

impl Fingerprinter {
    pub(super) fn new(secret: &str) -> Fingerprinter {
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(&Sha256::digest([b"lifeboat minio mirror 1\0".as_slice(), secret.as_bytes()].concat()));
        let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
        Fingerprinter { inner: Sha256::new_with_prefix(pad(0x36)), outer: Sha256::new_with_prefix(pad(0x5c)) }
    }

    /// Any change to the object (new bytes, new headers or metadata: S3 objects are rewritten
    /// whole, which sets a new Last-Modified) gives another fingerprint.
    pub(super) fn of(&self, bucket: &str, key: &str, size: u64, etag: &str, modified: &str) -> String {
        let mut inner = self.inner.clone();
        for field in [bucket.as_bytes(), key.as_bytes(), &size.to_le_bytes(), etag.as_bytes(), modified.as_bytes()] {
            inner.update((field.len() as u64).to_le_bytes());
            inner.update(field);
        }
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        hex::encode(outer.finalize())
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a stored path from the server: `data/<mirror id>/<plain name ending .zst.age>`.
/// Returns the run id and the file name.
pub(super) fn check_stored_path(path: &str) -> Result<(MirrorId, &str), String> {
    let bad = || format!("names a stored file `{}` outside the mirror's data folders", path.escape_debug());
    let mut parts = path.split('/');
    let (Some("data"), Some(id), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let id = MirrorId::parse(id).ok_or_else(bad)?;
    if crate::layout::check_file_name(name).is_err() || !name.ends_with(".zst.age") {
        return Err(bad());
    }
    Ok((id, name))
}

fn check_file(f: &StoredFile) -> Result<(), String> {
    check_stored_path(&f.path)?;
    if !is_sha256(&f.sha256) {
        return Err(format!("gives `{}` a checksum that is not a SHA-256 in hex", f.path.escape_debug()));
    }
    Ok(())
}

/// The first line of either file: it names the run it belongs to.
trait Header: DeserializeOwned {
    fn run(&self) -> &str;
}

impl Header for CatalogueHeader {
    fn run(&self) -> &str {
        &self.run
    }
}

impl Header for IndexHeader {
    fn run(&self) -> &str {
        &self.run
    }
}

/// Reads JSON lines from `reader` (at most `max` bytes, each line at most [`MAX_LINE`]): the
/// header first, its `format` checked before the rest of it and its run compared with `run`,
/// then one item per line.
fn read_lines<H: Header, T: DeserializeOwned>(
    reader: impl Read,
    max: u64,
    run: &str,
    mut item: impl FnMut(T) -> Result<(), String>,
) -> Result<H, String> {
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let mut reader = BufReader::new(reader.take(max));
    let mut header = None;
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let n = (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut line).map_err(|e| format!("cannot be read ({e})"))?;
        if n == 0 {
            break;
        }
        if n as u64 > MAX_LINE {
            return Err(format!("has a line ({number}) longer than {MAX_LINE} bytes"));
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if header.is_none() {
            let Version { format } = serde_json::from_slice(text).map_err(|e| format!("does not start with a mirror header ({e})"))?;
            if format != FORMAT {
                return Err(format!("has mirror format {format}; this Lifeboat reads format {FORMAT}: use the Lifeboat that wrote it"));
            }
            let parsed = serde_json::from_slice::<H>(text).map_err(|e| format!("has an unreadable header ({e})"))?;
            if parsed.run() != run {
                return Err(format!("belongs to run {}, not {run}", parsed.run().escape_debug()));
            }
            header = Some(parsed);
            continue;
        }
        item(serde_json::from_slice::<T>(text).map_err(|e| format!("has an unreadable line {number} ({e})"))?)?;
    }
    if reader.into_inner().limit() == 0 {
        return Err(format!("is larger than {max} bytes"));
    }
    header.ok_or_else(|| "is empty".to_string())
}

impl Catalogue {
    /// The catalogue as stored: JSON lines, zstd-compressed.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec(&self.header).expect("serialises");
        for entry in &self.entries {
            text.push(b'\n');
            text.extend(serde_json::to_vec(entry).expect("serialises"));
        }
        text.push(b'\n');
        zstd::encode_all(text.as_slice(), 3).expect("compressing in memory")
    }

    /// Parses a catalogue read from the server for run `run`. `Err` says what is wrong with it.
    pub(super) fn parse(stored: &[u8], run: &str) -> Result<Catalogue, String> {
        let decoder = zstd::stream::read::Decoder::new(stored).map_err(|e| format!("cannot be decompressed ({e})"))?;
        let (mut fps, mut paths) = (HashSet::new(), HashSet::new());
        let mut entries = Vec::new();
        let header: CatalogueHeader = read_lines(decoder, MAX_PLAIN, run, |entry: CatalogueEntry| {
            check_file(&entry.file)?;
            if !is_sha256(&entry.fp) || !fps.insert(entry.fp.clone()) || !paths.insert(entry.file.path.clone()) {
                return Err(format!("lists object {} (or its file) twice or with a malformed fingerprint", entry.fp.escape_debug()));
            }
            entries.push(entry);
            Ok(())
        })?;
        for index in &header.indexes {
            check_file(index)?;
            if !index.path.ends_with(&format!("/{INDEX_FILE}")) || paths.contains(&index.path) {
                return Err(format!("lists `{}` as an index", index.path.escape_debug()));
            }
        }
        Ok(Catalogue { header, entries })
    }
}

/// An index's plain bytes: JSON lines (the pipeline compresses and encrypts them).
pub(super) fn encode_index(header: &IndexHeader, records: &[IndexRecord]) -> Vec<u8> {
    let mut text = serde_json::to_vec(header).expect("serialises");
    text.push(b'\n');
    for record in records {
        text.extend(serde_json::to_vec(record).expect("serialises"));
        text.push(b'\n');
    }
    text
}

/// Parses the decoded index of data run `run`, checking every bucket name, key, size and file name.
pub(super) fn parse_index(plain: impl Read, run: &str) -> Result<(IndexHeader, Vec<IndexRecord>), String> {
    let mut records = Vec::new();
    let mut fps = HashSet::new();
    let header: IndexHeader = read_lines(plain, MAX_PLAIN, run, |r: IndexRecord| {
        if !valid_bucket_name(&r.bucket) {
            return Err(format!("names bucket `{}`, which is not a valid S3 bucket name", r.bucket.escape_debug()));
        }
        if r.key.is_empty() || r.key.len() > MAX_KEY || r.key.contains('\0') || r.size > MAX_OBJECT {
            return Err(format!("holds object `{}` with a key or size S3 cannot hold", r.key.escape_debug()));
        }
        if let Some(h) = r.headers.keys().find(|h| !HEADER_FIELDS.contains(&h.as_str())) {
            return Err(format!("gives object `{}` a header `{}` Lifeboat does not write", r.key.escape_debug(), h.escape_debug()));
        }
        if crate::layout::check_file_name(&r.file).is_err() || r.file == INDEX_FILE || !is_sha256(&r.fp) || !fps.insert(r.fp.clone()) {
            return Err(format!("describes object `{}` with a bad file name or a repeated fingerprint", r.key.escape_debug()));
        }
        records.push(r);
        Ok(())
    })?;
    if let Some(bad) = header.buckets.keys().find(|b| !valid_bucket_name(b)) {
        return Err(format!("lists bucket `{}`, which is not a valid S3 bucket name", bad.escape_debug()));
    }
    Ok((header, records))
}

/// A mirror run's id: when it started (UTC, to the second) and, for a second run within the same
/// second, a sequence number: `20260115T010203Z`, `20260115T010203Z_2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct MirrorId {
    at: NaiveDateTime,
    seq: u32,
}

impl MirrorId {
    pub(super) fn parse(s: &str) -> Option<MirrorId> {
        let (at, seq) = match s.split_once('_') {
            Some((at, n)) => (at, n.parse::<u32>().ok().filter(|n| *n >= 2 && !n.to_string().starts_with('0'))?),
            None => (s, 1),
        };
        let at = NaiveDateTime::parse_from_str(at.strip_suffix('Z')?, "%Y%m%dT%H%M%S").ok()?;
        let id = MirrorId { at, seq };
        (id.to_string() == s).then_some(id)
    }

    pub(super) fn started(&self) -> DateTime<Utc> {
        Utc.from_utc_datetime(&self.at)
    }
}

impl std::fmt::Display for MirrorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.at.format("%Y%m%dT%H%M%SZ"))?;
        if self.seq > 1 {
            write!(f, "_{}", self.seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "20260115T010203Z";
    /// A damage done to a parsed value, and a word the refusal must contain.
    type Damage<T> = (Box<dyn Fn(&mut T)>, &'static str);

    fn sha(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn catalogue() -> Catalogue {
        let file = |n: u32| StoredFile { path: format!("data/{ID}/{n}.zst.age"), size: 100 + n as u64, sha256: sha('a') };
        Catalogue {
            header: CatalogueHeader {
                format: FORMAT,
                run: ID.into(),
                indexes: vec![StoredFile { path: format!("data/{ID}/{INDEX_FILE}"), size: 9, sha256: sha('b') }],
            },
            entries: vec![CatalogueEntry { fp: sha('1'), file: file(1) }, CatalogueEntry { fp: sha('2'), file: file(2) }],
        }
    }

    #[test]
    fn catalogues_round_trip_and_hold_no_keys() {
        let c = catalogue();
        let stored = c.encode();
        let back = Catalogue::parse(&stored, ID).unwrap();
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.entries[1].file, c.entries[1].file);
        assert!(Catalogue::parse(&stored, "20260115T010203Z_2").unwrap_err().contains("belongs to run"));
    }

    #[test]
    fn hostile_catalogues_are_refused() {
        let cases: Vec<Damage<Catalogue>> = vec![
            (Box::new(|c| c.entries[0].file.path = "data/../../etc/passwd".into()), "outside"),
            (Box::new(|c| c.entries[0].file.path = format!("data/{ID}/../x.zst.age")), "outside"),
            (Box::new(|c| c.entries[0].file.path = "runs/x/1.zst.age".into()), "outside"),
            (Box::new(|c| c.entries[0].file.sha256 = "zz".into()), "checksum"),
            (Box::new(|c| c.entries[1].fp = c.entries[0].fp.clone()), "twice"),
            (Box::new(|c| c.entries[1].file.path = c.entries[0].file.path.clone()), "twice"),
            (Box::new(|c| c.header.indexes[0].path = c.entries[0].file.path.clone()), "as an index"),
            (Box::new(|c| c.header.format = 2), "format 2"),
        ];
        for (damage, needle) in cases {
            let mut c = catalogue();
            damage(&mut c);
            let e = Catalogue::parse(&c.encode(), ID).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(Catalogue::parse(b"not zstd", ID).is_err());
        let long = zstd::encode_all(vec![b'x'; (MAX_LINE + 10) as usize].as_slice(), 1).unwrap();
        assert!(Catalogue::parse(&long, ID).unwrap_err().contains("longer than"));
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let header = IndexHeader { format: FORMAT, run: ID.into(), buckets: BTreeMap::from([("docs".into(), BucketSettings::default())]) };
        let good = IndexRecord {
            fp: sha('1'),
            bucket: "docs".into(),
            key: "a/b ü.pdf".into(),
            size: 3,
            headers: BTreeMap::from([("content-type".into(), "application/pdf".into())]),
            metadata: BTreeMap::from([("registrar".into(), "Ngozi".into())]),
            file: "1.zst.age".into(),
        };
        let (h, r) = parse_index(encode_index(&header, std::slice::from_ref(&good)).as_slice(), ID).unwrap();
        assert_eq!((h.buckets.len(), r), (1, vec![good.clone()]));
        let cases: Vec<Damage<IndexRecord>> = vec![
            (Box::new(|r| r.bucket = "../etc".into()), "bucket"),
            (Box::new(|r| r.key = String::new()), "key or size"),
            (Box::new(|r| r.key = "x".repeat(1025)), "key or size"),
            (Box::new(|r| r.size = MAX_OBJECT + 1), "key or size"),
            (Box::new(|r| r.file = "../../x".into()), "file name"),
            (Box::new(|r| r.file = INDEX_FILE.into()), "file name"),
            (
                Box::new(|r| {
                    r.headers.insert("x-amz-website-redirect".into(), "http://evil".into());
                }),
                "header",
            ),
        ];
        for (damage, needle) in cases {
            let mut r = good.clone();
            damage(&mut r);
            let e = parse_index(encode_index(&header, &[r]).as_slice(), ID).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(parse_index(encode_index(&header, &[good.clone(), good]).as_slice(), ID).unwrap_err().contains("repeated"));
        assert!(parse_index(encode_index(&header, &[]).as_slice(), "20260115T010203Z_2").unwrap_err().contains("belongs to run"));
    }

    #[test]
    fn fingerprints_are_keyed_and_change_with_every_field() {
        let f = Fingerprinter::new("secret");
        let base = f.of("docs", "a.pdf", 3, "\"e\"", "1.000000000");
        assert!(is_sha256(&base));
        assert_eq!(base, Fingerprinter::new("secret").of("docs", "a.pdf", 3, "\"e\"", "1.000000000"));
        for other in [
            Fingerprinter::new("other").of("docs", "a.pdf", 3, "\"e\"", "1.000000000"),
            f.of("docs", "a.pdf", 4, "\"e\"", "1.000000000"),
            f.of("docs", "a.pdf", 3, "\"f\"", "1.000000000"),
            f.of("docs", "a.pdf", 3, "\"e\"", "1.000000001"),
            f.of("docsa", ".pdf", 3, "\"e\"", "1.000000000"),
        ] {
            assert_ne!(other, base);
        }
    }
}
