//! Rollback marks: a small value a vault node keeps where its own disk cannot take it back in
//! time (DESIGN.md §5). The node writes its Raft high-water mark here before it acknowledges
//! what the mark covers, and refuses to serve if it ever finds its disk behind it.
//!
//! * [`Pkcs11Mark`]: a private data object in the PKCS#11 token (in a real HSM, its NVRAM).
//!   Restoring the node's disk from an older copy leaves it as it was.
//! * [`FileMark`]: the embedded default, a file sealed under the node's [`Sealer`] (so it cannot
//!   be forged or moved between nodes), written in place with one flush per store (two slots,
//!   so a torn write leaves the value before). It lives on the same disk,
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

/// The mark as a file sealed under the node's sealer, written in place.
///
/// The file holds two slots of equal size, each `"LBXMARK1" | serial u64 | len u32 | sealed`
/// (the seal's associated data ends with the serial). A store writes the slot that does not hold
/// the newest value and `fdatasync`s: one flush, no new inode, no rename, no directory sync. A
/// crash in the middle tears only the slot being written, and the other still holds the value
/// before, which is lower (a mark may lag the disk, never lead it). A value that outgrows the
/// slots, or a file of the older whole-file format, is replaced atomically (temporary file,
/// fsync, rename, directory fsync) by a two-slot file large enough.
#[derive(Debug)]
pub struct FileMark {
    path: PathBuf,
    sealer: Arc<dyn Sealer>,
    aad: Vec<u8>,
    /// What the last load or store left: `None` until the file is first read.
    slots: Mutex<Option<Slots>>,
}

const SLOT_MAGIC: [u8; 8] = *b"LBXMARK1";
const SLOT_HEAD: usize = 8 + 8 + 4;
const MIN_SLOT: usize = 4096;

/// A mark file's newest value, and its slots unless it is of the whole-file format.
type Found = (Vec<u8>, Option<Slots>);

