//! `lifeboat prune` over a backup server holding 400 simulated days of two stores, with killed
//! runs, second runs of a day, a damaged manifest and another store's runs mixed in: exactly
//! the runs the policy keeps remain (checked against an expectation computed here another way),
//! `--dry-run` removes nothing and reports the bytes, and a second prune finds nothing to do.
//!
//! The postgres runs are copies of one real backup (its manifest's id rewritten to each folder);
//! the mongodb runs are written with the library's own `Manifest` serialisation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use common::*;
use lifeboat::layout::RunId;
use lifeboat::layout::manifest::{FORMAT_VERSION, FileEntry, Manifest};
use sha2::Digest;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Complete,
    Incomplete,
    Damaged,
}

/// The simulated runs of one store: folder id → state.
type Runs = BTreeMap<RunId, State>;

fn today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&chrono_tz::Africa::Lagos).date_naive()
}

fn at(date: NaiveDate, seq: u32) -> RunId {
    RunId { date, seq }
}

/// Which runs each store has over `days` days before today.
fn simulate(days: u32) -> (Runs, Runs) {
    let today = today();
    let (mut pg, mut mongo) = (Runs::new(), Runs::new());
    for n in 1..days {
        let date = today - chrono::Duration::days(n as i64);
        if n % 17 != 5 {
            pg.insert(at(date, 1), State::Complete);
            if n % 7 == 3 {
                pg.insert(at(date, 2), State::Complete);
            }
            if n % 13 == 0 {
                pg.insert(at(date, 3), State::Incomplete);
            }
        }
        if n % 2 == 0 {
            let first = if n % 5 == 0 { State::Incomplete } else { State::Complete };
            mongo.insert(at(date, 1), first);
            if first == State::Incomplete || n % 11 == 0 {
                mongo.insert(at(date, 2), if n == 100 { State::Damaged } else { State::Complete });
            }
        }
    }
    // Killed runs: yesterday's may still be running (kept), the one of two days ago is not.
    pg.insert(at(today - chrono::Duration::days(1), 4), State::Incomplete);
    mongo.insert(at(today - chrono::Duration::days(2), 3), State::Incomplete);
    // Today: the real backup of postgres, and a killed mongodb run newer than its newest complete one.
    pg.insert(at(today, 1), State::Complete);
    mongo.insert(at(today, 1), State::Incomplete);
    (pg, mongo)
}

/// What the policy keeps, computed by grouping: the newest complete run of each of the N newest
/// days / ISO weeks / months that have one, the newest complete run, damaged runs, and runs
/// without a manifest from today or yesterday.
fn expected(runs: &Runs, (daily, weekly, monthly): (usize, usize, usize)) -> BTreeSet<RunId> {
    let complete: Vec<&RunId> = runs.iter().filter(|(_, s)| **s == State::Complete).map(|(id, _)| id).collect();
    let mut keep: BTreeSet<RunId> = BTreeSet::new();
    let group = |n: usize, key: fn(NaiveDate) -> String| -> Vec<RunId> {
        let mut newest: BTreeMap<String, RunId> = BTreeMap::new();
        for id in &complete {
            newest.entry(key(id.date)).and_modify(|kept| *kept = kept.clone().max((*id).clone())).or_insert_with(|| (*id).clone());
        }
        newest.into_values().rev().take(n).collect()
    };
    keep.extend(group(daily, |d| d.to_string()));
    keep.extend(group(weekly, |d| format!("{}-{:02}", d.iso_week().year(), d.iso_week().week())));
    keep.extend(group(monthly, |d| format!("{}-{:02}", d.year(), d.month())));
    keep.extend(complete.iter().max().map(|id| (*id).clone()));
    for (id, state) in runs {
        if *state == State::Damaged || (*state == State::Incomplete && (today() - id.date).num_days() < 2) {
            keep.insert(id.clone());
        }
    }
    keep
}

