//! [`Device`]: the whole user flow an app embeds, on one home directory ([`Home`]).
//!
//! Enable backups (with a password the vault guards, or a recovery code the user keeps), back
//! up, restore on a new phone, change the password, rotate the key, disable. Every step either
//! completes or leaves what the user needs: a key rotation deletes the old backups only after
//! the new one was read back from the store and verified, and a restore appears under its name
//! only once every byte verified.
//!
//! No printing: results are values, failures typed ([`DeviceError::fault`] tells an
//! authentication failure from tampering or a destroyed record), progress goes to a callback,
//! and a [`Cancel`] stops a long step. Calls block; an app runs them off its UI thread.

use lockbox_crypto::{BackupKey, OsRng, RecoveryCode};
use lockbox_repo::{RepoError, Repository};
use lockbox_store::{BackupInfo, Store};
use lockbox_vault_core::{AttemptLimit, KsfParams};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backup::{self, BackupError, Cancel, Fault, Job, OnProgress};
use crate::catalog::Catalog;
use crate::home::{FleetSettings, Home, Protection, Settings};
use crate::snapshots::Restored;
use crate::{ClientError, Status, TokenSource, VaultClient};

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Vault(#[from] ClientError),
    #[error("{0}")]
    Backup(#[from] BackupError),
    #[error("{0}")]
    Repo(#[from] lockbox_repo::RepoError),
    #[error(
        "{} holds no enabled device: run `lockbox enable`, or `lockbox restore` on a new phone",
        .0.display()
    )]
    NotEnabled(PathBuf),
    #[error("{} already holds the device of account {account}", home.display())]
    AlreadyEnabled { home: PathBuf, account: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {}: {message}", path.display())]
    Settings { path: PathBuf, message: String },
    #[error("this device's backups are protected by a recovery code, not a vault password")]
    NoPassword,
    #[error("no fleet to reach the vault with: give a gateway URL and the pinned fleet keys")]
    NoFleet,
    #[error("no account token for {0}: log in to the messaging service first")]
    NoToken(String),
    /// The vault released a key that is not this device's: another device re-enrolled the
    /// account, or the vault is not the one this device enrolled with.
    #[error(
        "the vault holds another key for {0} than this device: the record was replaced since this device enrolled"
    )]
    KeyMismatch(String),
    /// A key rotation was interrupted: backing up under the old key now could leave the
    /// vault's key (already the new one) without the newest chats.
    #[error("a key rotation was interrupted; finish it (`lockbox key rotate`) first")]
    RotationPending,
    /// Another backup or prune of this device's repository is running.
    #[error("another backup or prune is running on this device; try again when it ends")]
    Busy,
    /// Enabling would replace the key the vault already guards for the account.
    #[error(
        "the vault already holds a key for {0} (another device's backups depend on it): on a new phone, take it over with `restore --account`; to replace it anyway, enable with --replace"
    )]
    RecordExists(String),
    /// The vault pins a catalog position this device's repository contradicts: the same
    /// sequence with another entry, or another repository further along.
    #[error("the vault's catalog pin contradicts this repository: {0}")]
    PinConflict(String),
    #[error("no directory to back up: pass one (later backups remember it)")]
    NoSourceDir,
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl DeviceError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError + '_ {
        move |source| DeviceError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The fault this error proves, if it proves one by itself.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Self::Vault(e) => Some(vault_fault(e)),
            Self::Backup(e) => e.fault(),
            Self::Repo(e) => Some(match e.fault() {
                lockbox_repo::Fault::Auth => Fault::Auth,
                lockbox_repo::Fault::Integrity => Fault::Integrity,
                lockbox_repo::Fault::Other => Fault::Other,
            }),
            Self::KeyMismatch(_) | Self::PinConflict(_) => Some(Fault::Integrity),
            _ => Some(Fault::Other),
        }
    }
}

/// The fault a vault error proves.
pub fn vault_fault(e: &ClientError) -> Fault {
    match e {
        ClientError::WrongPassword { .. } | ClientError::Unauthorized(_) => Fault::Auth,
        ClientError::Destroyed => Fault::Destroyed,
        ClientError::Manifest(_) | ClientError::BadCatalogPin => Fault::Integrity,
        _ => Fault::Other,
    }
}

