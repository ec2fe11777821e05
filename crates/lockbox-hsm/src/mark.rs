//! Rollback marks: a small value a vault node keeps where its own disk cannot take it back in
//! time (DESIGN.md §5). The node writes its Raft high-water mark here before it acknowledges
//! what the mark covers, and refuses to serve if it ever finds its disk behind it.
//!
//! * [`Pkcs11Mark`]: a private data object in the PKCS#11 token (in a real HSM, its NVRAM).
//!   Restoring the node's disk from an older copy leaves it as it was.
//! * [`FileMark`]: the embedded default, a file sealed under the node's [`Sealer`] (so it cannot
//!   be forged or moved between nodes), written atomically with fsync. It lives on the same disk,
//!   so a rollback of the whole disk takes it back too; it still catches a data directory
//!   restored on its own. Production nodes use the token.
//!
//! Honest limit: whoever holds the token's PIN can write an older value into the object; the
//! mark defends against a disk that went back in time, not against the HSM's own operator.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::pkcs11::{ck, find_slot, login, shared_context};
use crate::{Pkcs11Config, SealError, Sealer};

/// Where a node keeps its rollback mark.
pub trait MarkStore: Send + Sync + fmt::Debug {
    /// The value last stored, or `None` before the first store.
    fn load(&self) -> Result<Option<Vec<u8>>, SealError>;
    /// Replaces the value; returns once it is kept (fsync'd, or in the token).
    fn store(&self, value: &[u8]) -> Result<(), SealError>;
    /// Whether restoring the node's disk leaves this mark where it was.
    fn outlives_disk_rollback(&self) -> bool;
}

/// The mark as a file sealed under the node's sealer.
#[derive(Debug)]
pub struct FileMark {
    path: PathBuf,
    sealer: Arc<dyn Sealer>,
    aad: Vec<u8>,
    write: Mutex<()>,
}

impl FileMark {
    /// A mark named `name` (the node's identity) in the file at `path`.
    pub fn new(path: impl Into<PathBuf>, sealer: Arc<dyn Sealer>, name: &str) -> Self {
        let mut aad = b"lockbox/v1/rollback-mark/".to_vec();
        aad.extend_from_slice(name.as_bytes());
        Self {
            path: path.into(),
            sealer,
            aad,
            write: Mutex::new(()),
        }
    }

    fn io(&self, what: &str, e: &std::io::Error) -> SealError {
        SealError::Mark(format!("{what} {}: {e}", self.path.display()))
    }
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

impl MarkStore for FileMark {
    fn load(&self) -> Result<Option<Vec<u8>>, SealError> {
        let sealed = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("cannot read rollback mark", &e)),
        };
        Ok(Some(self.sealer.unseal(&self.aad, &sealed)?.to_vec()))
    }

    fn store(&self, value: &[u8]) -> Result<(), SealError> {
        let _one_writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let sealed = self.sealer.seal(&self.aad, value)?;
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&sealed)?;
            f.sync_all()
        });
        written.map_err(|e| self.io("cannot write rollback mark", &e))?;
        std::fs::rename(&tmp, &self.path)
            .and_then(|()| fsync_dir(&self.path))
            .map_err(|e| self.io("cannot replace rollback mark", &e))
    }

    fn outlives_disk_rollback(&self) -> bool {
        false
    }
}

/// The mark as a private data object in a PKCS#11 token.
///
/// Tokens need not let an application change a data object's value (SoftHSM2 does not), so a
/// store creates a new object and then destroys the old one. Each value carries a serial number
/// (8 bytes, big-endian, before the mark): if a crash leaves two objects, the higher serial wins
/// and the other is removed at the next open. There is never a moment with no object.
pub struct Pkcs11Mark {
    label: String,
    session: Mutex<Session>,
    current: Mutex<Option<Current>>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    handle: ObjectHandle,
    serial: u64,
}

impl fmt::Debug for Pkcs11Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Mark")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

fn value_of(session: &Session, handle: ObjectHandle) -> Result<Vec<u8>, SealError> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::Value])
        .map_err(ck("C_GetAttributeValue"))?;
    match attrs.into_iter().next() {
        Some(Attribute::Value(v)) => Ok(v),
        _ => Err(SealError::Mark("a mark object has no value".into())),
    }
}

fn serial_of(value: &[u8]) -> Result<u64, SealError> {
    value
        .first_chunk::<8>()
        .map(|s| u64::from_be_bytes(*s))
        .ok_or_else(|| SealError::Mark("a mark object is too short".into()))
}

impl Pkcs11Mark {
    /// Opens the mark labelled `lockbox-mark/<name>` in the configured token, logging in.
    pub fn open(config: &Pkcs11Config, name: &str) -> Result<Self, SealError> {
        let pin = config.resolve_pin()?;
        let ctx = shared_context(&config.module_path)?;
        let slot = find_slot(&ctx, &config.token_label)?;
        let session = ctx.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        login(&session, &pin)?;
        let label = format!("lockbox-mark/{name}");
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::DATA),
                // Only private objects: anyone can create a public one without the PIN, and a
                // public impostor with a high serial would otherwise replace the real mark.
                Attribute::Private(true),
                Attribute::Label(label.clone().into_bytes()),
            ])
            .map_err(ck("C_FindObjects"))?;
        let mut current: Option<Current> = None;
        for handle in found {
            let serial = serial_of(&value_of(&session, handle)?)?;
            let (keep, drop) = match current {
                Some(c) if c.serial >= serial => (c, handle),
                Some(c) => (Current { handle, serial }, c.handle),
                None => {
                    current = Some(Current { handle, serial });
                    continue;
                }
            };
            session
                .destroy_object(drop)
                .map_err(ck("C_DestroyObject"))?;
            current = Some(keep);
        }
        Ok(Self {
            label,
            session: Mutex::new(session),
            current: Mutex::new(current),
        })
    }
}

impl MarkStore for Pkcs11Mark {
    fn load(&self) -> Result<Option<Vec<u8>>, SealError> {
        let Some(current) = *self.current.lock().unwrap_or_else(PoisonError::into_inner) else {
            return Ok(None);
        };
        let session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let mut value = value_of(&session, current.handle)?;
        value.drain(..8);
        Ok(Some(value))
    }

    fn store(&self, value: &[u8]) -> Result<(), SealError> {
        let session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let serial = current.map_or(Ok(1), |c| {
            c.serial
                .checked_add(1)
                .ok_or_else(|| SealError::Mark("mark serial exhausted".into()))
        })?;
        let mut stored = serial.to_be_bytes().to_vec();
        stored.extend_from_slice(value);
        let handle = session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(self.label.clone().into_bytes()),
                Attribute::Value(stored),
            ])
            .map_err(ck("C_CreateObject"))?;
        let old = current.replace(Current { handle, serial });
        if let Some(old) = old {
            session
                .destroy_object(old.handle)
                .map_err(ck("C_DestroyObject"))?;
        }
        Ok(())
    }

    fn outlives_disk_rollback(&self) -> bool {
        true
    }
}
