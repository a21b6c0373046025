//! Test harness: real PostgreSQL 15 and OpenSSH sshd on 127.0.0.1, started once per run by
//! `scripts/servers/*.sh` (idempotent: a server already started by `scripts/test` is reused).
//! Each test works on its own database and its own backup folder, so tests run in parallel.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const PG_PORT: u16 = 55432;
pub const SSH_PORT: u16 = 52222;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn state() -> PathBuf {
    PathBuf::from(std::env::var("LIFEBOAT_TEST_STATE").unwrap_or_else(|_| "/var/tmp/lifeboat-test/state".into()))
}

/// Starts a server through its script, once per test binary.
pub fn ensure_server(name: &str) {
    static STARTED: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let started = STARTED.get_or_init(Default::default);
    let mut started = started.lock().unwrap();
    if started.iter().any(|s| s == name) {
        return;
    }
    let script = repo().join("scripts/servers").join(format!("{name}.sh"));
    let out = Command::new("bash").arg(&script).arg("start").env("LIFEBOAT_TEST_STATE", state()).output().expect("run server script");
    assert!(out.status.success(), "starting {name} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    started.push(name.to_string());
}

/// Runs SQL through psql on the test server and returns its unaligned output.
pub fn psql(db: &str, sql: &str) -> String {
    ensure_server("postgres");
    let out = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &PG_PORT.to_string(), "-U", "postgres", "-d", db, "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql failed on {db}: {sql}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn db_exists(db: &str) -> bool {
    psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'")) == "1"
}

/// Creates database `db` with the kinds of data a registry holds: several schemas, a larger
/// table, bytea, non-ASCII text, a sequence, a view, and a role with grants.
pub fn seed_postgres(db: &str, rows: u32) {
    psql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    let role = format!("clerk_{db}");
    psql("postgres", &format!("DO $$ BEGIN CREATE ROLE \"{role}\" LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"));
    psql(
        db,
        &format!(
            "CREATE SCHEMA registry; CREATE SCHEMA audit;
             CREATE SEQUENCE registry.certificate_no START 1000;
             CREATE TABLE registry.person (id bigserial PRIMARY KEY, given_name text NOT NULL, family_name text,
                 born date, place text, photo bytea, doc jsonb);
             INSERT INTO registry.person (given_name, family_name, born, place, photo, doc)
               SELECT (ARRAY['Zoë','José','Ngozi','Åsa','Müller','Chiamaka','Nguyễn','Ольга','محمد','李'])[1 + i % 10],
                      'Family-' || md5(i::text), date '1950-01-01' + (i % 25000),
                      (ARRAY['Lagos','Kraków','São Paulo','Zürich'])[1 + i % 4],
                      decode(md5(i::text) || md5((i * 7)::text), 'hex'),
                      jsonb_build_object('i', i, 'note', repeat(md5(i::text), 3))
               FROM generate_series(1, {rows}) AS i;
             CREATE TABLE registry.event (id serial PRIMARY KEY, person_id bigint REFERENCES registry.person(id),
                 kind text, certificate bigint DEFAULT nextval('registry.certificate_no'));
             INSERT INTO registry.event (person_id, kind) SELECT id, CASE WHEN id % 3 = 0 THEN 'death' ELSE 'birth' END
               FROM registry.person WHERE id % 2 = 0;
             CREATE TABLE audit.log (at timestamptz DEFAULT now(), message text);
             INSERT INTO audit.log (message) VALUES ('created ✓'), ('тест'), ('');
             CREATE TABLE public.empty_table (x int);
             CREATE VIEW registry.births AS SELECT p.given_name, e.certificate FROM registry.person p JOIN registry.event e ON e.person_id = p.id WHERE e.kind = 'birth';
             GRANT USAGE ON SCHEMA registry TO \"{role}\"; GRANT SELECT ON registry.births TO \"{role}\";"
        ),
    );
}

/// A fingerprint of everything a restore must bring back.
pub fn fingerprint(db: &str) -> String {
    psql(
        db,
        "SELECT concat_ws('|',
            (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM registry.person t),
            (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM registry.event t),
            (SELECT md5(string_agg(message, ',' ORDER BY message)) FROM audit.log),
            (SELECT count(*) FROM public.empty_table),
            (SELECT last_value FROM registry.certificate_no),
            (SELECT count(*) FROM registry.births),
            (SELECT has_table_privilege('clerk_' || current_database(), 'registry.births', 'SELECT')))",
    )
}

