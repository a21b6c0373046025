//! The `influxd` tool: its version, `backup -portable` (watching its stderr for the retries that
//! mean the server went away) and `restore -portable`, and the portable backup folder it writes:
//! checked before a restore, streamed as a tar after a backup.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use super::{InfluxDb, err};
use crate::error::{Error, Result};
use crate::external;
use crate::layout::check_file_name;
use crate::pipeline::bridge::{PipeReader, spawn_blocking_writer};
use crate::stores::stderr_tail::StderrTail;

/// The contents of the `<timestamp>.manifest` file of a portable backup (the fields used here).
#[derive(Debug, Deserialize)]
pub(super) struct PortableManifest {
    meta: Option<PortableMeta>,
    /// `null` for a database without shards.
    pub files: Option<Vec<PortableFile>>,
}

#[derive(Debug, Deserialize)]
struct PortableMeta {
    #[serde(rename = "fileName")]
    file_name: String,
}

/// One shard's `.tar.gz`.
#[derive(Debug, Deserialize)]
pub(super) struct PortableFile {
    database: String,
    #[serde(default)]
    pub policy: String,
    #[serde(rename = "fileName")]
    pub file_name: String,
}

/// Reads the one `.manifest` file of the portable backup in `dir`; the error says why not.
pub(super) fn portable_manifest(dir: &Path) -> std::result::Result<PortableManifest, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read the folder: {e}"))?;
    let manifests: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "manifest")).collect();
    if manifests.len() != 1 {
        return Err(format!("{} .manifest files instead of one", manifests.len()));
    }
    let text = std::fs::read(&manifests[0]).map_err(|e| format!("cannot read {}: {e}", manifests[0].display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("unreadable manifest: {e}"))
}

/// Checks that `dir` holds an influxd portable backup of `db` and returns how many shard files it has.
pub(super) fn check_portable_backup(dir: &Path, db: &str, archive: &str) -> Result<usize> {
    let not_it = |why: String| {
        err(format!(
            "archive {archive} is not an influxd portable backup of database {db} ({why}); nothing was changed; restore another backup with --from ID"
        ))
    };
    let manifest = portable_manifest(dir).map_err(not_it)?;
    let files = manifest.files.unwrap_or_default();
    // influxd opens these names inside the folder: each must be one plain file name.
    let names = manifest.meta.iter().map(|m| &m.file_name).chain(files.iter().map(|f| &f.file_name));
    if let Some(bad) = names.into_iter().find(|n| check_file_name(n).is_err()) {
        return Err(not_it(format!("its manifest names a file `{}`, which is not a plain file name", bad.escape_debug())));
    }
    for f in &files {
        if f.database != db {
            return Err(not_it(format!("it holds shards of database {}", f.database)));
        }
        if !dir.join(&f.file_name).is_file() {
            return Err(not_it(format!("shard file {} is missing", f.file_name)));
        }
    }
    Ok(files.len())
}

/// Streams the files of `dir` (flat, as influxd writes them, sorted by name) as a tar built on a
/// blocking thread. A failure on that thread reaches the reader as an error, never as a clean end.
pub(super) fn tar_folder(dir: PathBuf) -> (PipeReader, tokio::task::JoinHandle<io::Result<()>>) {
    spawn_blocking_writer(move |w| write_tar(&dir, w).map_err(|e| io::Error::new(e.kind(), format!("archiving the influxd backup: {e}"))))
}

/// The flat folder `dir` as a tar into `out`, its files sorted by name: how a Lifeboat backup
/// stores a portable backup (streamed after a backup, or into a file for an adopted one).
pub(super) fn write_tar<W: Write>(dir: &Path, out: W) -> io::Result<()> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<io::Result<_>>()?;
    names.sort();
    let mut tar = tar::Builder::new(out);
    for name in &names {
        tar.append_path_with_name(dir.join(name), name)?;
    }
    tar.into_inner()?.flush()
}

/// Keeps the last lines of influxd's stderr and reports its "retrying" lines.
fn watch_stderr(stderr: tokio::process::ChildStderr) -> (StderrTail, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tail = StderrTail::watch(stderr, move |line| {
        tracing::debug!("influxd: {line}");
        if line.contains("failed") && line.contains("retrying") {
            let _ = tx.send(());
        }
    });
    (tail, rx)
}

