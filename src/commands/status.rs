//! `lifeboat status`: the newest complete backup of each configured store, its age, and how
//! many newer runs are damaged or incomplete; with `--max-age`, a non-zero exit when any is
//! older (or missing), for alerting. Only the manifests from the newest run back to the newest
//! complete one are read.

use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::{RunReader, RunState};
use crate::server;
use crate::stores::RepoAccess;

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreStatus {
    pub store: String,
    pub newest: Option<String>,
    pub finished_at: Option<String>,
    pub age_seconds: Option<u64>,
    /// Runs newer than the newest complete one whose manifest is damaged (never restored).
    pub damaged_since: usize,
    /// Runs newer than the newest complete one without a manifest (failed, interrupted, running).
    pub incomplete_since: usize,
    pub ok: bool,
}

/// Parses `30m`, `26h`, `2d`, `1w` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| Error::Usage(format!("--max-age `{text}`: expected e.g. 26h, 2d, 90m")))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        "w" => n * 7 * 86400,
        _ => return Err(Error::Usage(format!("--max-age `{text}`: unknown unit `{unit}` (use s, m, h, d or w)"))),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn run(config: &Config, max_age: Option<&str>, json: bool) -> Result<Vec<StoreStatus>> {
    let max_age = max_age.map(parse_duration).transpose()?;
    let stores = config.configured_stores(&[])?;
    let server = server::connect(&config.server).await?;
    let reader = RunReader::new(server.as_ref());
    let folders = reader.folders().await?;
    let access = RepoAccess { server: Some(server.as_ref()), ..Default::default() };
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for store in &stores {
        let (newest_id, finished, damaged_since, incomplete_since) = match store.store.differential() {
            // A differential store's backups are in its repository (pgBackRest lists only finished ones).
            Some(repo) => {
                let backups = repo.backups(&access).await?;
                let newest = backups.iter().rposition(|b| b.complete);
                let since = &backups[newest.map_or(0, |i| i + 1)..];
                let newest = newest.map(|i| &backups[i]);
                let damaged = since.iter().filter(|b| b.damaged.is_some()).count();
                let incomplete = since.iter().filter(|b| !b.complete && b.damaged.is_none()).count();
                (newest.map(|b| b.label.clone()), newest.map(|b| b.finished_at.fixed_offset()), damaged, incomplete)
            }
            None => {
                let (newest, since) = reader.newest_complete(&folders, store.folder()).await;
                let finished = newest.as_ref().and_then(|r| r.manifest()).and_then(|m| chrono::DateTime::parse_from_rfc3339(&m.finished_at).ok());
                let damaged = since.iter().filter(|r| matches!(r.state, RunState::Damaged(_))).count();
                let incomplete = since.iter().filter(|r| matches!(r.state, RunState::Incomplete)).count();
                (newest.map(|r| r.id.to_string()), finished, damaged, incomplete)
            }
        };
        let age = finished.map(|f| (now - f.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64);
        let ok = match (max_age, age) {
            (Some(max), Some(age)) => age <= max.as_secs(),
            (Some(_), None) => false,
            (None, _) => true,
        };
        out.push(StoreStatus {
            store: store.name.to_string(),
            newest: newest_id,
            finished_at: finished.map(|f| f.to_rfc3339()),
            age_seconds: age,
            damaged_since,
            incomplete_since,
            ok,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).expect("serialises"));
    } else {
        for s in &out {
            let since = match (s.damaged_since, s.incomplete_since) {
                (0, 0) => String::new(),
                (d, i) => format!("; since then {d} damaged and {i} incomplete run(s), see `lifeboat list`"),
            };
            match (&s.newest, s.age_seconds) {
                (Some(id), Some(age)) => println!(
                    "{}: newest complete backup {id}, {:.1} h old{}{since}",
                    s.store,
                    age as f64 / 3600.0,
                    if s.ok { "" } else { " (TOO OLD)" }
                ),
                _ => println!("{}: no complete backup{}{since}", s.store, if s.ok { "" } else { " (ALERT)" }),
            }
        }
    }
    let stale: Vec<&str> = out.iter().filter(|s| !s.ok).map(|s| s.store.as_str()).collect();
    if !stale.is_empty() {
        return Err(Error::Stale(format!(
            "no recent enough complete backup for: {}; check the backup jobs' logs",
            stale.join(", ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        for (text, secs) in [("90", 90), ("30m", 1800), ("26h", 93600), ("2d", 172800), ("1w", 604800)] {
            assert_eq!(parse_duration(text).unwrap().as_secs(), secs, "{text}");
        }
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("h").is_err());
    }
}
