//! Incremental backups on a device: snapshots in the repository at the device's store
//! (`lockbox-repo`), with the catalog's end kept in the home so that a storage that hides newer
//! snapshots, or swaps in another repository, is caught on this device; and, where the vault
//! holds K, pinned at the vault too (`lockbox_vault_core::CatalogPin`), so that it is caught on
//! a new phone that recovers K with the password.

use std::path::Path;

use lockbox_archive::ArchiveStats;
use lockbox_repo::{
    Backup, Catalog, CatalogMark, CheckReport, Keep, PruneReport, Purpose, RepoError, RepoId,
    Repository, SnapshotEntry,
};
use lockbox_store::{BackupInfo, Store};
use lockbox_vault_core::{CATALOG_PIN_BODY_LEN, CatalogPin};

use crate::backup::{self, BackupError, Cancel, Job, OnProgress, Progress, Step};
use crate::device::{Device, DeviceError};
use crate::home::{Protection, RepoState};

/// A snapshot made, and what the vault holds of it.
#[derive(Debug)]
pub struct SnapshotBackup {
    pub backup: Backup,
    pub pin: VaultPin,
}

/// A prune done, and what the vault holds of the catalog's new end.
#[derive(Debug)]
pub struct SnapshotPrune {
    pub report: PruneReport,
    pub pin: VaultPin,
}

/// Whether the vault holds this device's catalog position now.
#[derive(Debug)]
pub enum VaultPin {
    /// A recovery-code device: the vault holds nothing for it.
    NotUsed,
    /// The vault's pin reaches entry `seq`: this device's, or a newer one another device of the
    /// account wrote.
    Pinned { seq: u64 },
    /// The vault was not told. The snapshot stands; the next backup pins again. Until then a
    /// new phone cannot tell a storage that hid the newest entries from one that did not.
    Failed(DeviceError),
}

/// What a new phone restored: the newest of the account's backups.
#[derive(Debug)]
pub enum Restored {
    /// A single-stream backup (no snapshot is newer).
    Stream(BackupInfo),
    Snapshot {
        entry: SnapshotEntry,
        /// The entry the vault's pin required the catalog to reach (`None`: no pin).
        pinned: Option<u64>,
    },
}

/// The device-defined part of a pin: the repository id and the MAC of entry `seq`.
fn pin_body(mark: &CatalogMark) -> [u8; CATALOG_PIN_BODY_LEN] {
    let mut body = [0u8; CATALOG_PIN_BODY_LEN];
    body[..32].copy_from_slice(&mark.repo.0);
    body[32..].copy_from_slice(&mark.mac);
    body
}

fn mark_of(pin: &CatalogPin) -> CatalogMark {
    let (repo, mac) = pin.body().split_at(32);
    CatalogMark {
        repo: RepoId(repo.try_into().expect("32 bytes")),
        seq: pin.sequence(),
        mac: mac.try_into().expect("32 bytes"),
    }
}

impl Device {
    /// Backs up `dir` (default: the directory of the last backup) as a new snapshot, storing
    /// only chunks the repository does not hold yet; creates the repository on first use.
    /// The catalog's new end is kept in the home.
    pub fn backup_snapshot(
        &mut self,
        dir: Option<&Path>,
        on: OnProgress<'_>,
    ) -> Result<SnapshotBackup, DeviceError> {
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
        let pin = self.pin_vault(&backup.mark);
        Ok(SnapshotBackup { backup, pin })
    }

    /// Tells the vault how far the catalog reaches now (a password device only).
    fn pin_vault(&self, mark: &CatalogMark) -> VaultPin {
        if self.settings().protection != Protection::Password {
            return VaultPin::NotUsed;
        }
        match self.pin_mark(mark) {
            Ok(seq) => VaultPin::Pinned { seq },
            Err(e) => {
                tracing::warn!(error = %e, seq = mark.seq, "the vault did not pin the catalog");
                VaultPin::Failed(e)
            }
        }
    }

    fn pin_mark(&self, mark: &CatalogMark) -> Result<u64, DeviceError> {
        let vault = self.vault()?;
        let held = self
            .patient(|| vault.pin_catalog(self.account(), &self.key, mark.seq, pin_body(mark)))?;
        let held = mark_of(&held);
        if held.seq < mark.seq {
            return Err(DeviceError::PinConflict(format!(
                "it answered entry {} for entry {}, and a pin never moves back",
                held.seq, mark.seq
            )));
        }
        if held.repo != mark.repo {
            return Err(DeviceError::PinConflict(format!(
                "it names repository {} (entry {}), and this device backs up to repository {}; a key rotation starts a new pin",
                held.repo, held.seq, mark.repo
            )));
        }
        if held.seq == mark.seq && held.mac != mark.mac {
            return Err(DeviceError::PinConflict(format!(
                "entry {} of the catalog is not the entry the vault was shown there",
                mark.seq
            )));
        }
        if held.seq > mark.seq {
            // Another device of the account wrote further: in the same history, so this catalog
            // must reach its entry. A provider serving this device a fork fails here.
            let repo = self.open_repository(&self.home.repo_state()?, false)?;
            repo.catalog()?.check_mark(&held)?;
        }
        Ok(held.seq)
    }

