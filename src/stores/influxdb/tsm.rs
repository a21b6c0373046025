//! Reading InfluxDB 1.x TSM files far enough to count the field values they hold: the index, the
//! timestamps of each block, and the tombstones beside each file. Values themselves are never
//! decoded: a field value is one timestamp of its key (`<series key>#!~#<field>`).
//!
//! The formats, as influxd 1.x writes them (`tsdb/engine/tsm1`):
//! - A TSM file: magic `0x16D116D1`, version 1; blocks; the index; an 8-byte footer holding the
//!   index's offset. The index lists each key once, in key order: key length (u16), key, block
//!   type (u8), block count (u16), then per block min time, max time, offset (i64 each) and size
//!   (u32, counting the block's 4-byte CRC). All integers are big-endian.
//! - A block: CRC-32 (4 bytes), type (1), the timestamps' length (uvarint), the timestamps, the
//!   values. Timestamps are one of: raw (a header byte, then 8 bytes each: the first time and then
//!   deltas), run-length (header, first time, delta, count) or simple8b-packed deltas (header, the
//!   first time, then 64-bit words of 1-240 deltas each). The header's low 4 bits are the
//!   log10 of the factor the deltas were divided by.
//! - A tombstone file (`<file>.tombstone`): deleted (key, min, max) ranges, inclusive, that apply
//!   to that one TSM file: v1 is one key a line (the whole key), v2 (`0x00001502`) plain records
//!   of key length (u32), key, min, max; v3 (`0x00001503`) the same records gzip-compressed; v4
//!   (`0x00001504`) several gzip members of them one after the other.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

const MAGIC: u32 = 0x16D1_16D1;
const HEADER_SIZE: u64 = 5;
const FOOTER_SIZE: u64 = 8;
const INDEX_ENTRY_SIZE: usize = 28;

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// One block of a key, as the index lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockEntry {
    pub min: i64,
    pub max: i64,
    pub offset: u64,
    pub size: u32,
}

/// One TSM file: its index read key by key in order, its blocks read on demand.
pub(super) struct TsmFile {
    index: BufReader<File>,
    index_left: u64,
    blocks: BufReader<File>,
    blocks_pos: u64,
    len: u64,
}

impl TsmFile {
    pub fn open(path: &std::path::Path) -> io::Result<TsmFile> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < HEADER_SIZE + FOOTER_SIZE {
            return Err(invalid(format!("{} bytes is too short for a TSM file", len)));
        }
        let mut head = [0u8; 5];
        file.read_exact(&mut head)?;
        if u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) != MAGIC || head[4] != 1 {
            return Err(invalid("not a version 1 TSM file (wrong magic number)"));
        }
        file.seek(SeekFrom::Start(len - FOOTER_SIZE))?;
        let mut footer = [0u8; 8];
        file.read_exact(&mut footer)?;
        let index_at = u64::from_be_bytes(footer);
        if index_at < HEADER_SIZE || index_at > len - FOOTER_SIZE {
            return Err(invalid(format!("its index offset {index_at} lies outside the file")));
        }
        let mut index = BufReader::with_capacity(256 << 10, file);
        index.seek(SeekFrom::Start(index_at))?;
        // A file of its own: a clone of the handle would share the read position.
        Ok(TsmFile {
            index,
            index_left: len - FOOTER_SIZE - index_at,
            blocks: BufReader::with_capacity(256 << 10, File::open(path)?),
            blocks_pos: 0,
            len: index_at,
        })
    }

    /// The next key of the index with its blocks, or `None` after the last.
    pub fn next_key(&mut self) -> io::Result<Option<(Vec<u8>, Vec<BlockEntry>)>> {
        if self.index_left == 0 {
            return Ok(None);
        }
        let mut two = [0u8; 2];
        self.read_index(&mut two)?;
        let mut key = vec![0u8; u16::from_be_bytes(two) as usize];
        self.read_index(&mut key)?;
        let mut type_and_count = [0u8; 3];
        self.read_index(&mut type_and_count)?;
        let count = u16::from_be_bytes([type_and_count[1], type_and_count[2]]) as usize;
        let mut entries = Vec::with_capacity(count);
        let mut raw = [0u8; INDEX_ENTRY_SIZE];
        for _ in 0..count {
            self.read_index(&mut raw)?;
            let at = |i: usize| i64::from_be_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
            let entry = BlockEntry {
                min: at(0),
                max: at(8),
                offset: at(16) as u64,
                size: u32::from_be_bytes(raw[24..28].try_into().expect("4 bytes")),
            };
            if entry.min > entry.max || entry.size < 5 || entry.offset < HEADER_SIZE || entry.offset + entry.size as u64 > self.len {
                return Err(invalid("an index entry points outside the file's blocks"));
            }
            entries.push(entry);
        }
        Ok(Some((key, entries)))
    }

    fn read_index(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if (buf.len() as u64) > self.index_left {
            return Err(invalid("the index ends in the middle of an entry"));
        }
        self.index.read_exact(buf)?;
        self.index_left -= buf.len() as u64;
        Ok(())
    }

    /// The encoded timestamps of a block, read into `buf` (whole block; the caller keeps `buf`).
    pub fn timestamps<'a>(&mut self, entry: &BlockEntry, buf: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        // Blocks are read in key order, which is their order in the file: mostly a forward skip
        // within the buffer.
        let skip = entry.offset as i64 - self.blocks_pos as i64;
        self.blocks.seek_relative(skip)?;
        buf.resize(entry.size as usize, 0);
        self.blocks.read_exact(buf)?;
        self.blocks_pos = entry.offset + entry.size as u64;
        let data = &buf[4..];
        let (len, used) = uvarint(&data[1..]).ok_or_else(|| invalid("a block's timestamp length is unreadable"))?;
        let start = 1 + used;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|&e| e <= data.len());
        let end = end.ok_or_else(|| invalid("a block's timestamps run past its end"))?;
        Ok(&buf[4 + start..4 + end])
    }
}

