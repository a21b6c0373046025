//! The MinIO archive reader: round trips, hostile entries refused by name, and a bounded fuzz
//! run (arbitrary bytes, and Lifeboat archives with flipped bytes, cuts and altered sizes): it
//! never panics, never allocates what a length in the archive asks for, and answers Ok or Err.
//! `PROPTEST_CASES=20000 cargo test --lib minio::archive` for a longer run.

use proptest::prelude::*;

use super::*;
use crate::pipeline::bridge::pipe;
use crate::stores::archive_fuzz::{hostile_archives, largest_allocation};
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

/// One entry as the backup writes it: path, pax records, type, size, body.
struct Sample<'a> {
    path: String,
    records: Vec<(&'a str, Vec<u8>)>,
    kind: tar::EntryType,
    size: u64,
    body: &'a [u8],
}

fn object<'a>(bucket: &str, key: &str, body: &'a [u8], extra: &[(&'a str, &str)]) -> Sample<'a> {
    let mut records = vec![("LIFEBOAT.bucket", bucket.as_bytes().to_vec()), ("LIFEBOAT.key", key.as_bytes().to_vec())];
    records.extend(extra.iter().map(|(k, v)| (*k, v.as_bytes().to_vec())));
    Sample { path: format!("{bucket}/{key}"), records, kind: tar::EntryType::Regular, size: body.len() as u64, body }
}

fn bucket_dir(bucket: &str) -> Sample<'static> {
    Sample {
        path: format!("{bucket}/"),
        records: vec![("LIFEBOAT.bucket", bucket.as_bytes().to_vec())],
        kind: tar::EntryType::Directory,
        size: 0,
        body: b"",
    }
}

fn header_json(format: u32, buckets: &[&str]) -> Vec<u8> {
    let buckets = buckets.iter().map(|b| (b.to_string(), BucketSettings::default())).collect();
    serde_json::to_vec(&ArchiveHeader { format, buckets }).unwrap()
}

/// An archive written by [`TarWriter`], as the backup writes it: the header, then `entries`.
fn archive_of(header: &[u8], entries: &[Sample<'_>]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (writer, mut reader) = pipe();
        let mut out = TarWriter::new(writer);
        let write = async move {
            let result = async {
                out.entry(HEADER_ENTRY, &[], tar::EntryType::Regular, header.len() as u64, 0).await?;
                out.write(header).await?;
                out.pad().await?;
                for e in entries {
                    let records: Vec<(&str, &[u8])> = e.records.iter().map(|(k, v)| (*k, &v[..])).collect();
                    out.entry(&e.path, &records, e.kind, e.size, 1_700_000_000).await?;
                    out.write(e.body).await?;
                    out.pad().await?;
                }
                out.write(&[0u8; 1024]).await
            }
            .await;
            out.close(result).await
        };
        let mut all = Vec::new();
        let (written, read) = tokio::join!(write, AsyncReadExt::read_to_end(&mut reader, &mut all));
        assert!(written.is_ok() && read.is_ok());
        all
    })
}

/// The archive of the round-trip test: bucket `bbb` with `objects`.
fn sample_archive(objects: Vec<Sample<'_>>) -> Vec<u8> {
    let mut entries = vec![bucket_dir("bbb")];
    entries.extend(objects);
    archive_of(&header_json(1, &["bbb"]), &entries)
}

/// Every piece the reader sends, or its one-line refusal.
fn read_all(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let reader: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(bytes.to_vec()));
    match read_archive(reader, &mut |p| {
        pieces.push(p);
        true
    }) {
        Ok(()) => Ok(pieces),
        Err(Some(e)) => Err(e.to_string()),
        Err(None) => Err("the reader stopped without a reason".into()),
    }
}

#[track_caller]
fn refused(bytes: &[u8], needles: &[&str]) {
    let e = read_all(bytes).expect_err("the archive is refused");
    assert!(!e.contains('\n'), "one line: {e}");
    for n in needles {
        assert!(e.contains(n), "`{n}` missing from: {e}");
    }
}

