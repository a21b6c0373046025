//! The one shape of round-trip test every datastore reuses: back up over a transport, check the
//! listing and the stored files the same way for all, let the store check its own manifest
//! details, damage the target, restore, and compare fingerprints.

use std::path::Path;

use super::config::{Case, Transport};
use super::run::{assert_ok, lifeboat, stderr};

/// What a datastore's round trip provides; [`roundtrip`] does the rest.
pub trait RoundTrip {
    /// The store as `list` names it (`postgres`, `mongodb`, `influxdb`, `minio`).
    const STORE: &'static str;
    /// The `stores:` block both configs use.
    fn stores_block(&self) -> String;
    /// What the target holds, in a form that differs whenever the data does.
    fn fingerprint(&self) -> String;
    /// The store's own manifest checks (counts, file names, `extra`); `run_dir` is the run's
    /// folder on the `file://` side of the server.
    fn check_manifest(&self, manifest: &serde_json::Value, run_dir: &Path);
    /// Changes the target every way a restore must undo.
    fn damage(&self);
    /// What the restore must say it verified (at least `verified`; a store may name its count).
    fn restore_says(&self) -> String {
        "verified".into()
    }
    /// Checks beyond the fingerprint once the restore is done (an index enforced, temporary
    /// folders removed).
    fn after_restore(&self) {}
}

/// Backs up, checks, damages, restores and compares, for any store.
pub fn roundtrip<S: RoundTrip>(case: &Case, store: &S, transport: Transport) {
    let before = store.fingerprint();
    let stores = store.stores_block();
    let backup = case.backup_config_with(&transport, &stores, &format!("{}-backup.yaml", S::STORE));
    let restore = case.restore_config_with(&transport, &stores, &format!("{}-restore.yaml", S::STORE));

    let out = lifeboat(&backup, &["backup"]);
    assert_ok(&out);
    let said = stderr(&out);
    assert!(said.contains(&format!("{}: backup", S::STORE)) && said.contains("stored"), "closing line missing: {said}");
    let runs = case.runs(&backup);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["complete"], true);
    assert_eq!(runs[0]["store"], S::STORE);
    assert_eq!(runs[0]["type"], "dump");

    // Every stored file is where the manifest says, of the size it says, and an age file.
    let (run_dir, manifest) = case.manifest_of(&runs[0]);
    let files = manifest["files"].as_array().expect("the manifest lists files");
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(run_dir.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, f["size"].as_u64().unwrap(), "{f}");
        assert!(bytes.starts_with(b"age-encryption.org/v1"), "stored files are age files: {f}");
    }
    store.check_manifest(&manifest, &run_dir);

    store.damage();
    assert_ne!(store.fingerprint(), before, "the damage must show in the fingerprint");

    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
    assert!(stderr(&out).contains(&store.restore_says()), "{}", stderr(&out));
    assert_eq!(store.fingerprint(), before, "the restore brings back what was backed up");
    store.after_restore();
}
