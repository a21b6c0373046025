//! PostgreSQL dump backups and restores, end to end against a real PostgreSQL 15 and a real sshd.

mod common;

use std::process::Command;

use common::*;

/// Today's run id: the test configs use Africa/Lagos (UTC+1, no daylight saving), and run ids
/// follow the configured timezone.
fn today_lagos() -> String {
    let out = Command::new("date").args(["-u", "-d", "+1 hours", "+%Y-%m-%d"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Backs up, damages the data, restores, and checks everything came back, over `transport`.
/// A PostgreSQL database with a schema of each kind of object a dump must carry.
struct Postgres {
    case: Case,
}

impl RoundTrip for Postgres {
    const STORE: &'static str = "postgres";

    fn stores_block(&self) -> String {
        self.case.postgres_block("")
    }

    /// The common fingerprint reads the view the damage drops: without it, the data differs.
    fn fingerprint(&self) -> String {
        match psql(&self.case.db, "SELECT to_regclass('registry.births') IS NULL").as_str() {
            "t" => "registry.births is missing".into(),
            _ => fingerprint(&self.case.db),
        }
    }

    fn check_manifest(&self, manifest: &serde_json::Value, _run_dir: &std::path::Path) {
        assert_eq!(manifest["id"], today_lagos());
        let counts = &manifest["counts"][&self.case.db];
        assert_eq!(counts["registry.person"], 3000);
        assert_eq!(counts["registry.event"], 1500);
        assert_eq!(counts["audit.log"], 3);
        assert_eq!(counts["public.empty_table"], 0);
        let mut names: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, [format!("db-{}.dump.zst.age", self.case.db).as_str(), "roles.sql.zst.age"]);
        assert!(manifest["tool_versions"]["pg_dump"].as_str().unwrap().contains("15."));
    }

    fn damage(&self) {
        psql(&self.case.db, "DELETE FROM registry.event; DROP VIEW registry.births; UPDATE registry.person SET given_name = 'x'");
        assert_eq!(psql(&self.case.db, "SELECT count(*) FROM registry.event"), "0");
    }
}

fn roundtrip(name: &str, transport: Transport) {
    let case = Case::new(name);
    seed_postgres(&case.db, 3000);
    let store = Postgres { case };
    common::roundtrip(&store.case, &store, transport);
}

#[test]
fn roundtrip_over_ssh() {
    roundtrip("ssh_roundtrip", Transport::Ssh);
}

#[test]
fn roundtrip_to_local_folder() {
    roundtrip("file_roundtrip", Transport::File);
}

#[test]
fn by_hand_recipe_from_readme_restores() {
    let case = Case::new("by_hand");
    seed_postgres(&case.db, 500);
    let before = fingerprint(&case.db);
    assert_ok(&lifeboat(&case.backup_config(&Transport::File), &["backup"]));
    let run_dir = case.server_path.join(today_lagos()).join("postgres");
    // The README's recipe: age -d | zstd -d | pg_restore, with no Lifeboat involved.
    psql("postgres", &format!("DROP DATABASE \"{}\" WITH (FORCE)", case.db));
    let script = format!(
        "set -euo pipefail; age -d -i {id} {dir}/roles.sql.zst.age | zstd -d | grep -v '^CREATE ROLE' | psql -X -q -h 127.0.0.1 -p {PG_PORT} -U postgres -d postgres >/dev/null
         age -d -i {id} {dir}/db-{db}.dump.zst.age | zstd -d | pg_restore --create -h 127.0.0.1 -p {PG_PORT} -U postgres -d postgres",
        id = case.identity_file.display(),
        dir = run_dir.display(),
        db = case.db
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "by-hand restore failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fingerprint(&case.db), before);
}

#[test]
fn second_run_same_day_gets_its_own_folder_and_from_selects() {
    let case = Case::new("two_runs");
    seed_postgres(&case.db, 200);
    let backup = case.backup_config(&Transport::File);
    let restore = case.restore_config(&Transport::File);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let first = fingerprint(&case.db);
    psql(&case.db, "INSERT INTO audit.log (message) VALUES ('second')");
    let second = fingerprint(&case.db);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&backup);
    let ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let day = today_lagos();
    assert_eq!(ids, vec![day.clone(), format!("{day}_2")]);
    assert!(runs.iter().all(|r| r["complete"] == true));

    // The newest complete backup by default...
    psql(&case.db, "DELETE FROM audit.log");
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(fingerprint(&case.db), second);
    // ...or the one named with --from.
    assert_ok(&lifeboat(&restore, &["restore", "--yes", "--from", &day]));
    assert_eq!(fingerprint(&case.db), first);
}

#[test]
fn writes_during_backup_do_not_cause_a_false_mismatch() {
    let case = Case::new("concurrent_writes");
    seed_postgres(&case.db, 20000);
    let backup = case.backup_config(&Transport::Ssh);
    let restore = case.restore_config(&Transport::Ssh);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (case.db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                psql(
                    &db,
                    "INSERT INTO audit.log (message) SELECT 'during backup' FROM generate_series(1, 50); DELETE FROM registry.event WHERE id IN (SELECT id FROM registry.event LIMIT 5)",
                );
                n += 1;
            }
            n
        })
    };
    let out = lifeboat(&backup, &["backup"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert_ok(&out);
    assert!(writes > 0, "the writer ran during the backup");
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
}

#[test]
fn parallel_restore_jobs_roundtrip_with_passphrase() {
    let case = Case::new("parallel_pass");
    seed_postgres(&case.db, 2000);
    let before = fingerprint(&case.db);
    let pass = case.write_config("passphrase", "correct horse battery staple\n");
    let server = case.server_block(&Transport::File);
    let backup = case.write_config(
        "b.yaml",
        &format!(
            "role: backup\n{server}encryption:\n  passphrase_file: {}\n{}{}",
            pass.display(),
            case.signing_block("backup"),
            case.postgres_block("")
        ),
    );
    let restore = case.write_config(
        "r.yaml",
        &format!(
            "role: restore\n{server}encryption:\n  passphrase_file: {}\n{}{}",
            pass.display(),
            case.signing_block("restore"),
            case.postgres_block("    restore_jobs: 2\n")
        ),
    );
    assert_ok(&lifeboat(&backup, &["backup"]));
    psql(&case.db, "TRUNCATE registry.event");
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(fingerprint(&case.db), before);
    // verify at rest and deep.
    assert_ok(&lifeboat(&backup, &["verify"]));
    assert_ok(&lifeboat(&restore, &["verify", "--deep"]));
}

/// A parallel restore decodes the dump while it downloads. The decoded size is part of what the
/// signed manifest records: a dump that decodes to more bytes than it says is refused before the
/// database is dropped, and the decoded copy is not left behind.
#[test]
fn parallel_restore_refuses_a_dump_that_decodes_to_more_than_its_manifest_says() {
    let mut case = Case::new("parallel_size");
    let work = case.with_work_dir();
    seed_postgres(&case.db, 300);
    let backup = case.backup_config(&Transport::File);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let stored = common::forge::Stored::find(&case, &backup, "postgres", |n| n.ends_with(".dump.zst.age"));
    let plain = common::forge::decrypt_stored(&case, &stored.run_dir.join(&stored.name));
    stored.replace(&case, &plain);
    let manifest_path = stored.run_dir.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let entry = manifest["files"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == stored.name.as_str()).unwrap();
    entry["raw_size"] = (plain.len() - 1).into();
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    case.sign_manifest(&stored.run_dir);

    psql(&case.db, "INSERT INTO audit.log (message) VALUES ('must survive')");
    let marker = fingerprint(&case.db);
    let restore = case.restore_config_with(&Transport::File, &case.postgres_block("    restore_jobs: 2\n"), "r-parallel.yaml");
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_fails(&out, 1, &format!("{} decodes to", stored.name));
    assert!(stderr(&out).contains("nothing was restored"), "{}", stderr(&out));
    assert_eq!(fingerprint(&case.db), marker, "the target was not touched");
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "the download folder, decoded copy included, is gone");
}

