//! The Docker Swarm era's archives: one per day for every store. Its scripts name each dump after
//! the run's label (the date): `postgres/events-<date>.dump`, `mongo/<db>-<date>.gz`, and in older
//! versions an `influxdb/` folder holding the `influxd backup -portable` folder. [`reshape`] moves
//! one store's part into a folder shaped like the chart's files (`<db>.dump`, `<db>.gz`, the
//! portable folder's files), which the store then adopts as it adopts those.

use std::path::Path;

use crate::error::{Error, Result};

fn missing(store: &str, folder: &str) -> Error {
    Error::NotFound(format!(
        "this archive of the original Docker Swarm scripts holds no {folder}/ folder, so no {store} backup (their later versions back up no InfluxDB): choose another with --from, or leave {store} out with --store; nothing was changed"
    ))
}

/// Moves `store`'s part of the unpacked archive `unpacked` (label `label`) into `into`.
pub fn reshape(unpacked: &Path, store: &str, label: &str, into: &Path) -> Result<()> {
    match store {
        "postgres" => rename_dumps(&unpacked.join("postgres"), store, "postgres", &format!("-{label}.dump"), ".dump", into),
        "mongodb" => rename_dumps(&unpacked.join("mongo"), store, "mongo", &format!("-{label}.gz"), ".gz", into),
        "influxdb" => {
            let base = unpacked.join("influxdb");
            if !base.is_dir() {
                return Err(missing(store, "influxdb"));
            }
            // The portable folder is `influxdb/` itself or one folder below it (`influxdb/<label>/`).
            let mut candidates = vec![base.clone()];
            candidates.extend(read_dir(&base)?.into_iter().filter(|e| e.is_dir()));
            let folder = candidates
                .into_iter()
                .find(|dir| read_dir(dir).is_ok_and(|files| files.iter().any(|f| f.extension().is_some_and(|x| x == "manifest"))));
            let Some(folder) = folder else {
                return Err(Error::Integrity(
                    "the archive's influxdb/ folder holds no influxd portable backup (no .manifest file); nothing was changed".into(),
                ));
            };
            for file in read_dir(&folder)?.into_iter().filter(|f| f.is_file()) {
                let name = file.file_name().expect("a listed file has a name");
                std::fs::rename(&file, into.join(name)).map_err(|e| Error::io("moving an unpacked file", e))?;
            }
            Ok(())
        }
        other => Err(Error::Usage(format!("the original Docker Swarm scripts' archives hold no {other} backup Lifeboat restores"))),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    entries.map(|e| e.map(|e| e.path()).map_err(|e| Error::io(format!("reading {}", dir.display()), e))).collect()
}

/// `<db><suffix>` files of `dir` moved to `into` as `<db><plain>`; others are named and left.
fn rename_dumps(dir: &Path, store: &str, folder: &str, suffix: &str, plain: &str, into: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(missing(store, folder));
    }
    for file in read_dir(dir)? {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match name.strip_suffix(suffix) {
            Some(db) if file.is_file() && !db.is_empty() => {
                std::fs::rename(&file, into.join(format!("{db}{plain}"))).map_err(|e| Error::io("moving an unpacked file", e))?;
            }
            _ => tracing::warn!(
                "{store}: the archive's {folder}/ folder also holds `{}`, not named for this run; it is left out",
                name.escape_debug()
            ),
        }
    }
    Ok(())
}
