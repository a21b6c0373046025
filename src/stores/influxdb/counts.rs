//! The field values a portable backup holds, counted from the backup's own TSM files while it
//! uploads: exact by construction, whatever is written to the server meanwhile, and at the speed
//! of reading the files (the InfluxQL census that did this before took as long as the backup
//! itself, twice).
//!
//! What is counted matches what `SELECT count(*) FROM <rp>.<measurement> WHERE time < T` answers
//! on a server holding the backup, which is how a restore checks it: per key (series and field),
//! the distinct timestamps before T that no tombstone of their own file deletes, summed per
//! retention policy and measurement. A shard's files may hold the same key with overlapping times
//! (before compaction merges them, or after an overwrite); such blocks are merged and each
//! timestamp counted once. Blocks that overlap nothing are counted from their headers alone.
//!
//! Each shard's gzip tar is unpacked into a private scratch folder (TSM files are read from their
//! end), one shard at a time; memory holds one key's blocks and the shard's tombstones.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::http::item_part;
use super::influxd::portable_manifest;
use super::tsm::{BlockEntry, Tombstones, TsmFile, count_timestamps, decode_timestamps, read_tombstones};

/// Separates the series key from the field name in a TSM key.
const FIELD_SEPARATOR: &[u8] = b"#!~#";

/// What a portable backup holds before T.
#[derive(Debug, Default)]
pub(super) struct BackupCounts {
    /// Field values per `<rp>.<measurement>:values`, tombstones applied, as InfluxQL counts them.
    pub counts: BTreeMap<String, u64>,
    /// Field values that tombstones delete but that are still in the TSM files (influxd has not
    /// compacted them away yet). `influxd restore` imports only the TSM files and leaves the
    /// tombstones out, so a restore brings these back.
    pub deleted_in_files: u64,
}

/// Counts the portable backup in `dir`, with time < `before` (Unix nanoseconds). `scratch` is an
/// empty private folder for one shard's files at a time.
pub(super) fn count_portable_backup(dir: &Path, scratch: &Path, before: i64) -> Result<BackupCounts, String> {
    let manifest = portable_manifest(dir)?;
    let mut counted = BackupCounts::default();
    for shard in manifest.files.unwrap_or_default() {
        let path = dir.join(&shard.file_name);
        count_shard(&path, scratch, &shard.policy, before, &mut counted)
            .map_err(|e| format!("counting the points of shard file {}: {e}", shard.file_name))?;
    }
    counted.counts.retain(|_, n| *n > 0);
    Ok(counted)
}

