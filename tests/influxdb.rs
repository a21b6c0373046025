//! InfluxDB 1.x backups and restores, end to end against Debian's influxd 1.6.7 (started by
//! scripts/servers/influxdb.sh) and a real sshd. Each test uses its own databases.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::influx::*;
use common::*;

fn databases_at(http: &str) -> Vec<String> {
    let v = influx_at(http, None, "SHOW DATABASES");
    v["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r[0].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// 2024-01-01T00:00:00Z: seeded points lie between this and the test's run, over many shards.
const BASE: u64 = 1_704_067_200;

/// The main test database: measurements with tags and float/int/string/bool fields (one field
/// sparse), a measurement name that needs quoting, and points in a non-default retention policy.
fn seed_main(http: &str, db: &str) {
    influx_at(http, None, &format!("DROP DATABASE \"{db}\""));
    influx_at(http, None, &format!("CREATE DATABASE \"{db}\""));
    influx_at(http, None, &format!("CREATE RETENTION POLICY longterm ON \"{db}\" DURATION 0s REPLICATION 1 SHARD DURATION 52w"));
    influx_at(http, None, &format!("CREATE RETENTION POLICY decade ON \"{db}\" DURATION 87600h REPLICATION 1"));
    let districts = ["Ibombo", "Isamba", "Ilanga", "Irundu", "Zobwe"];
    let mut lines = String::new();
    for i in 0..500u64 {
        let t = BASE + i * 2 * 86_400 + i;
        let district = districts[(i % 5) as usize];
        let event = if i % 2 == 0 { "birth" } else { "death" };
        let rate = if i % 4 < 2 { format!(",rate={}.25", i) } else { String::new() };
        lines.push_str(&format!(
            "registrations,district={district},event={event} count={}i{rate},office=\"Office \\\"{i}\\\" Zoë, Kraków\",verified={} {t}\n",
            i % 17,
            i % 3 == 0
        ));
    }
    for i in 0..40u64 {
        lines.push_str(&format!("user\\ audit,practitioner=Ngozi\\ Ø action=\"LOGGED_IN\",duration={}i {}\n", i * 3, BASE + i * 3600));
    }
    write_at(http, db, None, &lines);
    let mut yearly = String::new();
    for year in 0..10u64 {
        yearly.push_str(&format!(
            "yearly_totals,region=north births={}i,deaths={}i {}\n",
            1000 + year,
            400 + year,
            1_420_070_400 + year * 31_536_000
        ));
    }
    write_at(http, db, Some("longterm"), &yearly);
    write_at(http, db, Some("decade"), &format!("registrations,district=Ibombo,event=birth count=7i {}\n", BASE + 100));
    influx_at(
        http,
        None,
        &format!(
            "CREATE CONTINUOUS QUERY \"daily totals\" ON \"{db}\" BEGIN SELECT sum(count) INTO \"{db}\".longterm.daily_totals FROM \"{db}\".autogen.registrations GROUP BY time(1d), district END"
        ),
    );
}

/// A second database whose default retention policy is not `autogen`.
fn seed_second(http: &str, db: &str) {
    influx_at(http, None, &format!("DROP DATABASE \"{db}\""));
    influx_at(http, None, &format!("CREATE DATABASE \"{db}\" WITH DURATION 0s SHARD DURATION 30d NAME metrics"));
    let mut lines = String::new();
    for i in 0..200u64 {
        lines.push_str(&format!(
            "http_requests,service=gateway,code={} latency={}.5,ok={} {}\n",
            200 + (i % 3) * 100,
            i,
            i % 5 != 0,
            BASE + i * 7200
        ));
    }
    write_at(http, db, None, &lines);
}

/// Everything a restore must bring back: retention policies and every point of every policy.
fn fingerprint_at(http: &str, db: &str) -> String {
    let rps = influx_at(http, None, &format!("SHOW RETENTION POLICIES ON \"{db}\""));
    let mut out = rps["results"][0]["series"].to_string();
    let cqs = influx_at(http, None, "SHOW CONTINUOUS QUERIES");
    for s in cqs["results"][0]["series"].as_array().unwrap() {
        if s["name"] == db {
            out.push_str(&s.to_string());
        }
    }
    for row in rps["results"][0]["series"][0]["values"].as_array().expect("the database exists") {
        let rp = row[0].as_str().unwrap();
        let data = influx_at(http, Some(db), &format!("SELECT * FROM \"{db}\".\"{rp}\"./.*/ GROUP BY *"));
        out.push_str(&data["results"][0]["series"].to_string());
    }
    out
}

fn fingerprint(db: &str) -> String {
    fingerprint_at(&http(), db)
}

struct InfluxCase {
    _serial: Serial,
    case: Case,
    db: String,
    db2: String,
    work: PathBuf,
}

impl InfluxCase {
    fn new(name: &str) -> InfluxCase {
        let serial = serial();
        ensure_server("influxdb");
        wait_for_rpc(&rpc());
        let mut case = Case::new(&format!("influx_{name}"));
        let work = case.with_work_dir();
        let db = format!("t_influx_{name}");
        let db2 = format!("t_influx_{name}_2");
        InfluxCase { _serial: serial, case, db, db2, work }
    }

    fn store_block(&self, extra: &str, dbs: &[&str]) -> String {
        format!("stores:\n  influxdb:\n    host: \"{}\"\n    http_url: {}\n    databases: [{}]\n{extra}", rpc(), http(), dbs.join(", "))
    }

    fn backup_config_with(&self, transport: &Transport, store: &str) -> PathBuf {
        self.case.backup_config_with(transport, store, "influx-backup.yaml")
    }

    fn backup_config(&self, transport: &Transport) -> PathBuf {
        self.backup_config_with(transport, &self.store_block("", &[&self.db, &self.db2]))
    }

    fn restore_config_with(&self, file: &str, transport: &Transport, store: &str) -> PathBuf {
        self.case.restore_config_with(transport, store, file)
    }

    fn restore_config(&self, transport: &Transport) -> PathBuf {
        self.restore_config_with("influx-restore.yaml", transport, &self.store_block("", &[&self.db, &self.db2]))
    }

    fn seed(&self) {
        seed_main(&http(), &self.db);
        seed_second(&http(), &self.db2);
    }

    fn work_is_empty(&self) -> bool {
        std::fs::read_dir(&self.work).unwrap().next().is_none()
    }
}

/// A passing test drops its databases (a failing one leaves them to look at): a restore uploads the
/// whole metastore recorded at backup time, which influxd 1.6 takes in with a single socket read
/// (services/snapshotter readRequest), so a large one can arrive cut short and the restore fail
/// with "updating metadata on influxd service failed: … connection reset by peer".
impl Drop for InfluxCase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for db in [&self.db, &self.db2] {
            let q = format!("q=DROP DATABASE \"{db}\"");
            let _ = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-XPOST", &format!("{}/query", http()), "--data-urlencode", &q])
                .status();
        }
    }
}

