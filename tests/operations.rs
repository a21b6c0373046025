//! Operating faults produced for real (issue 9's fault matrix, the parts not in the store and
//! hostile-server tests): SIGTERM in the middle of a backup and of a restore, a backup server that
//! stops answering mid-upload, and a backup disk that fills up. In each, nothing that passes for
//! complete is left behind, the target is never harmed, and the next run succeeds.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn with_bin_dir(case: &Case, config: &Path, bin: &Path, file: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(config).unwrap().replace("    databases:", &format!("    bin_dir: {}\n    databases:", bin.display()));
    case.write_config(file, &text)
}

/// The pid a stalling tool wrote, once it has written it whole.
fn read_pid(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Sends SIGTERM and waits for the job to end, which must take under 5 seconds.
fn terminate(child: std::process::Child) -> std::process::Output {
    let asked = Instant::now();
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    eprintln!("stopped {:?} after SIGTERM", asked.elapsed());
    assert!(asked.elapsed() < Duration::from_secs(5), "stopping took {:?}", asked.elapsed());
    out
}

#[test]
fn sigterm_stops_a_backup_within_seconds_and_commits_nothing() {
    let case = Case::new("sigterm_backup");
    seed_postgres(&case.db, 3000);
    let backup = case.backup_config(&Transport::Ssh);
    let stalling = with_bin_dir(&case, &backup, &stalling_pg_tool(case.dir.path(), "pg_dump", 30_000), "stalling.yaml");
    let child = spawn_lifeboat_captured(&stalling, &["backup"]);
    let is_dump = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().ends_with(".dump.zst.age");
    assert!(wait_for(Duration::from_secs(30), || files_under(&case.server_path).iter().any(is_dump)), "the backup never started its dump");
    let pid_file = case.dir.path().join("stalling-bin/pg_dump.pid");
    // The dump file is created as pg_dump is spawned, maybe before its wrapper wrote its pid.
    assert!(wait_for(Duration::from_secs(10), || read_pid(&pid_file).is_some()), "pg_dump never started");
    let tool = read_pid(&pid_file).unwrap();

    let out = terminate(child);
    let line = assert_fails(&out, 1, "backup stopped by SIGTERM");
    assert!(line.contains("stopped part-way, nothing committed: postgres") && line.contains("run the backup again"), "{line}");
    assert!(wait_for(Duration::from_secs(2), || process_gone(tool)), "the dump tool (pid {tool}) still runs");
    // The unfinished run was removed; nothing anywhere passes for complete.
    assert!(!files_under(&case.server_path).iter().any(|p| p.ends_with("manifest.json")), "a manifest was written");
    assert!(case.runs(&backup).is_empty(), "{:?}", case.runs(&backup));

    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&backup);
    assert_eq!((runs.len(), &runs[0]["complete"]), (1, &serde_json::json!(true)), "{runs:?}");
}

