//! An S3 object store (the real MinIO) as the backup server: the commands end to end on it, as
//! over SSH. The server contract itself is checked in tests/server.rs.

mod common;

use common::*;

/// A PostgreSQL backup to `s3://`, listed, verified deep, restored with its counts; a second run
/// of the day takes the next id (its claim is a conditional write); prune and status read it.
#[test]
fn postgres_backs_up_and_restores_over_s3() {
    let case = Case::new("s3_pg");
    let db = &case.db;
    seed_postgres(db, 600);
    let want = fingerprint(db);
    let backup = case.backup_config(&Transport::S3);
    let restore = case.restore_config(&Transport::S3);
    assert_ok(&lifeboat(&backup, &["backup"]));
    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&restore);
    let ids: Vec<&str> = runs.iter().filter(|r| r["store"] == "postgres").map(|r| r["id"].as_str().unwrap()).collect();
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Africa::Lagos).date_naive().to_string();
    assert_eq!(ids, [today.clone(), format!("{today}_2")], "{runs:?}");
    assert!(runs.iter().all(|r| r["complete"] == true && r["signed_by"].as_str().is_some_and(|s| s.contains("lifeboat@test"))), "{runs:?}");
    assert_ok(&lifeboat(&restore, &["verify", "--deep"]));

    psql(db, "DELETE FROM registry.event WHERE id % 3 = 0; TRUNCATE audit.log");
    assert_ne!(fingerprint(db), want);
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
    assert!(stderr(&out).contains(&format!("{today}_2")), "{}", stderr(&out));
    assert_eq!(fingerprint(db), want);

    assert_ok(&lifeboat(&restore, &["status"]));
    let out = lifeboat(&restore, &["--json", "prune", "--dry-run"]);
    assert_ok(&out);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["stores"][0]["kept"].as_array().unwrap().len() + plan["stores"][0]["removed"].as_array().unwrap().len(), 2, "{plan}");
}

/// A bucket that does not exist, and keys the server refuses: one line each, exit 1.
#[test]
fn a_missing_bucket_and_wrong_keys_are_named() {
    let case = Case::new("s3_bad");
    let backup = case.backup_config(&Transport::S3);
    let text = std::fs::read_to_string(&backup).unwrap();
    let missing = case.write_config("missing.yaml", &text.replace(&format!("s3://{}/", case.s3_bucket()), "s3://lb-no-such-bucket/"));
    assert_fails(&lifeboat(&missing, &["backup"]), 1, "bucket lb-no-such-bucket does not exist");
    let wrong = case.dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret").unwrap();
    let secret = common::s3::s3_key_file("s3-secret-key").display().to_string();
    let bad_keys = case.write_config("keys.yaml", &text.replace(&secret, &wrong.display().to_string()));
    let line = assert_fails(&lifeboat(&bad_keys, &["backup"]), 1, "refused these keys");
    assert!(line.contains("check server.access_key_file"), "{line}");
    assert!(!line.contains("not-the-secret"), "a secret leaked: {line}");
}