/// Writes the simulated runs: postgres as copies of the real run `real`, mongodb from a `Manifest`.
fn write_runs(root: &Path, real: &Path, pg: &Runs, mongo: &Runs, signing_key: &Path) {
    let signer = lifeboat::signing::ManifestSigner::load(signing_key).unwrap();
    // A complete run is a signed one, as the backup side writes it.
    let write_signed = |dir: &Path, bytes: Vec<u8>| {
        std::fs::write(dir.join(lifeboat::signing::SIGNATURE_NAME), signer.sign(&bytes).unwrap()).unwrap();
        std::fs::write(dir.join("manifest.json"), bytes).unwrap();
    };
    let real_manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(real.join("manifest.json")).unwrap()).unwrap();
    for (id, state) in pg {
        let dir = root.join(id.to_string()).join("postgres");
        if dir == real {
            continue;
        }
        std::fs::create_dir_all(&dir).unwrap();
        for file in std::fs::read_dir(real).unwrap() {
            let file = file.unwrap();
            if file.file_name() != "manifest.json" && file.file_name() != lifeboat::signing::SIGNATURE_NAME {
                std::fs::copy(file.path(), dir.join(file.file_name())).unwrap();
            }
        }
        match state {
            State::Complete => {
                let mut manifest = real_manifest.clone();
                manifest["id"] = id.to_string().into();
                write_signed(&dir, serde_json::to_vec_pretty(&manifest).unwrap());
            }
            State::Incomplete => {}
            State::Damaged => std::fs::write(dir.join("manifest.json"), b"{ not json").unwrap(),
        }
    }
    for (id, state) in mongo {
        let dir = root.join(id.to_string()).join("mongodb");
        std::fs::create_dir_all(&dir).unwrap();
        let data = format!("archive of run {id}").repeat(1 + id.date.ordinal() as usize % 7).into_bytes();
        std::fs::write(dir.join("db-hearth.archive.zst.age"), &data).unwrap();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            store: "mongodb".into(),
            kind: lifeboat::layout::manifest::StoreType::Dump,
            id: id.to_string(),
            started_at: format!("{}T01:00:00+01:00", id.date),
            finished_at: format!("{}T01:05:00+01:00", id.date),
            lifeboat_version: "0.1.0".into(),
            tool_versions: BTreeMap::new(),
            compression: "zstd-1".into(),
            encryption: "age-x25519".into(),
            files: vec![FileEntry {
                name: "db-hearth.archive.zst.age".into(),
                size: data.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(&data)),
                raw_size: data.len() as u64 * 3,
            }],
            count_unit: "documents".into(),
            counts: BTreeMap::new(),
            extra: serde_json::Map::new(),
            imported_from: None,
            signature: None,
        };
        let bytes = match state {
            State::Complete => {
                write_signed(&dir, serde_json::to_vec_pretty(&manifest).unwrap());
                continue;
            }
            State::Incomplete => continue,
            State::Damaged => b"{\"format_version\": 1, \"store\": ".to_vec(),
        };
        std::fs::write(dir.join("manifest.json"), bytes).unwrap();
    }
}

/// Every file under `root` with its size, by path.
fn tree(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                out.insert(entry.path(), u64::MAX);
                todo.push(entry.path());
            } else {
                out.insert(entry.path(), meta.len());
            }
        }
    }
    out
}

/// The run folders of `store` on disk.
fn on_disk(root: &Path, store: &str) -> BTreeSet<RunId> {
    std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| RunId::parse(&e.unwrap().file_name().to_string_lossy()))
        .filter(|id| root.join(id.to_string()).join(store).is_dir())
        .collect()
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

/// A server with a real postgres backup and `days` simulated days of two stores, and another
/// store's run that prune must not touch; returns the backup config and the simulated runs.
fn world(case: &Case, transport: &Transport, days: u32, retention: &str) -> (PathBuf, Runs, Runs) {
    seed_postgres(&case.db, 50);
    let stores = format!("{}  mongodb:\n    url: mongodb://127.0.0.1:27017\n    databases: [hearth]\n", case.postgres_block(""));
    let config = case.backup_config_with(transport, &stores, "backup.yaml");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + &format!("retention: {retention}\n")).unwrap();
    assert_ok(&lifeboat(&config, &["backup", "--store", "postgres"]));
    let real = case.server_path.join(today().to_string()).join("postgres");
    assert!(real.join("manifest.json").is_file(), "the real backup is today's first run");
    let (pg, mongo) = simulate(days);
    write_runs(&case.server_path, &real, &pg, &mongo, &case.signing_key);
    let other = case.server_path.join((today() - chrono::Duration::days(300)).to_string()).join("influxdb");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("manifest.json"), b"{}").unwrap();
    (config, pg, mongo)
}