/// Reads a uvarint; returns the value and the bytes used.
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Values per simple8b selector; selectors 0 and 1 hold runs of the value 1.
const SIMPLE8B_COUNT: [usize; 16] = [240, 120, 60, 30, 20, 15, 12, 10, 8, 7, 6, 5, 4, 3, 2, 1];
const SIMPLE8B_BITS: [u32; 16] = [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 30, 60];

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// The encoding (high 4 bits) and the scaling factor (10^low 4 bits) of encoded timestamps.
fn header(ts: &[u8]) -> io::Result<(u8, u64)> {
    let exponent = u32::from(ts[0] & 0x0f);
    let factor = 10u64.checked_pow(exponent).ok_or_else(|| invalid("a timestamp scale is out of range"))?;
    Ok((ts[0] >> 4, factor))
}

/// How many timestamps an encoded block holds, without decoding them.
pub(super) fn count_timestamps(ts: &[u8]) -> io::Result<u64> {
    if ts.is_empty() {
        return Ok(0);
    }
    match header(ts)?.0 {
        0 => Ok((ts.len() as u64 - 1) / 8),
        2 => {
            let (_, used) = ts.get(9..).and_then(uvarint).ok_or_else(|| invalid("a run-length timestamp block is cut short"))?;
            let (count, _) = ts.get(9 + used..).and_then(uvarint).ok_or_else(|| invalid("a run-length timestamp block is cut short"))?;
            Ok(count)
        }
        1 => {
            let words = ts.get(9..).ok_or_else(|| invalid("a packed timestamp block is cut short"))?;
            Ok(1 + words.chunks_exact(8).map(|w| SIMPLE8B_COUNT[(be_u64(w) >> 60) as usize] as u64).sum::<u64>())
        }
        other => Err(invalid(format!("unknown timestamp encoding {other}"))),
    }
}

/// Decodes encoded timestamps into `out` (cleared first), in the block's (ascending) order.
pub(super) fn decode_timestamps(ts: &[u8], out: &mut Vec<i64>) -> io::Result<()> {
    out.clear();
    if ts.is_empty() {
        return Ok(());
    }
    let (encoding, factor) = header(ts)?;
    match encoding {
        0 => {
            let mut t = 0u64;
            for (i, v) in ts[1..].chunks_exact(8).enumerate() {
                t = if i == 0 { be_u64(v) } else { t.wrapping_add(be_u64(v)) };
                out.push(t as i64);
            }
        }
        2 => {
            let short = || invalid("a run-length timestamp block is cut short");
            let first = ts.get(1..9).map(be_u64).ok_or_else(short)?;
            let (delta, used) = ts.get(9..).and_then(uvarint).ok_or_else(short)?;
            let (count, _) = ts.get(9 + used..).and_then(uvarint).ok_or_else(short)?;
            if count > 1 << 24 {
                return Err(invalid("a run-length timestamp block claims too many values"));
            }
            let delta = delta.wrapping_mul(factor);
            out.extend((0..count).map(|i| first.wrapping_add(delta.wrapping_mul(i)) as i64));
        }
        1 => {
            let first = ts.get(1..9).map(be_u64).ok_or_else(|| invalid("a packed timestamp block is cut short"))?;
            let mut t = first;
            out.push(t as i64);
            for w in ts[9..].chunks_exact(8) {
                let word = be_u64(w);
                let selector = (word >> 60) as usize;
                let (n, bits) = (SIMPLE8B_COUNT[selector], SIMPLE8B_BITS[selector]);
                let mask = if bits == 0 { 0 } else { (1u64 << bits) - 1 };
                for i in 0..n {
                    let delta = if bits == 0 { 1 } else { (word >> (bits as usize * i)) & mask };
                    t = t.wrapping_add(delta.wrapping_mul(factor));
                    out.push(t as i64);
                }
            }
        }
        other => return Err(invalid(format!("unknown timestamp encoding {other}"))),
    }
    Ok(())
}

/// Deleted time ranges (inclusive) per key of one TSM file.
pub(super) type Tombstones = HashMap<Vec<u8>, Vec<(i64, i64)>>;

/// Reads a tombstone file of any version into `into`.
pub(super) fn read_tombstones(mut file: impl Read, into: &mut Tombstones) -> io::Result<()> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let version = bytes.get(..4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    let records = match version {
        Some(0x1502) => bytes[4..].to_vec(),
        Some(0x1503) | Some(0x1504) => {
            // v4 is v3's gzip members one after the other; MultiGzDecoder reads them all.
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[4..]).read_to_end(&mut plain)?;
            plain
        }
        _ => {
            // v1: one whole key a line.
            for line in (&bytes[..]).lines() {
                let line = line?;
                if !line.is_empty() {
                    into.entry(line.into_bytes()).or_default().push((i64::MIN, i64::MAX));
                }
            }
            return Ok(());
        }
    };
    let mut rest = &records[..];
    while !rest.is_empty() {
        let short = || invalid("a tombstone record is cut short");
        let len = rest.get(..4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize).ok_or_else(short)?;
        let record = rest.get(4..4 + len + 16).ok_or_else(short)?;
        let key = record[..len].to_vec();
        let min = be_u64(&record[len..]) as i64;
        let max = be_u64(&record[len + 8..]) as i64;
        into.entry(key).or_default().push((min, max));
        rest = &rest[4 + len + 16..];
    }
    Ok(())
}

#[cfg(test)]
#[path = "tsm_tests.rs"]
pub(super) mod tests;