/// What `enable` needs besides the secret.
#[derive(Debug, Clone)]
pub struct EnableOptions {
    pub account: String,
    /// Storage URL (`file:///…`, `s3://…`, …).
    pub store: String,
    /// The fleet to deposit the key with; required for password protection.
    pub fleet: Option<FleetSettings>,
    /// Wrong passwords allowed before the vault destroys the record (1..=100).
    pub max_attempts: u8,
    /// Argon2id cost of the password hash.
    pub ksf: KsfParams,
    /// Replace an active vault record of the account (another device's key) when enabling
    /// with a password. Without it such a record is left alone: a new phone takes it over with
    /// `restore`, keeping the backups it guards readable.
    pub replace: bool,
}

/// How a new phone proves it may have the key.
pub enum Secret<'a> {
    Password(&'a [u8]),
    RecoveryCode(BackupKey),
}

impl core::fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Secret::Password(_) => "Password([REDACTED])",
            Secret::RecoveryCode(_) => "RecoveryCode([REDACTED])",
        })
    }
}

/// A backup made, and the older ones pruned with it.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub backup: BackupInfo,
    /// Stored objects that are not this key's intact backups (planted, damaged, foreign): never
    /// counted, never deleted. Rendered messages, for the caller to warn about.
    pub ignored: Vec<String>,
}

/// What the device and the vault say.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    pub settings: Settings,
    /// The vault record (password protection only).
    pub vault: Option<Status>,
    /// This key's intact single-stream backups in the store, oldest first.
    pub backups: Vec<BackupInfo>,
    /// The live snapshots of this device's repository, oldest first.
    pub snapshots: Vec<lockbox_repo::SnapshotEntry>,
    /// Objects in the store that are not (rendered reasons).
    pub ignored: Vec<String>,
    /// A key rotation was interrupted; `rotate_key` finishes it.
    pub rotation_pending: bool,
}

/// A finished key rotation.
#[derive(Debug)]
pub struct Rotated {
    /// The first backup under the new key, read back and verified.
    pub backup: BackupInfo,
    /// Old backups deleted after that verification.
    pub deleted: Vec<BackupInfo>,
    /// Objects of the old key's incremental repository deleted (0: there was none).
    pub repository_objects: u64,
    /// The new recovery code, for recovery-code protection (the old one no longer restores).
    pub recovery_code: Option<RecoveryCode>,
}

/// What `disable` did.
#[derive(Debug)]
pub struct Disabled {
    pub deleted: Vec<BackupInfo>,
    /// Objects of the incremental repository deleted (only with `delete_backups`).
    pub repository_objects: u64,
    /// When backups were kept but the vault record is gone: the only way left to open them.
    pub recovery_code: Option<RecoveryCode>,
}

