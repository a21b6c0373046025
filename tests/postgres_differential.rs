//! PostgreSQL `differential`: pgBackRest 2.55 over a real sshd, from a real PostgreSQL 15 with
//! archive_mode=on (scripts/servers/pgbackrest-pg.sh, port PGBR_PG_PORT; the shared test PostgreSQL is
//! never restored over). Restores go to fresh data directories, each started on its own port.
//!
//! The source cluster's archive_command reads the one pgBackRest configuration Lifeboat renders
//! for it, so the tests that back it up take turns (`SOURCE`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

const SOURCE_PORT: u16 = PGBR_PG_PORT;
const STANZA: &str = "lifeboat_test";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Held by every test that renders the source cluster's pgBackRest configuration.
static SOURCE: Mutex<()> = Mutex::new(());

fn take_source() -> std::sync::MutexGuard<'static, ()> {
    let guard = SOURCE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    ensure_server("sshd");
    ensure_server("pgbackrest-pg");
    guard
}

/// Waits for `done` (polling), failing with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "gave up waiting {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ends the current WAL segment and waits until the source has archived it, so that every
/// commit so far is in the repository.
fn archive_current_wal() {
    let segment = sql_at(SOURCE_PORT, "postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_for(&format!("WAL segment {segment} to be archived"), Duration::from_secs(120), || {
        sql_at(SOURCE_PORT, "postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= segment
    });
}

/// One test's repository, passphrase and restore targets.
struct World {
    case: Case,
    passphrase: PathBuf,
    /// Restore targets and the restore side's pgBackRest folders (the `postgres` user reaches them).
    base: PathBuf,
}

impl World {
    fn new(name: &str) -> World {
        let case = Case::new(&format!("pgbr_{name}"));
        let passphrase = case.dir.path().join("pgbackrest-passphrase");
        std::fs::write(&passphrase, format!("right passphrase of {name}\n")).unwrap();
        let base = state().join("pgbr-tests").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        World { case, passphrase, base }
    }

    fn source_block(&self, passphrase: &Path) -> String {
        let s = state();
        format!(
            "stores:\n  postgres:\n    type: differential\n    url: postgres://postgres@127.0.0.1:{SOURCE_PORT}/postgres\n    data_directory: {}\n    pgbackrest_dir: {}\n    pgbackrest: {}\n    stanza: {STANZA}\n    passphrase_file: {}\n",
            s.join("pgbackrest-pg").display(),
            s.join("pgbackrest-pg-lifeboat").display(),
            s.join("pgbackrest-bin/pgbackrest").display(),
            passphrase.display()
        )
    }

    fn backup_config(&self) -> PathBuf {
        self.case.backup_config_with(&Transport::Ssh, &self.source_block(&self.passphrase), "backup.yaml")
    }

    /// A fresh, empty data directory owned by `postgres`, and a restore config that restores into
    /// it and starts it on `port`.
    fn restore_target(&self, name: &str, port: u16, passphrase: &Path) -> (Restored, PathBuf) {
        let data = self.base.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let chown = Command::new("chown").args(["postgres:postgres"]).arg(&data).status().unwrap();
        assert!(chown.success());
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let s = state();
        let block = format!(
            "stores:\n  postgres:\n    type: differential\n    url: postgres://postgres@127.0.0.1:{port}/postgres\n    bin_dir: {PG_BIN}\n    data_directory: {d}\n    socket_directory: {d}\n    pgbackrest_dir: {}\n    pgbackrest: {}\n    stanza: {STANZA}\n    passphrase_file: {}\n",
            self.base.join(format!("{name}-pgbackrest")).display(),
            s.join("pgbackrest-bin/pgbackrest").display(),
            passphrase.display(),
            d = data.display(),
        );
        let config = self.case.restore_config_with(&Transport::Ssh, &block, &format!("restore-{name}.yaml"));
        (Restored { data }, config)
    }

