//! Which stored objects are backups this key made: each object's stream header is read and
//! authenticated (its HMAC under the per-backup key derived from K) and must match the object's
//! name. Prune and "latest" trust only these, never bare object names, which anyone who can
//! write to the storage (or a device with a wrong clock) chooses.
//!
//! A header that does not open is told apart as far as its bytes allow: magic or version
//! bytes whose header authenticates once they are put back were damaged; a header naming
//! another backup than its object was altered; a key that opens the other backups in the store
//! is the right key. Only what stays ambiguous is reported as "wrong key, or corrupt".

use std::io::Read;
use std::ops::Range;

use lockbox_crypto::BackupKey;
use lockbox_format::{FormatError, HEADER_LEN, Header, MAGIC, VERSION, parse_header};
use lockbox_store::{BackupInfo, BackupName, Store};
use tokio::runtime::Handle;

use crate::backup::{BackupError, Fault};

/// A stream header that does not open as the backup it should be, told apart as far as the
/// header allows.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Damaged or replaced: the header proves it.
    #[error("{object} is corrupt: {what}")]
    Corrupt { object: String, what: String },
    /// Neither the key-check value nor the header MAC matches: what another key does, and
    /// also what a damaged backup id does.
    #[error(
        "{object}: wrong key, or its header is corrupt (neither its key-check value nor its MAC matches this key)"
    )]
    WrongKeyOrCorrupt { object: String },
    /// No stored backup opens with this key.
    #[error(
        "none of the {count} backups at {url} opens with this key: wrong key, or every header is corrupt"
    )]
    NoneOpens { url: String, count: usize },
    /// Objects are stored, none of them an intact backup for this key.
    #[error("no intact backup at {url}: none of its {count} objects verifies")]
    NoneIntact { url: String, count: usize },
    /// A format this version does not read.
    #[error("{object}: unsupported lockbox format version {version}; a newer lockbox made it")]
    UnsupportedVersion { object: String, version: u8 },
    /// Any other header fault, classified as the format classifies it.
    #[error("{object}: {source}")]
    Format {
        object: String,
        #[source]
        source: FormatError,
    },
}

impl HeaderError {
    pub fn fault(&self) -> Fault {
        match self {
            Self::Corrupt { .. } | Self::NoneIntact { .. } => Fault::Integrity,
            Self::WrongKeyOrCorrupt { .. } | Self::NoneOpens { .. } => Fault::Auth,
            Self::UnsupportedVersion { .. } => Fault::Other,
            Self::Format { source, .. } => Fault::of_format(source),
        }
    }
}

/// Where the creation time and the named part of the backup id sit in a header
/// (docs/format.md): the fields an object name repeats.
const CREATED_AT: Range<usize> = 12..20;
const NAMED_ID_AT: Range<usize> = 20..28;
const VERSION_AT: usize = 8;

