//! MinIO dump backups and restores, end to end against the real MinIO server started by
//! scripts/servers/s3.sh (127.0.0.1:MINIO_PORT) and a real sshd. Each test uses its own buckets.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::s3::{MINIO_PORT, S3, S3S_PORT, minio_store_block, s3_key_file};
use common::*;

/// Over 100 MB and not a multiple of the part size.
const BIG_SIZE: usize = (101 << 20) + 12345;
const BIG_KEY: &str = "0000-big/scan of register ü.bin";
const LONG_KEY_PREFIX: &str = "deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0/1/2/3/4/5/6/7/8/9/aa/bb/cc/dd/ee/ff/gg/hh/";

/// A test's buckets: `docs` (the awkward keys, the big object), `versioned` (versioning and a
/// policy), `empty`.
struct Buckets {
    docs: String,
    versioned: String,
    empty: String,
}

impl Buckets {
    fn new(test: &str) -> Buckets {
        let prefix = format!("lb-{}", test.replace('_', "-"));
        Buckets { docs: format!("{prefix}-docs"), versioned: format!("{prefix}-versioned"), empty: format!("{prefix}-empty") }
    }

    fn all(&self) -> Vec<&str> {
        vec![&self.docs, &self.versioned, &self.empty]
    }

    /// Frees the server's disk once a test with the big object has passed.
    fn remove(&self, s3: &S3) {
        for name in self.all() {
            s3.remove_bucket(name);
        }
    }

    fn fingerprint(&self, s3: &S3) -> String {
        self.all().iter().map(|b| format!("== {b}\n{}", s3.fingerprint(b))).collect::<Vec<_>>().join("\n")
    }
}

fn long_key() -> String {
    format!("{LONG_KEY_PREFIX}registration record with a long name ✓.json")
}

/// Fills the buckets; returns (objects, bytes) expected per bucket.
fn seed(s3: &S3, b: &Buckets, big: bool) -> BTreeMap<String, (u64, u64)> {
    for name in b.all() {
        s3.fresh_bucket(name);
    }
    let mut expected = BTreeMap::new();
    // (key, body, content type, user metadata)
    type Seeded = (String, Vec<u8>, Option<&'static str>, Vec<(&'static str, &'static str)>);
    let docs: Vec<Seeded> = vec![
        ("plain.txt".into(), b"hello registry\n".to_vec(), Some("text/plain"), vec![]),
        (
            "with space/birth certificate 2024.pdf".into(),
            vec![b'%'; 70_000],
            Some("application/pdf"),
            vec![("registrar", "Ngozi Okafor"), ("district", "ikeja")],
        ),
        (
            "ünïcödé/文件/файл.json".into(),
            "{\"name\":\"Zoë\"}".as_bytes().to_vec(),
            Some("application/json; charset=utf-8"),
            vec![("lang", "multi")],
        ),
        (long_key(), (0..3000u32).flat_map(|i| i.to_le_bytes()).collect(), None, vec![]),
        ("empty-file".into(), Vec::new(), Some("application/octet-stream"), vec![("note", "zero bytes")]),
        ("folder-marker/".into(), Vec::new(), None, vec![]),
        ("medium/photo.jpg".into(), (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect(), Some("image/jpeg"), vec![]),
    ];
    let mut bytes = 0;
    for (key, body, ct, meta) in &docs {
        s3.put(&b.docs, key, body, *ct, meta);
        bytes += body.len() as u64;
    }
    let served = "<html lang=\"fr\">acte de naissance</html>".as_bytes();
    s3.put_served(&b.docs, "served/certificate.html", served);
    bytes += served.len() as u64;
    let mut objects = docs.len() as u64 + 1;
    if big {
        s3.put_big(&b.docs, BIG_KEY, BIG_SIZE);
        objects += 1;
        bytes += BIG_SIZE as u64;
    }
    expected.insert(b.docs.clone(), (objects, bytes));

    s3.set_versioning(&b.versioned);
    s3.set_policy(&b.versioned);
    s3.put(&b.versioned, "public/notice.html", b"<p>first</p>", Some("text/html"), &[]);
    s3.put(&b.versioned, "public/notice.html", b"<p>second version</p>", Some("text/html"), &[("rev", "2")]);
    s3.put(&b.versioned, "private/ledger.csv", b"a,b\n1,2\n", Some("text/csv"), &[]);
    expected.insert(b.versioned.clone(), (2, (b"<p>second version</p>".len() + b"a,b\n1,2\n".len()) as u64));
    expected.insert(b.empty.clone(), (0, 0));
    expected
}

/// A test's three buckets on the S3 server, with what each should hold.
struct Minio {
    s3: S3,
    buckets: Buckets,
    expected: BTreeMap<String, (u64, u64)>,
}

impl RoundTrip for Minio {
    const STORE: &'static str = "minio";

    fn stores_block(&self) -> String {
        minio_store_block(&self.buckets.all(), MINIO_PORT, "")
    }

    fn fingerprint(&self) -> String {
        self.buckets.fingerprint(&self.s3)
    }

    /// The manifest counts exactly what was written, and records the bucket settings.
    fn check_manifest(&self, manifest: &serde_json::Value, _run_dir: &Path) {
        let b = &self.buckets;
        for (bucket, (objects, bytes)) in &self.expected {
            assert_eq!(manifest["counts"][bucket]["objects"], *objects, "{bucket}");
            assert_eq!(manifest["counts"][bucket]["bytes"], *bytes, "{bucket}");
        }
        assert_eq!(manifest["count_unit"], "objects/bytes");
        let settings = &manifest["extra"]["buckets"];
        assert_eq!(settings[&b.versioned]["versioning"], "Enabled");
        assert!(settings[&b.versioned]["policy"].as_str().unwrap().contains("s3:GetObject"));
        assert!(settings[&b.docs]["policy"].is_null() && settings[&b.docs]["versioning"].is_null());
        let files = manifest["files"].as_array().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0]["name"], "objects.tar.zst.age");
        assert!(files[0]["raw_size"].as_u64().unwrap() > BIG_SIZE as u64);
    }

    /// Damage every bucket: lost and changed objects, an extra object, a lost policy.
    fn damage(&self) {
        let (s3, b) = (&self.s3, &self.buckets);
        s3.delete(&b.docs, "plain.txt");
        s3.delete(&b.docs, BIG_KEY);
        s3.put(&b.docs, "with space/birth certificate 2024.pdf", b"overwritten", Some("text/plain"), &[]);
        s3.put(&b.docs, "intruder.txt", b"not in the backup", None, &[]);
        s3.delete_policy(&b.versioned);
        s3.put(&b.empty, "stray", b"x", None, &[]);
    }

    /// Frees the server's disk once the test with the big object has passed.
    fn after_restore(&self) {
        self.buckets.remove(&self.s3);
    }
}

