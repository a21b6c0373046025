//! `manifest.json`: written last in each run folder; a run without one is not complete.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_NAME: &str = "manifest.json";

/// `dump` (a full, self-contained backup per run, in a date folder) or `differential`: a
/// store's configured `type`, and the kind of run a manifest records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    #[default]
    Dump,
    Differential,
}

impl std::fmt::Display for StoreType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreType::Dump => "dump",
            StoreType::Differential => "differential",
        })
    }
}

/// Counts used to verify a restore, by scope (database, bucket) then item (table, collection,
/// measurement, or `objects`/`bytes`).
pub type Counts = BTreeMap<String, BTreeMap<String, u64>>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The configured store name (`postgres`, `mongodb`, `influxdb`, `minio`).
    pub store: String,
    #[serde(rename = "type")]
    pub kind: StoreType,
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
    /// Store-specific facts (e.g. bucket policies) that are not counts: each store's own typed
    /// struct, read with [`Manifest::extra`] and written with [`StoreBackup::new`].
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Set for a run imported from a backup of OpenCRVS's original scripts (`lifeboat import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<ImportedFrom>,
    /// Who signed it, set by the reader once the signature is checked; never part of the file.
    #[serde(skip)]
    pub signature: Option<crate::signing::Signature>,
}

/// The file of the original scripts a run was imported from, left where it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedFrom {
    /// Relative to the server's root, e.g. `2025-03-01/postgres_backup_2025-03-01.tar.gz.enc`.
    pub path: String,
    /// Its size in bytes when it was imported.
    pub size: u64,
}

/// What a store's backup reports besides its files.
#[derive(Debug, Default)]
pub struct StoreBackup {
    pub tool_versions: BTreeMap<String, String>,
    pub count_unit: String,
    pub counts: Counts,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl StoreBackup {
    /// A backup's report with its store-specific `extra` (a struct serialising to an object).
    pub fn new(count_unit: &str, counts: Counts, extra: &impl Serialize) -> StoreBackup {
        let extra = match serde_json::to_value(extra).expect("store extras serialise") {
            serde_json::Value::Object(map) => map,
            other => panic!("a store's extra must serialise to an object, not {other}"),
        };
        StoreBackup { tool_versions: BTreeMap::new(), count_unit: count_unit.into(), counts, extra }
    }

    pub fn tool(mut self, name: &str, version: impl Into<String>) -> StoreBackup {
        self.tool_versions.insert(name.into(), version.into());
        self
    }
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
    /// Parses a manifest read from the server, which is untrusted: a newer format version is
    /// named before the rest is parsed (its shape may differ), and every file entry must be a
    /// plain, unique file name with a SHA-256 in hex. `Err` says why the run is damaged.
    pub fn parse(data: &[u8]) -> std::result::Result<Manifest, String> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        if let Ok(Version { format_version }) = serde_json::from_slice::<Version>(data)
            && format_version > FORMAT_VERSION
        {
            return Err(format!(
                "{MANIFEST_NAME} has format version {format_version}, this Lifeboat reads up to {FORMAT_VERSION}: use a newer Lifeboat"
            ));
        }
        let manifest: Manifest = serde_json::from_slice(data).map_err(|e| format!("{MANIFEST_NAME} is not a valid manifest ({e})"))?;
        if manifest.format_version == 0 {
            return Err(format!("{MANIFEST_NAME} has format version 0, which no Lifeboat writes"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &manifest.files {
            if super::check_file_name(&f.name).is_err() || f.name == MANIFEST_NAME {
                return Err(format!("{MANIFEST_NAME} lists a file `{}` that is not a plain file name", f.name.escape_debug()));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(format!("{MANIFEST_NAME} lists the file `{}` twice", f.name.escape_debug()));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{MANIFEST_NAME} gives `{}` a checksum that is not a SHA-256 in hex", f.name.escape_debug()));
            }
        }
        Ok(manifest)
    }

    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The store-specific facts as the store's own type; a manifest without them was not
    /// written by this store (or is damaged), and is refused before anything is changed.
    pub fn extra<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(serde_json::Value::Object(self.extra.clone())).map_err(|e| {
            Error::Integrity(format!(
                "backup {} of {}: the manifest's store details are unreadable ({e}): this is not a {} {} backup of this Lifeboat; nothing was changed",
                self.id, self.store, self.store, self.kind
            ))
        })
    }

    /// The plain size of every file, for the closing line of a restore.
    pub fn raw_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.raw_size).sum()
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

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Extra {
        databases: BTreeMap<String, String>,
    }

    #[test]
    fn typed_extras_round_trip_and_foreign_ones_are_refused() {
        let extra = Extra { databases: BTreeMap::from([("events".into(), "db-events.dump.zst.age".into())]) };
        let info = StoreBackup::new("rows", Counts::new(), &extra).tool("pg_dump", "15");
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            store: "postgres".into(),
            kind: StoreType::Dump,
            id: "2026-11-24".into(),
            started_at: String::new(),
            finished_at: String::new(),
            lifeboat_version: String::new(),
            tool_versions: info.tool_versions,
            compression: String::new(),
            encryption: String::new(),
            files: vec![],
            count_unit: info.count_unit,
            counts: info.counts,
            extra: info.extra,
            imported_from: None,
            signature: None,
        };
        let json = serde_json::to_string(&manifest).unwrap();
        assert!(json.contains(r#""extra":{"databases":{"events":"db-events.dump.zst.age"}}"#), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.extra::<Extra>().unwrap(), extra);
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Buckets {
            buckets: BTreeMap<String, String>,
        }
        let e = back.extra::<Buckets>().unwrap_err().to_string();
        assert!(e.contains("not a postgres dump backup"), "{e}");
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

/// `Manifest::parse` reads bytes from an untrusted server: whatever they are, it returns, and
/// what it accepts holds only plain, unique file names and hex checksums. `PROPTEST_CASES`
/// sets the number of cases (256 by default; e.g. 100000 for a longer run by hand).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "format_version": 1, "store": "postgres", "type": "dump", "id": "2026-11-24",
            "started_at": "2026-11-24T01:00:00+00:00", "finished_at": "2026-11-24T01:10:00+00:00",
            "lifeboat_version": "0.1.0", "tool_versions": {"pg_dump": "15.8"},
            "compression": "zstd", "encryption": "age-x25519",
            "files": [
                {"name": "db-events.dump.zst.age", "size": 1234, "sha256": "a".repeat(64), "raw_size": 5678},
                {"name": "roles.sql.zst.age", "size": 10, "sha256": "0123456789abcdef".repeat(4), "raw_size": 20}
            ],
            "count_unit": "rows", "counts": {"events": {"public.t": 3}},
            "extra": {"databases": {"events": "db-events.dump.zst.age"}}
        })
    }

