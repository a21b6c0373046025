//! MongoDB dump backups and restores, end to end against a real FerretDB 1.24.2 (MongoDB wire
//! protocol, storing in the test PostgreSQL) and a real sshd. Each test uses its own database.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::mongo::*;
use common::*;
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc, oid::ObjectId, spec::BinarySubtype};
use sha2::Digest;

fn command(db: &str, cmd: Document) -> Document {
    block(mongo().database(db).run_command(cmd.clone())).unwrap_or_else(|e| panic!("{cmd} on {db}: {e}"))
}

fn count(db: &str, collection: &str) -> u64 {
    block(mongo().database(db).collection::<Document>(collection).count_documents(doc! {})).unwrap()
}

fn database_names() -> Vec<String> {
    block(mongo().list_database_names()).unwrap()
}

const GIVEN: [&str; 8] = ["Zoë", "José", "Ngozi", "Åsa", "Nguyễn", "Ольга", "محمد", "李"];
const CITIES: [&str; 4] = ["Lagos", "Kraków", "São Paulo", "Zürich"];

fn oid(i: u64) -> ObjectId {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&0x6500_0000u32.to_be_bytes());
    b[4..].copy_from_slice(&i.to_be_bytes());
    ObjectId::from_bytes(b)
}

fn person(i: u64) -> Document {
    let photo: Vec<u8> = (0..64u64).map(|k| ((i * 31 + k * 7) % 256) as u8).collect();
    doc! {
        "_id": oid(i),
        "nid": format!("NID-{i:08}"),
        "name": { "given": GIVEN[(i % 8) as usize], "family": format!("Family-{}", i % 97) },
        "born": bson::DateTime::from_millis(-631_152_000_000 + i as i64 * 86_400_000),
        "photo": bson::Binary { subtype: BinarySubtype::Generic, bytes: photo },
        "uuid": bson::Binary { subtype: BinarySubtype::Uuid, bytes: (i as u128).to_be_bytes().to_vec() },
        "tags": ["registered", (i % 3) as i32],
        "addresses": [ { "city": CITIES[(i % 4) as usize], "lines": ["Plot 12", format!("Ward {}", i % 11)] } ],
        "score": i as f64 / 3.0,
        "big": (i as i64) << 33,
        "active": i.is_multiple_of(2),
        "note": if i.is_multiple_of(5) { Bson::Null } else { Bson::String("ok ✓".into()) },
        "stamp": Bson::Timestamp(bson::Timestamp { time: 1_700_000_000 + i as u32, increment: 1 }),
        "pattern": Bson::RegularExpression(bson::Regex { pattern: format!("^NID-{i}"), options: "i".into() }),
    }
}

fn insert_people(db: &str, from: u64, to: u64) {
    let people = mongo().database(db).collection::<Document>("people");
    let mut i = from;
    while i < to {
        let end = (i + 1000).min(to);
        block(people.insert_many((i..end).map(person).collect::<Vec<_>>())).unwrap();
        i = end;
    }
}

/// Creates database `db` with what a registry's MongoDB holds: a larger collection with nested
/// documents, arrays, ObjectIds, dates, binary (generic and UUID), a unique and a compound index;
/// a second collection referring to it; an empty collection with an index; a capped collection.
fn seed_mongo(db: &str, people: u64) {
    block(mongo().database(db).drop()).unwrap();
    command(db, doc! { "create": "people" });
    insert_people(db, 0, people);
    command(
        db,
        doc! { "createIndexes": "people", "indexes": [
            { "key": { "nid": 1 }, "name": "nid_unique", "unique": true },
            { "key": { "name.family": 1, "born": -1 }, "name": "family_born" },
        ] },
    );
    let events: Vec<Document> = (0..people / 2)
        .map(|i| {
            doc! {
                "_id": i as i64,
                "person": oid(i * 2),
                "kind": if i % 3 == 0 { "death" } else { "birth" },
                "at": bson::DateTime::from_millis(1_600_000_000_000 + i as i64 * 60_000),
                "details": { "place": { "city": CITIES[(i % 4) as usize], "country": "NG" },
                             "witnesses": [ { "name": "A", "id": oid(i + 1) }, { "name": "B", "id": Bson::Null } ] },
            }
        })
        .collect();
    if !events.is_empty() {
        block(mongo().database(db).collection::<Document>("events").insert_many(events)).unwrap();
    }
    command(db, doc! { "createIndexes": "events", "indexes": [ { "key": { "person": 1, "at": -1 }, "name": "person_at" } ] });
    command(db, doc! { "create": "empty" });
    command(db, doc! { "createIndexes": "empty", "indexes": [ { "key": { "x": 1 }, "name": "x_1" } ] });
    command(db, doc! { "create": "log", "capped": true, "size": 1_048_576i64 });
    let log: Vec<Document> = (0..10).map(|i| doc! { "_id": i, "message": format!("entry {i}") }).collect();
    block(mongo().database(db).collection::<Document>("log").insert_many(log)).unwrap();
}