#[test]
fn entries_lifeboat_never_writes_are_refused_by_name() {
    let ok = |s: Sample<'static>| archive_of(&header_json(1, &["bbb"]), &[bucket_dir("bbb"), s]);
    let mut link = object("bbb", "link", b"", &[]);
    link.kind = tar::EntryType::Symlink;
    refused(&ok(link), &["`bbb/link`", "symbolic link"]);
    let mut hard = object("bbb", "hard", b"", &[]);
    hard.kind = tar::EntryType::Link;
    refused(&ok(hard), &["`bbb/hard`", "hard link"]);
    let mut device = object("bbb", "dev", b"", &[]);
    device.kind = tar::EntryType::Char;
    refused(&ok(device), &["`bbb/dev`", "device"]);
    refused(&ok(object("other-bucket", "x", b"1", &[])), &["bucket `other-bucket`", "header does not list"]);
    refused(&ok(bucket_dir("other-bucket")), &["bucket `other-bucket`"]);
    refused(&ok(object("bbb", "nul\0key", b"1", &[])), &["object key `nul\\0key`"]);
    let long = "k".repeat(1025);
    refused(&ok(object("bbb", &long, b"1", &[])), &["over 1024 bytes"]);
    refused(&ok(object("bbb", "", b"1", &[])), &["object key ``"]);
    // A pax `size` that disagrees with the ustar size: two readers would see two archives.
    let mut two_sizes = object("bbb", "x", b"abc", &[]);
    two_sizes.records.push(("size", b"999".to_vec()));
    refused(&ok(two_sizes), &["two different sizes"]);
    // A path that `tar -x` would write elsewhere than its bucket and key.
    for path in ["/tmp/lifeboat-abs", "../../x", "bbb/a/../../../x", "bbb//x"] {
        let mut moved = object("bbb", "x", b"1", &[]);
        moved.path = path.into();
        refused(&ok(moved), &[&format!("`{path}`, whose path is not its bucket and key")]);
    }
    // No pax header at all: an entry Lifeboat did not write.
    let mut plain = tar::Builder::new(Vec::new());
    let header = header_json(1, &["bbb"]);
    let mut h = tar::Header::new_ustar();
    h.set_size(header.len() as u64);
    h.set_cksum();
    plain.append_data(&mut h, HEADER_ENTRY, &header[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_cksum();
    plain.append_link(&mut h, "escape", "/etc/passwd").unwrap();
    refused(&plain.into_inner().unwrap(), &["`escape`", "symbolic link"]);
}

#[test]
fn header_of_a_newer_format_or_with_bad_bucket_names_is_refused() {
    refused(&archive_of(&header_json(2, &["bbb"]), &[]), &["archive format 2", "reads format 1"]);
    // The version is read first: a newer header whose other fields changed is still named by version.
    refused(&archive_of(br#"{"format": 2, "buckets": ["a", "list"]}"#, &[]), &["archive format 2"]);
    for bad in ["../x", "Upper", "a", "a..b", "-ab", "a/b", "a\0b", &"b".repeat(64)] {
        refused(&archive_of(&header_json(1, &[bad]), &[]), &["not a valid S3 bucket name"]);
    }
    for good in ["bbb", "lb-minio-docs", "a.b-c", "123", &"b".repeat(63)] {
        assert!(valid_bucket_name(good), "{good}");
    }
}

#[test]
fn sizes_are_bounded_before_anything_is_allocated() {
    // A pax header far larger than any Lifeboat writes.
    let big = "v".repeat((MAX_PAX + 1) as usize);
    refused(&archive_of(&header_json(1, &["bbb"]), &[object("bbb", "x", b"", &[("LIFEBOAT.meta.m", &big)])]), &["pax header of"]);
    // An object larger than S3 allows, claimed in its ustar size field.
    let mut bytes = archive_of(&header_json(1, &["bbb"]), &[bucket_dir("bbb"), object("bbb", "huge", b"", &[])]);
    let at = header_blocks(&bytes).last().copied().unwrap();
    set_size(&mut bytes[at..at + 512], MAX_OBJECT + 1);
    let (result, largest) = largest_allocation(|| read_all(&bytes));
    assert!(result.unwrap_err().contains("which S3 cannot hold"));
    assert!(largest < 1 << 20, "{largest} bytes allocated");
    // A header entry claiming 20 MiB.
    let mut bytes = archive_of(&header_json(1, &["bbb"]), &[]);
    let at = header_blocks(&bytes)[1];
    set_size(&mut bytes[at..at + 512], 20 << 20);
    refused(&bytes, &["does not start with _lifeboat-minio.json"]);
}

/// Offsets of the ustar header blocks of an archive (pax headers included).
fn header_blocks(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() && bytes[at..at + 512].iter().any(|b| *b != 0) {
        out.push(at);
        let size = u64::from_str_radix(std::str::from_utf8(&bytes[at + 124..at + 135]).unwrap().trim_matches('\0'), 8).unwrap();
        at += 512 + (size as usize).div_ceil(512) * 512;
    }
    out
}

/// Writes `size` into a ustar header block (octal, or base-256 when too large) with a valid checksum.
fn set_size(block: &mut [u8], size: u64) {
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(block);
    h.set_size(size);
    h.set_cksum();
    block.copy_from_slice(h.as_bytes());
}

/// A valid archive with a few objects, the starting point of every mutation.
fn fuzz_base() -> Vec<u8> {
    archive_of(
        &header_json(1, &["bbb", "ccc"]),
        &[
            bucket_dir("bbb"),
            object("bbb", "plain.txt", b"hello", &[("LIFEBOAT.content-type", "text/plain"), ("LIFEBOAT.meta.owner", "Zoë")]),
            object("bbb", "folder/", b"", &[]),
            object("bbb", "x", &[7u8; 1500], &[]),
            bucket_dir("ccc"),
            object("ccc", "y", b"yy", &[]),
        ],
    )
}

/// Reads `bytes` and checks the property: no panic (proptest reports one), no allocation much
/// beyond what the input holds, Ok only with pieces that passed every check.
fn check_reader(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (result, largest) = largest_allocation(|| read_all(bytes));
    prop_assert!(largest <= (2 << 20).max(4 * bytes.len()), "{largest} bytes allocated for a {}-byte archive", bytes.len());
    if let Ok(pieces) = result {
        for p in pieces {
            match p {
                Piece::Header(h) => prop_assert!(h.format == ARCHIVE_FORMAT && h.buckets.keys().all(|b| valid_bucket_name(b))),
                Piece::Object(m) => {
                    prop_assert!(valid_bucket_name(&m.bucket) && !m.key.is_empty() && m.key.len() <= MAX_KEY && m.size <= MAX_OBJECT)
                }
                Piece::Bucket(b) => prop_assert!(valid_bucket_name(&b)),
                Piece::Data(d) => prop_assert!(d.len() <= READ_CHUNK),
            }
        }
    }
    Ok(())
}

/// Writes a new size into the header block at `at`.
fn alter_size(bytes: &mut [u8], at: usize, size: u64) {
    set_size(&mut bytes[at..at + 512], size);
}

proptest! {
    #[test]
    fn fuzz_reader(bytes in hostile_archives(fuzz_base(), header_blocks(&fuzz_base()), alter_size)) {
        check_reader(&bytes)?;
    }
}

#[test]
fn archive_round_trips_keys_bodies_and_metadata() {
    let long_key = format!("deep/{}/file with space ü.txt", "segment/".repeat(30));
    let archive = sample_archive(vec![
        object("bbb", "plain.txt", b"hello", &[("LIFEBOAT.content-type", "text/plain"), ("LIFEBOAT.meta.owner", "Zoë")]),
        object("bbb", &long_key, b"", &[]),
        object("bbb", "x", &[7u8; 1500], &[]),
    ]);
    assert_eq!(archive.len() % 512, 0);
    let pieces = read_all(&archive).unwrap();
    assert!(matches!(&pieces[0], Piece::Header(h) if h.format == 1 && h.buckets.contains_key("bbb")));
    assert!(matches!(&pieces[1], Piece::Bucket(b) if b == "bbb"));
    let Piece::Object(m) = &pieces[2] else { panic!("object expected") };
    assert_eq!((m.bucket.as_str(), m.key.as_str(), m.size), ("bbb", "plain.txt", 5));
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
    let e = read_all(&bytes).unwrap_err();
    assert!(e.contains("not a Lifeboat MinIO archive"), "{e}");
}
