//! Backups made by the original scripts (the chart's `mongo/backup.sh`): one `<db>.gz` per
//! database, `mongodump --gzip --archive`, which gzips the whole archive stream.
//!
//! That script ignores mongodump's exit status, so a dump that failed still left an archive
//! with no collection in it (or no bytes at all) and was uploaded as a backup: such an archive is
//! refused here, by name, instead of dropping a database to restore nothing into it.

use std::collections::BTreeMap;
use std::path::Path;

use super::archive::{self, Event};
use super::{MongoDb, MongoExtra, archive_file_name, err};
use crate::error::{Error, Result};
use crate::layout::manifest::{Counts, StoreBackup};
use crate::pipeline::bridge::blocking_reader_to_async;
use crate::stores::{Adopted, AdoptedFile};

fn refused(what: String) -> Error {
    Error::Integrity(format!("{what}; nothing was changed"))
}

impl MongoDb {
    pub(super) async fn adopt(&self, unpacked: &Path, out: &Path) -> Result<Adopted> {
        let mut archives = BTreeMap::new();
        for entry in std::fs::read_dir(unpacked).map_err(|e| Error::io("reading the unpacked backup", e))? {
            let entry = entry.map_err(|e| Error::io("reading the unpacked backup", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            match name.strip_suffix(".gz") {
                Some(db) if is_file && archive::valid_database_name(db) => {
                    archives.insert(db.to_string(), entry.path());
                }
                _ => tracing::warn!(
                    "mongodb: the backup also holds `{}`, which is not a database archive; it is left out",
                    name.escape_debug()
                ),
            }
        }
        if archives.is_empty() {
            return Err(refused(
                "the backup holds no database archive (`<database>.gz`): the original backup script uploads such an archive when every mongodump fails (the server could not be reached), it is not a backup".into(),
            ));
        }
        let mut files = Vec::new();
        let mut counts = Counts::new();
        let mut extra = MongoExtra { databases: BTreeMap::new(), format: "mongodump-archive".into() };
        let mut tool = String::new();
        for (db, gz) in &archives {
            let plain = out.join(archive_file_name(db));
            let size = gunzip(gz, &plain, db).await?;
            let (found, dumped_by) = count_archive(&plain, db, size).await?;
            tool = dumped_by;
            counts.insert(db.clone(), found);
            extra.databases.insert(db.clone(), archive_file_name(db));
            files.push(AdoptedFile { name: archive_file_name(db), path: plain });
        }
        Ok(Adopted { files, backup: StoreBackup::new("documents", counts, &extra).tool("mongodump", tool) })
    }
}

/// `<db>.gz` decompressed into `plain`; returns the archive's size.
async fn gunzip(gz: &Path, plain: &Path, db: &str) -> Result<u64> {
    let (gz, plain, label) = (gz.to_path_buf(), plain.to_path_buf(), format!("{db}.gz"));
    tokio::task::spawn_blocking(move || {
        let input = std::fs::File::open(&gz).map_err(|e| Error::io(format!("opening {label}"), e))?;
        if input.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
            return Err(refused(format!(
                "{label} is empty: the original backup script uploads such a file when mongodump fails, it is not a backup of the database"
            )));
        }
        let mut output = std::fs::File::create_new(&plain).map_err(|e| Error::io(format!("writing {}", plain.display()), e))?;
        let mut decoder = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, input));
        let size = std::io::copy(&mut decoder, &mut output).map_err(|e| refused(format!("{label} is not a whole gzip stream ({e})")))?;
        if size == 0 {
            return Err(refused(format!(
                "{label} holds an empty gzip stream: the original backup script uploads such a file when mongodump fails after connecting, it is not a backup of the database"
            )));
        }
        Ok(size)
    })
    .await
    .map_err(|e| err(format!("decompressing {db}.gz: {e}")))?
}

/// Reads a whole mongodump archive: it must hold database `db` and at least one collection.
/// Returns the documents per collection and the mongodump version that wrote it.
async fn count_archive(path: &Path, db: &str, size: u64) -> Result<(BTreeMap<String, u64>, String)> {
    let label = format!("{db}.gz");
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut reader = archive::Reader::open(blocking_reader_to_async(Box::new(std::io::BufReader::with_capacity(1 << 20, file))))
        .await
        .map_err(|e| refused(format!("{label} is not a mongodump archive ({e})")))?;
    if reader.collections.is_empty() {
        return Err(refused(format!(
            "{label} holds no collection ({size} bytes, a bare archive header): the original backup script uploads such an archive when mongodump fails, it is not a backup of {db}"
        )));
    }
    if let Some(other) = reader.collections.iter().find(|c| c.db != db) {
        return Err(refused(format!(
            "{label} holds {}.{}, which is not in database {db}",
            other.db.escape_debug(),
            other.collection.escape_debug()
        )));
    }
    let mut counts: BTreeMap<String, u64> = reader.collections.iter().map(|c| (c.collection.clone(), 0)).collect();
    while let Some(event) = reader.next_event(1000, 4 << 20).await.map_err(|e| refused(format!("{label}: {e}")))? {
        if let Event::End { collection, count } = event {
            counts.insert(collection, count);
        }
    }
    Ok((counts, reader.tool_version.clone()))
}
