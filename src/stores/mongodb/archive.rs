//! The mongodump archive format (mongo-tools `common/archive`): framing, checksums, writing and
//! reading. No I/O to MongoDB.

use std::collections::HashMap;
use std::io;

use mongodb::bson::{Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf, doc};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const MAGIC: u32 = 0x8199_e26d;
pub const TERMINATOR: [u8; 4] = [0xff; 4];
pub const FORMAT_VERSION: &str = "0.1";
/// The largest BSON document MongoDB stores (16 MiB), plus the room mongo-tools allows.
const MAX_BSON: usize = 16 * 1024 * 1024 + 16 * 1024;
/// Bytes of a document read (and allocated) at a time.
const READ_STEP: usize = 1 << 20;
/// Bounds on a prelude, far above any real database: its bytes and its collections.
const MAX_PRELUDE: usize = 256 << 20;
const MAX_COLLECTIONS: usize = 100_000;
/// MongoDB's longest namespace (`db.collection`) and database name, in bytes.
const MAX_NAMESPACE: usize = 255;
const MAX_DATABASE: usize = 64;

/// Whether `db` is a database name MongoDB accepts (the characters it forbids, its length).
pub fn valid_database_name(db: &str) -> bool {
    !db.is_empty() && db.len() <= MAX_DATABASE && !db.contains(['/', '\\', '.', ' ', '"', '$', '\0'])
}

/// Why `db.collection` is not a namespace a Lifeboat archive holds, if it is not: the names
/// MongoDB accepts, and never a `system.` collection (Lifeboat leaves those out).
pub fn namespace_problem(db: &str, collection: &str) -> Option<&'static str> {
    if !valid_database_name(db) {
        Some("not a valid database name")
    } else if collection.is_empty() || collection.contains(['$', '\0']) {
        Some("not a valid collection name")
    } else if db.len() + 1 + collection.len() > MAX_NAMESPACE {
        Some("longer than MongoDB allows")
    } else if collection.starts_with("system.") {
        Some("a system collection, which Lifeboat never backs up")
    } else {
        None
    }
}

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

    fn from_prelude_doc(d: &RawDocument) -> Result<CollectionMeta, String> {
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
        if let Some(why) = namespace_problem(&meta.db, &meta.collection) {
            return Err(format!("the archive lists `{}.{}`, which is {why}", meta.db.escape_debug(), meta.collection.escape_debug()));
        }
        if !metadata.is_empty() {
            let json: serde_json::Value =
                serde_json::from_str(metadata).map_err(|e| format!("metadata of {} is not JSON: {e}", meta.collection))?;
            let parsed = match Bson::try_from(json) {
                Ok(Bson::Document(parsed)) => parsed,
                _ => {
                    return Err(format!("metadata of {} is not Extended JSON", meta.collection));
                }
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
        if meta.kind != "collection" && meta.kind != "view" {
            return Err(format!("{}.{} is a `{}`, which Lifeboat never writes", meta.db, meta.collection, meta.kind.escape_debug()));
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
    Documents {
        collection: String,
        docs: Vec<RawDocumentBuf>,
    },
    /// A collection's closing block, its CRC checked; `count` documents were read for it.
    End {
        collection: String,
        count: u64,
    },
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
        input
            .read_exact(&mut magic)
            .await
            .map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { bad("the file is empty: not a mongodump archive") } else { e })?;
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
            Item::Doc(bytes) => parse(bytes)?,
            _ => return Err(bad("the archive has no header")),
        };
        let version = header.get_str("version").unwrap_or("");
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "the archive has format version `{}`, this Lifeboat reads {FORMAT_VERSION}: restore it with the Lifeboat version that wrote it",
                version.escape_debug()
            )));
        }
        reader.server_version = header.get_str("server_version").unwrap_or("").to_string();
        reader.tool_version = header.get_str("tool_version").unwrap_or("").to_string();
        let mut prelude = 0usize;
        loop {
            match reader.item().await? {
                Item::Doc(bytes) => {
                    prelude += bytes.len();
                    if prelude > MAX_PRELUDE || reader.collections.len() >= MAX_COLLECTIONS {
                        return Err(bad(format!(
                            "the archive's prelude lists more than {MAX_COLLECTIONS} collections or {MAX_PRELUDE} bytes: it is not a Lifeboat archive"
                        )));
                    }
                    let meta = CollectionMeta::from_prelude_doc(&parse(bytes)?).map_err(bad)?;
                    let key = (meta.db.clone(), meta.collection.clone());
                    if reader.state.insert(key, (Crc64::new(), 0, false)).is_some() {
                        return Err(bad(format!("the archive lists {}.{} twice: it is damaged", meta.db, meta.collection)));
                    }
                    reader.collections.push(meta);
                }
                Item::Terminator => break,
                Item::End => {
                    return Err(bad("the archive ends inside its prelude: the file is truncated"));
                }
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
        // Grown as the bytes arrive: a length alone never makes the reader allocate 16 MiB.
        let size = size as usize;
        let mut bytes = Vec::with_capacity(size.min(READ_STEP));
        bytes.extend_from_slice(&len);
        while bytes.len() < size {
            let start = bytes.len();
            bytes.resize(size.min((start / READ_STEP + 1) * READ_STEP), 0);
            self.input.read_exact(&mut bytes[start..]).await.map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof { bad("the archive ends inside a document: the file is truncated") } else { e }
            })?;
        }
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
                            docs.push(
                                RawDocumentBuf::from_bytes(raw)
                                    .map_err(|e| bad(format!("a document of {collection} is not valid BSON: {e}")))?,
                            );
                        }
                        Item::Terminator => {
                            self.current = None;
                            break;
                        }
                        Item::End => {
                            return Err(bad(format!("the archive ends inside the documents of {collection}: the file is truncated")));
                        }
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
                Item::Doc(bytes) => parse(bytes)?,
                Item::Terminator => {
                    return Err(bad("two terminators in a row: the archive is damaged"));
                }
                Item::End => {
                    self.finished = true;
                    let mut open: Vec<String> = self.state.iter().filter(|(_, s)| !s.2).map(|((d, c), _)| format!("{d}.{c}")).collect();
                    open.sort();
                    if !open.is_empty() {
                        return Err(bad(format!("the archive ends before {} was complete: the file is truncated", open.join(", "))));
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
                    Ok(Some(RawBsonRef::Int64(v))) => v,
                    Ok(Some(RawBsonRef::Int32(v))) => v as i64,
                    _ => {
                        return Err(bad(format!("the end marker of {db}.{collection} has no CRC")));
                    }
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
                    Item::End => {
                        return Err(bad(format!("the archive ends inside the end marker of {db}.{collection}: the file is truncated")));
                    }
                    Item::Doc(_) => {
                        return Err(bad(format!("the end marker of {db}.{collection} is not followed by a terminator")));
                    }
                }
                return Ok(Some(Event::End { collection, count }));
            }
            self.current = Some(key);
        }
    }
}

/// A header document, read lazily: only its top-level fields are looked at, so a deeply nested
/// document can never exhaust the stack.
fn parse(bytes: Vec<u8>) -> io::Result<RawDocumentBuf> {
    RawDocumentBuf::from_bytes(bytes).map_err(|e| bad(format!("an archive header is not valid BSON: {e}")))
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