/// One device: its home, its key and its way to the vault.
pub struct Device {
    pub(crate) home: Home,
    settings: Settings,
    pub(crate) key: BackupKey,
    pub(crate) rt: tokio::runtime::Runtime,
    tokens: Option<Arc<dyn TokenSource>>,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("home", &self.home)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Opens an enabled home. `tokens` answers for the account at the vault (password
    /// protection); `None` is enough for a recovery-code device.
    pub fn open(home: &Path, tokens: Option<Arc<dyn TokenSource>>) -> Result<Self, DeviceError> {
        let home = Home::new(home);
        let settings = home.settings()?;
        let key = home.key()?;
        Self::assemble(home, settings, key, tokens)
    }

    fn assemble(
        home: Home,
        settings: Settings,
        key: BackupKey,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<Self, DeviceError> {
        Ok(Self {
            home,
            settings,
            key,
            rt: runtime()?,
            tokens,
        })
    }

    /// Enables backups on a fresh home: a new random K (or the key that a stopped enable or
    /// restore left there without `device.toml`), kept in the home (0600), and either deposited
    /// in the vault under `password` or returned as a recovery code for the user. A home whose
    /// `device.toml` does not read is refused, never overwritten.
    pub fn enable(
        home: &Path,
        opts: EnableOptions,
        password: Option<&[u8]>,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<(Self, Option<RecoveryCode>), DeviceError> {
        check_attempts(opts.max_attempts)?;
        Store::open(&opts.store).map_err(BackupError::from)?;
        // A key without settings is what a stopped enable or restore leaves: backups may exist
        // under it, so it is kept, never replaced.
        let key = Home::new(home)
            .leftover_key()?
            .unwrap_or_else(|| BackupKey::generate(&mut OsRng));
        let device = Self::fresh(home, &opts, password, key, tokens)?;
        if let Some(password) = password {
            let vault = device.vault()?;
            let existing = device.patient(|| vault.status(device.account()))?;
            if matches!(existing, Status::Active { .. }) && !opts.replace {
                return Err(DeviceError::RecordExists(opts.account.clone()));
            }
            device.patient(|| {
                vault.enroll(
                    device.account(),
                    password,
                    &device.key,
                    opts.max_attempts,
                    opts.ksf,
                )
            })?;
        }
        device.persist()?;
        let code = password.is_none().then(|| device.key.recovery_code());
        Ok((device, code))
    }

    /// A new phone: gets K back (from the vault with the password, or from the recovery code),
    /// restores the newest intact backup into `dest`, then enables this home for the account.
    /// A password attempt is spent only once there is a backup to restore and room for it.
    pub fn restore(
        home: &Path,
        opts: EnableOptions,
        secret: Secret<'_>,
        dest: &Path,
        on: OnProgress<'_>,
        cancel: &Cancel,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<(Self, Restored), DeviceError> {
        lockbox_archive::check_destination(dest).map_err(|source| BackupError::Archive {
            what: format!("cannot restore into {}", dest.display()),
            source,
        })?;
        let store = Store::open(&opts.store).map_err(BackupError::from)?;
        let password = match &secret {
            Secret::Password(p) => Some(*p),
            Secret::RecoveryCode(_) => None,
        };
        let placeholder = BackupKey::generate(&mut OsRng);
        let mut device = Self::fresh(home, &opts, password, placeholder, tokens)?;
        if !crate::snapshots::holds_backups(&store, device.rt.handle())? {
            return Err(BackupError::NoBackups { url: opts.store }.into());
        }
        let pin = match secret {
            Secret::RecoveryCode(key) => {
                device.key = key;
                None
            }
            Secret::Password(p) => {
                let vault = device.vault()?;
                let (key, pin) = device.patient(|| vault.recover_pinned(device.account(), p))?;
                device.key = key;
                pin
            }
        };
        let job = device.job(&store, cancel);
        let first = crate::snapshots::restore_first(&job, pin.as_ref(), dest, on)?;
        // The restored chats are what this phone backs up from now on.
        device.settings.source_dir = std::path::absolute(dest).ok();
        device.persist()?;
        if let Some(mark) = first.mark {
            device.home.update_repo_state(|s| s.advance(mark))?;
        }
        Ok((device, first.restored))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn home(&self) -> &Path {
        self.home.dir()
    }

    /// Backs up `dir` (default: the directory of the last backup) under K, then, with
    /// `keep`, deletes all but the newest `keep` intact backups (this one included).
    pub fn backup(
        &mut self,
        dir: Option<&Path>,
        keep: Option<usize>,
        on: OnProgress<'_>,
        cancel: &Cancel,
    ) -> Result<BackupReport, DeviceError> {
        if keep == Some(0) {
            return Err(DeviceError::Invalid(
                "keep 0 would delete every backup, this one included".into(),
            ));
        }
        if self.home.next_key()?.is_some() {
            return Err(DeviceError::RotationPending);
        }
        let dir = self.source_dir(dir)?;
        let store = self.store()?;
        let job = self.job(&store, cancel);
        let info = backup::backup_dir(&job, &dir, lockbox_proto::unix_now_ms(), on)?;
        let mut ignored = Vec::new();
        if let Some(keep) = keep {
            let (_deleted, catalog) = backup::prune_verified(&job, keep, Some(&info.name))?;
            ignored = rejected(&catalog);
        }
        self.remember_dir(dir)?;
        Ok(BackupReport {
            backup: info,
            ignored,
        })
    }

    pub fn status(&self) -> Result<DeviceStatus, DeviceError> {
        let vault = match self.settings.protection {
            Protection::Password => {
                let vault = self.vault()?;
                Some(self.patient(|| vault.status(self.account()))?)
            }
            Protection::RecoveryCode => None,
        };
        let store = self.store()?;
        let catalog = Catalog::load(&store, self.rt.handle(), &self.key)?;
        Ok(DeviceStatus {
            settings: self.settings.clone(),
            vault,
            ignored: rejected(&catalog),
            backups: catalog.verified,
            snapshots: self.snapshot_entries()?,
            rotation_pending: self.home.next_key()?.is_some(),
        })
    }

    /// Proves `old` (one attempt, given back on success) and re-registers `new` over the same K.
    pub fn change_password(&self, old: &[u8], new: &[u8]) -> Result<(), DeviceError> {
        self.require_password()?;
        let vault = self.vault()?;
        self.patient(|| vault.change_password(self.account(), old, new, KsfParams::DEFAULT))?;
        Ok(())
    }

    /// A new K: a backup of `dir` under it, read back and verified in the store; then the vault
    /// record re-enrolled under the same `password` (proved first), the home switched to the new
    /// key, and only then the old key's backups deleted. Interrupted anywhere, it can be run
    /// again and finishes with the same new key.
    pub fn rotate_key(
        &mut self,
        password: Option<&[u8]>,
        dir: Option<&Path>,
        on: OnProgress<'_>,
        cancel: &Cancel,
    ) -> Result<Rotated, DeviceError> {
        let dir = self.source_dir(dir)?;
        let pending = self.home.next_key()?;
        let vault = match (self.settings.protection, password) {
            // The vault may already hold K' (a rotation stopped after re-enrolling).
            (Protection::Password, Some(p)) => Some((self.proved_vault(p, pending.as_ref())?, p)),
            (Protection::Password, None) => {
                return Err(DeviceError::Invalid(
                    "rotating a password-protected key needs the vault password".into(),
                ));
            }
            (Protection::RecoveryCode, _) => None,
        };
        let next = match pending {
            Some(key) => key,
            None => {
                let key = BackupKey::generate(&mut OsRng);
                self.home.save_next_key(&key)?;
                key
            }
        };
        let store = self.store()?;
        let new_job = Job {
            store: &store,
            rt: self.rt.handle(),
            key: &next,
            cancel,
        };
        let info = backup::backup_dir(&new_job, &dir, lockbox_proto::unix_now_ms(), on)?;
        backup::verify_backup(&new_job, &info, on)?;
        if let Some((vault, p)) = vault {
            let limit = self.settings.max_attempts;
            self.patient(|| vault.enroll(self.account(), p, &next, limit, KsfParams::DEFAULT))?;
        }
        // The old key's repository goes before the key: its snapshots open under no other, and
        // a rerun (with K' still pending) can finish deleting it under K.
        let repository_objects = self.destroy_repository_of(&store, &self.key)?;
        self.home.promote_next_key()?;
        let old = std::mem::replace(&mut self.key, next);
        self.remember_dir(dir)?;
        let deleted = self.delete_backups_of(&store, &old)?;
        let recovery_code = (self.settings.protection == Protection::RecoveryCode)
            .then(|| self.key.recovery_code());
        Ok(Rotated {
            backup: info,
            deleted,
            repository_objects,
            recovery_code,
        })
    }

    /// Turns backups off on this device: after proving `password` and that the vault record
    /// holds this device's key (another device's record is never destroyed from here), the
    /// backups are deleted if asked, then the record destroyed, and the home wiped. Refused while a
    /// key rotation is pending, whose new key could otherwise be left behind. Backups that are
    /// kept while the record goes can then be opened only with the returned recovery code.
    pub fn disable(
        self,
        password: Option<&[u8]>,
        delete_backups: bool,
    ) -> Result<Disabled, DeviceError> {
        if self.home.next_key()?.is_some() {
            return Err(DeviceError::RotationPending);
        }
        let vault = match self.settings.protection {
            Protection::Password => {
                let password = password.ok_or_else(|| {
                    DeviceError::Invalid("disabling needs the vault password".into())
                })?;
                Some((self.proved_vault(password, None)?, password))
            }
            Protection::RecoveryCode => None,
        };
        // The backups go before the record: a store that fails then leaves a disable that can
        // be run again, not a home whose record is gone.
        let (deleted, repository_objects) = match delete_backups {
            true => {
                let store = self.store()?;
                let deleted = self.delete_backups_of(&store, &self.key)?;
                (deleted, self.destroy_repository_of(&store, &self.key)?)
            }
            false => (Vec::new(), 0),
        };
        if let Some((vault, password)) = vault {
            self.patient(|| vault.delete(self.account(), password))?;
        }
        self.home.wipe()?;
        let recovery_code = (!delete_backups && self.settings.protection == Protection::Password)
            .then(|| self.key.recovery_code());
        Ok(Disabled {
            deleted,
            repository_objects,
            recovery_code,
        })
    }

    fn fresh(
        home: &Path,
        opts: &EnableOptions,
        password: Option<&[u8]>,
        key: BackupKey,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<Self, DeviceError> {
        let home = Home::new(home);
        match home.settings() {
            Ok(s) => {
                return Err(DeviceError::AlreadyEnabled {
                    home: home.dir().to_owned(),
                    account: s.account,
                });
            }
            Err(DeviceError::NotEnabled(_)) => {}
            // Unreadable settings beside a key: a home to repair, not to overwrite.
            Err(e) => return Err(e),
        }
        let protection = match password {
            Some(_) => Protection::Password,
            None => Protection::RecoveryCode,
        };
        if protection == Protection::Password && opts.fleet.is_none() {
            return Err(DeviceError::NoFleet);
        }
        home.create()?;
        let settings = Settings {
            account: opts.account.clone(),
            store: opts.store.clone(),
            protection,
            max_attempts: opts.max_attempts,
            source_dir: None,
            fleet: opts
                .fleet
                .clone()
                .filter(|_| protection == Protection::Password),
        };
        Self::assemble(home, settings, key, tokens)
    }

    /// Writes the key, then the settings: a home with settings always has its key.
    fn persist(&self) -> Result<(), DeviceError> {
        self.home.save_key(&self.key)?;
        self.home.save_settings(&self.settings)
    }

    pub(crate) fn account(&self) -> &[u8] {
        self.settings.account.as_bytes()
    }

    fn require_password(&self) -> Result<(), DeviceError> {
        match self.settings.protection {
            Protection::Password => Ok(()),
            Protection::RecoveryCode => Err(DeviceError::NoPassword),
        }
    }

    /// A client for this account's partition through the pinned fleet (see [`pinned_client`]).
    pub(crate) fn vault(&self) -> Result<VaultClient, DeviceError> {
        let fleet = self.settings.fleet.as_ref().ok_or(DeviceError::NoFleet)?;
        let tokens = self
            .tokens
            .clone()
            .ok_or_else(|| DeviceError::NoToken(self.settings.account.clone()))?;
        pinned_client(&self.rt, &self.home, fleet, self.account(), tokens)
    }

    /// The vault, after checking that `password` releases this device's own key, or `pending`
    /// (one attempt, given back on success): a rotation must not re-enroll over, and a disable
    /// must not destroy, a record that holds another device's key.
    fn proved_vault(
        &self,
        password: &[u8],
        pending: Option<&BackupKey>,
    ) -> Result<VaultClient, DeviceError> {
        let vault = self.vault()?;
        let key = self.patient(|| vault.recover(self.account(), password))?;
        if key != self.key && pending != Some(&key) {
            return Err(DeviceError::KeyMismatch(self.settings.account.clone()));
        }
        Ok(vault)
    }

    /// Runs one vault operation, sitting out the gateway's short login backoffs: a refused
    /// first delivery reached nothing and spent nothing, so asking again is safe. (Later steps
    /// wait out holds themselves, in the client.)
    pub(crate) fn patient<T, F>(&self, mut op: impl FnMut() -> F) -> Result<T, ClientError>
    where
        F: std::future::Future<Output = Result<T, ClientError>>,
    {
        let (mut waited, mut holds) = (std::time::Duration::ZERO, 0);
        loop {
            match self.rt.block_on(op()) {
                Err(ClientError::RateLimited { retry_after, .. })
                    if holds < PATIENT_HOLDS
                        && retry_after <= PATIENT_WAIT
                        && waited + retry_after <= PATIENT_TOTAL =>
                {
                    holds += 1;
                    waited += retry_after;
                    std::thread::sleep(retry_after);
                }
                other => return other,
            }
        }
    }

    pub(crate) fn store(&self) -> Result<Store, DeviceError> {
        Ok(Store::open(&self.settings.store).map_err(BackupError::from)?)
    }

    pub(crate) fn job<'a>(&'a self, store: &'a Store, cancel: &'a Cancel) -> Job<'a> {
        Job {
            store,
            rt: self.rt.handle(),
            key: &self.key,
            cancel,
        }
    }

    pub(crate) fn source_dir(&self, dir: Option<&Path>) -> Result<PathBuf, DeviceError> {
        let dir = dir
            .map(Path::to_path_buf)
            .or_else(|| self.settings.source_dir.clone())
            .ok_or(DeviceError::NoSourceDir)?;
        std::path::absolute(&dir).map_err(DeviceError::io(&dir))
    }

    pub(crate) fn remember_dir(&mut self, dir: PathBuf) -> Result<(), DeviceError> {
        if self.settings.source_dir.as_ref() != Some(&dir) {
            self.settings.source_dir = Some(dir);
            self.home.save_settings(&self.settings)?;
        }
        Ok(())
    }

    /// Deletes every backup whose header verifies under `key`; nothing else.
    fn delete_backups_of(
        &self,
        store: &Store,
        key: &BackupKey,
    ) -> Result<Vec<BackupInfo>, DeviceError> {
        let catalog = Catalog::load(store, self.rt.handle(), key)?;
        for info in &catalog.verified {
            self.rt
                .block_on(store.delete(info))
                .map_err(BackupError::from)?;
        }
        Ok(catalog.verified)
    }

    /// Deletes the incremental repository at `store` if it opens under `key` (one of another
    /// key is not this device's to delete), then forgets it in the home.
    fn destroy_repository_of(&self, store: &Store, key: &BackupKey) -> Result<u64, DeviceError> {
        let _run = self.home.lock_run()?;
        let state = self.home.repo_state()?;
        let rt = self.rt.handle().clone();
        // The repository this device knows, when it knows one: a config the storage replaced or
        // altered is refused, never taken for "nothing to delete" (its snapshots would stay).
        let opened = match state.mark {
            Some(mark) => match Repository::open_known(store.clone(), rt, key, mark.repo) {
                Err(RepoError::Vanished { .. }) => Ok(None),
                other => other.map(Some),
            },
            None => crate::snapshots::ours(Repository::open(store.clone(), rt, key)),
        };
        let deleted = match opened? {
            Some(repo) => {
                let lock = repo.lock(state.device, lockbox_repo::Purpose::Prune, true)?;
                let deleted = repo.destroy()?;
                lock.release()?;
                deleted
            }
            None => 0,
        };
        self.home.forget_repo()?;
        Ok(deleted)
    }
}

/// A client for `account`'s partition, reached through the pinned fleet's gateway, after
/// accepting the newest manifest under the pins and recording its high-water mark in `home`
/// (created if need be). The only way this library finds a vault: nothing is discovered on
/// first use.
pub fn pinned_client(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    fleet: &FleetSettings,
    account: &[u8],
    tokens: Arc<dyn TokenSource>,
) -> Result<VaultClient, DeviceError> {
    let pin = fleet.pin()?;
    let ca = fleet.ca_pem()?;
    let high = home.high_water()?;
    let verified = rt.block_on(crate::fleet::update(
        &fleet.gateway,
        ca.as_deref(),
        &pin,
        high.as_ref(),
        lockbox_proto::unix_now_ms(),
    ))?;
    home.create()?;
    home.save_high_water(&verified.high_water())?;
    let target = crate::fleet::target(verified.manifest(), account, &fleet.gateway);
    let client = rt.block_on(VaultClient::connect_trusting(target, ca.as_deref()))?;
    Ok(client.with_token_source(tokens))
}

/// The longest gateway hold a device sits out at once, and in all, and how many holds, before
/// it gives up: a hostile gateway's "retry after 0 ms" must not keep it asking forever.
const PATIENT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
const PATIENT_TOTAL: std::time::Duration = std::time::Duration::from_secs(60);
const PATIENT_HOLDS: u32 = 5;

pub(crate) fn rejected(catalog: &Catalog) -> Vec<String> {
    catalog
        .rejected
        .iter()
        .map(|(_, r)| crate::render_error(&r.err))
        .collect()
}

/// The vault's own bounds ([`AttemptLimit`]), checked before anything is written or sent.
fn check_attempts(n: u8) -> Result<(), DeviceError> {
    match AttemptLimit::new(n) {
        Some(_) => Ok(()),
        None => Err(DeviceError::Invalid(format!(
            "max attempts must be between {} and {}, not {n}",
            AttemptLimit::MIN,
            AttemptLimit::MAX
        ))),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, DeviceError> {
    backup::io_runtime().map_err(DeviceError::Runtime)
}