    /// Restores this device's newest backup into `dest`: the newest snapshot (its catalog
    /// checked against this device's mark, which then moves to its end) or single stream.
    pub fn restore_latest(
        &self,
        dest: &Path,
        on: OnProgress<'_>,
        cancel: &Cancel,
    ) -> Result<Restored, DeviceError> {
        let state = self.home.repo_state()?;
        let store = self.store()?;
        let job = self.job(&store, cancel);
        if state.mark.is_none() {
            let first = restore_first(&job, None, dest, on)?;
            if let Some(mark) = first.mark {
                self.home.update_repo_state(|s| s.advance(mark))?;
            }
            return Ok(first.restored);
        }
        let repo = self.open_repository(&state, false)?;
        let catalog = self.checked_catalog(&state, &repo)?;
        let found = catalog.latest().map(|entry| (repo, entry));
        Ok(restore_newer(&job, found, None, None, dest, on)?.0)
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
        let catalog = self.checked_catalog(&state, &repo)?;
        Ok((repo, catalog))
    }

    /// The live snapshots, oldest first (none before the first snapshot backup), checked as
    /// [`Self::snapshots`] checks them.
    pub fn snapshot_entries(&self) -> Result<Vec<SnapshotEntry>, DeviceError> {
        let state = self.home.repo_state()?;
        match self.known_repository(&state)? {
            None => Ok(Vec::new()),
            Some(repo) => Ok(self.checked_catalog(&state, &repo)?.snapshots()),
        }
    }

    /// `repo`'s catalog, checked against this device's mark in `state`, and the mark moved
    /// forward to its end.
    fn checked_catalog(
        &self,
        state: &RepoState,
        repo: &Repository,
    ) -> Result<Catalog, DeviceError> {
        let catalog = repo.catalog()?;
        if let Some(mark) = &state.mark {
            catalog.check_mark(mark)?;
        }
        self.home.update_repo_state(|s| s.advance(catalog.mark()))?;
        Ok(catalog)
    }

    /// This device's repository; `None` before its first snapshot if the store holds none, or
    /// only another key's (a repository it backed up to is never `None`: see
    /// [`Self::open_repository`]).
    fn known_repository(&self, state: &RepoState) -> Result<Option<Repository>, DeviceError> {
        match state.mark {
            Some(_) => Ok(Some(self.open_repository(state, false)?)),
            None => Ok(ours(Repository::open(
                self.store()?,
                self.rt.handle().clone(),
                &self.key,
            ))?),
        }
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
        let stats = restore_entry(&repo, &entry, dest, part, on)?;
        Ok((entry, stats))
    }

    /// Forgets the snapshots `keep` does not keep and deletes what only they needed (see
    /// [`Repository::prune`]), after checking the catalog against this device's mark.
    pub fn prune_snapshots(&self, keep: &Keep) -> Result<SnapshotPrune, DeviceError> {
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
        let pin = self.pin_vault(&catalog.mark());
        Ok(SnapshotPrune { report, pin })
    }

    /// Verifies the repository (see [`Repository::check`]) after checking its catalog against
    /// this device's mark.
    pub fn check_repository(&self, read_data: bool) -> Result<CheckReport, DeviceError> {
        let (repo, catalog) = self.snapshots()?;
        Ok(repo.check(&catalog, read_data)?)
    }
}

/// A repository opened without a mark: none there, or another key's (whose single streams may
/// share the store), is no repository of ours.
pub(crate) fn ours(opened: Result<Repository, RepoError>) -> Result<Option<Repository>, RepoError> {
    match opened {
        Err(RepoError::NoRepository { .. } | RepoError::WrongKey { .. }) => Ok(None),
        other => other.map(Some),
    }
}

/// Whether `store` holds anything to restore: a single stream or a repository (of any key).
/// Asked before a password attempt is spent on a restore.
pub fn holds_backups(store: &Store, rt: &tokio::runtime::Handle) -> Result<bool, DeviceError> {
    Ok(!rt
        .block_on(store.list())
        .map_err(BackupError::from)?
        .is_empty()
        || Repository::exists(store, rt)?)
}

/// What a first restore (no mark: a new phone, or `restore --key-file`) restored.
#[derive(Debug)]
pub struct FirstRestore {
    pub restored: Restored,
    /// The end of the repository's catalog as verified here, for a new home to keep (so that
    /// its first backup appends to this history).
    pub mark: Option<CatalogMark>,
    /// Why each stored object that is none of this key's intact single streams was passed over.
    pub skipped: Vec<String>,
}