// ---- bad input: one clear line, the right exit code, nothing lost ----

#[test]
fn wrong_identity_fails_before_touching_the_target() {
    let case = Case::new("wrong_identity");
    seed_postgres(&case.db, 100);
    assert_ok(&lifeboat(&case.backup_config(&Transport::File), &["backup"]));
    psql(&case.db, "INSERT INTO audit.log (message) VALUES ('must survive')");
    let marker = fingerprint(&case.db);
    let (other, _) = lifeboat::pipeline::generate_identity();
    std::fs::write(&case.identity_file, other).unwrap();
    let out = lifeboat(&case.restore_config(&Transport::File), &["restore", "--yes"]);
    assert_fails(&out, 1, "cannot decrypt");
    assert_eq!(fingerprint(&case.db), marker, "the target was not touched");
}

#[test]
fn changed_stored_bytes_are_caught_before_any_restore_work() {
    let case = Case::new("corrupt_file");
    seed_postgres(&case.db, 100);
    let backup = case.backup_config(&Transport::Ssh);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let dump = case.server_path.join(today_lagos()).join("postgres").join(format!("db-{}.dump.zst.age", case.db));
    let mut bytes = std::fs::read(&dump).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&dump, bytes).unwrap();
    psql(&case.db, "INSERT INTO audit.log (message) VALUES ('must survive')");
    let marker = fingerprint(&case.db);
    let out = lifeboat(&case.restore_config(&Transport::Ssh), &["restore", "--yes"]);
    assert_fails(&out, 1, "does not match its manifest");
    assert_eq!(fingerprint(&case.db), marker);
    // verify finds it too, without any key.
    let out = lifeboat(&backup, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("DAMAGED"), "{report}");
    assert!(report.contains(&format!("db-{}.dump.zst.age", case.db)), "verify names the damaged file: {report}");
}

