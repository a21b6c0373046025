//! `manifest.json`: written last in each run folder; a run without one is not complete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_NAME: &str = "manifest.json";

/// Counts used to verify a restore, by scope (database, bucket) then item (table, collection,
/// measurement, or `objects`/`bytes`).
pub type Counts = BTreeMap<String, BTreeMap<String, u64>>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The configured store name (`postgres`, `mongodb`, `influxdb`, `minio`).
    pub store: String,
    /// `dump` or `differential`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The run id (date folder), e.g. `2026-11-24` or `2026-11-24_2`.
    pub id: String,
    pub started_at: String,
    pub finished_at: String,
    pub lifeboat_version: String,
    pub tool_versions: BTreeMap<String, String>,
    /// `zstd` then age (`age-x25519` or `age-scrypt`).
    pub compression: String,
    pub encryption: String,
    pub files: Vec<FileEntry>,
    /// What the counts count (e.g. `rows`, `documents`, `objects/bytes`).
    pub count_unit: String,
    pub counts: Counts,
    /// Store-specific facts (e.g. bucket policies) that are not counts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Stored (encrypted) size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// Size of the plain dump before compression.
    pub raw_size: u64,
}

impl Manifest {
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Lists every difference between the counts recorded at backup time and those found after a
/// restore, for the scopes that were restored.
pub fn compare_counts(expected: &Counts, found: &Counts) -> Vec<String> {
    let mut problems = Vec::new();
    for (scope, items) in expected {
        let empty = BTreeMap::new();
        let got = found.get(scope).unwrap_or(&empty);
        for (item, want) in items {
            match got.get(item) {
                Some(have) if have == want => {}
                Some(have) => problems.push(format!("{scope}/{item}: expected {want}, found {have}")),
                None => problems.push(format!("{scope}/{item}: expected {want}, missing after restore")),
            }
        }
        for (item, have) in got {
            if !items.contains_key(item) {
                problems.push(format!("{scope}/{item}: {have} found but not in the backup"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(items: &[(&str, &str, u64)]) -> Counts {
        let mut c = Counts::new();
        for (s, i, n) in items {
            c.entry(s.to_string()).or_default().insert(i.to_string(), *n);
        }
        c
    }

    #[test]
    fn equal_counts_have_no_problems() {
        let a = counts(&[("db", "public.t", 3), ("db", "public.u", 0)]);
        assert!(compare_counts(&a, &a).is_empty());
    }

    #[test]
    fn differences_are_each_reported() {
        let want = counts(&[("db", "public.t", 3), ("db", "public.u", 1)]);
        let got = counts(&[("db", "public.t", 2), ("db", "public.v", 5)]);
        let problems = compare_counts(&want, &got);
        assert_eq!(
            problems,
            vec![
                "db/public.t: expected 3, found 2",
                "db/public.u: expected 1, missing after restore",
                "db/public.v: 5 found but not in the backup",
            ]
        );
    }
}
