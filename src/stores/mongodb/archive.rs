//! The mongodump archive format (mongo-tools `common/archive`): framing, checksums, writing and
//! reading. No I/O to MongoDB.

use std::collections::HashMap;
use std::io;

use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const MAGIC: u32 = 0x8199_e26d;
pub const TERMINATOR: [u8; 4] = [0xff; 4];
pub const FORMAT_VERSION: &str = "0.1";
/// The largest BSON document MongoDB stores (16 MiB), plus the room mongo-tools allows.
const MAX_BSON: usize = 16 * 1024 * 1024 + 16 * 1024;

/// CRC-64 with the ECMA-182 polynomial as Go's `hash/crc64` computes it (reflected, all-ones
/// initial value and final xor; also known as CRC-64/XZ). mongorestore compares it.
#[derive(Clone)]
pub struct Crc64 {
    state: u64,
}

fn crc_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const POLY: u64 = 0xC96C_5795_D787_0F42;
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut crc = i as u64;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ POLY } else { crc >> 1 };
            }
            *slot = crc;
        }
        table
    })
}

impl Crc64 {
    pub fn new() -> Crc64 {
        Crc64 { state: 0 }
    }

    pub fn update(&mut self, data: &[u8]) {
        let table = crc_table();
        let mut crc = !self.state;
        for &b in data {
            crc = table[((crc as u8) ^ b) as usize] ^ (crc >> 8);
        }
        self.state = !crc;
    }

    /// As stored in the archive: Go writes the unsigned sum as an int64.
    pub fn value(&self) -> i64 {
        self.state as i64
    }
}

/// mongorestore parses the header's server version as `major.minor.patch`.
pub fn server_version(version: &str) -> String {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        core.to_string()
    } else {
        "0.0.0".into()
    }
}

/// What a collection contributes to the prelude.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionMeta {
    pub db: String,
    pub collection: String,
    /// `collection` or `view`.
    pub kind: String,
    pub options: Document,
    pub indexes: Vec<Document>,
}

impl CollectionMeta {
    /// The metadata string: what mongodump writes to `<collection>.metadata.json`.
    pub fn metadata_json(&self) -> String {
        let meta = doc! {
            "options": self.options.clone(),
            "indexes": self.indexes.iter().cloned().map(Bson::Document).collect::<Vec<_>>(),
            "collectionName": self.collection.clone(),
            "type": self.kind.clone(),
        };
        Bson::Document(meta).into_canonical_extjson().to_string()
    }

    fn from_prelude_doc(d: &Document) -> Result<CollectionMeta, String> {
        let db = d.get_str("db").map_err(|_| "collection metadata without `db`")?.to_string();
        let collection = d.get_str("collection").map_err(|_| "collection metadata without `collection`")?.to_string();
        let metadata = d.get_str("metadata").unwrap_or("");
        let mut meta = CollectionMeta {
            db,
            collection,
            kind: d.get_str("type").unwrap_or("collection").to_string(),
            options: Document::new(),
            indexes: Vec::new(),
        };
        if !metadata.is_empty() {
            let json: serde_json::Value =
                serde_json::from_str(metadata).map_err(|e| format!("metadata of {} is not JSON: {e}", meta.collection))?;
            let parsed = match Bson::try_from(json) {
                Ok(Bson::Document(parsed)) => parsed,
                _ => return Err(format!("metadata of {} is not Extended JSON", meta.collection)),
            };
            if let Ok(options) = parsed.get_document("options") {
                meta.options = options.clone();
            }
            if let Ok(indexes) = parsed.get_array("indexes") {
                meta.indexes = indexes.iter().filter_map(|i| i.as_document().cloned()).collect();
            }
            if let Ok(kind) = parsed.get_str("type") {
                meta.kind = kind.to_string();
            }
        }
        Ok(meta)
    }
}

fn to_bytes(d: &Document) -> Vec<u8> {
    let mut out = Vec::new();
    d.to_writer(&mut out).expect("in-memory BSON encoding does not fail");
    out
}

/// Magic number, header, one metadata document per collection, terminator.
pub fn prelude(server_version: &str, tool_version: &str, collections: &[CollectionMeta]) -> Vec<u8> {
    let mut out = MAGIC.to_le_bytes().to_vec();
    out.extend(to_bytes(&doc! {
        "concurrent_collections": 1i32,
        "version": FORMAT_VERSION,
        "server_version": server_version,
        "tool_version": tool_version,
    }));
    for c in collections {
        out.extend(to_bytes(&doc! {
            "db": c.db.clone(),
            "collection": c.collection.clone(),
            "metadata": c.metadata_json(),
            // The uncompressed size is not known before the data is read; mongorestore uses
            // it only for its progress display.
            "size": 0i32,
            "type": c.kind.clone(),
        }));
    }
    out.extend(TERMINATOR);
    out
}

