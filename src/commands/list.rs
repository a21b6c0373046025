//! `lifeboat list`: the backups on the server.

use crate::config::Config;
use crate::error::Result;
use crate::layout::{RunReader, RunState};
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
}

pub async fn run(config: &Config, json: bool) -> Result<Vec<ListedBackup>> {
    let server = server::connect(&config.server).await?;
    let trust = config.signing.trust()?;
    let runs = RunReader::new(server.as_ref(), &trust).list().await?;
    let mut listed: Vec<ListedBackup> = runs
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
        })
        .collect();
    listed.extend(repository_backups(config, server.as_ref(), &trust).await?);
    if json {
        println!("{}", serde_json::to_string_pretty(&listed).expect("serialises"));
    } else if listed.is_empty() {
        eprintln!("no backups on {}", server.describe());
    } else {
        // pgBackRest labels (20250601-010000F_20250602-010000D) are longer than run ids.
        let w = listed.iter().map(|b| b.id.len()).max().unwrap_or(0).max(14);
        println!("{:<w$} {:<10} {:<10} {:<12} {:>10}  SIGNED BY", "ID", "STORE", "TYPE", "COMPLETE", "SIZE");
        for b in &listed {
            println!(
                "{:<w$} {:<10} {:<10} {:<12} {:>10}  {}",
                b.id,
                b.store,
                b.kind.as_deref().unwrap_or("-"),
                match (b.complete, &b.damaged) {
                    (true, _) => "yes",
                    (false, Some(_)) => "NO (damaged)",
                    (false, None) => "NO (partial)",
                },
                human_bytes(b.bytes),
                b.signed_by.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(listed)
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
            });
        }
    }
    Ok(listed)
}
