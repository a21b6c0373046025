//! A backup server that was tampered with: real backups of MongoDB (FerretDB), MinIO and
//! InfluxDB whose stored archive is decrypted, rewritten with one hostile entry, encrypted again
//! and described exactly by a rewritten manifest, so that every download check passes and only
//! the archive's content is hostile. Each restore must fail with one `error:` line naming the
//! entry, leave the target as it was (a marker written after the backup survives), and write
//! nothing where the entry points. The untouched archive then restores, which shows the forging
//! itself changed nothing else.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::forge::{Stored, unique_target};
use common::influx::{http, influx, rpc, serial, wait_for_rpc, write};
use common::mongo::{MONGO_PORT, block, mongo};
use common::s3::{MINIO_PORT, S3, minio_store_block};
use common::*;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use sha2::{Digest, Sha256};

/// Restores `config`, which must fail with one error line holding `needle`.
#[track_caller]
fn refused(config: &Path, needle: &str) -> String {
    assert_fails(&lifeboat(config, &["restore", "--yes"]), 1, needle)
}

// ---- MongoDB ----------------------------------------------------------------------------------

/// Every collection with its documents, in `_id` order.
fn mongo_fingerprint(db: &str) -> String {
    block(async {
        let database = mongo().database(db);
        let mut names = database.list_collection_names().await.unwrap();
        names.sort();
        let mut hash = Sha256::new();
        for name in &names {
            let docs: Vec<Document> =
                database.collection::<Document>(name).find(doc! {}).sort(doc! { "_id": 1 }).await.unwrap().try_collect().await.unwrap();
            hash.update(format!("{name} {}\n", docs.len()));
            for d in docs {
                hash.update(Bson::Document(d).into_canonical_extjson().to_string());
            }
        }
        format!("{names:?} {}", hex::encode(hash.finalize()))
    })
}

fn bson_bytes(d: &Document) -> Vec<u8> {
    let mut out = Vec::new();
    d.to_writer(&mut out).unwrap();
    out
}

const MAGIC: u32 = 0x8199_e26d;
const TERMINATOR: [u8; 4] = [0xff; 4];

/// A mongodump archive whose prelude lists `namespaces`, each with no documents.
fn mongo_archive(version: &str, namespaces: &[(&str, &str)]) -> Vec<u8> {
    let mut out = MAGIC.to_le_bytes().to_vec();
    out.extend(bson_bytes(&doc! { "concurrent_collections": 1, "version": version, "server_version": "7.0.0", "tool_version": "forged" }));
    for (db, collection) in namespaces {
        out.extend(bson_bytes(&doc! { "db": *db, "collection": *collection, "metadata": "", "size": 0, "type": "collection" }));
    }
    out.extend(TERMINATOR);
    for (db, collection) in namespaces {
        for eof in [false, true] {
            out.extend(bson_bytes(&doc! { "db": *db, "collection": *collection, "EOF": eof, "CRC": 0i64 }));
            out.extend(TERMINATOR);
        }
    }
    out
}