#[test]
fn prune_over_sftp_keeps_exactly_the_policy_of_400_days() {
    let case = Case::new("prune_sftp");
    let policy = (7, 4, 6);
    let (config, pg, mongo) = world(&case, &Transport::Ssh, 400, "{ keep_daily: 7, keep_weekly: 4, keep_monthly: 6 }");
    let root = &case.server_path;
    let (keep_pg, keep_mongo) = (expected(&pg, policy), expected(&mongo, policy));
    assert!(keep_pg.len() >= 14 && keep_mongo.len() >= 14, "{keep_pg:?} {keep_mongo:?}");
    assert_eq!((on_disk(root, "postgres").len(), on_disk(root, "mongodb").len()), (pg.len(), mongo.len()));

    // --dry-run: the runs that would go and their bytes, and nothing removed.
    let before = tree(root);
    let out = lifeboat(&config, &["--json", "prune", "--dry-run"]);
    assert_ok(&out);
    assert_eq!(tree(root), before, "--dry-run changed the server");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("prune --json prints JSON");
    assert_eq!(report["dry_run"], true);
    let mut total = 0;
    for (store, runs, keep) in [("postgres", &pg, &keep_pg), ("mongodb", &mongo, &keep_mongo)] {
        let entry = report["stores"].as_array().unwrap().iter().find(|s| s["store"] == store).expect("the store is reported");
        let removed: BTreeSet<RunId> =
            entry["removed"].as_array().unwrap().iter().map(|r| RunId::parse(r["id"].as_str().unwrap()).unwrap()).collect();
        let all: BTreeSet<RunId> = runs.keys().cloned().collect();
        assert_eq!(removed, &all - keep, "{store}: the runs that would go");
        let bytes: u64 = removed.iter().map(|id| folder_bytes(&root.join(id.to_string()).join(store))).sum();
        assert!(bytes > 0);
        assert_eq!(entry["freed_bytes"], bytes, "{store}: the bytes it would free");
        total += bytes;
    }
    assert_eq!(report["freed_bytes"], total);
    let damaged =
        report["stores"][1]["kept"].as_array().unwrap().iter().find(|r| r["state"] == "damaged").expect("the damaged run is kept");
    assert!(damaged["reason"].as_str().unwrap().contains("damaged manifest"), "{damaged}");

    // The real prune, over SFTP: exactly the kept runs remain; emptied date folders are gone.
    let out = lifeboat(&config, &["prune"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("postgres: removed ") && text.contains(&format!("freed {}", lifeboat::progress::human_bytes(total))), "{text}");
    assert_eq!(on_disk(root, "postgres"), keep_pg);
    assert_eq!(on_disk(root, "mongodb"), keep_mongo);
    let old = (today() - chrono::Duration::days(300)).to_string();
    assert!(root.join(&old).join("influxdb/manifest.json").is_file(), "another store's run is left alone");
    for day in std::fs::read_dir(root).unwrap() {
        let day = day.unwrap().path();
        assert!(std::fs::read_dir(&day).unwrap().next().is_some() || day.ends_with("locks"), "{} was left empty", day.display());
    }
    assert!(!root.join("locks/postgres.lock").exists() && !root.join("locks/mongodb.lock").exists(), "locks released");

    // Nothing left to do, and the newest backup is still restorable.
    let again = lifeboat(&config, &["--json", "prune"]);
    assert_ok(&again);
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["freed_bytes"], 0);
    let restore = case.restore_config_with(&Transport::Ssh, &case.postgres_block(""), "restore.yaml");
    let newest =
        case.runs(&restore).into_iter().find(|r| r["store"] == "postgres" && r["id"] == today().to_string()).expect("today's backup");
    assert_eq!(newest["complete"], true);
    assert_ok(&lifeboat(&restore, &["verify", "--deep", "--from", &today().to_string()]));
}

#[test]
fn prune_on_the_backup_server_with_a_file_config_of_either_role() {
    let case = Case::new("prune_file");
    let (backup_config, pg, mongo) = world(&case, &Transport::File, 60, "{ keep_daily: 3, keep_weekly: 2, keep_monthly: 1 }");
    let root = &case.server_path;
    // The restore side's configuration, as on the backup server: a file:// url and no backup key.
    let stores = format!("{}  mongodb:\n    url: mongodb://127.0.0.1:27017\n", case.postgres_block(""));
    let config = case.restore_config_with(&Transport::File, &stores, "prune.yaml");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + "retention: { keep_daily: 3, keep_weekly: 2, keep_monthly: 1 }\n")
        .unwrap();

    assert_fails(&lifeboat(&config, &["prune", "--store", "nosuch"]), 2, "--store nosuch");
    assert_ok(&lifeboat(&config, &["prune", "--store", "mongodb"]));
    assert_eq!(on_disk(root, "mongodb"), expected(&mongo, (3, 2, 1)));
    let all_pg: BTreeSet<RunId> = pg.keys().cloned().collect();
    assert_eq!(on_disk(root, "postgres"), all_pg, "--store mongodb leaves postgres alone");
    assert_ok(&lifeboat(&backup_config, &["prune"]));
    assert_eq!(on_disk(root, "postgres"), expected(&pg, (3, 2, 1)));
}