/// The first [`HEADER_LEN`] bytes of `input`, or all of it if it is shorter.
pub fn read_head(input: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEADER_LEN);
    input.take(HEADER_LEN as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// What is wrong with a header, before knowing where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderFault {
    /// Not a lockbox stream at all.
    NotLockbox,
    /// Only these constant bytes were damaged: with them put back, the header authenticates.
    Altered(&'static str),
    /// A version this code does not read, and not a damaged version 1 header.
    Unsupported(u8),
    /// Neither key check nor MAC matches: another key, or a damaged backup id.
    WrongKeyOrCorrupt,
    /// Anything else the format reports (corrupt header, truncated, forbidden values).
    Format(FormatError),
}

/// Authenticates `head` (the first [`HEADER_LEN`] bytes of a stream, or all of it if shorter).
pub fn check_header(head: &[u8], key: &BackupKey) -> Result<Header, HeaderFault> {
    match parse_header(head, key) {
        Ok(header) => Ok(header),
        Err(FormatError::NotLockbox) => Err(restored(head, key).unwrap_or(HeaderFault::NotLockbox)),
        Err(FormatError::UnsupportedVersion(v)) => {
            Err(restored(head, key).unwrap_or(HeaderFault::Unsupported(v)))
        }
        Err(FormatError::WrongKey) => Err(HeaderFault::WrongKeyOrCorrupt),
        Err(other) => Err(HeaderFault::Format(other)),
    }
}

/// `Altered` if the header authenticates with its magic and version put back.
fn restored(head: &[u8], key: &BackupKey) -> Option<HeaderFault> {
    let mut fixed: [u8; HEADER_LEN] = head.get(..HEADER_LEN)?.try_into().ok()?;
    fixed[..MAGIC.len()].copy_from_slice(&MAGIC);
    fixed[VERSION_AT] = VERSION;
    parse_header(&fixed, key).ok()?;
    let magic = head[..MAGIC.len()] != MAGIC;
    let version = head[VERSION_AT] != VERSION;
    Some(HeaderFault::Altered(match (magic, version) {
        (true, true) => "magic and version bytes were",
        (true, false) => "magic bytes were",
        _ => "version byte was",
    }))
}

/// The error for a fault in a stream read from a file or pipe (`decrypt`): a stream that is not
/// a lockbox stream is a usage error there, not corruption.
pub fn file_error(fault: HeaderFault, object: &str) -> BackupError {
    match fault {
        HeaderFault::NotLockbox => FormatError::NotLockbox.into(),
        other => describe(other, object).into(),
    }
}

fn describe(fault: HeaderFault, object: &str) -> HeaderError {
    let object = object.to_owned();
    match fault {
        HeaderFault::NotLockbox => HeaderError::Corrupt {
            object,
            what: "it is not a lockbox backup (bad magic bytes): damaged or replaced".into(),
        },
        HeaderFault::Altered(what) => HeaderError::Corrupt {
            object,
            what: format!("its header's {what} altered (it authenticates once they are put back)"),
        },
        HeaderFault::Unsupported(version) => HeaderError::UnsupportedVersion { object, version },
        HeaderFault::WrongKeyOrCorrupt => HeaderError::WrongKeyOrCorrupt { object },
        HeaderFault::Format(source) => HeaderError::Format { object, source },
    }
}

/// Why a stored object is not counted as a backup.
#[derive(Debug)]
pub struct Rejected {
    pub err: BackupError,
    /// Its header authenticates under the key (after putting back constant bytes, if need
    /// be): one of this key's own backups, damaged or renamed, not just something planted.
    pub authentic: bool,
}

impl Rejected {
    fn new(err: impl Into<BackupError>, authentic: bool) -> Self {
        Rejected {
            err: err.into(),
            authentic,
        }
    }
}

/// Checks that the stored object `info`, whose first bytes are `head`, is the backup its name
/// says, made under `key`. A stored object is known to be meant as a backup, so "not a lockbox
/// stream" is corruption here.
pub fn check_stored(info: &BackupInfo, head: &[u8], key: &BackupKey) -> Result<Header, Rejected> {
    let object = info.location.to_string();
    let fault = match check_header(head, key) {
        Ok(header) => return matches_name(info, header).map_err(|e| Rejected::new(e, true)),
        Err(fault) => fault,
    };
    if fault == HeaderFault::WrongKeyOrCorrupt && !names_match(&info.name, head) {
        let err = HeaderError::Corrupt {
            object,
            what: "its header names another backup than its object name, and does not open \
                   under this key"
                .into(),
        };
        return Err(Rejected::new(err, false));
    }
    let authentic = matches!(fault, HeaderFault::Altered(_));
    Err(Rejected::new(describe(fault, &object), authentic))
}

/// A verified header must be the one the object's name promises (a provider that swaps or
/// renames objects is caught here).
fn matches_name(info: &BackupInfo, header: Header) -> Result<Header, BackupError> {
    let found = crate::backup::backup_name(&header);
    if found == info.name {
        return Ok(header);
    }
    // Both fields are named: a renamed object may differ in its creation time alone.
    let describe = |n: &BackupName| format!("{} (created_unix_ms {})", n.id, n.created_unix_ms);
    Err(BackupError::Swapped {
        object: info.location.to_string(),
        expected: describe(&info.name),
        found: describe(&found),
    })
}

/// Whether the unauthenticated header fields that an object name repeats agree with it.
fn names_match(name: &BackupName, head: &[u8]) -> bool {
    let (Some(created), Some(id)) = (head.get(CREATED_AT), head.get(NAMED_ID_AT)) else {
        return false;
    };
    let created = u64::from_be_bytes(created.try_into().expect("8 bytes"));
    created == name.created_unix_ms && hex::encode(id) == name.id
}

/// "Wrong key, or corrupt" becomes "corrupt" once the same key opens another backup there.
fn upgrade(err: BackupError, key_opens_others: bool) -> BackupError {
    match err {
        BackupError::Header(HeaderError::WrongKeyOrCorrupt { object }) if key_opens_others => {
            HeaderError::Corrupt {
                object,
                what: "its header does not open under this key, which opens other backups here"
                    .into(),
            }
            .into()
        }
        other => other,
    }
}

/// Every object that lists as a backup, sorted into the verified and the rejected.
#[derive(Debug)]
pub struct Catalog {
    /// Oldest first (by name, which for these is their authenticated header).
    pub verified: Vec<BackupInfo>,
    pub rejected: Vec<(BackupInfo, Rejected)>,
}

impl Catalog {
    /// Reads and checks every listed object's header. Storage errors fail the whole check.
    pub fn load(store: &Store, rt: &Handle, key: &BackupKey) -> Result<Self, BackupError> {
        let listed = rt.block_on(store.list())?;
        let heads = rt.block_on(store.read_heads(&listed, HEADER_LEN as u64))?;
        let checked: Vec<_> = listed
            .into_iter()
            .zip(heads)
            .map(|(info, head)| {
                let result = check_stored(&info, &head, key);
                (info, result)
            })
            .collect();
        let opens_some = checked.iter().any(|(_, result)| result.is_ok());
        let mut catalog = Catalog {
            verified: Vec::new(),
            rejected: Vec::new(),
        };
        for (info, result) in checked {
            match result {
                Ok(_) => catalog.verified.push(info),
                Err(mut rejected) => {
                    rejected.err = upgrade(rejected.err, opens_some);
                    catalog.rejected.push((info, rejected));
                }
            }
        }
        Ok(catalog)
    }

    /// The newest verified backup. Refused when an object named newer is one of this key's
    /// backups, damaged or swapped (restoring an older one would be the rollback the storage is
    /// after); planted or foreign objects are passed over (they stay in `rejected`, for the
    /// caller to warn about). Without a verified backup, the error says why: no backups, none
    /// opens with this key, or (for a single object) exactly what is wrong with it.
    pub fn latest(&mut self, url: &str) -> Result<BackupInfo, BackupError> {
        if let Some(newest) = self.verified.last() {
            let blocking = self
                .rejected
                .iter()
                .position(|(info, r)| r.authentic && info.name > newest.name);
            if let Some(at) = blocking {
                let (info, r) = self.rejected.remove(at);
                return Err(BackupError::NewestDamaged {
                    id: info.name.id,
                    source: Box::new(r.err),
                });
            }
            return Ok(self.verified.pop().expect("not empty"));
        }
        let count = self.rejected.len();
        if count == 1 {
            return Err(self.rejected.remove(0).1.err);
        }
        let ambiguous = |r: &Rejected| {
            matches!(
                r.err,
                BackupError::Header(HeaderError::WrongKeyOrCorrupt { .. })
            )
        };
        let url = url.to_owned();
        match count {
            0 => Err(BackupError::NoBackups { url }),
            _ if self.rejected.iter().all(|(_, r)| ambiguous(r)) => {
                Err(HeaderError::NoneOpens { url, count }.into())
            }
            _ => Err(HeaderError::NoneIntact { url, count }.into()),
        }
    }
}

/// Checks the backup `info` about to be restored from its first bytes, telling a damaged header
/// from a wrong key by the other backups in the store when the header alone cannot.
pub fn check_for_restore(
    store: &Store,
    rt: &Handle,
    info: &BackupInfo,
    head: &[u8],
    key: &BackupKey,
) -> Result<Header, BackupError> {
    let err = match check_stored(info, head, key) {
        Ok(header) => return Ok(header),
        Err(rejected) => rejected.err,
    };
    if !matches!(
        err,
        BackupError::Header(HeaderError::WrongKeyOrCorrupt { .. })
    ) {
        return Err(err);
    }
    let others = Catalog::load(store, rt, key)?;
    Err(upgrade(err, others.verified.iter().any(|b| b != info)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockbox_crypto::OsRng;
    use lockbox_format::{Encoder, EncoderParams};

    fn header_bytes(key: &BackupKey) -> Vec<u8> {
        let params = EncoderParams {
            created_unix_ms: 1_700_000_000_000,
            ..Default::default()
        };
        Encoder::new(key, params, &mut OsRng)
            .unwrap()
            .header_bytes()
            .to_vec()
    }

    #[test]
    fn each_fault_is_named() {
        let key = BackupKey::generate(&mut OsRng);
        let good = header_bytes(&key);
        assert!(check_header(&good, &key).is_ok());
        let flipped = |at: usize| {
            let mut h = good.clone();
            h[at] ^= 1;
            check_header(&h, &key).unwrap_err()
        };
        assert_eq!(flipped(0), HeaderFault::Altered("magic bytes were"));
        assert_eq!(flipped(8), HeaderFault::Altered("version byte was"));
        assert_eq!(flipped(40), HeaderFault::WrongKeyOrCorrupt);
        assert_eq!(flipped(60), HeaderFault::Format(FormatError::HeaderCorrupt));
        assert_eq!(flipped(90), HeaderFault::Format(FormatError::HeaderCorrupt));
        let other = BackupKey::generate(&mut OsRng);
        assert_eq!(
            check_header(&good, &other).unwrap_err(),
            HeaderFault::WrongKeyOrCorrupt
        );
        assert_eq!(
            check_header(b"plain text", &key).unwrap_err(),
            HeaderFault::NotLockbox
        );
        let mut v2 = good.clone();
        v2[8] = 2;
        assert_eq!(
            check_header(&v2, &other).unwrap_err(),
            HeaderFault::Unsupported(2)
        );
        assert_eq!(
            check_header(&good[..50], &key).unwrap_err(),
            HeaderFault::Format(FormatError::Truncated)
        );
    }
}
