//! Backups made by OpenCRVS's original scripts: files made by the real `openssl` and `tar`, with
//! the scripts' own command lines, read back by Lifeboat's `legacy` reader and found on a server.

mod common;

use std::io::{Read, Write};

use common::*;
use std::process::{Command, Stdio};

use lifeboat::legacy::openssl_enc::OpensslDecrypt;
use lifeboat::legacy::unpack::{UnpackedFile, fetch_and_unpack};
use lifeboat::legacy::{Era, LegacyRun, find_runs};
use lifeboat::server::{self, ServerConfig};

const PASS: &str = "a backup_encryption_key as the chart has it";

/// `openssl enc -aes-256-cbc -pbkdf2 -salt -pass env:ENCRYPT_PASS`, as the scripts run it.
fn openssl_enc(plain: &[u8], pass: &str) -> Vec<u8> {
    let mut cmd = Command::new("openssl");
    cmd.args(["enc", "-aes-256-cbc", "-pbkdf2", "-salt", "-pass", "env:ENCRYPT_PASS"]).env("ENCRYPT_PASS", pass);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    let plain = plain.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&plain));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Reads everything through the decryptor in reads of `piece` bytes.
fn decrypt(data: &[u8], pass: &str, piece: usize) -> std::io::Result<Vec<u8>> {
    let mut reader = OpensslDecrypt::new(data, pass.as_bytes())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; piece];
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect()
}

#[test]
fn what_openssl_encrypts_decrypts_byte_for_byte_at_every_block_edge() {
    for size in [0, 1, 15, 16, 17, 31, 32, 33, 65_535, 65_536, 65_537, 1_048_579] {
        let plain = bytes(size);
        let sealed = openssl_enc(&plain, PASS);
        for piece in [1, 7, 16, 4096, 1 << 20] {
            if size > 100_000 && piece < 4096 {
                continue;
            }
            assert_eq!(decrypt(&sealed, PASS, piece).unwrap(), plain, "{size} bytes read {piece} at a time");
        }
    }
}

#[test]
fn a_wrong_passphrase_a_cut_file_and_a_foreign_file_are_each_refused_by_name() {
    let plain = bytes(100_000);
    // With a wrong key the last block decrypts to noise, whose padding looks sound about once in
    // 256 salts: then the gzip and tar layers above refuse it. Over four salts, at least one is
    // refused right here, and none ever gives back the plain bytes.
    let mut refused = 0;
    for _ in 0..4 {
        let sealed = openssl_enc(&plain, PASS);
        assert_eq!(decrypt(&sealed, PASS, 4096).unwrap(), plain);
        match decrypt(&sealed, "not the key", 4096) {
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("bad padding") && e.contains("passphrase is wrong"), "{e}");
                refused += 1;
            }
            Ok(garbage) => assert_ne!(garbage, plain),
        }
    }
    assert!(refused > 0, "no wrong passphrase was refused by its padding in four tries");
    let sealed = openssl_enc(&plain, PASS);
    let cut = decrypt(&sealed[..sealed.len() - 5], PASS, 4096).unwrap_err().to_string();
    assert!(cut.contains("cut short"), "{cut}");
    // 100,000 bytes end on a block edge: the last block is all padding, and without it the data's
    // own last block ends in 0x07 without six more 0x07 before it, which no padding is.
    assert_eq!(plain[plain.len() - 1], 0x07);
    assert_ne!(plain[plain.len() - 7..], [7; 7]);
    let block_cut = decrypt(&sealed[..sealed.len() - 16], PASS, 4096).unwrap_err().to_string();
    assert!(block_cut.contains("bad padding"), "{block_cut}");
    let header_only = decrypt(&sealed[..16], PASS, 4096).unwrap_err().to_string();
    assert!(header_only.contains("holds no data"), "{header_only}");
    for foreign in [&b""[..], b"Salted_", b"\x28\xb5\x2f\xfd not openssl at all, a zstd frame maybe"] {
        let e = decrypt(foreign, PASS, 4096).unwrap_err().to_string();
        assert!(e.contains("Salted__"), "{e}");
    }
}