#[test]
fn ssh_server_down_is_a_clear_error() {
    let case = Case::new("ssh_down");
    seed_postgres(&case.db, 10);
    let config = case.backup_config(&Transport::Ssh);
    let text = std::fs::read_to_string(&config).unwrap().replace(&format!(":{SSH_PORT}/"), &format!(":{CLOSED_SSH_PORT}/"));
    let config = case.write_config("down.yaml", &text);
    let out = lifeboat(&config, &["backup"]);
    assert_fails(&out, 1, &format!("cannot reach 127.0.0.1:{CLOSED_SSH_PORT}"));
}

#[test]
fn wrong_host_key_is_refused() {
    let case = Case::new("wrong_host_key");
    seed_postgres(&case.db, 10);
    let config = case.backup_config(&Transport::Ssh);
    let sshd = state().join("sshd");
    let changed = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&sshd.join("known_hosts").display().to_string(), &sshd.join("wrong_known_hosts").display().to_string());
    let out = lifeboat(&case.write_config("changed.yaml", &changed), &["backup"]);
    assert_fails(&out, 1, "CHANGED");
    // A known_hosts file without this host at all.
    let empty = case.write_config(
        "empty_known_hosts",
        "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPc1GrsGtjDZk+bLXlWS0FmNZHr0zAsdHC0EhuyPMr5v\n",
    );
    let unknown =
        std::fs::read_to_string(&config).unwrap().replace(&sshd.join("known_hosts").display().to_string(), &empty.display().to_string());
    let out = lifeboat(&case.write_config("unknown.yaml", &unknown), &["backup"]);
    assert_fails(&out, 1, "is not in");
    assert!(!case.server_path.exists(), "nothing was written");
}

/// A pg_dump that streams part of a real dump and then fails, like a dropped connection.
fn failing_bin_dir(case: &Case) -> std::path::PathBuf {
    let bin = case.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["pg_dumpall", "pg_restore", "psql"] {
        std::os::unix::fs::symlink(format!("/usr/lib/postgresql/15/bin/{tool}"), bin.join(tool)).unwrap();
    }
    let script = "#!/bin/bash\nif [ \"$1\" = --version ]; then exec /usr/lib/postgresql/15/bin/pg_dump --version; fi\n\
                  /usr/lib/postgresql/15/bin/pg_dump \"$@\" | head -c 20000\necho 'pg_dump: error: connection lost (simulated)' >&2\nexit 1\n";
    let path = bin.join("pg_dump");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn pg_dump_failing_mid_stream_never_completes_a_run() {
    let case = Case::new("dump_fails");
    seed_postgres(&case.db, 3000);
    let backup = case.backup_config(&Transport::Ssh);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let good = case.runs(&backup);
    let failing = case.write_config(
        "failing.yaml",
        &std::fs::read_to_string(&backup)
            .unwrap()
            .replace("    databases:", &format!("    bin_dir: {}\n    databases:", failing_bin_dir(&case).display())),
    );
    let out = lifeboat(&failing, &["backup"]);
    assert_fails(&out, 1, "pg_dump of t_dump_fails failed");
    // The earlier backup is still the newest complete one; the failed run left nothing complete.
    let runs = case.runs(&backup);
    assert!(runs.iter().filter(|r| r["complete"] == true).count() == 1, "{runs:?}");
    assert_eq!(runs.iter().rfind(|r| r["complete"] == true).unwrap()["id"], good[0]["id"]);
}

#[test]
fn interrupted_backup_is_listed_incomplete_and_restore_uses_the_previous_one() {
    let case = Case::new("killed");
    seed_postgres(&case.db, 300);
    let backup = case.backup_config(&Transport::File);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let good = fingerprint(&case.db);
    // A pg_dump that stalls after some output, so the backup can be killed mid-stream.
    let bin = failing_bin_dir(&case);
    std::fs::write(
        bin.join("pg_dump"),
        "#!/bin/bash\nif [ \"$1\" = --version ]; then exec /usr/lib/postgresql/15/bin/pg_dump --version; fi\n\
         /usr/lib/postgresql/15/bin/pg_dump \"$@\" | head -c 20000\nsleep 30\n",
    )
    .unwrap();
    let stalling = case.write_config(
        "stalling.yaml",
        &std::fs::read_to_string(&backup).unwrap().replace("    databases:", &format!("    bin_dir: {}\n    databases:", bin.display())),
    );
    let mut child = spawn_lifeboat(&stalling, &["backup"]);
    let run2 = case.server_path.join(format!("{}_2", today_lagos())).join("postgres");
    // Killed once its dump file is being written (the stalling pg_dump never finishes it).
    let dump = run2.join(format!("db-{}.dump.zst.age", case.db));
    let landed = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        dump.exists()
    });
    assert!(landed, "the stalled backup never started writing {}", dump.display());
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let runs = case.runs(&backup);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1]["complete"], false);
    psql(&case.db, "DELETE FROM registry.person WHERE id > 10 AND id NOT IN (SELECT person_id FROM registry.event)");
    assert_ok(&lifeboat(&case.restore_config(&Transport::File), &["restore", "--yes"]));
    assert_eq!(fingerprint(&case.db), good);
}

