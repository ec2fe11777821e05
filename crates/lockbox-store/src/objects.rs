//! Named objects under the store's prefix, for callers that keep their own layout (the
//! incremental repository: `config`, `packs/…`, `index/…`, `snapshots/…`, `catalog/…`).
//!
//! Names are checked ([`ObjectName`]): `/`-separated components of ASCII letters, digits, `-`,
//! `_` and `.`, none empty, `.` or `..`, so a name can never reach outside the prefix. Every put
//! is atomic: a reader sees the whole object or none of it.

use std::ops::Range;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, GetResultPayload, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use crate::backend::local_error;
use crate::{Store, StoreError};

/// Longest object name accepted, in bytes.
pub const MAX_OBJECT_NAME_LEN: usize = 512;

/// An answer's body, read up to a limit.
enum Body {
    Whole(Bytes),
    /// More than the limit arrived; this many bytes had been seen when reading stopped.
    Over(u64),
}

/// The body of `found`, read until more than `limit` bytes arrive. A local file is read as
/// the range the answer states (no more can come); a remote body is taken piece by piece, so
/// one that runs past the limit is dropped there, not held.
async fn body_capped(found: GetResult, limit: u64) -> object_store::Result<Body> {
    let stated = found.range.end.saturating_sub(found.range.start);
    if matches!(found.payload, GetResultPayload::File(..)) {
        // Never streamed: a local file's stream yields empty pieces forever past its end.
        if stated > limit {
            return Ok(Body::Over(stated));
        }
        return found.bytes().await.map(Body::Whole);
    }
    let mut body = found.into_stream();
    // What the answer states, up to the limit; no more than a pack's worth on its word alone.
    let expected = stated.min(limit).min(16 << 20);
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    while let Some(piece) = body.try_next().await? {
        let seen = (out.len() + piece.len()) as u64;
        if seen > limit {
            return Ok(Body::Over(seen));
        }
        out.extend_from_slice(&piece);
    }
    Ok(Body::Whole(Bytes::from(out)))
}

