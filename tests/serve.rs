//! `lifeboat serve` as the forced command of `authorized_keys` lines, through real logins to a
//! private OpenSSH sshd (127.0.0.1:SERVE_SSH_PORT, started once for this test binary and stopped by pid at
//! exit): OpenSSH's own `sftp` and `ssh` clients try every allowed and forbidden operation with
//! the production (append-only) and the restore (read-only) key, and Lifeboat itself backs up,
//! lists, checks and verifies through the first and restores through the second.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;

const PORT: u16 = SERVE_SSH_PORT;

/// The private sshd: its folder, and one served root per test world.
struct Sshd {
    dir: PathBuf,
}

/// The keys written to `authorized_keys`: name, and the `serve` arguments of its forced command
/// (`{root}` is the world's served folder).
const KEYS: &[(&str, &str)] =
    &[("production", "--append-only {root} --writable-subdir postgres --log {log}"), ("restore", "--read-only {root} --log {log}")];
/// Each world is a served folder of its own with both keys, so tests do not share locks.
const WORLDS: &[&str] = &["cli", "dump", "pgbackrest", "missing"];

static SSHD_PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn stop_sshd() {
    let pid = SSHD_PID.load(Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: kill(2) on the pid of the sshd this process started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

impl Sshd {
    fn get() -> &'static Sshd {
        static SSHD: OnceLock<Sshd> = OnceLock::new();
        SSHD.get_or_init(Sshd::start)
    }

    // sshd runs until this test binary exits; `stop_sshd` then stops it by pid.
    #[allow(clippy::zombie_processes)]
    fn start() -> Sshd {
        let dir = PathBuf::from("/var/tmp/lifeboat-test/serve-sshd");
        Sshd::stop_leftover(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let sshd = Sshd { dir };
        let mut authorized = String::new();
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(sshd.dir.join("host_key")));
        for world in WORLDS {
            if *world != "missing" {
                std::fs::create_dir_all(sshd.root(world)).unwrap();
            }
            for (key, args) in KEYS {
                let file = sshd.key(world, key);
                run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(&file));
                let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
                let args = args
                    .replace("{root}", &sshd.root(world).display().to_string())
                    .replace("{log}", &sshd.log(world).display().to_string());
                authorized.push_str(&format!("restrict,command=\"{} serve {args}\" {public}", env!("CARGO_BIN_EXE_lifeboat")));
            }
        }
        std::fs::write(sshd.dir.join("authorized_keys"), authorized).unwrap();
        let host_public = std::fs::read_to_string(sshd.dir.join("host_key.pub")).unwrap();
        let host_public: Vec<&str> = host_public.split_whitespace().take(2).collect();
        std::fs::write(sshd.known_hosts(), format!("[127.0.0.1]:{PORT} {}\n", host_public.join(" "))).unwrap();
        let config = sshd.dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {PORT}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin forced-commands-only\nStrictModes no\nUsePAM no\n\
                 MaxSessions 50\nMaxStartups 100:30:200\nSubsystem sftp internal-sftp\n",
                d = sshd.dir.display()
            ),
        )
        .unwrap();
        let log = sshd.dir.join("sshd.log");
        let mut child =
            Command::new("/usr/sbin/sshd").arg("-D").arg("-f").arg(&config).arg("-E").arg(&log).spawn().expect("run /usr/sbin/sshd");
        SSHD_PID.store(child.id(), Ordering::SeqCst);
        std::fs::write(sshd.dir.join("test.pid"), child.id().to_string()).unwrap();
        // SAFETY: registers a plain extern "C" function, run once when the test binary exits.
        unsafe { libc::atexit(stop_sshd) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", PORT)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sshd exited ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {PORT} within 20 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// An sshd of an earlier run of this binary that was killed before it could stop it.
    fn stop_leftover(dir: &Path) {
        let Ok(pid) = std::fs::read_to_string(dir.join("test.pid")) else { return };
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&dir.join("sshd_config").display().to_string()) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{}", pid.trim())).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn root(&self, world: &str) -> PathBuf {
        self.dir.join(format!("root-{world}"))
    }

    /// The refusals `serve` logged in `world`.
    fn log(&self, world: &str) -> PathBuf {
        self.dir.join(format!("refusals-{world}.log"))
    }

    fn refusals(&self, world: &str) -> String {
        std::fs::read_to_string(self.log(world)).unwrap_or_default()
    }

    fn key(&self, world: &str, key: &str) -> PathBuf {
        self.dir.join(format!("{world}-{key}_key"))
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    fn client_options(&self, world: &str, key: &str) -> Vec<String> {
        let options =
            ["IdentitiesOnly=yes", "BatchMode=yes", "StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null", "LogLevel=ERROR"];
        let mut args = vec!["-F".into(), "/dev/null".into(), "-i".into(), self.key(world, key).display().to_string()];
        for o in options.iter().map(|o| o.to_string()).chain([format!("UserKnownHostsFile={}", self.known_hosts().display())]) {
            args.extend(["-o".to_string(), o]);
        }
        args
    }

    /// Runs OpenSSH's `sftp` in batch mode with `key` of `world`.
    fn sftp(&self, world: &str, key: &str, batch: &str) -> Output {
        let mut child = Command::new("sftp")
            .args(self.client_options(world, key))
            .args(["-P", &PORT.to_string(), "-b", "-", "root@127.0.0.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sftp");
        child.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// The `server:` block of a Lifeboat config logging in with `key` of `world`.
    fn server_block(&self, world: &str, key: &str) -> String {
        format!(
            "server:\n  url: ssh://root@127.0.0.1:{PORT}{}\n  ssh_key_file: {}\n  known_hosts_file: {}\n",
            self.root(world).display(),
            self.key(world, key).display(),
            self.known_hosts().display()
        )
    }
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Each batch line alone in its own session: sftp fails, and the server logged the refusal
/// `needle` (its stderr is dropped by sshd; `--log` keeps it). Tests sharing a world log into one
/// file, so each needle names its own test's folder.
fn assert_refused(sshd: &Sshd, world: &str, key: &str, cases: &[(&str, &str)]) {
    for (line, needle) in cases {
        let out = sshd.sftp(world, key, &format!("{line}\n"));
        assert!(!out.status.success(), "`{line}` with the {key} key was not refused: {}", said(&out));
        let log = sshd.refusals(world);
        assert!(log.contains(needle), "`{line}` with the {key} key: expected `{needle}` in the log:\n{log}\nsftp said: {}", said(&out));
    }
}

/// The `cli` world's test folder `name`: a file `existing.txt`, a folder, a symlink to /etc
/// and one to /etc/passwd planted on disk (as a local user could), and a local file to upload.
fn cli_folder(sshd: &Sshd, name: &str) -> (PathBuf, PathBuf) {
    let dir = sshd.root("cli").join(name);
    std::fs::create_dir_all(dir.join("folder")).unwrap();
    std::fs::create_dir_all(sshd.root("cli").join("locks")).unwrap();
    std::fs::write(dir.join("existing.txt"), "original\n").unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    let local = sshd.dir.join(format!("{name}-upload.txt"));
    std::fs::write(&local, format!("uploaded by {name}\n")).unwrap();
    (dir, local)
}

#[test]
fn the_production_key_creates_and_reads_but_never_overwrites_removes_or_escapes() {
    let sshd = Sshd::get();
    let (dir, local) = cli_folder(sshd, "production");
    let back = sshd.dir.join("production-back.txt");
    let l = local.display();
    let allowed = format!(
        "cd production\nput {l} new.txt\nget new.txt {}\nls -l\nmkdir made\nput {l} made/inner.txt\ndf\nput {l} ../locks/sftp-test.lock\nrm ../locks/sftp-test.lock\n",
        back.display()
    );
    let out = sshd.sftp("cli", "production", &allowed);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), format!("uploaded by production\n"));
    assert_eq!(std::fs::read_to_string(dir.join("made/inner.txt")).unwrap(), "uploaded by production\n");
    assert!(!sshd.root("cli").join("locks/sftp-test.lock").exists(), "a lock file is removed");

    std::fs::write(sshd.root("cli").join("locks/not-a-lock.txt"), "x").unwrap();
    let out_file = sshd.dir.join("production-out");
    let o = out_file.display();
    assert_refused(
        sshd,
        "cli",
        "production",
        &[
            (&format!("put {l} production/existing.txt"), "refused open production/existing.txt: an existing file is never overwritten"),
            ("rm production/existing.txt", "refused remove production/existing.txt"),
            ("rename production/existing.txt production/moved.txt", "refused rename production/existing.txt: nothing is ever renamed"),
            ("rmdir production/folder", "refused rmdir production/folder: folders are never removed"),
            ("chmod 600 production/existing.txt", "refused setstat production/existing.txt"),
            ("ln -s existing.txt production/link", "refused symlink production/link: links are never made"),
            ("ln production/existing.txt production/hard", "refused hardlink production/hard"),
            ("rm locks/not-a-lock.txt", "refused remove locks/not-a-lock.txt"),
            (&format!("get ../../../../../etc/passwd {o}"), "root-cli/../../../../../etc/passwd: outside the served folder"),
            (&format!("get /etc/passwd {o}"), "refused stat /etc/passwd: outside the served folder"),
            (&format!("get production/escape/passwd {o}"), "production/escape/passwd: symlinks are never followed"),
            (&format!("get production/passwd {o}"), "refused stat production/passwd: symlinks are never followed"),
            (&format!("put {l} production/escape/planted"), "production/escape/planted: symlinks are never followed"),
            ("cd ..", "refused realpath /var/tmp/lifeboat-test/serve-sshd/root-cli/..: outside the served folder"),
        ],
    );
    let out = sshd.sftp("cli", "production", "ls -l production/escape/*\n");
    assert!(!out.status.success() && !said(&out).contains("passwd"), "/etc was listed: {}", said(&out));
    assert!(sshd.refusals("cli").contains("refused list production/escape: symlinks are never followed"), "{}", sshd.refusals("cli"));
    assert_eq!(std::fs::read_to_string(dir.join("existing.txt")).unwrap(), "original\n");
    assert!(dir.join("folder").is_dir() && !dir.join("moved.txt").exists() && !out_file.exists());

    // The writable folder (pgBackRest's): anything below it, nothing on the folder itself.
    let writable = sshd.root("cli").join("postgres");
    std::fs::create_dir_all(writable.join("sub")).unwrap();
    std::fs::write(writable.join("sub/a"), "a").unwrap();
    let out = sshd.sftp("cli", "production", &format!("cd postgres\nrename sub/a sub/b\nput {l} sub/b\nrm sub/b\nrmdir sub\n"));
    assert!(out.status.success(), "{}", said(&out));
    assert!(writable.is_dir() && !writable.join("sub").exists());
    assert_refused(sshd, "cli", "production", &[("rmdir postgres", "refused rmdir postgres: folders are never removed")]);
    assert!(!Path::new("/etc/planted").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("existing.txt")).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn the_restore_key_reads_and_lists_only() {
    let sshd = Sshd::get();
    let (dir, local) = cli_folder(sshd, "restore");
    std::fs::write(sshd.root("cli").join("locks/restore.lock"), "x").unwrap();
    let back = sshd.dir.join("restore-back.txt");
    let out = sshd.sftp("cli", "restore", &format!("cd restore\nls -l\nget existing.txt {}\n", back.display()));
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("existing.txt"), "{}", said(&out));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "original\n");
    let l = local.display();
    assert_refused(
        sshd,
        "cli",
        "restore",
        &[
            (&format!("put {l} restore/new.txt"), "refused open restore/new.txt: this key may only read and list"),
            (&format!("put {l} restore/existing.txt"), "refused open restore/existing.txt: this key may only read"),
            ("mkdir restore/made", "refused mkdir restore/made"),
            ("rm restore/existing.txt", "refused remove restore/existing.txt"),
            ("rm locks/restore.lock", "refused remove locks/restore.lock"),
            ("rename restore/existing.txt restore/moved.txt", "refused rename restore/existing.txt"),
            ("rmdir restore/folder", "refused rmdir restore/folder"),
            ("get /etc/hostname /dev/null", "refused stat /etc/hostname: outside the served folder"),
        ],
    );
    assert_eq!(std::fs::read_to_string(dir.join("existing.txt")).unwrap(), "original\n");
    assert!(!dir.join("new.txt").exists() && !dir.join("made").exists() && sshd.root("cli").join("locks/restore.lock").exists());
}