#[test]
fn misspelled_config_key_names_the_key_and_file() {
    let case = Case::new("bad_key");
    let config = case.backup_config(&Transport::File);
    let bad = case.write_config("bad.yaml", &std::fs::read_to_string(&config).unwrap().replace("databases:", "databses:"));
    let line = assert_fails(&lifeboat(&bad, &["backup"]), 2, "databses");
    assert!(line.contains("bad.yaml"), "{line}");
    let wrong_type = case.write_config("type.yaml", &std::fs::read_to_string(&config).unwrap().replace("role: backup", "role: [backup]"));
    assert_fails(&lifeboat(&wrong_type, &["backup"]), 2, "role");
    let both = case.write_config(
        "both.yaml",
        &std::fs::read_to_string(&config)
            .unwrap()
            .replace("encryption:\n", &format!("encryption:\n  identity_file: {}\n", case.identity_file.display())),
    );
    assert_fails(&lifeboat(&both, &["backup"]), 2, "identity_file");
}

#[test]
fn restore_with_no_complete_backup_leaves_the_target_untouched() {
    let case = Case::new("nothing_to_restore");
    seed_postgres(&case.db, 50);
    let marker = fingerprint(&case.db);
    let out = lifeboat(&case.restore_config(&Transport::Ssh), &["restore", "--yes"]);
    assert_fails(&out, 1, "no complete backup of postgres");
    assert_eq!(fingerprint(&case.db), marker);
}

#[test]
fn roles_are_enforced_and_restore_asks_for_yes() {
    let case = Case::new("roles");
    seed_postgres(&case.db, 10);
    let backup = case.backup_config(&Transport::File);
    let restore = case.restore_config(&Transport::File);
    assert_fails(&lifeboat(&backup, &["restore", "--yes"]), 2, "role restore");
    assert_fails(&lifeboat(&restore, &["backup"]), 2, "role backup");
    assert_ok(&lifeboat(&backup, &["backup"]));
    assert_fails(&lifeboat(&restore, &["restore"]), 2, "--yes");
    assert!(db_exists(&case.db));
}

#[test]
fn missing_database_is_named_before_any_data_moves() {
    let case = Case::new("missing_db");
    let config = case.backup_config(&Transport::File);
    let out = lifeboat(&config, &["backup"]);
    assert_fails(&out, 1, "database `t_missing_db` named in stores.postgres.databases does not exist");
    assert!(case.runs(&config).is_empty(), "no run left behind");
}

#[test]
fn status_alerts_on_missing_or_old_backups() {
    let case = Case::new("status");
    seed_postgres(&case.db, 10);
    let backup = case.backup_config(&Transport::File);
    assert_fails(&lifeboat(&backup, &["status", "--max-age", "1h"]), 1, "no recent enough complete backup");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let out = lifeboat(&backup, &["--json", "status", "--max-age", "1h"]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stores"][0]["store"], "postgres");
    assert_eq!(v["stores"][0]["ok"], true);
}

#[test]
fn keygen_prints_an_identity_age_can_use() {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat")).arg("keygen").output().unwrap();
    assert!(out.status.success());
    let identity = String::from_utf8_lossy(&out.stdout);
    assert!(identity.contains("AGE-SECRET-KEY-1"));
    let recipient = String::from_utf8_lossy(&out.stderr).lines().find_map(|l| l.strip_prefix("Public key: ").map(str::to_string)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), identity.as_bytes()).unwrap();
    let script = format!("echo hello | age -r {recipient} | age -d -i {}", dir.path().join("key").display());
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
}