/// A checked object name relative to the store's prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        let invalid = |reason: &str| StoreError::InvalidName {
            reason: format!("object name `{}`: {reason}", name.escape_default()),
        };
        if name.is_empty() || name.len() > MAX_OBJECT_NAME_LEN {
            return Err(invalid("must be 1 to 512 bytes"));
        }
        for part in name.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(invalid("has an empty, `.` or `..` component"));
            }
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if !part.chars().all(allowed) {
                return Err(invalid(
                    "may hold only ASCII letters, digits, `-`, `_`, `.`",
                ));
            }
        }
        Ok(ObjectName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One object found by [`Store::list_objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: ObjectName,
    pub size: u64,
}

/// Whether a put may replace an object already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutIf {
    /// Replace whatever is there.
    Always,
    /// Only if no object has the name; otherwise [`StoreError::AlreadyExists`].
    Absent,
}

impl Store {
    /// Stores `bytes` as `name`, atomically.
    pub async fn put_object(
        &self,
        name: &ObjectName,
        bytes: Bytes,
        when: PutIf,
    ) -> Result<(), StoreError> {
        let store = self.backend().for_write(self.url())?;
        self.put_into(store, name, bytes, when).await
    }

    /// Stores `bytes` as `name` like [`Store::put_object`], except that in a local folder it
    /// returns once the bytes are written and their writeback has started, before they are on
    /// the disk: [`Store::make_durable`] must cover `name` before anything that names the
    /// object is stored. Other providers store it durably before they answer, as always. For
    /// many objects in a row (a backup's packs) the disk stays busy without waiting for a flush
    /// of each.
    pub async fn put_object_lazily(
        &self,
        name: &ObjectName,
        bytes: Bytes,
        when: PutIf,
    ) -> Result<(), StoreError> {
        let Some(root) = self.backend().local_root() else {
            return self.put_object(name, bytes, when).await;
        };
        let store = self.backend().for_lazy_write(self.url())?;
        self.put_into(store, name, bytes, when).await?;
        let path = root.join(name.as_str());
        // Only a hint, and a failed one changes nothing: durability is `make_durable`'s.
        let _ = tokio::task::spawn_blocking(move || start_writeback(&path)).await;
        Ok(())
    }

    /// Flushes the objects `names`, stored by [`Store::put_object_lazily`], to the disk, with
    /// the folder entries that name them. A name that is not there is an error: what was
    /// written has been lost or removed since. Nothing to do outside a local folder.
    pub async fn make_durable(&self, names: Vec<ObjectName>) -> Result<(), StoreError> {
        let Some(root) = self.backend().local_root() else {
            return Ok(());
        };
        let (root, url) = (root.to_path_buf(), self.url().to_owned());
        tokio::task::spawn_blocking(move || flush_local(&url, &root, &names))
            .await
            .map_err(|e| StoreError::TaskFailed {
                url: self.url().to_owned(),
                object: "objects to flush".into(),
                reason: e.to_string(),
            })?
    }

    async fn put_into(
        &self,
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        name: &ObjectName,
        bytes: Bytes,
        when: PutIf,
    ) -> Result<(), StoreError> {
        let mode = match when {
            PutIf::Always => PutMode::Overwrite,
            PutIf::Absent => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let payload = match self.backend().local_root() {
            Some(_) => in_pieces(bytes),
            None => PutPayload::from(bytes),
        };
        match store.put_opts(&self.path_of(name), payload, opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StoreError::AlreadyExists {
                url: self.url().to_owned(),
                object: name.to_string(),
            }),
            Err(e) => Err(self.error(format!("writing {name}"), e)),
        }
    }

    /// The whole object `name`.
    pub async fn get_object(&self, name: &ObjectName) -> Result<Bytes, StoreError> {
        let store = self.backend().existing(self.url())?;
        let read = async { store.get(&self.path_of(name)).await?.bytes().await };
        read.await
            .map_err(|e| self.error(format!("reading {name}"), e))
    }

    /// The whole object `name` if it is at most `limit` bytes, else [`StoreError::TooLarge`]
    /// without reading its body: junk planted under a name cannot exhaust memory.
    pub async fn get_object_bounded(
        &self,
        name: &ObjectName,
        limit: u64,
    ) -> Result<Bytes, StoreError> {
        let store = self.backend().existing(self.url())?;
        let fail = |e| self.error(format!("reading {name}"), e);
        let too_large = |size| StoreError::TooLarge {
            url: self.url().to_owned(),
            object: name.to_string(),
            size,
            limit,
        };
        let found = store.get(&self.path_of(name)).await.map_err(fail)?;
        if found.meta.size > limit {
            return Err(too_large(found.meta.size));
        }
        // The body is capped too: a provider may send more than the size it stated.
        match body_capped(found, limit).await.map_err(fail)? {
            Body::Whole(bytes) => Ok(bytes),
            Body::Over(seen) => Err(too_large(seen)),
        }
    }

    /// Bytes `range` of the object `name`; fewer than asked is an error.
    pub async fn get_object_range(
        &self,
        name: &ObjectName,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let store = self.backend().existing(self.url())?;
        let want = range.end.saturating_sub(range.start);
        let short = |got: u64| StoreError::ShortRead {
            url: self.url().to_owned(),
            object: name.to_string(),
            wanted: want,
            got,
        };
        let path = self.path_of(name);
        let asked = GetOptions::default().with_range(Some(range.clone()));
        let found = match store.get_opts(&path, asked).await {
            Ok(found) => found,
            Err(e) => {
                let e = self.error(format!("reading {name} bytes {range:?}"), e);
                if e.is_not_found() || e.is_transient() {
                    return Err(e);
                }
                // Providers word a range past the end differently (416, an invalid-range
                // error): the object's size says whether it was cut short.
                return match store.head(&path).await {
                    Ok(meta) if meta.size < range.end => {
                        Err(short(meta.size.saturating_sub(range.start)))
                    }
                    _ => Err(e),
                };
            }
        };
        // Capped at what was asked: a provider may answer a range with an endless body.
        let body = body_capped(found, want)
            .await
            .map_err(|e| self.error(format!("reading {name} bytes {range:?}"), e))?;
        match body {
            Body::Whole(bytes) if bytes.len() as u64 == want => Ok(bytes),
            Body::Whole(bytes) => Err(short(bytes.len() as u64)),
            Body::Over(_) => Err(StoreError::LongRead {
                url: self.url().to_owned(),
                object: name.to_string(),
                wanted: want,
            }),
        }
    }

    /// The size of the object `name`.
    pub async fn object_size(&self, name: &ObjectName) -> Result<u64, StoreError> {
        let store = self.backend().existing(self.url())?;
        let meta = store
            .head(&self.path_of(name))
            .await
            .map_err(|e| self.error(format!("reading the size of {name}"), e))?;
        Ok(meta.size)
    }

    /// Every object whose name starts with `dir/`, sorted by name. Objects whose names are
    /// not valid [`ObjectName`]s (staging files, foreign objects) are skipped. A folder or
    /// bucket that does not exist lists as empty.
    pub async fn list_objects(&self, dir: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let dir_name = ObjectName::new(dir)?;
        let store = match self.backend().existing(self.url()) {
            Err(StoreError::NotFound { .. }) => return Ok(Vec::new()),
            other => other?,
        };
        let root = self.backend().prefix();
        let listed: Vec<_> = store
            .list(Some(&self.path_of(&dir_name)))
            .try_collect()
            .await
            .map_err(|e| self.error(format!("listing {dir}/"), e))?;
        let mut found: Vec<ObjectInfo> = listed
            .into_iter()
            .filter_map(|meta| {
                let rel = meta.location.prefix_match(&root)?;
                let rel: Vec<_> = rel.map(|p| p.as_ref().to_owned()).collect();
                let name = ObjectName::new(rel.join("/")).ok()?;
                Some(ObjectInfo {
                    name,
                    size: meta.size,
                })
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Deletes `name`; an object already gone is not an error.
    pub async fn delete_object(&self, name: &ObjectName) -> Result<(), StoreError> {
        let store = self.backend().existing(self.url())?;
        match store.delete(&self.path_of(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("deleting {name}"), e)),
        }
    }

    fn path_of(&self, name: &ObjectName) -> Path {
        let mut path = self.backend().prefix();
        for part in name.0.split('/') {
            path = path.join(part);
        }
        path
    }
}

/// Bytes a local folder's file gets per `write` (object_store writes each piece of a payload
/// with one): a multi-MiB write is cached by Linux in large folios, which in a VM whose balloon
/// returns free memory to the host are memory the host faults in page by page; 128 KiB pieces
/// go to small folios the kernel reuses (docs/benchmarks.md). The pieces share `bytes`.
const LOCAL_WRITE_PIECE: usize = 128 << 10;

fn in_pieces(bytes: Bytes) -> PutPayload {
    (0..bytes.len())
        .step_by(LOCAL_WRITE_PIECE)
        .map(|at| bytes.slice(at..bytes.len().min(at + LOCAL_WRITE_PIECE)))
        .collect()
}

/// Starts writing `path`'s dirty pages to the disk without waiting: on Linux,
/// `POSIX_FADV_DONTNEED` does (and drops its clean pages, which a backup has no more use for).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn start_writeback(path: &std::path::Path) {
    if let Ok(file) = std::fs::File::open(path) {
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
    }
}

/// Elsewhere the final flush does all the work.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn start_writeback(_path: &std::path::Path) {}

/// `fsync` of each object below `root`, then of each folder from its own up to `root`: a
/// folder the lazy write created (`packs/ab/`) is named by its parent, whose entry is as new.
fn flush_local(url: &str, root: &std::path::Path, names: &[ObjectName]) -> Result<(), StoreError> {
    let sync = |path: &std::path::Path, what: &str| {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| local_error(url, format!("flushing {what} to the disk"), e))
    };
    for name in names {
        sync(&root.join(name.as_str()), name.as_str())?;
    }
    for folder in folders_naming(root, names) {
        sync(&folder, &folder.display().to_string())?;
    }
    Ok(())
}

/// Every folder between `root` (included) and each of `names`.
fn folders_naming(
    root: &std::path::Path,
    names: &[ObjectName],
) -> std::collections::BTreeSet<std::path::PathBuf> {
    let mut folders = std::collections::BTreeSet::new();
    for name in names {
        let path = root.join(name.as_str());
        let up = path.ancestors().skip(1).take_while(|a| a.starts_with(root));
        folders.extend(up.map(std::path::Path::to_path_buf));
    }
    folders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_covers_every_folder_up_to_the_root() {
        let root = std::path::Path::new("/backups");
        let names = ["packs/ab/ab12", "packs/ab/ab34", "packs/cd/cd56"]
            .map(|n| ObjectName::new(n).unwrap());
        let folders: Vec<_> = folders_naming(root, &names).into_iter().collect();
        let want = [
            "/backups",
            "/backups/packs",
            "/backups/packs/ab",
            "/backups/packs/cd",
        ];
        assert_eq!(folders, want.map(std::path::PathBuf::from));
    }

    #[test]
    fn a_lazy_put_reads_back_and_flushing_a_lost_object_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().display())).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let name = ObjectName::new("packs/ab/abcdef").unwrap();
        rt.block_on(store.put_object_lazily(&name, Bytes::from_static(b"pack"), PutIf::Absent))
            .unwrap();
        assert_eq!(&rt.block_on(store.get_object(&name)).unwrap()[..], b"pack");
        let again =
            rt.block_on(store.put_object_lazily(&name, Bytes::from_static(b"x"), PutIf::Absent));
        assert!(
            matches!(again, Err(StoreError::AlreadyExists { .. })),
            "{again:?}"
        );
        rt.block_on(store.make_durable(vec![name.clone()])).unwrap();

        std::fs::remove_file(dir.path().join("packs/ab/abcdef")).unwrap();
        let err = rt.block_on(store.make_durable(vec![name])).unwrap_err();
        assert!(err.to_string().contains("packs/ab/abcdef"), "{err}");
    }

    /// A local write goes to the file in small pieces of the same bytes, none copied, and an
    /// object written so reads back whole.
    #[test]
    fn a_local_object_is_written_in_small_pieces_that_share_its_bytes() {
        let bytes = Bytes::from(
            (0..3 * LOCAL_WRITE_PIECE + 5)
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let pieces: Vec<Bytes> = in_pieces(bytes.clone()).into_iter().collect();
        let lens: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(
            lens,
            [LOCAL_WRITE_PIECE, LOCAL_WRITE_PIECE, LOCAL_WRITE_PIECE, 5]
        );
        assert_eq!(pieces.concat(), bytes.to_vec());
        assert_eq!(pieces[1].as_ptr(), bytes[LOCAL_WRITE_PIECE..].as_ptr());
        assert_eq!(in_pieces(Bytes::new()).content_length(), 0);

        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().display())).unwrap();
        let name = ObjectName::new("packs/ab/big").unwrap();
        rt.block_on(store.put_object(&name, bytes.clone(), PutIf::Absent))
            .unwrap();
        assert_eq!(rt.block_on(store.get_object(&name)).unwrap(), bytes);
    }

    #[test]
    fn names_cannot_leave_the_prefix() {
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b", "a b", "a\\b", "ä"] {
            assert!(ObjectName::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "config",
            "packs/ab/abcdef",
            "catalog/00000000000000000001.v1",
        ] {
            assert_eq!(ObjectName::new(good).unwrap().as_str(), good);
        }
        assert!(ObjectName::new("a".repeat(MAX_OBJECT_NAME_LEN + 1)).is_err());
    }
}
