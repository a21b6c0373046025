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

/// Runs the MinIO client as the test MinIO's admin; its stdout.
fn mc(args: &[&str]) -> String {
    let out = common::s3::mc().args(args).output().unwrap();
    assert!(out.status.success(), "mc {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Append-only on object storage: production's key gets the policy of the README (put, get and
/// list under the prefix; delete only its lock files) on a versioned bucket. It backs up; it
/// cannot delete a backup; what it writes over a backup leaves the original version readable; it
/// cannot destroy a version; its prune fails in one line, and prune with a separate key works.
#[test]
fn production_on_s3_may_add_backups_but_never_remove_one() {
    let case = Case::new("s3_append");
    let db = &case.db;
    seed_postgres(db, 100);
    let bucket = case.s3_bucket();
    common::s3::S3::minio().set_versioning(&bucket);
    let (user, secret) = (format!("prod-{}", std::process::id()), "production-secret-key-1234".to_string());
    let policy_name = format!("lifeboat-append-{}", std::process::id());
    let policy = case.dir.path().join("append-only.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"Version":"2012-10-17","Statement":[
  {{"Effect":"Allow","Action":["s3:GetBucketLocation","s3:ListBucket","s3:ListBucketMultipartUploads"],"Resource":["arn:aws:s3:::{bucket}"]}},
  {{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:AbortMultipartUpload","s3:ListMultipartUploadParts"],"Resource":["arn:aws:s3:::{bucket}/lifeboat/*"]}},
  {{"Effect":"Allow","Action":["s3:DeleteObject"],"Resource":["arn:aws:s3:::{bucket}/lifeboat/locks/*"]}}
]}}"#
        ),
    )
    .unwrap();
    mc(&["admin", "user", "add", "local", &user, &secret]);
    mc(&["admin", "policy", "create", "local", &policy_name, policy.to_str().unwrap()]);
    mc(&["admin", "policy", "attach", "local", &policy_name, "--user", &user]);

    let (access_file, secret_file) = (case.dir.path().join("prod-access"), case.dir.path().join("prod-secret"));
    std::fs::write(&access_file, &user).unwrap();
    std::fs::write(&secret_file, &secret).unwrap();
    let admin_backup = case.backup_config(&Transport::S3);
    let production = case.write_config(
        "production.yaml",
        &std::fs::read_to_string(&admin_backup)
            .unwrap()
            .replace(&common::s3::s3_key_file("s3-access-key").display().to_string(), &access_file.display().to_string())
            .replace(&common::s3::s3_key_file("s3-secret-key").display().to_string(), &secret_file.display().to_string()),
    );
    assert_ok(&lifeboat(&production, &["backup"]));
    assert_ok(&lifeboat(&production, &["backup"]));
    let restore = case.restore_config(&Transport::S3);
    let runs = case.runs(&restore);
    assert_eq!(runs.iter().filter(|r| r["complete"] == true).count(), 2, "{runs:?}");

    // Pruning needs a key that may delete: production's fails in one line and removes nothing,
    // a separate key works.
    let retention = "retention: { keep_daily: 1, keep_weekly: 0, keep_monthly: 0 }\n";
    let prune = case.write_config("prune.yaml", &format!("{}{retention}", std::fs::read_to_string(&production).unwrap()));
    let line = assert_fails(&lifeboat(&prune, &["prune"]), 1, "cannot remove");
    assert!(line.contains("a key that may delete"), "{line}");
    assert_eq!(case.runs(&restore).iter().filter(|r| r["complete"] == true).count(), 2, "production's prune removed a run");
    let admin_prune = case.write_config("admin-prune.yaml", &format!("{}{retention}", std::fs::read_to_string(&admin_backup).unwrap()));
    assert_ok(&lifeboat(&admin_prune, &["prune"]));
    let left = case.runs(&restore);
    assert_eq!(left.iter().filter(|r| r["store"] == "postgres").count(), 1, "prune with a key that may delete: {left:?}");

    // Production cannot delete a backup, and what it writes over one leaves the original version.
    let manifest_key = format!("lifeboat/{}/postgres/manifest.json", left[0]["id"].as_str().unwrap());
    let prod = common::s3::S3::minio_as(&user, &secret);
    let original = prod.rt.block_on(prod.client.get_object().bucket(&bucket).key(&manifest_key).send()).unwrap();
    let original_version = original.version_id().map(str::to_string).expect("a versioned bucket");
    let deleted = prod.rt.block_on(prod.client.delete_object().bucket(&bucket).key(&manifest_key).send());
    assert!(deleted.is_err(), "production deleted a backup's manifest");
    let put = aws_sdk_s3::primitives::ByteStream::from_static(b"{}");
    prod.rt.block_on(prod.client.put_object().bucket(&bucket).key(&manifest_key).body(put).send()).expect("a plain PUT is allowed");
    let destroyed = prod.rt.block_on(prod.client.delete_object().bucket(&bucket).key(&manifest_key).version_id(&original_version).send());
    assert!(destroyed.is_err(), "production destroyed a version");
    let admin = common::s3::S3::minio();
    let kept = admin.rt.block_on(admin.client.get_object().bucket(&bucket).key(&manifest_key).version_id(&original_version).send());
    assert!(kept.is_ok(), "the original version of the overwritten manifest is gone");
    // The overwritten manifest no longer matches its signature: restore passes over that run.
    let listed = case.runs(&restore);
    assert!(listed.iter().any(|r| r["damaged"].as_str().is_some_and(|d| d.contains("changed after it was signed"))), "{listed:?}");
    mc(&["admin", "user", "remove", "local", &user]);
    mc(&["admin", "policy", "remove", "local", &policy_name]);
}

/// The S3 server goes away in the middle of an upload (a relay in front of MinIO closes for good
/// after 512 KiB have gone towards it): the backup fails in one line, no complete run appears, and
/// the next backup, with the server back, completes and restores.
#[test]
fn an_s3_server_lost_mid_upload_leaves_no_complete_run() {
    let case = Case::new("s3_lost");
    let db = &case.db;
    seed_postgres(db, 20_000);
    let want = fingerprint(db);
    let backup = case.backup_config(&Transport::S3);
    let relay = DyingRelay::start_on_upload(common::s3::MINIO_PORT, 512 << 10);
    let endpoint = common::s3::s3_endpoint(common::s3::MINIO_PORT);
    let cut =
        case.write_config("cut.yaml", &std::fs::read_to_string(&backup).unwrap().replace(&endpoint, &common::s3::s3_endpoint(relay.port)));
    let out = lifeboat(&cut, &["backup"]);
    assert!(relay.went_down(), "the relay never cut the upload: the dump is smaller than 512 KiB");
    let line = assert_fails(&out, 1, "s3://");
    assert!(line.contains("not completed") && line.contains("run the backup again"), "{line}");
    let restore = case.restore_config(&Transport::S3);
    assert!(case.runs(&restore).iter().all(|r| r["complete"] != true), "a cut backup looks complete");

    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&restore);
    assert_eq!(runs.iter().filter(|r| r["complete"] == true).count(), 1, "{runs:?}");
    psql(db, "TRUNCATE audit.log");
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(fingerprint(db), want);
}