/// The open two-slot file, and which slot holds the newest value.
#[derive(Debug)]
struct Slots {
    file: std::fs::File,
    size: usize,
    newest: usize,
    serial: u64,
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
            slots: Mutex::new(None),
        }
    }

    fn io(&self, what: &str, e: &std::io::Error) -> SealError {
        SealError::Mark(format!("{what} {}: {e}", self.path.display()))
    }

    fn slot_aad(&self, serial: u64) -> Vec<u8> {
        let mut aad = self.aad.clone();
        aad.extend_from_slice(&serial.to_be_bytes());
        aad
    }

    /// One slot's bytes, without its padding.
    fn slot(&self, serial: u64, value: &[u8]) -> Result<Vec<u8>, SealError> {
        let sealed = self.sealer.seal(&self.slot_aad(serial), value)?;
        let mut out = Vec::with_capacity(SLOT_HEAD + sealed.len());
        out.extend_from_slice(&SLOT_MAGIC);
        out.extend_from_slice(&serial.to_be_bytes());
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The value a slot holds and its serial; `None` for a slot that is empty, torn or altered.
    fn open_slot(&self, bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
        let (head, rest) = bytes.split_first_chunk::<SLOT_HEAD>()?;
        if head[..8] != SLOT_MAGIC {
            return None;
        }
        let serial = u64::from_be_bytes(head[8..16].try_into().ok()?);
        let len = u32::from_be_bytes(head[16..20].try_into().ok()?) as usize;
        let sealed = rest.get(..len)?;
        let value = self.sealer.unseal(&self.slot_aad(serial), sealed).ok()?;
        Some((serial, value.to_vec()))
    }

    /// Reads the file: its newest value, and the slots to write next (none for a file of the
    /// whole-file format, which the next store replaces). Each slot is read on its own, so a
    /// slot a crash left damaged (even unreadable) never hides the other.
    fn read(&self) -> Result<Option<Found>, SealError> {
        use std::os::unix::fs::FileExt;
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("cannot open rollback mark", &e)),
        };
        let len = file
            .metadata()
            .map_err(|e| self.io("cannot stat rollback mark", &e))?
            .len() as usize;
        let size = len / 2;
        let newest = (0..2)
            .filter_map(|i| {
                let mut slot = vec![0; size];
                file.read_exact_at(&mut slot, (i * size) as u64).ok()?;
                let (serial, value) = self.open_slot(&slot)?;
                Some((serial, i, value))
            })
            .max_by_key(|(serial, ..)| *serial);
        if let Some((serial, newest, value)) = newest {
            let slots = Slots {
                file,
                size,
                newest,
                serial,
            };
            return Ok(Some((value, Some(slots))));
        }
        // No slot opens: a file of the whole-file format, or one altered (a store tears one slot
        // at most, so both unreadable is no crash).
        let mut whole = vec![0; len];
        file.read_exact_at(&mut whole, 0)
            .map_err(|e| self.io("cannot read rollback mark", &e))?;
        let slot_at = |at: usize| whole.get(at..at + SLOT_MAGIC.len()) == Some(&SLOT_MAGIC[..]);
        if slot_at(0) || slot_at(size) {
            return Err(SealError::Tampered);
        }
        let value = self.sealer.unseal(&self.aad, &whole)?.to_vec();
        Ok(Some((value, None)))
    }

    /// Replaces the whole file, atomically, by two slots of `size` with `slot` in the first.
    fn replace(&self, slot: &[u8], size: usize) -> Result<std::fs::File, SealError> {
        let mut bytes = slot.to_vec();
        bytes.resize(2 * size, 0);
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        });
        written.map_err(|e| self.io("cannot write rollback mark", &e))?;
        std::fs::rename(&tmp, &self.path)
            .and_then(|()| fsync_dir(&self.path))
            .map_err(|e| self.io("cannot replace rollback mark", &e))?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| self.io("cannot open rollback mark", &e))
    }

    /// The open file must still be the one at the path: writes to a file removed, renamed or
    /// replaced under the running node would go where no start reads them.
    fn still_at_path(&self, file: &std::fs::File) -> Result<(), SealError> {
        use std::os::unix::fs::MetadataExt;
        let id = |m: std::fs::Metadata| (m.dev(), m.ino());
        let open = file.metadata().map(id);
        let named = std::fs::metadata(&self.path).map(id);
        match (open, named) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            _ => Err(SealError::Mark(format!(
                "{} was removed, moved or replaced while the node ran",
                self.path.display()
            ))),
        }
    }

    fn store_in(&self, state: &mut Option<Slots>, value: &[u8]) -> Result<(), SealError> {
        use std::os::unix::fs::FileExt;
        if state.is_none() {
            *state = self.read()?.and_then(|(_, slots)| slots);
        }
        let serial = state.as_ref().map_or(0, |s| s.serial) + 1;
        let slot = self.slot(serial, value)?;
        match state.as_mut() {
            Some(s) if slot.len() <= s.size => {
                self.still_at_path(&s.file)?;
                let target = 1 - s.newest;
                s.file
                    .write_all_at(&slot, (target * s.size) as u64)
                    .and_then(|()| s.file.sync_data())
                    .map_err(|e| self.io("cannot write rollback mark", &e))?;
                s.newest = target;
                s.serial = serial;
            }
            _ => {
                let size = slot.len().next_power_of_two().max(MIN_SLOT);
                let file = self.replace(&slot, size)?;
                *state = Some(Slots {
                    file,
                    size,
                    newest: 0,
                    serial,
                });
            }
        }
        Ok(())
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
        let mut state = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((value, slots)) = self.read()? else {
            *state = None;
            return Ok(None);
        };
        *state = slots;
        Ok(Some(value))
    }

    fn store(&self, value: &[u8]) -> Result<(), SealError> {
        let mut state = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = self.store_in(&mut state, value);
        if stored.is_err() {
            // What a failed store left on disk is unknown: read the file again before the next.
            *state = None;
        }
        stored
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
