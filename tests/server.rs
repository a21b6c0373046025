//! The one contract test every kind of backup server passes (SFTP to a real sshd, a local
//! folder): what `lifeboat::server::BackupServer` promises in its docs, checked. Only what every
//! kind, object stores included, can promise: create-if-absent, write once, read, list a prefix
//! a page at a time, stat, delete; parents implied, no folder made by hand.

mod common;

use common::*;
use futures::StreamExt;
use lifeboat::server::s3::S3Settings;
use lifeboat::server::ssh::SshSettings;
use lifeboat::server::{self, BackupServer, PAGE, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fresh bucket on the real MinIO, named after the test's folder, so that tests running at
/// once never share one. (s3s-fs 0.14.1 is no second implementation here: it checks
/// `If-None-Match` apart from the write, and two of eight claims made at once both won.)
fn s3_bucket(folder: &std::path::Path) -> String {
    let first = folder.strip_prefix("/var/tmp/lifeboat-test/servers").unwrap_or(folder).components().next();
    let name: String = first.map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
    let bucket: String =
        format!("lb-{name}").chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    // The test helper runs a runtime of its own: off this test's runtime, on a thread.
    let made = bucket.clone();
    std::thread::spawn(move || common::s3::S3::minio().fresh_bucket(&made)).join().unwrap();
    bucket
}

fn config(transport: &str, path: &std::path::Path) -> ServerConfig {
    match transport {
        "ssh" => {
            ensure_server("sshd");
            let s = state().join("sshd");
            ServerConfig {
                url: format!("ssh://root@127.0.0.1:{SSH_PORT}{}", path.display()),
                timeout: None,
                ssh: SshSettings { ssh_key_file: Some(s.join("client_key")), known_hosts_file: Some(s.join("known_hosts")) },
                s3: Default::default(),
            }
        }
        "s3" => {
            let port = common::s3::MINIO_PORT;
            ServerConfig {
                // The path's last parts as the prefix: the same layout under it as in a folder.
                url: format!("s3://{}/{}", s3_bucket(path), path.strip_prefix("/var/tmp/lifeboat-test/servers").unwrap_or(path).display()),
                timeout: None,
                ssh: Default::default(),
                s3: S3Settings {
                    endpoint: Some(common::s3::s3_endpoint(port)),
                    region: None,
                    access_key_file: Some(common::s3::s3_key_file("s3-access-key")),
                    secret_key_file: Some(common::s3::s3_key_file("s3-secret-key")),
                    path_style: None,
                },
            }
        }
        _ => ServerConfig::folder(path),
    }
}

async fn write(server: &dyn BackupServer, path: &str, data: &[u8]) {
    let mut w = server.create(path).await.unwrap();
    w.write_all(data).await.unwrap();
    w.shutdown().await.unwrap();
}

async fn read(server: &dyn BackupServer, path: &str) -> Vec<u8> {
    let mut r = server.open(path).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    out
}

async fn contract(transport: &str) {
    let root = std::path::PathBuf::from("/var/tmp/lifeboat-test/servers").join(format!("contract-{transport}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // The root folder (and its parents) is created on connect.
    let server = server::connect(&config(transport, &root.join("nested/root"))).await.unwrap();
    let s = server.as_ref();
    let folders = !transport.starts_with("s3");
    assert!(!folders || root.join("nested/root").is_dir());

    // A missing prefix lists as empty, and a missing object has no size.
    assert!(s.list("nothing-here").await.unwrap().is_empty());
    assert_eq!(s.stat("nothing-here/x").await.unwrap(), None);

    // Create-if-absent is the atomic claim: the first writes, the second finds it and changes
    // nothing; parents are implied. Of eight claims of one name at once, exactly one wins.
    assert!(s.create_if_absent("day/store/run.claim", b"first").await.unwrap());
    assert!(!s.create_if_absent("day/store/run.claim", b"second").await.unwrap(), "a second claim of the same name won");
    assert_eq!(s.read_small("day/store/run.claim", 100).await.unwrap(), b"first");
    let claims = (0..8).map(|i| async move { s.create_if_absent("race/claim", format!("claim {i}").as_bytes()).await });
    let won: Vec<bool> = futures::future::join_all(claims).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "claims at once: {won:?}");
    let winner = won.iter().position(|w| *w).unwrap();
    assert_eq!(s.read_small("race/claim", 100).await.unwrap(), format!("claim {winner}").as_bytes());

    // Several objects written at once into one new prefix (the MinIO mirror uploads four at a
    // time into a new run's folder): each finds or makes the folder, none fails.
    // Started a little apart, so that some find the folder made between their first try and
    // their look at it.
    for round in 0..10 {
        let writes = (0..8u64).map(|i| async move {
            tokio::time::sleep(std::time::Duration::from_micros(i * 150 * round)).await;
            write(s, &format!("fresh/{round}/{i}"), b"x").await
        });
        futures::future::join_all(writes).await;
        assert_eq!(s.list(&format!("fresh/{round}")).await.unwrap().len(), 8);
    }

    // Write, read back byte for byte (larger than one SFTP packet), list with sizes.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    write(s, "day/store/big.bin", &big).await;
    assert_eq!(read(s, "day/store/big.bin").await, big);
    // Reads go out several at a time in fixed chunks (240 KiB over SFTP): every size around
    // the chunk's edges, and an empty file, reads back exactly, ending where the file ends.
    let chunk = 240 * 1024;
    for size in [0, 1, chunk - 1, chunk, chunk + 1, 9 * chunk - 1, 9 * chunk, 9 * chunk + 7] {
        let name = format!("edges/{size}.bin");
        write(s, &name, &big[..size]).await;
        assert_eq!(read(s, &name).await, &big[..size], "a file of {size} bytes");
    }
    // Writes go out as requests of 255 KiB over SFTP, eight in flight: sizes around a request's
    // edge and around eight of them, written whole or in small pieces, store exactly.
    let request = 255 * 1024;
    for size in [request - 1, request, request + 1, 8 * request, 8 * request + 1, 11 * request + 5] {
        let name = format!("edges/w{size}.bin");
        write(s, &name, &big[..size]).await;
        assert_eq!(read(s, &name).await, &big[..size], "a file of {size} bytes written whole");
        let mut w = s.create(&format!("{name}.pieces")).await.unwrap();
        for piece in big[..size].chunks(1000) {
            w.write_all(piece).await.unwrap();
        }
        w.shutdown().await.unwrap();
        assert_eq!(read(s, &format!("{name}.pieces")).await, &big[..size], "a file of {size} bytes written in pieces");
    }
    // Larger than one part of an object store's multipart upload (8 MiB), written in pieces.
    let large: Vec<u8> = big.iter().cycle().take(21 << 20).copied().collect();
    let mut w = s.create("day/large.bin").await.unwrap();
    for piece in large.chunks(1 << 20) {
        w.write_all(piece).await.unwrap();
    }
    w.shutdown().await.unwrap();
    assert_eq!(read(s, "day/large.bin").await, large, "a file of three parts");
    assert_eq!(s.stat("day/large.bin").await.unwrap(), Some(large.len() as u64));
    s.make_durable("day/store/big.bin").await.unwrap();
    write(s, "day/store/deep/inner", b"x").await;
    // A listing holds the objects with their sizes and the prefixes under it (a prefix has no size).
    let listed = s.list("day/store").await.unwrap();
    let names: Vec<(&str, bool, u64)> = listed.iter().map(|e| (e.name.as_str(), e.is_dir, e.size)).collect();
    assert_eq!(names, vec![("big.bin", false, 3_000_000), ("deep", true, 0), ("run.claim", false, 5)]);
    assert_eq!(s.stat("day/store/big.bin").await.unwrap(), Some(3_000_000));
    assert_eq!(s.stat("day/store/deep").await.unwrap(), None, "a prefix is not an object");

    // Listings come a page at a time, in name order, and the pages together are the whole.
    let many = PAGE + 7;
    let names: Vec<String> = (0..many).map(|i| format!("{i:05}")).collect();
    let creates = names.iter().map(|n| async move { s.create_if_absent(&format!("many/{n}"), b"").await });
    for created in futures::stream::iter(creates).buffer_unordered(16).collect::<Vec<_>>().await {
        assert!(created.unwrap());
    }
    let first = s.list_page("many", None).await.unwrap();
    assert_eq!(first.entries.len(), PAGE);
    let next = first.next.clone().expect("a second page");
    let second = s.list_page("many", Some(&next)).await.unwrap();
    assert_eq!((second.entries.len(), second.next), (7, None));
    let paged: Vec<String> = first.entries.iter().chain(&second.entries).map(|e| e.name.clone()).collect();
    assert_eq!(paged, names);
    assert_eq!(s.list("many").await.unwrap().len(), many);

    // Nothing stored is ever replaced: a second create of the same name fails, and the first
    // content stays (an append-only server key depends on the client never needing this).
    s.write_new("day/store/manifest.json", b"one").await.unwrap();
    let again = s.write_new("day/store/manifest.json", b"two").await;
    assert!(again.is_err(), "a file was replaced");
    assert_eq!(s.read_small("day/store/manifest.json", 3).await.unwrap(), b"one");
    // A small file is read within a bound, whatever its listed size said.
    let too_big = s.read_small("day/store/manifest.json", 2).await.unwrap_err().to_string();
    assert!(too_big.contains("larger than 2 bytes"), "{too_big}");
    assert!(s.create("day/store/big.bin").await.is_err(), "create replaced a finished file");
    assert_eq!(read(s, "day/store/big.bin").await.len(), big.len());

    // Opening a missing file is an error naming the server.
    let missing = match s.open("day/store/missing").await {
        Ok(_) => panic!("opening a missing file must fail"),
        Err(e) => e.to_string(),
    };
    assert!(missing.contains("missing") && missing.contains(&s.describe()), "{missing}");

    // Delete removes one object; a missing one is no error. A prefix whose objects are all gone
    // lists as absent; one that received an object meanwhile is left standing.
    s.delete("day/store/deep/inner").await.unwrap();
    s.delete("day/store/deep/inner").await.unwrap();
    assert_eq!(s.stat("day/store/deep/inner").await.unwrap(), None);
    s.remove_empty_prefix("day/store/deep").await.unwrap();
    s.remove_empty_prefix("day/store").await.unwrap();
    assert!(s.exists("day/store/big.bin").await.unwrap(), "a prefix holding objects was removed");
    s.delete_prefix("day").await.unwrap();
    assert!(s.list("").await.unwrap().iter().all(|e| e.name != "day"), "a prefix without objects still lists");
    assert!(!folders || !root.join("nested/root/day").exists());
    s.delete_prefix("many").await.unwrap();
    assert!(s.list("many").await.unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_server_meets_the_contract() {
    contract("ssh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_folder_meets_the_contract() {
    contract("file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_store_meets_the_contract() {
    contract("s3").await;
}

/// An object store's upload that is cut (the writer dropped before it was shut down, as when a
/// dump fails) leaves no object and no unfinished multipart upload behind, small or large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_upload_cut_part_way_leaves_nothing() {
    let root = std::path::PathBuf::from("/var/tmp/lifeboat-test/servers").join(format!("cut-{}", std::process::id()));
    let config = config("s3", &root);
    let bucket = config.url.trim_start_matches("s3://").split('/').next().unwrap().to_string();
    let server = server::connect(&config).await.unwrap();
    for (name, size) in [("small", 100_000usize), ("large", 20 << 20)] {
        let mut w = server.create(name).await.unwrap();
        w.write_all(&vec![7u8; size]).await.unwrap();
        drop(w);
    }
    // Aborting is the upload task's last step, after the writer is gone: give it a moment.
    let pending = |bucket: String| std::thread::spawn(move || common::s3::S3::minio().pending_uploads(&bucket)).join().unwrap();
    for _ in 0..50 {
        if pending(bucket.clone()) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending(bucket.clone()), 0, "an unfinished multipart upload was left");
    for name in ["small", "large"] {
        assert_eq!(server.stat(name).await.unwrap(), None, "a cut upload of {name} became an object");
    }
}

/// Jobs started together (a backup and a second one that will wait for its lock) all connect to a
/// backup folder that does not exist yet: each creates it or finds it created, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_connecting_together_all_create_or_find_a_new_backup_folder() {
    for transport in ["ssh", "file"] {
        for round in 0..5 {
            let root = std::path::PathBuf::from("/var/tmp/lifeboat-test/servers")
                .join(format!("connect_together_{transport}_{round}_{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let config = config(transport, &root.join("a/b/c"));
            let connects = (0..6).map(|_| server::connect(&config));
            for (i, connected) in futures::future::join_all(connects).await.into_iter().enumerate() {
                assert!(connected.is_ok(), "{transport}: connection {i} of 6 failed: {}", connected.err().unwrap());
            }
            assert!(root.join("a/b/c").is_dir());
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}