fn mongo_hostile(name: &str, transport: Transport) {
    let mut case = Case::new(&format!("hostile_{name}"));
    case.db = format!("lb_hostile_{name}");
    let db = mongo().database(&case.db);
    block(db.drop()).unwrap();
    let people: Vec<Document> = (0..50).map(|i| doc! { "_id": i, "name": format!("Zoë {i}"), "nested": { "a": [i, 2] } }).collect();
    block(db.collection::<Document>("people").insert_many(people)).unwrap();
    let stores = format!("stores:\n  mongodb:\n    url: mongodb://127.0.0.1:{MONGO_PORT}/\n    databases: [{}]\n", case.db);
    let backup = case.backup_config_with(&transport, &stores, "backup.yaml");
    let restore = case.restore_config_with(&transport, &stores, "restore.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let backed_up = mongo_fingerprint(&case.db);
    block(db.collection::<Document>("people").insert_one(doc! { "_id": "marker", "written": "after the backup" })).unwrap();
    let marked = mongo_fingerprint(&case.db);

    let stored = Stored::find(&case, &backup, "mongodb", |n| n.ends_with(".archive.zst.age"));
    let original = stored.plain(&case);
    let own = case.db.as_str();
    // A block of a namespace of another database, after every real one.
    let mut foreign_block = original.clone();
    foreign_block.extend(bson_bytes(&doc! { "db": "admin", "collection": "people", "EOF": false, "CRC": 0i64 }));
    foreign_block.extend(bson_bytes(&doc! { "_id": 1 }));
    foreign_block.extend(TERMINATOR);
    // A length of 2 GiB after every real block.
    let mut oversize = original.clone();
    oversize.extend(0x7fff_ffffi32.to_le_bytes());
    let cases: Vec<(Vec<u8>, String)> = vec![
        (mongo_archive("0.1", &[("lb_hostile_other", "people")]), format!("holds lb_hostile_other.people, which is not in database {own}")),
        (mongo_archive("0.1", &[(own, "system.users")]), format!("`{own}.system.users`, which is a system collection")),
        (mongo_archive("0.1", &[(own, "a$b")]), format!("`{own}.a$b`, which is not a valid collection name")),
        (mongo_archive("0.2", &[(own, "people")]), "format version `0.2`, this Lifeboat reads 0.1".into()),
        (foreign_block, "data for admin.people, which its prelude does not list".into()),
        (oversize, "2147483647 is neither a BSON document length".into()),
    ];
    for (plain, needle) in cases {
        stored.replace(&case, &plain);
        let line = refused(&restore, &needle);
        assert!(line.contains("nothing was restored"), "{line}");
        assert_eq!(mongo_fingerprint(&case.db), marked, "the database is untouched after: {line}");
    }
    stored.replace(&case, &original);
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(mongo_fingerprint(&case.db), backed_up);
    block(db.drop()).unwrap();
}

#[test]
fn mongodb_hostile_archives_are_refused_before_anything_is_dropped() {
    mongo_hostile("file", Transport::File);
}

#[test]
fn mongodb_hostile_archives_are_refused_over_ssh() {
    mongo_hostile("ssh", Transport::Ssh);
}

#[test]
fn mongodb_backup_naming_a_database_outside_the_restore_config_is_refused() {
    let mut case = Case::new("hostile_mongo_db");
    case.db = "lb_hostile_mongo_db".into();
    let db = mongo().database(&case.db);
    block(db.drop()).unwrap();
    block(db.collection::<Document>("people").insert_one(doc! { "_id": 1 })).unwrap();
    let stores = format!("stores:\n  mongodb:\n    url: mongodb://127.0.0.1:{MONGO_PORT}/\n    databases: [{}]\n", case.db);
    let backup = case.backup_config_with(&Transport::File, &stores, "backup.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    // The manifest now claims the archive is the `admin` database's.
    let stored = Stored::find(&case, &backup, "mongodb", |n| n.ends_with(".archive.zst.age"));
    let path = stored.run_dir.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["extra"]["databases"] = serde_json::json!({ "admin": stored.name });
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    case.sign_manifest(&stored.run_dir);
    let marked = mongo_fingerprint("admin");
    refused(
        &case.restore_config_with(&Transport::File, &stores, "restore.yaml"),
        "the backup holds database `admin`, which stores.mongodb.databases does not list",
    );
    let all = stores.replace(&format!("    databases: [{}]\n", case.db), "");
    refused(&case.restore_config_with(&Transport::File, &all, "all.yaml"), "database `admin`");
    assert_eq!(mongo_fingerprint("admin"), marked);
    block(db.drop()).unwrap();
}

// ---- MinIO ------------------------------------------------------------------------------------

/// One `"<len> <key>=<value>\n"` pax record; `len` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + rest.to_string().len();
    if len.to_string().len() + rest != len {
        len += 1;
    }
    out.extend(format!("{len} {key}=").as_bytes());
    out.extend(value);
    out.push(b'\n');
}

/// A tar written entry by entry as Lifeboat writes its MinIO archive: a pax header, then a
/// ustar header whose fields are taken as given (no path checks), then the body.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(&mut self, path: &str, records: &[(&str, &str)], kind: tar::EntryType, size: u64, link: &str, body: &[u8]) -> &mut Tar {
        let mut pax = Vec::new();
        pax_record(&mut pax, "path", path.as_bytes());
        for (k, v) in records {
            pax_record(&mut pax, k, v.as_bytes());
        }
        self.header("././@PaxHeader", tar::EntryType::XHeader, pax.len() as u64, "");
        self.body(&pax);
        self.header(path, kind, size, link);
        self.body(body)
    }

    fn header(&mut self, path: &str, kind: tar::EntryType, size: u64, link: &str) {
        let mut h = tar::Header::new_ustar();
        let name = &path.as_bytes()[..path.len().min(100)];
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        self.0.extend(h.as_bytes());
    }

    fn body(&mut self, body: &[u8]) -> &mut Tar {
        self.0.extend(body);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        self.0.extend([0u8; 1024]);
        std::mem::take(&mut self.0)
    }

    /// The archive header entry, then the bucket's directory entry.
    fn start(format: u32, buckets: &[&str]) -> Tar {
        let listed: BTreeMap<&str, serde_json::Value> =
            buckets.iter().map(|b| (*b, serde_json::json!({"policy": null, "versioning": null}))).collect();
        let header = serde_json::to_vec(&serde_json::json!({ "format": format, "buckets": listed })).unwrap();
        let mut tar = Tar::default();
        tar.entry("_lifeboat-minio.json", &[], tar::EntryType::Regular, header.len() as u64, "", &header);
        for b in buckets {
            tar.entry(&format!("{b}/"), &[("LIFEBOAT.bucket", b)], tar::EntryType::Directory, 0, "", b"");
        }
        tar
    }
}

