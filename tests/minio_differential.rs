//! MinIO `type: differential`, the encrypted incremental mirror, end to end against the real
//! MinIO (scripts/servers/s3.sh), s3s-fs (an S3 server without versioning) and a real sshd.
//! Each test uses its own buckets and backup folder.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::s3::{MINIO_PORT, S3, S3S_PORT, minio_store_block, noise};
use common::*;

/// Records in the docs bucket; 1 % of them change between runs.
const RECORDS: u64 = 200;

/// A test's buckets: `docs` (records and awkward keys), `settings` (versioning and a policy), `empty`.
struct World {
    s3: S3,
    case: Case,
    docs: String,
    settings: String,
    empty: String,
    backup: PathBuf,
    restore: PathBuf,
    /// The backup server is an s3:// bucket (the case's own) rather than a folder.
    on_s3: bool,
}

impl World {
    fn new(test: &str, transport: Transport) -> World {
        let s3 = S3::minio();
        let case = Case::new(test);
        let prefix = format!("lbm-{}", test.replace('_', "-"));
        let (docs, settings, empty) = (format!("{prefix}-docs"), format!("{prefix}-settings"), format!("{prefix}-empty"));
        let stores = minio_store_block(&[&docs, &settings, &empty], MINIO_PORT, "    type: differential\n");
        let on_s3 = matches!(transport, Transport::S3);
        let backup = case.backup_config_with(&transport, &stores, "backup.yaml");
        let restore = case.restore_config_with(&transport, &stores, "restore.yaml");
        World { s3, case, docs, settings, empty, backup, restore, on_s3 }
    }

    fn buckets(&self) -> [&str; 3] {
        [&self.docs, &self.settings, &self.empty]
    }

    fn record(i: u64) -> String {
        format!("records/{i:04}.bin")
    }

    /// The first state.
    fn seed(&self) {
        for b in self.buckets() {
            self.s3.fresh_bucket(b);
        }
        for i in 0..RECORDS {
            self.s3.put(
                &self.docs,
                &Self::record(i),
                &noise(i, Self::record_size(i)),
                Some("application/octet-stream"),
                &[("n", &i.to_string())],
            );
        }
        let s3 = &self.s3;
        s3.put(
            &self.docs,
            "with space/birth certificate 2024.pdf",
            &[b'%'; 70_000],
            Some("application/pdf"),
            &[("registrar", "Ngozi Okafor")],
        );
        s3.put(
            &self.docs,
            "ünïcödé/文件/файл.json",
            "{\"name\":\"Zoë\"}".as_bytes(),
            Some("application/json; charset=utf-8"),
            &[("lang", "multi")],
        );
        s3.put(&self.docs, "empty-file", b"", Some("text/plain"), &[("note", "zero bytes")]);
        s3.put(&self.docs, "folder-marker/", b"", None, &[]);
        s3.set_versioning(&self.settings);
        s3.set_policy(&self.settings);
        s3.put(&self.settings, "public/notice.html", b"<p>first</p>", Some("text/html"), &[]);
        s3.put(&self.settings, "public/notice.html", b"<p>second version</p>", Some("text/html"), &[("rev", "2")]);
    }

    fn record_size(i: u64) -> usize {
        8_000 + (i as usize * 7919) % 32_000
    }

    fn fingerprint(&self) -> String {
        self.buckets().iter().map(|b| format!("== {b}\n{}", self.s3.fingerprint(b))).collect::<Vec<_>>().join("\n")
    }

    fn remove_buckets(&self) {
        for b in self.buckets() {
            self.s3.remove_bucket(b);
        }
    }

    /// The mirror runs `list` shows, oldest first.
    fn runs(&self) -> Vec<serde_json::Value> {
        let runs = self.case.runs(&self.backup);
        assert!(runs.iter().all(|r| r["store"] == "minio" && r["type"] == "mirror"), "only mirror runs, no date folders: {runs:?}");
        runs
    }

    fn manifest(&self, run: &serde_json::Value) -> serde_json::Value {
        if !self.on_s3 {
            return self.case.manifest_of(run).1;
        }
        let key = format!("lifeboat/{}/manifest.json", run["path"].as_str().unwrap());
        let bucket = self.case.s3_bucket();
        let got = self.s3.rt.block_on(async {
            let object = self.s3.client.get_object().bucket(bucket).key(&key).send().await.unwrap();
            object.body.collect().await.unwrap().into_bytes()
        });
        serde_json::from_slice(&got).unwrap()
    }