fn roundtrip(test: &str, transport: Transport) {
    let s3 = S3::minio();
    let case = Case::new(test);
    let buckets = Buckets::new(test);
    let expected = seed(&s3, &buckets, true);
    common::roundtrip(&case, &Minio { s3, buckets, expected }, transport);
}

#[test]
fn roundtrip_over_ssh() {
    roundtrip("minio_ssh", Transport::Ssh);
}

#[test]
fn roundtrip_to_local_folder() {
    roundtrip("minio_file", Transport::File);
}

/// The recipe of docs/restore-minio.md: age, zstd and tar bring back the objects as files, and
/// Python's tarfile lists their content types and metadata, with no Lifeboat involved.
#[test]
fn by_hand_recipe_recovers_objects_and_metadata() {
    let s3 = S3::minio();
    let case = Case::new("minio_by_hand");
    let b = Buckets::new("minio_by_hand");
    seed(&s3, &b, false);
    let backup = case.backup_config_with(&Transport::File, &minio_store_block(&b.all(), MINIO_PORT, ""), "backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&backup);
    let archive = case.server_path.join(runs[0]["path"].as_str().unwrap()).join("objects.tar.zst.age");
    let out_dir = case.dir.path().join("restored");
    std::fs::create_dir_all(&out_dir).unwrap();
    let script = format!(
        "set -euo pipefail; age -d -i {id} {archive} | zstd -d | tar -x --warning=no-unknown-keyword -C {out}",
        id = case.identity_file.display(),
        archive = archive.display(),
        out = out_dir.display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "by-hand extract failed: {}", String::from_utf8_lossy(&out.stderr));
    let docs = out_dir.join(&b.docs);
    assert_eq!(std::fs::read(docs.join("plain.txt")).unwrap(), b"hello registry\n");
    assert_eq!(std::fs::read(docs.join("with space/birth certificate 2024.pdf")).unwrap(), vec![b'%'; 70_000]);
    assert_eq!(std::fs::read_to_string(docs.join("ünïcödé/文件/файл.json")).unwrap(), "{\"name\":\"Zoë\"}");
    assert_eq!(std::fs::read(docs.join(long_key())).unwrap().len(), 12_000);
    assert_eq!(std::fs::metadata(docs.join("empty-file")).unwrap().len(), 0);
    assert!(docs.join("folder-marker").is_dir());
    assert_eq!(std::fs::read(out_dir.join(&b.versioned).join("public/notice.html")).unwrap(), b"<p>second version</p>");
    assert!(out_dir.join(&b.empty).is_dir());
    let header: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("_lifeboat-minio.json")).unwrap()).unwrap();
    assert_eq!(header["buckets"][&b.versioned]["versioning"], "Enabled");

    // The metadata listing step of the recipe.
    let doc = std::fs::read_to_string(repo().join("docs/restore-minio.md")).unwrap();
    let lister = doc.split("```python\n").nth(1).and_then(|s| s.split("```").next()).expect("docs/restore-minio.md has a python block");
    let lister_file = case.dir.path().join("list.py");
    std::fs::write(&lister_file, lister).unwrap();
    let script = format!(
        "set -euo pipefail; age -d -i {id} {archive} | zstd -d | python3 {lister} > {out}/objects.jsonl",
        id = case.identity_file.display(),
        archive = archive.display(),
        lister = lister_file.display(),
        out = case.dir.path().display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "metadata listing failed: {}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<serde_json::Value> =
        std::fs::read_to_string(case.dir.path().join("objects.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 8 + 2);
    let pdf = listed.iter().find(|o| o["key"] == "with space/birth certificate 2024.pdf").unwrap();
    assert_eq!(pdf["bucket"], b.docs.as_str());
    assert_eq!(pdf["content_type"], "application/pdf");
    assert_eq!(pdf["metadata"]["registrar"], "Ngozi Okafor");
    assert_eq!(pdf["file"], format!("{}/with space/birth certificate 2024.pdf", b.docs));
    assert!(listed.iter().any(|o| o["key"] == long_key()));
    let served = listed.iter().find(|o| o["key"] == "served/certificate.html").unwrap();
    assert_eq!(served["headers"]["cache-control"], "max-age=3600");
    assert_eq!(served["headers"]["content-language"], "fr");
}

#[test]
fn writes_during_backup_do_not_cause_a_false_mismatch() {
    let s3 = Arc::new(S3::minio());
    let case = Case::new("minio_concurrent");
    let b = Buckets::new("minio_concurrent");
    seed(&s3, &b, false);
    for i in 0..300 {
        s3.put(&b.docs, &format!("batch/{i:04}.txt"), format!("record {i}").as_bytes(), Some("text/plain"), &[]);
    }
    let stores = minio_store_block(&b.all(), MINIO_PORT, "");
    let backup = case.backup_config_with(&Transport::File, &stores, "backup.yaml");
    let restore = case.restore_config_with(&Transport::File, &stores, "restore.yaml");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s3, stop, bucket) = (s3.clone(), stop.clone(), b.docs.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 2000 {
                s3.put(&bucket, &format!("batch/{:04}.txt", 300 + n), b"written during the backup", None, &[]);
                s3.delete(&bucket, &format!("batch/{:04}.txt", n % 300));
                n += 1;
            }
            n
        })
    };
    let out = lifeboat(&backup, &["backup"]);
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert_ok(&out);
    assert!(writes > 0, "the writer ran during the backup");
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
}