#[test]
fn minio_hostile_archives_are_refused_before_any_bucket_is_touched() {
    let s3 = S3::minio();
    let case = Case::new("hostile_minio");
    let bucket = "lb-hostile-minio";
    s3.fresh_bucket(bucket);
    s3.put(bucket, "plain.txt", b"hello", None, &[]);
    s3.put(bucket, "deep/a/b.json", b"{}", None, &[]);
    let stores = minio_store_block(&[bucket], MINIO_PORT, "");
    let backup = case.backup_config_with(&Transport::File, &stores, "backup.yaml");
    let restore = case.restore_config_with(&Transport::File, &stores, "restore.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let backed_up = s3.fingerprint(bucket);
    s3.put(bucket, "marker", b"written after the backup", None, &[]);
    let marked = s3.fingerprint(bucket);
    let stored = Stored::find(&case, &backup, "minio", |n| n == "objects.tar.zst.age");
    let original = stored.plain(&case);

    let link_target = unique_target(&case, "l");
    let abs_target = unique_target(&case, "a");
    let regular = tar::EntryType::Regular;
    let cases: Vec<(Vec<u8>, String, Option<&PathBuf>)> = vec![
        (
            Tar::start(1, &[bucket])
                .entry(
                    "lb-hostile-elsewhere/x",
                    &[("LIFEBOAT.bucket", "lb-hostile-elsewhere"), ("LIFEBOAT.key", "x")],
                    regular,
                    1,
                    "",
                    b"x",
                )
                .finish(),
            "holds bucket `lb-hostile-elsewhere` (entry `lb-hostile-elsewhere/x`), which its header does not list".into(),
            None,
        ),
        (
            Tar::start(1, &[bucket])
                .entry(
                    &format!("{bucket}/link"),
                    &[("LIFEBOAT.bucket", bucket), ("LIFEBOAT.key", "link")],
                    tar::EntryType::Symlink,
                    0,
                    &link_target.display().to_string(),
                    b"",
                )
                .finish(),
            format!("entry Lifeboat did not write (`{bucket}/link`, a symbolic link)"),
            Some(&link_target),
        ),
        (
            Tar::start(1, &[bucket])
                .entry(&abs_target.display().to_string(), &[("LIFEBOAT.bucket", bucket), ("LIFEBOAT.key", "x")], regular, 1, "", b"x")
                .finish(),
            format!("entry `{}`, whose path is not its bucket and key", abs_target.display()),
            Some(&abs_target),
        ),
        (
            Tar::start(1, &[bucket]).entry("../../x", &[("LIFEBOAT.bucket", bucket), ("LIFEBOAT.key", "x")], regular, 1, "", b"x").finish(),
            "entry `../../x`, whose path is not its bucket and key".into(),
            None,
        ),
        (
            Tar::start(1, &[bucket])
                .entry(&format!("{bucket}/a/../../../x"), &[("LIFEBOAT.bucket", bucket), ("LIFEBOAT.key", "x")], regular, 1, "", b"x")
                .finish(),
            format!("entry `{bucket}/a/../../../x`, whose path"),
            None,
        ),
        (
            Tar::start(1, &[bucket])
                .entry(&format!("{bucket}/huge"), &[("LIFEBOAT.bucket", bucket), ("LIFEBOAT.key", "huge")], regular, 6 << 40, "", b"")
                .finish(),
            format!("gives object `{bucket}/huge` a size of {} bytes", 6u64 << 40),
            None,
        ),
        (Tar::start(2, &[bucket]).finish(), "has archive format 2, this Lifeboat reads format 1".into(), None),
    ];
    for (plain, needle, target) in cases {
        stored.replace(&case, &plain);
        let line = refused(&restore, &needle);
        assert!(line.contains("nothing"), "{line}");
        assert_eq!(s3.fingerprint(bucket), marked, "the bucket is untouched after: {line}");
        if let Some(target) = target {
            assert!(!target.exists() && target.symlink_metadata().is_err(), "{} was written", target.display());
        }
    }

    // A bucket the restore side does not list, in both the manifest and the archive.
    let other = "lb-hostile-minio-other";
    let mut forged = Tar::start(1, &[bucket, other]);
    stored.replace(&case, &forged.finish());
    let path = stored.run_dir.join("manifest.json");
    let manifest_text = std::fs::read(&path).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest_text).unwrap();
    manifest["extra"]["buckets"][other] = serde_json::json!({});
    manifest["counts"][other] = serde_json::json!({"objects": 0, "bytes": 0});
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    case.sign_manifest(&stored.run_dir);
    refused(&restore, &format!("the backup holds bucket {other}, which stores.minio.buckets does not list"));
    assert_eq!(s3.fingerprint(bucket), marked);
    std::fs::write(&path, manifest_text).unwrap();

    stored.replace(&case, &original);
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(s3.fingerprint(bucket), backed_up);
    for t in [&link_target, &abs_target] {
        let _ = std::fs::remove_dir_all(t.parent().unwrap());
    }
}

