//! Restoring the backups OpenCRVS's original scripts made, as an operator switching to Lifeboat
//! has them on the backup server: each made with the scripts' own tools and command lines
//! (`pg_dump -Fc`, `pg_dumpall --roles-only | grep -v`, `influxd backup -portable`, `mc mirror`,
//! the real `mongodump --gzip --archive` for the committed MongoDB fixtures), then
//! `tar czf - -C DIR . | openssl enc -aes-256-cbc -pbkdf2 -salt`, into
//! `<date>/<store>_backup_<date>.tar.gz.enc` on the server. Restored through Lifeboat, proven
//! with the counts taken from the archive; every bad input refused with the target intact.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const PASS: &str = "the chart's backup_encryption_key";

/// What the scripts upload: `tar czf - -C DIR . | openssl enc ... -pass env:ENCRYPT_PASS`, written
/// as `<server>/<date>/<store>_backup_<date>.tar.gz.enc`. Returns the file's path.
fn seal_as_the_scripts_do(server_root: &Path, date: &str, store: &str, dir: &Path) -> PathBuf {
    let day = server_root.join(date);
    std::fs::create_dir_all(&day).unwrap();
    let file = day.join(format!("{store}_backup_{date}.tar.gz.enc"));
    let script = "set -o pipefail; tar czf - -C \"$DIR\" . | openssl enc -aes-256-cbc -pbkdf2 -salt -pass env:ENCRYPT_PASS > \"$OUT\"";
    let out = Command::new("bash").args(["-c", script]).env("DIR", dir).env("OUT", &file).env("ENCRYPT_PASS", PASS).output().unwrap();
    assert!(out.status.success(), "sealing failed: {}", String::from_utf8_lossy(&out.stderr));
    file
}

/// What the Swarm era's script uploads: the whole folder as one `<date>/<date>.tar.gz.enc`.
fn seal_as_the_swarm_script_does(server_root: &Path, label: &str, dir: &Path) {
    let day = server_root.join(label);
    std::fs::create_dir_all(&day).unwrap();
    let script = "set -o pipefail; tar -czf \"$OUT.tar.gz\" -C \"$DIR\" . && openssl enc -aes-256-cbc -salt -pbkdf2 -in \"$OUT.tar.gz\" -out \"$OUT.tar.gz.enc\" -pass env:PASSPHRASE && rm \"$OUT.tar.gz\"";
    let sealed =
        Command::new("bash").args(["-c", script]).env("DIR", dir).env("OUT", day.join(label)).env("PASSPHRASE", PASS).output().unwrap();
    assert!(sealed.status.success(), "sealing failed: {}", String::from_utf8_lossy(&sealed.stderr));
}

/// The `legacy:` block with the passphrase in a file, as the chart's secret mounts it.
fn legacy_block(case: &Case, pass: &str) -> String {
    let file = case.dir.path().join("backup_encryption_key");
    std::fs::write(&file, pass).unwrap();
    format!("legacy:\n  passphrase_file: {}\n", file.display())
}

/// A restore config with the `legacy:` block.
fn restore_config_with_legacy(case: &Case, transport: &Transport, stores: &str, pass: &str, file: &str) -> PathBuf {
    let path = case.restore_config_with(transport, stores, file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{}", legacy_block(case, pass))).unwrap();
    path
}

/// The original `postgres/backup.sh`: `pg_dump -Fc` of the database and the roles without any
/// line `ALTER ROLE ... PASSWORD`.
fn postgres_as_the_scripts_do(db: &str, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let port = PG_PORT.to_string();
    let dump = Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-Fc", "-d", db, "-f"])
        .arg(into.join(format!("{db}.dump")))
        .output()
        .unwrap();
    assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    let roles = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; pg_dumpall -h 127.0.0.1 -p \"$PORT\" -U postgres --roles-only | grep -v \"ALTER ROLE.*PASSWORD\" > \"$OUT\"",
        ])
        .env("PORT", &port)
        .env("OUT", into.join("roles.sql"))
        .output()
        .unwrap();
    assert!(roles.status.success(), "pg_dumpall: {}", String::from_utf8_lossy(&roles.stderr));
}

fn role_facts(role: &str) -> String {
    psql("postgres", &format!("SELECT rolcanlogin || '/' || rolconnlimit FROM pg_roles WHERE rolname = '{role}'"))
}

