//! Backups made by OpenCRVS's original scripts, which an operator switching to Lifeboat already
//! has on the backup server (SPEC.md, "Backups made by the original scripts"). The Kubernetes
//! chart's scripts write one file per store and day:
//! `<server root>/<YYYY-MM-DD>/<store>_backup_<YYYY-MM-DD>.tar.gz.enc`, `tar czf` then
//! `openssl enc -aes-256-cbc -pbkdf2 -salt` ([`openssl_enc`]).
//!
//! The Docker Swarm era's script (opencrvs-countryconfig `infrastructure/backups/backup.sh`)
//! wrote one archive per day for every store, `<root>/<YYYY-MM-DD>/<YYYY-MM-DD>.tar.gz.enc`, the
//! same encryption, holding `postgres/events-<date>.dump`, `mongo/<db>-<date>.gz` and, in its
//! older versions, `influxdb/` ([`swarm`] reshapes one store's part like the chart's files).
//!
//! They sit in the same date folders as Lifeboat's runs, as files where Lifeboat's runs are
//! folders, so each reader passes over the other's. Everything here is read as untrusted: a file
//! counts only when its whole name is one the scripts write, for the date of its folder.

pub mod adopt;
pub mod openssl_enc;
pub mod swarm;
pub mod unpack;

use std::path::PathBuf;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::error::Result;
use crate::secret::SecretFile;
use crate::server::{BackupServer, join};

/// The `legacy:` block: how to read the original scripts' backups.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySettings {
    /// The original scripts' passphrase (the chart's `backup_encryption_key` secret), as a file.
    /// Without it their backups are listed but cannot be restored or imported.
    pub passphrase_file: Option<PathBuf>,
}

impl LegacySettings {
    /// The passphrase, or why a command that needs it cannot run.
    pub fn passphrase(&self) -> std::result::Result<SecretFile, String> {
        match &self.passphrase_file {
            Some(path) => Ok(SecretFile::new("legacy passphrase", path)),
            None => Err("legacy.passphrase_file is not set: give the original scripts' passphrase (the chart's \
                 backup_encryption_key secret) as a file to restore or import their backups"
                .into()),
        }
    }
}

/// Which of the original scripts made a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// The Kubernetes chart: one file per store and day.
    Chart,
    /// The Docker Swarm scripts: one file per day holding every store (each listed per store).
    Swarm,
}

/// The stores a Swarm-era archive is listed for (its MinIO part is MinIO's raw data folder,
/// restored by hand: README, "Switching from the original scripts").
pub const SWARM_STORES: [&str; 3] = ["postgres", "mongodb", "influxdb"];

/// The scripts' name of each store, and Lifeboat's.
pub const STORES: [(&str, &str); 4] = [("postgres", "postgres"), ("mongo", "mongodb"), ("influxdb", "influxdb"), ("minio", "minio")];

/// One file the chart's scripts made, as found on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyRun {
    pub date: NaiveDate,
    /// Lifeboat's name of the store (`mongodb` where the scripts say `mongo`).
    pub store: &'static str,
    /// Relative to the server's root.
    pub path: String,
    pub size: u64,
    pub era: Era,
}

/// The date and store of a file named `<store>_backup_<date>.tar.gz.enc` in the date folder
/// `folder`; None for any other name.
pub fn parse_name(folder: &str, file: &str) -> Option<(NaiveDate, &'static str)> {
    let date = parse_date(folder)?;
    let rest = file.strip_suffix(&format!("_backup_{folder}.tar.gz.enc"))?;
    let (_, store) = STORES.iter().find(|(theirs, _)| *theirs == rest)?;
    Some((date, store))
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    // Only the canonical spelling the scripts write (`date +%Y-%m-%d`), nothing chrono tolerates.
    (date.format("%Y-%m-%d").to_string() == text).then_some(date)
}

/// Every file of the chart's scripts on the server, oldest first (by date, then store).
pub async fn find_runs(server: &dyn BackupServer) -> Result<Vec<LegacyRun>> {
    let mut runs = Vec::new();
    for day in server.list("").await? {
        if !day.is_dir || parse_date(&day.name).is_none() {
            continue;
        }
        for file in server.list(&day.name).await? {
            if file.is_dir {
                continue;
            }
            let path = join(&day.name, &file.name);
            if let Some((date, store)) = parse_name(&day.name, &file.name) {
                runs.push(LegacyRun { date, store, path, size: file.size, era: Era::Chart });
            } else if file.name == format!("{}.tar.gz.enc", day.name) {
                let date = parse_date(&day.name).expect("checked above");
                for store in SWARM_STORES {
                    runs.push(LegacyRun { date, store, path: path.clone(), size: file.size, era: Era::Swarm });
                }
            }
        }
    }
    runs.sort_by(|a, b| (a.date, a.store).cmp(&(b.date, b.store)));
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_the_scripts_write_count() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(parse_name("2026-12-01", "postgres_backup_2026-12-01.tar.gz.enc"), Some((day, "postgres")));
        assert_eq!(parse_name("2026-12-01", "mongo_backup_2026-12-01.tar.gz.enc"), Some((day, "mongodb")));
        assert_eq!(parse_name("2026-12-01", "influxdb_backup_2026-12-01.tar.gz.enc"), Some((day, "influxdb")));
        assert_eq!(parse_name("2026-12-01", "minio_backup_2026-12-01.tar.gz.enc"), Some((day, "minio")));
        for (folder, file) in [
            ("2026-12-01", "postgres_backup_2026-12-02.tar.gz.enc"),
            ("2026-12-01", "mongodb_backup_2026-12-01.tar.gz.enc"),
            ("2026-12-01", "../postgres_backup_2026-12-01.tar.gz.enc"),
            ("2026-12-01", "postgres_backup_2026-12-01.tar.gz"),
            ("2026-12-01", "xpostgres_backup_2026-12-01.tar.gz.enc"),
            ("2026-12-1", "postgres_backup_2026-12-1.tar.gz.enc"),
            ("2026-13-01", "postgres_backup_2026-13-01.tar.gz.enc"),
            ("..", "postgres_backup_...tar.gz.enc"),
        ] {
            assert_eq!(parse_name(folder, file), None, "{folder}/{file}");
        }
    }
}
