//! The repository's writer lock: one object, `lock`, created only if absent, so a backup and a
//! prune (or two of either) never run at once. A prune deletes packs that a concurrent backup
//! may just have decided to reuse; the lock is what makes that impossible.
//!
//! ```text
//! lock = "LBXLOCK\0" | device_id[16] | purpose u8 (1 backup, 2 prune) | refreshed_unix_ms u64
//!        | token[16]
//! ```
//! The holder rewrites it every [`LOCK_REFRESH`], after checking it still holds its own random
//! token; a lock not refreshed for [`LOCK_STALE_MS`] was left by a writer that died (or slept),
//! and is taken over. So a taken-over holder never goes on as if nothing happened, it checks
//! ([`RepoLock::verify`]) before every step that commits or deletes: the lock must still carry
//! its token, and its own last successful refresh must be well within the stale time by its own
//! wall clock (which, unlike a monotonic one, counts a suspend). A holder only ever deletes a
//! lock with its own token. The object is not authenticated: the storage can always refuse
//! service, and a forged lock does no more.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use std::sync::{Arc, Mutex};

use lockbox_crypto::{OsRng, RngCore};
use lockbox_store::{ObjectName, PutIf, Store, StoreError};
use tokio::task::JoinHandle;

use crate::RepoError;
use crate::ids::DeviceId;
use crate::repo::Repository;

const LOCK_OBJECT: &str = "lock";
const LOCK_MAGIC: [u8; 8] = *b"LBXLOCK\0";
const LOCK_LEN: usize = 8 + 16 + 1 + 8 + 16;
/// A holder whose last successful refresh is older than the stale time less this margin stops.
const LOCK_MARGIN_MS: u64 = 2 * 60 * 1000;
/// How often a holder rewrites its lock.
pub const LOCK_REFRESH: Duration = Duration::from_secs(60);
/// A lock not rewritten for this long belongs to a writer that died.
pub const LOCK_STALE_MS: u64 = 10 * 60 * 1000;

/// What a writer holds the lock for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Backup,
    Prune,
}

impl Purpose {
    fn code(self) -> u8 {
        match self {
            Purpose::Backup => 1,
            Purpose::Prune => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Purpose::Backup),
            2 => Some(Purpose::Prune),
            _ => None,
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Purpose::Backup => "a backup",
            Purpose::Prune => "a prune",
        })
    }
}

/// Who holds a lock, as its object says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockHolder {
    pub device: DeviceId,
    pub purpose: Purpose,
    pub refreshed_unix_ms: u64,
    /// Random per lock taken: tells a holder its lock from a later one.
    pub token: [u8; 16],
}

impl LockHolder {
    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(LOCK_LEN);
        out.extend_from_slice(&LOCK_MAGIC);
        out.extend_from_slice(&self.device.0);
        out.push(self.purpose.code());
        out.extend_from_slice(&self.refreshed_unix_ms.to_be_bytes());
        out.extend_from_slice(&self.token);
        Bytes::from(out)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LOCK_LEN || bytes[..8] != LOCK_MAGIC {
            return None;
        }
        Some(LockHolder {
            device: DeviceId(bytes[8..24].try_into().ok()?),
            purpose: Purpose::from_code(bytes[24])?,
            refreshed_unix_ms: u64::from_be_bytes(bytes[25..33].try_into().ok()?),
            token: bytes[33..].try_into().ok()?,
        })
    }
}

/// The held lock: proof for [`Repository::backup`] and [`Repository::prune`]. Give it back with
/// [`release`](Self::release); dropped unreleased (an error on the way), it is deleted in the
/// background.
pub struct RepoLock<'r> {
    repo: &'r Repository,
    refresher: Option<JoinHandle<()>>,
    pub(crate) device: DeviceId,
    token: [u8; 16],
    health: Arc<Mutex<Health>>,
}

/// What the refresher learned.
#[derive(Debug, Clone, Copy)]
struct Health {
    last_ok_unix_ms: u64,
    lost: bool,
}

impl std::fmt::Debug for RepoLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoLock")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock_name() -> ObjectName {
    ObjectName::new(LOCK_OBJECT).expect("a valid object name")
}