    /// What an accepted manifest may hold.
    fn check(data: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(m) = Manifest::parse(data) {
            prop_assert!(m.format_version >= 1 && m.format_version <= FORMAT_VERSION);
            let mut names = std::collections::BTreeSet::new();
            for f in &m.files {
                prop_assert!(crate::layout::check_file_name(&f.name).is_ok() && f.name != MANIFEST_NAME, "{:?}", f.name);
                prop_assert!(names.insert(f.name.clone()), "{:?} twice", f.name);
                prop_assert!(f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }
        Ok(())
    }

    /// A valid manifest with one field set to an arbitrary JSON value, or a file entry's name,
    /// checksum or size replaced.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let value = prop_oneof![
            any::<String>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!([])),
            Just(serde_json::json!({})),
        ];
        let fields = ["format_version", "store", "type", "id", "files", "counts", "extra", "tool_versions"];
        let field = (any::<Index>(), value.clone()).prop_map(move |(at, v)| {
            let mut m = valid();
            m[fields[at.index(fields.len())]] = v;
            serde_json::to_vec(&m).unwrap()
        });
        let names = prop_oneof![
            any::<String>(),
            Just("../../etc/passwd".to_string()),
            Just("/etc/passwd".to_string()),
            Just("a/b".to_string()),
            Just("manifest.json".to_string()),
            Just("roles.sql.zst.age".to_string()),
        ];
        let entry = (any::<bool>(), names, any::<String>(), any::<u64>()).prop_map(|(first, name, sha, size)| {
            let mut m = valid();
            let at = if first { 0 } else { 1 };
            m["files"][at]["name"] = name.into();
            if sha.len() % 2 == 0 {
                m["files"][at]["sha256"] = sha.into();
            }
            m["files"][at]["size"] = size.into();
            serde_json::to_vec(&m).unwrap()
        });
        let bytes = serde_json::to_vec(&valid()).unwrap();
        let cut = any::<Index>().prop_map(move |at| bytes[..at.index(bytes.len())].to_vec());
        let bytes = serde_json::to_vec(&valid()).unwrap();
        let flipped = proptest::collection::vec((any::<Index>(), 1u8..=255), 1..6).prop_map(move |flips| {
            let mut b = bytes.clone();
            for (at, mask) in flips {
                let i = at.index(b.len());
                b[i] ^= mask;
            }
            b
        });
        prop_oneof![proptest::collection::vec(any::<u8>(), 0..2048), field, entry, cut, flipped]
    }

    #[test]
    fn the_valid_sample_parses() {
        let m = Manifest::parse(&serde_json::to_vec(&valid()).unwrap()).unwrap();
        assert_eq!(m.files.len(), 2);
    }

    proptest! {
        #[test]
        fn fuzz_parse(data in mutated()) {
            check(&data)?;
        }
    }
}