#[test]
fn a_script_made_tar_gz_enc_reads_back_as_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dump");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("events.dump"), bytes(300_000)).unwrap();
    std::fs::write(src.join("roles.sql"), b"CREATE ROLE events_app;\n").unwrap();
    // `tar czf - -C DIR .` as backup.sh runs it.
    let tar = Command::new("tar").args(["czf", "-", "-C"]).arg(&src).arg(".").output().unwrap();
    assert!(tar.status.success());
    let sealed = openssl_enc(&tar.stdout, PASS);
    let plain = OpensslDecrypt::new(&sealed[..], PASS.as_bytes()).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(plain));
    let mut found = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.push((entry.path().unwrap().display().to_string(), data));
        }
    }
    found.sort();
    assert_eq!(
        found,
        vec![("./events.dump".to_string(), bytes(300_000)), ("./roles.sql".to_string(), b"CREATE ROLE events_app;\n".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_files_are_found_beside_lifeboat_runs_and_nothing_else_counts() {
    let root = tempfile::tempdir().unwrap();
    let put = |path: &str, data: &[u8]| {
        let p = root.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    put("2026-12-01/postgres_backup_2026-12-01.tar.gz.enc", b"Salted__12345678 pg");
    put("2026-12-01/mongo_backup_2026-12-01.tar.gz.enc", b"Salted__12345678 mongo");
    put("2026-12-02/influxdb_backup_2026-12-02.tar.gz.enc", b"Salted__12345678 influx");
    put("2026-12-02/minio_backup_2026-12-02.tar.gz.enc", b"Salted__12345678 minio");
    // A Lifeboat run in the same date folder, and names the scripts never write.
    put("2026-12-02/postgres/manifest.json", b"{}");
    put("2026-12-02/postgres_backup_2026-12-01.tar.gz.enc", b"another day's name");
    put("2026-12-02/elasticsearch_backup_2026-12-02.tar.gz.enc", b"not a store");
    put("2026-12-2/postgres_backup_2026-12-2.tar.gz.enc", b"not a date folder");
    put("elsewhere/postgres_backup_2026-12-01.tar.gz.enc", b"not in a date folder");
    std::fs::create_dir_all(root.path().join("2026-12-03/postgres_backup_2026-12-03.tar.gz.enc")).unwrap();
    // The Docker Swarm era's one archive a day, listed for each store it holds; only its own date.
    put("2026-12-04/2026-12-04.tar.gz.enc", b"Salted__12345678 swarm");
    put("2026-12-04/2026-12-05.tar.gz.enc", b"another day's label");
    put("v1.0.1/v1.0.1.tar.gz.enc", b"a label that is not a date");
    let server = server::connect(&ServerConfig::folder(root.path())).await.unwrap();
    let runs = find_runs(server.as_ref()).await.unwrap();
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
    let run =
        |d: u32, store: &'static str, path: &str, size: u64| LegacyRun { date: day(d), store, path: path.into(), size, era: Era::Chart };
    let swarm =
        |store: &'static str| LegacyRun { date: day(4), store, path: "2026-12-04/2026-12-04.tar.gz.enc".into(), size: 22, era: Era::Swarm };
    assert_eq!(
        runs,
        vec![
            run(1, "mongodb", "2026-12-01/mongo_backup_2026-12-01.tar.gz.enc", 22),
            run(1, "postgres", "2026-12-01/postgres_backup_2026-12-01.tar.gz.enc", 19),
            run(2, "influxdb", "2026-12-02/influxdb_backup_2026-12-02.tar.gz.enc", 23),
            run(2, "minio", "2026-12-02/minio_backup_2026-12-02.tar.gz.enc", 22),
            swarm("influxdb"),
            swarm("mongodb"),
            swarm("postgres"),
        ]
    );
}

#[test]
fn list_shows_the_scripts_backups_beside_lifeboat_runs_as_unverifiable() {
    let case = Case::new("legacy_list");
    seed_postgres(&case.db, 20);
    let backup = case.backup_config(&Transport::File);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let today = chrono::Utc::now().date_naive().to_string();
    let legacy = case.server_path.join(&today).join(format!("postgres_backup_{today}.tar.gz.enc"));
    std::fs::write(&legacy, openssl_enc(b"not a real tar.gz: list reads names only", PASS)).unwrap();

    let restore = case.restore_config(&Transport::File);
    let runs = case.runs(&restore);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[0]["type"].as_str(), runs[0]["complete"].as_bool()), (Some("dump"), Some(true)));
    assert!(runs[0].get("made_by_original_scripts").is_none(), "{:?}", runs[0]);
    let old = &runs[1];
    assert_eq!(old["type"], "legacy");
    assert_eq!((old["store"].as_str(), old["id"].as_str()), (Some("postgres"), Some(today.as_str())));
    assert_eq!((old["complete"].as_bool(), old["made_by_original_scripts"].as_bool()), (Some(false), Some(true)));
    assert_eq!(old["bytes"].as_u64(), Some(std::fs::metadata(&legacy).unwrap().len()));
    let text = lifeboat(&restore, &["list"]);
    assert_ok(&text);
    let line = String::from_utf8_lossy(&text.stdout).lines().find(|l| l.contains("legacy")).map(str::to_string).expect("a legacy line");
    assert!(line.contains("unverifiable") && line.contains("original scripts"), "{line}");
}

/// `tar czf - -C DIR .` then `openssl enc`, as the scripts' backup.sh does, into the date folder
/// of a `file://` server; returns the run as Lifeboat finds it.
async fn script_backup(root: &std::path::Path, dir: &std::path::Path, pass: &str) -> LegacyRun {
    let tar = Command::new("tar").args(["czf", "-", "-C"]).arg(dir).arg(".").output().unwrap();
    assert!(tar.status.success());
    std::fs::create_dir_all(root.join("2026-12-01")).unwrap();
    std::fs::write(root.join("2026-12-01/minio_backup_2026-12-01.tar.gz.enc"), openssl_enc(&tar.stdout, pass)).unwrap();
    let server = server::connect(&ServerConfig::folder(root)).await.unwrap();
    find_runs(server.as_ref()).await.unwrap().pop().expect("the run is found")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripts_backup_unpacks_whole_or_not_at_all() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("mirror");
    std::fs::create_dir_all(src.join("ocrvs/deep/er")).unwrap();
    std::fs::write(src.join("ocrvs/deep/er/photo.jpg"), bytes(200_000)).unwrap();
    std::fs::write(src.join("ocrvs/a.txt"), b"a").unwrap();
    std::fs::create_dir_all(src.join("empty-bucket")).unwrap();
    let root = work.path().join("server");
    let run = script_backup(&root, &src, PASS).await;
    let server = server::connect(&ServerConfig::folder(&root)).await.unwrap();

    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut files = fetch_and_unpack(server.as_ref(), &run, PASS.into(), &out, 1 << 30).await.unwrap();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let file = |name: &str, size: u64| UnpackedFile { name: name.into(), size };
    assert_eq!(files, vec![file("ocrvs/a.txt", 1), file("ocrvs/deep/er/photo.jpg", 200_000)]);
    assert_eq!(std::fs::read(out.join("ocrvs/deep/er/photo.jpg")).unwrap(), bytes(200_000));
    assert!(out.join("empty-bucket").is_dir());

    // Each way it can be bad is one line naming the file; nothing lands outside the folder.
    let fresh = || {
        let d = tempfile::tempdir_in(work.path()).unwrap();
        (d.path().to_path_buf(), d)
    };
    let (dir, _keep) = fresh();
    let wrong = fetch_and_unpack(server.as_ref(), &run, "not the key".into(), &dir, 1 << 30).await.unwrap_err().to_string();
    assert!(wrong.contains("minio_backup_2026-12-01.tar.gz.enc") && wrong.contains("cannot be read"), "{wrong}");
    let (dir, _keep) = fresh();
    let small = fetch_and_unpack(server.as_ref(), &run, PASS.into(), &dir, 100_000).await.unwrap_err().to_string();
    assert!(small.contains("holds more than 100000 bytes"), "{small}");

    let stored = root.join(&run.path);
    let whole = std::fs::read(&stored).unwrap();
    std::fs::write(&stored, &whole[..whole.len() - 40]).unwrap();
    let (dir, _keep) = fresh();
    let cut = fetch_and_unpack(server.as_ref(), &run, PASS.into(), &dir, 1 << 30).await.unwrap_err().to_string();
    assert!(cut.contains("cannot be read") && cut.contains("nothing was changed"), "{cut}");

    // An entry that climbs out of the folder, written with the tar crate's raw header.
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..12].copy_from_slice(b"../escape.sh");
    header.set_size(3);
    header.set_mode(0o755);
    header.set_cksum();
    let mut raw = header.as_bytes().to_vec();
    raw.extend_from_slice(b"bad");
    raw.resize(512 * 2, 0);
    raw.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    std::fs::write(&stored, openssl_enc(&gz.finish().unwrap(), PASS)).unwrap();
    let (dir, _keep) = fresh();
    let escape = fetch_and_unpack(server.as_ref(), &run, PASS.into(), &dir, 1 << 30).await.unwrap_err().to_string();
    assert!(escape.contains("`../escape.sh`") && escape.contains("not a path of plain names"), "{escape}");
    assert!(!dir.parent().unwrap().join("escape.sh").exists());
}
