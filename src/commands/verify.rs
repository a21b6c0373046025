//! `lifeboat verify`: check stored files against their manifests at rest (no key needed);
//! `--deep` also decrypts and decompresses every file (needs the restore side's key).

use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::{self, Run};
use crate::pipeline::{self, Counters, DecryptKey};
use crate::server::{self, join};

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedRun {
    pub id: String,
    pub store: String,
    pub files: usize,
    pub bytes: u64,
    pub ok: bool,
    pub problems: Vec<String>,
}

pub async fn run(config: &Config, from: Option<&str>, deep: bool, json: bool) -> Result<Vec<VerifiedRun>> {
    let key = if deep { Some(DecryptKey::from_config(&config.encryption).map_err(|_| {
        Error::Usage("verify --deep decrypts, so it needs encryption.identity_file or passphrase_file (the restore side's configuration)".into())
    })?) } else { None };
    let server = server::connect(&config.server).await?;
    let runs = layout::list_runs(server.as_ref()).await?;
    // The newest complete run of each store, or every store's run with the given id.
    let mut chosen: Vec<Run> = Vec::new();
    for run in runs.into_iter().filter(Run::complete).rev() {
        let wanted = match from {
            Some(id) => run.id.to_string() == id,
            None => !chosen.iter().any(|c| c.folder == run.folder),
        };
        if wanted {
            chosen.push(run);
        }
    }
    if chosen.is_empty() {
        return Err(Error::NotFound(match from {
            Some(id) => format!("no complete backup {id} on {}; see `lifeboat list`", server.describe()),
            None => format!("no complete backup on {}", server.describe()),
        }));
    }
    let mut results = Vec::new();
    for run in &chosen {
        let manifest = run.manifest.as_ref().expect("complete");
        let mut problems = Vec::new();
        for entry in &manifest.files {
            let remote = join(&run.path(), &entry.name);
            let counters = Arc::new(Counters::default());
            let checked = async {
                let source = server.open(&remote).await?;
                if let Some(key) = &key {
                    let work = crate::commands::restore::work_dir(config)?;
                    let local = work.path().join(&entry.name);
                    let mut file = tokio::fs::File::create(&local).await.map_err(|e| Error::io("creating a temp file", e))?;
                    let (size, sha) = pipeline::copy_hashed(source, &mut file, &counters).await.map_err(|e| server.error(e.to_string()))?;
                    if size != entry.size || sha != entry.sha256 {
                        return Ok::<_, Error>(Some(format!("{remote}: checksum or size differs from the manifest")));
                    }
                    let decoded = tokio::task::block_in_place(|| pipeline::decode_to_sink(&local, key, &entry.name));
                    if let Err(e) = decoded {
                        return Ok(Some(format!("{remote}: {e}")));
                    }
                    Ok(None)
                } else {
                    let (size, sha) = pipeline::copy_hashed(source, &mut tokio::io::sink(), &counters)
                        .await
                        .map_err(|e| server.error(e.to_string()))?;
                    if size != entry.size || sha != entry.sha256 {
                        return Ok(Some(format!("{remote}: checksum or size differs from the manifest (size {size} vs {})", entry.size)));
                    }
                    Ok(None)
                }
            };
            if let Some(problem) = checked.await? {
                problems.push(problem);
            }
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
    if json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serialises"));
    } else {
        for r in &results {
            if r.ok {
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
