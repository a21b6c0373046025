//! The packet reader and parser against hostile input: lengths that lie, bodies cut short,
//! arbitrary bytes, and whole sessions of them; nothing panics and nothing is allocated past the
//! packet cap whatever a length field claims.

use std::io::Cursor as Bytes;
use std::path::Path;

use proptest::prelude::*;

use super::policy::{Mode, Policy};
use super::wire::*;
use crate::stores::archive_fuzz::largest_allocation;

fn packet(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

#[test]
fn a_length_over_the_cap_ends_the_session_without_allocating_it() {
    for claimed in [u32::MAX, (MAX_PACKET + 1) as u32, 1 << 30] {
        let mut input = Bytes::new(claimed.to_be_bytes().to_vec());
        let mut buf = Vec::new();
        let (result, largest) = largest_allocation(|| read_packet(&mut input, &mut buf));
        assert!(matches!(result, Err(Framing::TooLong(n)) if n == claimed), "{result:?}");
        assert!(largest < 1024, "{largest} bytes allocated for a refused length");
    }
}

#[test]
fn packets_cut_short_or_empty_end_the_session() {
    let mut buf = Vec::new();
    assert!(matches!(read_packet(&mut Bytes::new(vec![0, 0]), &mut buf), Err(Framing::Cut)));
    assert!(matches!(read_packet(&mut Bytes::new(vec![0, 0, 0, 9, 1, 2]), &mut buf), Err(Framing::Cut)));
    assert!(matches!(read_packet(&mut Bytes::new(vec![0, 0, 0, 0]), &mut buf), Err(Framing::Empty)));
    assert!(matches!(read_packet(&mut Bytes::new(vec![]), &mut buf), Ok(false)));
    let mut input = Bytes::new(packet(&[1; MAX_PACKET]));
    let (result, largest) = largest_allocation(|| read_packet(&mut input, &mut buf));
    assert!(matches!(result, Ok(true)) && buf.len() == MAX_PACKET);
    assert!(largest <= MAX_PACKET, "{largest}");
}

#[test]
fn string_lengths_that_lie_are_malformed_not_allocated() {
    // OPEN, id 7, a path claiming 4 GiB.
    let mut body = vec![3, 0, 0, 0, 7];
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.extend_from_slice(b"short");
    let (result, largest) = largest_allocation(|| parse(&body));
    assert_eq!(result, Err(Malformed { id: Some(7) }));
    assert!(largest < 1024, "{largest}");
    // Attributes claiming 4 billion extended pairs, with none there.
    let mut body = vec![14, 0, 0, 0, 8];
    body.extend(string(b"dir"));
    body.extend_from_slice(&0x8000_0000u32.to_be_bytes());
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(parse(&body), Err(Malformed { id: Some(8) }));
    assert_eq!(parse(&[]), Err(Malformed { id: None }));
    assert_eq!(parse(&[5, 0, 0]), Err(Malformed { id: None }));
}

#[test]
fn well_formed_requests_parse() {
    let mut body = vec![6, 0, 0, 0, 9];
    body.extend(string(b"\0\0\0\x01"));
    body.extend_from_slice(&42u64.to_be_bytes());
    body.extend(string(b"data"));
    assert_eq!(parse(&body), Ok(Request::Write { id: 9, handle: b"\0\0\0\x01", offset: 42, data: b"data" }));
    let mut body = vec![3, 0, 0, 0, 1];
    body.extend(string(b"/r/f"));
    body.extend_from_slice(&(FXF_WRITE | FXF_CREAT | FXF_EXCL).to_be_bytes());
    body.extend_from_slice(&4u32.to_be_bytes());
    body.extend_from_slice(&0o640u32.to_be_bytes());
    let want = Attrs { permissions: Some(0o640), ..Attrs::default() };
    assert_eq!(parse(&body), Ok(Request::Open { id: 1, path: b"/r/f", flags: FXF_WRITE | FXF_CREAT | FXF_EXCL, attrs: want }));
    assert_eq!(parse(&[99, 0, 0, 0, 3]), Ok(Request::Unknown { id: 3, kind: 99 }));
}

/// A session fed `input`; returns whether it ended cleanly and the largest allocation made.
fn run_session(input: Vec<u8>) -> (bool, usize) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f"), b"hello").unwrap();
    let policy = Policy { mode: Mode::AppendOnly, writable: vec![] };
    let mut output = Vec::new();
    let (result, largest) = largest_allocation(|| super::serve(&policy, root.path(), None, Bytes::new(input), &mut output));
    (result.is_ok(), largest)
}

fn init() -> Vec<u8> {
    packet(&[1, 0, 0, 0, 3])
}

#[test]
fn a_session_refuses_a_request_before_init_and_an_oversized_packet() {
    assert!(!run_session(packet(&[17, 0, 0, 0, 1, 0, 0, 0, 1, b'f'])).0);
    let mut input = init();
    input.extend_from_slice(&u32::MAX.to_be_bytes());
    let (ok, largest) = run_session(input);
    assert!(!ok);
    assert!(largest <= 2 * MAX_PACKET, "{largest}");
}

