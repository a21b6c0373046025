//! `lifeboat import`: turns the backups of OpenCRVS's original scripts into ordinary, signed
//! Lifeboat runs, so that retention, `verify`, `status` and drills cover the history from then on.
//!
//! Each legacy run is read whole first (downloaded, decrypted, unpacked, every dump opened and
//! counted by its store, exactly as a restore reads it), then written as a new run of its date
//! (`<date>[_N]/<store>/`: zstd, age, SHA-256, counts, manifest last), under the store's lock. The
//! original file is left where it is. A run already imported (its manifest names the file and its
//! size) is passed over, so importing again changes nothing. One run that fails is reported and
//! the others go on.

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::layout::lock::with_lock;
use crate::layout::manifest::{ImportedFrom, StoreType};
use crate::layout::{RunReader, RunWriter};
use crate::legacy::adopt::fetch_and_adopt;
use crate::legacy::{self, LegacyRun};
use crate::pipeline::EncryptKey;
use crate::server::{self, BackupServer};
use crate::signing::ManifestSigner;
use crate::stop;
use crate::stores::ConfiguredStore;

use super::Report;

/// What became of one legacy run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub store: String,
    /// The original file, relative to the server's root.
    pub legacy: String,
    /// `imported`, `already imported`, `would import` (`--dry-run`) or `failed`.
    pub outcome: String,
    /// The Lifeboat run that holds it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub runs: Vec<Imported>,
}

impl Report for ImportReport {
    fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.runs {
            let detail = match (&r.run, &r.error) {
                (_, Some(e)) => format!(": {e}"),
                (Some(run), None) => format!(" as {run}"),
                (None, None) => String::new(),
            };
            out.push_str(&format!("{:<9} {} {}{detail}\n", r.store, r.legacy, r.outcome));
        }
        out
    }

    fn verdict(&self) -> Result<()> {
        let failed: Vec<&Imported> = self.runs.iter().filter(|r| r.outcome == "failed").collect();
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(Error::store(
                "import",
                format!(
                    "{} of {} backup(s) of the original scripts could not be imported (first: {}: {}); the others were, and the originals are untouched",
                    failed.len(),
                    self.runs.len(),
                    first.legacy,
                    first.error.as_deref().unwrap_or("")
                ),
            )),
        }
    }
}

pub struct ImportOptions<'a> {
    pub only: &'a [String],
    /// Only the legacy runs of this date (YYYY-MM-DD).
    pub from: Option<&'a str>,
    pub dry_run: bool,
}

pub async fn run(config: &Config, opts: ImportOptions<'_>) -> Result<ImportReport> {
    config.require_role(Role::Backup, "import")?;
    let passphrase = config.legacy.passphrase().map_err(|message| Error::Config { file: config.file.clone(), message })?;
    let stores: Vec<&ConfiguredStore> = config.configured_stores(opts.only)?.into_iter().filter(|s| s.kind() == StoreType::Dump).collect();
    if stores.is_empty() {
        return Err(Error::Usage(
            "no store of type dump is selected: import makes dump runs, and a differential store keeps its own repository".into(),
        ));
    }
    let key = EncryptKey::from_config(&config.encryption)?;
    let signer = config.signing.signer()?;
    let trust = config.signing.trust()?;
    let server = server::connect(&config.server).await?;
    let legacy_runs = legacy::find_runs(server.as_ref()).await?;
    let done = already_imported(server.as_ref(), &trust).await?;
    let context = config.store_context();

    let mut runs = Vec::new();
    for store in stores {
        let theirs =
            legacy_runs.iter().filter(|r| r.store == store.name && opts.from.is_none_or(|d| r.date.format("%Y-%m-%d").to_string() == d));
        for legacy in theirs {
            let mut entry =
                Imported { store: store.name.into(), legacy: legacy.path.clone(), outcome: String::new(), run: None, error: None };
            let imported = done.iter().find(|d| d.store == store.name && d.from.path == legacy.path && d.from.size == legacy.size);
            if let Some(imported) = imported {
                let id = &imported.run;
                entry.outcome = "already imported".into();
                entry.run = Some(id.clone());
            } else if opts.dry_run {
                entry.outcome = "would import".into();
            } else if stop::is_requested() {
                entry.outcome = "failed".into();
                entry.error = Some(format!("not started: stopped by {}", stop::signal_name()));
            } else {
                let job = import_one(server.as_ref(), store, legacy, &passphrase, &context, &key, &config.compression, &signer);
                let result = with_lock(server.as_ref(), &config.locking, store.folder(), "import", job).await;
                match result {
                    Ok(id) => {
                        eprintln!("{}: imported {} as {id}", store.name, legacy.path);
                        entry.outcome = "imported".into();
                        entry.run = Some(id);
                    }
                    Err(e) => {
                        tracing::error!("{}: {}: {e}", store.name, legacy.path);
                        entry.outcome = "failed".into();
                        entry.error = Some(e.to_string());
                    }
                }
            }
            runs.push(entry);
        }
    }
    if runs.is_empty() {
        eprintln!("no backup of the original scripts found on {} for the selected stores", server.describe());
    }
    Ok(ImportReport { runs })
}

/// A complete run imported earlier: from which file, of which store, as which run.
struct DoneImport {
    from: ImportedFrom,
    store: String,
    run: String,
}

/// The imports already on the server: every complete, trusted run whose manifest names its
/// original file. Damaged or untrusted runs do not count: their file is imported again.
async fn already_imported(server: &dyn BackupServer, trust: &crate::signing::Trust) -> Result<Vec<DoneImport>> {
    let reader = RunReader::new(server, trust);
    let mut done = Vec::new();
    for run in reader.list().await? {
        if let Some(manifest) = run.manifest()
            && let Some(from) = &manifest.imported_from
        {
            done.push(DoneImport { from: from.clone(), store: manifest.store.clone(), run: run.id.to_string() });
        }
    }
    Ok(done)
}

/// Reads one legacy run whole, then writes it as a new run of its date; returns the run's id.
#[allow(clippy::too_many_arguments)]
async fn import_one(
    server: &dyn BackupServer,
    store: &ConfiguredStore,
    legacy: &LegacyRun,
    passphrase: &crate::secret::SecretFile,
    context: &crate::stores::StoreContext,
    key: &EncryptKey,
    compression: &crate::pipeline::Compression,
    signer: &ManifestSigner,
) -> Result<String> {
    let adopted = fetch_and_adopt(server, legacy, store.store.as_ref(), passphrase, context).await?;
    let mut run = RunWriter::claim(server, legacy.date, store.name, store.folder(), key, compression).await?;
    run.imported(adopted.imported_from(), adopted.made_at());
    tracing::info!("{}: writing {} as {}/{}", store.name, legacy.path, server.describe(), run.path());
    let written = async {
        for file in &adopted.adopted.files {
            let plain = tokio::fs::File::open(&file.path).await.map_err(|e| Error::io(format!("opening {}", file.path.display()), e))?;
            run.put(&file.name, Box::new(plain)).await?;
        }
        Ok::<_, Error>(())
    };
    let written = stop::unless_requested(written).await.unwrap_or_else(|| Err(Error::Stopped(format!("{}: import stopped", store.name))));
    if let Err(e) = written {
        run.abort().await;
        return Err(e);
    }
    let id = run.id().to_string();
    let backup = adopted.adopted.backup;
    run.commit(StoreType::Dump, backup, signer).await?;
    Ok(id)
}
