//! MongoDB `dump`: one archive per database, in the mongodump archive format, so that
//! `age -d | zstd -d | mongorestore --archive` restores it without Lifeboat.
//!
//! Lifeboat writes the archive itself with the official Rust driver rather than running mongodump:
//! no MongoDB tools can be installed on these machines, and writing the format directly keeps the
//! stream in one process (driver cursor → archive framing → zstd → age → backup server) with
//! memory bounded by one cursor batch and a few 256 KiB buffers. Documents are copied as raw BSON
//! bytes, never decoded, so every BSON type survives exactly.
//!
//! The format (mongo-tools `common/archive`): a little-endian magic number, a header document, one
//! metadata document per collection (its options and indexes as canonical Extended JSON, as in
//! mongodump's `metadata.json`), a terminator; then for each collection a block headed by
//! `{db, collection, EOF: false}` holding its documents, and a closing `{db, collection, EOF: true,
//! CRC}` block whose CRC (CRC-64/ECMA as Go computes it) covers all of the collection's document
//! bytes. mongorestore checks that CRC, and so does Lifeboat's own restore.
//!
//! Counts are the documents written to the archive per collection: they describe exactly what the
//! backup holds, whatever is written to the database meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::options::{ClientOptions, Credential};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{RestoreFiles, Store};
use crate::layout::RunWriter;
use crate::secret::SecretFile;
use crate::stores::{Datastore, StoreContext, StoreSettings, StoreType};
use crate::error::{Error, Result};
use crate::layout::manifest::{Counts, Manifest, StoreBackup};

const STORE: &str = "mongodb";

/// Databases that hold the server's own state: left out unless listed by name.
const SYSTEM_DATABASES: [&str; 3] = ["admin", "config", "local"];

/// How much archive data is gathered before it is handed to the pipeline.
const OUT_CHUNK: usize = 256 * 1024;
/// Restore inserts: at most this many documents, or this many bytes, per batch.
const BATCH_DOCS: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    #[serde(flatten)]
    pub settings: StoreSettings,
    /// `mongodb://[user@]host:port/[?options]` (or `mongodb+srv://`), without a password.
    pub url: String,
    /// File holding the password of the url's user.
    pub password_file: Option<PathBuf>,
    /// Databases to back up; empty means every database except admin, config and local.
    #[serde(default)]
    pub databases: Vec<String>,
}

pub struct MongoDb {
    cfg: MongoConfig,
    password: Option<SecretFile>,
}

fn err(message: impl Into<String>) -> Error {
    Error::store(STORE, message)
}

/// A driver error as one short line (the driver's own text can span a whole topology dump).
fn brief(e: &mongodb::error::Error) -> String {
    use mongodb::error::ErrorKind;
    let text = match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} ({})", c.message, c.code_name),
        ErrorKind::Io(io) => format!("connection to the server lost or refused ({io})"),
        // The message describes the whole topology; the first server's error is what matters.
        ErrorKind::ServerSelection { message, .. } => match message.split_once("Error: Kind: ") {
            Some((_, cause)) => format!("no server answered ({})", cause.split(", labels").next().unwrap_or(cause)),
            None => format!("no server answered ({message})"),
        },
        ErrorKind::InsertMany(m) => match (&m.write_errors, &m.write_concern_error) {
            (Some(w), _) if !w.is_empty() => format!("{} (document {} of the batch)", w[0].message, w[0].index),
            (_, Some(wc)) => wc.message.clone(),
            _ => e.to_string(),
        },
        _ => e.to_string(),
    };
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 300 {
        format!("{}…", one_line.chars().take(300).collect::<String>())
    } else {
        one_line
    }
}

/// The hosts part of a MongoDB URL, without user name or options, for messages.
fn url_hosts(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority).to_string()
}

/// True when the URL carries `user:password@`.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A file name for a database's archive (the real name is kept in the manifest).
fn archive_file_name(db: &str) -> String {
    let safe: String = db.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect();
    format!("db-{safe}.archive.zst.age")
}

/// mongorestore parses the header's server version as `major.minor.patch`.
fn archive_server_version(version: &str) -> String {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        core.to_string()
    } else {
        "0.0.0".into()
    }
}

/// The mongodump archive format: framing, checksums, writing and reading. No I/O to MongoDB.
mod archive {
    use std::collections::HashMap;
    use std::io::{self, Read};