/// Two databases: every kind of point, policy and continuous query the main one has, and a
/// default policy that is not `autogen` in the second.
impl RoundTrip for InfluxCase {
    const STORE: &'static str = "influxdb";

    fn stores_block(&self) -> String {
        self.store_block("", &[&self.db, &self.db2])
    }

    fn fingerprint(&self) -> String {
        let present = databases_at(&http());
        let of = |db: &String| {
            if present.contains(db) { fingerprint(db) } else { format!("{db} is missing") }
        };
        format!("{}\n{}", of(&self.db), of(&self.db2))
    }

    fn check_manifest(&self, manifest: &serde_json::Value, _run_dir: &Path) {
        assert!(self.work_is_empty(), "influxd's temporary folder is removed after the backup");
        let counts = &manifest["counts"][&self.db];
        assert_eq!(counts["autogen.registrations:values"], 500 * 3 + 250);
        assert_eq!(counts["autogen.\"user audit\":values"], 80);
        assert_eq!(counts["longterm.yearly_totals:values"], 20);
        assert!(counts["decade.registrations:values"].as_u64().unwrap() > 0);
        assert!(counts.as_object().unwrap().keys().all(|k| k.ends_with(":values")), "{counts}");
        assert_eq!(manifest["counts"][&self.db2]["metrics.http_requests:values"], 400);
        assert!(manifest["tool_versions"]["influxd"].as_str().unwrap().contains("1."));
        let policies = manifest["extra"]["retention_policies"][&self.db].as_array().unwrap();
        assert_eq!(policies.iter().map(|p| p["name"].as_str().unwrap()).collect::<Vec<_>>(), ["autogen", "decade", "longterm"]);
        assert_eq!(manifest["extra"]["continuous_queries"][&self.db][0]["name"], "daily totals");
    }