/// The document heading a block of a collection's documents (`eof` false) or closing the
/// collection (`eof` true, with the CRC of all its documents).
pub fn namespace_header(db: &str, collection: &str, eof: bool, crc: i64) -> Vec<u8> {
    to_bytes(&doc! { "db": db, "collection": collection, "EOF": eof, "CRC": crc })
}

/// What reading an archive yields after its prelude.
#[derive(Debug)]
pub enum Event {
    Documents { collection: String, docs: Vec<RawDocumentBuf> },
    /// A collection's closing block, its CRC checked; `count` documents were read for it.
    End { collection: String, count: u64 },
}

enum Item {
    Doc(Vec<u8>),
    Terminator,
    /// The stream ended cleanly before a new item.
    End,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A streaming reader of one archive: the prelude first, then events in archive order.
pub struct Reader<R: AsyncRead + Unpin> {
    input: R,
    pub server_version: String,
    pub tool_version: String,
    pub collections: Vec<CollectionMeta>,
    /// Per namespace: running CRC, documents read, closed.
    state: HashMap<(String, String), (Crc64, u64, bool)>,
    /// The open block, if a data block is being read.
    current: Option<(String, String)>,
    finished: bool,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads and checks the magic number, header and collection metadata.
    pub async fn open(mut input: R) -> io::Result<Reader<R>> {
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic).await.map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof { bad("the file is empty: not a mongodump archive") } else { e }
        })?;
        if u32::from_le_bytes(magic) != MAGIC {
            return Err(bad("the file does not start with the mongodump archive magic number: not a MongoDB archive"));
        }
        let mut reader = Reader {
            input,
            server_version: String::new(),
            tool_version: String::new(),
            collections: Vec::new(),
            state: HashMap::new(),
            current: None,
            finished: false,
        };
        let header = match reader.item().await? {
            Item::Doc(bytes) => parse(&bytes)?,
            _ => return Err(bad("the archive has no header")),
        };
        let version = header.get_str("version").unwrap_or("");
        if version != FORMAT_VERSION {
            return Err(bad(format!("archive format version `{version}` is not {FORMAT_VERSION}")));
        }
        reader.server_version = header.get_str("server_version").unwrap_or("").to_string();
        reader.tool_version = header.get_str("tool_version").unwrap_or("").to_string();
        loop {
            match reader.item().await? {
                Item::Doc(bytes) => {
                    let meta = CollectionMeta::from_prelude_doc(&parse(&bytes)?).map_err(bad)?;
                    reader.state.insert((meta.db.clone(), meta.collection.clone()), (Crc64::new(), 0, false));
                    reader.collections.push(meta);
                }
                Item::Terminator => break,
                Item::End => return Err(bad("the archive ends inside its prelude: the file is truncated")),
            }
        }
        Ok(reader)
    }

    async fn item(&mut self) -> io::Result<Item> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = self.input.read(&mut len[got..]).await?;
            if n == 0 {
                return if got == 0 { Ok(Item::End) } else { Err(bad("the archive ends inside a length: the file is truncated")) };
            }
            got += n;
        }
        if len == TERMINATOR {
            return Ok(Item::Terminator);
        }
        let size = i32::from_le_bytes(len);
        if size < 5 || size as usize > MAX_BSON {
            return Err(bad(format!("{size} is neither a BSON document length nor a terminator: the archive is damaged")));
        }
        let mut bytes = vec![0u8; size as usize];
        bytes[..4].copy_from_slice(&len);
        self.input.read_exact(&mut bytes[4..]).await.map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof { bad("the archive ends inside a document: the file is truncated") } else { e }
        })?;
        if bytes[bytes.len() - 1] != 0 {
            return Err(bad("a BSON document does not end with a zero byte: the archive is damaged"));
        }
        Ok(Item::Doc(bytes))
    }

    /// The next event, or `None` at the end of a complete archive. Documents come in batches
    /// of at most `max_docs` documents or about `max_bytes` bytes.
    pub async fn next_event(&mut self, max_docs: usize, max_bytes: usize) -> io::Result<Option<Event>> {
        loop {
            if let Some((db, collection)) = self.current.clone() {
                let mut docs = Vec::new();
                let mut bytes = 0usize;
                while docs.len() < max_docs && bytes < max_bytes {
                    match self.item().await? {
                        Item::Doc(raw) => {
                            let entry = self.state.get_mut(&(db.clone(), collection.clone())).expect("opened blocks are known");
                            entry.0.update(&raw);
                            entry.1 += 1;
                            bytes += raw.len();
                            docs.push(RawDocumentBuf::from_bytes(raw).map_err(|e| bad(format!("a document of {collection} is not valid BSON: {e}")))?);
                        }
                        Item::Terminator => {
                            self.current = None;
                            break;
                        }
                        Item::End => return Err(bad(format!("the archive ends inside the documents of {collection}: the file is truncated"))),
                    }
                }
                if !docs.is_empty() {
                    return Ok(Some(Event::Documents { collection, docs }));
                }
                continue;
            }
            if self.finished {
                return Ok(None);
            }
            let header = match self.item().await? {
                Item::Doc(bytes) => parse(&bytes)?,
                Item::Terminator => return Err(bad("two terminators in a row: the archive is damaged")),
                Item::End => {
                    self.finished = true;
                    let mut open: Vec<String> =
                        self.state.iter().filter(|(_, s)| !s.2).map(|((d, c), _)| format!("{d}.{c}")).collect();
                    open.sort();
                    if !open.is_empty() {
                        return Err(bad(format!(
                            "the archive ends before {} was complete: the file is truncated",
                            open.join(", ")
                        )));
                    }
                    return Ok(None);
                }
            };
            let db = header.get_str("db").unwrap_or("").to_string();
            let collection = header.get_str("collection").map_err(|_| bad("a block header has no collection"))?.to_string();
            let key = (db.clone(), collection.clone());
            let Some(entry) = self.state.get_mut(&key) else {
                return Err(bad(format!("the archive holds data for {db}.{collection}, which its prelude does not list")));
            };
            if entry.2 {
                return Err(bad(format!("{db}.{collection} continues after its end marker: the archive is damaged")));
            }
            if header.get_bool("EOF").unwrap_or(false) {
                let stored = match header.get("CRC") {
                    Some(Bson::Int64(v)) => *v,
                    Some(Bson::Int32(v)) => *v as i64,
                    _ => return Err(bad(format!("the end marker of {db}.{collection} has no CRC"))),
                };
                if stored != entry.0.value() {
                    return Err(bad(format!(
                        "CRC mismatch for {db}.{collection} ({} computed, {stored} stored): the archive is damaged",
                        entry.0.value()
                    )));
                }
                entry.2 = true;
                let count = entry.1;
                match self.item().await? {
                    Item::Terminator => {}
                    Item::End => return Err(bad(format!("the archive ends inside the end marker of {db}.{collection}: the file is truncated"))),
                    Item::Doc(_) => return Err(bad(format!("the end marker of {db}.{collection} is not followed by a terminator"))),
                }
                return Ok(Some(Event::End { collection, count }));
            }
            self.current = Some(key);
        }
    }
}