    use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};

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
    pub struct Reader<R: Read> {
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

    impl<R: Read> Reader<R> {
        /// Reads and checks the magic number, header and collection metadata.
        pub fn open(mut input: R) -> io::Result<Reader<R>> {
            let mut magic = [0u8; 4];
            input.read_exact(&mut magic).map_err(|e| {
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
            let header = match reader.item()? {
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
                match reader.item()? {
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

        fn item(&mut self) -> io::Result<Item> {
            let mut len = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                let n = self.input.read(&mut len[got..])?;
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
            self.input.read_exact(&mut bytes[4..]).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof { bad("the archive ends inside a document: the file is truncated") } else { e }
            })?;
            if bytes[bytes.len() - 1] != 0 {
                return Err(bad("a BSON document does not end with a zero byte: the archive is damaged"));
            }
            Ok(Item::Doc(bytes))
        }

        /// The next event, or `None` at the end of a complete archive. Documents come in batches
        /// of at most `max_docs` documents or about `max_bytes` bytes.
        pub fn next_event(&mut self, max_docs: usize, max_bytes: usize) -> io::Result<Option<Event>> {
            loop {
                if let Some((db, collection)) = self.current.clone() {
                    let mut docs = Vec::new();
                    let mut bytes = 0usize;
                    while docs.len() < max_docs && bytes < max_bytes {
                        match self.item()? {
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
                let header = match self.item()? {
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
                    match self.item()? {
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
}

use archive::{CollectionMeta, Crc64, Event};

/// Everything decided about a database before its data is read.
#[derive(Clone)]
struct DatabasePlan {
    name: String,
    collections: Vec<CollectionMeta>,
}

/// Why the archive writer stopped early.
enum Stop {
    /// The pipeline stopped reading (its own error is the cause).
    Closed,
    Failed(Error),
}

/// Gathers archive bytes into chunks for the pipeline.
struct ArchiveOut {
    tx: mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ArchiveOut {
    async fn write(&mut self, data: &[u8]) -> std::result::Result<(), Stop> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OUT_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::result::Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(OUT_CHUNK));
        self.tx.send(Ok(bytes::Bytes::from(chunk))).await.map_err(|_| Stop::Closed)
    }
}

/// Streams one database as an archive into `out`; returns the documents written per collection.
async fn write_archive(
    client: Client,
    plan: DatabasePlan,
    server_version: String,
    out: &mut ArchiveOut,
) -> std::result::Result<BTreeMap<String, u64>, Stop> {
    let tool = format!("lifeboat {}", env!("CARGO_PKG_VERSION"));
    out.write(&archive::prelude(&server_version, &tool, &plan.collections)).await?;
    let db = client.database(&plan.name);
    let mut counts = BTreeMap::new();
    for meta in &plan.collections {
        let mut crc = Crc64::new();
        let mut written = 0u64;
        out.write(&archive::namespace_header(&plan.name, &meta.collection, false, 0)).await?;
        // A view holds no data of its own; mongorestore creates it when it meets its empty block.
        if meta.kind == "collection" {
            let failed = |e: mongodb::error::Error| {
                Stop::Failed(err(format!(
                    "reading {}.{} failed: {}; the run was not completed, earlier backups are untouched",
                    plan.name,
                    meta.collection,
                    brief(&e)
                )))
            };
            let mut cursor = db.collection::<RawDocumentBuf>(&meta.collection).find(doc! {}).await.map_err(failed)?;
            while cursor.advance().await.map_err(failed)? {
                let bytes = cursor.current().as_bytes();
                crc.update(bytes);
                out.write(bytes).await?;
                written += 1;
            }
            counts.insert(meta.collection.clone(), written);
        }
        out.write(&archive::TERMINATOR).await?;
        out.write(&archive::namespace_header(&plan.name, &meta.collection, true, crc.value())).await?;
        out.write(&archive::TERMINATOR).await?;
        tracing::debug!("mongodb: {}.{}: {written} documents", plan.name, meta.collection);
    }
    out.flush().await?;
    Ok(counts)
}

impl MongoDb {
    pub fn new(cfg: MongoConfig, ctx: &StoreContext) -> Result<MongoDb> {
        let invalid = |message: String| ctx.invalid(message);
        if !(cfg.url.starts_with("mongodb://") || cfg.url.starts_with("mongodb+srv://")) {
            return Err(invalid(format!(
                "stores.mongodb.url `{}` is not a MongoDB URL; expected mongodb://[user@]host:port/",
                url_hosts(&cfg.url)
            )));
        }
        if url_has_password(&cfg.url) {
            return Err(invalid(
                "stores.mongodb.url contains a password: remove it and put it in stores.mongodb.password_file".into(),
            ));
        }
        for db in &cfg.databases {
            if db.is_empty() || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
                return Err(invalid(format!("stores.mongodb.databases: `{db}` is not a valid MongoDB database name")));
            }
        }
        let password = cfg.password_file.as_deref().map(|p| SecretFile::new("mongodb password", p));
        Ok(MongoDb { cfg, password })
    }

    fn hosts(&self) -> String {
        url_hosts(&self.cfg.url)
    }

    /// Connects and checks that the server answers.
    async fn client(&self) -> Result<Client> {
        let mut options = ClientOptions::parse(&self.cfg.url)
            .await
            .map_err(|e| err(format!("stores.mongodb.url cannot be used: {}", brief(&e))))?;
        options.app_name = Some("lifeboat".into());
        // Fail within seconds when the server is down, unless the URL says otherwise.
        options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
        options.connect_timeout.get_or_insert(Duration::from_secs(10));
        if let Some(secret) = &self.password {
            let credential = options.credential.get_or_insert_with(Credential::default);
            if credential.username.is_none() {
                return Err(err(
                    "stores.mongodb.password_file is set but stores.mongodb.url names no user; write mongodb://USER@host:port/",
                ));
            }
            credential.password = Some(secret.read()?);
        }
        let client = Client::with_options(options).map_err(|e| err(format!("stores.mongodb.url cannot be used: {}", brief(&e))))?;
        client.database("admin").run_command(doc! { "ping": 1 }).await.map_err(|e| {
            err(format!(
                "cannot connect to MongoDB at {}: {}; check that the server is up and stores.mongodb.url",
                self.hosts(),
                brief(&e)
            ))
        })?;
        Ok(client)
    }

    /// The databases to back up: the configured ones (each must exist) or all but the system ones.
    async fn databases(&self, client: &Client) -> Result<Vec<String>> {
        let mut existing = client
            .list_database_names()
            .await
            .map_err(|e| err(format!("cannot list databases on {}: {}", self.hosts(), brief(&e))))?;
        existing.sort();
        if self.cfg.databases.is_empty() {
            return Ok(existing.into_iter().filter(|d| !SYSTEM_DATABASES.contains(&d.as_str())).collect());
        }
        for db in &self.cfg.databases {
            if !existing.contains(db) {
                return Err(err(format!(
                    "database `{db}` named in stores.mongodb.databases does not exist on {}; fix the list (existing: {})",
                    self.hosts(),
                    existing.join(", ")
                )));
            }
        }
        Ok(self.cfg.databases.clone())
    }

    /// Lists a database's collections with their options and indexes.
    async fn plan(&self, client: &Client, name: &str) -> Result<DatabasePlan> {
        let db = client.database(name);
        let listing_failed = |e: mongodb::error::Error| err(format!("cannot list the collections of {name}: {}", brief(&e)));
        let specs: Vec<Document> =
            db.run_cursor_command(doc! { "listCollections": 1 }).await.map_err(listing_failed)?.try_collect().await.map_err(listing_failed)?;
        let mut collections = Vec::new();
        for spec in specs {
            let collection = spec.get_str("name").map_err(|_| err(format!("{name}: listCollections returned an entry without a name")))?;
            if collection.starts_with("system.") {
                continue;
            }
            let kind = spec.get_str("type").unwrap_or("collection");
            let options = spec.get_document("options").cloned().unwrap_or_default();
            let indexes = match kind {
                "collection" => {
                    let index_failed =
                        |e: mongodb::error::Error| err(format!("cannot list the indexes of {name}.{collection}: {}", brief(&e)));
                    match db.run_cursor_command(doc! { "listIndexes": collection }).await {
                        Ok(cursor) => cursor.try_collect::<Vec<Document>>().await.map_err(index_failed)?,
                        // Dropped since it was listed: there is nothing to back up.
                        Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => continue,
                        Err(e) => return Err(index_failed(e)),
                    }
                }
                "view" => Vec::new(),
                other => {
                    return Err(err(format!(
                        "{name}.{collection} is a {other} collection, which Lifeboat cannot back up in a form mongorestore restores; \
                         nothing was backed up (back this database up with mongodump instead)"
                    )));
                }
            };
            collections.push(CollectionMeta {
                db: name.to_string(),
                collection: collection.to_string(),
                kind: kind.to_string(),
                options,
                indexes,
            });
        }
        collections.sort_by(|a, b| a.collection.cmp(&b.collection));
        Ok(DatabasePlan { name: name.to_string(), collections })
    }

    async fn server_version(client: &Client) -> Result<String> {
        let info = client
            .database("admin")
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(|e| err(format!("cannot read the server version: {}", brief(&e))))?;
        Ok(info.get_str("version").unwrap_or("unknown").to_string())
    }

    async fn dump_database(
        &self,
        client: &Client,
        plan: DatabasePlan,
        server_version: &str,
        sink: &mut RunWriter<'_>,
    ) -> Result<BTreeMap<String, u64>> {
        let (tx, mut rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        let name = plan.name.clone();
        let producer = {
            let (client, server_version) = (client.clone(), archive_server_version(server_version));
            tokio::spawn(async move {
                let mut out = ArchiveOut { tx, buf: Vec::with_capacity(OUT_CHUNK) };
                let result = write_archive(client, plan, server_version, &mut out).await;
                if let Err(Stop::Failed(e)) = &result {
                    // The pipeline must see a failure, never a clean (truncated) end.
                    let _ = out.tx.send(Err(std::io::Error::other(e.to_string()))).await;
                }
                result
            })
        };
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        let put = sink.put(&archive_file_name(&name), Box::new(reader)).await;
        let mut producer = producer;
        match put {
            Ok(()) => match producer.await.map_err(|e| err(format!("the dump of {name} stopped: {e}")))? {
                Ok(counts) => Ok(counts),
                Err(Stop::Failed(e)) => Err(e),
                Err(Stop::Closed) => Err(err(format!("the dump of {name} was cut short"))),
            },
            Err(put_error) => {
                // When the dump failed first, its error is the cause; when the upload failed
                // first, the dump may be waiting on the server and is stopped.
                match tokio::time::timeout(Duration::from_secs(2), &mut producer).await {
                    Ok(Ok(Err(Stop::Failed(e)))) => Err(e),
                    Ok(_) => Err(put_error),
                    Err(_) => {
                        producer.abort();
                        Err(put_error)
                    }
                }
            }
        }
    }

    /// Restores one database from its archive: drop, create collections, insert, build indexes.
    async fn restore_database(&self, client: &Client, name: &str, file: &str, files: &RestoreFiles) -> Result<()> {
        let input = files.open(file)?;
        let (tx, mut rx) = mpsc::channel::<std::result::Result<Event, String>>(2);
        let (prelude_tx, prelude_rx) = tokio::sync::oneshot::channel();
        // The archive is read (decrypted, decompressed, parsed) on a blocking thread.
        let reader_task = tokio::task::spawn_blocking(move || {
            let mut reader = match archive::Reader::open(std::io::BufReader::with_capacity(256 * 1024, input)) {
                Ok(r) => r,
                Err(e) => {
                    let _ = prelude_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = prelude_tx.send(Ok(reader.collections.clone()));
            loop {
                match reader.next_event(BATCH_DOCS, BATCH_BYTES) {
                    Ok(Some(event)) => {
                        if tx.blocking_send(Ok(event)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let broken = |e: String| {
            err(format!("{file}: {e}; database {name} is only partly restored: restore an older backup with --from ID"))
        };
        let collections = prelude_rx
            .await
            .map_err(|_| err(format!("{file}: the archive reader stopped")))?
            .map_err(|e| err(format!("{file}: {e}")))?;
        if let Some(other) = collections.iter().find(|c| c.db != name) {
            return Err(err(format!("{file} holds database {}, not {name}: the backup does not match its manifest", other.db)));
        }

        let db = client.database(name);
        db.drop().await.map_err(|e| err(format!("cannot drop database {name}: {}", brief(&e))))?;
        tracing::info!("mongodb: dropped {name}; restoring {} collection(s)", collections.len());
        let partly = |what: String| {
            err(format!("{what}; database {name} is only partly restored: run the restore again (it starts over)"))
        };
        for c in collections.iter().filter(|c| c.kind == "collection") {
            let mut create = doc! { "create": c.collection.clone() };
            create.extend(c.options.clone());
            db.run_command(create)
                .await
                .map_err(|e| partly(format!("cannot create collection {name}.{}: {}", c.collection, brief(&e))))?;
        }

        let mut inserted: HashMap<String, u64> = HashMap::new();
        while let Some(event) = rx.recv().await {
            match event.map_err(broken)? {
                Event::Documents { collection, docs } => {
                    let n = docs.len() as u64;
                    db.collection::<RawDocumentBuf>(&collection)
                        .insert_many(docs)
                        .ordered(true)
                        // The documents were valid when written; a validator added since must
                        // not make the restore differ from the backup.
                        .bypass_document_validation(true)
                        .await
                        .map_err(|e| partly(format!("inserting into {name}.{collection} failed: {}", brief(&e))))?;
                    *inserted.entry(collection).or_default() += n;
                }
                Event::End { collection, count } => {
                    tracing::debug!("mongodb: {name}.{collection}: {count} documents restored");
                }
            }
        }
        reader_task.await.map_err(|e| err(format!("{file}: the archive reader failed: {e}")))?;

        for c in collections.iter().filter(|c| c.kind == "collection") {
            let indexes: Vec<Bson> = c
                .indexes
                .iter()
                .filter(|i| i.get_str("name").ok() != Some("_id_"))
                .map(|i| {
                    let mut index = i.clone();
                    // The server picks the index version; `ns` is obsolete and refused by newer servers.
                    index.remove("v");
                    index.remove("ns");
                    Bson::Document(index)
                })
                .collect();
            if indexes.is_empty() {
                continue;
            }
            db.run_command(doc! { "createIndexes": c.collection.clone(), "indexes": indexes })
                .await
                .map_err(|e| partly(format!("cannot create the indexes of {name}.{}: {}", c.collection, brief(&e))))?;
        }
        // Views last: they may read from the collections above.
        for c in collections.iter().filter(|c| c.kind == "view") {
            let mut create = doc! { "create": c.collection.clone() };
            create.extend(c.options.clone());
            db.run_command(create).await.map_err(|e| partly(format!("cannot create view {name}.{}: {}", c.collection, brief(&e))))?;
        }
        Ok(())
    }

    /// Documents per collection (views left out), as the target holds them now.
    async fn count_documents(client: &Client, name: &str) -> Result<BTreeMap<String, u64>> {
        let db = client.database(name);
        let failed = |e: mongodb::error::Error| err(format!("cannot count the documents of {name}: {}", brief(&e)));
        let specs: Vec<Document> = db
            .run_cursor_command(doc! { "listCollections": 1, "filter": { "type": "collection" } })
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        let mut counts = BTreeMap::new();
        for spec in specs {
            let Ok(collection) = spec.get_str("name") else { continue };
            if collection.starts_with("system.") {
                continue;
            }
            let n = db.collection::<Document>(collection).count_documents(doc! {}).await.map_err(failed)?;
            counts.insert(collection.to_string(), n);
        }
        Ok(counts)
    }
}

/// The `databases` map of a manifest: database name → archive file.
fn manifest_databases(manifest: &Manifest) -> Result<BTreeMap<String, String>> {
    manifest
        .extra
        .get("databases")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| err("the manifest lists no databases: this is not a mongodb dump backup"))
}

#[async_trait]
impl Store for MongoDb {
    async fn backup(&self, sink: &mut RunWriter<'_>) -> Result<StoreBackup> {
        let client = self.client().await?;
        let databases = self.databases(&client).await?;
        let server_version = Self::server_version(&client).await?;
        // Every database is listed before any data moves, so a collection Lifeboat cannot back
        // up fails the run before anything is uploaded.
        let mut plans = Vec::new();
        for db in &databases {
            plans.push(self.plan(&client, db).await?);
        }
        let mut out = StoreBackup { count_unit: "documents".into(), ..Default::default() };
        out.tool_versions.insert("mongodb".into(), server_version.clone());
        out.tool_versions.insert("archive".into(), format!("mongodump archive format {}", archive::FORMAT_VERSION));
        let mut files = serde_json::Map::new();
        for plan in plans {
            let name = plan.name.clone();
            tracing::info!("mongodb: dumping database {name} ({} collection(s))", plan.collections.len());
            let counts = self.dump_database(&client, plan, &server_version, sink).await?;
            out.counts.insert(name.clone(), counts);
            files.insert(name.clone(), archive_file_name(&name).into());
        }
        out.extra.insert("databases".into(), serde_json::Value::Object(files));
        out.extra.insert("format".into(), "mongodump-archive".into());
        Ok(out)
    }

    async fn check_target(&self) -> Result<()> {
        self.client().await.map(|_| ())
    }

    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts> {
        let databases = manifest_databases(manifest)?;
        // Every archive must open as the right database before any database is dropped.
        for (name, file) in &databases {
            let input = files.open(file)?;
            let (file, name) = (file.clone(), name.clone());
            tokio::task::spawn_blocking(move || -> Result<()> {
                let reader = archive::Reader::open(std::io::BufReader::new(input))
                    .map_err(|e| err(format!("{file}: {e}; nothing was restored")))?;
                if let Some(other) = reader.collections.iter().find(|c| c.db != name) {
                    return Err(err(format!(
                        "{file} holds database {}, not {name}: the backup does not match its manifest; nothing was restored",
                        other.db
                    )));
                }
                Ok(())
            })
            .await
            .map_err(|e| err(e.to_string()))??;
        }
        let client = self.client().await?;
        let mut found = Counts::new();
        for (name, file) in &databases {
            tracing::info!("mongodb: restoring database {name}");
            self.restore_database(&client, name, file, files).await?;
            found.insert(name.clone(), Self::count_documents(&client, name).await?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::archive::*;
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
    fn names_and_urls() {
        assert_eq!(archive_file_name("user-mgnt"), "db-user-mgnt.archive.zst.age");
        assert_eq!(archive_file_name("a b"), "db-a_b.archive.zst.age");
        assert_eq!(url_hosts("mongodb://app@db1:27017,db2:27017/admin?replicaSet=rs0"), "db1:27017,db2:27017");
        assert!(url_has_password("mongodb://app:secret@db1:27017/"));
        assert!(!url_has_password("mongodb://app@db1:27017/?authSource=admin"));
        assert!(!url_has_password("mongodb://db1:27017"));
        assert_eq!(archive_server_version("7.0.42"), "7.0.42");
        assert_eq!(archive_server_version("6.0.3-rc1"), "6.0.3");
        assert_eq!(archive_server_version("weird"), "0.0.0");
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

    fn read_all(bytes: &[u8]) -> std::io::Result<(Vec<CollectionMeta>, Vec<Event>)> {
        let mut reader = Reader::open(bytes)?;
        let mut events = Vec::new();
        while let Some(e) = reader.next_event(2, 1 << 20)? {
            events.push(e);
        }
        Ok((reader.collections.clone(), events))
    }

    #[test]
    fn archive_round_trips_metadata_and_documents_in_batches() {
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
        let (metas, events) = read_all(&bytes).unwrap();
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

    #[test]
    fn damaged_archives_are_refused() {
        let docs: Vec<Document> = (0..3).map(|i| doc! { "_id": i, "x": "abcdef" }).collect();
        let good = sample(&docs);

        // A flipped byte inside a document's string: the CRC catches it.
        let mut flipped = good.clone();
        let pos = flipped.windows(6).rposition(|w| w == b"abcdef").unwrap();
        flipped[pos] ^= 0x01;
        let e = read_all(&flipped).unwrap_err();
        assert!(e.to_string().contains("CRC mismatch for hearth.people"), "{e}");

        // Cut anywhere after the prelude: the reader reports truncation, never a clean end.
        for cut in [good.len() - 1, good.len() - 4, good.len() / 2 + 3] {
            let e = read_all(&good[..cut]).unwrap_err();
            assert!(e.to_string().contains("truncated"), "cut at {cut}: {e}");
        }

        let e = Reader::open(&b"PGDMP\x01\x0e\x00"[..]).err().unwrap();
        assert!(e.to_string().contains("not a MongoDB archive"), "{e}");
        let e = Reader::open(&b""[..]).err().unwrap();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}

impl Datastore for MongoDb {
    type Config = MongoConfig;
    const TYPES: &'static [StoreType] = &[StoreType::Dump];

    fn new(cfg: MongoConfig, ctx: &StoreContext) -> Result<MongoDb> {
        MongoDb::new(cfg, ctx)
    }
}