/// A digest of everything a restore must bring back: collections, their options, their indexes
/// and every document byte for byte (canonical Extended JSON, in _id order).
fn fingerprint(db: &str) -> String {
    fingerprint_of(db, true)
}

/// [`fingerprint`], with or without each collection's indexes.
fn fingerprint_of(db: &str, with_indexes: bool) -> String {
    block(async {
        let database = mongo().database(db);
        let mut specs: Vec<Document> =
            database.run_cursor_command(doc! { "listCollections": 1 }).await.unwrap().try_collect().await.unwrap();
        specs.sort_by(|a, b| a.get_str("name").unwrap().cmp(b.get_str("name").unwrap()));
        let mut hasher = sha2::Sha256::new();
        let mut summary = Vec::new();
        for spec in specs {
            let name = spec.get_str("name").unwrap().to_string();
            let options = spec.get_document("options").cloned().unwrap_or_default();
            let mut indexes: Vec<Document> =
                database.run_cursor_command(doc! { "listIndexes": &name }).await.unwrap().try_collect().await.unwrap();
            indexes.sort_by(|a, b| a.get_str("name").unwrap().cmp(b.get_str("name").unwrap()));
            let mut cursor = database.collection::<Document>(&name).find(doc! {}).sort(doc! { "_id": 1 }).await.unwrap();
            let mut n = 0;
            while cursor.advance().await.unwrap() {
                let d: Document = cursor.deserialize_current().unwrap();
                hasher.update(Bson::Document(d).into_canonical_extjson().to_string());
                n += 1;
            }
            let index_list: Vec<String> = match with_indexes {
                true => indexes.iter().map(|i| Bson::Document(i.clone()).into_relaxed_extjson().to_string()).collect(),
                false => Vec::new(),
            };
            summary.push(format!("{name} {options} [{}] {n}", index_list.join(",")));
        }
        format!("{} docs:{}", summary.join(" | "), hex::encode(hasher.finalize()))
    })
}

fn mongo_block(db: &str, extra: &str) -> String {
    format!("stores:\n  mongodb:\n    url: mongodb://127.0.0.1:{MONGO_PORT}/\n    databases: [{db}]\n{extra}")
}

/// A case whose database name is unique to this test binary run.
fn mongo_case(name: &str) -> Case {
    let mut case = Case::new(&format!("m_{name}"));
    case.db = format!("lb_{name}");
    mongo();
    case
}

/// One test database on FerretDB: collections with options, indexes, an empty one.
struct Mongo {
    case: Case,
}

impl RoundTrip for Mongo {
    const STORE: &'static str = "mongodb";

    fn stores_block(&self) -> String {
        mongo_block(&self.case.db, "")
    }

    fn fingerprint(&self) -> String {
        fingerprint(&self.case.db)
    }

    /// The documents written per collection, one archive, the server version.
    fn check_manifest(&self, manifest: &serde_json::Value, _run_dir: &Path) {
        let counts = &manifest["counts"][&self.case.db];
        assert_eq!(counts["people"], 3000);
        assert_eq!(counts["events"], 1500);
        assert_eq!(counts["empty"], 0);
        assert_eq!(counts["log"], 10);
        assert_eq!(counts.as_object().unwrap().len(), 4, "{counts}");
        assert_eq!(manifest["count_unit"], "documents");
        assert_eq!(manifest["tool_versions"]["mongodb"], "7.0.42");
        let files = manifest["files"].as_array().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0]["name"], format!("db-{}.archive.zst.age", self.case.db));
    }

    /// Every way a restore must undo: lost and changed documents, a lost index and collection,
    /// an extra collection.
    fn damage(&self) {
        let db = mongo().database(&self.case.db);
        block(db.collection::<Document>("people").delete_many(doc! { "active": true })).unwrap();
        block(db.collection::<Document>("events").update_many(doc! {}, doc! { "$set": { "kind": "changed" } })).unwrap();
        command(&self.case.db, doc! { "dropIndexes": "people", "index": "nid_unique" });
        block(db.collection::<Document>("empty").drop()).unwrap();
        command(&self.case.db, doc! { "create": "junk" });
    }

    fn restore_says(&self) -> String {
        "verified 4510 documents".into()
    }

    /// The unique index is enforced again.
    fn after_restore(&self) {
        let people = mongo().database(&self.case.db).collection::<Document>("people");
        let dup = block(people.insert_one(doc! { "nid": "NID-00000001" }));
        assert!(dup.is_err(), "a duplicate nid must be refused after restore");
    }
}

