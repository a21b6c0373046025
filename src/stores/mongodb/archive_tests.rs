//! The mongodump archive reader: round trips, damaged and hostile archives refused, and a
//! bounded fuzz run. `PROPTEST_CASES=20000 cargo test --lib mongodb::archive` for a longer run.

use proptest::prelude::*;

use super::*;
use crate::stores::archive_fuzz::{hostile_archives, largest_allocation};
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
        options: if kind == "view" {
            doc! { "viewOn": "people", "pipeline": [] }
        } else {
            doc! { "capped": false }
        },
        indexes: vec![
            doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" },
            doc! { "v": 2, "key": { "nid": 1 }, "name": "nid_1", "unique": true },
        ],
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

/// Lifeboat reads several collections at once, so their blocks interleave: each collection's
/// documents come back in its own order, counted, with its CRC over all of its blocks.
#[tokio::test]
async fn interleaved_blocks_of_several_collections_read_back_per_collection() {
    let metas = vec![meta("a", "collection"), meta("b", "collection")];
    let mut out = prelude("7.0.0", "test", &metas);
    let (mut crc_a, mut crc_b) = (Crc64::new(), Crc64::new());
    for round in 0..3 {
        for (name, crc) in [("a", &mut crc_a), ("b", &mut crc_b)] {
            out.extend(namespace_header("hearth", name, false, 0));
            for i in 0..2 {
                let bytes = raw(doc! { "_id": format!("{name}{round}{i}") });
                crc.update(&bytes);
                out.extend(bytes);
            }
            out.extend(TERMINATOR);
        }
    }
    for (name, crc) in [("b", &crc_b), ("a", &crc_a)] {
        out.extend(namespace_header("hearth", name, true, crc.value()));
        out.extend(TERMINATOR);
    }
    let (_, events) = read_all(&out).await.unwrap();
    let mut ids: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut ends = Vec::new();
    for e in events {
        match e {
            Event::Documents { collection, docs } => {
                ids.entry(collection).or_default().extend(docs.iter().map(|d| d.get_str("_id").unwrap().to_string()))
            }
            Event::End { collection, count } => ends.push((collection, count)),
        }
    }
    assert_eq!(ids["a"], ["a00", "a01", "a10", "a11", "a20", "a21"]);
    assert_eq!(ids["b"], ["b00", "b01", "b10", "b11", "b20", "b21"]);
    assert_eq!(ends, vec![("b".into(), 6), ("a".into(), 6)]);

    // A wrong CRC on one of the interleaved collections is still caught.
    let mut bad = out.clone();
    let at = bad.len() - 4 - 8;
    bad[at] ^= 1;
    assert!(read_all(&bad).await.is_err(), "the CRC of the last closing block was changed");
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

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

/// An archive whose prelude lists `metas` (each with no documents).
fn listing(metas: &[CollectionMeta]) -> Vec<u8> {
    let mut out = prelude("7.0.0", "test", metas);
    for m in metas {
        out.extend(namespace_header(&m.db, &m.collection, false, 0));
        out.extend(TERMINATOR);
        out.extend(namespace_header(&m.db, &m.collection, true, 0));
        out.extend(TERMINATOR);
    }
    out
}

#[track_caller]
fn refused(bytes: &[u8], needle: &str) {
    let e = block_on(read_all(bytes)).expect_err("the archive is refused").to_string();
    assert!(e.contains(needle) && !e.contains('\n'), "`{needle}` missing from: {e}");
}

#[test]
fn namespaces_lifeboat_never_writes_are_refused_by_name() {
    let named = |db: &str, collection: &str, kind: &str| CollectionMeta { db: db.into(), ..meta(collection, kind) };
    refused(&listing(&[named("hearth", "system.users", "collection")]), "`hearth.system.users`, which is a system collection");
    refused(&listing(&[named("hearth", "a$b", "collection")]), "`hearth.a$b`, which is not a valid collection name");
    refused(&listing(&[named("hearth", "", "collection")]), "`hearth.`, which is not a valid collection name");
    refused(&listing(&[named("hearth", "nul\0", "collection")]), "`hearth.nul\\0`");
    refused(&listing(&[named("../etc", "x", "collection")]), "`../etc.x`, which is not a valid database name");
    refused(&listing(&[named("hearth", &"c".repeat(250), "collection")]), "longer than MongoDB allows");
    refused(&listing(&[named("hearth", "ts", "timeseries")]), "hearth.ts is a `timeseries`");
    refused(&listing(&[meta("people", "collection"), meta("people", "collection")]), "lists hearth.people twice");
    // A block for a namespace its prelude does not list (another database's, say).
    let mut other = listing(&[meta("people", "collection")]);
    let at = other.len() - TERMINATOR.len() - namespace_header("hearth", "people", true, 0).len();
    let mut injected = namespace_header("admin", "people", false, 0);
    injected.extend(raw(doc! { "_id": 1 }));
    injected.extend(TERMINATOR);
    other.splice(at..at, injected);
    refused(&other, "data for admin.people, which its prelude does not list");
}

#[test]
fn a_newer_format_version_is_refused_by_version() {
    let mut bytes = sample(&[]);
    let at = bytes.windows(3).position(|w| w == b"0.1").unwrap();
    bytes[at + 2] = b'2';
    refused(&bytes, "format version `0.2`, this Lifeboat reads 0.1");
}

/// A document `{ db, collection, x: { a: { a: ... } } }` nested `depth` levels deep.
fn deeply_nested(depth: usize) -> Vec<u8> {
    // Level k from the inside holds the 8 bytes of its own framing around level k - 1.
    let mut inner = Vec::with_capacity(8 * depth + 5);
    for k in (1..=depth).rev() {
        inner.extend(((5 + 8 * k) as i32).to_le_bytes());
        inner.extend([0x03, b'a', 0]);
    }
    inner.extend([5, 0, 0, 0, 0]);
    inner.resize(inner.len() + depth, 0);
    let mut head = raw(doc! { "db": "hearth", "collection": "deep", "type": "collection" });
    head.pop();
    head.extend([0x03, b'x', 0]);
    head.extend(inner);
    head.push(0);
    let len = head.len() as i32;
    head[..4].copy_from_slice(&len.to_le_bytes());
    head
}

#[test]
fn lengths_are_bounded_and_nesting_never_exhausts_the_stack() {
    // A length of 2 GiB, then nothing: refused without allocating it.
    let mut bytes = MAGIC.to_le_bytes().to_vec();
    bytes.extend(0x7fff_ffffi32.to_le_bytes());
    let (result, largest) = largest_allocation(|| block_on(read_all(&bytes)));
    assert!(result.unwrap_err().to_string().contains("neither a BSON document length"));
    assert!(largest < 1 << 20, "{largest}");
    // 16 MiB claimed, 100 bytes there: allocation follows the bytes that arrive.
    let mut bytes = MAGIC.to_le_bytes().to_vec();
    bytes.extend((16i32 << 20).to_le_bytes());
    bytes.extend([1u8; 100]);
    let (result, largest) = largest_allocation(|| block_on(read_all(&bytes)));
    assert!(result.unwrap_err().to_string().contains("truncated"));
    assert!(largest <= 1 << 20, "{largest}");
    // A prelude document nested a million levels deep (8 MiB) is read lazily, never recursively.
    let mut bytes = prelude("7.0.0", "test", &[]);
    bytes.truncate(bytes.len() - TERMINATOR.len());
    bytes.extend(deeply_nested(1_000_000));
    bytes.extend(TERMINATOR);
    bytes.extend(namespace_header("hearth", "deep", false, 0));
    bytes.extend(TERMINATOR);
    bytes.extend(namespace_header("hearth", "deep", true, 0));
    bytes.extend(TERMINATOR);
    let (metas, _) = block_on(read_all(&bytes)).unwrap();
    assert_eq!(metas[0].collection, "deep");
}

/// Offsets of the length prefixes of every item after the magic number.
fn item_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 4;
    while at + 4 <= bytes.len() {
        out.push(at);
        let len = &bytes[at..at + 4];
        at += if len == TERMINATOR { 4 } else { i32::from_le_bytes(len.try_into().unwrap()) as usize };
    }
    out
}