/// One test's world: its database, its backup folder, its keys and configs.
pub struct Case {
    pub name: String,
    pub db: String,
    pub dir: tempfile::TempDir,
    pub server_path: PathBuf,
    pub identity_file: PathBuf,
    pub recipient: String,
}

pub enum Transport {
    Ssh,
    File,
}

impl Case {
    pub fn new(name: &str) -> Case {
        ensure_server("postgres");
        let dir = tempfile::Builder::new().prefix(&format!("lifeboat-{name}-")).tempdir().unwrap();
        let server_path = PathBuf::from("/var/tmp/lifeboat-test/servers").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&server_path);
        let (identity, recipient) = lifeboat::pipeline::generate_identity();
        let identity_file = dir.path().join("identity.txt");
        std::fs::write(&identity_file, identity).unwrap();
        Case { name: name.into(), db: format!("t_{name}"), dir, server_path, identity_file, recipient }
    }

    pub fn server_block(&self, transport: &Transport) -> String {
        match transport {
            Transport::Ssh => {
                ensure_server("sshd");
                let s = state().join("sshd");
                format!(
                    "server:\n  url: ssh://root@127.0.0.1:{SSH_PORT}{}\n  ssh_key_file: {}\n  known_hosts_file: {}\n",
                    self.server_path.display(),
                    s.join("client_key").display(),
                    s.join("known_hosts").display()
                )
            }
            Transport::File => format!("server:\n  url: file://{}\n", self.server_path.display()),
        }
    }

    pub fn postgres_block(&self, extra: &str) -> String {
        format!(
            "stores:\n  postgres:\n    type: dump\n    url: postgres://postgres@127.0.0.1:{PG_PORT}/postgres\n    databases: [{}]\n{extra}",
            self.db
        )
    }

    /// Writes a config file and returns its path.
    pub fn write_config(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn backup_config(&self, transport: &Transport) -> PathBuf {
        self.write_config(
            "backup.yaml",
            &format!(
                "role: backup\ntimezone: Africa/Lagos\n{}encryption:\n  recipients: [{}]\n{}",
                self.server_block(transport),
                self.recipient,
                self.postgres_block("")
            ),
        )
    }

    pub fn restore_config(&self, transport: &Transport) -> PathBuf {
        self.write_config(
            "restore.yaml",
            &format!(
                "role: restore\n{}encryption:\n  identity_file: {}\n{}",
                self.server_block(transport),
                self.identity_file.display(),
                self.postgres_block("")
            ),
        )
    }

    /// The run folders on the backup server, oldest first.
    pub fn runs(&self, config: &Path) -> Vec<serde_json::Value> {
        let out = lifeboat(config, &["list", "--json"]);
        assert!(out.status.success(), "list failed: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json prints JSON");
        v.as_array().unwrap().clone()
    }
}

/// Runs the lifeboat binary with a config and arguments, no stdin.
pub fn lifeboat(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .env_remove("LIFEBOAT_CONFIG")
        .output()
        .expect("run lifeboat")
}

/// Starts the lifeboat binary in the background (to interrupt it), no stdin, stderr discarded.
pub fn spawn_lifeboat(config: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env_remove("LIFEBOAT_CONFIG")
        .spawn()
        .expect("start lifeboat")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one `error:` line of a failed run.
pub fn error_line(out: &Output) -> String {
    let text = stderr(out);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "expected exactly one error line, got:\n{text}");
    lines[0].to_string()
}

#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "lifeboat failed ({:?}):\n{}", out.status.code(), stderr(out));
}

#[track_caller]
pub fn assert_fails(out: &Output, code: i32, needle: &str) -> String {
    assert_eq!(out.status.code(), Some(code), "expected exit {code}, stderr:\n{}", stderr(out));
    let line = error_line(out);
    assert!(line.contains(needle), "error line should mention `{needle}`: {line}");
    line
}
