//! `lifeboat verify`: check stored files against their manifests at rest (no key needed);
//! `--deep` also decrypts and decompresses every file (needs the restore side's key).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::{RunFolder, RunReader, RunState};
use crate::pipeline::{self, DecryptKey};
use crate::server;
use crate::stores::RepoAccess;

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedRun {
    pub id: String,
    pub store: String,
    pub files: usize,
    pub bytes: u64,
    pub ok: bool,
    pub problems: Vec<String>,
}

/// The runs to check: every store's run with the given id, or the newest run of each store
/// that has a manifest (damaged ones included: they are reported, not skipped). Only these
/// runs' manifests are read.
fn chosen(folders: Vec<RunFolder>, from: Option<&str>) -> Vec<RunFolder> {
    let mut chosen: Vec<RunFolder> = Vec::new();
    for run in folders.into_iter().rev().filter(|r| r.manifest_size.is_some()) {
        let wanted = match from {
            Some(id) => run.id.to_string() == id,
            None => !chosen.iter().any(|c| c.folder == run.folder),
        };
        if wanted {
            chosen.push(run);
        }
    }
    chosen
}

pub async fn run(config: &Config, from: Option<&str>, deep: bool, json: bool) -> Result<Vec<VerifiedRun>> {
    let key = if deep {
        Some(std::sync::Arc::new(DecryptKey::from_config(&config.encryption).map_err(|_| {
            Error::Usage(
                "verify --deep decrypts, so it needs encryption.identity_file or passphrase_file (the restore side's configuration)".into(),
            )
        })?))
    } else {
        None
    };
    let server = server::connect(&config.server).await?;
    let trust = config.signing.trust()?;
    let reader = RunReader::new(server.as_ref(), &trust);
    let runs = chosen(reader.folders().await?, from);
    // Differential stores check their own repositories (pgBackRest as a whole; the MinIO mirror
    // its newest run, or the one `from` names).
    let access = RepoAccess { server: server.as_ref(), trust: &trust, key: key.clone() };
    let mut repositories = Vec::new();
    for store in config.configured_stores(&[]).unwrap_or_default() {
        let Some(repo) = store.store.differential() else {
            continue;
        };
        tracing::info!("{}: checking its repository", store.name);
        if let Some(checked) = repo.verify(&access, from, deep).await? {
            repositories.push((store.name, checked));
        }
    }
    if runs.is_empty() && repositories.is_empty() {
        return Err(Error::NotFound(match from {
            Some(id) => format!("no complete backup {id} on {}; see `lifeboat list`", server.describe()),
            None => format!("no complete backup on {}", server.describe()),
        }));
    }
    let context = config.store_context();
    let mut results = Vec::new();
    for folder in &runs {
        let run = &reader.open(folder).await;
        let manifest = match &run.state {
            RunState::Complete(m) => m,
            RunState::Damaged(why) => {
                results.push(VerifiedRun {
                    id: run.id.to_string(),
                    store: run.folder.clone(),
                    files: 0,
                    bytes: run.bytes,
                    ok: false,
                    problems: vec![why.clone()],
                });
                continue;
            }
            RunState::Incomplete => continue,
        };
        let mut problems = Vec::new();
        for entry in &manifest.files {
            let problem = match &key {
                None => reader.check_at_rest(run, entry).await?,
                Some(key) => {
                    let work = context.private_dir("lifeboat-verify-")?;
                    let decoded = match reader.fetch_verified(run, entry, work.path(), key).await {
                        Ok(local) => tokio::task::block_in_place(|| pipeline::decode_to_sink(&local, key, &entry.name)).map(|_| ()),
                        Err(e) => Err(e),
                    };
                    match decoded {
                        Ok(()) => None,
                        Err(e @ (Error::Integrity(_) | Error::Decrypt(_))) => Some(format!("{}/{}: {e}", run.path(), entry.name)),
                        Err(e) => return Err(e),
                    }
                }
            };
            problems.extend(problem);
        }
        results.push(VerifiedRun {
            id: run.id.to_string(),
            store: manifest.store.clone(),
            files: manifest.files.len(),
            bytes: manifest.stored_bytes(),
            ok: problems.is_empty(),
            problems,
        });
    }
    let mut how = std::collections::BTreeMap::new();
    for (name, checked) in repositories {
        how.insert((checked.id.clone(), name.to_string()), checked.how);
        results.push(VerifiedRun {
            id: checked.id,
            store: name.to_string(),
            files: checked.files,
            bytes: checked.bytes,
            ok: checked.problems.is_empty(),
            problems: checked.problems,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serialises"));
    } else {
        for r in &results {
            if let (true, Some(how)) = (r.ok, how.get(&(r.id.clone(), r.store.clone()))) {
                println!("{} {}: OK ({how})", r.id, r.store);
            } else if r.ok {
                println!("{} {}: OK ({} files{})", r.id, r.store, r.files, if deep { ", decrypted and decompressed" } else { "" });
            } else {
                for p in &r.problems {
                    println!("{} {}: DAMAGED: {p}", r.id, r.store);
                }
            }
        }
    }
    let bad: Vec<&VerifiedRun> = results.iter().filter(|r| !r.ok).collect();
    if !bad.is_empty() {
        return Err(Error::Integrity(format!(
            "{} backup(s) failed verification ({}); do not rely on them, run a new backup",
            bad.len(),
            bad.iter().map(|r| format!("{} {}", r.id, r.store)).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(results)
}