fn parse(bytes: &[u8]) -> io::Result<Document> {
    Document::from_reader(bytes).map_err(|e| bad(format!("an archive header is not valid BSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson;

    #[test]
    fn crc_matches_go_crc64_ecma() {
        // The CRC-64/XZ check value; Go's crc64.Checksum(ECMA) gives the same.
        let mut crc = Crc64::new();
        crc.update(b"1234");
        crc.update(b"56789");
        assert_eq!(crc.value() as u64, 0x995d_c9bb_df19_39fa);
        assert_eq!(Crc64::new().value(), 0, "an empty collection has CRC 0");
    }

    #[test]
    fn server_versions_are_major_minor_patch() {
        assert_eq!(server_version("7.0.42"), "7.0.42");
        assert_eq!(server_version("6.0.3-rc1"), "6.0.3");
        assert_eq!(server_version("weird"), "0.0.0");
    }

    fn raw(d: Document) -> Vec<u8> {
        let mut out = Vec::new();
        d.to_writer(&mut out).unwrap();
        out
    }

    fn meta(collection: &str, kind: &str) -> CollectionMeta {
        CollectionMeta {
            db: "hearth".into(),
            collection: collection.into(),
            kind: kind.into(),
            options: if kind == "view" { doc! { "viewOn": "people", "pipeline": [] } } else { doc! { "capped": false } },
            indexes: vec![doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }, doc! { "v": 2, "key": { "nid": 1 }, "name": "nid_1", "unique": true }],
        }
    }

    /// An archive as Lifeboat writes it: `people` with documents, `empty` without, a view.
    fn sample(docs: &[Document]) -> Vec<u8> {
        let metas = vec![meta("empty", "collection"), meta("people", "collection"), meta("v", "view")];
        let mut out = prelude("7.0.0", "test", &metas);
        for m in &metas {
            let mut crc = Crc64::new();
            out.extend(namespace_header("hearth", &m.collection, false, 0));
            if m.collection == "people" {
                for d in docs {
                    let bytes = raw(d.clone());
                    crc.update(&bytes);
                    out.extend(bytes);
                }
            }
            out.extend(TERMINATOR);
            out.extend(namespace_header("hearth", &m.collection, true, crc.value()));
            out.extend(TERMINATOR);
        }
        out
    }

    async fn read_all(bytes: &[u8]) -> std::io::Result<(Vec<CollectionMeta>, Vec<Event>)> {
        let mut reader = Reader::open(bytes).await?;
        let mut events = Vec::new();
        while let Some(e) = reader.next_event(2, 1 << 20).await? {
            events.push(e);
        }
        Ok((reader.collections.clone(), events))
    }

    #[tokio::test]
    async fn archive_round_trips_metadata_and_documents_in_batches() {
        // Every BSON type travels as raw bytes, also those FerretDB cannot store.
        let docs: Vec<Document> = (0..5)
            .map(|i| {
                doc! {
                    "_id": i, "name": format!("n{i}"), "nested": { "a": [1, 2, { "b": i }, [3, [4]]] },
                    "dec": Bson::Decimal128(bson::Decimal128::from_bytes([i as u8; 16])),
                    "nan": f64::NAN, "min": Bson::MinKey, "max": Bson::MaxKey,
                    "code": Bson::JavaScriptCode("return 1".into()), "dotted.key": 1,
                }
            })
            .collect();
        let bytes = sample(&docs);
        assert_eq!(&bytes[..4], &[0x6d, 0xe2, 0x99, 0x81], "magic number, little-endian");
        let (metas, events) = read_all(&bytes).await.unwrap();
        assert_eq!(metas, vec![meta("empty", "collection"), meta("people", "collection"), meta("v", "view")]);
        let mut got = Vec::new();
        let mut ends = Vec::new();
        for e in events {
            match e {
                Event::Documents { collection, docs } => {
                    assert_eq!(collection, "people");
                    assert!(docs.len() <= 2, "batches respect max_docs");
                    got.extend(docs.into_iter().map(|d| d.as_bytes().to_vec()));
                }
                Event::End { collection, count } => ends.push((collection, count)),
            }
        }
        assert_eq!(got, docs.iter().map(|d| raw(d.clone())).collect::<Vec<_>>(), "documents come back byte for byte");
        assert_eq!(ends, vec![("empty".into(), 0), ("people".into(), 5), ("v".into(), 0)]);
    }

    #[test]
    fn metadata_is_canonical_extended_json() {
        let json = meta("people", "collection").metadata_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["collectionName"], "people");
        assert_eq!(v["type"], "collection");
        assert_eq!(v["indexes"][1]["unique"], true);
        assert_eq!(v["indexes"][1]["key"]["nid"], serde_json::json!({ "$numberInt": "1" }));
    }

    #[tokio::test]
    async fn damaged_archives_are_refused() {
        let docs: Vec<Document> = (0..3).map(|i| doc! { "_id": i, "x": "abcdef" }).collect();
        let good = sample(&docs);

        // A flipped byte inside a document's string: the CRC catches it.
        let mut flipped = good.clone();
        let pos = flipped.windows(6).rposition(|w| w == b"abcdef").unwrap();
        flipped[pos] ^= 0x01;
        let e = read_all(&flipped).await.unwrap_err();
        assert!(e.to_string().contains("CRC mismatch for hearth.people"), "{e}");

        // Cut anywhere after the prelude: the reader reports truncation, never a clean end.
        for cut in [good.len() - 1, good.len() - 4, good.len() / 2 + 3] {
            let e = read_all(&good[..cut]).await.unwrap_err();
            assert!(e.to_string().contains("truncated"), "cut at {cut}: {e}");
        }

        let e = Reader::open(&b"PGDMP\x01\x0e\x00"[..]).await.err().unwrap();
        assert!(e.to_string().contains("not a MongoDB archive"), "{e}");
        let e = Reader::open(&b""[..]).await.err().unwrap();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