impl InfluxDb {
    fn tool(&self) -> tokio::process::Command {
        let program = match &self.cfg.bin_dir {
            Some(dir) => dir.join(external::INFLUXD.name),
            None => PathBuf::from(external::INFLUXD.name),
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.kill_on_drop(true).stdin(Stdio::null());
        cmd
    }

    fn tool_missing(e: io::Error) -> Error {
        err(format!("cannot run influxd ({e}): install InfluxDB 1.x (the influxd binary) or set stores.influxdb.bin_dir"))
    }

    pub(super) async fn tool_version(&self) -> Result<String> {
        let out = self.tool().arg("version").output().await.map_err(Self::tool_missing)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Whether InfluxDB still answers on both its HTTP API and its RPC port.
    pub(super) async fn probe(&self) -> std::result::Result<(), String> {
        match self.ping().await {
            Err(Error::Store { message, .. }) => return Err(message),
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
        let connect = tokio::net::TcpStream::connect(self.cfg.host.as_str());
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("its RPC port {} refuses connections: {e}", self.cfg.host)),
            Err(_) => Err(format!("its RPC port {} does not answer", self.cfg.host)),
        }
    }

    /// Runs `influxd backup -portable` for `db` into `dir`. influxd retries a lost connection for
    /// minutes; on its first retry message Lifeboat checks the server and stops when it is down.
    pub(super) async fn run_backup(&self, db: &str, dir: &Path) -> Result<()> {
        let mut child = self
            .tool()
            .args(["backup", "-portable", "-host", &self.cfg.host, "-db", db])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Self::tool_missing)?;
        let (lines, mut retries) = watch_stderr(child.stderr.take().expect("piped"));
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(|e| err(format!("waiting for influxd backup: {e}")))?,
                Some(()) = retries.recv() => {
                    if let Err(why) = self.probe().await {
                        let _ = child.kill().await;
                        return Err(err(format!(
                            "InfluxDB went away during the backup of {db}: {why}; the run was not completed, earlier backups are untouched"
                        )));
                    }
                    tracing::warn!("influxdb: influxd backup of {db} is retrying: {}", lines.so_far(2));
                }
            }
        };
        if !status.success() {
            return Err(err(format!(
                "influxd backup of {db} failed ({status}): {}; check stores.influxdb.host (the RPC address, port 8088 by default); the run was not completed, earlier backups are untouched",
                lines.last(2).await
            )));
        }
        Ok(())
    }

    /// `influxd restore -portable` of `db` from `dir`, which holds `shards` shard files.
    pub(super) async fn run_restore(&self, db: &str, dir: &Path, shards: usize) -> Result<()> {
        let out = self
            .tool()
            .args(["restore", "-portable", "-host", &self.cfg.host, "-db", db])
            .arg(dir)
            .output()
            .await
            .map_err(Self::tool_missing)?;
        if out.status.success() {
            return Ok(());
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(2)..].join(" / ");
        if text.contains("DB metadata not changed") {
            // influxd 1.6 says this after restoring a database without shards, having done it.
            if shards == 0 && self.show_databases().await?.iter().any(|d| d == db) {
                return Ok(());
            }
            return Err(err(format!(
                "influxd restore of {db} failed: {tail}; the database was dropped just before, so something recreated it: stop the services writing to InfluxDB and run the restore again"
            )));
        }
        Err(err(format!(
            "influxd restore of {db} failed ({}): {tail}; check stores.influxdb.host (the RPC address) and run the restore again",
            out.status
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tar_folder_holds_the_folder_and_errors_reach_the_reader() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20260101T000000Z.manifest"), b"{}").unwrap();
        let big: Vec<u8> = (0..3 * crate::pipeline::bridge::CHUNK).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("20260101T000000Z.s1.tar.gz"), &big).unwrap();
        let (mut reader, handle) = tar_folder(dir.path().to_path_buf());
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.unwrap();
        handle.await.unwrap().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            if name.ends_with(".tar.gz") {
                assert_eq!(content, big);
            }
            names.push(name);
        }
        assert_eq!(names, vec!["20260101T000000Z.manifest", "20260101T000000Z.s1.tar.gz"]);

        let (mut reader, handle) = tar_folder(dir.path().join("missing"));
        let mut sink = Vec::new();
        let e = reader.read_to_end(&mut sink).await.expect_err("a failed archive is never a clean end");
        assert!(e.to_string().contains("archiving the influxd backup"), "{e}");
        assert!(handle.await.unwrap().is_err());
    }

    #[test]
    fn portable_backup_check_names_the_wrong_database() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.manifest"),
            r#"{"files":[{"database":"other","policy":"autogen","shardID":1,"fileName":"x.s1.tar.gz"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("x.s1.tar.gz"), b"").unwrap();
        let e = check_portable_backup(dir.path(), "ocrvs", "db-ocrvs.tar.zst.age").unwrap_err().to_string();
        assert!(e.contains("holds shards of database other"), "{e}");
        std::fs::write(dir.path().join("x.manifest"), r#"{"files":[{"database":"ocrvs","fileName":"../../etc/passwd"}]}"#).unwrap();
        let e = check_portable_backup(dir.path(), "ocrvs", "f").unwrap_err().to_string();
        assert!(e.contains("names a file `../../etc/passwd`, which is not a plain file name"), "{e}");
        std::fs::write(dir.path().join("x.manifest"), r#"{"meta":{"fileName":"/etc/shadow"},"files":null}"#).unwrap();
        let e = check_portable_backup(dir.path(), "ocrvs", "f").unwrap_err().to_string();
        assert!(e.contains("`/etc/shadow`"), "{e}");
        std::fs::write(dir.path().join("x.manifest"), r#"{"meta":{"fileName":"x.meta"},"limited":false,"files":null}"#).unwrap();
        assert_eq!(check_portable_backup(dir.path(), "ocrvs", "f").unwrap(), 0);
    }
}
