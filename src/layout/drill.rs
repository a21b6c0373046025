//! Restore drill reports: every restore leaves proof of what it did. One JSON file per store and
//! restore: which backup, from when, what was restored, the counts expected and found, how long
//! it took, and the result (also for a failed or stopped restore: that is proof too).
//!
//! Where: in the restored run's own folder on the backup server
//! (`<date>/<store>/drill-<UTC time>.json`), or for a differential store in
//! `drills/<store>/` there; when the restore side may not write to the server (a read-only key),
//! in `drills/<store>/` next to the configuration file. `status` shows the newest one.
//! Reports read back come from the server and are untrusted: size-bounded, parsed strictly, and
//! one that does not parse is passed over with a warning.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::manifest::Counts;
use crate::server::{BackupServer, join};

/// Reports are a few KiB; anything far larger is not one of ours.
const MAX_REPORT: u64 = 4 << 20;
const PREFIX: &str = "drill-";
const SUFFIX: &str = ".json";
/// The folder for reports that have no run folder (differential stores), on the server or locally.
pub const DRILLS_DIR: &str = "drills";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrillReport {
    pub store: String,
    /// The run id (`YYYY-MM-DD[_N]`) or, for a differential store, the backup label.
    pub backup: String,
    /// When that backup finished, as its manifest says.
    pub backup_finished_at: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
    /// `ok`, `failed` or `stopped`.
    pub result: String,
    /// Why it failed, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A summary such as `1200 rows`, or what recovery reached.
    pub restored: String,
    #[serde(default)]
    pub counts_expected: Counts,
    #[serde(default)]
    pub counts_found: Counts,
    /// The host that ran the restore.
    pub host: String,
}

/// The report's file name for a restore finished at `at`: sortable, one per second.
pub fn file_name(at: DateTime<Utc>) -> String {
    format!("{PREFIX}{}{SUFFIX}", at.format("%Y%m%dT%H%M%SZ"))
}

/// Whether a listed name is a drill report (what `file_name` makes, nothing else).
pub fn is_report(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|r| r.strip_suffix(SUFFIX))
        .is_some_and(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ").is_ok())
}

/// The local fallback folder for reports: `drills/` next to the configuration file.
pub fn local_dir(config_file: &Path) -> PathBuf {
    config_file.parent().unwrap_or(Path::new(".")).join(DRILLS_DIR)
}

/// Where a differential store's reports go on the server (it has no run folders of its own).
pub fn repository_dir(store_folder: &str) -> String {
    join(DRILLS_DIR, store_folder)
}

/// The newest report in a folder on the server, if any (names sort by time).
pub async fn newest_in(server: &dyn BackupServer, dir: &str) -> crate::error::Result<Option<DrillReport>> {
    let names = server.list(dir).await?.into_iter().filter(|e| !e.is_dir && is_report(&e.name)).map(|e| e.name);
    Ok(match names.max() {
        Some(name) => read(server, &join(dir, &name)).await,
        None => None,
    })
}

/// Writes `report` into `server_dir` on the server, or into `<local_dir>/<store>/` when the
/// server refuses. Returns where it went; never fails the restore (the restore itself is done).
pub async fn write(server: &dyn BackupServer, server_dir: &str, local_dir: &Path, report: &DrillReport) -> Option<String> {
    let json = serde_json::to_vec_pretty(report).expect("report serialises");
    let name = file_name(DateTime::parse_from_rfc3339(&report.finished_at).map(|t| t.to_utc()).unwrap_or_else(|_| Utc::now()));
    let path = join(server_dir, &name);
    match server.write_new(&path, &json).await {
        Ok(()) => return Some(format!("{}/{path}", server.describe())),
        Err(e) => tracing::info!("{}: cannot write the drill report on the backup server ({e}); writing it locally", report.store),
    }
    let dir = local_dir.join(&report.store);
    let file = dir.join(&name);
    let written = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&file, &json));
    match written {
        Ok(()) => Some(file.display().to_string()),
        Err(e) => {
            tracing::warn!("{}: could not write the drill report to {} either ({e})", report.store, file.display());
            None
        }
    }
}

/// Reads a report from the server (untrusted): None, with a warning, when it is not one.
pub async fn read(server: &dyn BackupServer, path: &str) -> Option<DrillReport> {
    let parsed = match server.read_small(path, MAX_REPORT).await {
        Ok(data) => serde_json::from_slice::<DrillReport>(&data).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    parsed.map_err(|e| tracing::warn!("passing over the drill report {path}: {e}")).ok()
}

/// The newest report in a local folder (the fallback place), if any.
pub fn newest_local(dir: &Path) -> Option<(PathBuf, DrillReport)> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| is_report(n)).collect();
    names.sort();
    let newest = dir.join(names.pop()?);
    let data = std::fs::read(&newest).ok().filter(|d| d.len() as u64 <= MAX_REPORT)?;
    serde_json::from_slice(&data).ok().map(|r| (newest, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_are_recognised_exactly() {
        let at = DateTime::parse_from_rfc3339("2026-11-24T03:04:05Z").unwrap().to_utc();
        assert_eq!(file_name(at), "drill-20261124T030405Z.json");
        assert!(is_report(&file_name(at)));
        for other in
            ["drill-.json", "drill-2026.json", "manifest.json", "drill-20261124T030405Z.json.age", "../drill-20261124T030405Z.json"]
        {
            assert!(!is_report(other), "{other}");
        }
    }
}