fn roundtrip(name: &str, transport: Transport) {
    let case = mongo_case(name);
    seed_mongo(&case.db, 3000);
    let store = Mongo { case };
    common::roundtrip(&store.case, &store, transport);
}

#[test]
fn roundtrip_over_ssh() {
    roundtrip("ssh_roundtrip", Transport::Ssh);
}

#[test]
fn roundtrip_to_local_folder() {
    roundtrip("file_roundtrip", Transport::File);
}

/// Reads a plain archive the way mongorestore does, with the same library calls mongorestore
/// makes: MongoDB's Go driver decodes the header, metadata and namespace blocks into
/// mongorestore's own structures, parses the metadata with `bson.UnmarshalExtJSON(..., true, ...)`
/// (canonical only, as mongorestore does), and Go's `hash/crc64` (ECMA table) recomputes each
/// collection's CRC. mongorestore itself cannot be installed here (see docs/restore-mongodb.md).
const GO_ARCHIVE_CHECK: &str = r#"package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc64"
	"io"
	"os"

	"go.mongodb.org/mongo-driver/v2/bson"
)

type header struct {
	ConcurrentCollections int32  `bson:"concurrent_collections"`
	FormatVersion         string `bson:"version"`
	ServerVersion         string `bson:"server_version"`
	ToolVersion           string `bson:"tool_version"`
}

type collectionMetadata struct {
	Database   string `bson:"db"`
	Collection string `bson:"collection"`
	Metadata   string `bson:"metadata"`
	Size       int    `bson:"size"`
	Type       string `bson:"type"`
}

type namespaceHeader struct {
	Database   string `bson:"db"`
	Collection string `bson:"collection"`
	EOF        bool   `bson:"EOF"`
	CRC        int64  `bson:"CRC"`
}

type metadata struct {
	Options        bson.D   `bson:"options,omitempty"`
	Indexes        []bson.D `bson:"indexes"`
	UUID           string   `bson:"uuid"`
	CollectionName string   `bson:"collectionName"`
}

type collectionReport struct {
	Db       string            `json:"db"`
	Type     string            `json:"type"`
	Options  string            `json:"options"`
	Indexes  map[string]string `json:"indexes"`
	Docs     int               `json:"docs"`
	Closed   bool              `json:"closed"`
	hash     hash.Hash64
}

var errTerminator = errors.New("terminator")