#[test]
fn all_buckets_are_backed_up_when_none_are_named() {
    let s3 = S3::minio();
    let case = Case::new("minio_all");
    let b = Buckets::new("minio_all");
    let expected = seed(&s3, &b, false);
    // Other tests create and delete buckets meanwhile: a bucket that vanishes is skipped.
    let backup = case.backup_config_with(&Transport::File, &minio_store_block(&[], MINIO_PORT, ""), "backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&backup);
    let manifest = case.manifest_of(&runs[0]).1;
    for (bucket, (objects, bytes)) in &expected {
        assert_eq!(manifest["counts"][bucket]["objects"], *objects, "{bucket}");
        assert_eq!(manifest["counts"][bucket]["bytes"], *bytes, "{bucket}");
        assert!(manifest["extra"]["buckets"].get(bucket).is_some(), "{bucket} settings recorded");
    }
}

// ---- bad input: one clear line, the right exit code, nothing lost ----

#[test]
fn unreachable_s3_server_fails_the_run_and_keeps_older_backups() {
    let s3 = S3::minio();
    let case = Case::new("minio_unreachable");
    let b = Buckets::new("minio_unreachable");
    seed(&s3, &b, false);
    let backup = case.backup_config_with(&Transport::Ssh, &minio_store_block(&b.all(), MINIO_PORT, ""), "backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let good = case.runs(&backup);
    let good_manifest = case.manifest_of(&good[0]).1;

    // Nothing listens on this port.
    let down = case.backup_config_with(&Transport::Ssh, &minio_store_block(&b.all(), CLOSED_S3_PORT, ""), "down.yaml");
    let out = lifeboat(&down, &["backup"]);
    assert_fails(&out, 1, &format!("cannot reach the S3 server at http://127.0.0.1:{CLOSED_S3_PORT}"));
    let runs = case.runs(&backup);
    assert_eq!(runs.len(), 1, "the failed run left nothing: {runs:?}");
    assert_eq!(runs[0]["complete"], true);
    assert_eq!(case.manifest_of(&runs[0]).1, good_manifest, "the older backup is untouched");
}

#[test]
fn s3_server_lost_mid_stream_never_completes_a_run() {
    let s3 = S3::minio();
    let case = Case::new("minio_cut");
    let b = Buckets::new("minio_cut");
    seed(&s3, &b, true);
    let backup = case.backup_config_with(&Transport::File, &minio_store_block(&b.all(), MINIO_PORT, ""), "backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let good = case.runs(&backup);

    let relay = DyingRelay::start(MINIO_PORT, 30 << 20);
    let through_relay = case.backup_config_with(&Transport::File, &minio_store_block(&b.all(), relay.port, ""), "relay.yaml");
    let out = lifeboat(&through_relay, &["backup"]);
    assert!(relay.went_down(), "the relay cut the connection");
    let line = assert_fails(&out, 1, "cannot reach the S3 server at http://127.0.0.1:");
    assert!(line.contains("while reading object") || line.contains("while listing"), "{line}");
    let runs = case.runs(&backup);
    assert_eq!(runs.iter().filter(|r| r["complete"] == true).count(), 1, "{runs:?}");
    assert_eq!(runs.iter().rfind(|r| r["complete"] == true).unwrap()["id"], good[0]["id"]);
    b.remove(&s3);
}

#[test]
fn missing_bucket_is_named_before_any_data_moves() {
    let s3 = S3::minio();
    let case = Case::new("minio_missing");
    let b = Buckets::new("minio_missing");
    s3.fresh_bucket(&b.docs);
    s3.remove_bucket("lb-minio-missing-nope");
    let config =
        case.backup_config_with(&Transport::File, &minio_store_block(&[&b.docs, "lb-minio-missing-nope"], MINIO_PORT, ""), "backup.yaml");
    let out = lifeboat(&config, &["backup"]);
    assert_fails(&out, 1, "bucket `lb-minio-missing-nope` named in stores.minio.buckets does not exist");
    assert!(case.runs(&config).is_empty(), "no run left behind");
}

#[test]
fn archive_of_another_store_is_refused_before_touching_buckets() {
    let s3 = S3::minio();
    let case = Case::new("minio_wrong_store");
    let b = Buckets::new("minio_wrong_store");
    seed(&s3, &b, false);
    let before = b.fingerprint(&s3);
    // A PostgreSQL backup in the folder the MinIO restore is pointed at.
    seed_postgres(&case.db, 20);
    let pg_backup = case.write_config(
        "pg.yaml",
        &format!(
            "role: backup\ntimezone: Africa/Lagos\n{}encryption:\n  recipients: [{}]\n{}{}",
            case.server_block(&Transport::File),
            case.recipient,
            case.signing_block("backup"),
            case.postgres_block("")
        ),
    );
    assert_ok(&lifeboat(&pg_backup, &["backup"]));
    let stores = minio_store_block(&b.all(), MINIO_PORT, "    server_dir: postgres\n");
    let restore = case.restore_config_with(&Transport::File, &stores, "restore.yaml");
    assert_fails(&lifeboat(&restore, &["restore", "--yes"]), 2, "holds a postgres backup, not minio");

    // The same files under a manifest that claims to be MinIO's: refused by the store itself.
    let run_dir = case.server_path.join(case.runs(&pg_backup)[0]["path"].as_str().unwrap());
    let manifest_path = run_dir.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["store"] = "minio".into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    case.sign_manifest(&run_dir);
    assert_fails(&lifeboat(&restore, &["restore", "--yes"]), 1, "not a minio dump backup");

    // ...and one whose listed archive is really a pg_dump file: refused on its first bytes.
    let dump = manifest["files"].as_array().unwrap().iter().position(|f| f["name"].as_str().unwrap().starts_with("db-")).unwrap();
    let dump_name = manifest["files"][dump]["name"].as_str().unwrap().to_string();
    std::fs::rename(run_dir.join(&dump_name), run_dir.join("objects.tar.zst.age")).unwrap();
    manifest["files"][dump]["name"] = "objects.tar.zst.age".into();
    manifest["extra"] = serde_json::json!({"archive": "objects.tar.zst.age", "buckets": {b.docs.clone(): {}, b.versioned.clone(): {}, b.empty.clone(): {}}});
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    case.sign_manifest(&run_dir);
    assert_fails(&lifeboat(&restore, &["restore", "--yes"]), 1, "not a Lifeboat MinIO archive");
    assert_eq!(b.fingerprint(&s3), before, "the buckets were not touched");
}

#[test]
fn interrupted_restore_can_be_run_again() {
    let s3 = S3::minio();
    let case = Case::new("minio_interrupted");
    let b = Buckets::new("minio_interrupted");
    seed(&s3, &b, true);
    let before = b.fingerprint(&s3);
    let stores = minio_store_block(&b.all(), MINIO_PORT, "");
    assert_ok(&lifeboat(&case.backup_config_with(&Transport::File, &stores, "backup.yaml"), &["backup"]));
    let restore = case.restore_config_with(&Transport::File, &stores, "restore.yaml");

    // The big object comes first in the archive: kill the restore while it is being uploaded.
    let mut child = spawn_lifeboat(&restore, &["restore", "--yes"]);
    let started = Instant::now();
    while s3.pending_uploads(&b.docs) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "the restore ended before it could be interrupted");
        assert!(started.elapsed() < Duration::from_secs(120), "no multipart upload seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert_ne!(b.fingerprint(&s3), before, "the restore was interrupted part-way");

    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
    assert_eq!(s3.pending_uploads(&b.docs), 0, "the killed run's unfinished upload was cleared");
    assert_eq!(b.fingerprint(&s3), before);
    b.remove(&s3);
}

#[test]
fn bad_minio_config_is_a_configuration_error() {
    let case = Case::new("minio_bad_config");
    let bad_url = case.backup_config_with(
        &Transport::File,
        &minio_store_block(&[], MINIO_PORT, "").replace(&format!("http://127.0.0.1:{MINIO_PORT}"), &format!("127.0.0.1:{MINIO_PORT}")),
        "a.yaml",
    );
    assert_fails(&lifeboat(&bad_url, &["backup"]), 2, "stores.minio.endpoint");
    let missing_key = case.backup_config_with(
        &Transport::File,
        &minio_store_block(&[], MINIO_PORT, "").replace(&s3_key_file("s3-secret-key").display().to_string(), "/nonexistent/secret"),
        "b.yaml",
    );
    assert_fails(&lifeboat(&missing_key, &["backup"]), 2, "/nonexistent/secret");
    assert!(case.runs(&missing_key).is_empty());
}

/// An S3 server without versioning (s3s-fs answers ListObjectVersions with NotImplemented): a
/// restore empties the changed bucket by plain listing and brings back every object.
#[test]
fn restore_works_on_an_s3_server_without_versioning() {
    let s3 = S3::s3s();
    let case = Case::new("minio_s3s");
    let bucket = format!("lb-s3s-{}", std::process::id());
    s3.fresh_bucket(&bucket);
    s3.put(&bucket, "plain.txt", b"hello registry\n", Some("text/plain"), &[]);
    s3.put(&bucket, "with space/record ü.json", b"{\"name\":\"Zo\xc3\xab\"}", Some("application/json"), &[("registrar", "Ngozi")]);
    s3.put(&bucket, "medium.bin", &(0..300_000u32).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>(), None, &[]);
    let before = s3.fingerprint(&bucket);
    let stores = minio_store_block(&[&bucket], S3S_PORT, "");
    assert_ok(&lifeboat(&case.backup_config_with(&Transport::File, &stores, "backup.yaml"), &["backup"]));

    s3.delete(&bucket, "plain.txt");
    s3.put(&bucket, "intruder.txt", b"not in the backup", None, &[]);
    assert_ne!(s3.fingerprint(&bucket), before);

    let out = lifeboat(&case.restore_config_with(&Transport::File, &stores, "restore.yaml"), &["restore", "--yes"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("verified"), "{}", stderr(&out));
    assert_eq!(s3.fingerprint(&bucket), before);
    s3.remove_bucket(&bucket);
}
