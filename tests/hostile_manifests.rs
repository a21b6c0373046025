//! A restore runs on the day things are broken, against a backup server that may be damaged or
//! tampered with (issue 7). Each case is produced on a real server, `file://` and `ssh://`:
//! a cut-short manifest, file names that leave the work folder, a newer format version, a
//! manifest copied from another run. The target must stay untouched and nothing may be written
//! outside the restore's private work folder.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A PostgreSQL case with two complete backups (the older at `first`, the newer at `second`)
/// and the target changed after them, so "untouched" can be told from "restored".
struct TwoRuns {
    case: Case,
    backup: PathBuf,
    restore: PathBuf,
    first: String,
    second: String,
    /// The target's fingerprint after the change (what "untouched" means).
    changed: String,
    /// The target's fingerprint at backup time (what a good restore brings back).
    backed_up: String,
}

impl TwoRuns {
    fn new(name: &str, transport: &Transport) -> TwoRuns {
        let case = Case::new(name);
        seed_postgres(&case.db, 200);
        let backup = case.backup_config(transport);
        let restore = case.restore_config(transport);
        assert_ok(&lifeboat(&backup, &["backup"]));
        assert_ok(&lifeboat(&backup, &["backup"]));
        let backed_up = fingerprint(&case.db);
        let runs = case.runs(&backup);
        assert_eq!(runs.len(), 2, "{runs:?}");
        let (first, second) = (runs[0]["id"].as_str().unwrap().to_string(), runs[1]["id"].as_str().unwrap().to_string());
        psql(&case.db, "DELETE FROM registry.event WHERE id % 2 = 0");
        let changed = fingerprint(&case.db);
        assert_ne!(changed, backed_up);
        TwoRuns { case, backup, restore, first, second, changed, backed_up }
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.case.server_path.join(id).join("postgres").join("manifest.json")
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.manifest_path(id)).unwrap()).unwrap()
    }

    fn write_manifest(&self, id: &str, manifest: &serde_json::Value) {
        self.put_manifest(id, &serde_json::to_vec_pretty(manifest).unwrap());
    }

    /// Replaces run `id`'s manifest by `bytes`, signed with the backup side's key: these tests
    /// reach the checks that hold even against a holder of that key.
    fn put_manifest(&self, id: &str, bytes: &[u8]) {
        let path = self.manifest_path(id);
        std::fs::write(&path, bytes).unwrap();
        self.case.sign_manifest(path.parent().unwrap());
    }

    fn restore(&self, args: &[&str]) -> std::process::Output {
        lifeboat(&self.restore, &[&["restore", "--yes"], args].concat())
    }

    /// A failed restore: one error line naming `needle`, exit 1, the target as it was.
    #[track_caller]
    fn refused(&self, args: &[&str], needle: &str) -> String {
        let line = assert_fails(&self.restore(args), 1, needle);
        assert_eq!(fingerprint(&self.case.db), self.changed, "a refused restore must leave the target untouched");
        line
    }

    fn list_json(&self) -> Vec<serde_json::Value> {
        self.case.runs(&self.backup)
    }
}

fn cut_short_manifests_never_block_a_good_run(transport: Transport, name: &str) {
    let t = TwoRuns::new(name, &transport);
    // The older run's manifest cut short: list still works, names it damaged, and the newest
    // good run restores.
    let text = std::fs::read(t.manifest_path(&t.first)).unwrap();
    t.put_manifest(&t.first, &text[..text.len() / 2]);
    let listed = t.list_json();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["complete"], false);
    assert!(listed[0]["damaged"].as_str().unwrap().contains("not a valid manifest"), "{listed:?}");
    assert_eq!(listed[1]["complete"], true);
    let out = t.restore(&[]);
    assert_ok(&out);
    assert_eq!(fingerprint(&t.case.db), t.backed_up);

    // `--from` the damaged run names it and stops; verify reports it and exits 1.
    psql(&t.case.db, "DELETE FROM registry.event WHERE id % 2 = 0");
    let line = t.refused(&["--from", &t.first], &format!("backup {} of postgres is damaged", t.first));
    assert!(line.contains("choose another with --from"), "{line}");
    let verify = lifeboat(&t.backup, &["verify", "--from", &t.first]);
    assert_fails(&verify, 1, "failed verification");
    assert!(String::from_utf8_lossy(&verify.stdout).contains("DAMAGED"), "{}", String::from_utf8_lossy(&verify.stdout));

    // Now the NEWEST manifest cut short instead (the older one repaired): restore passes over
    // it, says so, and restores the older run; status counts it.
    t.put_manifest(&t.first, &text);
    let newest = std::fs::read(t.manifest_path(&t.second)).unwrap();
    t.put_manifest(&t.second, &newest[..10]);
    let out = t.restore(&[]);
    assert_ok(&out);
    assert!(stderr(&out).contains(&format!("passing over damaged backup {}", t.second)), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("restore {} done", t.first)), "the older run is the one restored: {}", stderr(&out));
    assert_eq!(fingerprint(&t.case.db), t.backed_up);
    let status = lifeboat(&t.backup, &["--json", "status"]);
    assert_ok(&status);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["stores"][0]["newest"], t.first.as_str());
    assert_eq!(status["stores"][0]["damaged_since"], 1);

    // Both damaged: nothing to restore, said in one line, target untouched.
    t.put_manifest(&t.first, b"");
    psql(&t.case.db, "DELETE FROM registry.event WHERE id % 2 = 0");
    t.refused(&[], "2 damaged run(s) found");
}

