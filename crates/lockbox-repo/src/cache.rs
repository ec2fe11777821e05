//! [`FileCache`]: what the device remembers of the files its last backup read, so the next one
//! skips every file whose size, mtime, ctime and inode are unchanged, without reading it.
//!
//! ```text
//! cache = "LBXFCACH" | version 1 | repo_id[32] | count u32 | entry*
//! entry = path_len u32 | path | size u64 | mtime_ns i64 | ctime_ns i64 | inode u64 | dev u64
//!         | refs u32 | (len u32 | chunk_id[32])*
//! ```
//! Kept on the device (beside K, as private), never in the storage. A file changed within the
//! same timestamp tick as the backup that cached it could keep its size and times; entries whose
//! mtime or ctime is not well before that backup began are therefore not kept (git's "racy
//! clean"). Cached chunks are reused only while the index still holds every one of them.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use lockbox_archive::ChunkRef;

use crate::ids::RepoId;
use crate::wire::Cursor;

const CACHE_MAGIC: [u8; 8] = *b"LBXFCACH";
const CACHE_VERSION: u8 = 1;
/// Entries whose mtime or ctime is this close to (or after) the backup's start are not cached.
const RACY_NS: i64 = 2_000_000_000;

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
    dev: u64,
}

impl Stamp {
    /// `None` for times that do not fit in i64 nanoseconds (before 1678, after 2262): such a
    /// file is never cached.
    fn of(meta: &Metadata) -> Option<Self> {
        let ns = |secs: i64, nanos: i64| secs.checked_mul(1_000_000_000)?.checked_add(nanos);
        Some(Stamp {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec())?,
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec())?,
            inode: meta.ino(),
            dev: meta.dev(),
        })
    }
}

/// Paths (as in the tree) to the stamp and chunks they had, for one repository.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileCache {
    repo: Option<RepoId>,
    files: HashMap<Vec<u8>, (Stamp, Vec<ChunkRef>)>,
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("repo", &self.repo)
            .field("files", &self.files.len())
            .finish()
    }
}

impl FileCache {
    /// An empty cache for `repo`.
    pub fn new(repo: RepoId) -> Self {
        FileCache {
            repo: Some(repo),
            files: HashMap::new(),
        }
    }

    /// Files it holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether it was made for `repo`.
    pub fn is_for(&self, repo: RepoId) -> bool {
        self.repo == Some(repo)
    }

    /// The chunks `rel` had, if its metadata is what it was.
    pub(crate) fn get(&self, rel: &[u8], meta: &Metadata) -> Option<&[ChunkRef]> {
        let (stamp, refs) = self.files.get(rel)?;
        (Some(*stamp) == Stamp::of(meta)).then_some(refs.as_slice())
    }

    /// Remembers `rel`'s chunks, unless its times are too close to `started_unix_ms` to
    /// vouch for its content.
    pub(crate) fn put(
        &mut self,
        rel: &[u8],
        meta: &Metadata,
        refs: &[ChunkRef],
        started_unix_ms: u64,
    ) {
        let Some(stamp) = Stamp::of(meta) else {
            return;
        };
        let started_ns = (started_unix_ms as i64).saturating_mul(1_000_000);
        if stamp.mtime_ns.max(stamp.ctime_ns) > started_ns - RACY_NS {
            return;
        }
        self.files.insert(rel.to_vec(), (stamp, refs.to_vec()));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&CACHE_MAGIC);
        out.push(CACHE_VERSION);
        out.extend_from_slice(&self.repo.map_or([0; 32], |r| r.0));
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (path, (s, refs)) in &self.files {
            out.extend_from_slice(&(path.len() as u32).to_be_bytes());
            out.extend_from_slice(path);
            out.extend_from_slice(&s.size.to_be_bytes());
            out.extend_from_slice(&s.mtime_ns.to_be_bytes());
            out.extend_from_slice(&s.ctime_ns.to_be_bytes());
            out.extend_from_slice(&s.inode.to_be_bytes());
            out.extend_from_slice(&s.dev.to_be_bytes());
            out.extend_from_slice(&(refs.len() as u32).to_be_bytes());
            for r in refs {
                out.extend_from_slice(&r.len.to_be_bytes());
                out.extend_from_slice(&r.id);
            }
        }
        out
    }

    /// A cache read back, or `None` for anything that is not one (a cache is only ever a
    /// shortcut: a bad one is dropped and every file read).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 9 || bytes[..8] != CACHE_MAGIC || bytes[8] != CACHE_VERSION {
            return None;
        }
        let mut c = Cursor::new(&bytes[9..]);
        let repo = RepoId(c.array().ok()?);
        let count = c.u32().ok()? as usize;
        let mut files = HashMap::with_capacity(count.min(bytes.len() / 48));
        for _ in 0..count {
            let len = c.u32().ok()? as usize;
            let path = c.take(len).ok()?.to_vec();
            let stamp = Stamp {
                size: c.u64().ok()?,
                mtime_ns: c.u64().ok()? as i64,
                ctime_ns: c.u64().ok()? as i64,
                inode: c.u64().ok()?,
                dev: c.u64().ok()?,
            };
            let n = c.u32().ok()? as usize;
            let mut refs = Vec::with_capacity(n.min(bytes.len() / 36));
            for _ in 0..n {
                let len = c.u32().ok()?;
                refs.push(ChunkRef {
                    len,
                    id: c.array().ok()?,
                });
            }
            files.insert(path, (stamp, refs));
        }
        c.is_empty().then_some(FileCache {
            repo: Some(repo),
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_round_trips_and_refuses_junk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let refs = vec![ChunkRef {
            id: [7; 32],
            len: 5,
        }];
        let mut cache = FileCache::new(RepoId([1; 32]));
        // Written just now: too fresh to vouch for.
        cache.put(b"f", &meta, &refs, crate::lock::now_ms());
        assert!(cache.is_empty());
        cache.put(b"f", &meta, &refs, crate::lock::now_ms() + 10_000);
        assert_eq!(cache.get(b"f", &meta), Some(&refs[..]));

        let back = FileCache::decode(&cache.encode()).unwrap();
        assert_eq!(back, cache);
        assert!(back.is_for(RepoId([1; 32])));
        let bytes = cache.encode();
        for cut in 0..bytes.len() {
            assert!(FileCache::decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }

        std::fs::write(&path, b"hellO").unwrap();
        let changed = std::fs::metadata(&path).unwrap();
        assert_eq!(cache.get(b"f", &changed), None);
    }
}
