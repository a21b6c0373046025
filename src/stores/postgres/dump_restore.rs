//! Restoring one database from its `pg_dump -Fc` file: streamed into one pg_restore, or decoded
//! to a private file first and restored by several pg_restore jobs.
//!
//! Parallel jobs pay when the dump is large: pg_restore then loads one table while it builds
//! another's indexes, on as many server cores as there are jobs (on `scripts/bench/postgres`'s
//! 1.5 GB database, two jobs take 19 s where one takes 29 s). They need a seekable file, so the
//! dump is decoded into the restore's private folder while it downloads
//! ([`crate::layout::RunReader::fetch_verified_decoded`]), before anything is dropped: a full disk
//! or a bad file fails the restore while the database is still intact. Small dumps, and a work
//! folder without room for the decoded dump, are streamed with one job.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

use super::{Postgres, err};
use crate::error::Result;
use crate::external;
use crate::stores::RestoreFiles;
use crate::stores::settings::free_bytes;
use crate::units::NumberOrText;

/// `stores.postgres.restore_jobs`: a number, or `auto` (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreJobs {
    /// One job per CPU core (2 to 8) for dumps of [`AUTO_PARALLEL_FROM`] bytes or more, else one.
    #[default]
    Auto,
    Jobs(u32),
}

/// Below this decoded size a dump is streamed: decoding it first costs more than a second job saves.
pub const AUTO_PARALLEL_FROM: u64 = 64 << 20;

impl<'de> Deserialize<'de> for RestoreJobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match NumberOrText::<u32>::deserialize(d)? {
            NumberOrText::Number(n) => Ok(RestoreJobs::Jobs(n)),
            NumberOrText::Text(w) if w == "auto" => Ok(RestoreJobs::Auto),
            NumberOrText::Text(w) => Err(D::Error::custom(format!("`{w}` is neither a number of jobs nor `auto`"))),
        }
    }
}

impl RestoreJobs {
    /// The jobs for a dump of `raw_size` decoded bytes.
    pub fn for_dump(self, raw_size: u64) -> u32 {
        match self {
            RestoreJobs::Jobs(n) => n,
            RestoreJobs::Auto if raw_size < AUTO_PARALLEL_FROM => 1,
            RestoreJobs::Auto => std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).clamp(2, 8),
        }
    }
}

/// How a dump reaches pg_restore.
pub enum Feed {
    Stream,
    /// Decoded into `plain` (removed when this is dropped), restored by `jobs` jobs.
    Parallel {
        plain: PlainFile,
        jobs: u32,
    },
}

/// A decoded dump in the private restore folder, removed when dropped.
pub struct PlainFile(PathBuf);

impl Drop for PlainFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Postgres {
    /// The pg_restore jobs for a dump of `raw_size` decoded bytes restored through `work_dir`:
    /// one, with a warning, when the folder has no room for the decoded dump. Decided once,
    /// before the download, which then makes the decoded copy (`wants_plain_file`).
    pub(super) fn jobs_for(&self, file: &str, raw_size: u64, work_dir: &Path) -> u32 {
        let jobs = self.cfg.restore_jobs.for_dump(raw_size);
        // Room for the decoded dump, with some to spare for everything else on that disk.
        let needed = raw_size + raw_size / 10 + (64 << 20);
        match free_bytes(work_dir) {
            Some(free) if jobs > 1 && free < needed => {
                tracing::warn!(
                    "postgres: {file}: streaming into one pg_restore job: a parallel restore decodes the dump first and needs {} MiB free in {}, which has {} MiB (set work_dir to a folder with room)",
                    needed >> 20,
                    work_dir.display(),
                    free >> 20
                );
                1
            }
            _ => jobs,
        }
    }

    /// How `file` (`raw_size` decoded bytes, from the verified manifest) is fed to pg_restore:
    /// in parallel from the copy decoded during the download, when the download made one (it was
    /// checked against the manifest there), streamed otherwise. Touches nothing on the server.
    pub(super) fn feed(&self, db: &str, file: &str, raw_size: u64, files: &RestoreFiles) -> Result<Feed> {
        // The download makes the copy only when this comes to more than one job; an adopted
        // backup of the original scripts is a plain file already, and follows restore_jobs too.
        let jobs = self.cfg.restore_jobs.for_dump(raw_size);
        let Some(path) = files.plain(file)?.filter(|_| jobs > 1) else {
            return Ok(Feed::Stream);
        };
        tracing::info!("postgres: {db}: restoring with {jobs} parallel pg_restore jobs from the dump decoded during the download");
        Ok(Feed::Parallel { plain: PlainFile(path), jobs })
    }

    /// Drops `db` and restores it from `feed`. Everything that can fail without the server's
    /// help (the run, the file, the decoding) has been checked before this is called.
    pub(super) async fn restore_database(&self, db: &str, file: &str, feed: Feed, files: &RestoreFiles) -> Result<()> {
        let maintenance = self.maintenance_db();
        if db == maintenance {
            return Err(err(format!(
                "cannot restore database {db}: it is the maintenance database of stores.postgres.url; point the url at another database (e.g. /postgres or /template1)"
            )));
        }
        let admin = self.connect(&maintenance).await?;
        admin
            .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", &[&db])
            .await
            .map_err(|e| err(format!("cannot end connections to {db}: {e}")))?;
        let quoted = format!("\"{}\"", db.replace('"', "\"\""));
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            .await
            .map_err(|e| err(format!("cannot drop database {db}: {e}")))?;
        tracing::info!("postgres: dropped {db}; restoring it with pg_restore");

        // --create recreates the database with its original encoding, locale, owner and settings.
        let mut args: Vec<String> = vec!["--create".into(), "--exit-on-error".into(), "--dbname".into(), self.url_for(&maintenance)];
        match feed {
            Feed::Stream => self.tools.run_with_input(external::PG_RESTORE.name, &args, files.open(file)?).await,
            Feed::Parallel { plain, jobs } => {
                args.push(format!("--jobs={jobs}"));
                args.push(plain.0.display().to_string());
                self.tools.run_with_input(external::PG_RESTORE.name, &args, Box::new(std::io::empty())).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_jobs_are_a_number_or_auto() {
        let parse = |yaml: &str| serde_norway::from_str::<RestoreJobs>(yaml).map_err(|e| e.to_string());
        assert_eq!(parse("3"), Ok(RestoreJobs::Jobs(3)));
        assert_eq!(parse("auto"), Ok(RestoreJobs::Auto));
        assert!(parse("many").unwrap_err().contains("`many` is neither a number of jobs nor `auto`"));
        assert_eq!(RestoreJobs::Jobs(1).for_dump(10 << 30), 1);
        assert_eq!(RestoreJobs::Auto.for_dump(AUTO_PARALLEL_FROM - 1), 1, "small dumps stream");
        let big = RestoreJobs::Auto.for_dump(AUTO_PARALLEL_FROM);
        assert!((2..=8).contains(&big), "{big}");
    }
}
