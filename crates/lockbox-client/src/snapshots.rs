//! Incremental backups on a device: snapshots in the repository at the device's store
//! (`lockbox-repo`), with the catalog's end kept in the home so that a storage that hides newer
//! snapshots, or swaps in another repository, is caught on this device.

use std::path::Path;

use lockbox_archive::ArchiveStats;
use lockbox_repo::{Backup, Catalog, CheckReport, PruneReport, Purpose, Repository, SnapshotEntry};

use crate::backup::{OnProgress, Progress, Step};
use crate::device::{Device, DeviceError};
use crate::home::RepoState;

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
        let _run = self.home.lock_run()?;
        // Saved before the backup, so a first backup's device id is the one kept.
        let state = self.home.update_repo_state(|_| {})?;
        let repo = self.open_repository(&state, true)?;
        // This device's own lock in the repository can only be a dead run's: we hold its run
        // lock.
        let lock = repo.lock(state.device, Purpose::Backup, true)?;
        let mut tick = |bytes| {
            on(Progress {
                step: Step::Backup,
                bytes,
                total,
            })
        };
        let cache = self.home.file_cache();
        let backup = repo.backup(
            &lock,
            &dir,
            state.mark.as_ref(),
            lockbox_proto::unix_now_ms(),
            cache.as_ref(),
            &mut tick,
        )?;
        // The mark first: a storage that refuses the lock's release must not keep this device
        // from knowing how far the catalog got.
        self.home.update_repo_state(|s| s.advance(backup.mark))?;
        self.home.save_file_cache(&backup.cache)?;
        release(lock);
        self.remember_dir(dir)?;
        Ok(backup)
    }

    /// The repository this device backs up to: once it has a mark, only that repository (a
    /// missing or replaced one is an integrity failure, never a fresh start); before, whatever
    /// is there (created if nothing is and `create`).
    fn open_repository(&self, state: &RepoState, create: bool) -> Result<Repository, DeviceError> {
        let (store, rt) = (self.store()?, self.rt.handle().clone());
        Ok(match &state.mark {
            Some(mark) => Repository::open_known(store, rt, &self.key, mark.repo)?,
            None if create => Repository::open_or_init(store, rt, &self.key)?,
            None => Repository::open(store, rt, &self.key)?,
        })
    }

    /// The verified catalog, checked against where this device last saw it end (and the mark
    /// moved forward to its end now).
    pub fn snapshots(&self) -> Result<(Repository, Catalog), DeviceError> {
        let state = self.home.repo_state()?;
        let repo = self.open_repository(&state, false)?;
        let catalog = repo.catalog()?;
        if let Some(mark) = &state.mark {
            catalog.check_mark(mark)?;
        }
        self.home.update_repo_state(|s| s.advance(catalog.mark()))?;
        Ok((repo, catalog))
    }

    /// Restores the snapshot whose id starts with `id` (default: the newest) into `dest`.
    pub fn restore_snapshot(
        &self,
        dest: &Path,
        id: Option<&str>,
        part: Option<&[u8]>,
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
        let stats = repo.restore_part(&entry, dest, part, &mut tick)?;
        Ok((entry, stats))
    }

    /// Forgets all but the newest `keep` snapshots and deletes what only they needed (see
    /// [`Repository::prune`]), after checking the catalog against this device's mark.
    pub fn prune_snapshots(&self, keep: usize) -> Result<PruneReport, DeviceError> {
        let _run = self.home.lock_run()?;
        let (repo, _) = self.snapshots()?;
        let state = self.home.repo_state()?;
        let lock = repo.lock(state.device, Purpose::Prune, true)?;
        // Read again under the lock: a backup may have finished since.
        let catalog = repo.catalog()?;
        if let Some(mark) = &state.mark {
            catalog.check_mark(mark)?;
        }
        let (report, catalog) = repo.prune(&lock, catalog, keep, lockbox_proto::unix_now_ms())?;
        self.home.update_repo_state(|s| s.advance(catalog.mark()))?;
        release(lock);
        Ok(report)
    }

    /// Verifies the repository (see [`Repository::check`]) after checking its catalog against
    /// this device's mark.
    pub fn check_repository(&self, read_data: bool) -> Result<CheckReport, DeviceError> {
        let (repo, catalog) = self.snapshots()?;
        Ok(repo.check(&catalog, read_data)?)
    }
}

/// Gives the repository's lock back; one that cannot be deleted goes stale on its own, and
/// this device takes it over next time.
fn release(lock: lockbox_repo::RepoLock<'_>) {
    if let Err(e) = lock.release() {
        tracing::warn!(error = %e, "could not release the repository lock");
    }
}