/// Unpacks one shard's `.tar.gz` into `scratch` and adds its counts.
fn count_shard(path: &Path, scratch: &Path, policy: &str, before: i64, counts: &mut BackupCounts) -> io::Result<()> {
    let mut tsm: Vec<(String, PathBuf)> = Vec::new();
    let mut tombstones: BTreeMap<String, Tombstones> = BTreeMap::new();
    let gz = flate2::read::GzDecoder::new(io::BufReader::with_capacity(256 << 10, std::fs::File::open(path)?));
    let mut archive = tar::Archive::new(gz);
    let result = (|| {
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry.path()?.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(stem) = name.strip_suffix(".tsm") {
                let to = scratch.join(format!("{}.tsm", tsm.len()));
                io::copy(&mut entry, &mut std::fs::File::create(&to)?)?;
                tsm.push((stem.to_string(), to));
            } else if let Some(stem) = name.strip_suffix(".tombstone") {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                read_tombstones(&bytes[..], tombstones.entry(stem.to_string()).or_default())?;
            }
        }
        let empty = Tombstones::new();
        let mut files = Vec::new();
        let mut dead = Vec::new();
        for (stem, path) in &tsm {
            files.push(TsmFile::open(path).map_err(|e| io::Error::new(e.kind(), format!("{stem}.tsm: {e}")))?);
            dead.push(tombstones.get(stem).unwrap_or(&empty));
        }
        count_files(&mut files, &dead, policy, before, counts)
    })();
    for (_, path) in &tsm {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Walks the indexes of one shard's files together, key by key in order, adding each key's
/// count to its measurement.
fn count_files(files: &mut [TsmFile], dead: &[&Tombstones], policy: &str, before: i64, counted: &mut BackupCounts) -> io::Result<()> {
    let mut heads: Vec<Option<(Vec<u8>, Vec<BlockEntry>)>> = files.iter_mut().map(|f| f.next_key()).collect::<io::Result<_>>()?;
    let mut block = Vec::new();
    let mut measurement: Option<(Vec<u8>, String)> = None;
    while let Some(key) = heads.iter().flatten().map(|(k, _)| k).min().cloned() {
        let mut blocks = Vec::new();
        for (i, head) in heads.iter_mut().enumerate() {
            if head.as_ref().is_some_and(|(k, _)| *k == key) {
                let (_, entries) = head.take().expect("checked");
                blocks.extend(entries.into_iter().map(|e| (i, e)));
                *head = files[i].next_key()?;
            }
        }
        let tombstoned = blocks.iter().any(|(file, _)| dead[*file].contains_key(&key));
        let n = count_key(files, dead, &key, blocks.clone(), before, true, &mut block)?;
        if tombstoned {
            let all = count_key(files, dead, &key, blocks, before, false, &mut block)?;
            counted.deleted_in_files += all.saturating_sub(n);
        }
        if n == 0 {
            continue;
        }
        let name = measurement_of(&key);
        if measurement.as_ref().is_none_or(|(raw, _)| raw.as_slice() != name) {
            let item = format!("{}.{}:values", item_part(policy), item_part(&unescape_measurement(name)));
            measurement = Some((name.to_vec(), item));
        }
        let (_, item) = measurement.as_ref().expect("set above");
        *counted.counts.entry(item.clone()).or_default() += n;
    }
    Ok(())
}

/// Counts one key's distinct timestamps before `before` across its blocks in every file, leaving
/// out (when `tombstones`) those a tombstone of the block's own file deletes.
fn count_key(
    files: &mut [TsmFile],
    dead: &[&Tombstones],
    key: &[u8],
    mut blocks: Vec<(usize, BlockEntry)>,
    before: i64,
    tombstones: bool,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    blocks.sort_by_key(|(_, e)| (e.min, e.max));
    let deleted = |file: usize| if tombstones { dead[file].get(key).map(Vec::as_slice).unwrap_or(&[]) } else { &[] };
    let mut total = 0u64;
    let mut next = 0;
    // Decoded blocks whose times overlap, each with its read position: merged as a sweep.
    let mut active: Vec<(Vec<i64>, usize)> = Vec::new();
    loop {
        let head = active.iter().map(|(t, at)| t[*at]).min();
        match (head, blocks.get(next)) {
            (None, None) => return Ok(total),
            // Sorted by start: this block and every later one lie at or after T.
            (None, Some(&(_, entry))) if entry.min >= before => return Ok(total),
            (None, Some(&(file, entry)))
                if blocks.get(next + 1).is_none_or(|(_, b)| b.min > entry.max)
                    && entry.max < before
                    && !deleted(file).iter().any(|&(lo, hi)| lo <= entry.max && hi >= entry.min) =>
            {
                // Overlaps nothing and nothing in it is deleted or after T: its header says how many.
                total += count_timestamps(files[file].timestamps(&entry, buf)?)?;
                next += 1;
            }
            (h, Some(&(file, entry))) if h.is_none_or(|h| entry.min <= h) => {
                let mut times = Vec::new();
                decode_timestamps(files[file].timestamps(&entry, buf)?, &mut times)?;
                let gone = deleted(file);
                times.retain(|&t| t < before && !gone.iter().any(|&(lo, hi)| lo <= t && t <= hi));
                if !times.is_empty() {
                    active.push((times, 0));
                }
                next += 1;
            }
            (Some(h), _) => {
                total += 1;
                for (times, at) in active.iter_mut() {
                    // A block's own times ascend, but a damaged one must not loop forever.
                    while *at < times.len() && times[*at] <= h {
                        *at += 1;
                    }
                }
                active.retain(|(times, at)| *at < times.len());
            }
            (None, Some(_)) => unreachable!("a block is taken when nothing is active"),
        }
    }
}

/// The measurement part of a TSM key (still escaped): up to the first unescaped comma of the
/// series key, which ends at the field separator.
fn measurement_of(key: &[u8]) -> &[u8] {
    let series = key.windows(FIELD_SEPARATOR.len()).position(|w| w == FIELD_SEPARATOR).map_or(key, |at| &key[..at]);
    let mut i = 0;
    while i < series.len() {
        match series[i] {
            b'\\' => i += 2,
            b',' => return &series[..i],
            _ => i += 1,
        }
    }
    series
}

/// A measurement name as InfluxQL shows it: line protocol escapes only commas and spaces in it.
fn unescape_measurement(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && matches!(raw.get(i + 1), Some(b',') | Some(b' ')) {
            out.push(raw[i + 1]);
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_come_from_the_series_key() {
        assert_eq!(measurement_of(b"cpu,host=a#!~#value"), b"cpu");
        assert_eq!(measurement_of(b"cpu#!~#value"), b"cpu");
        assert_eq!(measurement_of(b"user\\ audit,practitioner=Ngozi\\ \xc3\x98#!~#action"), b"user\\ audit");
        assert_eq!(measurement_of(b"a\\,b,t=1#!~#f"), b"a\\,b");
        assert_eq!(unescape_measurement(b"user\\ audit"), "user audit");
        assert_eq!(unescape_measurement(b"a\\,b"), "a,b");
        assert_eq!(unescape_measurement(b"back\\slash"), "back\\slash");
    }

    /// Counts the TSM files (oldest first) with their tombstones, as one shard of policy `rp`.
    fn count(files: &[Vec<u8>], dead: &[Tombstones], before: i64) -> BackupCounts {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = Vec::new();
        for (i, bytes) in files.iter().enumerate() {
            let path = dir.path().join(format!("{i}.tsm"));
            std::fs::write(&path, bytes).unwrap();
            opened.push(TsmFile::open(&path).unwrap());
        }
        let dead: Vec<&Tombstones> = dead.iter().collect();
        let mut counted = BackupCounts::default();
        count_files(&mut opened, &dead, "rp", before, &mut counted).unwrap();
        counted
    }

    #[test]
    fn overlapping_files_count_each_time_once_and_tombstones_apply_to_their_own_file() {
        use crate::stores::influxdb::tsm::tests::tsm_file;
        let old = tsm_file(&[
            ("cpu,host=a#!~#v", vec![vec![1, 2, 3], vec![10, 11]]),
            ("cpu,host=b#!~#v", vec![vec![1, 2]]),
            ("user\\ audit,p=x#!~#action", vec![vec![4]]),
        ]);
        // Rewrites 3 and 10, adds 4 and 12; the key of host=c is new.
        let new = tsm_file(&[("cpu,host=a#!~#v", vec![vec![3, 4, 10, 12]]), ("cpu,host=c#!~#v", vec![vec![7]])]);
        let none = [Tombstones::new(), Tombstones::new()];
        let all = count(&[old.clone(), new.clone()], &none, i64::MAX);
        assert_eq!(all.deleted_in_files, 0);
        let all = all.counts;
        // host=a: 1 2 3 4 10 11 12; host=b: 1 2; host=c: 7.
        assert_eq!(all["rp.cpu:values"], 10);
        assert_eq!(all["rp.\"user audit\":values"], 1);

        // Before 11: host=a loses 11 and 12.
        assert_eq!(count(&[old.clone(), new.clone()], &none, 11).counts["rp.cpu:values"], 8);

        // A delete of host=a's 1..=3 in the old file; 3 was written again in the new one, so it
        // stays. The whole of host=b is deleted, and the old file's only user audit point.
        let mut dead_old = Tombstones::new();
        dead_old.insert(b"cpu,host=a#!~#v".to_vec(), vec![(1, 3)]);
        dead_old.insert(b"cpu,host=b#!~#v".to_vec(), vec![(i64::MIN, i64::MAX)]);
        dead_old.insert(b"user\\ audit,p=x#!~#action".to_vec(), vec![(0, 9)]);
        let counted = count(&[old, new], &[dead_old, Tombstones::new()], i64::MAX);
        // Still in the old file: host=a's 1 and 2, host=b's 1 and 2, the user audit point.
        assert_eq!(counted.deleted_in_files, 5);
        let counts = counted.counts;
        // host=a: 3 4 10 11 12; host=c: 7.
        assert_eq!(counts["rp.cpu:values"], 6);
        assert!(!counts.contains_key("rp.\"user audit\":values"), "{counts:?}");
    }
}