#[test]
fn a_shell_command_never_runs_with_either_key() {
    let sshd = Sshd::get();
    for key in ["production", "restore"] {
        let marker = sshd.dir.join(format!("shell-ran-{key}"));
        let out = Command::new("ssh")
            .args(sshd.client_options("cli", key))
            .args(["-p", &PORT.to_string(), "root@127.0.0.1"])
            .arg(format!("touch {}; echo shell-ran", marker.display()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // The forced command runs instead, finds no SFTP client on its input and ends.
        assert!(!String::from_utf8_lossy(&out.stdout).contains("shell-ran"), "{}", said(&out));
        assert!(!marker.exists(), "the command ran with the {key} key");
        // Nor does it get an interactive shell.
        let out = Command::new("ssh")
            .args(sshd.client_options("cli", key))
            .args(["-tt", "-p", &PORT.to_string(), "root@127.0.0.1"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&out.stdout).contains('#'), "a shell prompt: {}", said(&out));
    }
}

#[test]
fn a_served_folder_that_does_not_exist_is_named_to_the_client() {
    let sshd = Sshd::get();
    let case = Case::new("serve_missing");
    let config = case.write_config(
        "backup.yaml",
        &format!(
            "role: backup\n{}encryption:\n  recipients: [{}]\n{}{}",
            sshd.server_block("missing", "production"),
            case.recipient,
            case.signing_block("backup"),
            case.postgres_block("")
        ),
    );
    let line = assert_fails(&lifeboat(&config, &["list"]), 1, "lifeboat serve: cannot serve");
    assert!(line.contains(&sshd.root("missing").display().to_string()), "{line}");
}

#[test]
fn lifeboat_backs_up_lists_checks_and_verifies_through_the_production_key_and_restores_through_the_restore_key() {
    let sshd = Sshd::get();
    let case = Case::new("serve_dump");
    seed_postgres(&case.db, 500);
    let before = fingerprint(&case.db);
    let stores = case.postgres_block("");
    let backup = case.write_config(
        "backup.yaml",
        &format!(
            "role: backup\ntimezone: Africa/Lagos\n{}encryption:\n  recipients: [{}]\n{}{stores}",
            sshd.server_block("dump", "production"),
            case.recipient,
            case.signing_block("backup")
        ),
    );
    let restore = case.write_config(
        "restore.yaml",
        &format!(
            "role: restore\n{}encryption:\n  identity_file: {}\n{}{stores}",
            sshd.server_block("dump", "restore"),
            case.identity_file.display(),
            case.signing_block("restore")
        ),
    );

    assert_ok(&lifeboat(&backup, &["backup"]));
    let runs = case.runs(&backup);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["complete"], true);
    let run_dir = sshd.root("dump").join(runs[0]["path"].as_str().unwrap());
    assert!(run_dir.join("manifest.json").is_file());
    assert_eq!(std::fs::read_dir(sshd.root("dump").join("locks")).unwrap().count(), 0, "the lock was released");
    // A second backup the same day gets a folder of its own: nothing is overwritten.
    assert_ok(&lifeboat(&backup, &["backup"]));
    assert_eq!(case.runs(&backup).len(), 2);
    assert_ok(&lifeboat(&backup, &["status", "--max-age", "1h"]));
    let verify = lifeboat(&backup, &["verify"]);
    assert_ok(&verify);
    assert_eq!(case.runs(&restore).len(), 2, "the restore key lists");
    assert_ok(&lifeboat(&restore, &["verify", "--deep"]));

    // The production key cannot take the backups away: a stored file stays as it was.
    let stored = std::fs::read(run_dir.join("manifest.json")).unwrap();
    let out = sshd.sftp("dump", "production", &format!("rm {}/manifest.json\n", run_dir.display()));
    let needle = format!("refused remove {}/manifest.json: files are never removed", runs[0]["path"].as_str().unwrap());
    assert!(!out.status.success() && sshd.refusals("dump").contains(&needle), "{}", said(&out));
    assert_eq!(std::fs::read(run_dir.join("manifest.json")).unwrap(), stored);

    psql(&case.db, "DELETE FROM registry.event; UPDATE registry.person SET given_name = 'x'");
    assert_ne!(fingerprint(&case.db), before);
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
    assert_eq!(fingerprint(&case.db), before, "the restore brings back what was backed up");
    let listing: Vec<_> = std::fs::read_dir(&run_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!listing.iter().any(|n| n.to_string_lossy().contains("drill")), "the restore key wrote into the run: {listing:?}");
}

const PGBR_SOURCE_PORT: u16 = PGBR_PG_PORT;
const PGBR_RESTORE_PORT: u16 = SERVE_PGBR_RESTORE_PORT;
const STANZA: &str = "lifeboat_test";

/// A cluster Lifeboat restored and started; stopped by its pid (fast shutdown) when dropped.
struct Restored(PathBuf);

impl Drop for Restored {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.0.join("postmaster.pid")) else { return };
        let pid = text.lines().next().unwrap_or("").trim().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// pgBackRest (the `differential` type) keeps its repository in the production key's writable
/// folder `postgres/`, where it writes, renames and removes its own files; WAL archiving, a full
/// and a differential backup go through the production key, and the restore (with its WAL
/// fetched during recovery) through the restore key.
#[test]
fn pgbackrest_works_in_its_writable_folder_and_restores_through_the_restore_key() {
    ensure_server("pgbackrest-pg");
    let sshd = Sshd::get();
    let case = Case::new("serve_pgbr");
    let passphrase = case.dir.path().join("pgbackrest-passphrase");
    std::fs::write(&passphrase, "serve test passphrase\n").unwrap();
    let s = state();
    let db = "t_serve_pgbr";
    sql_at(PGBR_SOURCE_PORT, "postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    sql_at(PGBR_SOURCE_PORT, "postgres", &format!("CREATE DATABASE {db}"));
    sql_at(PGBR_SOURCE_PORT, db, "CREATE TABLE registry (id int PRIMARY KEY); INSERT INTO registry SELECT generate_series(1, 100)");
    let source = format!(
        "stores:\n  postgres:\n    type: differential\n    url: postgres://postgres@127.0.0.1:{PGBR_SOURCE_PORT}/postgres\n    data_directory: {}\n    pgbackrest_dir: {}\n    pgbackrest: {}\n    stanza: {STANZA}\n    passphrase_file: {}\n",
        s.join("pgbackrest-pg").display(),
        s.join("pgbackrest-pg-lifeboat").display(),
        s.join("pgbackrest-bin/pgbackrest").display(),
        passphrase.display()
    );
    let backup = case.write_config(
        "backup.yaml",
        &format!(
            "role: backup\n{}encryption:\n  recipients: [{}]\n{}{source}",
            sshd.server_block("pgbackrest", "production"),
            case.recipient,
            case.signing_block("backup")
        ),
    );
    assert_ok(&lifeboat(&backup, &["backup", "--type", "full"]));
    sql_at(PGBR_SOURCE_PORT, db, "INSERT INTO registry SELECT generate_series(101, 150)");
    assert_ok(&lifeboat(&backup, &["backup", "--type", "diff"]));
    let kinds: Vec<_> = case.runs(&backup).iter().map(|r| r["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["full", "diff"]);
    assert_ok(&lifeboat(&backup, &["status", "--max-age", "1h"]));
    assert_ok(&lifeboat(&backup, &["verify"]));
    let repository = sshd.root("pgbackrest").join("postgres");
    assert!(repository.join("archive").is_dir() && repository.join("backup").is_dir());
    // pgBackRest wrote each file under a temporary name and renamed it.
    let listing = run(Command::new("find").arg(&repository).arg("-name").arg("*.pgbackrest.tmp"));
    assert!(listing.stdout.is_empty(), "{}", String::from_utf8_lossy(&listing.stdout));

    // A fresh data directory, restored through the read-only key and started.
    let base = s.join("pgbr-tests").join(format!("serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let data = base.join("data");
    std::fs::create_dir_all(&data).unwrap();
    run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&base));
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let target = format!(
        "stores:\n  postgres:\n    type: differential\n    url: postgres://postgres@127.0.0.1:{PGBR_RESTORE_PORT}/postgres\n    bin_dir: /usr/lib/postgresql/15/bin\n    data_directory: {d}\n    socket_directory: {d}\n    pgbackrest_dir: {}\n    pgbackrest: {}\n    stanza: {STANZA}\n    passphrase_file: {}\n",
        base.join("pgbackrest").display(),
        s.join("pgbackrest-bin/pgbackrest").display(),
        passphrase.display(),
        d = data.display(),
    );
    let restore = case.write_config(
        "restore.yaml",
        &format!(
            "role: restore\n{}encryption:\n  identity_file: {}\n{}{target}",
            sshd.server_block("pgbackrest", "restore"),
            case.identity_file.display(),
            case.signing_block("restore")
        ),
    );
    let out = lifeboat(&restore, &["restore", "--yes"]);
    let _restored = Restored(data.clone());
    assert_ok(&out);
    assert_eq!(sql_at(PGBR_RESTORE_PORT, db, "SELECT count(*) || '|' || max(id) FROM registry"), "150|150");
    drop(_restored);
    let _ = std::fs::remove_dir_all(&base);
}
