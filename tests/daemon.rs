//! `lifeboat daemon` against the real PostgreSQL: a scheduled backup happens and is listed, a stop
//! between jobs exits 0 within seconds, a stop during a job ends it as `backup` does (exit 1,
//! nothing committed), a failed job does not end the daemon, a restore-side daemon restores on
//! its schedule, and a bad cron expression is a configuration error naming its key.
//! Schedules here have a seconds field (`LIFEBOAT_DAEMON_SECONDS=1`, a test-only switch).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Timelike;
use common::*;

fn spawn_daemon(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .arg("daemon")
        .env("LIFEBOAT_DAEMON_SECONDS", "1")
        .env_remove("LIFEBOAT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lifeboat daemon")
}

/// Sends SIGTERM and waits for the daemon to end, which must take under 5 seconds.
fn terminate(child: Child) -> std::process::Output {
    let asked = Instant::now();
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    assert!(asked.elapsed() < Duration::from_secs(5), "stopping took {:?}:\n{}", asked.elapsed(), stderr(&out));
    out
}

fn complete_runs(case: &Case, config: &Path) -> usize {
    case.runs(config).iter().filter(|r| r["complete"] == serde_json::json!(true)).count()
}

#[test]
fn the_daemon_backs_up_on_schedule_and_a_stop_between_jobs_exits_0() {
    let case = Case::new("daemon_backup");
    seed_postgres(&case.db, 200);
    // Once a minute, at a second four seconds from now: after the first run the daemon is idle
    // for most of a minute, so the stop below finds no job running.
    let second = (chrono::Utc::now().second() + 4) % 60;
    let block = case.postgres_block(&format!("    schedule: \"{second} * * * * *\"\n"));
    let config = case.backup_config_with(&Transport::File, &block, "daemon.yaml");
    assert_eq!(complete_runs(&case, &config), 0);
    let child = spawn_daemon(&config);
    let backed_up = wait_for(Duration::from_secs(75), || complete_runs(&case, &config) >= 1);
    let out = terminate(child);
    let log = stderr(&out);
    assert!(backed_up, "no scheduled backup was listed within 75 s:\n{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("postgres: next backup at") && log.contains(&format!("(stores.postgres.schedule `{second} * * * * *`)")), "{log}");
    assert!(log.contains("daemon: stopped by SIGTERM with no job running"), "{log}");
    // Before the job and after it: the next run time is logged both times.
    assert!(log.matches("postgres: next backup at").count() >= 2, "{log}");
}

/// A `bin_dir` whose pg_dump fails on its first run and is the real one afterwards.
fn pg_dump_failing_once(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("failing-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["pg_dumpall", "pg_restore", "psql"] {
        std::os::unix::fs::symlink(format!("/usr/lib/postgresql/15/bin/{tool}"), bin.join(tool)).unwrap();
    }
    let real = "/usr/lib/postgresql/15/bin/pg_dump";
    let marker = bin.join("failed-once");
    let script = format!(
        "#!/bin/bash\nif [ \"$1\" = --version ]; then exec {real} --version; fi\n\
         if [ ! -e {m} ]; then touch {m}; echo 'pg_dump: error: simulated failure' >&2; exit 1; fi\nexec {real} \"$@\"\n",
        m = marker.display()
    );
    std::fs::write(bin.join("pg_dump"), script).unwrap();
    std::fs::set_permissions(bin.join("pg_dump"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_failed_job_is_logged_and_the_next_one_runs() {
    let case = Case::new("daemon_failure");
    seed_postgres(&case.db, 50);
    let bin = pg_dump_failing_once(case.dir.path());
    let now = chrono::Utc::now().second();
    let (first, second) = ((now + 3) % 60, (now + 6) % 60);
    let block = case
        .postgres_block(&format!("    schedule: \"{first},{second} * * * * *\"\n"))
        .replace("    databases:", &format!("    bin_dir: {}\n    databases:", bin.display()));
    let config = case.backup_config_with(&Transport::File, &block, "daemon.yaml");
    let child = spawn_daemon(&config);
    let backed_up = wait_for(Duration::from_secs(75), || complete_runs(&case, &config) >= 1);
    let out = terminate(child);
    let log = stderr(&out);
    assert!(backed_up, "the second scheduled run did not back up:\n{log}");
    assert!(bin.join("failed-once").exists(), "the first run did not fail:\n{log}");
    assert!(
        log.contains("postgres: the scheduled job failed:") && log.contains("simulated failure") && log.contains("the daemon goes on"),
        "{log}"
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
}

#[test]
fn a_stop_during_a_scheduled_backup_ends_it_as_backup_does_with_exit_1() {
    let case = Case::new("daemon_stop");
    seed_postgres(&case.db, 3000);
    let bin = stalling_pg_tool(case.dir.path(), "pg_dump", 30_000);
    let block = case
        .postgres_block("    schedule: \"* * * * * *\"\n")
        .replace("    databases:", &format!("    bin_dir: {}\n    databases:", bin.display()));
    let config = case.backup_config_with(&Transport::File, &block, "daemon.yaml");
    let child = spawn_daemon(&config);
    let pid_file = case.dir.path().join("stalling-bin/pg_dump.pid");
    assert!(wait_for(Duration::from_secs(30), || std::fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0)), "pg_dump never started");
    let out = terminate(child);
    assert_fails(&out, 1, "backup stopped by SIGTERM (stopped part-way, nothing committed: postgres)");
    assert_eq!(complete_runs(&case, &config), 0);
}

#[test]
fn a_bad_cron_expression_is_a_configuration_error_naming_its_key() {
    let case = Case::new("daemon_bad_cron");
    for (schedule, key) in [
        ("\"0 25 * * *\"", "stores.postgres.schedule `0 25 * * *`"),
        ("\"0 1 * *\"", "stores.postgres.schedule `0 1 * *` is not a five-field cron expression"),
        ("{ dump: \"0 1 * * mon-\" }", "stores.postgres.schedule.dump `0 1 * * mon-`"),
        ("{ daily: \"0 1 * * *\" }", "stores.postgres.schedule.daily is not a schedule key"),
    ] {
        let block = case.postgres_block(&format!("    schedule: {schedule}\n"));
        let config = case.backup_config_with(&Transport::File, &block, "bad.yaml");
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .arg("--config")
            .arg(&config)
            .arg("daemon")
            .env_remove("LIFEBOAT_CONFIG")
            .output()
            .unwrap();
        assert_fails(&out, 2, key);
    }
    // Six fields are for tests only: without the switch, a seconds field is refused.
    let block = case.postgres_block("    schedule: \"0 0 1 * * *\"\n");
    let config = case.backup_config_with(&Transport::File, &block, "seconds.yaml");
    assert_fails(&lifeboat(&config, &["daemon"]), 2, "is not a five-field cron expression");
}

#[test]
fn a_restore_daemon_without_any_schedule_refuses_to_start() {
    let case = Case::new("daemon_restore");
    let config = case.restore_config(&Transport::File);
    assert_fails(&lifeboat(&config, &["daemon"]), 2, "role restore: no enabled store has a schedule");
}

#[test]
fn a_restore_daemon_restores_a_store_on_its_schedule() {
    let case = Case::new("daemon_restore_run");
    seed_postgres(&case.db, 100);
    let backup = case.backup_config(&Transport::File);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let before = psql(&case.db, "SELECT count(*) FROM registry.event").trim().to_string();
    psql(&case.db, "DELETE FROM registry.event");
    let second = (chrono::Utc::now().second() + 4) % 60;
    let block = case.postgres_block(&format!("    schedule: \"{second} * * * * *\"\n"));
    let config = case.restore_config_with(&Transport::File, &block, "daemon.yaml");
    let child = spawn_daemon(&config);
    // Mid-restore the database may be gone: a failed query is simply "not yet".
    let count = || {
        let out = psql_at(PG_PORT, &case.db).args(["-c", "SELECT count(*) FROM registry.event"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The drill report is the restore's last write: after it, the daemon is idle again.
    let drill_report = || {
        std::fs::read_dir(&case.server_path).unwrap().flatten().any(|run| {
            std::fs::read_dir(run.path().join("postgres"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with("drill-"))
        })
    };
    let restored = wait_for(Duration::from_secs(75), || drill_report() && count() == before);
    let out = terminate(child);
    let log = stderr(&out);
    assert!(restored, "the scheduled restore did not bring the rows back ({}):\n{log}", count());
    assert!(log.contains("postgres: next restore at"), "{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
}

/// deploy/systemd/lifeboat.service passes `systemd-analyze verify`, and what it runs and how it
/// stops it are what the tests above exercise: `lifeboat --config FILE daemon` (spawn_daemon),
/// stopped by SIGTERM (terminate) with more than terminate's 5 s before SIGKILL.
#[test]
fn the_systemd_unit_verifies_and_runs_the_daemon_as_tested_here() {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/lifeboat.service")).unwrap();
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("lifeboat.service has no {key}="))
            .to_string()
    };
    let exec: Vec<String> = setting("ExecStart").split_whitespace().map(String::from).collect();
    assert_eq!(exec.len(), 4, "ExecStart: {exec:?}");
    assert_eq!((exec[0].as_str(), exec[1].as_str(), exec[3].as_str()), ("/usr/local/bin/lifeboat", "--config", "daemon"));
    assert_eq!(setting("KillSignal"), "SIGTERM");
    let timeout: u64 = setting("TimeoutStopSec").parse().unwrap();
    assert!(timeout > 5, "TimeoutStopSec={timeout} leaves no room for a clean stop");
    assert_eq!(setting("RestartPreventExitStatus"), "2", "a configuration error must not restart in a loop");

    // Verified with this build's binary in place of the installed one.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("lifeboat.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/lifeboat", env!("CARGO_BIN_EXE_lifeboat"))).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().expect("run systemd-analyze");
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
