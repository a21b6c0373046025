//! `lifeboat verify`: check stored files against their manifests at rest (no key needed);
//! `--deep` also decrypts and decompresses every file (needs the restore side's key).

use std::fmt::Write as _;

use crate::commands::Report;
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
    /// How a differential store checked its repository, said instead of the file count.
    #[serde(skip)]
    pub how: Option<String>,
}

/// What `verify` found: one entry per run checked, date-folder runs first, then the differential
/// stores' repositories. Its JSON is the array of runs.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct Verification {
    pub runs: Vec<VerifiedRun>,
    /// `--deep`: files were decrypted and decompressed too.
    #[serde(skip)]
    pub deep: bool,
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

pub async fn run(config: &Config, from: Option<&str>, deep: bool) -> Result<Verification> {
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
                    how: None,
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
            how: None,
        });
    }
    for (name, checked) in repositories {
        results.push(VerifiedRun {
            id: checked.id,
            store: name.to_string(),
            files: checked.files,
            bytes: checked.bytes,
            ok: checked.problems.is_empty(),
            problems: checked.problems,
            how: Some(checked.how),
        });
    }
    Ok(Verification { runs: results, deep })
}

impl Report for Verification {
    /// One line per run found sound, one per problem of a run that is not.
    fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.runs {
            let _ = match (r.ok, &r.how) {
                (true, Some(how)) => writeln!(out, "{} {}: OK ({how})", r.id, r.store),
                (true, None) => {
                    writeln!(
                        out,
                        "{} {}: OK ({} files{})",
                        r.id,
                        r.store,
                        r.files,
                        if self.deep { ", decrypted and decompressed" } else { "" }
                    )
                }
                (false, _) => r.problems.iter().try_for_each(|p| writeln!(out, "{} {}: DAMAGED: {p}", r.id, r.store)),
            };
        }
        out
    }

    /// An error naming every run that failed verification.
    fn verdict(&self) -> Result<()> {
        let bad: Vec<&VerifiedRun> = self.runs.iter().filter(|r| !r.ok).collect();
        if !bad.is_empty() {
            return Err(Error::Integrity(format!(
                "{} backup(s) failed verification ({}); do not rely on them, run a new backup",
                bad.len(),
                bad.iter().map(|r| format!("{} {}", r.id, r.store)).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{json, json_keys};

    fn verified(id: &str, store: &str, files: usize, problems: &[&str], how: Option<&str>) -> VerifiedRun {
        VerifiedRun {
            id: id.into(),
            store: store.into(),
            files,
            bytes: 1000,
            ok: problems.is_empty(),
            problems: problems.iter().map(|p| p.to_string()).collect(),
            how: how.map(Into::into),
        }
    }

    fn verification(deep: bool) -> Verification {
        Verification {
            runs: vec![
                verified("2025-06-01", "postgres", 3, &[], None),
                verified("2025-06-01", "mongodb", 2, &["2025-06-01/mongodb/a.zst.age: size 3, manifest says 4", "b: sha256 differs"], None),
                verified("repository", "pg", 7, &[], Some("checked by pgbackrest verify")),
            ],
            deep,
        }
    }

    #[test]
    fn text_has_a_line_per_sound_run_and_per_problem() {
        assert_eq!(
            verification(false).text(),
            "\
2025-06-01 postgres: OK (3 files)
2025-06-01 mongodb: DAMAGED: 2025-06-01/mongodb/a.zst.age: size 3, manifest says 4
2025-06-01 mongodb: DAMAGED: b: sha256 differs
repository pg: OK (checked by pgbackrest verify)
"
        );
        assert!(verification(true).text().starts_with("2025-06-01 postgres: OK (3 files, decrypted and decompressed)\n"));
    }

    #[test]
    fn a_damaged_run_fails_the_command_after_it_is_shown() {
        match verification(false).verdict() {
            Err(Error::Integrity(why)) => {
                assert_eq!(why, "1 backup(s) failed verification (2025-06-01 mongodb); do not rely on them, run a new backup")
            }
            other => panic!("{other:?}"),
        }
        let mut sound = verification(false);
        sound.runs.remove(1);
        assert!(sound.verdict().is_ok());
    }

    #[test]
    fn json_is_the_array_of_runs() {
        let value: serde_json::Value = serde_json::from_str(&json(&verification(true))).unwrap();
        let runs = value.as_array().expect("an array");
        assert_eq!(runs.len(), 3);
        for run in runs {
            assert_eq!(json_keys(run), ["bytes", "files", "id", "ok", "problems", "store"]);
        }
        assert_eq!(runs[1]["ok"], false);
        assert_eq!(runs[1]["problems"][1], "b: sha256 differs");
        assert_eq!(runs[2]["files"], 7);
    }
}
