use std::io;

/// Everything that can go wrong while writing or reading a lockbox stream, by fault.
///
/// Reading errors are final: a [`crate::Decoder`] that returned one returns it again on every
/// later call, and never emits more plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input does not start with the lockbox magic bytes.
    #[error("not a lockbox backup (bad magic bytes)")]
    NotLockbox,
    /// A lockbox stream of a version this code does not read.
    #[error("unsupported lockbox format version {0}")]
    UnsupportedVersion(u8),
    /// The key-check value does not match and the header MAC does not verify: another key.
    #[error("wrong key: this backup was made with a different backup key")]
    WrongKey,
    /// The header was altered: its MAC or its key-check value does not match the rest.
    #[error("backup header is corrupt or was tampered with")]
    HeaderCorrupt,
    /// The header is authentic but carries values this version forbids.
    #[error("invalid backup header: {0}")]
    InvalidHeader(&'static str),
    /// The stream ends early: inside the header, inside a chunk, or at a chunk boundary
    /// before the final chunk.
    #[error("backup is truncated")]
    Truncated,
    /// Bytes follow the authentic final chunk.
    #[error("unexpected data after the end of the backup")]
    TrailingData,
    /// A chunk is authentic but sits at the wrong position (reordered or duplicated), at most
    /// [`crate::REORDER_WINDOW`] positions from where it belongs; further away it reads as
    /// [`FormatError::ChunkCorrupt`].
    #[error("chunk {index} is out of order (it belongs at position {belongs_at})")]
    ChunkOutOfOrder { index: u64, belongs_at: u64 },
    /// A chunk carries another backup's chunk tag: swapped in from a different backup.
    #[error("chunk {index} belongs to a different backup")]
    ForeignChunk { index: u64 },
    /// A chunk fails authentication (bit flips, bad padding, altered chunk tag).
    #[error("chunk {index} is corrupt or was tampered with")]
    ChunkCorrupt { index: u64 },
    /// Encoder parameters: the chunk size must be a power of two in 1 KiB..=16 MiB.
    #[error("invalid chunk size {0}: must be a power of two from 1 KiB to 16 MiB")]
    InvalidChunkSize(usize),
    /// More than 2^64 - 1 chunks in one stream.
    #[error("chunk counter overflow: stream too long")]
    CounterOverflow,
    /// The cryptographic library refused an operation it should never refuse.
    #[error("internal cryptographic failure")]
    Crypto,
}

impl FormatError {
    /// The stream was made under another backup key (e.g. a mistyped recovery code).
    pub fn is_wrong_key(&self) -> bool {
        matches!(self, Self::WrongKey)
    }

    /// The stream is a lockbox stream for this key, but was tampered with, truncated,
    /// extended, reordered or corrupted.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            Self::HeaderCorrupt
                | Self::Truncated
                | Self::TrailingData
                | Self::ChunkOutOfOrder { .. }
                | Self::ForeignChunk { .. }
                | Self::ChunkCorrupt { .. }
        )
    }

    /// The `FormatError` carried inside an `io::Error` made by this crate's adapters, if any.
    pub fn from_io(e: &io::Error) -> Option<&FormatError> {
        e.get_ref()?.downcast_ref::<FormatError>()
    }

    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_io_finds_the_carried_error() {
        let e = FormatError::ChunkCorrupt { index: 3 }.into_io();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            FormatError::from_io(&e),
            Some(&FormatError::ChunkCorrupt { index: 3 })
        );
        assert_eq!(FormatError::from_io(&io::Error::other("x")), None);
        assert_eq!(
            FormatError::from_io(&io::ErrorKind::BrokenPipe.into()),
            None
        );
    }

    #[test]
    fn classification() {
        assert!(FormatError::WrongKey.is_wrong_key());
        assert!(!FormatError::WrongKey.is_integrity());
        assert!(FormatError::Truncated.is_integrity());
        assert!(FormatError::HeaderCorrupt.is_integrity());
        assert!(!FormatError::NotLockbox.is_integrity());
        assert!(!FormatError::UnsupportedVersion(2).is_integrity());
    }
}