#[test]
fn sigterm_mid_restore_says_what_is_restored_and_a_rerun_completes_it() {
    let case = Case::new("sigterm_restore");
    seed_postgres(&case.db, 300);
    let backup = case.backup_config(&Transport::File);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let good = fingerprint(&case.db);
    psql(&case.db, "DELETE FROM registry.event WHERE id % 2 = 0");

    let restore = case.restore_config(&Transport::File);
    let stalling = with_bin_dir(&case, &restore, &stalling_pg_tool(case.dir.path(), "pg_restore", 0), "stalling.yaml");
    let child = spawn_lifeboat_captured(&stalling, &["restore", "--yes"]);
    let pid_file = case.dir.path().join("stalling-bin/pg_restore.pid");
    assert!(wait_for(Duration::from_secs(30), || read_pid(&pid_file).is_some()), "pg_restore never started");
    let tool = read_pid(&pid_file).unwrap();

    let out = terminate(child);
    let line = assert_fails(&out, 1, "restore stopped by SIGTERM");
    assert!(
        line.contains("restored and verified: none; interrupted part-way (its data is incomplete): postgres; not started: none"),
        "{line}"
    );
    assert!(line.contains("run the same restore again"), "{line}");
    assert!(wait_for(Duration::from_secs(2), || process_gone(tool)), "pg_restore (pid {tool}) still runs");
    // The drill report says so.
    let report = files_under(&case.server_path)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("drill-"))
        .expect("a drill report");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(report["result"], "stopped", "{report}");

    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(fingerprint(&case.db), good);
    let status = lifeboat(&backup, &["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["stores"][0]["last_drill"]["result"], "ok", "{status}");
}

#[test]
fn a_server_that_stops_answering_mid_upload_fails_the_backup_within_its_timeout() {
    let case = Case::new("silent_server");
    seed_postgres(&case.db, 20_000);
    let backup = case.backup_config(&Transport::Ssh);
    let relay = StallingRelay::start(SSH_PORT, 300_000);
    let known_hosts = case.dir.path().join("relay_known_hosts");
    let key_line = std::fs::read_to_string(state().join("sshd/known_hosts")).unwrap();
    std::fs::write(&known_hosts, key_line.replace(&format!("[127.0.0.1]:{SSH_PORT}"), &format!("[127.0.0.1]:{}", relay.port))).unwrap();
    let text = std::fs::read_to_string(&backup)
        .unwrap()
        .replace(&format!("127.0.0.1:{SSH_PORT}"), &format!("127.0.0.1:{}", relay.port))
        .replace(&state().join("sshd/known_hosts").display().to_string(), &known_hosts.display().to_string())
        .replace("server:\n", "server:\n  timeout: 4s\n");
    let through_relay = case.write_config("relay.yaml", &text);

    let started = Instant::now();
    let out = lifeboat(&through_relay, &["backup"]);
    let took = started.elapsed();
    assert!(relay.stalled(), "the relay never went silent: the dump was too small");
    let line = assert_fails(&out, 1, "backup server ssh://");
    eprintln!("the backup failed {took:?} after it started (server.timeout 4s)");
    assert!(took < Duration::from_secs(40), "the job hung for {took:?} with a 4s timeout");
    assert!(line.contains("the connection was lost") && line.contains("4 s, server.timeout"), "{line}");
    assert!(!files_under(&case.server_path).iter().any(|p| p.ends_with("manifest.json")), "a manifest was written: {line}");
    // The server itself is fine: the next backup, by the direct route, succeeds.
    assert_ok(&lifeboat(&backup, &["backup"]));
    assert_eq!(case.runs(&backup).iter().filter(|r| r["complete"] == true).count(), 1);
}

#[test]
fn a_full_backup_disk_fails_clearly_and_the_next_run_succeeds_once_space_is_freed() {
    for (name, transport) in [("disk_full_file", Transport::File), ("disk_full_ssh", Transport::Ssh)] {
        let case = Case::new(name);
        seed_postgres(&case.db, 20_000);
        let disk = Tmpfs::mount(&case.server_path, "2m");
        disk.fill(64 << 10);
        let backup = case.backup_config(&transport);
        let out = lifeboat(&backup, &["backup"]);
        let line = assert_fails(&out, 1, "the backup server's disk is full");
        eprintln!("{name}: {line}");
        assert!(line.contains("run the backup again"), "{line}");
        assert!(!files_under(&case.server_path).iter().any(|p| p.ends_with("manifest.json")), "a manifest was written");
        assert!(case.runs(&backup).iter().all(|r| r["complete"] == false));

        std::fs::remove_file(disk.path.join("filler")).unwrap();
        assert_ok(&lifeboat(&backup, &["backup"]));
        assert_eq!(case.runs(&backup).iter().filter(|r| r["complete"] == true).count(), 1, "{:?}", case.runs(&backup));
        drop(disk);
    }
}