func next(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(size[:])
	if n == 0xffffffff {
		return nil, errTerminator
	}
	if n < 5 || n > 16*1024*1024+16*1024 {
		return nil, fmt.Errorf("bad length %d", n)
	}
	doc := make([]byte, n)
	copy(doc, size[:])
	if _, err := io.ReadFull(r, doc[4:]); err != nil {
		return nil, fmt.Errorf("truncated document: %v", err)
	}
	if err := bson.Raw(doc).Validate(); err != nil {
		return nil, fmt.Errorf("invalid BSON: %v", err)
	}
	return doc, nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	var magic [4]byte
	if _, err := io.ReadFull(in, magic[:]); err != nil || binary.LittleEndian.Uint32(magic[:]) != 0x8199e26d {
		fail("bad magic number %x", magic)
	}
	raw, err := next(in)
	if err != nil {
		fail("header: %v", err)
	}
	var h header
	if err := bson.Unmarshal(raw, &h); err != nil {
		fail("header: %v", err)
	}
	report := map[string]*collectionReport{}
	for {
		raw, err := next(in)
		if err == errTerminator {
			break
		}
		if err != nil {
			fail("prelude: %v", err)
		}
		var cm collectionMetadata
		if err := bson.Unmarshal(raw, &cm); err != nil {
			fail("collection metadata: %v", err)
		}
		var md metadata
		if err := bson.UnmarshalExtJSON([]byte(cm.Metadata), true, &md); err != nil {
			fail("metadata of %s is not canonical Extended JSON: %v", cm.Collection, err)
		}
		if md.CollectionName != cm.Collection {
			fail("metadata names %q for %q", md.CollectionName, cm.Collection)
		}
		options, _ := bson.MarshalExtJSON(md.Options, false, false)
		c := &collectionReport{Db: cm.Database, Type: cm.Type, Options: string(options), Indexes: map[string]string{}, hash: crc64.New(crc64.MakeTable(crc64.ECMA))}
		for _, index := range md.Indexes {
			text, _ := bson.MarshalExtJSON(index, false, false)
			name := ""
			for _, e := range index {
				if e.Key == "name" {
					name, _ = e.Value.(string)
				}
			}
			c.Indexes[name] = string(text)
		}
		report[cm.Collection] = c
	}
	for {
		raw, err := next(in)
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("block header: %v", err)
		}
		var nh namespaceHeader
		if err := bson.Unmarshal(raw, &nh); err != nil {
			fail("block header: %v", err)
		}
		c, ok := report[nh.Collection]
		if !ok || c.Db != nh.Database {
			fail("data for %s.%s, which the prelude does not list", nh.Database, nh.Collection)
		}
		if c.Closed {
			fail("%s continues after its EOF block", nh.Collection)
		}
		for {
			doc, err := next(in)
			if err == errTerminator {
				break
			}
			if err != nil {
				fail("documents of %s: %v", nh.Collection, err)
			}
			if nh.EOF {
				fail("EOF block of %s has a body", nh.Collection)
			}
			var d bson.D
			if err := bson.Unmarshal(doc, &d); err != nil {
				fail("document of %s: %v", nh.Collection, err)
			}
			c.hash.Write(doc)
			c.Docs++
		}
		if nh.EOF {
			if int64(c.hash.Sum64()) != nh.CRC {
				fail("CRC mismatch for %s: %d computed, %d stored", nh.Collection, int64(c.hash.Sum64()), nh.CRC)
			}
			c.Closed = true
		}
	}
	for name, c := range report {
		if !c.Closed {
			fail("%s never closed", name)
		}
	}
	out, _ := json.Marshal(map[string]any{"header": h, "collections": report})
	fmt.Println(string(out))
}
"#;

/// Builds the Go archive checker once (MongoDB's Go driver from the Go module proxy).
fn go_archive_checker() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let tools = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lifeboat-tools");
        let digest = hex::encode(&sha2::Sha256::digest(GO_ARCHIVE_CHECK.as_bytes())[..6]);
        let bin = tools.join("bin").join(format!("mongo-archive-check-{digest}"));
        if bin.exists() {
            return bin;
        }
        let go = if Path::new("/usr/local/go/bin/go").exists() { "/usr/local/go/bin/go" } else { "go" };
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("main.go"), GO_ARCHIVE_CHECK).unwrap();
        std::fs::write(src.path().join("go.mod"), "module archivecheck\n\ngo 1.22\n\nrequire go.mongodb.org/mongo-driver/v2 v2.10.0\n")
            .unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(go).args(args).current_dir(src.path()).env("GOFLAGS", "-mod=mod").output().expect("run go");
            assert!(out.status.success(), "go {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["mod", "tidy"]);
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        run(&["build", "-o", bin.to_str().unwrap(), "."]);
        bin
    })
    .clone()
}

/// The run's archive decoded by the documented recipe (`age -d | zstd -d`) and read by MongoDB's
/// Go libraries: (stored file, plain archive, the checker's report).
fn decode_and_check_archive(case: &Case, dir: &Path) -> (PathBuf, PathBuf, serde_json::Value) {
    let file = dir.join(format!("db-{}.archive.zst.age", case.db));
    let plain = case.dir.path().join("plain.archive");
    let script =
        format!("set -euo pipefail; age -d -i {} {} | zstd -d > {}", case.identity_file.display(), file.display(), plain.display());
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "age | zstd failed: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(go_archive_checker()).stdin(std::fs::File::open(&plain).unwrap()).output().unwrap();
    assert!(out.status.success(), "MongoDB's Go libraries refuse the archive: {}", String::from_utf8_lossy(&out.stderr));
    (file, plain, serde_json::from_slice(&out.stdout).unwrap())
}

