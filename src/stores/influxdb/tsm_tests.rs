//! TSM files and tombstones built byte by byte as influxd writes them (see the module text).

use std::io::Write;

use super::*;

fn uvarint_bytes(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Raw-encoded timestamps: the first time, then deltas.
pub(crate) fn raw_times(times: &[i64]) -> Vec<u8> {
    let mut b = vec![0u8];
    for (i, &t) in times.iter().enumerate() {
        let v = if i == 0 { t as u64 } else { (t - times[i - 1]) as u64 };
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

/// A TSM file holding `keys` in order, each with blocks of the given encoded timestamps.
pub(crate) fn tsm_file(keys: &[(&str, Vec<Vec<i64>>)]) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(&MAGIC.to_be_bytes());
    file.push(1);
    let mut index = Vec::new();
    for (key, blocks) in keys {
        index.extend_from_slice(&(key.len() as u16).to_be_bytes());
        index.extend_from_slice(key.as_bytes());
        index.push(0);
        index.extend_from_slice(&(blocks.len() as u16).to_be_bytes());
        for times in blocks {
            let ts = raw_times(times);
            let mut data = vec![0u8];
            data.extend(uvarint_bytes(ts.len() as u64));
            data.extend(&ts);
            data.extend(std::iter::repeat_n(0xAB, times.len() * 3)); // values, never read
            let offset = file.len() as u64;
            file.extend_from_slice(&[0, 0, 0, 0]); // CRC, not checked when counting
            file.extend(&data);
            index.extend_from_slice(&times[0].to_be_bytes());
            index.extend_from_slice(&times[times.len() - 1].to_be_bytes());
            index.extend_from_slice(&offset.to_be_bytes());
            index.extend_from_slice(&(data.len() as u32 + 4).to_be_bytes());
        }
    }
    let index_at = file.len() as u64;
    file.extend(index);
    file.extend_from_slice(&index_at.to_be_bytes());
    file
}

#[test]
fn raw_run_length_and_packed_timestamps_decode_and_count() {
    let mut out = Vec::new();
    let raw = raw_times(&[1_000, 1_007, 2_000]);
    decode_timestamps(&raw, &mut out).unwrap();
    assert_eq!(out, [1_000, 1_007, 2_000]);
    assert_eq!(count_timestamps(&raw).unwrap(), 3);

    // Run-length, deltas scaled by 10^1: first 1000, delta 5 (x10), 4 values.
    let mut rle = vec![0x21];
    rle.extend_from_slice(&1_000u64.to_be_bytes());
    rle.extend(uvarint_bytes(5));
    rle.extend(uvarint_bytes(4));
    decode_timestamps(&rle, &mut out).unwrap();
    assert_eq!(out, [1_000, 1_050, 1_100, 1_150]);
    assert_eq!(count_timestamps(&rle).unwrap(), 4);

    // Packed, scaled by 10^2: first 100, a selector-3 word of 30 two-bit deltas (1, 2, 3, 0, ...),
    // then a selector-0 word of 240 deltas of 1.
    let mut word = 3u64 << 60;
    for i in 0..30u64 {
        word |= ((i % 4 + 1) % 4) << (2 * i);
    }
    let mut packed = vec![0x12];
    packed.extend_from_slice(&100u64.to_be_bytes());
    packed.extend_from_slice(&word.to_be_bytes());
    packed.extend_from_slice(&0u64.to_be_bytes());
    decode_timestamps(&packed, &mut out).unwrap();
    assert_eq!(out.len(), 1 + 30 + 240);
    assert_eq!(count_timestamps(&packed).unwrap(), 271);
    assert_eq!(&out[..5], [100, 200, 400, 700, 700]);
    assert_eq!(out[31] + 100, out[32]);

    assert!(decode_timestamps(&[0x30], &mut out).is_err(), "an unknown encoding is refused");
    assert!(count_timestamps(&[0x20, 1, 2]).is_err(), "a cut run-length block is refused");
}

#[test]
fn a_tsm_file_lists_its_keys_and_blocks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1.tsm");
    std::fs::write(&path, tsm_file(&[("cpu,host=a#!~#v", vec![vec![1, 2, 3], vec![10, 20]]), ("mem#!~#free", vec![vec![5]])])).unwrap();
    let mut f = TsmFile::open(&path).unwrap();
    let mut buf = Vec::new();
    let (key, blocks) = f.next_key().unwrap().unwrap();
    assert_eq!(key, b"cpu,host=a#!~#v");
    assert_eq!((blocks.len(), blocks[1].min, blocks[1].max), (2, 10, 20));
    assert_eq!(count_timestamps(f.timestamps(&blocks[0], &mut buf).unwrap()).unwrap(), 3);
    let mut times = Vec::new();
    decode_timestamps(f.timestamps(&blocks[1], &mut buf).unwrap(), &mut times).unwrap();
    assert_eq!(times, [10, 20]);
    let (key, _) = f.next_key().unwrap().unwrap();
    assert_eq!(key, b"mem#!~#free");
    assert!(f.next_key().unwrap().is_none());

    std::fs::write(&path, b"not a tsm file at all").unwrap();
    assert!(TsmFile::open(&path).is_err());
    // A footer pointing past the end.
    let mut bad = tsm_file(&[("k#!~#f", vec![vec![1]])]);
    let n = bad.len();
    bad[n - 8..].copy_from_slice(&(n as u64 * 2).to_be_bytes());
    std::fs::write(&path, bad).unwrap();
    assert!(TsmFile::open(&path).is_err());
}

fn record(key: &str, min: i64, max: i64) -> Vec<u8> {
    let mut b = (key.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&min.to_be_bytes());
    b.extend_from_slice(&max.to_be_bytes());
    b
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

#[test]
fn tombstones_of_every_version_are_read() {
    let mut t = Tombstones::new();
    read_tombstones(&b"cpu#!~#v\n\nmem#!~#v\n"[..], &mut t).unwrap();
    assert_eq!(t[&b"cpu#!~#v"[..].to_vec()], [(i64::MIN, i64::MAX)]);
    assert_eq!(t.len(), 2);

    let mut v2 = 0x1502u32.to_be_bytes().to_vec();
    v2.extend(record("a#!~#f", 5, 9));
    v2.extend(record("a#!~#f", 20, 30));
    let mut t = Tombstones::new();
    read_tombstones(&v2[..], &mut t).unwrap();
    assert_eq!(t[&b"a#!~#f"[..].to_vec()], [(5, 9), (20, 30)]);

    let mut v3 = 0x1503u32.to_be_bytes().to_vec();
    v3.extend(gzip(&record("b#!~#f", 1, 2)));
    let mut t = Tombstones::new();
    read_tombstones(&v3[..], &mut t).unwrap();
    assert_eq!(t[&b"b#!~#f"[..].to_vec()], [(1, 2)]);

    let mut v4 = 0x1504u32.to_be_bytes().to_vec();
    v4.extend(gzip(&record("c#!~#f", 1, 2)));
    v4.extend(gzip(&[record("c#!~#f", 7, 8), record("d#!~#f", 0, 0)].concat()));
    let mut t = Tombstones::new();
    read_tombstones(&v4[..], &mut t).unwrap();
    assert_eq!(t[&b"c#!~#f"[..].to_vec()], [(1, 2), (7, 8)]);
    assert_eq!(t.len(), 2);

    let mut cut = 0x1502u32.to_be_bytes().to_vec();
    cut.extend(&record("a#!~#f", 5, 9)[..10]);
    assert!(read_tombstones(&cut[..], &mut Tombstones::new()).is_err());
}