// ---- InfluxDB ---------------------------------------------------------------------------------

fn influx_fingerprint(db: &str) -> String {
    let rps = influx(None, &format!("SHOW RETENTION POLICIES ON \"{db}\""));
    let data = influx(Some(db), &format!("SELECT * FROM \"{db}\".\"autogen\"./.*/ GROUP BY *"));
    format!("{}{}", rps["results"][0]["series"], data["results"][0]["series"])
}

/// `original` (a tar of regular files) with `extra` raw entries after its files: each a header
/// whose name, type and size are written as given, and its body.
fn influx_tar(original: &[u8], extra: &[(&str, tar::EntryType, &str, u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(original);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
        out.extend(entry.header().as_bytes());
        out.extend(&body);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    for (name, kind, link, size, body) in extra {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(*size);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend(h.as_bytes());
        out.extend(*body);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend([0u8; 1024]);
    out
}

#[test]
fn influxdb_hostile_archives_never_write_outside_the_work_folder() {
    let _serial = serial();
    ensure_server("influxdb");
    wait_for_rpc(&rpc());
    let case = Case::new("hostile_influx");
    let db = "t_hostile_influx";
    influx(None, &format!("DROP DATABASE \"{db}\""));
    influx(None, &format!("CREATE DATABASE \"{db}\""));
    write(
        db,
        None,
        &(0..100).map(|i| format!("registrations,district=Ibombo count={i}i {}\n", 1_704_067_200 + i * 3600)).collect::<String>(),
    );
    let work = case.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let stores = format!(
        "work_dir: {}\nstores:\n  influxdb:\n    host: \"{}\"\n    http_url: {}\n    databases: [{db}]\n",
        work.display(),
        rpc(),
        http()
    );
    let backup = case.backup_config_with(&Transport::File, &stores, "backup.yaml");
    let restore = case.restore_config_with(&Transport::File, &stores, "restore.yaml");
    assert_ok(&lifeboat(&backup, &["backup"]));
    let backed_up = influx_fingerprint(db);
    write(db, None, "registrations,district=Marker count=1i 1704067201\n");
    let marked = influx_fingerprint(db);
    let stored = Stored::find(&case, &backup, "influxdb", |n| n.ends_with(".tar.zst.age"));
    let original = stored.plain(&case);

    let regular = tar::EntryType::Regular;
    let targets: Vec<PathBuf> = ["a", "u", "m", "l", "h"].iter().map(|l| unique_target(&case, l)).collect();
    let shown = |i: usize| targets[i].display().to_string();
    // Enough `..` to reach the root from any work folder, then the target's absolute path.
    let up = |i: usize| format!("{}{}", "../".repeat(12), shown(i).trim_start_matches('/'));
    let (abs, dotdot, mid) = (shown(0), up(1), format!("a/{}", up(2)));
    let (link_target, hard_target) = (shown(3), shown(4));
    let cases: Vec<(Vec<u8>, String)> = vec![
        (influx_tar(&original, &[(&abs, regular, "", 1, b"x")]), format!("holds entry `{abs}`, which is not a plain file name")),
        (influx_tar(&original, &[(&dotdot, regular, "", 1, b"x")]), format!("holds entry `{dotdot}`, which is not a plain file name")),
        (influx_tar(&original, &[(&mid, regular, "", 1, b"x")]), format!("holds entry `{mid}`")),
        (influx_tar(&original, &[("a//b", regular, "", 1, b"x")]), "holds entry `a//b`, which is not a plain file name".into()),
        (
            // The classic escape: a link out of the folder, then a file written through it.
            influx_tar(&original, &[("link", tar::EntryType::Symlink, &link_target, 0, b""), ("link", regular, "", 1, b"x")]),
            "holds an entry Lifeboat did not write (`link`, a symbolic link)".into(),
        ),
        (influx_tar(&original, &[("hard", tar::EntryType::Link, &hard_target, 0, b"")]), "(`hard`, a hard link)".into()),
        (influx_tar(&original, &[("big.s9.tar.gz", regular, "", 1 << 40, b"")]), "(entry `big.s9.tar.gz`)".into()),
    ];
    for (plain, needle) in cases {
        stored.replace(&case, &plain);
        let line = refused(&restore, &needle);
        assert!(line.contains("nothing was changed"), "{line}");
        assert_eq!(influx_fingerprint(db), marked, "the database is untouched after: {line}");
        for t in &targets {
            assert!(t.symlink_metadata().is_err(), "{} was written after: {line}", t.display());
        }
        assert!(std::fs::read_dir(&work).unwrap().next().is_none(), "the work folder is cleaned up after: {line}");
    }

    stored.replace(&case, &original);
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    assert_eq!(influx_fingerprint(db), backed_up);
    influx(None, &format!("DROP DATABASE \"{db}\""));
    for t in &targets {
        let _ = std::fs::remove_dir_all(t.parent().unwrap());
    }
}