#[test]
fn a_missing_root_is_said_to_the_client_in_sftp() {
    let mut input = init();
    let mut stat = vec![17, 0, 0, 0, 4];
    stat.extend(string(b"x"));
    input.extend(packet(&stat));
    let policy = Policy { mode: Mode::ReadOnly, writable: vec![] };
    let mut output = Vec::new();
    let result = super::serve(&policy, Path::new("/nonexistent/lifeboat-root"), None, Bytes::new(input), &mut output);
    assert!(matches!(result, Err(super::ServeError::Root { .. })), "{result:?}");
    // VERSION (9 bytes), then a FAILURE status for request 4 naming the folder.
    assert_eq!(&output[..9], &[0, 0, 0, 5, FXP_VERSION, 0, 0, 0, 3]);
    assert_eq!(&output[13..22], &[FXP_STATUS, 0, 0, 0, 4, 0, 0, 0, FX_FAILURE as u8]);
    assert!(String::from_utf8_lossy(&output).contains("cannot serve /nonexistent/lifeboat-root"));
}

#[test]
fn a_read_never_returns_more_than_the_cap() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("big"), vec![7u8; 2 * MAX_PACKET]).unwrap();
    let mut input = init();
    let mut open = vec![3, 0, 0, 0, 1];
    open.extend(string(b"big"));
    open.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    input.extend(packet(&open));
    let mut read = vec![5, 0, 0, 0, 2];
    read.extend(string(&0u32.to_be_bytes()));
    read.extend_from_slice(&0u64.to_be_bytes());
    read.extend_from_slice(&u32::MAX.to_be_bytes());
    input.extend(packet(&read));
    let policy = Policy { mode: Mode::ReadOnly, writable: vec![] };
    let mut output = Vec::new();
    super::serve(&policy, root.path(), None, Bytes::new(input), &mut output).unwrap();
    // VERSION, HANDLE, then DATA of exactly MAX_DATA bytes.
    let data_reply = output.windows(5).position(|w| w[4] == FXP_DATA && w[..4] != [0; 4]).unwrap();
    let len = u32::from_be_bytes(output[data_reply..data_reply + 4].try_into().unwrap()) as usize;
    assert_eq!(len, 1 + 4 + 4 + MAX_DATA as usize);
}

proptest! {
    #[test]
    fn any_bytes_parse_without_panic_or_large_allocation(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let (_, largest) = largest_allocation(|| parse(&bytes));
        prop_assert!(largest < 4096, "{}", largest);
    }

    #[test]
    fn any_session_input_ends_without_panic(
        kinds in proptest::collection::vec((1u8..=210, proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..24)
    ) {
        // Framed packets of any type with arbitrary bodies (sometimes a well-formed path first),
        // after a real INIT: each is answered or ends the session, never a panic.
        let mut input = init();
        for (kind, body, with_path) in kinds {
            let mut p = vec![kind, 0, 0, 0, 5];
            if with_path {
                p.extend(string(b"f"));
            }
            p.extend(body);
            input.extend(packet(&p));
        }
        let (_, largest) = run_session(input);
        prop_assert!(largest <= 2 * MAX_PACKET, "{}", largest);
    }
}

#[test]
fn hostile_path_text_is_resolved_by_its_text_only() {
    let root = super::path::RootPath::new(Path::new("/r"), Path::new("/r"));
    for hostile in [&b"../../../../etc/shadow"[..], b"/r/../etc", b"/r/a/../../b", b"..\0/x"] {
        assert!(root.resolve(hostile).is_err(), "{:?}", String::from_utf8_lossy(hostile));
    }
}

/// The replies in `output`: (type, request id, status code when a STATUS).
fn replies(output: &[u8]) -> Vec<(u8, u32, Option<u32>)> {
    let mut c = Cursor::new(output);
    let mut out = Vec::new();
    while let Some(body) = c.string() {
        let mut b = Cursor::new(body);
        let kind = b.u8().unwrap();
        let id = b.u32().unwrap();
        out.push((kind, id, (kind == FXP_STATUS).then(|| b.u32().unwrap())));
    }
    out
}

#[test]
fn only_the_handle_that_created_a_file_writes_it() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("old"), b"old").unwrap();
    let open = |id: u8, path: &[u8], flags: u32| {
        let mut p = vec![3, 0, 0, 0, id];
        p.extend(string(path));
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        packet(&p)
    };
    let write = |id: u8, handle: u32| {
        let mut p = vec![6, 0, 0, 0, id];
        p.extend(string(&handle.to_be_bytes()));
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend(string(b"new bytes"));
        packet(&p)
    };
    let mut input = init();
    input.extend(open(1, b"old", FXF_READ)); // handle 0, read-only
    input.extend(write(2, 0));
    input.extend(open(3, b"new", FXF_WRITE | FXF_CREAT | FXF_TRUNC)); // handle 1: created
    input.extend(write(4, 1));
    input.extend(open(5, b"old", FXF_WRITE)); // an existing file, for writing
    input.extend(write(6, 7)); // a handle never opened
    let policy = Policy { mode: Mode::AppendOnly, writable: vec![] };
    let mut output = Vec::new();
    super::serve(&policy, root.path(), None, Bytes::new(input), &mut output).unwrap();
    let got = replies(&output);
    assert_eq!(
        got,
        [
            (FXP_VERSION, 3, None),
            (FXP_HANDLE, 1, None),
            (FXP_STATUS, 2, Some(FX_PERMISSION_DENIED)),
            (FXP_HANDLE, 3, None),
            (FXP_STATUS, 4, Some(FX_OK)),
            (FXP_STATUS, 5, Some(FX_PERMISSION_DENIED)),
            (FXP_STATUS, 6, Some(FX_FAILURE)),
        ]
    );
    assert_eq!(std::fs::read(root.path().join("old")).unwrap(), b"old");
    assert_eq!(std::fs::read(root.path().join("new")).unwrap(), b"new bytes");
}
