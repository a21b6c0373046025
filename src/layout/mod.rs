//! Where runs live on the backup server, and the life of a run.
//!
//! Layout: `<root>/<YYYY-MM-DD>[_N]/<store folder>/{files..., manifest.json}`. The date is taken
//! in the configured timezone; a second run of a store on the same day goes to
//! `<YYYY-MM-DD>_2/<store>/` (then `_3`, ...), so no run ever overwrites another.
//!
//! The life of a run has one owner on each side: [`RunWriter`] (claim the folder by creating its
//! [`CLAIM_NAME`] object only if absent, put each file once, commit by writing `manifest.json` last, or abort) and
//! [`RunReader`] (list run folders, read only the manifests a command needs, fetch and verify a
//! file). A backup needs no rename
//! and no delete on the server: the manifest written last *is* the commit, so a run without a
//! readable manifest is never complete, whatever else its folder holds.

pub mod drill;
pub mod lock;
pub mod manifest;
mod reader;
pub mod retention;
pub mod signed;
mod writer;

use std::cmp::Ordering;
use std::fmt;

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::server::join;
pub use manifest::{MANIFEST_NAME, Manifest};
pub use reader::{RunReader, StoredDigest, download_checked, plain_name};
pub use writer::RunWriter;

/// The object that claims a run folder: created only if absent, before anything else of the run
/// (the atomic claim every kind of server offers, [`crate::server::BackupServer::create_if_absent`]).
/// It says who claimed it, for an operator looking at a run that never finished.
pub const CLAIM_NAME: &str = "run.claim";

/// What [`CLAIM_NAME`] holds.
#[derive(serde::Serialize)]
struct ClaimHolder<'a> {
    store: &'a str,
    host: String,
    pid: u32,
    claimed_at: String,
    lifeboat_version: &'static str,
}

/// The content of a run's claim by this process, for `store`.
pub(crate) fn claim_by_this_process(store: &str) -> Vec<u8> {
    let holder = ClaimHolder {
        store,
        host: crate::deployment::host_name(),
        pid: std::process::id(),
        claimed_at: chrono::Utc::now().to_rfc3339(),
        lifeboat_version: env!("CARGO_PKG_VERSION"),
    };
    serde_json::to_vec_pretty(&holder).expect("claim serialises")
}

/// A run folder's name: a date and, from the second run of that day on, a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunId {
    pub date: NaiveDate,
    pub seq: u32,
}

impl RunId {
    pub fn parse(s: &str) -> Option<RunId> {
        let (date, seq) = match s.split_once('_') {
            Some((d, n)) => (d, n.parse::<u32>().ok().filter(|n| *n >= 2)?),
            None => (s, 1),
        };
        if date.len() != 10 {
            return None;
        }
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        Some(RunId { date, seq })
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seq == 1 {
            write!(f, "{}", self.date.format("%Y-%m-%d"))
        } else {
            write!(f, "{}_{}", self.date.format("%Y-%m-%d"), self.seq)
        }
    }
}

impl Ord for RunId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.date, self.seq).cmp(&(other.date, other.seq))
    }
}

impl PartialOrd for RunId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One store's run folder as listed on the server, its manifest not read yet.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub id: RunId,
    /// The store's folder name in the run (the store name, or its `server_dir`).
    pub folder: String,
    /// Bytes of all files in the run folder.
    pub bytes: u64,
    /// The size of `manifest.json`, when the folder has one.
    pub manifest_size: Option<u64>,
    /// Whether the folder has `manifest.json.sig`.
    pub signed: bool,
    /// Restore drill reports left in the folder ([`drill::is_report`] names), oldest first.
    pub drills: Vec<String>,
}

impl RunFolder {
    pub fn path(&self) -> String {
        join(&self.id.to_string(), &self.folder)
    }
}

/// What a run folder holds.
#[derive(Debug, Clone)]
pub enum RunState {
    /// A readable manifest: the run finished.
    Complete(Box<Manifest>),
    /// No manifest: the run failed or was interrupted (or is still running).
    Incomplete,
    /// A manifest that cannot be used, with the reason. Never restored.
    Damaged(String),
}

/// One store's run as found on the server, its manifest read.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: RunId,
    /// The store's folder name in the run (the store name, or its `server_dir`).
    pub folder: String,
    pub state: RunState,
    /// Bytes of all files in the run folder.
    pub bytes: u64,
}

impl Run {
    pub fn path(&self) -> String {
        join(&self.id.to_string(), &self.folder)
    }

    pub fn complete(&self) -> bool {
        matches!(self.state, RunState::Complete(_))
    }

    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.state {
            RunState::Complete(m) => Some(m.as_ref()),
            _ => None,
        }
    }
}

/// Checks that a name from the backup server (a manifest entry, a listed folder) is one plain
/// path component, before it is joined to any local or remote path.
pub fn check_file_name(name: &str) -> Result<()> {
    let bad = name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) || name.len() > 255;
    if bad {
        return Err(Error::Integrity(format!(
            "the backup names a file `{}`, which is not a plain file name: the run is damaged or tampered with; nothing was written for it",
            name.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_parse_and_print() {
        for (text, ok) in [
            ("2026-11-24", true),
            ("2026-11-24_2", true),
            ("2026-11-24_17", true),
            ("2026-11-24_1", false),
            ("2026-11-24_0", false),
            ("2026-13-01", false),
            ("2026-1-01", false),
            ("postgres", false),
            ("2026-11-24_x", false),
        ] {
            let parsed = RunId::parse(text);
            assert_eq!(parsed.is_some(), ok, "{text}");
            if let Some(id) = parsed {
                assert_eq!(id.to_string(), text);
            }
        }
    }

    #[test]
    fn only_plain_file_names_pass() {
        for ok in ["db-events.dump.zst.age", "roles.sql.zst.age", "a..b", ".hidden"] {
            assert!(check_file_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "../../etc/cron.d/x", "/etc/passwd", "a/b", "a\\b", "nul\0byte"] {
            let e = check_file_name(bad).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{bad}");
        }
    }

    #[test]
    fn run_ids_order_by_date_then_sequence() {
        let mut ids: Vec<RunId> =
            ["2026-11-24_2", "2026-11-25", "2026-11-24", "2026-11-24_10", "2025-12-31"].iter().map(|s| RunId::parse(s).unwrap()).collect();
        ids.sort();
        let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        assert_eq!(names, ["2025-12-31", "2026-11-24", "2026-11-24_2", "2026-11-24_10", "2026-11-25"]);
    }
}