    /// How many files (objects) the backup server holds.
    fn stored_files(&self) -> usize {
        match self.on_s3 {
            true => self.s3.keys(&self.case.s3_bucket()).len(),
            false => files_under(&self.case.server_path).len(),
        }
    }

    fn mirror(&self) -> PathBuf {
        self.case.server_path.join("minio")
    }
}

/// The files under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

fn round_trip(test: &str, transport: Transport) {
    let w = World::new(test, transport);
    w.seed();
    let first_state = w.fingerprint();
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    let first = w.manifest(&w.runs()[0]);
    let objects = RECORDS + 4;
    assert_eq!(first["counts"][&w.docs]["objects"], objects);
    assert_eq!(first["extra"]["uploaded_objects"], objects + 1);
    assert_eq!(first["counts"][&w.empty]["objects"], 0);

    // 1 % of the records change, one object gets new metadata only, three go, two come.
    let changed = [17u64, 123];
    for i in changed {
        w.s3.put(
            &w.docs,
            &World::record(i),
            &noise(i + 1000, World::record_size(i)),
            Some("application/octet-stream"),
            &[("n", "changed")],
        );
    }
    w.s3.set_metadata(&w.docs, "with space/birth certificate 2024.pdf", "application/x-pdf", &[("registrar", "Chiamaka Eze")]);
    for i in [3u64, 4, 150] {
        w.s3.delete(&w.docs, &World::record(i));
    }
    let added = [(RECORDS, 21_000usize), (RECORDS + 1, 33_000)];
    for (i, size) in added {
        w.s3.put(&w.docs, &World::record(i), &noise(i, size), None, &[]);
    }
    let second_state = w.fingerprint();
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    let runs = w.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r["complete"] == true));
    let second = w.manifest(&runs[1]);
    let expected_bytes: u64 =
        changed.iter().map(|i| World::record_size(*i) as u64).sum::<u64>() + 70_000 + added.iter().map(|(_, s)| *s as u64).sum::<u64>();
    assert_eq!(second["extra"]["uploaded_objects"], 5, "{second}");
    assert_eq!(second["extra"]["uploaded_bytes"], expected_bytes, "only the changed objects travel");
    assert_eq!(second["extra"]["reused_objects"], objects - 3 + 2 + 1 - 5);
    assert_eq!(second["counts"][&w.docs]["objects"], objects - 3 + 2);
    let (stored1, stored2) = (first["extra"]["stored_bytes"].as_u64().unwrap(), second["extra"]["stored_bytes"].as_u64().unwrap());
    assert!(stored2 < stored1 / 10, "the second run stored {stored2} bytes, the first {stored1}");

    // Without the key: verify checks every stored file; status sees the new run.
    let out = lifeboat(&w.backup, &["verify"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stored files checked against the catalogue"), "{}", stderr(&out));
    assert_ok(&lifeboat(&w.backup, &["status", "--max-age", "1h"]));

    // Restore into an emptied server, then the first run.
    w.remove_buckets();
    let out = lifeboat(&w.restore, &["restore", "--yes"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("objects and bytes per bucket verified"), "{}", stderr(&out));
    assert_eq!(w.fingerprint(), second_state);
    let first_id = runs[0]["id"].as_str().unwrap();
    assert_ok(&lifeboat(&w.restore, &["restore", "--yes", "--from", first_id]));
    assert_eq!(w.fingerprint(), first_state);
    let out = lifeboat(&w.restore, &["verify", "--deep"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("decrypted and decompressed"));

    // `lifeboat prune` applies retention: both runs finished today, so keep_daily keeps only the
    // newest. The first run goes, with the object files only it referred to.
    let out = lifeboat(&w.backup, &["--json", "prune", "--dry-run"]);
    assert_ok(&out);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let minio = &plan["stores"][0];
    assert_eq!(minio["store"], "minio", "{plan}");
    assert_eq!(minio["repository_removed"].as_array().map(Vec::len), Some(1), "{plan}");
    assert_eq!(minio["repository_removed"][0]["label"], first_id, "{plan}");
    let planned = minio["freed_bytes"].as_u64().unwrap();
    assert!(planned > 0, "{plan}");
    assert_eq!(w.runs().len(), 2, "a dry run removes nothing");
    let before = w.stored_files();
    assert_ok(&lifeboat(&w.backup, &["prune"]));
    let runs_left = w.runs();
    assert_eq!(runs_left.len(), 1, "{runs_left:?}");
    assert_eq!(runs_left[0]["id"], runs[1]["id"]);
    assert!(w.stored_files() < before, "files of the first run were removed");
    w.remove_buckets();
    assert_ok(&lifeboat(&w.restore, &["restore", "--yes"]));
    assert_eq!(w.fingerprint(), second_state, "the kept run still restores whole");
    w.remove_buckets();
}

#[test]
fn mirror_round_trip_over_ssh() {
    round_trip("mirror_ssh", Transport::Ssh);
}

#[test]
fn mirror_round_trip_to_local_folder() {
    round_trip("mirror_file", Transport::File);
}

/// The incremental mirror with an S3 bucket as the backup server (MinIO backed up into MinIO).
#[test]
fn mirror_round_trip_to_an_s3_bucket() {
    round_trip("mirror_s3", Transport::S3);
}

/// A run killed mid-upload is never complete, the one before still restores; a later run and
/// `prune_mirror` clean up after it.
#[test]
fn killed_run_leaves_the_previous_one_restorable_and_prune_cleans_up() {
    let w = World::new("mirror_killed", Transport::File);
    w.seed();
    let first_state = w.fingerprint();
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    let first_id = w.runs()[0]["id"].as_str().unwrap().to_string();
    for i in 0..40 {
        w.s3.put(&w.docs, &format!("scans/{i:02}.bin"), &noise(5000 + i, 3 << 20), None, &[]);
    }

    let mut child = spawn_lifeboat(&w.backup, &["backup"]);
    let data = w.mirror().join("data");
    let started = Instant::now();
    let killed_id = loop {
        let new =
            std::fs::read_dir(&data).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| *n != first_id);
        if let Some(id) = new.filter(|id| std::fs::read_dir(data.join(id)).map(|d| d.count()).unwrap_or(0) >= 3) {
            break id;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(120), "no upload seen");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();

    let runs = w.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[1]["id"].as_str().unwrap(), &runs[1]["complete"]), (killed_id.as_str(), &serde_json::json!(false)));
    let out = lifeboat(&w.backup, &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 incomplete"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_fails(&lifeboat(&w.restore, &["restore", "--yes", "--from", &killed_id]), 1, "not complete");
    assert_ok(&lifeboat(&w.restore, &["restore", "--yes"]));
    assert_eq!(w.fingerprint(), first_state, "the newest complete run (the first) was restored");

    // A restore rewrites every object (new Last-Modified): the next run uploads them all again.
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    let third = w.manifest(&w.runs()[2]);
    assert_eq!(third["extra"]["reused_objects"], 0, "{third}");
    let third_id = w.runs()[2]["id"].as_str().unwrap().to_string();
    // Then one object goes: its stored file in the third run's data is no longer referenced.
    w.s3.delete(&w.docs, &World::record(7));
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    let fourth = w.manifest(&w.runs()[3]);
    assert_eq!(fourth["extra"]["uploaded_objects"], 0);
    let fourth_id = w.runs()[3]["id"].as_str().unwrap().to_string();
    let fourth_state = w.fingerprint();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = lifeboat::server::local::LocalServer::open(&w.case.server_path).unwrap();
    let signing = lifeboat::signing::SigningConfig { allowed_signers_file: Some(w.case.allowed_signers.clone()), ..Default::default() };
    let trust = signing.trust().unwrap();
    let prune = |keep: &[&str], dry_run: bool, now: chrono::DateTime<chrono::Utc>| {
        let keep: BTreeSet<String> = keep.iter().map(|s| s.to_string()).collect();
        rt.block_on(lifeboat::stores::minio::prune_mirror(&server, "minio", &trust, &keep, dry_run, now)).unwrap()
    };
    let before = files_under(&w.mirror());
    // Today the killed run may still be running: it is left alone, and the newest run is always kept.
    let today = prune(&[], true, chrono::Utc::now());
    assert_eq!(today.runs, vec![first_id.clone(), third_id.clone()]);
    assert!(today.files.iter().all(|f| !f.contains(&killed_id)), "{today:?}");
    let later = chrono::Utc::now() + chrono::TimeDelta::days(2);
    let planned = prune(&[&fourth_id], true, later);
    assert_eq!(files_under(&w.mirror()), before, "a dry run removes nothing");
    assert_eq!(planned.runs, vec![first_id.clone(), killed_id.clone(), third_id.clone()]);
    let in_data = |id: &str| before.iter().filter(|f| f.starts_with(&format!("data/{id}/"))).count();
    let third_data_gone = planned.files.iter().filter(|f| f.starts_with(&format!("minio/data/{third_id}/"))).count();
    assert_eq!(third_data_gone, 1, "of the third run's data, exactly the deleted object's stored file: {planned:?}");
    // Run folders: the first's and third's claim, catalogue, manifest and signature; the killed
    // one's claim alone.
    assert_eq!(planned.files.len(), in_data(&first_id) + in_data(&killed_id) + third_data_gone + 9, "{planned:?}");
    let bytes: u64 = planned.files.iter().map(|f| std::fs::metadata(w.case.server_path.join(f)).unwrap().len()).sum();
    assert_eq!(planned.bytes, bytes);

    let done = prune(&[&fourth_id], false, later);
    assert_eq!(done, planned);
    let after = files_under(&w.mirror());
    let removed: BTreeSet<String> = before.difference(&after).map(|f| format!("minio/{f}")).collect();
    assert_eq!(removed, planned.files.iter().cloned().collect(), "exactly what the dry run said");
    let runs = w.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["id"], fourth_id.as_str());
    assert_ok(&lifeboat(&w.backup, &["verify"]));
    w.remove_buckets();
    assert_ok(&lifeboat(&w.restore, &["restore", "--yes"]));
    assert_eq!(w.fingerprint(), fourth_state);
    w.remove_buckets();
}

/// A damaged catalogue, index or stored object is refused before any bucket is touched, and
/// `verify` (without the key) names it.
#[test]
fn tampered_files_are_refused_before_buckets_are_touched() {
    let w = World::new("mirror_tampered", Transport::File);
    w.seed();
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    let run = &w.runs()[0];
    let id = run["id"].as_str().unwrap();
    w.s3.put(&w.docs, "intruder.txt", b"written after the backup", None, &[]);
    let current = w.fingerprint();
    let data = w.mirror().join("data").join(id);
    let targets: [(PathBuf, &str); 3] = [
        (w.mirror().join("runs").join(id).join("catalogue.jsonl.zst"), "catalogue.jsonl.zst does not match its manifest"),
        (data.join("index.jsonl.zst.age"), "index.jsonl.zst.age does not match the catalogue"),
        (data.join("42.zst.age"), "42.zst.age does not match the catalogue"),
    ];
    for (file, needle) in targets {
        let original = std::fs::read(&file).unwrap();
        let mut bad = original.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x40;
        std::fs::write(&file, &bad).unwrap();
        let line = assert_fails(&lifeboat(&w.restore, &["restore", "--yes"]), 1, needle);
        assert!(line.contains("damaged") && line.contains("nothing was restored"), "{line}");
        assert_eq!(w.fingerprint(), current, "no bucket was touched");
        let out = lifeboat(&w.backup, &["verify"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(name), "verify names {name}: {}", String::from_utf8_lossy(&out.stdout));
        std::fs::write(&file, &original).unwrap();
    }
    assert_ok(&lifeboat(&w.backup, &["verify"]));
    // The plaintext catalogue holds no object key.
    let catalogue = std::fs::read(w.mirror().join("runs").join(id).join("catalogue.jsonl.zst")).unwrap();
    let plain = String::from_utf8(zstd::decode_all(catalogue.as_slice()).unwrap_or_default()).unwrap_or_default();
    assert!(plain.contains("\"fp\"") && !plain.contains("records/") && !plain.contains("birth certificate"), "{plain:.300}");
    w.remove_buckets();
}

/// The mirror against an S3 server without versioning (s3s-fs): two runs, a restore of each.
#[test]
fn mirror_works_on_an_s3_server_without_versioning() {
    let s3 = S3::s3s();
    let case = Case::new("mirror_s3s");
    let bucket = format!("lbm-s3s-{}", std::process::id());
    s3.fresh_bucket(&bucket);
    for i in 0..20u64 {
        s3.put(&bucket, &format!("doc {i}.bin"), &noise(i, 5_000 + i as usize * 100), Some("application/pdf"), &[("n", &i.to_string())]);
    }
    let first = s3.fingerprint(&bucket);
    let stores = minio_store_block(&[&bucket], S3S_PORT, "    type: differential\n");
    let backup = case.backup_config_with(&Transport::File, &stores, "backup.yaml");
    let restore = case.restore_config_with(&Transport::File, &stores, "restore.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    s3.put(&bucket, "doc 3.bin", b"changed", Some("text/plain"), &[]);
    s3.delete(&bucket, "doc 4.bin");
    let second = s3.fingerprint(&bucket);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&backup);
    let manifest = case.manifest_of(&runs[1]).1;
    assert_eq!(manifest["extra"]["uploaded_objects"], 1, "{manifest}");
    let counts: BTreeMap<String, u64> = serde_json::from_value(manifest["counts"][&bucket].clone()).unwrap();
    assert_eq!(counts["objects"], 19);

    s3.put(&bucket, "intruder.txt", b"not in the backup", None, &[]);
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(s3.fingerprint(&bucket), second);
    assert_ok(&lifeboat(&restore, &["restore", "--yes", "--from", runs[0]["id"].as_str().unwrap()]));
    assert_eq!(s3.fingerprint(&bucket), first);
    s3.remove_bucket(&bucket);
}

/// The README's by-hand recipe (age, zstd, Python) brings back every object of a run, including
/// those stored by an earlier run, with content types and metadata, and no Lifeboat involved.
#[test]
fn by_hand_recipe_recovers_a_mirror_run() {
    let w = World::new("mirror_by_hand", Transport::File);
    w.seed();
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    w.s3.put(&w.docs, &World::record(5), b"changed before the second run", Some("text/plain"), &[("n", "5b")]);
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    let run = w.runs()[1]["id"].as_str().unwrap().to_string();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let recipe = readme
        .split("<!-- mirror recipe")
        .nth(1)
        .and_then(|s| s.split("```python\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README.md has the mirror recipe");
    let script = w.case.dir.path().join("restore-mirror.py");
    std::fs::write(&script, recipe).unwrap();
    let restored = w.case.dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(w.mirror())
        .arg(&run)
        .arg(&w.case.identity_file)
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "the recipe failed: {}", String::from_utf8_lossy(&out.stderr));

    let docs = restored.join(&w.docs);
    assert_eq!(std::fs::read(docs.join(World::record(5))).unwrap(), b"changed before the second run");
    assert_eq!(std::fs::read(docs.join(World::record(6))).unwrap(), noise(6, World::record_size(6)), "stored by the first run");
    assert_eq!(std::fs::read(docs.join("with space/birth certificate 2024.pdf")).unwrap(), vec![b'%'; 70_000]);
    assert_eq!(std::fs::read_to_string(docs.join("ünïcödé/文件/файл.json")).unwrap(), "{\"name\":\"Zoë\"}");
    assert_eq!(std::fs::metadata(docs.join("empty-file")).unwrap().len(), 0);
    assert!(docs.join("folder-marker").is_dir());
    assert_eq!(std::fs::read(restored.join(&w.settings).join("public/notice.html")).unwrap(), b"<p>second version</p>");
    let listed: Vec<serde_json::Value> =
        std::fs::read_to_string(restored.join("objects.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len() as u64, RECORDS + 4 + 1);
    let pdf = listed.iter().find(|o| o["key"] == "with space/birth certificate 2024.pdf").unwrap();
    assert_eq!((&pdf["bucket"], &pdf["headers"]["content-type"]), (&serde_json::json!(w.docs), &serde_json::json!("application/pdf")));
    assert_eq!(pdf["metadata"]["registrar"], "Ngozi Okafor");
    w.remove_buckets();
}
