//! `lifeboat list`: the backups on the server.

use std::fmt::Write as _;

use crate::commands::Report;
use crate::config::Config;
use crate::error::Result;
use crate::layout::{RunReader, RunState};
use crate::legacy;
use crate::progress::human_bytes;
use crate::server::{self, BackupServer};
use crate::signing::Trust;
use crate::stores::RepoAccess;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedBackup {
    pub id: String,
    pub date: String,
    pub store: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub complete: bool,
    /// Why the run cannot be used, when its manifest is damaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    pub bytes: u64,
    pub path: String,
    /// Who signed the run's manifest (checked against the allowed signers), when it is complete.
    pub signed_by: Option<String>,
    /// A backup made by OpenCRVS's original scripts: it has no manifest, no checksums and no
    /// signature, so nothing about it can be checked at rest (only by reading it whole).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub made_by_original_scripts: bool,
}

/// What `list` found: every backup on the server, date-folder runs first, then the differential
/// stores' own, then those the original scripts made. Its JSON is the array of backups.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct Listing {
    pub backups: Vec<ListedBackup>,
    /// The server, as its URL is shown, for saying that it holds nothing.
    #[serde(skip)]
    pub server: String,
}

pub async fn run(config: &Config) -> Result<Listing> {
    let server = server::connect(&config.server).await?;
    let trust = config.signing.trust()?;
    let runs = RunReader::new(server.as_ref(), &trust).list().await?;
    let mut backups: Vec<ListedBackup> = runs
        .iter()
        .map(|r| ListedBackup {
            id: r.id.to_string(),
            date: r.id.date.to_string(),
            store: r.manifest().map(|m| m.store.clone()).unwrap_or_else(|| r.folder.clone()),
            kind: r.manifest().map(|m| m.kind.to_string()),
            complete: r.complete(),
            damaged: match &r.state {
                RunState::Damaged(why) => Some(why.clone()),
                _ => None,
            },
            bytes: r.bytes,
            path: r.path(),
            signed_by: r.manifest().and_then(|m| m.signature.as_ref()).map(|s| s.to_string()),
            made_by_original_scripts: false,
        })
        .collect();
    backups.extend(repository_backups(config, server.as_ref(), &trust).await?);
    backups.extend(legacy::find_runs(server.as_ref()).await?.into_iter().map(|r| ListedBackup {
        id: r.date.to_string(),
        date: r.date.to_string(),
        store: r.store.to_string(),
        kind: Some("legacy".into()),
        complete: false,
        damaged: None,
        bytes: r.size,
        path: r.path,
        signed_by: None,
        made_by_original_scripts: true,
    }));
    Ok(Listing { backups, server: server.describe() })
}

impl Report for Listing {
    /// A table, one backup a line; nothing when there is none.
    fn text(&self) -> String {
        let mut out = String::new();
        if self.backups.is_empty() {
            return out;
        }
        // pgBackRest labels (20250601-010000F_20250602-010000D) are longer than run ids.
        let w = self.backups.iter().map(|b| b.id.len()).max().unwrap_or(0).max(14);
        let _ = writeln!(out, "{:<w$} {:<10} {:<10} {:<12} {:>10}  SIGNED BY", "ID", "STORE", "TYPE", "COMPLETE", "SIZE");
        for b in &self.backups {
            let _ = writeln!(
                out,
                "{:<w$} {:<10} {:<10} {:<12} {:>10}  {}",
                b.id,
                b.store,
                b.kind.as_deref().unwrap_or("-"),
                match (b.complete, &b.damaged, b.made_by_original_scripts) {
                    (_, _, true) => "unverifiable",
                    (true, _, _) => "yes",
                    (false, Some(_), _) => "NO (damaged)",
                    (false, None, _) => "NO (partial)",
                },
                human_bytes(b.bytes),
                match b.made_by_original_scripts {
                    true => "- (original scripts: no checksums, no signature)",
                    false => b.signed_by.as_deref().unwrap_or("-"),
                }
            );
        }
        out
    }