#[test]
fn a_postgres_backup_of_the_scripts_restores_with_its_counts_and_roles_left_alone() {
    let case = Case::new("legacy_pg");
    let db = &case.db;
    seed_postgres(db, 800);
    // The scripts' grep drops the whole ALTER ROLE line of a role with a password.
    let clerk = format!("clerk_{db}");
    psql("postgres", &format!("ALTER ROLE \"{clerk}\" WITH LOGIN PASSWORD 'registrar' CONNECTION LIMIT 5"));
    let gone = format!("gone_{db}");
    psql("postgres", &format!("DROP ROLE IF EXISTS \"{gone}\"; CREATE ROLE \"{gone}\" LOGIN PASSWORD 'x'"));
    psql(
        db,
        &format!(
            "CREATE TABLE registry.owned (x int); ALTER TABLE registry.owned OWNER TO \"{gone}\"; INSERT INTO registry.owned VALUES (1), (2)"
        ),
    );
    // Partitions and inheritance: count(*) of a parent counts its children's rows too.
    psql(
        db,
        "CREATE TABLE registry.by_year (y int, n text) PARTITION BY RANGE (y);
         CREATE TABLE registry.by_year_2024 PARTITION OF registry.by_year FOR VALUES FROM (2024) TO (2025);
         CREATE TABLE registry.by_year_2025 PARTITION OF registry.by_year FOR VALUES FROM (2025) TO (2026);
         INSERT INTO registry.by_year SELECT 2024 + i % 2, 'row ' || i FROM generate_series(1, 77) i;
         CREATE TABLE audit.base (x int); CREATE TABLE audit.child (y int) INHERITS (audit.base);
         INSERT INTO audit.base VALUES (1); INSERT INTO audit.child VALUES (2, 3), (4, 5);",
    );
    let want = fingerprint(db);
    let legacy = case.dir.path().join("legacy");
    postgres_as_the_scripts_do(db, &legacy);
    seal_as_the_scripts_do(&case.server_path, "2026-01-05", "postgres", &legacy);

    // The target changes after the backup: the restore must bring back the backup's state, leave
    // the role that still exists exactly as it is now, and create the one that is gone.
    psql(db, "DELETE FROM registry.event WHERE id % 4 = 0; DROP TABLE registry.by_year");
    psql("postgres", &format!("ALTER ROLE \"{clerk}\" CONNECTION LIMIT 9"));
    psql(db, "DROP TABLE registry.owned");
    psql("postgres", &format!("DROP ROLE \"{gone}\""));
    assert_ne!(fingerprint(db), want);

    let config = restore_config_with_legacy(&case, &Transport::Ssh, &case.postgres_block(""), PASS, "restore.yaml");
    let listed = case.runs(&config);
    let run = listed.iter().find(|r| r["store"] == "postgres").expect("the legacy run is listed");
    assert_eq!(run["id"], "2026-01-05", "{run}");
    assert_eq!(run["made_by_original_scripts"], true, "{run}");

    let out = lifeboat(&config, &["restore", "--yes"]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.contains("no Lifeboat backup yet; choosing the newest made by the original scripts"), "{log}");
    assert!(log.contains("the target's roles are left as they are") && log.contains(&gone), "{log}");
    assert!(log.contains("from a backup made by the original scripts"), "{log}");
    assert_eq!(fingerprint(db), want);
    assert_eq!(psql(db, "SELECT count(*) FROM registry.by_year"), "77");
    assert_eq!(psql(db, "SELECT count(*) FROM audit.base"), "3");
    assert_eq!(role_facts(&clerk), "true/9", "an existing role was changed");
    assert_eq!(role_facts(&gone), "false/-1", "a missing role is created without LOGIN");
    assert_eq!(psql(db, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'"), gone);
    let drill = std::fs::read_dir(case.server_path.join("drills/postgres")).expect("a drill report").count();
    assert_eq!(drill, 1);
    psql(db, "DROP TABLE registry.owned");
    psql("postgres", &format!("DROP ROLE IF EXISTS \"{gone}\""));
}

/// Each bad legacy file is one `error:` line and exit 1, and the database is as it was.
#[test]
fn bad_postgres_backups_of_the_scripts_are_refused_with_the_target_intact() {
    let case = Case::new("legacy_pg_bad");
    let db = &case.db;
    seed_postgres(db, 200);
    let legacy = case.dir.path().join("legacy");
    postgres_as_the_scripts_do(db, &legacy);
    let good = seal_as_the_scripts_do(&case.server_path, "2026-02-01", "postgres", &legacy);

    // A cut-short file, an archive without a dump, a dump that is not one, a wrong passphrase.
    let cut = seal_as_the_scripts_do(&case.server_path, "2026-02-02", "postgres", &legacy);
    let whole = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let only_roles = case.dir.path().join("only-roles");
    std::fs::create_dir_all(&only_roles).unwrap();
    std::fs::copy(legacy.join("roles.sql"), only_roles.join("roles.sql")).unwrap();
    seal_as_the_scripts_do(&case.server_path, "2026-02-03", "postgres", &only_roles);
    let not_a_dump = case.dir.path().join("not-a-dump");
    std::fs::create_dir_all(&not_a_dump).unwrap();
    std::fs::write(not_a_dump.join(format!("{db}.dump")), b"PGDMP but not really a dump").unwrap();
    seal_as_the_scripts_do(&case.server_path, "2026-02-04", "postgres", &not_a_dump);

    // An entry that climbs out of the folder: `../<db>.dump`, written with a raw tar header.
    let mut header = tar::Header::new_gnu();
    let name = format!("../{db}.dump");
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    let body = std::fs::read(legacy.join(format!("{db}.dump"))).unwrap();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut raw = header.as_bytes().to_vec();
    raw.extend_from_slice(&body);
    raw.resize(raw.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let escape_day = case.server_path.join("2026-02-05");
    std::fs::create_dir_all(&escape_day).unwrap();
    let tgz = case.dir.path().join("escape.tar.gz");
    std::fs::write(&tgz, gz.finish().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["enc", "-aes-256-cbc", "-pbkdf2", "-salt", "-pass", "env:ENCRYPT_PASS", "-in"])
        .arg(&tgz)
        .arg("-out")
        .arg(escape_day.join("postgres_backup_2026-02-05.tar.gz.enc"))
        .env("ENCRYPT_PASS", PASS)
        .output()
        .unwrap();
    assert!(out.status.success());

    psql(db, "INSERT INTO audit.log (message) VALUES ('written after the backup')");
    let now = fingerprint(db);
    let config = restore_config_with_legacy(&case, &Transport::File, &case.postgres_block(""), PASS, "restore.yaml");
    for (from, needle) in [
        ("2026-02-02", "postgres_backup_2026-02-02.tar.gz.enc"),
        ("2026-02-03", "holds no database dump"),
        ("2026-02-04", "does not open with pg_restore"),
        ("2026-02-05", "not a path of plain names"),
    ] {
        let line = assert_fails(&lifeboat(&config, &["restore", "--yes", "--from", from]), 1, needle);
        assert!(line.contains("nothing was changed"), "{from}: {line}");
        assert_eq!(fingerprint(db), now, "{from} touched the target");
    }
    let wrong = restore_config_with_legacy(&case, &Transport::File, &case.postgres_block(""), "not the key", "wrong.yaml");
    let line = assert_fails(&lifeboat(&wrong, &["restore", "--yes", "--from", "2026-02-01"]), 1, "postgres_backup_2026-02-01.tar.gz.enc");
    assert!(line.contains("passphrase") || line.contains("cannot be read"), "{line}");
    assert_eq!(fingerprint(db), now, "a wrong passphrase touched the target");

    // Without the passphrase the run is listed, and a restore of it says what to set.
    let bare = case.restore_config_with(&Transport::File, &case.postgres_block(""), "bare.yaml");
    assert!(case.runs(&bare).iter().any(|r| r["id"] == "2026-02-01"));
    assert_fails(&lifeboat(&bare, &["restore", "--yes", "--from", "2026-02-01"]), 2, "legacy.passphrase_file is not set");
    assert_eq!(fingerprint(db), now);
    assert!(good.exists(), "the original file is left where it was");
}

/// The newest of either kind: a Lifeboat run newer than the scripts' last backup wins, `--from`
/// still reaches the older one, and the log says which kind each restore took.
#[test]
fn restore_takes_the_newest_of_either_kind_and_says_which() {
    let case = Case::new("legacy_pg_newest");
    let db = &case.db;
    seed_postgres(db, 100);
    let legacy = case.dir.path().join("legacy");
    postgres_as_the_scripts_do(db, &legacy);
    seal_as_the_scripts_do(&case.server_path, "2026-03-01", "postgres", &legacy);
    psql(db, "INSERT INTO audit.log (message) VALUES ('after the switch')");
    let lifeboat_state = fingerprint(db);
    assert_ok(&lifeboat(&case.backup_config(&Transport::File), &["backup"]));

    let config = restore_config_with_legacy(&case, &Transport::File, &case.postgres_block(""), PASS, "restore.yaml");
    let out = lifeboat(&config, &["restore", "--yes"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("choosing Lifeboat's backup"), "{}", stderr(&out));
    assert_eq!(fingerprint(db), lifeboat_state);

    let out = lifeboat(&config, &["restore", "--yes", "--from", "2026-03-01"]);
    assert_ok(&out);
    assert!(
        stderr(&out)
            .contains("2026-03-01/postgres_backup_2026-03-01.tar.gz.enc (made by the original scripts), as --from 2026-03-01 names")
    );
    assert_eq!(psql(db, "SELECT count(*) FROM audit.log WHERE message = 'after the switch'"), "0");
}

/// Counts per measurement of an InfluxDB database, through the HTTP API.
fn influx_counts(db: &str) -> String {
    use common::influx::influx;
    let v = influx(Some(db), "SELECT count(*) FROM /.*/");
    let series = v["results"][0]["series"].as_array().cloned().unwrap_or_default();
    series.iter().map(|s| format!("{}={}", s["name"], s["values"][0])).collect::<Vec<_>>().join(" ")
}

/// The original `influxdb/backup.sh`: `influxd backup -portable` of every database at once.
#[test]
fn an_influxdb_backup_of_the_scripts_restores_the_listed_databases_with_counts() {
    use common::influx::{influx, rpc, serial, wait_for_rpc, write};
    let _serial = serial();
    ensure_server("influxdb");
    wait_for_rpc(&rpc());
    let case = Case::new("legacy_influx");
    let (db, db2, other) = ("t_legacy_influx", "t_legacy_influx_2", "t_legacy_influx_unlisted");
    for d in [db, db2, other] {
        influx(None, &format!("DROP DATABASE \"{d}\""));
        influx(None, &format!("CREATE DATABASE \"{d}\""));
    }
    influx(None, &format!("CREATE RETENTION POLICY longterm ON \"{db}\" DURATION 0s REPLICATION 1 SHARD DURATION 52w"));
    let base = 1_700_000_000u64;
    let lines: String = (0..600)
        .map(|i| {
            format!(
                "registrations,district=Ibombo,event={} count={}i,rate={}.5 {}\n",
                ["birth", "death"][i % 2],
                i,
                i,
                base + i as u64 * 60
            )
        })
        .collect();
    write(db, None, &lines);
    write(db, Some("longterm"), &(0..20).map(|i| format!("yearly_totals total={i}i {}\n", base + i * 86_400)).collect::<String>());
    write(db2, None, &(0..150).map(|i| format!("http_requests,path=/api code=200i {}\n", base + i * 10)).collect::<String>());
    write(other, None, "not_restored value=1i 1700000000\n");
    let (want, want2) = (influx_counts(db), influx_counts(db2));
    assert!(want.contains("registrations") && want2.contains("http_requests"), "{want} / {want2}");

    let legacy = case.dir.path().join("legacy");
    let out = Command::new("influxd").args(["backup", "-portable", "-host", &rpc()]).arg(&legacy).output().unwrap();
    assert!(out.status.success(), "influxd backup: {}", String::from_utf8_lossy(&out.stderr));
    seal_as_the_scripts_do(&case.server_path, "2026-04-01", "influxdb", &legacy);

    write(db, None, "registrations,district=Later count=1i 1700900000\n");
    influx(None, &format!("DROP DATABASE \"{db2}\""));
    influx(None, &format!("DROP DATABASE \"{other}\""));
    let stores =
        format!("stores:\n  influxdb:\n    host: \"{}\"\n    http_url: {}\n    databases: [{db}, {db2}]\n", rpc(), common::influx::http());
    let config = restore_config_with_legacy(&case, &Transport::Ssh, &stores, PASS, "restore.yaml");
    let out = lifeboat(&config, &["restore", "--yes"]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.contains("records no retention policies or continuous queries"), "{log}");
    assert!(log.contains(&format!("database {other}, which stores.influxdb.databases does not list; it is left out")), "{log}");
    let databases = influx(None, "SHOW DATABASES").to_string();
    assert!(!databases.contains(other), "an unlisted database was restored: {databases}");
    assert_eq!((influx_counts(db), influx_counts(db2)), (want.clone(), want2.clone()));
    let policies = influx(Some(db), &format!("SHOW RETENTION POLICIES ON \"{db}\""));
    assert!(policies.to_string().contains("longterm"), "{policies}");

    // Imported, it is an ordinary signed run: verify --deep passes and it restores the same.
    let backup = backup_config_with_legacy(&case, &Transport::Ssh, &stores);
    let (out, runs) = import_json(&backup, &["--store", "influxdb"]);
    assert_ok(&out);
    assert_eq!((runs.len(), runs[0]["outcome"].as_str()), (1, Some("imported")), "{runs:?}");
    assert_ok(&lifeboat(&config, &["verify", "--deep", "--from", "2026-04-01"]));
    influx(None, &format!("DROP DATABASE \"{db}\""));
    let out = lifeboat(&config, &["restore", "--yes"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("choosing Lifeboat's backup 2026-04-01"), "{}", stderr(&out));
    assert_eq!((influx_counts(db), influx_counts(db2)), (want.clone(), want2.clone()));

    // The older Swarm-era archives held the same portable folder under influxdb/<label>/.
    let swarm = case.dir.path().join("swarm");
    std::fs::create_dir_all(swarm.join("postgres")).unwrap();
    std::fs::create_dir_all(swarm.join("influxdb")).unwrap();
    let copied = Command::new("cp").arg("-r").arg(&legacy).arg(swarm.join("influxdb/2026-04-03")).status().unwrap();
    assert!(copied.success());
    seal_as_the_swarm_script_does(&case.server_path, "2026-04-03", &swarm);
    influx(None, &format!("DROP DATABASE \"{db2}\""));
    let out = lifeboat(&config, &["restore", "--yes", "--store", "influxdb"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("2026-04-03/2026-04-03.tar.gz.enc"), "the newest, the Swarm archive: {}", stderr(&out));
    assert_eq!((influx_counts(db), influx_counts(db2)), (want, want2));
    for d in [db, db2] {
        influx(None, &format!("DROP DATABASE \"{d}\""));
    }
}

/// The Docker Swarm era: one archive a day for every store, `<date>/<date>.tar.gz.enc`, with
/// `postgres/<db>-<date>.dump` beside the parts Lifeboat leaves to others (Elasticsearch,
/// MinIO's raw data folder, VSExport).
#[test]
fn a_swarm_era_archive_restores_its_postgres_part() {
    let case = Case::new("legacy_swarm_pg");
    let db = &case.db;
    seed_postgres(db, 300);
    let want = fingerprint(db);
    let label = "2025-06-30";
    let raw = case.dir.path().join("swarm");
    for folder in ["postgres", "mongo", "elasticsearch/indices", "minio", "vsexport"] {
        std::fs::create_dir_all(raw.join(folder)).unwrap();
    }
    let port = PG_PORT.to_string();
    let dump = Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", db, "-F", "c", "-f"])
        .arg(raw.join(format!("postgres/{db}-{label}.dump")))
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    std::fs::write(raw.join("elasticsearch/index-0"), b"snapshot metadata").unwrap();
    std::fs::write(raw.join(format!("minio/ocrvs-{label}.tar.gz")), b"MinIO's raw data folder").unwrap();
    seal_as_the_swarm_script_does(&case.server_path, label, &raw);

    psql(db, "DELETE FROM registry.person WHERE id % 2 = 1 AND id NOT IN (SELECT person_id FROM registry.event)");
    let config = restore_config_with_legacy(&case, &Transport::File, &case.postgres_block(""), PASS, "restore.yaml");
    let out = lifeboat(&config, &["restore", "--yes", "--store", "postgres"]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.contains(&format!("{label}/{label}.tar.gz.enc")) && log.contains("holds no roles"), "{log}");
    assert_eq!(fingerprint(db), want);
}

/// A backup config with the `legacy:` block (import runs on the backup side).
fn backup_config_with_legacy(case: &Case, transport: &Transport, stores: &str) -> PathBuf {
    let path = case.backup_config_with(transport, stores, "backup.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{}", legacy_block(case, PASS))).unwrap();
    path
}

fn import_json(config: &Path, args: &[&str]) -> (std::process::Output, Vec<serde_json::Value>) {
    let out = lifeboat(config, &[&["--json", "import"], args].concat());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out, v["runs"].as_array().unwrap().clone())
}

/// `lifeboat import`: the scripts' backups become signed Lifeboat runs of their own dates, the
/// originals untouched; a bad one is reported while the others are imported; importing again
/// changes nothing; the imported run passes `verify --deep` and restores.
#[test]
fn import_turns_the_scripts_backups_into_signed_runs_once() {
    let case = Case::new("legacy_import");
    let db = &case.db;
    seed_postgres(db, 400);
    let want = fingerprint(db);
    let legacy = case.dir.path().join("legacy");
    postgres_as_the_scripts_do(db, &legacy);
    let good = seal_as_the_scripts_do(&case.server_path, "2026-05-01", "postgres", &legacy);
    let original = std::fs::read(&good).unwrap();
    let cut = seal_as_the_scripts_do(&case.server_path, "2026-05-02", "postgres", &legacy);
    let whole = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &whole[..whole.len() - 100]).unwrap();

    let backup = backup_config_with_legacy(&case, &Transport::Ssh, &case.postgres_block(""));
    let (out, dry) = import_json(&backup, &["--dry-run"]);
    assert_ok(&out);
    assert_eq!(dry.iter().filter(|r| r["outcome"] == "would import").count(), 2, "{dry:?}");
    assert!(!case.server_path.join("2026-05-01/postgres").exists(), "a dry run wrote a run");

    let (out, runs) = import_json(&backup, &[]);
    assert_eq!(out.status.code(), Some(1), "one file failed: {}", stderr(&out));
    let by_date = |d: &str| runs.iter().find(|r| r["legacy"].as_str().unwrap().starts_with(d)).unwrap().clone();
    assert_eq!(by_date("2026-05-01")["outcome"], "imported");
    assert_eq!(by_date("2026-05-01")["run"], "2026-05-01");
    assert_eq!(by_date("2026-05-02")["outcome"], "failed");
    assert!(by_date("2026-05-02")["error"].as_str().unwrap().contains("cannot be read"), "{runs:?}");
    assert!(error_line(&out).contains("1 of 2 backup(s) of the original scripts could not be imported"), "{}", stderr(&out));
    assert!(!case.server_path.join("2026-05-02/postgres").exists(), "the failed import left a run folder");
    assert_eq!(std::fs::read(&good).unwrap(), original, "the original file changed");

    let (out, again) = import_json(&backup, &["--from", "2026-05-01"]);
    assert_ok(&out);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0]["outcome"].as_str(), again[0]["run"].as_str()), (Some("already imported"), Some("2026-05-01")));
    assert!(!case.server_path.join("2026-05-01_2").exists(), "importing again made another run");

    let restore = restore_config_with_legacy(&case, &Transport::Ssh, &case.postgres_block(""), PASS, "restore.yaml");
    let listed = case.runs(&restore);
    let imported = listed.iter().find(|r| r["id"] == "2026-05-01" && r["type"] == "dump").expect("the imported run is listed");
    assert_eq!(imported["complete"], true);
    assert!(imported["signed_by"].as_str().is_some_and(|s| s.contains("lifeboat@test")), "{imported}");
    let (_, manifest) = case.manifest_of(imported);
    assert_eq!(manifest["imported_from"]["path"], "2026-05-01/postgres_backup_2026-05-01.tar.gz.enc");
    assert_eq!(manifest["finished_at"], "2026-05-01T00:00:00+00:00");
    assert!(manifest["counts"][db.as_str()]["registry.person"] == 400, "{manifest}");
    assert_ok(&lifeboat(&restore, &["verify", "--deep", "--from", "2026-05-01"]));

    psql(db, "TRUNCATE audit.log");
    std::fs::remove_file(&cut).unwrap();
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("choosing Lifeboat's backup 2026-05-01"), "{}", stderr(&out));
    assert_eq!(fingerprint(db), want);

    // prune leaves the originals alone unless asked; with --legacy the file of a day that now
    // holds its imported run goes, and a day with nothing else stays as long as the policy keeps it.
    let alone = seal_as_the_scripts_do(&case.server_path, "2026-04-10", "postgres", &legacy);
    assert_ok(&lifeboat(&restore, &["prune"]));
    assert!(good.exists() && alone.exists(), "prune without --legacy removed an original");
    let out = lifeboat(&restore, &["--json", "prune", "--legacy", "--dry-run"]);
    assert_ok(&out);
    assert!(good.exists(), "a dry run removed a file");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed: Vec<&str> = plan["stores"][0]["removed"].as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(removed, ["2026-05-01/postgres_backup_2026-05-01.tar.gz.enc"], "{plan}");
    assert_ok(&lifeboat(&restore, &["prune", "--legacy"]));
    assert!(!good.exists() && alone.exists(), "prune --legacy removed the wrong file");
    assert!(case.server_path.join("2026-05-01/postgres/manifest.json").exists(), "the imported run was removed");
}

