//! [`RepoError`]: every way a repository operation fails, grouped by fault.

use lockbox_archive::ArchiveError;
use lockbox_store::StoreError;

/// What a failure means for the user: the exit status a command maps it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Wrong key (exit 2).
    Auth,
    /// Tampered, truncated, swapped or rolled back (exit 3).
    Integrity,
    /// Anything else: storage, local disk, usage (exit 1).
    Other,
}

/// Everything that can go wrong reading or writing a repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// No config object: nothing was ever backed up here incrementally.
    #[error("{url} holds no lockbox repository (no config object)")]
    NoRepository { url: String },
    /// The config's key-check value does not match this key.
    #[error("{url}: wrong key for this repository (the key-check value does not match)")]
    WrongKey { url: String },
    /// The repository this device backed up to has no config any more: the storage lost or
    /// deleted it. Never answered by starting a new repository.
    #[error(
        "{url}: repository {repo}, which this device backs up to, is gone (its config object is missing)"
    )]
    Vanished { url: String, repo: crate::RepoId },
    /// The storage holds another repository than the one this device backs up to.
    #[error(
        "{url} holds repository {found}, but this device backs up to repository {expected}: the repository was replaced"
    )]
    Replaced {
        url: String,
        expected: crate::RepoId,
        found: crate::RepoId,
    },
    /// A format version this build does not read.
    #[error("{object}: unsupported repository format version {version}; a newer lockbox made it")]
    UnsupportedVersion { object: String, version: u8 },
    /// An object does not authenticate, or is cut short, or does not parse: altered or
    /// truncated in storage.
    #[error("{object} is corrupt: {what}")]
    Corrupt { object: String, what: String },
    /// A chunk decrypted but its bytes are not the chunk named: blobs were swapped.
    #[error("chunk {chunk} read from {object} holds other data: swapped or altered in storage")]
    ChunkMismatch { chunk: String, object: String },
    /// A snapshot names a chunk that no index knows.
    #[error("chunk {chunk} is in no index of this repository: its pack or index is missing")]
    MissingChunk { chunk: String },
    /// The catalog's chain is broken: an entry dropped, reordered, replaced or altered.
    #[error("the catalog is not intact at entry {seq}: {what}")]
    CatalogBroken { seq: u64, what: String },
    /// The catalog ends before the newest entry this device (or the vault) knows of.
    #[error(
        "the catalog was rolled back: it ends at entry {found}, but entry {expected} was written (the storage is hiding newer backups)"
    )]
    RolledBack { found: u64, expected: u64 },
    /// A snapshot object that does not belong where the catalog put it.
    #[error("snapshot {snapshot} is not this repository's: {what}")]
    ForeignSnapshot { snapshot: String, what: String },
    /// The snapshot asked for is not in the catalog.
    #[error("no snapshot {id} in the catalog of {url}")]
    NoSuchSnapshot { url: String, id: String },
    /// The catalog lists no snapshot yet.
    #[error("no snapshot yet in {url}")]
    NoSnapshot { url: String },
    /// A snapshot id prefix matches several.
    #[error("snapshot id prefix `{prefix}` is ambiguous")]
    AmbiguousSnapshot { prefix: String },
    /// Another backup took the catalog's next entry first, every time we tried.
    #[error("the catalog of {url} kept changing under this backup; try again")]
    Contended { url: String },
    /// Another writer holds the repository's lock.
    #[error(
        "{url} is locked by {purpose} of device {device} (last refreshed at unix ms {refreshed_unix_ms}); try again when it ends"
    )]
    Locked {
        url: String,
        device: crate::DeviceId,
        purpose: crate::Purpose,
        refreshed_unix_ms: u64,
    },
    /// This writer's lock was taken over (it could not refresh it, or slept past the stale
    /// time): it stopped before committing or deleting anything more.
    #[error(
        "{url}: this run's repository lock was taken over by another writer (it could not be refreshed in time); stopped before changing anything more, run it again"
    )]
    LockLost { url: String },
    /// `prune` must keep at least one snapshot.
    #[error("prune must keep at least one snapshot")]
    KeepNothing,
    /// Chunking or pack sizes outside what the format allows.
    #[error("invalid repository sizes {0:?}")]
    InvalidSizes(crate::Sizes),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(ArchiveError),
}

impl RepoError {
    pub fn fault(&self) -> Fault {
        match self {
            Self::WrongKey { .. } => Fault::Auth,
            Self::Corrupt { .. }
            | Self::ChunkMismatch { .. }
            | Self::MissingChunk { .. }
            | Self::CatalogBroken { .. }
            | Self::RolledBack { .. }
            | Self::ForeignSnapshot { .. }
            | Self::Vanished { .. }
            | Self::Replaced { .. } => Fault::Integrity,
            Self::Archive(e) if archive_is_integrity(e) => Fault::Integrity,
            _ => Fault::Other,
        }
    }

    pub(crate) fn corrupt(object: impl Into<String>, what: impl Into<String>) -> Self {
        Self::Corrupt {
            object: object.into(),
            what: what.into(),
        }
    }
}

/// A malformed tree inside an authenticated snapshot means a writer bug or a forged key; either
/// way the data cannot be trusted.
fn archive_is_integrity(e: &ArchiveError) -> bool {
    matches!(
        e,
        ArchiveError::Malformed(_)
            | ArchiveError::Truncated
            | ArchiveError::NotAnArchive
            | ArchiveError::UnsafePath(_)
    )
}

impl From<ArchiveError> for RepoError {
    /// Errors of the repository's own that crossed the archive writer or reader come back out
    /// as themselves.
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Chunks(inner) => match inner.downcast::<RepoError>() {
                Ok(repo) => *repo,
                Err(other) => RepoError::Archive(ArchiveError::Chunks(other)),
            },
            other => RepoError::Archive(other),
        }
    }
}

impl From<RepoError> for ArchiveError {
    fn from(e: RepoError) -> Self {
        ArchiveError::Chunks(Box::new(e))
    }
}
