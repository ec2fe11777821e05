//! Incremental backups on a device: snapshots in the repository at the device's store
//! (`lockbox-repo`), with the catalog's end kept in the home so that a storage that hides newer
//! snapshots, or swaps in another repository, is caught on this device.

use std::path::Path;

use lockbox_archive::ArchiveStats;
use lockbox_repo::{Backup, Catalog, CheckReport, Repository, SnapshotEntry};

use crate::backup::{OnProgress, Progress, Step};
use crate::device::{Device, DeviceError};

impl Device {
    /// Backs up `dir` (default: the directory of the last backup) as a new snapshot, storing
    /// only chunks the repository does not hold yet; creates the repository on first use.
    /// The catalog's new end is kept in the home.
    pub fn backup_snapshot(
        &mut self,
        dir: Option<&Path>,
        on: OnProgress<'_>,
    ) -> Result<Backup, DeviceError> {
        if self.home.next_key()?.is_some() {
            return Err(DeviceError::RotationPending);
        }
        let dir = self.source_dir(dir)?;
        let total = lockbox_archive::scan_size(&dir).ok();
        let repo = Repository::open_or_init(self.store()?, self.rt.handle().clone(), &self.key)?;
        let mut state = self.home.repo_state()?;
        let mut tick = |bytes| {
            on(Progress {
                step: Step::Backup,
                bytes,
                total,
            })
        };
        let backup = repo.backup(
            &dir,
            state.device,
            state.mark.as_ref(),
            lockbox_proto::unix_now_ms(),
            &mut tick,
        )?;
        state.mark = Some(backup.mark);
        self.home.save_repo_state(&state)?;
        self.remember_dir(dir)?;
        Ok(backup)
    }

    /// The verified catalog, checked against where this device last saw it end (and the mark
    /// moved forward to its end now).
    pub fn snapshots(&self) -> Result<(Repository, Catalog), DeviceError> {
        let repo = Repository::open(self.store()?, self.rt.handle().clone(), &self.key)?;
        let catalog = repo.catalog()?;
        let mut state = self.home.repo_state()?;
        if let Some(mark) = &state.mark {
            catalog.check_mark(mark)?;
        }
        if state.mark.is_none_or(|m| m.seq < catalog.len()) {
            state.mark = Some(catalog.mark());
            self.home.save_repo_state(&state)?;
        }
        Ok((repo, catalog))
    }

    /// Restores the snapshot whose id starts with `id` (default: the newest) into `dest`.
    pub fn restore_snapshot(
        &self,
        dest: &Path,
        id: Option<&str>,
        on: OnProgress<'_>,
    ) -> Result<(SnapshotEntry, ArchiveStats), DeviceError> {
        lockbox_archive::check_destination(dest).map_err(lockbox_repo::RepoError::from)?;
        let (repo, catalog) = self.snapshots()?;
        let entry = match id {
            Some(id) => catalog.find(id, repo.url())?,
            None => catalog
                .latest()
                .ok_or_else(|| lockbox_repo::RepoError::NoSnapshot {
                    url: repo.url().to_owned(),
                })?,
        };
        let total = Some(entry.bytes);
        let mut tick = |bytes| {
            on(Progress {
                step: Step::Restore,
                bytes,
                total,
            })
        };
        let stats = repo.restore(&entry, dest, &mut tick)?;
        Ok((entry, stats))
    }

    /// Verifies the repository (see [`Repository::check`]) after checking its catalog against
    /// this device's mark.
    pub fn check_repository(&self, read_data: bool) -> Result<CheckReport, DeviceError> {
        let (repo, _) = self.snapshots()?;
        Ok(repo.check(read_data)?)
    }
}