/// Keys, sizes and SHA-256 of a bucket's objects (what `mc mirror` keeps).
fn bucket_contents(s3: &common::s3::S3, bucket: &str) -> Vec<String> {
    use sha2::Digest;
    let mut lines = Vec::new();
    for key in s3.keys(bucket) {
        let body = s3.rt.block_on(async {
            let got = s3.client.get_object().bucket(bucket).key(&key).send().await.unwrap();
            got.body.collect().await.unwrap().into_bytes()
        });
        lines.push(format!("{key} {} {}", body.len(), hex::encode(sha2::Sha256::digest(&body))));
    }
    lines
}

/// The original `minio/backup.sh`: `mc mirror --overwrite local/<bucket> <dir>/<bucket>` per bucket.
#[test]
fn a_minio_backup_of_the_scripts_restores_its_buckets_without_metadata() {
    let s3 = common::s3::S3::minio();
    let case = Case::new("legacy_minio");
    let (a, b) = ("legacy-minio-docs", "legacy-minio-photos");
    for bucket in [a, b] {
        s3.fresh_bucket(bucket);
    }
    s3.put(a, "birth/2025/cert-0001.pdf", b"%PDF-1.4 a certificate", Some("application/pdf"), &[("registrar", "Ngozi")]);
    s3.put(a, "birth/2025/naïve name ✓.txt", "Zoë, José, Ольга".as_bytes(), Some("text/plain"), &[]);
    s3.put(a, "death/empty", b"", None, &[]);
    s3.put_big(b, "scans/large.bin", 6 << 20);
    for i in 0..40 {
        s3.put(b, &format!("thumbs/{i:03}.jpg"), format!("jpeg {i}").repeat(i + 1).as_bytes(), Some("image/jpeg"), &[]);
    }
    let (want_a, want_b) = (bucket_contents(&s3, a), bucket_contents(&s3, b));

    let legacy = case.dir.path().join("legacy");
    for bucket in [a, b] {
        let out = common::s3::mc().args(["mirror", "--overwrite", &format!("local/{bucket}")]).arg(legacy.join(bucket)).output().unwrap();
        assert!(out.status.success(), "mc mirror: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    seal_as_the_scripts_do(&case.server_path, "2026-06-01", "minio", &legacy);

    // After the backup: objects changed, added and deleted; a policy the target keeps.
    s3.delete(a, "birth/2025/cert-0001.pdf");
    s3.put(b, "thumbs/000.jpg", b"replaced", Some("image/jpeg"), &[]);
    s3.put(b, "added-later.txt", b"not in the backup", None, &[]);
    s3.set_policy(b);
    let stores = common::s3::minio_store_block(&[a, b], common::s3::MINIO_PORT, "");
    let config = restore_config_with_legacy(&case, &Transport::Ssh, &stores, PASS, "restore.yaml");
    let out = lifeboat(&config, &["restore", "--yes"]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.contains("keep no object metadata and no bucket settings"), "{log}");
    assert_eq!(bucket_contents(&s3, a), want_a);
    assert_eq!(bucket_contents(&s3, b), want_b);
    let policy = s3.rt.block_on(s3.client.get_bucket_policy().bucket(b).send()).expect("the target's policy is kept");
    assert!(policy.policy().unwrap_or("").contains("public/*"));
    for bucket in [a, b] {
        s3.remove_bucket(bucket);
    }
}

/// The committed archives made by the real `mongodump --gzip --archive` (tests/fixtures/legacy).
fn mongo_fixtures() -> (PathBuf, serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy/mongo");
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    (dir, expected)
}

/// Documents per collection of a database, as the server counts them.
fn mongo_counts(db: &str) -> serde_json::Value {
    use common::mongo::{block, mongo};
    let database = mongo().database(db);
    let mut counts = serde_json::Map::new();
    for name in block(database.list_collection_names()).unwrap() {
        let n = block(database.collection::<mongodb::bson::Document>(&name).count_documents(mongodb::bson::doc! {})).unwrap();
        counts.insert(name, n.into());
    }
    serde_json::Value::Object(counts)
}

/// The original `mongo/backup.sh`: `mongodump --gzip --archive=<db>.gz -d <db>` per database,
/// whatever mongodump's exit status. A good archive restores with its counts; the empty one a
/// failed mongodump leaves is refused by name, the database intact; the Swarm era's naming too.
#[test]
fn mongodb_backups_of_the_scripts_restore_and_a_failed_dump_is_refused() {
    use common::mongo::{block, mongo};
    let case = Case::new("legacy_mongo");
    let (fixtures, expected) = mongo_fixtures();
    let dbs: Vec<String> = expected.as_object().unwrap().keys().cloned().collect();
    let legacy = case.dir.path().join("legacy");
    std::fs::create_dir_all(&legacy).unwrap();
    for db in &dbs {
        std::fs::copy(fixtures.join(format!("{db}.gz")), legacy.join(format!("{db}.gz"))).unwrap();
    }
    seal_as_the_scripts_do(&case.server_path, "2026-07-01", "mongo", &legacy);
    let failed = case.dir.path().join("failed");
    std::fs::create_dir_all(&failed).unwrap();
    for entry in std::fs::read_dir(fixtures.parent().unwrap().join("mongo-failed")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), failed.join(entry.file_name())).unwrap();
    }
    seal_as_the_scripts_do(&case.server_path, "2026-07-02", "mongo", &failed);

    // What the target holds before: something else, which the restore replaces.
    for db in &dbs {
        block(mongo().database(db).drop()).unwrap();
        block(mongo().database(db).collection::<mongodb::bson::Document>("stale").insert_one(mongodb::bson::doc! {"x": 1})).unwrap();
    }
    let stores = format!("stores:\n  mongodb:\n    url: mongodb://127.0.0.1:{MONGO_PORT}/\n    databases: [{}]\n", dbs.join(", "));
    let config = restore_config_with_legacy(&case, &Transport::Ssh, &stores, PASS, "restore.yaml");

    // What the script uploads when mongodump fails: after connecting (an empty gzip stream), for a
    // database that is not there (a bare archive header), or before connecting (no file at all).
    let absent = case.dir.path().join("absent");
    std::fs::create_dir_all(&absent).unwrap();
    std::fs::copy(fixtures.parent().unwrap().join("mongo-absent/legacyfix_absent.gz"), absent.join("legacyfix_absent.gz")).unwrap();
    seal_as_the_scripts_do(&case.server_path, "2026-07-04", "mongo", &absent);
    let nothing = case.dir.path().join("nothing");
    std::fs::create_dir_all(&nothing).unwrap();
    seal_as_the_scripts_do(&case.server_path, "2026-07-05", "mongo", &nothing);
    for (from, needle) in
        [("2026-07-02", "empty gzip stream"), ("2026-07-04", "holds no collection"), ("2026-07-05", "holds no database archive")]
    {
        let line = assert_fails(&lifeboat(&config, &["restore", "--yes", "--from", from]), 1, &format!("mongo_backup_{from}.tar.gz.enc"));
        assert!(line.contains(needle) && line.contains("mongodump fails") && line.contains("nothing was changed"), "{line}");
        for db in &dbs {
            assert_eq!(mongo_counts(db), serde_json::json!({"stale": 1}), "{db} was touched by a refused restore of {from}");
        }
    }

    let out = lifeboat(&config, &["restore", "--yes", "--from", "2026-07-01"]);
    assert_ok(&out);
    for db in &dbs {
        assert_eq!(mongo_counts(db), expected[db], "{db}");
    }

    // The Swarm era names the same archives mongo/<db>-<date>.gz inside the day's one archive.
    let swarm = case.dir.path().join("swarm");
    std::fs::create_dir_all(swarm.join("mongo")).unwrap();
    for db in &dbs {
        std::fs::copy(fixtures.join(format!("{db}.gz")), swarm.join(format!("mongo/{db}-2026-07-03.gz"))).unwrap();
    }
    seal_as_the_swarm_script_does(&case.server_path, "2026-07-03", &swarm);
    for db in &dbs {
        block(mongo().database(db).drop()).unwrap();
    }
    std::fs::remove_dir_all(case.server_path.join("2026-07-04")).unwrap();
    std::fs::remove_dir_all(case.server_path.join("2026-07-05")).unwrap();
    let out = lifeboat(&config, &["restore", "--yes", "--store", "mongodb"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("2026-07-03/2026-07-03.tar.gz.enc"), "the newest, the Swarm archive: {}", stderr(&out));
    for db in &dbs {
        assert_eq!(mongo_counts(db), expected[db], "{db}");
    }

    // Imported: the good archives become signed runs, the failed dump is reported, not imported.
    let backup = backup_config_with_legacy(&case, &Transport::Ssh, &stores);
    let (out, runs) = import_json(&backup, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let outcome = |path: &str| runs.iter().find(|r| r["legacy"] == path).map(|r| r["outcome"].as_str().unwrap().to_string());
    assert_eq!(outcome("2026-07-01/mongo_backup_2026-07-01.tar.gz.enc").as_deref(), Some("imported"), "{runs:?}");
    assert_eq!(outcome("2026-07-02/mongo_backup_2026-07-02.tar.gz.enc").as_deref(), Some("failed"), "{runs:?}");
    assert_eq!(outcome("2026-07-03/2026-07-03.tar.gz.enc").as_deref(), Some("imported"), "{runs:?}");
    assert_ok(&lifeboat(&config, &["verify", "--deep"]));
    for db in &dbs {
        block(mongo().database(db).drop()).unwrap();
    }
    let out = lifeboat(&config, &["restore", "--yes", "--from", "2026-07-01"]);
    assert_ok(&out);
    for db in &dbs {
        assert_eq!(mongo_counts(db), expected[db], "{db}: the imported run");
        block(mongo().database(db).drop()).unwrap();
    }
}