/// A PostgreSQL 15 cluster of this test's own (archiving WAL through the pgBackRest configuration
/// Lifeboat renders into `conf`), stopped by pid when dropped.
struct OwnCluster {
    data: PathBuf,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl OwnCluster {
    fn start(base: &Path, port: u16, conf: &Path, stanza: &str) -> OwnCluster {
        let data = base.join("data");
        let as_postgres = |command: String| {
            let out = std::process::Command::new("su").args(["postgres", "-c", &command]).output().unwrap();
            assert!(out.status.success(), "{command}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        };
        std::fs::create_dir_all(base).unwrap();
        assert!(std::process::Command::new("chown").arg("postgres:postgres").arg(base).status().unwrap().success());
        as_postgres(format!("{PG_BIN}/initdb -D {} -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null", data.display()));
        let bin = state().join("pgbackrest-bin/pgbackrest");
        let settings = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{d}'\nfsync = off\nwal_level = replica\narchive_mode = on\n\
             archive_command = '{} --config={}/pgbackrest.conf --stanza={stanza} archive-push %p'\n",
            bin.display(),
            conf.display(),
            d = data.display()
        );
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str(&settings);
        std::fs::write(data.join("postgresql.conf"), text).unwrap();
        as_postgres(format!("{PG_BIN}/pg_ctl -D {d} -l {d}/../postgresql.log -w -t 60 start >/dev/null", d = data.display()));
        OwnCluster { data, port }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("su")
            .args(["postgres", "-c", &format!("{PG_BIN}/pg_ctl -D {} -m fast -w -t 60 stop", self.data.display())])
            .output();
    }
}

#[test]
fn prune_expires_pgbackrest_backups_by_its_retention() {
    ensure_server("sshd");
    ensure_server("pgbackrest-pg"); // installs pgBackRest where the postgres user can run it
    let case = Case::new("prune_pgbr");
    let base = state().join("prune-tests").join(format!("pgbr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let conf = base.join("lifeboat-pgbackrest");
    let cluster = OwnCluster::start(&base, PRUNE_PG_PORT, &conf, "prune_test");
    let passphrase = case.dir.path().join("pgbr-passphrase");
    std::fs::write(&passphrase, "prune test passphrase\n").unwrap();
    let block = |retention: &str| {
        format!(
            "stores:\n  postgres:\n    type: differential\n    url: postgres://postgres@127.0.0.1:{}/postgres\n    data_directory: {}\n    pgbackrest_dir: {}\n    pgbackrest: {}\n    stanza: prune_test\n    passphrase_file: {}\n{retention}",
            cluster.port,
            cluster.data.display(),
            conf.display(),
            state().join("pgbackrest-bin/pgbackrest").display(),
            passphrase.display()
        )
    };
    // Backups keep everything; prune's configuration keeps one full backup and one differential.
    let backup = case.backup_config_with(&Transport::Ssh, &block("    retention_full: 9\n    retention_diff: 9\n"), "backup.yaml");
    let prune = case.backup_config_with(&Transport::Ssh, &block("    retention_full: 1\n    retention_diff: 1\n"), "prune.yaml");
    for kind in ["full", "diff", "full", "diff"] {
        assert_ok(&lifeboat(&backup, &["backup", "--type", kind]));
    }
    let labels = |config: &Path| -> Vec<String> { case.runs(config).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect() };
    let all = labels(&backup);
    assert_eq!(all.len(), 4, "{all:?}");

    let out = lifeboat(&prune, &["--json", "prune", "--dry-run"]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let would: Vec<&str> =
        report["stores"][0]["repository_removed"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap()).collect();
    assert_eq!(would, [all[0].as_str(), all[1].as_str()], "the first full backup and its differential would go");
    let bytes: u64 = report["stores"][0]["repository_removed"].as_array().unwrap().iter().map(|b| b["bytes"].as_u64().unwrap()).sum();
    assert!(bytes > 0 && report["freed_bytes"] == bytes, "{report}");
    assert_eq!(labels(&backup), all, "--dry-run expired nothing");

    let out = lifeboat(&prune, &["prune"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("postgres: removed full backup {}", all[0])), "{text}");
    assert_eq!(labels(&backup), all[2..].to_vec(), "the newest full backup and its differential remain");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&base);
}