/// Restores into `dest` the newest backup at `job`'s store for one that has no mark of it:
/// the newer of the repository's latest snapshot and the latest single stream. With `pin` (the
/// vault's, verified under K), the pinned repository must be there and its catalog must reach
/// the pinned entry: a storage that deleted or rolled it back is an integrity failure, never a
/// fall-back to older backups.
pub fn restore_first(
    job: &Job<'_>,
    pin: Option<&CatalogPin>,
    dest: &Path,
    on: OnProgress<'_>,
) -> Result<FirstRestore, DeviceError> {
    let pinned = pin.map(mark_of);
    let (store, rt) = (job.store.clone(), job.rt.clone());
    let (repo, foreign) = match &pinned {
        Some(m) => (
            Some(Repository::open_known(store, rt, job.key, m.repo)?),
            None,
        ),
        None => match Repository::open(store, rt, job.key) {
            Err(RepoError::NoRepository { .. }) => (None, None),
            // Another key's repository: its snapshots are not ours, but if nothing of this key
            // is there either, the key is what is wrong.
            Err(e @ RepoError::WrongKey { .. }) => (None, Some(e)),
            other => (Some(other?), None),
        },
    };
    let mut mark = None;
    let found = match repo {
        Some(repo) => {
            let catalog = repo.catalog()?;
            if let Some(m) = &pinned {
                catalog.check_mark(m)?;
            }
            mark = Some(catalog.mark());
            catalog.latest().map(|entry| (repo, entry))
        }
        None => None,
    };
    let seq = pinned.map(|m| m.seq);
    let (restored, skipped) = restore_newer(job, found, foreign, seq, dest, on)?;
    Ok(FirstRestore {
        restored,
        mark,
        skipped,
    })
}

/// Restores into `dest` the newer of `found` (a verified repository and its latest snapshot)
/// and the newest single stream at `job`'s store, by their authenticated times. Stored objects
/// that are none of this key's streams are passed over (and returned as warnings), except an
/// authentic stream of this key, damaged, that is newer than anything restorable: restoring an
/// older backup instead would be the rollback the storage is after.
fn restore_newer(
    job: &Job<'_>,
    found: Option<(Repository, SnapshotEntry)>,
    foreign: Option<RepoError>,
    pinned: Option<u64>,
    dest: &Path,
    on: OnProgress<'_>,
) -> Result<(Restored, Vec<String>), DeviceError> {
    lockbox_archive::check_destination(dest).map_err(RepoError::from)?;
    let url = job.store.url();
    let mut catalog = crate::catalog::Catalog::load(job.store, job.rt, job.key)?;
    let stream = match &found {
        None => match catalog.latest(url) {
            Err(BackupError::NoBackups { .. }) if foreign.is_some() => {
                return Err(foreign.expect("checked").into());
            }
            other => Some(other?),
        },
        Some((_, entry)) => {
            let newest = catalog.verified.last().cloned();
            let floor = newest.as_ref().map_or(entry.created_unix_ms, |s| {
                s.name.created_unix_ms.max(entry.created_unix_ms)
            });
            let blocking = catalog
                .rejected
                .iter()
                .position(|(info, r)| r.authentic && info.name.created_unix_ms > floor);
            if let Some(at) = blocking {
                let (info, r) = catalog.rejected.remove(at);
                return Err(BackupError::NewestDamaged {
                    id: info.name.id,
                    source: Box::new(r.err),
                }
                .into());
            }
            newest
        }
    };
    let skipped = crate::device::rejected(&catalog);
    let restored = match (found, stream) {
        (Some((repo, entry)), stream)
            if stream
                .as_ref()
                .is_none_or(|s| s.name.created_unix_ms <= entry.created_unix_ms) =>
        {
            restore_entry(&repo, &entry, dest, None, on)?;
            Restored::Snapshot { entry, pinned }
        }
        (_, Some(info)) => {
            backup::restore_backup(job, &info, dest, on)?;
            Restored::Stream(info)
        }
        (_, None) => {
            let url = url.to_owned();
            return Err(BackupError::NoBackups { url }.into());
        }
    };
    Ok((restored, skipped))
}

/// Restores `part` (or all) of the snapshot `entry`, with progress against its size.
fn restore_entry(
    repo: &Repository,
    entry: &SnapshotEntry,
    dest: &Path,
    part: Option<&[u8]>,
    on: OnProgress<'_>,
) -> Result<ArchiveStats, DeviceError> {
    let total = Some(entry.bytes);
    let mut tick = |bytes| {
        on(Progress {
            step: Step::Restore,
            bytes,
            total,
        })
    };
    Ok(repo.restore_part(entry, dest, part, &mut tick)?)
}

/// Gives the repository's lock back; one that cannot be deleted goes stale on its own, and
/// this device takes it over next time.
fn release(lock: lockbox_repo::RepoLock<'_>) {
    if let Err(e) = lock.release() {
        tracing::warn!(error = %e, "could not release the repository lock");
    }
}
