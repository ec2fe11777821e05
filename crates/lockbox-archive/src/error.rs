use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Paths in messages are shown with `{:?}`: quoted, valid UTF-8 as text and any other byte
/// escaped (`\xFF`), so a file with a non-UTF-8 name is identifiable and a message stays one line.
///
/// Everything that can go wrong while writing, reading or restoring an archive.
///
/// Grouped by fault: the input stream ([`ArchiveError::Input`]), the output stream
/// ([`ArchiveError::Output`]), the local filesystem ([`ArchiveError::Io`] and friends), and the
/// archive's content ([`ArchiveError::Malformed`], [`ArchiveError::UnsafePath`], ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The reader the archive comes from failed; the original error is kept unchanged so a
    /// caller can inspect its kind or `get_ref()` (for example a decryption failure).
    #[error("reading the archive stream failed: {0}")]
    Input(#[source] io::Error),
    /// The writer the archive goes to failed; the original error is kept unchanged.
    #[error("writing the archive stream failed: {0}")]
    Output(#[source] io::Error),
    /// A local filesystem operation failed.
    #[error("{path:?}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The stream does not start with the archive magic.
    #[error("not a lockbox archive (bad magic)")]
    NotAnArchive,
    /// The archive was written by a newer, unknown format version.
    #[error("unsupported archive version {0}")]
    UnsupportedVersion(u8),
    /// The stream ended before the end-of-archive record.
    #[error("archive is truncated (no end-of-archive record)")]
    Truncated,
    /// The archive violates the format.
    #[error("malformed archive: {0}")]
    Malformed(String),
    /// An entry path is absolute, empty, has `.`/`..`/empty components, a NUL, or is too long.
    /// Holds the path quoted and escaped (see [`show_path`]), or why it is not shown.
    #[error("unsafe path in archive: {0}")]
    UnsafePath(String),
    /// The restore destination exists and is not an empty directory.
    #[error("{0:?}: destination exists and is not an empty directory")]
    DestinationNotEmpty(PathBuf),
    /// The restore destination is a mount point: the restored tree is renamed onto it, which
    /// the kernel refuses, so the restore is refused before anything is written.
    #[error(
        "{0:?}: destination is a mount point, which a finished restore cannot be renamed onto; restore into a new directory inside it instead"
    )]
    DestinationIsMountPoint(PathBuf),
    /// The directory to archive is not a directory (symlinks are not followed).
    #[error("{0:?}: not a directory")]
    NotADirectory(PathBuf),
    /// A path in the tree to archive cannot be stored (too long).
    #[error("{0:?}: path too long to archive")]
    PathTooLong(PathBuf),
    /// A file shrank while it was being archived.
    #[error("{0:?}: file changed while being archived")]
    FileChanged(PathBuf),
    /// A partial restore asked for a path the archive does not hold.
    #[error("the snapshot holds no {0}")]
    NotInArchive(String),
    /// The chunk store behind a tree failed ([`crate::ChunkSink`], [`crate::ChunkSource`]); the
    /// original error is kept for the caller to downcast.
    #[error("{0}")]
    Chunks(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// [`crate::WriteOptions`] are out of range.
    #[error("invalid archive options: {0}")]
    InvalidOptions(&'static str),
}

impl ArchiveError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }

    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        ArchiveError::Malformed(msg.into())
    }
}

/// An archive path (raw bytes) as messages show it: quoted, non-UTF-8 bytes escaped (`\xFF`).
pub(crate) fn show_path(path: &[u8]) -> String {
    format!("{:?}", OsStr::from_bytes(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_in_messages_keep_non_utf8_bytes() {
        let path = PathBuf::from(OsStr::from_bytes(b"/tmp/\xff\nx"));
        let err = ArchiveError::FileChanged(path.clone());
        assert_eq!(
            err.to_string(),
            r#""/tmp/\xFF\nx": file changed while being archived"#
        );
        let err = ArchiveError::io(path)(io::Error::other("boom"));
        assert_eq!(err.to_string(), r#""/tmp/\xFF\nx": boom"#);
    }
}