/// The documented recipe: `age -d | zstd -d` gives a plain mongodump archive that MongoDB's
/// own libraries read (and `mongorestore --archive` restores, where it is installed).
#[test]
fn by_hand_recipe_gives_a_mongodump_archive() {
    let case = mongo_case("by_hand");
    seed_mongo(&case.db, 500);
    let before_data = fingerprint_of(&case.db, false);
    let stores = mongo_block(&case.db, "");
    assert_ok(&lifeboat(&case.backup_config_with(&Transport::File, &stores, "mongo-backup.yaml"), &["backup"]));
    let runs = case.runs(&case.backup_config_with(&Transport::File, &stores, "mongo-backup.yaml"));
    let (dir, manifest) = case.manifest_of(&runs[0]);
    let (file, _, report) = decode_and_check_archive(&case, &dir);
    assert_eq!(report["header"]["FormatVersion"], "0.1");
    assert_eq!(report["header"]["ServerVersion"], "7.0.42");
    let collections = report["collections"].as_object().unwrap();
    let names: Vec<&String> = collections.keys().collect();
    assert_eq!(names, vec!["empty", "events", "log", "people"]);
    for (name, c) in collections {
        assert_eq!(c["db"], case.db.as_str());
        assert_eq!(c["type"], "collection");
        assert_eq!(c["docs"], manifest["counts"][&case.db][name], "{name}: documents in the archive = manifest count");
    }
    let people_indexes = collections["people"]["indexes"].as_object().unwrap();
    assert!(people_indexes["nid_unique"].as_str().unwrap().contains(r#""unique":true"#), "{people_indexes:?}");
    assert!(people_indexes.contains_key("family_born") && people_indexes.contains_key("_id_"));
    assert!(collections["empty"]["indexes"].as_object().unwrap().contains_key("x_1"));
    assert!(collections["log"]["options"].as_str().unwrap().contains(r#""capped":true"#), "{}", collections["log"]);

    // Where mongorestore is installed (scripts/tools/mongo-tools), the recipe itself restores the
    // database. Against FerretDB stock mongorestore needs --noIndexRestore: it always sends the
    // `ns` index option, which FerretDB refuses; the indexes are checked in the archive above.
    if let Some(mongorestore) = find_tool("mongorestore") {
        block(mongo().database(&case.db).drop()).unwrap();
        let script = format!(
            "set -euo pipefail; age -d -i {} {} | zstd -d | {} --archive --drop --noIndexRestore --uri mongodb://127.0.0.1:{MONGO_PORT}/",
            case.identity_file.display(),
            file.display(),
            mongorestore.display()
        );
        let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "mongorestore failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(fingerprint_of(&case.db, false), before_data);
    } else {
        eprintln!("mongorestore is not installed: checked the archive with MongoDB's Go libraries only");
    }
}

/// The block headers of a plain mongodump archive, in order: (collection, EOF).
fn archive_blocks(plain: &[u8]) -> Vec<(String, bool)> {
    let mut at = 4; // magic number
    let mut in_prelude = true;
    let mut expect_header = false;
    let mut blocks = Vec::new();
    while at + 4 <= plain.len() {
        let len = u32::from_le_bytes(plain[at..at + 4].try_into().unwrap());
        if len == u32::MAX {
            at += 4;
            in_prelude = false;
            expect_header = true;
            continue;
        }
        let doc = bson::RawDocument::from_bytes(&plain[at..at + len as usize]).unwrap();
        at += len as usize;
        if in_prelude {
            continue;
        }
        if expect_header {
            blocks.push((doc.get_str("collection").unwrap().to_string(), doc.get_bool("EOF").unwrap()));
            expect_header = false;
        }
    }
    blocks
}

/// Collections are read several at once: blocks of different collections interleave in the
/// archive, each collection still in order with its CRC (checked by MongoDB's Go libraries), and
/// the restore, which inserts several batches at once, brings every document back.
#[test]
fn collections_read_at_once_interleave_and_round_trip() {
    let case = mongo_case("interleave");
    let db = mongo().database(&case.db);
    block(db.drop()).unwrap();
    // Three collections of about 4 MB each, in several cursor batches (2,000 documents) and
    // several 1 MiB blocks apiece: while one reader waits for its next batch, the others' go out.
    for name in ["births", "deaths", "marriages"] {
        let docs: Vec<Document> = (0..6000u64)
            .map(|i| doc! { "_id": format!("{name}-{i:05}"), "i": i as i64, "text": "x".repeat(600 + (i % 97) as usize) })
            .collect();
        for chunk in docs.chunks(1000) {
            block(db.collection::<Document>(name).insert_many(chunk.to_vec())).unwrap();
        }
    }
    command(&case.db, doc! { "createIndexes": "births", "indexes": [ { "key": { "i": 1 }, "name": "i_1", "unique": true } ] });
    let before = fingerprint(&case.db);
    let stores = mongo_block(&case.db, "");
    let backup = case.backup_config_with(&Transport::Ssh, &stores, "mongo-backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&backup);
    let (dir, manifest) = case.manifest_of(&runs[0]);
    for name in ["births", "deaths", "marriages"] {
        assert_eq!(manifest["counts"][&case.db][name], 6000, "{name}");
    }
    let (_, plain, _) = decode_and_check_archive(&case, &dir);

    let blocks = archive_blocks(&std::fs::read(&plain).unwrap());
    let data: Vec<&str> = blocks.iter().filter(|(_, eof)| !eof).map(|(c, _)| c.as_str()).collect();
    assert!(data.iter().filter(|c| **c == "births").count() >= 3, "births in several blocks: {data:?}");
    let interleaved = ["births", "deaths", "marriages"].iter().any(|name| {
        let at: Vec<usize> = data.iter().enumerate().filter(|(_, c)| *c == name).map(|(i, _)| i).collect();
        at.last().unwrap() - at.first().unwrap() + 1 > at.len()
    });
    assert!(interleaved, "blocks of the collections interleave, not one collection after another: {data:?}");

    block(db.drop()).unwrap();
    let restore = case.restore_config_with(&Transport::Ssh, &stores, "mongo-restore.yaml");
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("verified 18000 documents"), "{}", stderr(&out));
    assert_eq!(fingerprint(&case.db), before);
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let tools = PathBuf::from(std::env::var("HOME").ok()?).join(".cache/lifeboat-tools/bin").join(name);
    if tools.exists() {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.exists()))
}

#[test]
fn writes_during_backup_do_not_cause_a_false_mismatch() {
    let case = mongo_case("concurrent_writes");
    seed_mongo(&case.db, 6000);
    let stores = mongo_block(&case.db, "");
    let backup = case.backup_config_with(&Transport::Ssh, &stores, "mongo-backup.yaml");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (case.db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                insert_people(&db, next, next + 50);
                block(
                    mongo()
                        .database(&db)
                        .collection::<Document>("events")
                        .delete_many(doc! { "_id": { "$lt": ((next - 1_000_000) / 10) as i64 } }),
                )
                .unwrap();
                next += 50;
            }
            next - 1_000_000
        })
    };
    let out = lifeboat(&backup, &["backup"]);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert_ok(&out);
    assert!(written > 0, "the writer ran during the backup");
    let out = lifeboat(&case.restore_config_with(&Transport::Ssh, &stores, "mongo-restore.yaml"), &["restore", "--yes"]);
    assert_ok(&out);
}