#[test]
fn cut_short_manifests_never_block_a_good_run_over_ssh() {
    cut_short_manifests_never_block_a_good_run(Transport::Ssh, "cut_ssh");
}

#[test]
fn cut_short_manifests_never_block_a_good_run_in_a_folder() {
    cut_short_manifests_never_block_a_good_run(Transport::File, "cut_file");
}

/// Names a tampered manifest may give its files. Each must be refused before anything is
/// downloaded; none may create a file anywhere.
fn hostile_names(outside: &Path) -> Vec<String> {
    vec![
        outside.join("absolute").display().to_string(),
        format!("../../../../../../..{}", outside.join("dotdot").display()),
        "nested/dir/name".into(),
        format!("a/../..{}", outside.join("mixed").display()),
        "back\\slash".into(),
        "..".into(),
        String::new(),
        "nul\0byte".into(),
    ]
}

fn hostile_file_names_write_nothing(transport: Transport, name: &str) {
    let t = TwoRuns::new(name, &transport);
    let outside = tempfile::Builder::new().prefix("lifeboat-outside-").tempdir().unwrap();
    let good = t.manifest(&t.second);
    for hostile in hostile_names(outside.path()) {
        let mut manifest = good.clone();
        manifest["files"][0]["name"] = hostile.clone().into();
        t.write_manifest(&t.second, &manifest);
        // Chosen by name: refused, naming the entry.
        t.refused(&["--from", &t.second], "not a plain file name");
        // Not chosen by name: passed over for the older good run.
        let listed = t.list_json();
        assert!(listed[1]["damaged"].as_str().unwrap().contains("not a plain file name"), "{hostile:?}: {listed:?}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "{hostile:?} wrote outside the work folder");
    }
    // The same names in the newest run never stop a restore of the older one.
    assert_ok(&t.restore(&[]));
    assert_eq!(fingerprint(&t.case.db), t.backed_up);
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn hostile_file_names_write_nothing_over_ssh() {
    hostile_file_names_write_nothing(Transport::Ssh, "names_ssh");
}

#[test]
fn hostile_file_names_write_nothing_in_a_folder() {
    hostile_file_names_write_nothing(Transport::File, "names_file");
}

fn foreign_manifests_are_refused(transport: Transport, name: &str) {
    let t = TwoRuns::new(name, &transport);
    let good = t.manifest(&t.second);

    // A format version one higher than this Lifeboat knows: refused, naming the version.
    let mut newer = good.clone();
    newer["format_version"] = 2.into();
    newer["files"] = serde_json::json!({"a shape": "this Lifeboat does not know"});
    t.write_manifest(&t.second, &newer);
    t.refused(&["--from", &t.second], "format version 2, this Lifeboat reads up to 1: use a newer Lifeboat");

    // A manifest copied from another run would restore that run under this one's name.
    let mut copied = t.manifest(&t.first);
    copied["id"] = "2020-01-01".into();
    t.write_manifest(&t.second, &copied);
    t.refused(&["--from", &t.second], "belongs to run 2020-01-01");

    // A checksum that is not one (the download check would compare against nonsense).
    let mut bad_sum = good.clone();
    bad_sum["files"][0]["sha256"] = "ééééééé".into();
    t.write_manifest(&t.second, &bad_sum);
    t.refused(&["--from", &t.second], "not a SHA-256 in hex");

    // The same file listed twice.
    let mut twice = good.clone();
    let first_file = twice["files"][0].clone();
    twice["files"].as_array_mut().unwrap().push(first_file);
    t.write_manifest(&t.second, &twice);
    t.refused(&["--from", &t.second], "twice");

    // A manifest far larger than any real one is not read at all.
    let huge = std::fs::File::create(t.manifest_path(&t.second)).unwrap();
    huge.set_len(65 << 20).unwrap();
    t.refused(&["--from", &t.second], "far larger than any real one");

    // The good manifest back: the run restores again.
    t.write_manifest(&t.second, &good);
    assert_ok(&t.restore(&["--from", &t.second]));
    assert_eq!(fingerprint(&t.case.db), t.backed_up);
}

#[test]
fn foreign_manifests_are_refused_over_ssh() {
    foreign_manifests_are_refused(Transport::Ssh, "foreign_ssh");
}

#[test]
fn foreign_manifests_are_refused_in_a_folder() {
    foreign_manifests_are_refused(Transport::File, "foreign_file");
}
