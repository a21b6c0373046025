//! A backup of the original scripts made ready for a restore or an import: downloaded and
//! unpacked whole into a private folder, then turned by its store into the store's own plain
//! files, counted from their data ([`Store::adopt_legacy`]). Nothing here touches a target: a
//! wrong passphrase, a cut-short file or an archive without a dump fails before anything does.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::unpack::fetch_and_unpack;
use super::{Era, LegacyRun};
use crate::error::{Error, Result};
use crate::layout::manifest::{FORMAT_VERSION, FileEntry, ImportedFrom, Manifest, StoreType};
use crate::secret::SecretFile;
use crate::server::BackupServer;
use crate::stores::settings::free_bytes;
use crate::stores::{Adopted, RestoreFiles, Store, StoreContext};

/// A legacy run, unpacked and adopted by its store, in a private folder removed on drop.
pub struct AdoptedRun {
    pub run: LegacyRun,
    pub adopted: Adopted,
    work: tempfile::TempDir,
}

/// Downloads `run`, decrypts it with the passphrase, unpacks it whole and has `store` adopt it.
pub async fn fetch_and_adopt(
    server: &dyn BackupServer,
    run: &LegacyRun,
    store: &dyn Store,
    passphrase: &SecretFile,
    ctx: &StoreContext,
) -> Result<AdoptedRun> {
    let work = ctx.private_dir("lifeboat-legacy-")?;
    let (unpacked, out) = (work.path().join("unpacked"), work.path().join("adopted"));
    for dir in [&unpacked, &out] {
        std::fs::create_dir(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    // A gzip stream can grow far beyond its size: it may fill the work folder, not more.
    let limit = free_bytes(work.path()).map_or(u64::MAX, |free| free - free / 10);
    tracing::info!(
        "{}: downloading, decrypting and unpacking {} ({} bytes, made by the original scripts) from {}",
        run.store,
        run.path,
        run.size,
        server.describe()
    );
    let files = fetch_and_unpack(server, run, passphrase.read()?, &unpacked, limit).await?;
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    tracing::info!("{}: {} decrypted whole: {} file(s), {bytes} bytes; reading what it holds", run.store, run.path, files.len());
    let shaped = match run.era {
        Era::Chart => unpacked,
        Era::Swarm => {
            let shaped = work.path().join("shaped");
            std::fs::create_dir(&shaped).map_err(|e| Error::io(format!("creating {}", shaped.display()), e))?;
            let label = run.date.format("%Y-%m-%d").to_string();
            super::swarm::reshape(&unpacked, run.store, &label, &shaped).map_err(|e| name_the_run(e, run))?;
            shaped
        }
    };
    let adopted = store.adopt_legacy(&shaped, &out).await.map_err(|e| name_the_run(e, run))?;
    Ok(AdoptedRun { run: run.clone(), adopted, work })
}

/// Puts the run's path into a store's refusal, so the line says which backup it was.
fn name_the_run(e: Error, run: &LegacyRun) -> Error {
    match e {
        Error::Integrity(message) => Error::Integrity(format!("{}: {message}", run.path)),
        Error::NotFound(message) => Error::NotFound(format!("{}: {message}", run.path)),
        Error::Store { store, message } => Error::Store { store, message: format!("{}: {message}", run.path) },
        other => other,
    }
}

impl AdoptedRun {
    /// When the original backup was made, as far as its name tells: the start of its date (the
    /// file records no time), so it never looks newer than it is.
    pub fn made_at(&self) -> DateTime<Utc> {
        self.run.date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
    }

    pub fn imported_from(&self) -> ImportedFrom {
        ImportedFrom { path: self.run.path.clone(), size: self.run.size }
    }

    /// The plain files, for a store's restore.
    pub fn restore_files(&self) -> RestoreFiles {
        RestoreFiles::plain_files(self.work.path().to_path_buf(), &self.adopted.files)
    }

    /// The manifest a restore of it goes by: the store's facts and counts, the plain files.
    /// Never written anywhere; `lifeboat import` writes a real one.
    pub fn manifest(&self, store: &str) -> Result<Manifest> {
        let mut files = Vec::new();
        for f in &self.adopted.files {
            let size = size_of(&f.path)?;
            files.push(FileEntry { name: f.name.clone(), size, sha256: String::new(), raw_size: size });
        }
        let backup = &self.adopted.backup;
        Ok(Manifest {
            format_version: FORMAT_VERSION,
            store: store.to_string(),
            kind: StoreType::Dump,
            id: self.run.date.format("%Y-%m-%d").to_string(),
            started_at: self.made_at().to_rfc3339(),
            finished_at: self.made_at().to_rfc3339(),
            lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
            tool_versions: backup.tool_versions.clone(),
            compression: "gzip (original scripts)".into(),
            encryption: "openssl aes-256-cbc (original scripts)".into(),
            files,
            count_unit: backup.count_unit.clone(),
            counts: backup.counts.clone(),
            extra: backup.extra.clone(),
            imported_from: Some(self.imported_from()),
            signature: None,
        })
    }
}

fn size_of(path: &Path) -> Result<u64> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}
