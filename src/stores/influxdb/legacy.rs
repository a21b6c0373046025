//! Backups made by the original scripts (the chart's `influxdb/backup.sh`): the folder
//! `influxd backup -portable` writes for every database at once, tarred whole.
//!
//! Lifeboat keeps one portable backup per database, so the folder is split: per database, its
//! shard files and the shared metadata file, linked rather than copied, under a `.manifest` that
//! lists that database's shards only (`influxd restore -portable -db` restores one database of
//! the metadata). The counts are read from the shards' own TSM files, as a backup's are; the
//! retention policies and continuous queries are in the metadata only, which Lifeboat does not
//! read, so a restore of such a backup cannot compare them (it says so).

use std::collections::BTreeMap;
use std::path::Path;

use super::counts::count_portable_backup;
use super::influxd::write_tar;
use super::{InfluxDb, InfluxExtra, archive_name, err};
use crate::error::{Error, Result};
use crate::layout::check_file_name;
use crate::layout::manifest::{Counts, StoreBackup};
use crate::stores::{Adopted, AdoptedFile};

/// The time every point of a backup of the original scripts is counted before: the last day
/// InfluxDB can store, so that no point is left out.
pub(super) const COUNT_ALL_BEFORE: &str = "2262-04-10T00:00:00Z";

fn refused(what: String) -> Error {
    Error::Integrity(format!("the backup is not an influxd portable backup ({what}); nothing was changed"))
}

impl InfluxDb {
    pub(super) async fn adopt(&self, unpacked: &Path, out: &Path) -> Result<Adopted> {
        let (unpacked, out) = (unpacked.to_path_buf(), out.to_path_buf());
        let split = tokio::task::spawn_blocking(move || split_by_database(&unpacked, &out))
            .await
            .map_err(|e| err(format!("reading the backup: {e}")))??;
        let before_ns =
            chrono::DateTime::parse_from_rfc3339(COUNT_ALL_BEFORE).expect("a valid time").timestamp_nanos_opt().expect("in range");
        let mut files = Vec::new();
        let mut counts = Counts::new();
        let mut extra = InfluxExtra { schema_not_recorded: true, ..InfluxExtra::default() };
        for (db, folder) in split {
            // The scripts back up every database; the restore side's list says which to restore.
            let listed = self.cfg.databases.iter().any(|d| d == &db);
            if (self.cfg.databases.is_empty() && db == "_internal") || (!self.cfg.databases.is_empty() && !listed) {
                tracing::info!(
                    "influxdb: the backup also holds database {db}, which stores.influxdb.databases does not list; it is left out"
                );
                std::fs::remove_dir_all(&folder).map_err(|e| Error::io("removing a split folder", e))?;
                continue;
            }
            let (scan, tar_to) = (folder.clone(), folder.with_extension("tar"));
            let scratch =
                tempfile::tempdir_in(folder.parent().expect("a subfolder")).map_err(|e| Error::io("making a scratch folder", e))?;
            let counted = tokio::task::spawn_blocking(move || -> std::result::Result<_, String> {
                let counted = count_portable_backup(&scan, scratch.path(), before_ns)?;
                let file = std::fs::File::create_new(&tar_to).map_err(|e| format!("archiving it: {e}"))?;
                write_tar(&scan, std::io::BufWriter::new(file)).map_err(|e| format!("archiving it: {e}"))?;
                Ok(counted)
            })
            .await
            .map_err(|e| err(format!("counting {db}: {e}")))?
            .map_err(|why| Error::Integrity(format!("database {db} of the backup cannot be read: {why}; nothing was changed")))?;
            std::fs::remove_dir_all(&folder).map_err(|e| Error::io("removing a split folder", e))?;
            counts.insert(db.clone(), counted.counts);
            extra.databases.insert(db.clone(), archive_name(&db, 1));
            extra.counted_before.insert(db.clone(), COUNT_ALL_BEFORE.into());
            if counted.deleted_in_files > 0 {
                extra.deleted_values_in_files.insert(db.clone(), counted.deleted_in_files);
            }
            files.push(AdoptedFile { name: archive_name(&db, 1), path: folder.with_extension("tar") });
        }
        for db in self.cfg.databases.iter().filter(|d| !counts.contains_key(*d)) {
            tracing::warn!(
                "influxdb: the backup holds no shard of database {db}, which stores.influxdb.databases lists; it is not restored"
            );
        }
        if files.is_empty() {
            return Err(refused("it holds no shard of any database Lifeboat restores".into()));
        }
        Ok(Adopted {
            files,
            backup: StoreBackup::new("field values", counts, &extra).tool("influxd", "backup -portable (original scripts)"),
        })
    }
}

/// Splits the portable backup in `dir` into one folder per database under `out`.
fn split_by_database(dir: &Path, out: &Path) -> Result<BTreeMap<String, std::path::PathBuf>> {
    let manifests: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("reading the unpacked backup", e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest"))
        .collect();
    let [manifest] = &manifests[..] else {
        return Err(refused(format!("{} .manifest files instead of one", manifests.len())));
    };
    let manifest_name = manifest.file_name().to_string_lossy().into_owned();
    let text = std::fs::read(manifest.path()).map_err(|e| Error::io("reading the backup's manifest", e))?;
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| refused(format!("its manifest is not JSON: {e}")))?;
    let meta =
        value.pointer("/meta/fileName").and_then(|v| v.as_str()).ok_or_else(|| refused("its manifest names no metadata file".into()))?;
    let shards = value.get("files").and_then(|v| v.as_array()).cloned().unwrap_or_default();
    let mut by_db: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for shard in shards {
        let db = shard.get("database").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let file = shard.get("fileName").and_then(|v| v.as_str()).unwrap_or("");
        if db.is_empty() || check_file_name(file).is_err() || !dir.join(file).is_file() {
            return Err(refused(format!(
                "its manifest lists a shard `{}` of database `{}` that it does not hold",
                file.escape_debug(),
                db.escape_debug()
            )));
        }
        by_db.entry(db).or_default().push(shard);
    }
    if check_file_name(meta).is_err() || !dir.join(meta).is_file() {
        return Err(refused(format!("its metadata file `{}` is missing", meta.escape_debug())));
    }
    let mut folders = BTreeMap::new();
    for (i, (db, shards)) in by_db.into_iter().enumerate() {
        let folder = out.join(format!("influxdb-{i}"));
        std::fs::create_dir(&folder).map_err(|e| Error::io("making a folder", e))?;
        for name in std::iter::once(meta).chain(shards.iter().filter_map(|s| s.get("fileName").and_then(|v| v.as_str()))) {
            link_or_copy(&dir.join(name), &folder.join(name))?;
        }
        let mut own = value.clone();
        own["files"] = serde_json::Value::Array(shards);
        std::fs::write(folder.join(&manifest_name), serde_json::to_vec(&own).expect("JSON serialises"))
            .map_err(|e| Error::io("writing a manifest", e))?;
        folders.insert(db, folder);
    }
    Ok(folders)
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map(|_| ()).map_err(|e| Error::io(format!("copying {}", from.display()), e))
}
