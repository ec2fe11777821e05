//! A device's home directory: what it must remember between runs.
//!
//! ```text
//! HOME/device.toml   account, storage URL, protection, the pinned fleet (not secret)
//! HOME/key           K as a recovery code, mode 0600
//! HOME/key.next      K' while a key rotation is under way, mode 0600
//! HOME/manifest.hw   the highest fleet manifest accepted (sequence and hash)
//! HOME/repo.mark     this device's id in the repository, and where it last saw the catalog end
//! HOME/repo.lock     locked while repo.mark is read and replaced
//! HOME/run.lock      locked while a backup or prune of the repository runs on this device
//! HOME/repo.cache    the files of the last snapshot (path, size, times, inode -> chunks), 0600
//! ```
//! Every file is replaced by write-to-temporary, fsync, rename, so a crash leaves either the old
//! or the new content, never a torn file.

use lockbox_crypto::{BackupKey, RecoveryCode};
use lockbox_proto::manifest::{FleetPublicKey, HighWater, Pin, WitnessPublicKey};
use lockbox_repo::{CatalogMark, DeviceId, FileCache, RepoId};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use crate::device::DeviceError;

const SETTINGS: &str = "device.toml";
const KEY: &str = "key";
const NEXT_KEY: &str = "key.next";
const HIGH_WATER: &str = "manifest.hw";
const REPO_MARK: &str = "repo.mark";
const REPO_LOCK: &str = "repo.lock";
const RUN_LOCK: &str = "run.lock";
const FILE_CACHE: &str = "repo.cache";

/// Held while this device writes to its repository (a backup or a prune): released when
/// dropped, or when the process dies.
#[derive(Debug)]
pub struct RunLock(#[allow(dead_code)] std::fs::File);

/// What a device remembers of its repository: its own id there, and the catalog's end as it
/// last wrote or saw it (so a storage that hides newer snapshots is caught).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoState {
    pub device: DeviceId,
    pub mark: Option<CatalogMark>,
}

#[derive(Serialize, Deserialize)]
struct RepoStateFile {
    device: String,
    repo: Option<String>,
    seq: Option<u64>,
    mac: Option<String>,
}

impl RepoState {
    /// Moves the mark to `mark` if that is further along the same repository's catalog; a mark
    /// never moves back (two runs finishing out of order keep the later one).
    pub fn advance(&mut self, mark: CatalogMark) {
        let behind = match &self.mark {
            None => true,
            Some(kept) => kept.repo != mark.repo || kept.seq < mark.seq,
        };
        if behind {
            self.mark = Some(mark);
        }
    }

    fn to_toml(&self) -> String {
        let file = RepoStateFile {
            device: self.device.hex(),
            repo: self.mark.map(|m| m.repo.hex()),
            seq: self.mark.map(|m| m.seq),
            mac: self.mark.map(|m| hex::encode(m.mac)),
        };
        toml::to_string(&file).expect("plain strings and integers serialize")
    }

    fn from_toml(text: &str) -> Option<Self> {
        let file: RepoStateFile = toml::from_str(text).ok()?;
        let mut device = [0u8; 16];
        hex::decode_to_slice(&file.device, &mut device).ok()?;
        let mark = match (file.repo, file.seq, file.mac) {
            (Some(repo), Some(seq), Some(mac)) => {
                let mut m = [0u8; 32];
                hex::decode_to_slice(mac, &mut m).ok()?;
                Some(CatalogMark {
                    repo: RepoId::from_hex(&repo)?,
                    seq,
                    mac: m,
                })
            }
            (None, None, None) => None,
            _ => return None,
        };
        Some(RepoState {
            device: DeviceId(device),
            mark,
        })
    }
}

/// How the backup key is protected when the phone is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protection {
    /// The vault holds K under the user's password.
    Password,
    /// The user keeps K as a 64-digit recovery code.
    RecoveryCode,
}

/// The fleet a device pins: where its gateway is and the keys every manifest must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    pub gateway: String,
    /// A PEM file of the CA that signed the gateway's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ca: Option<PathBuf>,
    pub fleet_id: String,
    pub fleet_public_key: String,
    pub witness_public_key: String,
}