fn fuzz_base() -> Vec<u8> {
    sample(&(0..4).map(|i| doc! { "_id": i, "x": "abcdef", "n": { "a": [1, 2] } }).collect::<Vec<_>>())
}

/// The property: no panic, no allocation much beyond the input, Ok only with what passed every check.
fn check_reader(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (result, largest) = largest_allocation(|| block_on(read_all(bytes)));
    prop_assert!(largest <= (2 << 20).max(4 * bytes.len()), "{largest} bytes allocated for a {}-byte archive", bytes.len());
    if let Ok((metas, events)) = result {
        for m in &metas {
            prop_assert!(namespace_problem(&m.db, &m.collection).is_none() && (m.kind == "collection" || m.kind == "view"));
        }
        for e in events {
            let (Event::Documents { collection, .. } | Event::End { collection, .. }) = e;
            prop_assert!(metas.iter().any(|m| m.collection == collection));
        }
    }
    Ok(())
}

/// Writes a new length (as the i32 it is stored as) at `at`.
fn alter_length(bytes: &mut [u8], at: usize, len: u64) {
    bytes[at..at + 4].copy_from_slice(&(len as i32).to_le_bytes());
}

proptest! {
    #[test]
    fn fuzz_reader(bytes in hostile_archives(fuzz_base(), item_offsets(&fuzz_base()), alter_length)) {
        check_reader(&bytes)?;
    }

    /// Arbitrary bytes after a valid magic number reach the header parsing.
    #[test]
    fn fuzz_after_the_magic_number(rest in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = MAGIC.to_le_bytes().to_vec();
        bytes.extend(rest);
        check_reader(&bytes)?;
    }
}