/// A FerretDB of this test's own (SQLite backend, its own port and folder), for tests that need
/// a server no other test writes to. Stopped by its pid when dropped.
struct PrivateFerret {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateFerret {
    fn start() -> PrivateFerret {
        mongo(); // the shared server's install step also provides the binary
        let tools = std::env::var("LIFEBOAT_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lifeboat-tools"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sqlite")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(tools.join("bin/ferretdb"))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .arg(format!("--state-dir={}", dir.path().display()))
            .args(["--telemetry=disable", "--debug-addr=-", "--log-level=WARN", "--handler=sqlite"])
            .arg(format!("--sqlite-url=file:{}/sqlite/", dir.path().display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ferretdb");
        let mut server = PrivateFerret { child, port, _dir: dir };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(server.child.try_wait().unwrap().is_none(), "the private FerretDB exited at start");
            assert!(started.elapsed() < Duration::from_secs(30), "the private FerretDB did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn client(&self) -> mongodb::Client {
        block(mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{}/", self.port))).unwrap()
    }
}

impl Drop for PrivateFerret {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn all_databases_but_the_system_ones_when_none_are_listed() {
    let case = mongo_case("all_dbs");
    let server = PrivateFerret::start();
    let client = server.client();
    block(client.database("registry").collection::<Document>("people").insert_many((0..20).map(person).collect::<Vec<_>>())).unwrap();
    block(client.database("user-mgnt").collection::<Document>("users").insert_many((0..10).map(|i| doc! { "_id": i }))).unwrap();
    block(client.database("admin").collection::<Document>("settings").insert_one(doc! { "_id": 1 })).unwrap();
    let stores = format!("stores:\n  mongodb:\n    url: mongodb://127.0.0.1:{}/\n", server.port);
    let backup = case.backup_config_with(&Transport::File, &stores, "mongo-backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&backup);
    let (_, manifest) = case.manifest_of(&runs[0]);
    assert_eq!(manifest["counts"], serde_json::json!({ "registry": { "people": 20 }, "user-mgnt": { "users": 10 } }));
    assert_eq!(
        manifest["extra"]["databases"],
        serde_json::json!({ "registry": "db-registry.archive.zst.age", "user-mgnt": "db-user-mgnt.archive.zst.age" })
    );

    // Both come back on restore, and admin, never backed up, is left as it is.
    block(client.database("registry").drop()).unwrap();
    block(client.database("user-mgnt").collection::<Document>("users").delete_many(doc! {})).unwrap();
    assert_ok(&lifeboat(&case.restore_config_with(&Transport::File, &stores, "mongo-restore.yaml"), &["restore", "--yes"]));
    let users = block(client.database("user-mgnt").collection::<Document>("users").count_documents(doc! {})).unwrap();
    let people = block(client.database("registry").collection::<Document>("people").count_documents(doc! {})).unwrap();
    let settings = block(client.database("admin").collection::<Document>("settings").count_documents(doc! {})).unwrap();
    assert_eq!((people, users, settings), (20, 10, 1));
}

// ---- bad input: one clear line, the right exit code, nothing lost ----

#[test]
fn missing_database_is_named_before_any_data_moves() {
    let case = mongo_case("missing_db");
    seed_mongo(&case.db, 5);
    let stores = mongo_block(&format!("{}, lb_no_such_database", case.db), "");
    let config = case.backup_config_with(&Transport::File, &stores, "mongo-backup.yaml");
    let out = lifeboat(&config, &["backup"]);
    assert_fails(&out, 1, "database `lb_no_such_database` named in stores.mongodb.databases does not exist");
    assert!(case.runs(&config).is_empty(), "no run left behind");
    assert!(!database_names().contains(&"lb_no_such_database".to_string()), "nothing was created");
}

#[test]
fn server_down_is_a_clear_error() {
    let case = mongo_case("no_server");
    let stores = format!(
        "stores:\n  mongodb:\n    url: mongodb://127.0.0.1:{CLOSED_MONGO_PORT}/?serverSelectionTimeoutMS=2000\n    databases: [x]\n"
    );
    let out = lifeboat(&case.backup_config_with(&Transport::File, &stores, "mongo-backup.yaml"), &["backup"]);
    assert_fails(&out, 1, &format!("cannot connect to MongoDB at 127.0.0.1:{CLOSED_MONGO_PORT}"));
}

#[test]
fn password_in_the_url_is_refused() {
    let case = mongo_case("url_password");
    let stores = format!("stores:\n  mongodb:\n    url: mongodb://app:secret@127.0.0.1:{MONGO_PORT}/\n");
    let line =
        assert_fails(&lifeboat(&case.backup_config_with(&Transport::File, &stores, "mongo-backup.yaml"), &["backup"]), 2, "password_file");
    assert!(!line.contains("secret"), "the password is never printed: {line}");
}

#[test]
fn server_going_down_during_backup_leaves_no_complete_run() {
    let case = mongo_case("down_mid_backup");
    seed_mongo(&case.db, 4000);
    let stores = mongo_block(&case.db, "");
    let backup = case.backup_config_with(&Transport::Ssh, &stores, "mongo-backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let good = case.runs(&backup);

    let relay = DyingRelay::start(MONGO_PORT, 600_000);
    let failing_stores =
        stores.replace(&format!("127.0.0.1:{MONGO_PORT}/"), &format!("127.0.0.1:{}/?serverSelectionTimeoutMS=3000", relay.port));
    let failing = case.write_config("failing.yaml", &std::fs::read_to_string(&backup).unwrap().replace(&stores, &failing_stores));
    let out = lifeboat(&failing, &["backup"]);
    let line = assert_fails(&out, 1, &format!("reading {}.", case.db));
    assert!(line.contains("the run was not completed"), "{line}");

    // The earlier backup is still the newest complete one, and still restores.
    let runs = case.runs(&backup);
    assert_eq!(runs.iter().filter(|r| r["complete"] == true).count(), 1, "{runs:?}");
    assert_eq!(runs.iter().rfind(|r| r["complete"] == true).unwrap()["id"], good[0]["id"]);
    let before = fingerprint(&case.db);
    block(mongo().database(&case.db).collection::<Document>("people").delete_many(doc! {})).unwrap();
    assert_ok(&lifeboat(&case.restore_config_with(&Transport::Ssh, &stores, "mongo-restore.yaml"), &["restore", "--yes"]));
    assert_eq!(fingerprint(&case.db), before);
}

#[test]
fn postgres_backup_given_to_the_mongodb_restore_is_refused_untouched() {
    let case = mongo_case("wrong_store");
    seed_postgres(&case.db, 20);
    seed_mongo(&case.db, 30);
    let marker = fingerprint(&case.db);
    let pg = format!("stores:\n  postgres:\n    url: postgres://postgres@127.0.0.1:{PG_PORT}/postgres\n    databases: [{}]\n", case.db);
    assert_ok(&lifeboat(&case.backup_config_with(&Transport::File, &pg, "mongo-backup.yaml"), &["backup"]));
    // server_dir points the mongodb restore at the postgres run folder.
    let restore = case.restore_config_with(&Transport::File, &mongo_block(&case.db, "    server_dir: postgres\n"), "mongo-restore.yaml");
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_fails(&out, 2, "holds a postgres backup, not mongodb");
    assert_eq!(fingerprint(&case.db), marker, "the target was not touched");
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", case.db));
}

#[test]
fn interrupted_restore_can_be_run_again() {
    let case = mongo_case("interrupted_restore");
    seed_mongo(&case.db, 10000);
    let before = fingerprint(&case.db);
    let stores = mongo_block(&case.db, "");
    assert_ok(&lifeboat(&case.backup_config_with(&Transport::File, &stores, "mongo-backup.yaml"), &["backup"]));
    let restore = case.restore_config_with(&Transport::File, &stores, "mongo-restore.yaml");

    // Empty the collection first, so that documents seen in it come from the restore.
    block(mongo().database(&case.db).collection::<Document>("people").delete_many(doc! {})).unwrap();
    let mut child = spawn_lifeboat(&restore, &["restore", "--yes"]);
    // Kill it once people is being refilled: the database is then half restored.
    let started = Instant::now();
    let mut seen = 0;
    while started.elapsed() < Duration::from_secs(120) && seen == 0 {
        seen = block(mongo().database(&case.db).collection::<Document>("people").count_documents(doc! {})).unwrap_or(0);
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the restore finished ({status}) before it could be interrupted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let partial = count(&case.db, "people");
    assert!(seen > 0 && partial < 10000, "interrupted part-way: {partial} of 10000 people");
    assert_ne!(fingerprint(&case.db), before);

    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
    assert_eq!(fingerprint(&case.db), before);
}

/// `archive` with `index` added to the indexes that its prelude lists for `collection`.
fn with_index(archive: &[u8], collection: &str, index: Document) -> Vec<u8> {
    let length = |b: &[u8]| i32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
    let header = 4 + length(&archive[4..]);
    let mut out = archive[..header].to_vec();
    let mut rest = &archive[header..];
    while rest[..4] != [0xff; 4] {
        let mut meta = Document::from_reader(&rest[..length(rest)]).unwrap();
        rest = &rest[length(rest)..];
        if meta.get_str("collection") == Ok(collection) {
            let mut json: serde_json::Value = serde_json::from_str(meta.get_str("metadata").unwrap()).unwrap();
            json["indexes"].as_array_mut().unwrap().push(Bson::Document(index.clone()).into_canonical_extjson());
            meta.insert("metadata", json.to_string());
        }
        meta.to_writer(&mut out).unwrap();
    }
    out.extend_from_slice(rest);
    out
}

/// A collection's indexes are built (and the collection counted) while the archive's other
/// collections are still being inserted; an index that cannot be built over the data (here a
/// unique index over duplicate values, added to the archive by a forger holding the signing key)
/// fails the restore with one line naming the collection, and a restore of the good archive then
/// brings everything back.
#[test]
fn an_index_that_cannot_be_built_fails_the_restore_naming_its_collection() {
    let case = mongo_case("index_fails");
    seed_mongo(&case.db, 400);
    let before = fingerprint(&case.db);
    let stores = mongo_block(&case.db, "");
    let backup = case.backup_config_with(&Transport::File, &stores, "mongo-backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let restore = case.restore_config_with(&Transport::File, &stores, "mongo-restore.yaml");
    let stored = common::forge::Stored::find(&case, &backup, "mongodb", |n| n.ends_with(".archive.zst.age"));
    let original = stored.plain(&case);
    // Every event is a birth or a death: a unique index over `kind` cannot be built.
    stored.replace(&case, &with_index(&original, "events", doc! { "key": { "kind": 1 }, "name": "kind_unique", "unique": true }));
    let out = lifeboat(&restore, &["restore", "--yes"]);
    let line = assert_fails(&out, 1, &format!("cannot create the indexes of {}.events", case.db));
    assert!(line.contains(&format!("database {} is only partly restored", case.db)), "{line}");
    assert_ne!(fingerprint(&case.db), before, "the index was left out");

    stored.replace(&case, &original);
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    for collection in ["people", "events", "empty", "log"] {
        assert!(log.contains(&format!("{}.{collection}: indexes built in", case.db)), "{collection} finished on its own:\n{log}");
    }
    assert_eq!(fingerprint(&case.db), before);
}