impl Repository {
    /// Takes the writer lock for `device`. A lock another writer refreshed within
    /// [`LOCK_STALE_MS`] is [`RepoError::Locked`]. One left by this same device is taken over
    /// only if `own_is_stale` (the caller knows no other run of this device is alive, because
    /// it holds the device's local lock); otherwise it counts as another writer's.
    pub fn lock(
        &self,
        device: DeviceId,
        purpose: Purpose,
        own_is_stale: bool,
    ) -> Result<RepoLock<'_>, RepoError> {
        let mut token = [0u8; 16];
        OsRng.fill_bytes(&mut token);
        let ours = LockHolder {
            device,
            purpose,
            refreshed_unix_ms: now_ms(),
            token,
        };
        let store = self.store();
        let name = lock_name();
        let first = self
            .rt()
            .block_on(store.put_object(&name, ours.encode(), PutIf::Absent));
        match first {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                let holder = self.rt().block_on(read_holder(&store))?;
                let takeover = match holder {
                    None => true,
                    Some(h) if h.device == device && own_is_stale => true,
                    Some(h) => now_ms().saturating_sub(h.refreshed_unix_ms) > LOCK_STALE_MS,
                };
                if !takeover {
                    let h = holder.expect("a live lock has a holder");
                    return Err(RepoError::Locked {
                        url: self.url().to_owned(),
                        device: h.device,
                        purpose: h.purpose,
                        refreshed_unix_ms: h.refreshed_unix_ms,
                    });
                }
                // Taken over by replacing: a writer that died rewrites nothing any more.
                self.rt()
                    .block_on(store.put_object(&name, ours.encode(), PutIf::Always))?;
            }
            Err(e) => return Err(e.into()),
        }
        let health = Arc::new(Mutex::new(Health {
            last_ok_unix_ms: ours.refreshed_unix_ms,
            lost: false,
        }));
        let seen = Arc::clone(&health);
        let refresher = self.rt().spawn(async move {
            loop {
                tokio::time::sleep(LOCK_REFRESH).await;
                // A failed refresh is retried next time; verify() stops the holder long before
                // the lock could go stale. One found taken over is never written again.
                match read_holder(&store).await {
                    Ok(Some(h)) if h.token == ours.token => {}
                    Ok(_) => {
                        seen.lock().expect("health").lost = true;
                        return;
                    }
                    Err(_) => continue,
                }
                let now = LockHolder {
                    refreshed_unix_ms: now_ms(),
                    ..ours
                };
                if store
                    .put_object(&lock_name(), now.encode(), PutIf::Always)
                    .await
                    .is_ok()
                {
                    seen.lock().expect("health").last_ok_unix_ms = now.refreshed_unix_ms;
                }
            }
        });
        Ok(RepoLock {
            repo: self,
            refresher: Some(refresher),
            device,
            token,
            health,
        })
    }
}

impl RepoLock<'_> {
    /// Deletes the lock, if it is still this one.
    pub fn release(mut self) -> Result<(), RepoError> {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        let store = self.repo.store();
        Ok(self.repo.rt().block_on(delete_if_ours(store, self.token))?)
    }

    /// Fails with [`RepoError::LockLost`] unless this lock is certainly still held: its last
    /// refresh well within the stale time (by this machine's wall clock, so a suspend counts),
    /// and the lock object still carrying its token. Called before every commit or delete.
    pub fn verify(&self) -> Result<(), RepoError> {
        let health = *self.health.lock().expect("health");
        let age = now_ms().saturating_sub(health.last_ok_unix_ms);
        let lost = || RepoError::LockLost {
            url: self.repo.url().to_owned(),
        };
        if health.lost || age > LOCK_STALE_MS - LOCK_MARGIN_MS {
            return Err(lost());
        }
        match self.repo.rt().block_on(read_holder(&self.repo.store()))? {
            Some(h) if h.token == self.token => Ok(()),
            _ => {
                self.health.lock().expect("health").lost = true;
                Err(lost())
            }
        }
    }

    /// Whether this lock belongs to `repo`.
    pub(crate) fn guards(&self, repo: &Repository) -> bool {
        std::ptr::eq(self.repo, repo)
    }
}

impl Drop for RepoLock<'_> {
    fn drop(&mut self) {
        let Some(r) = self.refresher.take() else {
            return;
        };
        r.abort();
        let store = self.repo.store();
        let token = self.token;
        let delete = async move {
            let _ = delete_if_ours(store, token).await;
        };
        // Outside the runtime (as the repository is used) the delete is done before the drop
        // returns, so it can never remove a lock taken after it.
        match tokio::runtime::Handle::try_current() {
            Err(_) => self.repo.rt().block_on(delete),
            Ok(_) => drop(self.repo.rt().spawn(delete)),
        }
    }
}

/// The lock's holder as its object says (`None`: no lock, or not one).
async fn read_holder(store: &Store) -> Result<Option<LockHolder>, StoreError> {
    match store.get_object_bounded(&lock_name(), 64).await {
        Ok(bytes) => Ok(LockHolder::decode(&bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes the lock if it carries `token`: never another writer's.
async fn delete_if_ours(store: Store, token: [u8; 16]) -> Result<(), StoreError> {
    match read_holder(&store).await? {
        Some(h) if h.token == token => store.delete_object(&lock_name()).await,
        _ => Ok(()),
    }
}
