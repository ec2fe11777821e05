//! Wire format constants, entry header encoding and path rules (see `docs/archive.md`).

use std::cmp::Ordering;

use crate::ArchiveError;
use crate::error::show_path;

/// First bytes of every archive.
pub const MAGIC: [u8; 8] = *b"LBXARCH\0";
/// Format version written by this crate, the only one it reads.
pub const VERSION: u8 = 1;
/// Largest uncompressed block a reader accepts; bounds the reader's memory.
pub const MAX_BLOCK_SIZE: usize = 1 << 20;
/// Largest entry path or symlink target, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// First bytes of every tree: an archive whose file data are references to chunks stored
/// elsewhere (the incremental repository's snapshots).
pub const TREE_MAGIC: [u8; 8] = *b"LBXTREE\0";
/// Tree format version written by this crate, the only one it reads.
pub const TREE_VERSION: u8 = 1;
/// Largest chunk a tree may reference.
pub const MAX_CHUNK_SIZE: usize = 8 << 20;

pub(crate) const TAG_DIR: u8 = 1;
pub(crate) const TAG_FILE: u8 = 2;
pub(crate) const TAG_SYMLINK: u8 = 3;
/// Trees only: another name of a regular file entry earlier in the same tree.
pub(crate) const TAG_HARDLINK: u8 = 4;
pub(crate) const TAG_END: u8 = 0xFF;

pub(crate) const BLOCK_END: u8 = 0;
pub(crate) const BLOCK_RAW: u8 = 1;
pub(crate) const BLOCK_ZSTD: u8 = 2;
pub(crate) const BLOCK_REF: u8 = 3;

/// Permission bits kept in the archive (rwx for all, setuid, setgid, sticky).
pub(crate) const MODE_MASK: u32 = 0o7777;
const NANOS_PER_SEC: u32 = 1_000_000_000;

/// A modification time: seconds since the Unix epoch (may be negative) plus nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

impl Mtime {
    pub(crate) fn check(self) -> Result<Self, ArchiveError> {
        if self.nanos >= NANOS_PER_SEC {
            return Err(ArchiveError::malformed("mtime nanoseconds out of range"));
        }
        Ok(self)
    }

    /// The time as a `SystemTime`, or `None` if the platform cannot represent it.
    pub fn to_system_time(self) -> Option<std::time::SystemTime> {
        use std::time::{Duration, UNIX_EPOCH};
        let base = if self.secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(self.secs.unsigned_abs()))
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(self.secs.unsigned_abs()))
        }?;
        base.checked_add(Duration::from_nanos(u64::from(self.nanos)))
    }
}

/// Check that `path` is a safe relative archive path: non-empty, at most [`MAX_PATH_LEN`] bytes,
/// not absolute, no NUL, no empty, `.` or `..` components.
pub fn validate_path(path: &[u8]) -> Result<(), ArchiveError> {
    let unsafe_path = || ArchiveError::UnsafePath(show_path(path));
    if path.is_empty() || path.len() > MAX_PATH_LEN || path.contains(&0) {
        return Err(unsafe_path());
    }
    let bad = |c: &[u8]| c.is_empty() || c == b"." || c == b"..";
    if path.split(|&b| b == b'/').any(bad) {
        return Err(unsafe_path());
    }
    Ok(())
}

/// The parent of a validated path; empty for a top-level entry.
pub(crate) fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => &[],
    }
}

/// Is `ancestor` equal to `path` or one of its ancestors (empty = the root)?
pub(crate) fn is_ancestor_or_self(ancestor: &[u8], path: &[u8]) -> bool {
    ancestor.is_empty()
        || path == ancestor
        || (path.starts_with(ancestor) && path.get(ancestor.len()) == Some(&b'/'))
}

/// Component-wise order: the order of a depth-first walk visiting siblings sorted by name.
pub(crate) fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&x| x == b'/').cmp(b.split(|&x| x == b'/'))
}

/// Serialize the fields shared by every entry header.
pub(crate) fn encode_common(buf: &mut Vec<u8>, tag: u8, path: &[u8], mode: u32, mtime: Mtime) {
    buf.push(tag);
    encode_bytes(buf, path);
    buf.extend_from_slice(&mode.to_be_bytes());
    buf.extend_from_slice(&mtime.secs.to_be_bytes());
    buf.extend_from_slice(&mtime.nanos.to_be_bytes());
}

/// A length-prefixed (u16 big-endian) byte string; callers keep `bytes` under [`MAX_PATH_LEN`].
pub(crate) fn encode_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&bytes[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_componentwise() {
        assert_eq!(path_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(path_order(b"a/b", b"a-b"), Ordering::Less);
        assert_eq!(path_order(b"a/z", b"b"), Ordering::Less);
        assert_eq!(path_order(b"a/b", b"a/b"), Ordering::Equal);
    }

    #[test]
    fn ancestry() {
        assert!(is_ancestor_or_self(b"", b"a"));
        assert!(is_ancestor_or_self(b"a", b"a/b"));
        assert!(is_ancestor_or_self(b"a/b", b"a/b"));
        assert!(!is_ancestor_or_self(b"a", b"ab/c"));
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"a"), b"");
    }

    #[test]
    fn mtime_conversion() {
        let t = Mtime {
            secs: -1,
            nanos: 500,
        }
        .to_system_time()
        .unwrap();
        let d = std::time::UNIX_EPOCH.duration_since(t).unwrap();
        assert_eq!(d.as_nanos(), 1_000_000_000 - 500);
        assert!(
            Mtime {
                secs: 0,
                nanos: NANOS_PER_SEC
            }
            .check()
            .is_err()
        );
    }
}
