//! The real servers, started once per test binary through `scripts/servers/*.sh` (idempotent: a
//! server already started by `scripts/test` is reused), and PostgreSQL helpers.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub use super::ports::{PG_PORT, SSH_PORT};

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
    assert!(
        out.status.success(),
        "starting {name} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.push(name.to_string());
}

/// psql against database `db` of the PostgreSQL at `port`: quiet, unaligned, tuples only,
/// stopping at the first error. Add `-c SQL` (or feed stdin) and run it.
pub fn psql_at(port: u16, db: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"]);
    cmd.args(["-p", &port.to_string(), "-d", db]);
    cmd
}

/// Runs SQL on the PostgreSQL at `port` and returns its trimmed unaligned output; a failure
/// fails the test.
pub fn sql_at(port: u16, db: &str, sql: &str) -> String {
    let out = psql_at(port, db).args(["-c", sql]).output().expect("run psql");
    assert!(out.status.success(), "psql failed on port {port}, {db}: {sql}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs SQL through psql on the test server and returns its unaligned output.
pub fn psql(db: &str, sql: &str) -> String {
    ensure_server("postgres");
    sql_at(PG_PORT, db, sql)
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