    /// Restores backup `label` with pgBackRest alone, as the README's recipe does, and starts it.
    fn by_hand_restore(&self, label: &str, port: u16) -> Restored {
        let (target, _) = self.restore_target("by-hand", port, &self.passphrase);
        let hand = self.base.join("by-hand-config");
        std::fs::create_dir_all(&hand).unwrap();
        let sshd = state().join("sshd");
        for (from, to) in [("client_key", "backup_key"), ("client_key.pub", "backup_key.pub"), ("known_hosts", "known_hosts")] {
            std::fs::copy(sshd.join(from), hand.join(to)).unwrap();
        }
        let passphrase = std::fs::read_to_string(&self.passphrase).unwrap();
        let conf = format!(
            "[global]\nrepo1-type=sftp\nrepo1-path={repo}/postgres\nrepo1-sftp-host=127.0.0.1\nrepo1-sftp-host-port={SSH_PORT}\nrepo1-sftp-host-user=root\n\
             repo1-sftp-private-key-file={h}/backup_key\nrepo1-sftp-public-key-file={h}/backup_key.pub\nrepo1-sftp-host-key-check-type=strict\n\
             repo1-sftp-known-host={h}/known_hosts\nrepo1-sftp-host-key-hash-type=sha256\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={}\n\
             lock-path={h}/lock\nlog-level-file=off\n\n[{STANZA}]\npg1-path={}\n",
            passphrase.trim(),
            target.data.display(),
            repo = self.case.server_path.display(),
            h = hand.display(),
        );
        std::fs::write(hand.join("pgbackrest.conf"), conf).unwrap();
        assert!(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&hand).status().unwrap().success());
        let as_postgres = |command: String| {
            let out = Command::new("su").args(["postgres", "-c", &command]).current_dir(&hand).output().unwrap();
            assert!(out.status.success(), "{command}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        };
        let pgbackrest = format!(
            "{} --config={}/pgbackrest.conf --stanza={STANZA}",
            state().join("pgbackrest-bin/pgbackrest").display(),
            hand.display()
        );
        as_postgres(format!("{pgbackrest} restore --delta --archive-mode=off --set={label} --type=immediate --target-action=promote"));
        let d = target.data.display();
        as_postgres(format!("{PG_BIN}/pg_ctl -D {d} -l {}/postgresql.log -w -t 120 -o \"-p {port} -k {d}\" start", hand.display()));
        wait_for("the by-hand restore to finish recovery", Duration::from_secs(120), || {
            sql_at(port, "postgres", "SELECT pg_is_in_recovery()") == "f"
        });
        target
    }

    fn labels(&self, config: &Path) -> Vec<(String, String)> {
        self.case.runs(config).iter().map(|r| (r["id"].as_str().unwrap().to_string(), r["type"].as_str().unwrap().to_string())).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A restore target; the PostgreSQL Lifeboat started on it is stopped by its pid when dropped.
struct Restored {
    data: PathBuf,
}

impl Restored {
    fn pid(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next().map(|l| l.trim().to_string())
    }

    fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.data).unwrap().next().is_none()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SIGINT: PostgreSQL's fast shutdown.
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let gone = || {
                !Command::new("kill").args(["-0", &pid]).stderr(std::process::Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
            };
            let started = Instant::now();
            while !gone() && started.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `count|min|max` of the test table on a restored cluster.
fn rows(port: u16, db: &str) -> String {
    sql_at(port, db, "SELECT count(*) || '|' || min(id) || '|' || max(id) FROM registry")
}

#[test]
fn full_differential_and_point_in_time_restores_bring_back_exactly_their_rows() {
    let _source = take_source();
    let world = World::new("roundtrip");
    let db = "t_pgbr_roundtrip";
    sql_at(SOURCE_PORT, "postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    sql_at(SOURCE_PORT, "postgres", &format!("CREATE DATABASE {db}"));
    sql_at(
        SOURCE_PORT,
        db,
        "CREATE TABLE registry (id int PRIMARY KEY, phase text NOT NULL); INSERT INTO registry SELECT i, 'full' FROM generate_series(1, 100) i",
    );
    let backup = world.backup_config();

    let out = lifeboat(&backup, &["backup", "--store", "postgres", "--type", "full"]);
    assert_ok(&out);
    sql_at(SOURCE_PORT, db, "INSERT INTO registry SELECT i, 'diff' FROM generate_series(101, 150) i");
    // No --type: the repository has a full backup, and today is a differential day unless the
    // default schedule's Sunday; --type diff makes the test independent of the weekday.
    let out = lifeboat(&backup, &["backup", "--type", "diff"]);
    assert_ok(&out);
    let labels = world.labels(&backup);
    assert_eq!(labels.iter().map(|(_, kind)| kind.as_str()).collect::<Vec<_>>(), ["full", "diff"], "{labels:?}");
    let (full, diff) = (&labels[0].0, &labels[1].0);
    assert!(diff.starts_with(&format!("{full}_")) && diff.ends_with('D'), "a differential names its full: {diff}");
    assert!(stderr(&out).contains(&format!("backup {diff} done")), "{}", stderr(&out));

    // pgBackRest picks the backup for a target time by its stop time in whole seconds: a target
    // in the same second as the differential's stop falls back to the full (seen once in CI, the
    // restore still right but from the full). A second later, the differential is the one to use.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sql_at(SOURCE_PORT, db, "INSERT INTO registry SELECT i, 'after diff' FROM generate_series(151, 175) i");
    let noted = sql_at(SOURCE_PORT, "postgres", "SELECT clock_timestamp()");
    sql_at(SOURCE_PORT, db, "INSERT INTO registry SELECT i, 'after the noted time' FROM generate_series(176, 200) i");
    archive_current_wal();

    // The differential itself: exactly the rows it was taken with.
    let (from_diff, config) = world.restore_target("from-diff", DIFF_FROM_DIFF_PORT, &world.passphrase);
    let out = lifeboat(&config, &["restore", "--store", "postgres", "--from", diff, "--yes"]);
    assert_ok(&out);
    assert_eq!(rows(DIFF_FROM_DIFF_PORT, db), "150|1|150");
    assert_eq!(sql_at(DIFF_FROM_DIFF_PORT, db, "SELECT string_agg(DISTINCT phase, ',' ORDER BY phase) FROM registry"), "diff,full");
    assert_eq!(sql_at(DIFF_FROM_DIFF_PORT, "postgres", "SELECT pg_is_in_recovery()"), "f", "the restored cluster is promoted");
    assert!(stderr(&out).contains(&format!("restore {diff} done")) && stderr(&out).contains("WAL replayed to"), "{}", stderr(&out));
    // It runs now: a second restore onto it is refused, and it is left as it was.
    let again = lifeboat(&config, &["restore", "--store", "postgres", "--yes"]);
    assert_fails(&again, 1, "is running on data directory");
    assert_eq!(rows(DIFF_FROM_DIFF_PORT, db), "150|1|150");
    drop(from_diff);

    // The noted time: every row committed before it, none after.
    let (_at_time, config) = world.restore_target("at-time", DIFF_AT_TIME_PORT, &world.passphrase);
    let out = lifeboat(&config, &["restore", "--store", "postgres", "--target-time", &noted, "--yes"]);
    assert_ok(&out);
    assert_eq!(rows(DIFF_AT_TIME_PORT, db), "175|1|175");
    assert!(stderr(&out).contains(&format!("restore {diff} done: recovery target")), "{}", stderr(&out));

    // No choice: the newest backup and all archived WAL, so every row.
    let (_newest, config) = world.restore_target("newest", DIFF_NEWEST_PORT, &world.passphrase);
    assert_ok(&lifeboat(&config, &["restore", "--yes"]));
    assert_eq!(rows(DIFF_NEWEST_PORT, db), "200|1|200");

    // The README's by-hand recipe, no Lifeboat: pgBackRest with a configuration written by hand.
    let by_hand = world.by_hand_restore(full, DIFF_BY_HAND_PORT);
    assert_eq!(rows(DIFF_BY_HAND_PORT, db), "100|1|100");
    drop(by_hand);

    // status and verify read the repository.
    let status = lifeboat(&backup, &["status", "--max-age", "1h"]);
    assert_ok(&status);
    assert!(String::from_utf8_lossy(&status.stdout).contains(&format!("postgres: newest complete backup {diff}")));
    let verify = lifeboat(&config, &["verify"]);
    assert_ok(&verify);
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("repository postgres: OK (2 backups"),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn a_wrong_host_key_fails_clearly_and_writes_nothing() {
    let _source = take_source();
    let world = World::new("host_key");
    let good = world.backup_config();
    let text = std::fs::read_to_string(&good).unwrap().replace("/known_hosts\n", "/wrong_known_hosts\n");
    assert!(text.contains("wrong_known_hosts"));
    let wrong = world.case.write_config("wrong-host-key.yaml", &text);
    let out = lifeboat(&wrong, &["backup", "--type", "full"]);
    let line = assert_fails(&out, 1, "host key of 127.0.0.1");
    assert!(line.contains("wrong_known_hosts") && line.contains("update known_hosts_file"), "{line}");
    assert!(!world.case.server_path.exists(), "nothing may be written to a server whose key does not match");
}

#[test]
fn a_wrong_passphrase_fails_clearly_and_verify_finds_a_damaged_file() {
    let _source = take_source();
    let world = World::new("passphrase");
    let backup = world.backup_config();
    // No --type and no full backup yet: the schedule makes it a full one.
    assert_ok(&lifeboat(&backup, &["backup"]));
    assert_eq!(world.labels(&backup)[0].1, "full");
    let wrong = world.case.dir.path().join("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();

    let (target, config) = world.restore_target("wrong-passphrase", DIFF_WRONG_PASSPHRASE_PORT, &wrong);
    let out = lifeboat(&config, &["restore", "--yes"]);
    let line = assert_fails(&out, 1, "does not hold the passphrase the repository was made with");
    assert!(line.contains(&wrong.display().to_string()) && !line.contains("not the passphrase"), "{line}");
    assert!(target.is_empty(), "the target was touched");

    let wrong_backup = world.case.backup_config_with(&Transport::Ssh, &world.source_block(&wrong), "wrong-backup.yaml");
    assert_fails(&lifeboat(&wrong_backup, &["backup", "--type", "diff"]), 1, "passphrase");
    assert_eq!(world.labels(&backup).len(), 1, "the repository still holds just the one full backup");

    // A damaged file in the repository: `verify` (pgbackrest verify) names the backup and fails.
    assert_ok(&lifeboat(&backup, &["verify"]));
    let label = &world.labels(&backup)[0].0;
    let catalog = world.case.server_path.join(format!("postgres/backup/{STANZA}/{label}/pg_data/global"));
    let victim = std::fs::read_dir(&catalog)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "zst"))
        .expect("a stored file");
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let out = lifeboat(&backup, &["verify"]);
    assert_fails(&out, 1, "failed verification (repository postgres)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("backup: {label}, status: invalid")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn archive_mode_off_is_named_with_what_to_set() {
    // The shared test PostgreSQL does not archive: the check refuses it before anything is written.
    let case = Case::new("pgbr_archive_off");
    let passphrase = case.dir.path().join("pass");
    std::fs::write(&passphrase, "p\n").unwrap();
    let rendered = case.dir.path().join("pgbackrest");
    let block = format!(
        "stores:\n  postgres:\n    type: differential\n    url: postgres://postgres@127.0.0.1:{PG_PORT}/postgres\n    data_directory: {}\n    pgbackrest_dir: {}\n    stanza: main\n    passphrase_file: {}\n",
        state().join("postgres").display(),
        rendered.display(),
        passphrase.display()
    );
    let config = case.backup_config_with(&Transport::Ssh, &block, "backup.yaml");
    let line = assert_fails(&lifeboat(&config, &["backup"]), 1, "archive_mode is off");
    assert!(
        line.contains(&format!(
            "archive_command = 'pgbackrest --config={}/pgbackrest.conf --stanza=main archive-push %p'",
            rendered.display()
        )),
        "{line}"
    );
    assert!(line.contains("restart PostgreSQL"), "{line}");
    assert!(!rendered.exists() && !case.server_path.join("postgres").exists());

    // --type and --target-time belong to differential stores only.
    let dump = case.backup_config_with(&Transport::File, &case.postgres_block(""), "dump.yaml");
    assert_fails(&lifeboat(&dump, &["backup", "--type", "full"]), 2, "--type full is for a store of type differential");
    let restore = case.restore_config_with(&Transport::File, &case.postgres_block(""), "restore.yaml");
    assert_fails(&lifeboat(&restore, &["restore", "--target-time", "2025-06-01 12:00:00+00", "--yes"]), 2, "--target-time");
}