    /// An empty server is said on stderr: stdout stays empty for scripts.
    fn print_text(&self) {
        if self.backups.is_empty() {
            eprintln!("no backups on {}", self.server);
        } else {
            print!("{}", self.text());
        }
    }
}

/// The backups differential stores keep in their own repositories (pgBackRest's `info`, the
/// MinIO mirror's runs), after the date-folder runs; their size is what each added to the repository.
async fn repository_backups(config: &Config, server: &dyn BackupServer, trust: &Trust) -> Result<Vec<ListedBackup>> {
    let tz = config.tz()?;
    let mut listed = Vec::new();
    let access = RepoAccess { server, trust, key: None };
    for store in config.configured_stores(&[]).unwrap_or_default() {
        let Some(repo) = store.store.differential() else {
            continue;
        };
        for b in repo.backups(&access).await? {
            listed.push(ListedBackup {
                date: b.finished_at.with_timezone(&tz).date_naive().to_string(),
                id: b.label,
                store: store.name.to_string(),
                kind: Some(b.kind),
                complete: b.complete,
                damaged: b.damaged,
                bytes: b.stored_bytes,
                path: b.path,
                signed_by: b.signed_by,
                made_by_original_scripts: false,
            });
        }
    }
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{json, json_keys};

    fn backup(id: &str, kind: Option<&str>, complete: bool, damaged: Option<&str>, bytes: u64, signed_by: Option<&str>) -> ListedBackup {
        ListedBackup {
            id: id.into(),
            date: id[..10].into(),
            store: "postgres".into(),
            kind: kind.map(Into::into),
            complete,
            damaged: damaged.map(Into::into),
            bytes,
            path: format!("{id}/postgres"),
            signed_by: signed_by.map(Into::into),
            made_by_original_scripts: false,
        }
    }

    fn listing() -> Listing {
        Listing {
            backups: vec![
                backup("2020-01-01", None, false, None, 4, None),
                backup("2020-01-02", None, false, Some("manifest.json is not JSON"), 2048, None),
                backup("2025-06-01_2", Some("dump"), true, None, 3 << 20, Some("ops (SHA256:abc)")),
            ],
            server: "file:///srv/backups".into(),
        }
    }

    #[test]
    fn text_is_a_table_of_every_backup() {
        assert_eq!(
            listing().text(),
            "\
ID             STORE      TYPE       COMPLETE           SIZE  SIGNED BY
2020-01-01     postgres   -          NO (partial)        4 B  -
2020-01-02     postgres   -          NO (damaged)    2.0 KiB  -
2025-06-01_2   postgres   dump       yes             3.0 MiB  ops (SHA256:abc)
"
        );
    }

    #[test]
    fn ids_longer_than_a_run_id_widen_the_first_column() {
        let mut listing = listing();
        listing.backups.truncate(1);
        listing.backups[0].id = "20250601-010000F_20250602-010000D".into();
        let text = listing.text();
        assert!(text.starts_with("ID                                STORE"), "{text}");
        assert!(text.contains("20250601-010000F_20250602-010000D postgres"), "{text}");
    }

    #[test]
    fn an_empty_listing_prints_nothing_on_stdout() {
        assert_eq!(Listing { backups: vec![], server: "file:///srv".into() }.text(), "");
        assert_eq!(json(&Listing { backups: vec![], server: "file:///srv".into() }), "[]\n");
    }

    #[test]
    fn json_is_the_array_of_backups() {
        let value: serde_json::Value = serde_json::from_str(&json(&listing())).unwrap();
        let backups = value.as_array().expect("an array, not an object with the server");
        assert_eq!(backups.len(), 3);
        let keys = |i: usize| json_keys(&backups[i]);
        assert_eq!(keys(0), ["bytes", "complete", "date", "id", "path", "signed_by", "store", "type"]);
        assert_eq!(keys(1), ["bytes", "complete", "damaged", "date", "id", "path", "signed_by", "store", "type"]);
        assert_eq!(backups[0]["type"], serde_json::Value::Null);
        assert_eq!(backups[2]["type"], "dump");
        assert_eq!(backups[2]["bytes"], 3 << 20);
        assert_eq!(backups[2]["signed_by"], "ops (SHA256:abc)");
    }
}