    /// A measurement dropped, the non-default policy's points deleted, a point added, the second
    /// database gone.
    fn damage(&self) {
        influx(Some(&self.db), "DROP MEASUREMENT \"user audit\"");
        influx(None, &format!("DROP CONTINUOUS QUERY \"daily totals\" ON \"{}\"", self.db));
        influx(Some(&self.db), "DROP SERIES FROM yearly_totals");
        write(&self.db, None, &format!("registrations,district=Ibombo,event=birth count=999i {}\n", BASE + 5));
        influx(None, &format!("DROP DATABASE \"{}\"", self.db2));
    }

    fn after_restore(&self) {
        assert!(self.work_is_empty(), "the restore's temporary folders are removed");
    }
}

/// Backs up two databases, damages them, restores, and checks everything came back.
fn roundtrip(name: &str, transport: Transport) {
    let t = InfluxCase::new(name);
    t.seed();
    common::roundtrip(&t.case, &t, transport);
}

#[test]
fn roundtrip_over_ssh() {
    roundtrip("ssh", Transport::Ssh);
}

#[test]
fn roundtrip_to_local_folder() {
    roundtrip("file", Transport::File);
}

#[test]
fn by_hand_recipe_restores() {
    let t = InfluxCase::new("by_hand");
    seed_main(&http(), &t.db);
    let before = fingerprint(&t.db);
    let backup = t.backup_config_with(&Transport::File, &t.store_block("", &[&t.db]));
    assert_ok(&lifeboat(&backup, &["backup"]));
    let run_dir = t.case.server_path.join(t.case.runs(&backup)[0]["path"].as_str().unwrap());
    influx(None, &format!("DROP DATABASE \"{}\"", t.db));
    // docs/restore-influxdb.md, with no Lifeboat involved.
    let script = format!(
        "set -euo pipefail
         mkdir -m 700 {work}/restore
         age -d -i {id} {dir}/db-{db}.tar.zst.age | zstd -d | tar -x -C {work}/restore
         influx -host 127.0.0.1 -port {INFLUX_HTTP_PORT} -execute 'DROP DATABASE \"{db}\"'
         influxd restore -portable -host {rpc} -db {db} {work}/restore
         while IFS= read -r q; do influx -host 127.0.0.1 -port {INFLUX_HTTP_PORT} -execute \"$q\"; done < {work}/restore/continuous_queries.influxql
         rm -rf {work}/restore",
        id = t.case.identity_file.display(),
        dir = run_dir.display(),
        db = t.db,
        work = t.work.display(),
        rpc = rpc(),
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "by-hand restore failed: {}", String::from_utf8_lossy(&out.stderr));
    // influxd restore returns before the server has loaded the shards it sent.
    let mut after = String::new();
    for _ in 0..120 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-XPOST",
                &format!("{}/query", http()),
                "--data-urlencode",
                &format!("q=SELECT count(*) FROM \"{}\".\"autogen\".registrations", t.db),
            ])
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout);
        if !answer.contains("shard is disabled") && !answer.contains("engine is closed") {
            after = fingerprint(&t.db);
            if after == before {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(after, before);
}

#[test]
fn writes_during_backup_do_not_cause_a_false_mismatch() {
    let t = InfluxCase::new("live_writes");
    t.seed();
    let backup = t.backup_config(&Transport::Ssh);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (t.db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Server-stamped points, as live services write them.
                let mut child = Command::new("curl")
                    .args(["-sS", "-f", "-XPOST", &format!("{}/write?db={db}", http()), "--data-binary", "@-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                let batch: String = (0..20).map(|i| format!("registrations,district=Live,event=birth count={i}i\n")).collect();
                std::io::Write::write_all(child.stdin.as_mut().unwrap(), batch.as_bytes()).unwrap();
                drop(child.stdin.take());
                if child.wait().unwrap().success() {
                    n += 1;
                }
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = lifeboat(&backup, &["backup"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert_ok(&out);
    assert!(writes > 0, "the writer ran during the backup");
    let out = lifeboat(&t.restore_config(&Transport::Ssh), &["restore", "--yes"]);
    assert_ok(&out);
}

/// What `SELECT count(*) ... WHERE time < T` answers for every policy and measurement of `db`,
/// keyed as the manifest keys its counts: the restore checks the manifest's counts this way.
fn influxql_counts(db: &str, before: &str) -> serde_json::Map<String, serde_json::Value> {
    let part = |n: &str| {
        if n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') { n.to_string() } else { format!("\"{n}\"") }
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["results"][0]["series"][0]["values"]
            .as_array()
            .map_or(vec![], |rows| rows.iter().map(|r| r[0].as_str().unwrap().to_string()).collect())
    };
    let mut counts = serde_json::Map::new();
    for rp in names(&influx(None, &format!("SHOW RETENTION POLICIES ON \"{db}\""))) {
        for m in names(&influx(Some(db), "SHOW MEASUREMENTS")) {
            let q = format!("SELECT count(*) FROM \"{db}\".\"{rp}\".\"{m}\" WHERE time < '{before}'");
            let answer = influx(Some(db), &q);
            let Some(row) = answer["results"][0]["series"][0]["values"][0].as_array().cloned() else { continue };
            let n: u64 = row.iter().skip(1).filter_map(|v| v.as_u64()).sum();
            if n > 0 {
                counts.insert(format!("{}.{}:values", part(&rp), part(&m)), n.into());
            }
        }
    }
    counts
}

#[test]
fn counts_read_from_the_backup_match_influxql_through_overwrites_and_deletes() {
    let t = InfluxCase::new("tsm_counts");
    t.seed();
    let backup = t.backup_config_with(&Transport::File, &t.store_block("", &[&t.db]));
    // Each backup makes influxd write its cache into a new TSM file, so the shards end up with
    // several files holding the same keys.
    assert_ok(&lifeboat(&backup, &["backup"]));
    let mut again = String::new();
    for i in 0..200u64 {
        // The same series and times as seed_main (overwrites), and new older points in between.
        let district = ["Ibombo", "Isamba", "Ilanga", "Irundu", "Zobwe"][(i % 5) as usize];
        let event = if i % 2 == 0 { "birth" } else { "death" };
        let t0 = BASE + i * 2 * 86_400 + i;
        again.push_str(&format!("registrations,district={district},event={event} count=1000i {t0}\n"));
        again.push_str(&format!("registrations,district={district},event={event} count=1001i {}\n", t0 + 3600));
    }
    write(&t.db, None, &again);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let last_manifest = || {
        let (_, manifest) = t.case.manifest_of(t.case.runs(&backup).last().unwrap());
        let before = manifest["extra"]["counted_before"][&t.db].as_str().unwrap().to_string();
        (manifest, before)
    };
    let (manifest, before) = last_manifest();
    let recorded = manifest["counts"][&t.db].as_object().unwrap().clone();
    assert_eq!(recorded, influxql_counts(&t.db, &before), "the counts read from the TSM files are InfluxQL's");
    // 500 seeded points of 3-4 values; 200 of them overwritten, 200 new one-value points.
    assert_eq!(recorded["autogen.registrations:values"], 500 * 3 + 250 + 200);
    assert!(manifest["extra"]["deleted_values_in_files"].is_null(), "nothing was deleted");
    influx(None, &format!("DROP DATABASE \"{}\"", t.db));
    let restore = t.restore_config_with("influx-restore.yaml", &Transport::File, &t.store_block("", &[&t.db]));
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(influxql_counts(&t.db, &before), recorded, "the restored database holds what was counted");

    // Tombstones: a time range of some series, whole series, a whole measurement; then a point
    // written again inside a deleted range, into a file without tombstones.
    influx(Some(&t.db), &format!("DELETE FROM registrations WHERE district = 'Ibombo' AND time < {}s", BASE + 200 * 86_400));
    influx(Some(&t.db), "DROP SERIES FROM registrations WHERE district = 'Zobwe'");
    influx(Some(&t.db), "DROP MEASUREMENT \"user audit\"");
    write(&t.db, None, &format!("registrations,district=Ibombo,event=birth count=5i {}\n", BASE + 10 * 86_400));
    write(&t.db, Some("longterm"), &format!("yearly_totals,region=north births=1i,deaths=2i {}\n", 1_420_070_400));
    let out = lifeboat(&backup, &["backup"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("not compacted yet"), "the backup warns: {}", stderr(&out));
    let (manifest, before) = last_manifest();
    let recorded = manifest["counts"][&t.db].as_object().unwrap().clone();
    assert_eq!(recorded, influxql_counts(&t.db, &before), "tombstones are applied as influxd applies them");
    let n = recorded["autogen.registrations:values"].as_u64().unwrap();
    assert!(n > 1000 && n < 1950, "{n}");
    assert!(!recorded.contains_key("autogen.\"user audit\":values"), "{recorded:?}");
    assert!(manifest["extra"]["deleted_values_in_files"][&t.db].as_u64().unwrap() > 0);
    // influxd restore imports the TSM files and leaves their tombstones out: the deleted points
    // come back, and the restore says so instead of reporting success.
    let out = lifeboat(&restore, &["restore", "--yes"]);
    assert_fails(&out, 1, "influxd restore brings them back");
}

#[test]
fn old_points_written_throughout_the_backup_are_counted_as_the_backup_holds_them() {
    let t = InfluxCase::new("backfill");
    t.seed();
    let backup = t.backup_config(&Transport::File);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (t.db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Backfilled points, with timestamps long before the backup.
                write(&db, None, &format!("registrations,district=Backfill,event=birth count={i}i {}\n", BASE + 86_400 + i));
                i += 1;
            }
            i
        })
    };
    while influx(Some(&t.db), "SELECT count(*) FROM registrations WHERE district = 'Backfill'")["results"][0]["series"].is_null() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = lifeboat(&backup, &["backup"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert_ok(&out);
    assert!(written > 1, "the writer ran during the backup");
    assert!(t.work_is_empty(), "temporary folders are removed");
    // The restore counts the restored database and compares it with the manifest: whatever part
    // of the backfill the backup caught, the counts say exactly that.
    assert_ok(&lifeboat(&t.restore_config(&Transport::File), &["restore", "--yes"]));
}

#[test]
fn retention_policies_changing_throughout_the_backup_fail_it_clearly() {
    let t = InfluxCase::new("rp_churn");
    t.seed();
    let backup = t.backup_config(&Transport::File);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changer = {
        let (db, stop) = (t.db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                influx(None, &format!("CREATE RETENTION POLICY churn_{i} ON \"{db}\" DURATION 0s REPLICATION 1"));
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let out = lifeboat(&backup, &["backup"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    changer.join().unwrap();
    assert_fails(&out, 1, "kept changing during 3 attempts");
    assert!(t.case.runs(&backup).iter().all(|r| r["complete"] == false), "no complete run");
    assert!(t.work_is_empty(), "temporary folders are removed");
}

// ---- bad input ----

#[test]
fn missing_database_is_named_before_any_data_moves() {
    let t = InfluxCase::new("missing_db");
    seed_main(&http(), &t.db);
    let backup = t.backup_config_with(&Transport::File, &t.store_block("", &[&t.db, "t_influx_no_such_db"]));
    let out = lifeboat(&backup, &["backup"]);
    assert_fails(&out, 1, "database `t_influx_no_such_db` named in stores.influxdb.databases does not exist");
    assert!(t.case.runs(&backup).is_empty(), "no run left behind");
    assert!(t.work_is_empty());
}

#[test]
fn unreachable_influxdb_is_a_clear_error() {
    let t = InfluxCase::new("unreachable");
    let closed = format!("http://127.0.0.1:{CLOSED_INFLUX_HTTP_PORT}");
    let store = t.store_block("", &[&t.db]).replace(&http(), &closed);
    let out = lifeboat(&t.backup_config_with(&Transport::File, &store), &["backup"]);
    assert_fails(&out, 1, &format!("cannot reach InfluxDB's HTTP API at {closed}"));
}

/// A private influxd on its own ports and folders, killed when dropped.
struct PrivateInflux {
    child: std::process::Child,
    http: String,
    rpc: String,
    pidfile: PathBuf,
}

/// A port the kernel says is free now (for a retry after a collision).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PrivateInflux {
    /// Starts on the given ports; when one is taken (fixed ports lie in the kernel's ephemeral
    /// range, so a client connection of another test can hold one for a moment), on free ones.
    fn start(dir: &Path, http_port: u16, rpc_port: u16) -> PrivateInflux {
        let mut ports = (http_port, rpc_port);
        for _ in 0..3 {
            match Self::try_start(dir, ports.0, ports.1) {
                Ok(server) => return server,
                Err(log) if log.contains("address already in use") => ports = (free_port(), free_port()),
                Err(log) => panic!("private influxd did not start within 60 s: {log}"),
            }
        }
        panic!("private influxd found its ports taken three times")
    }

    fn try_start(dir: &Path, http_port: u16, rpc_port: u16) -> Result<PrivateInflux, String> {
        let conf = dir.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  index-version = \"inmem\"\n  query-log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{http_port}\"\n  log-enabled = false\n\
                 [logging]\n  level = \"warn\"\n  suppress-logo = true\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("influxd.log")).unwrap();
        let mut child =
            Command::new("influxd").arg("run").arg("-config").arg(&conf).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let pidfile = dir.join("influxd.pid");
        std::fs::write(&pidfile, child.id().to_string()).unwrap();
        let http = format!("http://127.0.0.1:{http_port}");
        // Up to 60 s: a fresh influxd opening its stores is slow on a loaded two-core machine.
        for _ in 0..240 {
            let rpc = format!("127.0.0.1:{rpc_port}");
            if Command::new("curl").args(["-sf", &format!("{http}/ping")]).output().unwrap().status.success()
                && snapshot_service_answers(&rpc).is_ok()
            {
                return Ok(PrivateInflux { child, http, rpc, pidfile });
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(std::fs::read_to_string(dir.join("influxd.log")).unwrap())
    }
}

impl Drop for PrivateInflux {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn influxdb_down_during_backup_never_completes_a_run() {
    let t = InfluxCase::new("down");
    let server_dir = t.case.dir.path().join("influxd");
    std::fs::create_dir_all(&server_dir).unwrap();
    let server = PrivateInflux::start(&server_dir, PRIVATE_INFLUX_HTTP_PORT, PRIVATE_INFLUX_RPC_PORT);
    seed_main(&server.http, &t.db);
    let store = |extra: &str| {
        format!("stores:\n  influxdb:\n    host: \"{}\"\n    http_url: {}\n    databases: [{}]\n{extra}", server.rpc, server.http, t.db)
    };
    let backup = t.backup_config_with(&Transport::Ssh, &store(""));
    assert_ok(&lifeboat(&backup, &["backup"]));
    let good = t.case.runs(&backup);
    let good_manifest = std::fs::read(t.case.server_path.join(good[0]["path"].as_str().unwrap()).join("manifest.json")).unwrap();

    // influxd backup starts after Lifeboat's checks and first count; the server dies just then.
    let bin = t.case.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    executable(
        &bin.join("influxd"),
        &format!(
            "#!/bin/bash\nif [ \"$1\" = backup ]; then kill -9 $(cat {}); sleep 0.5; fi\nexec /usr/bin/influxd \"$@\"\n",
            server.pidfile.display()
        ),
    );
    let failing = t.backup_config_with(&Transport::Ssh, &store(&format!("    bin_dir: {}\n", bin.display())));
    let started = std::time::Instant::now();
    let out = lifeboat(&failing, &["backup"]);
    let line = assert_fails(&out, 1, &format!("InfluxDB went away during the backup of {}", t.db));
    assert!(line.contains("earlier backups are untouched"), "{line}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "fails at once, not after influxd's minutes of retries");

    let runs = t.case.runs(&backup);
    assert_eq!(runs.iter().filter(|r| r["complete"] == true).count(), 1, "{runs:?}");
    assert_eq!(runs.iter().rfind(|r| r["complete"] == true).unwrap()["id"], good[0]["id"]);
    let still = std::fs::read(t.case.server_path.join(good[0]["path"].as_str().unwrap()).join("manifest.json")).unwrap();
    assert_eq!(still, good_manifest, "the earlier backup is untouched");
    assert!(t.work_is_empty(), "influxd's temporary folder is removed after the failed backup");
    drop(server);
}

#[test]
fn failing_influxd_backup_removes_its_temporary_folder() {
    let t = InfluxCase::new("tool_fails");
    seed_main(&http(), &t.db);
    // A real backup into the folder, then a failure, as when influxd dies part-way.
    let bin = t.case.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    executable(
        &bin.join("influxd"),
        "#!/bin/bash\nif [ \"$1\" = backup ]; then /usr/bin/influxd \"$@\"; echo 'backup: unexpected EOF (simulated)' >&2; exit 1; fi\nexec /usr/bin/influxd \"$@\"\n",
    );
    let backup = t.backup_config_with(&Transport::File, &t.store_block(&format!("    bin_dir: {}\n", bin.display()), &[&t.db]));
    let out = lifeboat(&backup, &["backup"]);
    assert_fails(&out, 1, "unexpected EOF (simulated)");
    assert!(t.work_is_empty(), "the folder influxd wrote into is removed");
    assert!(t.case.runs(&backup).iter().all(|r| r["complete"] == false));
}

#[test]
fn archive_for_the_wrong_store_or_database_is_refused_before_anything_is_dropped() {
    let t = InfluxCase::new("wrong_archive");
    t.seed();
    let marker = fingerprint(&t.db);

    // A PostgreSQL backup in the folder the InfluxDB restore reads.
    seed_postgres(&t.case.db, 10);
    let pg = t.case.write_config(
        "pg.yaml",
        &format!(
            "role: backup\ntimezone: Africa/Lagos\n{}encryption:\n  recipients: [{}]\n{}{}",
            t.case.server_block(&Transport::File),
            t.case.recipient,
            t.case.signing_block("backup"),
            t.case.postgres_block("")
        ),
    );
    assert_ok(&lifeboat(&pg, &["backup"]));
    let restore = t.restore_config_with("wrong.yaml", &Transport::File, &t.store_block("    server_dir: postgres\n", &[&t.db, &t.db2]));
    assert_fails(&lifeboat(&restore, &["restore", "--yes"]), 2, "holds a postgres backup, not influxdb");
    assert_eq!(fingerprint(&t.db), marker);

    // An InfluxDB run whose manifest pairs a database with another database's archive.
    let backup = t.backup_config(&Transport::File);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let run = t.case.runs(&backup).into_iter().find(|r| r["store"] == "influxdb").unwrap();
    let path = t.case.server_path.join(run["path"].as_str().unwrap()).join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let dbs = &mut manifest["extra"]["databases"];
    let (a, b) = (dbs[&t.db].clone(), dbs[&t.db2].clone());
    dbs[&t.db] = b;
    dbs[&t.db2] = a;
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    t.case.sign_manifest(path.parent().unwrap());
    write(&t.db, None, &format!("registrations,district=Marker,event=birth count=1i {}\n", BASE + 9));
    let marker = fingerprint(&t.db);
    let marker2 = fingerprint(&t.db2);
    let out = lifeboat(&t.restore_config(&Transport::File), &["restore", "--yes"]);
    assert_fails(&out, 1, "is not an influxd portable backup of database");
    assert_eq!(fingerprint(&t.db), marker, "nothing was dropped");
    assert_eq!(fingerprint(&t.db2), marker2, "nothing was dropped");
}

#[test]
fn interrupted_restore_can_be_run_again() {
    let t = InfluxCase::new("interrupted");
    t.seed();
    let (before, before2) = (fingerprint(&t.db), fingerprint(&t.db2));
    assert_ok(&lifeboat(&t.backup_config(&Transport::File), &["backup"]));

    // An influxd whose restore of the second database hangs, so the restore can be killed after
    // it dropped that database.
    let bin = t.case.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stall_pid = t.case.dir.path().join("stall.pid");
    executable(
        &bin.join("influxd"),
        &format!(
            "#!/bin/bash\nif [ \"$1\" = restore ] && [[ \" $* \" == *\" -db {} \"* ]]; then echo $$ > {}; exec sleep 120; fi\nexec /usr/bin/influxd \"$@\"\n",
            t.db2,
            stall_pid.display()
        ),
    );
    let stalling = t.restore_config_with(
        "stalling.yaml",
        &Transport::File,
        &t.store_block(&format!("    bin_dir: {}\n", bin.display()), &[&t.db, &t.db2]),
    );
    influx(Some(&t.db), "DROP MEASUREMENT registrations");
    let mut child = spawn_lifeboat(&stalling, &["restore", "--yes"]);
    for _ in 0..240 {
        if stall_pid.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    if let Ok(pid) = std::fs::read_to_string(&stall_pid) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    assert!(stall_pid.exists(), "the restore reached the second database");
    assert!(!databases_at(&http()).contains(&t.db2), "the restore was interrupted after dropping the second database");

    let out = lifeboat(&t.restore_config(&Transport::File), &["restore", "--yes"]);
    assert_ok(&out);
    assert_eq!(fingerprint(&t.db), before);
    assert_eq!(fingerprint(&t.db2), before2);
}
