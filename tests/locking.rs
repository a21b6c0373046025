//! One job at a time per store: the lock file `locks/<store>.lock` on a real sshd and in a local
//! folder. A backup is held mid-run by an exclusive lock on one of its tables (taken by a psql
//! session the test controls), so "while a backup runs" is a state, never a guess at timing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::Duration;

use common::*;
use lifeboat::deployment::host_name;
use lifeboat::layout::lock::{LockHolder, process_start};

const LIMIT: Duration = Duration::from_secs(120);

/// A psql session holding `LOCK TABLE registry.person IN ACCESS EXCLUSIVE MODE`: a backup of the
/// database blocks on it until [`TableLock::release`].
struct TableLock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl TableLock {
    fn take(db: &str) -> TableLock {
        let mut child = psql_at(PG_PORT, db).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run psql");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "BEGIN; LOCK TABLE registry.person IN ACCESS EXCLUSIVE MODE; SELECT 'locked';").unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "psql did not take the table lock");
        TableLock { child, stdin: Some(stdin) }
    }

    fn release(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "COMMIT;");
        }
        let _ = self.child.wait();
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        self.release();
    }
}

fn transports() -> [(Transport, &'static str); 2] {
    [(Transport::Ssh, "ssh"), (Transport::File, "file")]
}

/// A case with a small database and a backup config with `locking:` as given.
fn setup(name: &str, transport: &Transport, locking: &str) -> (Case, PathBuf) {
    let case = Case::new(name);
    seed_postgres(&case.db, 200);
    let config = case.backup_config_with(transport, &case.postgres_block(""), "backup.yaml");
    let text = std::fs::read_to_string(&config).unwrap() + &format!("locking: {locking}\n");
    std::fs::write(&config, text).unwrap();
    (case, config)
}

fn lock_file(case: &Case) -> PathBuf {
    case.server_path.join("locks/postgres.lock")
}

fn read_holder(case: &Case) -> Option<LockHolder> {
    serde_json::from_slice(&std::fs::read(lock_file(case)).ok()?).ok()
}

fn plant(case: &Case, host: &str, pid: u32, pid_start: Option<u64>, age: chrono::Duration) -> Vec<u8> {
    let holder = LockHolder {
        store: "postgres".into(),
        command: "backup".into(),
        owner: "backup".into(),
        host: host.into(),
        pid,
        pid_start,
        since: (chrono::Utc::now() - age).to_rfc3339(),
    };
    let bytes = serde_json::to_vec_pretty(&holder).unwrap();
    std::fs::create_dir_all(case.server_path.join("locks")).unwrap();
    std::fs::write(lock_file(case), &bytes).unwrap();
    bytes
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn complete_runs(case: &Case, config: &Path) -> Vec<String> {
    case.runs(config).iter().filter(|r| r["complete"] == true).map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn two_backups_started_together_one_waits_then_both_succeed() {
    for (transport, tag) in transports() {
        let (case, config) = setup(&format!("lock_wait_{tag}"), &transport, "{ wait: 2m, poll: 100ms }");
        let mut table = TableLock::take(&case.db);
        let logs = [case.dir.path().join("a.log"), case.dir.path().join("b.log")];
        let mut jobs: Vec<Child> = logs.iter().map(|log| spawn_lifeboat_logged(&config, &["backup"], log)).collect();
        poll_until("one backup to take the lock", LIMIT, || read_holder(&case).is_some());
        let holder = read_holder(&case).unwrap();
        assert_eq!((holder.command.as_str(), holder.host.as_str(), holder.store.as_str()), ("backup", host_name().as_str(), "postgres"));
        let waiter = jobs.iter().position(|j| j.id() != holder.pid).expect("the holder is one of the two");
        assert_eq!(jobs[1 - waiter].id(), holder.pid, "{tag}: the lock names the running backup's pid");
        poll_until_or(
            "the second backup to say it waits",
            LIMIT,
            || log_of(&logs[waiter]).contains("waiting up to 120 s for the lock"),
            || {
                format!(
                    "{tag}: holder pid {}\nholder log:\n{}\nwaiter log:\n{}",
                    holder.pid,
                    log_of(&logs[1 - waiter]),
                    log_of(&logs[waiter])
                )
            },
        );
        assert!(log_of(&logs[waiter]).contains(&format!("pid {}", holder.pid)), "{tag}: the waiter names the holder");
        assert!(jobs[waiter].try_wait().unwrap().is_none(), "{tag}: the second backup waits, it does not fail");
        table.release();
        for (job, log) in jobs.iter_mut().zip(&logs) {
            assert!(job.wait().unwrap().success(), "{tag}: a backup failed:\n{}", log_of(log));
        }
        let today = complete_runs(&case, &config);
        assert_eq!(today.len(), 2, "{tag}: two complete runs, one after the other: {today:?}");
        assert!(!lock_file(&case).exists(), "{tag}: the lock is released");
    }
}

#[test]
fn without_waiting_the_second_backup_fails_naming_the_holder() {
    for (transport, tag) in transports() {
        let (case, config) = setup(&format!("lock_nowait_{tag}"), &transport, "{ wait: 0 }");
        let mut table = TableLock::take(&case.db);
        let logs = [case.dir.path().join("a.log"), case.dir.path().join("b.log")];
        let mut jobs: Vec<Child> = logs.iter().map(|log| spawn_lifeboat_logged(&config, &["backup"], log)).collect();
        let mut loser = None;
        poll_until("one of the two backups to fail", LIMIT, || {
            loser = jobs.iter_mut().position(|j| j.try_wait().unwrap().is_some());
            loser.is_some()
        });
        let loser = loser.unwrap();
        assert_eq!(jobs[loser].wait().unwrap().code(), Some(1), "{tag}: {}", log_of(&logs[loser]));
        let holder = read_holder(&case).expect("the running backup holds the lock");
        assert_eq!(holder.pid, jobs[1 - loser].id());
        let text = log_of(&logs[loser]);
        let error: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(error.len(), 1, "{tag}: one error line:\n{text}");
        for needle in [
            "postgres: locked by `backup`",
            &format!("host {}", host_name()),
            &format!("pid {}", holder.pid),
            &holder.since,
            "locks/postgres.lock",
        ] {
            assert!(error[0].contains(needle), "{tag}: `{needle}` missing from {}", error[0]);
        }
        table.release();
        assert!(jobs[1 - loser].wait().unwrap().success(), "{tag}: the holder's backup failed:\n{}", log_of(&logs[1 - loser]));
        assert_eq!(complete_runs(&case, &config).len(), 1);
        assert!(!lock_file(&case).exists(), "{tag}: the lock is released");
    }
}

#[test]
fn a_stale_lock_of_a_dead_host_is_taken_over_with_a_warning() {
    for (transport, tag) in transports() {
        let (case, config) = setup(&format!("lock_stale_{tag}"), &transport, "{ wait: 0, stale_after: 1h }");
        plant(&case, "dead-host.example", 4242, None, chrono::Duration::hours(3));
        let out = lifeboat(&config, &["backup"]);
        assert_ok(&out);
        let text = stderr(&out);
        assert!(
            text.contains("taking over the stale lock") && text.contains("dead-host.example") && text.contains("pid 4242"),
            "{tag}: {text}"
        );
        assert_eq!(complete_runs(&case, &config).len(), 1);
        assert!(!lock_file(&case).exists(), "{tag}: the lock is released after the backup");

        // A job on this host that died a minute ago (its connection cut before it could release):
        // its pid is gone, so the lock is taken over at once, not after stale_after.
        plant(&case, &host_name(), u32::MAX - 1, None, chrono::Duration::minutes(1));
        let out = lifeboat(&config, &["backup"]);
        assert_ok(&out);
        assert!(stderr(&out).contains("its process is gone from this host"), "{tag}: {}", stderr(&out));
        assert_eq!(complete_runs(&case, &config).len(), 2);
    }
}

#[test]
fn a_fresh_lock_of_another_host_or_a_live_process_here_stops_the_backup() {
    for (transport, tag) in transports() {
        let (case, config) = setup(&format!("lock_held_{tag}"), &transport, "{ wait: 0, stale_after: 1h }");
        // Another host, 10 minutes ago: it may well be running.
        let planted = plant(&case, "other-host.example", 4242, None, chrono::Duration::minutes(10));
        let out = lifeboat(&config, &["backup"]);
        let line = assert_fails(&out, 1, "locked by `backup` on host other-host.example (pid 4242, user backup)");
        assert!(line.contains("remove") && line.contains("locks/postgres.lock"), "{tag}: says what to do: {line}");
        assert_eq!(std::fs::read(lock_file(&case)).unwrap(), planted, "{tag}: another job's lock is left as it was");
        assert!(complete_runs(&case, &config).is_empty(), "{tag}: nothing was backed up");

        // This host, a live process (this test), three hours ago: older than stale_after, but its
        // holder is seen alive, so it is not stale.
        let me = std::process::id();
        plant(&case, &host_name(), me, process_start(me), chrono::Duration::hours(3));
        assert_fails(&lifeboat(&config, &["backup"]), 1, &format!("pid {me}"));
        // The same pid, but another process's start time: the holder is gone.
        plant(&case, &host_name(), me, process_start(me).map(|s| s + 1), chrono::Duration::hours(3));
        assert_ok(&lifeboat(&config, &["backup"]));
        assert!(!lock_file(&case).exists());
    }
}

#[test]
fn prune_and_backup_of_one_store_exclude_each_other() {
    for (transport, tag) in transports() {
        let (case, config) = setup(&format!("lock_prune_{tag}"), &transport, "{ wait: 2m, poll: 100ms }");
        let no_wait = case.write_config("prune-nowait.yaml", &std::fs::read_to_string(&config).unwrap().replace("wait: 2m", "wait: 0"));
        let mut table = TableLock::take(&case.db);
        let backup_log = case.dir.path().join("backup.log");
        let mut backup = spawn_lifeboat_logged(&config, &["backup"], &backup_log);
        poll_until("the backup to take the lock", LIMIT, || read_holder(&case).is_some());
        assert_eq!(read_holder(&case).unwrap().pid, backup.id());

        // A prune that may not wait fails naming the running backup; a dry run needs no lock.
        assert_fails(&lifeboat(&no_wait, &["prune"]), 1, &format!("locked by `backup` on host {} (pid {}", host_name(), backup.id()));
        assert_ok(&lifeboat(&no_wait, &["prune", "--dry-run"]));

        let prune_log = case.dir.path().join("prune.log");
        let mut prune = spawn_lifeboat_logged(&config, &["prune"], &prune_log);
        poll_until("prune to wait for the backup", LIMIT, || log_of(&prune_log).contains("waiting up to 120 s for the lock"));
        assert!(prune.try_wait().unwrap().is_none());
        assert_eq!(read_holder(&case).unwrap().pid, backup.id(), "{tag}: the backup still holds the lock");
        table.release();
        assert!(backup.wait().unwrap().success(), "{tag}: {}", log_of(&backup_log));
        assert!(prune.wait().unwrap().success(), "{tag}: {}", log_of(&prune_log));
        assert_eq!(complete_runs(&case, &config).len(), 1, "{tag}: the newest complete backup is never pruned");
        assert!(!lock_file(&case).exists());
    }
}
