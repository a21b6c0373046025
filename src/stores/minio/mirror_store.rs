//! The mirror as a [`DifferentialStore`]: what each command asks of MinIO `differential`, handed
//! to the run's backup (`mirror_backup.rs`), restore (`mirror_restore.rs`), listing
//! (`mirror.rs`), prune and verify (`mirror_prune.rs`).

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::Utc;

use super::mirror::{MIRROR_FOLDER, list_mirror_runs};
use super::mirror_format::MirrorId;
use super::{Minio, err};
use crate::error::{Error, Result};
use crate::stores::{
    BackupAccess, BackupKind, DifferentialStore, RepoAccess, RepoBackup, RepoBackupDone, RepoPrepared, RepoPruned, RepoRestoreDone,
    RepoRestoreRequest, RepoVerified,
};

impl Minio {
    pub(super) fn mirror_folder(&self) -> &str {
        self.mirror.as_ref().map(|(folder, _)| folder.as_str()).unwrap_or(MIRROR_FOLDER)
    }
}

#[async_trait]
impl DifferentialStore for Minio {
    async fn backup(&self, kind: Option<BackupKind>, _today: chrono::NaiveDate, access: &BackupAccess<'_>) -> Result<RepoBackupDone> {
        if let Some(kind) = kind {
            tracing::info!("minio: --type {kind} is for PostgreSQL; a mirror run always uploads what changed");
        }
        self.mirror_backup(access).await
    }

    async fn check_target(&self, request: RepoRestoreRequest<'_>, access: &RepoAccess<'_>) -> Result<RepoPrepared> {
        if let Some(time) = request.target_time {
            return Err(Error::Usage(format!(
                "--target-time {time} is for PostgreSQL; restore minio with --from ID (see `lifeboat list`)"
            )));
        }
        Ok(Box::new(self.mirror_prepare(request.from, access, true).await?))
    }

    async fn restore(&self, _: RepoRestoreRequest<'_>, access: &RepoAccess<'_>, prepared: RepoPrepared) -> Result<RepoRestoreDone> {
        let prepared = prepared.downcast().map_err(|_| err("the restore was not prepared by the mirror (a bug)"))?;
        self.mirror_restore(*prepared, access).await
    }

    async fn backups(&self, access: &RepoAccess<'_>) -> Result<Vec<RepoBackup>> {
        list_mirror_runs(access.server, self.mirror_folder(), access.trust).await
    }

    /// Removes the runs not in `keep` (never the newest complete one, nor a run still young enough
    /// to be running) and every data file no kept run refers to. The caller holds the store's lock.
    async fn prune(&self, access: &RepoAccess<'_>, keep: &BTreeSet<String>, dry_run: bool) -> Result<RepoPruned> {
        let server = access.server;
        let before = list_mirror_runs(server, self.mirror_folder(), access.trust).await?;
        let pruned = super::mirror_prune::prune_mirror(server, self.mirror_folder(), access.trust, keep, dry_run, Utc::now()).await?;
        let removed = before.into_iter().filter(|b| pruned.runs.contains(&b.label)).collect();
        Ok(RepoPruned { removed, freed_bytes: pruned.bytes })
    }

    async fn verify(&self, access: &RepoAccess<'_>, from: Option<&str>, deep: bool) -> Result<Option<RepoVerified>> {
        if from.is_some_and(|id| MirrorId::parse(id).is_none()) {
            return Ok(None);
        }
        match deep {
            false => super::mirror_prune::verify_at_rest(access.server, self.mirror_folder(), access.trust, from).await,
            true => self.verify_deep(access, from).await,
        }
    }
}