impl FleetSettings {
    pub fn pin(&self) -> Result<Pin, DeviceError> {
        let bad = |e| DeviceError::Invalid(format!("pinned fleet key: {e}"));
        Ok(Pin {
            fleet: FleetPublicKey::from_hex(&self.fleet_public_key).map_err(bad)?,
            witness: WitnessPublicKey::from_hex(&self.witness_public_key).map_err(bad)?,
            fleet_id: self.fleet_id.clone(),
        })
    }

    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, DeviceError> {
        self.gateway_ca
            .as_ref()
            .map(|p| std::fs::read(p).map_err(DeviceError::io(p)))
            .transpose()
    }
}

/// `device.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub account: String,
    pub store: String,
    pub protection: Protection,
    /// Wrong passwords the vault allows before it destroys the record.
    pub max_attempts: u8,
    /// The directory the last backup was made of: what `backup` takes by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSettings>,
}

/// The home directory of one device.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_enabled(&self) -> bool {
        self.dir.join(SETTINGS).exists()
    }

    /// Creates the directory (mode 0700) if need be.
    pub fn create(&self) -> Result<(), DeviceError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(DeviceError::io(&self.dir))
    }

    pub fn settings(&self) -> Result<Settings, DeviceError> {
        let path = self.dir.join(SETTINGS);
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DeviceError::NotEnabled(self.dir.clone()));
            }
            other => other.map_err(DeviceError::io(&path))?,
        };
        toml::from_str(&text).map_err(|e| DeviceError::Settings {
            path,
            message: e.message().to_owned(),
        })
    }

    pub fn save_settings(&self, settings: &Settings) -> Result<(), DeviceError> {
        let text = toml::to_string(settings).map_err(|e| DeviceError::Invalid(e.to_string()))?;
        self.replace(SETTINGS, text.as_bytes())
    }

    pub fn key(&self) -> Result<BackupKey, DeviceError> {
        self.read_key(KEY)?
            .ok_or_else(|| DeviceError::NotEnabled(self.dir.clone()))
    }

    /// The key of a home that holds no settings (an enable or restore stopped between writing
    /// the two), if there is one.
    pub fn leftover_key(&self) -> Result<Option<BackupKey>, DeviceError> {
        self.read_key(KEY)
    }

    pub fn save_key(&self, key: &BackupKey) -> Result<(), DeviceError> {
        self.replace(KEY, code_text(key).as_bytes())
    }

    /// K' of a rotation under way, if one was interrupted.
    pub fn next_key(&self) -> Result<Option<BackupKey>, DeviceError> {
        self.read_key(NEXT_KEY)
    }

    pub fn save_next_key(&self, key: &BackupKey) -> Result<(), DeviceError> {
        self.replace(NEXT_KEY, code_text(key).as_bytes())
    }

    /// Makes K' the key: one rename, so a crash leaves K' either pending or current.
    pub fn promote_next_key(&self) -> Result<(), DeviceError> {
        let from = self.dir.join(NEXT_KEY);
        std::fs::rename(&from, self.dir.join(KEY)).map_err(DeviceError::io(&from))?;
        self.sync_dir()
    }

    pub fn high_water(&self) -> Result<Option<HighWater>, DeviceError> {
        let path = self.dir.join(HIGH_WATER);
        match std::fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DeviceError::io(&path)(e)),
            Ok(bytes) => {
                HighWater::from_bytes(&bytes)
                    .map(Some)
                    .map_err(|e| DeviceError::Settings {
                        path,
                        message: e.to_string(),
                    })
            }
        }
    }

    pub fn save_high_water(&self, high: &HighWater) -> Result<(), DeviceError> {
        self.replace(HIGH_WATER, &high.to_bytes())
    }

    /// The repository state, or a fresh device id (not yet saved) on first use.
    pub fn repo_state(&self) -> Result<RepoState, DeviceError> {
        let path = self.dir.join(REPO_MARK);
        match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RepoState {
                device: DeviceId::generate(&mut lockbox_crypto::OsRng),
                mark: None,
            }),
            Err(e) => Err(DeviceError::io(&path)(e)),
            Ok(text) => RepoState::from_toml(&text).ok_or_else(|| DeviceError::Settings {
                path,
                message: "not a repository mark (device id, repository, sequence, MAC)".into(),
            }),
        }
    }

    /// Takes this device's run lock, or fails at once if another run holds it.
    pub fn lock_run(&self) -> Result<RunLock, DeviceError> {
        let (file, path) = self.lock_file(RUN_LOCK)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(DeviceError::Busy),
            Err(std::fs::TryLockError::Error(e)) => Err(DeviceError::io(&path)(e)),
        }
    }

    /// Reads the repository state (a fresh device id on first use), lets `change` change it,
    /// and saves it if it changed: all under the home's repository lock, so two runs on one
    /// device never lose each other's mark.
    pub fn update_repo_state(
        &self,
        change: impl FnOnce(&mut RepoState),
    ) -> Result<RepoState, DeviceError> {
        let (lock, path) = self.lock_file(REPO_LOCK)?;
        lock.lock().map_err(DeviceError::io(&path))?;
        let saved = self.dir.join(REPO_MARK).exists();
        let before = self.repo_state()?;
        let mut state = before.clone();
        change(&mut state);
        if state != before || !saved {
            self.replace(REPO_MARK, state.to_toml().as_bytes())?;
        }
        Ok(state)
    }

    /// Forgets the repository (its mark, this device's id there, the file cache) once it was
    /// deleted.
    pub fn forget_repo(&self) -> Result<(), DeviceError> {
        self.remove_all(&[FILE_CACHE, REPO_MARK])
    }

    /// A lock file of the home, opened (created if need be), not yet locked.
    fn lock_file(&self, name: &str) -> Result<(std::fs::File, PathBuf), DeviceError> {
        let path = self.dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(DeviceError::io(&path))?;
        Ok((file, path))
    }

    /// Removes the files `names` (those already gone are fine), then syncs the directory.
    fn remove_all(&self, names: &[&str]) -> Result<(), DeviceError> {
        for name in names {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(DeviceError::io(&path)(e));
                }
                _ => {}
            }
        }
        self.sync_dir()
    }

    /// The file cache of the last snapshot; none (every file read) if it is missing or not one.
    pub fn file_cache(&self) -> Option<FileCache> {
        FileCache::decode(&std::fs::read(self.dir.join(FILE_CACHE)).ok()?)
    }

    pub fn save_file_cache(&self, cache: &FileCache) -> Result<(), DeviceError> {
        self.replace(FILE_CACHE, &cache.encode())
    }

    /// Removes everything this home holds (the key last), leaving the directory.
    pub fn wipe(&self) -> Result<(), DeviceError> {
        self.remove_all(&[
            SETTINGS, HIGH_WATER, FILE_CACHE, REPO_MARK, REPO_LOCK, RUN_LOCK, NEXT_KEY, KEY,
        ])
    }

    fn read_key(&self, name: &str) -> Result<Option<BackupKey>, DeviceError> {
        let path = self.dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => Zeroizing::new(other.map_err(DeviceError::io(&path))?),
        };
        let code = RecoveryCode::parse(&text).map_err(|e| DeviceError::Settings {
            path,
            message: e.to_string(),
        })?;
        Ok(Some(code.into_key()))
    }

    /// Writes `name` anew: a 0600 temporary file beside it, fsync'd, renamed over it.
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), DeviceError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, bytes)?;
        std::fs::rename(&tmp, &path).map_err(DeviceError::io(&path))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), DeviceError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(DeviceError::io(&self.dir))
    }
}

fn code_text(key: &BackupKey) -> Zeroizing<String> {
    let mut text = key.recovery_code().to_grouped();
    text.push('\n');
    text
}

/// Writes `bytes` to a new file at `path` with mode 0600, fsync'd, refusing to overwrite
/// anything.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DeviceError> {
    create_private(path, bytes).map_err(DeviceError::io(path))
}

/// [`write_private`] with the bare I/O error, for callers that say what the file is.
pub fn create_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
