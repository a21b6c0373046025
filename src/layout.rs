//! Where runs live on the backup server: `<root>/<YYYY-MM-DD>/<store>/...`.
//!
//! The date is taken in the configured timezone. A second run of a store on the same day goes to
//! `<YYYY-MM-DD>_2/<store>/` (then `_3`, ...), so no run ever overwrites another. A run folder is
//! claimed by creating it (an atomic mkdir), its files are uploaded as `*.partial` and renamed
//! when all of them succeeded, and `manifest.json` is written last: no manifest, not complete.

use std::cmp::Ordering;
use std::fmt;

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_NAME, Manifest};
use crate::server::{BackupServer, join};

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

/// One store's run as found on the server.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: RunId,
    /// The store's folder name in the run (the store name, or its `server_dir`).
    pub folder: String,
    pub manifest: Option<Manifest>,
    /// Bytes of all files in the run folder.
    pub bytes: u64,
}

impl Run {
    pub fn path(&self) -> String {
        join(&self.id.to_string(), &self.folder)
    }

    pub fn complete(&self) -> bool {
        self.manifest.is_some()
    }
}

/// Claims a new run folder for `folder` on `date`: the first free `<date>[_n]/<folder>`.
pub async fn claim_run(server: &dyn BackupServer, date: NaiveDate, folder: &str) -> Result<RunId> {
    for seq in 1..10_000 {
        let id = RunId { date, seq };
        let day = id.to_string();
        server.create_dir(&day).await?;
        if server.create_dir(&join(&day, folder)).await? {
            return Ok(id);
        }
    }
    Err(server.error(format!("too many runs of {folder} on {date}")))
}

/// Every run on the server (complete or not), oldest first; manifests are read for complete ones.
pub async fn list_runs(server: &dyn BackupServer) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for day in server.list("").await? {
        let Some(id) = day.is_dir.then(|| RunId::parse(&day.name)).flatten() else { continue };
        for store in server.list(&day.name).await? {
            if !store.is_dir {
                continue;
            }
            let path = join(&day.name, &store.name);
            let files = server.list(&path).await?;
            let bytes = files.iter().filter(|f| !f.is_dir).map(|f| f.size).sum();
            let manifest = if files.iter().any(|f| f.name == MANIFEST_NAME) {
                let data = server.read_small(&join(&path, MANIFEST_NAME)).await?;
                Some(serde_json::from_slice::<Manifest>(&data).map_err(|e| {
                    Error::Integrity(format!("{path}/{MANIFEST_NAME} is not a valid manifest ({e}): the run is damaged"))
                })?)
            } else {
                None
            };
            runs.push(Run { id: id.clone(), folder: store.name, manifest, bytes });
        }
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id).then(a.folder.cmp(&b.folder)));
    Ok(runs)
}

/// The run to restore for a store folder: the newest complete one, or the one named by `from`.
pub async fn find_complete_run(server: &dyn BackupServer, folder: &str, from: Option<&str>) -> Result<Run> {
    let runs = list_runs(server).await?;
    let mut mine = runs.into_iter().filter(|r| r.folder == folder);
    match from {
        Some(wanted) => {
            let id = RunId::parse(wanted).ok_or_else(|| {
                Error::Usage(format!("--from `{wanted}` is not a backup id (YYYY-MM-DD or YYYY-MM-DD_N); see `lifeboat list`"))
            })?;
            let run = mine.into_iter().find(|r| r.id == id).ok_or_else(|| {
                Error::NotFound(format!("no backup {wanted} of {folder} on {}; see `lifeboat list`", server.describe()))
            })?;
            if !run.complete() {
                return Err(Error::NotFound(format!(
                    "backup {wanted} of {folder} is not complete (no manifest: it failed or was interrupted); choose another with --from"
                )));
            }
            Ok(run)
        }
        None => mine.rfind(Run::complete).ok_or_else(|| {
            Error::NotFound(format!(
                "no complete backup of {folder} on {}: nothing was restored; run a backup first or check server.url",
                server.describe()
            ))
        }),
    }
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
    fn run_ids_order_by_date_then_sequence() {
        let mut ids: Vec<RunId> =
            ["2026-11-24_2", "2026-11-25", "2026-11-24", "2026-11-24_10", "2025-12-31"].iter().map(|s| RunId::parse(s).unwrap()).collect();
        ids.sort();
        let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        assert_eq!(names, ["2025-12-31", "2026-11-24", "2026-11-24_2", "2026-11-24_10", "2026-11-25"]);
    }
}
