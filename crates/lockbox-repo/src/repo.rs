//! [`Repository`]: the blocking shell over the formats: open or create, back up, list, restore.
//! Storage calls run on the tokio runtime whose handle it is given (call it from outside that
//! runtime, as the device library does).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lockbox_archive::{
    ArchiveError, ArchiveStats, ChunkRef, check_destination, in_part, restore_tree_part, write_tree,
};
use lockbox_crypto::{BackupKey, OsRng, RepoKeys};
use lockbox_format::{
    DEFAULT_CHUNK_SIZE, DecryptReader, EncoderParams, EncryptWriter, FormatError,
};
use lockbox_store::{ObjectName, PutIf, Store, StoreError};
use tokio::runtime::Handle;

use crate::RepoError;
use crate::cache::FileCache;
use crate::catalog::{self, Catalog, CatalogMark, Head, Op, SnapshotEntry};
use crate::config::{CONFIG_OBJECT, Config, Layout, MAX_CONFIG_LEN, Sizes};
use crate::fetch::{Source, open_chunk};
use crate::ids::{ChunkId, ChunkNamer, IndexId, PackId, RepoId, SnapshotId};
use crate::index::{self, Index, IndexedPack};
use crate::lock::RepoLock;
use crate::pack::{self, BlobEntry};
use crate::snapshot::{SNAP_HEADER_LEN, SnapshotHeader, snapshot_object};
use crate::wire::MAC_LEN;

/// Objects fetched at once when loading the catalog or the index.
const READS_IN_FLIGHT: usize = 8;
/// How often a backup retries its catalog entry when another writer took the place first.
const CATALOG_ATTEMPTS: usize = 5;
/// A snapshot is read whole with no cap: neither the catalog nor the index records its
/// length, and a tree has no size limit a backup enforces (docs/decisions.md).
const SNAPSHOT_UNBOUNDED: u64 = u64::MAX;

/// An open repository.
pub struct Repository {
    store: Store,
    rt: Handle,
    /// Snapshot streams are sealed under this key, derived from K and the repository id.
    snapshot_key: BackupKey,
    pub(crate) keys: RepoKeys,
    /// Names and checks chunks, as the config's version says.
    pub(crate) namer: ChunkNamer,
    config: Config,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("url", &self.store.url())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one backup stored and reused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file data in the snapshot.
    pub bytes: u64,
    /// Chunks (and their bytes) stored by this backup.
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Chunks (and their bytes) already in the repository, or repeated within this backup.
    pub reused_chunks: u64,
    pub reused_bytes: u64,
    pub packs: u64,
    /// Packs an interrupted backup had uploaded without indexing them, taken in by this one.
    pub adopted_packs: u64,
    /// Bytes this backup uploaded: packs, index, snapshot and catalog entry.
    pub uploaded_bytes: u64,
    /// Files whose chunks came from the device's file cache, unread.
    pub cached_files: u64,
    /// Files left out because they vanished, or kept changing while read: the snapshot is
    /// incomplete by these.
    pub vanished: u64,
    pub changing: u64,
}

/// What [`Repository::check`] went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub snapshots: u64,
    /// Distinct chunks the snapshots reference, all found in the index.
    pub chunks: u64,
    /// Packs the index names, all present in the storage at their full length.
    pub packs: u64,
    /// With `read_data`: packs downloaded and chunks opened and verified against their ids.
    pub packs_read: u64,
    pub chunks_read: u64,
}

/// What [`Repository::walk_refs`] hands each chunk reference to, with its file's tree path.
type OnRef<'a> = dyn FnMut(&[u8], ChunkRef) -> Result<(), RepoError> + 'a;

/// An entry [`Repository::append`] wrote: its number, the catalog with it, its length.
pub(crate) struct Appended {
    pub seq: u64,
    pub catalog: Catalog,
    pub len: u64,
}

/// A finished backup: the snapshot, the catalog's new end (for the caller to keep), counters.
#[derive(Debug, Clone)]
pub struct Backup {
    pub snapshot: SnapshotEntry,
    pub mark: CatalogMark,
    pub stats: BackupStats,
    /// The files of this snapshot, for the next backup to skip.
    pub cache: FileCache,
}

impl Repository {
    /// Opens the repository at `store`: reads and authenticates its config.
    pub fn open(store: Store, rt: Handle, key: &BackupKey) -> Result<Self, RepoError> {
        Self::open_config(store, rt, key, None)
    }

    /// Opens the repository `repo` at `store`, which the caller backed up to before: a missing
    /// config or one naming another repository is an integrity failure (the storage deleted or
    /// replaced it), never a fresh start.
    pub fn open_known(
        store: Store,
        rt: Handle,
        key: &BackupKey,
        repo: RepoId,
    ) -> Result<Self, RepoError> {
        match Self::open_config(store, rt, key, Some(repo)) {
            Err(RepoError::NoRepository { url }) => Err(RepoError::Vanished { url, repo }),
            other => other,
        }
    }

    /// Whether `store` holds a repository (of any key): its config object exists.
    pub fn exists(store: &Store, rt: &Handle) -> Result<bool, RepoError> {
        match rt.block_on(store.object_size(&object(CONFIG_OBJECT)?)) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn open_config(
        store: Store,
        rt: Handle,
        key: &BackupKey,
        expected: Option<RepoId>,
    ) -> Result<Self, RepoError> {
        let name = object(CONFIG_OBJECT)?;
        let too_long = || RepoError::corrupt(format!("{}: config", store.url()), "too long");
        let bytes = match rt.block_on(store.get_object_bounded(&name, MAX_CONFIG_LEN)) {
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NoRepository {
                    url: store.url().to_owned(),
                });
            }
            Err(StoreError::TooLarge { .. }) => return Err(too_long()),
            other => other?,
        };
        let (config, keys) = Config::decode(key, store.url(), &bytes, expected)?;
        Ok(Self::with_keys(store, rt, keys, config))
    }

    fn with_keys(store: Store, rt: Handle, keys: RepoKeys, config: Config) -> Self {
        Repository {
            store,
            rt,
            snapshot_key: keys.snapshot_key(),
            namer: ChunkNamer::new(&keys, config.layout.chunk_ids()),
            keys,
            config,
        }
    }

    /// Creates a repository at `store` (or opens the one another run created first).
    pub fn init(
        store: Store,
        rt: Handle,
        key: &BackupKey,
        sizes: Sizes,
    ) -> Result<Self, RepoError> {
        Self::init_with(store, rt, key, sizes, Layout::NEW)
    }

    /// [`init`](Self::init) with `layout` (an older one only to test that repositories made by
    /// an earlier lockbox keep working).
    pub(crate) fn init_with(
        store: Store,
        rt: Handle,
        key: &BackupKey,
        sizes: Sizes,
        layout: Layout,
    ) -> Result<Self, RepoError> {
        if !sizes.is_valid() {
            return Err(RepoError::InvalidSizes(sizes));
        }
        let repo_id = RepoId::generate(&mut OsRng);
        let keys = key.repo_keys(&repo_id.0);
        let config = Config {
            repo_id,
            sizes,
            layout,
        };
        let bytes = Bytes::from(config.encode(&keys));
        match rt.block_on(store.put_object(&object(CONFIG_OBJECT)?, bytes, PutIf::Absent)) {
            Err(StoreError::AlreadyExists { .. }) => Self::open(store, rt, key),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(Self::with_keys(store, rt, keys, config)),
        }
    }

    /// [`open`](Self::open), or [`init`](Self::init) with default sizes where there is none.
    pub fn open_or_init(store: Store, rt: Handle, key: &BackupKey) -> Result<Self, RepoError> {
        match Self::open(store.clone(), rt.clone(), key) {
            Err(RepoError::NoRepository { .. }) => Self::init(store, rt, key, Sizes::default()),
            other => other,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn id(&self) -> RepoId {
        self.config.repo_id
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    pub(crate) fn store(&self) -> Store {
        self.store.clone()
    }

    pub(crate) fn rt(&self) -> &Handle {
        &self.rt
    }

    /// Reads and verifies the whole catalog. Objects under `catalog/` whose names are not
    /// entry names are ignored; an entry that does not verify fails the whole catalog.
    pub fn catalog(&self) -> Result<Catalog, RepoError> {
        let listed = self
            .rt
            .block_on(self.store.list_objects(catalog::CATALOG_DIR))?;
        let mut named = Vec::new();
        for o in listed {
            let Some(seq) = catalog::parse_entry_name(o.name.as_str()) else {
                continue;
            };
            if o.size > catalog::MAX_ENTRY_LEN {
                return Err(RepoError::CatalogBroken {
                    seq,
                    what: format!("its object is {} bytes, far more than an entry", o.size),
                });
            }
            named.push((seq, o.name, catalog::MAX_ENTRY_LEN));
        }
        let objects = self.fetch_all(named, |_, bytes| Ok(bytes.to_vec()))?;
        Catalog::verify(&self.keys, self.id(), objects)
    }

    /// Reads and opens every index object.
    pub fn load_index(&self) -> Result<Index, RepoError> {
        let mut index = Index::default();
        for (_, packs) in self.load_index_objects()? {
            index.merge(&packs);
        }
        Ok(index)
    }

    /// Every index object, opened, by id (sorted).
    pub(crate) fn load_index_objects(&self) -> Result<Vec<(IndexId, Vec<IndexedPack>)>, RepoError> {
        let listed = self.rt.block_on(self.store.list_objects("index"))?;
        let mut named = Vec::new();
        for o in listed {
            let Some(id) = o
                .name
                .as_str()
                .strip_prefix("index/")
                .and_then(IndexId::from_hex)
            else {
                continue;
            };
            if o.size > index::MAX_INDEX_LEN {
                return Err(RepoError::corrupt(
                    o.name.as_str(),
                    format!("{} bytes, more than any index object", o.size),
                ));
            }
            named.push((id, o.name, index::MAX_INDEX_LEN));
        }
        // Each is opened as it lands, so junk planted under index/ fails at the first piece of
        // it, with at most a few objects held, instead of after every one was read.
        self.fetch_all(named, |id, bytes| {
            index::decode_index(&self.keys, id, bytes)
        })
    }

    /// Reads every object `named`, each at most its limit long (an object that grew after it
    /// was listed is refused, not read whole), and passes each through `open` as it lands: the
    /// first that fails stops the reads, and only what `open` made of each is kept.
    fn fetch_all<T: Send, U: Send>(
        &self,
        named: Vec<(T, ObjectName, u64)>,
        open: impl Fn(&T, &[u8]) -> Result<U, RepoError> + Sync,
    ) -> Result<Vec<(T, U)>, RepoError> {
        let (store, open) = (&self.store, &open);
        let reads = named.into_iter().map(|(tag, name, limit)| async move {
            let bytes = match store.get_object_bounded(&name, limit).await {
                Err(StoreError::TooLarge { .. }) => {
                    return Err(RepoError::corrupt(name.as_str(), "too long"));
                }
                other => other?,
            };
            let opened = open(&tag, &bytes)?;
            Ok::<_, RepoError>((tag, opened))
        });
        let all = self.rt.block_on(
            futures::stream::iter(reads)
                .buffered(READS_IN_FLIGHT)
                .try_collect(),
        )?;
        Ok(all)
    }

    /// Backs up the tree below `root` as a new snapshot by `device`, made at `now_unix_ms`.
    /// `mark` is where this device last saw the catalog end: a catalog that ends before it is
    /// refused, never extended. Packs land first, then their index, then the snapshot, then
    /// its catalog entry, so a backup cut short at any point lists nothing it did not store.
    pub fn backup(
        &self,
        lock: &RepoLock<'_>,
        root: &Path,
        mark: Option<&CatalogMark>,
        now_unix_ms: u64,
        cache: Option<&FileCache>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Backup, RepoError> {
        debug_assert!(lock.guards(self), "the lock of another repository");
        let device = lock.device;
        let catalog = self.catalog()?;
        if let Some(mark) = mark {
            catalog.check_mark(mark)?;
        }
        // Only packs that are there count as stored: dedup against a replayed or dangling index
        // would make a snapshot that names lost chunks.
        let (index, adopted) = self.index_for_backup()?;
        let (sink, written) = self.with_sink(&index, |sink| {
            sink.cache_old = cache.filter(|c| c.is_for(self.id()));
            sink.cache_new = Some(FileCache::new(self.id()));
            sink.started_unix_ms = now_unix_ms;
            write_tree(root, Vec::new(), sink, progress)
        });
        let ((tree, tree_stats), packed) = written?;
        let new_cache = sink.cache_new.unwrap_or_default();
        let mut stats = sink.stats;
        let mut packs = packed.packs;
        stats.packs = packed.count;
        stats.uploaded_bytes = packed.bytes;
        // An interrupted run wrote them lazily and may have died before flushing them (after a
        // power cut, `index_for_backup` adopted only packs whose every blob checks out).
        self.make_durable(&adopted)?;
        stats.adopted_packs = adopted.len() as u64;
        packs.extend(adopted);
        stats.files = tree_stats.files;
        stats.dirs = tree_stats.dirs;
        stats.symlinks = tree_stats.symlinks;
        stats.bytes = tree_stats.bytes_in;
        stats.vanished = tree_stats.vanished;
        stats.changing = tree_stats.changing;
        // A writer whose lock was taken over meanwhile (a prune may have deleted the packs it
        // just uploaded) commits nothing, and takes back an index it already wrote.
        lock.verify()?;
        let mut own_index = None;
        if !packs.is_empty() {
            let (id, bytes) = index::encode_index(&self.keys, &packs, &mut OsRng);
            stats.uploaded_bytes += bytes.len() as u64;
            self.put(&index::index_object(&id), bytes, PutIf::Absent)?;
            own_index = Some(index::index_object(&id));
        }
        if let Err(lost) = lock.verify() {
            if let Some(name) = own_index {
                let _ = self.rt.block_on(self.store.delete_object(&object(&name)?));
            }
            return Err(lost);
        }
        let header = SnapshotHeader {
            repo: self.id(),
            device,
            created_unix_ms: now_unix_ms,
            files: stats.files,
            bytes: stats.bytes,
        };
        let (id, sealed) = self.seal_snapshot(&header, &tree, now_unix_ms)?;
        let sealed_len = sealed.len() as u64;
        stats.uploaded_bytes += sealed_len;
        self.put(&snapshot_object(&id), sealed, PutIf::Absent)?;
        let entry = SnapshotEntry {
            seq: 0,
            id,
            device,
            created_unix_ms: now_unix_ms,
            files: stats.files,
            bytes: stats.bytes,
            sealed_len: Some(sealed_len),
        };
        let head = Head {
            device,
            created_unix_ms: now_unix_ms,
        };
        let appended = self.append(catalog, head, Op::Snapshot(entry))?;
        stats.uploaded_bytes += appended.len;
        Ok(Backup {
            snapshot: SnapshotEntry {
                seq: appended.seq,
                ..entry
            },
            mark: appended.catalog.mark(),
            stats,
            cache: new_cache,
        })
    }

    /// Appends `op` as the catalog's next entry, written only if absent. Told the place is
    /// taken (another writer, or our own write whose reply was lost), it reads the catalog
    /// again, which must still hold everything seen so far: a storage that answers "taken" and
    /// then lists less is rolling it back, and nothing may be written into the gap it made.
    /// If the entry there is ours, it landed.
    pub(crate) fn append(
        &self,
        mut catalog: Catalog,
        head: Head,
        op: Op,
    ) -> Result<Appended, RepoError> {
        for _ in 0..CATALOG_ATTEMPTS {
            let seq = catalog.len() + 1;
            let bytes = catalog.next_entry(&self.keys, head, &op);
            let len = bytes.len() as u64;
            let ours: [u8; MAC_LEN] = bytes[bytes.len() - MAC_LEN..].try_into().expect("MAC");
            match self.put(&catalog::entry_object(seq), bytes.clone(), PutIf::Absent) {
                Ok(()) => {
                    let catalog = catalog.appended(op, &bytes);
                    return Ok(Appended { seq, catalog, len });
                }
                Err(RepoError::Store(StoreError::AlreadyExists { .. })) => {
                    let seen = catalog.mark();
                    catalog = self.catalog()?;
                    catalog.check_mark(&seen)?;
                    if catalog.mac_at(seq) == Some(ours) {
                        return Ok(Appended { seq, catalog, len });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(RepoError::Contended {
            url: self.url().to_owned(),
        })
    }

    fn seal_snapshot(
        &self,
        header: &SnapshotHeader,
        tree: &[u8],
        now_unix_ms: u64,
    ) -> Result<(SnapshotId, Vec<u8>), RepoError> {
        let params = EncoderParams {
            chunk_size: DEFAULT_CHUNK_SIZE,
            created_unix_ms: now_unix_ms,
        };
        let io = |e: std::io::Error| RepoError::Archive(ArchiveError::Output(e));
        let mut writer =
            EncryptWriter::new(Vec::new(), &self.snapshot_key, params, &mut OsRng).map_err(io)?;
        let id = SnapshotId(writer.header().backup_id.0);
        writer.write_all(&header.encode()).map_err(io)?;
        writer.write_all(tree).map_err(io)?;
        let (sealed, _) = writer.finish().map_err(io)?;
        Ok((id, sealed))
    }

    /// An object the catalog or an index names, read up to `limit` bytes (what the index says
    /// a pack holds): its absence is damage, not a usage error, and so is a longer object or
    /// answer, which is dropped once past the limit instead of held.
    pub(crate) fn get_listed(&self, name: &str, limit: u64) -> Result<Bytes, RepoError> {
        match self
            .rt
            .block_on(self.store.get_object_bounded(&object(name)?, limit))
        {
            Err(e) if e.is_not_found() => {
                Err(RepoError::corrupt(name, "is missing from the storage"))
            }
            Err(StoreError::TooLarge { size, .. }) => Err(RepoError::corrupt(
                name,
                format!("is longer than the {limit} bytes recorded for it (at least {size})"),
            )),
            other => Ok(other?),
        }
    }

    /// The sealed object of `snapshot`, read no further than the length its catalog entry
    /// records (entries written before lockbox recorded it are read whole).
    pub(crate) fn read_snapshot(&self, snapshot: &SnapshotEntry) -> Result<Bytes, RepoError> {
        let limit = snapshot.sealed_len.unwrap_or(SNAPSHOT_UNBOUNDED);
        self.get_listed(&snapshot_object(&snapshot.id), limit)
    }

    pub(crate) fn put(&self, name: &str, bytes: Vec<u8>, when: PutIf) -> Result<(), RepoError> {
        let name = object(name)?;
        Ok(self
            .rt
            .block_on(self.store.put_object(&name, Bytes::from(bytes), when))?)
    }

    /// Restores `snapshot` (an entry of a verified catalog) into `dest`, which must be absent or
    /// an empty directory: atomically, every chunk verified against its id.
    pub fn restore(
        &self,
        snapshot: &SnapshotEntry,
        dest: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ArchiveStats, RepoError> {
        self.restore_part(snapshot, dest, None, progress)
    }

    /// [`restore`](Self::restore) of only `part` of the snapshot (a path in its tree, with what
    /// is below it); the rest of the tree is checked, its chunks never fetched.
    pub fn restore_part(
        &self,
        snapshot: &SnapshotEntry,
        dest: &Path,
        part: Option<&[u8]>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ArchiveStats, RepoError> {
        check_destination(dest)?;
        let index = self.restore_index()?;
        let object_name = snapshot_object(&snapshot.id);
        let sealed = self.read_snapshot(snapshot)?;
        // The tree once for the order of its chunks, so they can be fetched ahead of the writer.
        let mut order = Vec::new();
        self.walk_refs(snapshot, &sealed, &mut |path, chunk| {
            if part.is_none_or(|part| in_part(path, part)) {
                order.push(chunk);
            }
            Ok(())
        })?;
        let mut reader = DecryptReader::new(&sealed[..], &self.snapshot_key);
        self.check_snapshot(&mut reader, snapshot, &object_name)?;
        let mut source = Source::new(self, &index, order);
        restore_tree_part(reader, dest, &mut source, part, progress)
            .map_err(|e| snapshot_error(e, &object_name))
    }

    /// The snapshot's stream must be the one the catalog names, and its header must say this
    /// repository and the device and time of its catalog entry.
    fn check_snapshot(
        &self,
        reader: &mut DecryptReader<&[u8]>,
        entry: &SnapshotEntry,
        object_name: &str,
    ) -> Result<(), RepoError> {
        let foreign = |what: String| RepoError::ForeignSnapshot {
            snapshot: entry.id.short(),
            what,
        };
        let stream_id = match reader.header() {
            Ok(h) => h.backup_id.0,
            Err(e) => match FormatError::from_io(&e) {
                Some(f) if f.is_wrong_key() => {
                    return Err(foreign(
                        "it is sealed under another key, or for another repository".into(),
                    ));
                }
                _ => return Err(RepoError::corrupt(object_name, e.to_string())),
            },
        };
        if stream_id != entry.id.0 {
            return Err(foreign(format!(
                "its object holds snapshot {}: swapped",
                SnapshotId(stream_id).short()
            )));
        }
        let mut head = [0u8; SNAP_HEADER_LEN];
        reader
            .read_exact(&mut head)
            .map_err(|e| RepoError::corrupt(object_name, e.to_string()))?;
        let header = SnapshotHeader::decode(&head)
            .ok_or_else(|| RepoError::corrupt(object_name, "no snapshot header"))?;
        if header.repo != self.id() {
            return Err(foreign(format!(
                "it was made in repository {}",
                header.repo
            )));
        }
        if header.device != entry.device || header.created_unix_ms != entry.created_unix_ms {
            return Err(foreign(
                "its device or time differs from its catalog entry".into(),
            ));
        }
        Ok(())
    }
}

impl Repository {
    /// Verifies the catalog, every index, every snapshot (its stream, header and tree) and that
    /// every chunk a snapshot references is indexed, and that every indexed pack is stored at
    /// its full length. With `read_data`, also downloads every pack, checks its own header
    /// against the index, and opens and verifies every chunk in it. Stops at the first fault.
    /// `catalog` is the one the caller verified (and checked against its mark): listing it
    /// again here would let the storage show the check a shorter one.
    pub fn check(&self, catalog: &Catalog, read_data: bool) -> Result<CheckReport, RepoError> {
        let index = self.load_index()?;
        let mut report = CheckReport::default();
        let mut referenced = HashSet::new();
        for entry in catalog.snapshots() {
            self.check_tree(&entry, &index, &mut referenced)?;
            report.snapshots += 1;
        }
        report.chunks = referenced.len() as u64;
        let stored: HashMap<String, u64> = self
            .rt
            .block_on(self.store.list_objects("packs"))?
            .into_iter()
            .map(|o| (o.name.to_string(), o.size))
            .collect();
        for pack in index.packs() {
            let name = pack::pack_object(&pack.id);
            match stored.get(&name) {
                None => return Err(RepoError::corrupt(name, "is missing from the storage")),
                Some(size) if *size < u64::from(pack.len) => {
                    return Err(RepoError::corrupt(
                        name,
                        "is shorter than its index says: truncated",
                    ));
                }
                Some(size) if *size > u64::from(pack.len) => {
                    return Err(RepoError::corrupt(
                        name,
                        "is longer than its index says: altered",
                    ));
                }
                Some(_) => {}
            }
            report.packs += 1;
            if read_data {
                report.chunks_read += self.check_pack(pack)?;
                report.packs_read += 1;
            }
        }
        Ok(report)
    }

    /// Reads `entry`'s tree and requires every chunk it names to be indexed with its length;
    /// adds them to `referenced`.
    pub(crate) fn check_tree(
        &self,
        entry: &SnapshotEntry,
        index: &Index,
        referenced: &mut HashSet<ChunkId>,
    ) -> Result<(), RepoError> {
        let sealed = self.read_snapshot(entry)?;
        self.walk_refs(entry, &sealed, &mut |_, chunk| {
            let id = ChunkId(chunk.id);
            match index.get(&id) {
                Some(loc) if loc.blob.raw_len == chunk.len => {}
                Some(loc) => {
                    return Err(RepoError::ChunkMismatch {
                        chunk: id.short(),
                        object: pack::pack_object(&loc.pack),
                    });
                }
                None => return Err(RepoError::MissingChunk { chunk: id.short() }),
            }
            referenced.insert(id);
            Ok(())
        })
    }

    /// Opens the snapshot stream `sealed` of `entry` and hands every chunk reference of its
    /// tree, in order, to `on_ref`.
    fn walk_refs(
        &self,
        entry: &SnapshotEntry,
        sealed: &[u8],
        on_ref: &mut OnRef<'_>,
    ) -> Result<(), RepoError> {
        let object_name = snapshot_object(&entry.id);
        let mut reader = DecryptReader::new(sealed, &self.snapshot_key);
        self.check_snapshot(&mut reader, entry, &object_name)?;
        let tree = std::io::BufReader::new(reader);
        let mut tree = lockbox_archive::ArchiveReader::new_tree(tree)
            .map_err(|e| snapshot_error(e, &object_name))?;
        let mut walk = |tree: &mut lockbox_archive::ArchiveReader<_>| -> Result<(), ArchiveError> {
            while let Some(entry) = tree.next_entry()? {
                let path = entry.path_bytes().to_vec();
                while let Some(chunk) = tree.read_ref()? {
                    on_ref(&path, chunk)?;
                }
            }
            Ok(())
        };
        walk(&mut tree).map_err(|e| snapshot_error(e, &object_name))
    }

    /// Downloads one pack, compares its header with the index, verifies every chunk.
    fn check_pack(&self, indexed: &IndexedPack) -> Result<u64, RepoError> {
        let pack = &indexed.id;
        let name = pack::pack_object(pack);
        let bytes = self.get_listed(&name, indexed.len.into())?;
        let own = pack::read_pack(&self.keys, pack, &bytes)?;
        if own != indexed.blobs {
            return Err(RepoError::corrupt(
                &name,
                "its header and the index disagree on what it holds",
            ));
        }
        self.check_blobs(pack, &bytes, &own, &name)?;
        Ok(own.len() as u64)
    }

    /// Opens every one of `blobs` in `bytes`, the pack `id` named `name`, and checks each
    /// against its chunk id.
    pub(crate) fn check_blobs(
        &self,
        id: &PackId,
        bytes: &[u8],
        blobs: &[BlobEntry],
        name: &str,
    ) -> Result<(), RepoError> {
        let key = self.keys.pack_key(&id.0);
        for blob in blobs {
            let sealed = bytes
                .get(blob.range().start as usize..blob.range().end as usize)
                .ok_or_else(|| RepoError::corrupt(name, "a blob lies past its end"))?;
            open_chunk(&key, &self.namer, id, blob, sealed, name)?;
        }
        Ok(())
    }
}

impl Repository {
    /// Deletes the whole repository: catalog entries newest first (so one cut short leaves a
    /// shorter, still valid catalog), then snapshots, index objects and packs, the config last
    /// (so a repository that still opens still has everything left to delete). Run again after
    /// an interruption, it finishes the job; the number of objects deleted.
    pub fn destroy(&self) -> Result<u64, RepoError> {
        // The catalog one entry at a time, newest first, so no gap ever opens in it.
        let entries = self
            .rt
            .block_on(self.store.list_objects(catalog::CATALOG_DIR))?;
        let mut deleted = entries.len() as u64;
        for entry in entries.iter().rev() {
            self.rt.block_on(self.store.delete_object(&entry.name))?;
        }
        for dir in ["snapshots", "index", "packs"] {
            let listed = self.rt.block_on(self.store.list_objects(dir))?;
            deleted += self.delete_all(listed.into_iter().map(|o| o.name.to_string()).collect())?;
        }
        self.rt
            .block_on(self.store.delete_object(&object(CONFIG_OBJECT)?))?;
        Ok(deleted + 1)
    }
}

pub(crate) fn object(name: &str) -> Result<ObjectName, RepoError> {
    Ok(ObjectName::new(name)?)
}

/// Errors of a snapshot's stream, which reach the tree reader as input errors.
fn snapshot_error(e: ArchiveError, object_name: &str) -> RepoError {
    if let ArchiveError::Input(io) = &e
        && FormatError::from_io(io).is_some()
    {
        return RepoError::corrupt(object_name, io.to_string());
    }
    e.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;
    use crate::ids::ChunkIds;
    use crate::lock::Purpose;

    /// What only a holder of K can write, and no test through the public API can: a catalog
    /// entry of one device that names a snapshot another device made (say, a second phone of
    /// the account whose catalog entry was rewritten). The snapshot's own header says who made
    /// it and when, and restore and check refuse the mismatch as a foreign snapshot.
    #[test]
    fn a_snapshot_listed_for_another_device_or_time_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().join("repo").display())).unwrap();
        let key = lockbox_crypto::BackupKey::from_bytes([3; 32]);
        let repo = Repository::init(store, rt.handle().clone(), &key, Sizes::default()).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("chat.db"), b"hello").unwrap();
        let (phone, tablet) = (DeviceId([1; 16]), DeviceId([2; 16]));
        let lock = repo.lock(tablet, Purpose::Backup, true).unwrap();
        let made = repo
            .backup(&lock, &src, None, 1000, None, &mut |_| {})
            .unwrap();
        lock.release().unwrap();
        // The tablet's tree, sealed again under a header that says `made_by` at `at`, and
        // listed as the phone's snapshot at time 1000.
        let mut plain = Vec::new();
        let object = repo.read_snapshot(&made.snapshot).unwrap();
        DecryptReader::new(&object[..], &repo.snapshot_key)
            .read_to_end(&mut plain)
            .unwrap();
        let relist = |made_by, at| {
            let header = SnapshotHeader {
                repo: repo.id(),
                device: made_by,
                created_unix_ms: at,
                files: made.snapshot.files,
                bytes: made.snapshot.bytes,
            };
            let (id, sealed) = repo
                .seal_snapshot(&header, &plain[SNAP_HEADER_LEN..], at)
                .unwrap();
            let sealed_len = Some(sealed.len() as u64);
            repo.put(&snapshot_object(&id), sealed, PutIf::Absent)
                .unwrap();
            let entry = SnapshotEntry {
                id,
                device: phone,
                created_unix_ms: 1000,
                sealed_len,
                ..made.snapshot
            };
            let head = Head {
                device: phone,
                created_unix_ms: 1000,
            };
            repo.append(repo.catalog().unwrap(), head, Op::Snapshot(entry))
                .unwrap();
        };
        relist(phone, 1000); // honest: restores
        relist(tablet, 1000); // another device
        relist(phone, 2000); // another time
        let listed = repo.catalog().unwrap().snapshots();
        assert_eq!(listed.len(), 4);
        for (i, entry) in listed.iter().enumerate() {
            let dest = dir.path().join(format!("out{i}"));
            let restored = repo.restore(entry, &dest, &mut |_| {});
            if i < 2 {
                restored.unwrap();
                continue;
            }
            match restored {
                Err(RepoError::ForeignSnapshot { what, .. }) => {
                    assert!(what.contains("device or time"), "{what}")
                }
                other => panic!("entry {i}: {other:?}"),
            }
            assert!(!dest.exists(), "nothing is left of a refused restore");
        }
        let check = repo.check(&repo.catalog().unwrap(), false);
        assert!(
            matches!(check, Err(RepoError::ForeignSnapshot { .. })),
            "{check:?}"
        );
    }

    /// A repository an earlier lockbox made (config version 1) keeps naming its chunks with
    /// HMAC-SHA256 after it is reopened: its next backups deduplicate against what it holds,
    /// and it restores and checks. A new one names them with keyed BLAKE3.
    #[test]
    fn each_repository_names_chunks_as_its_config_version_says() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let key = lockbox_crypto::BackupKey::from_bytes([3; 32]);
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let note = b"a note shorter than the smallest chunk".to_vec();
        let log: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        std::fs::write(src.join("note"), &note).unwrap();
        std::fs::write(src.join("log"), &log).unwrap();
        let layouts = [Layout::HmacSha256, Layout::Blake3, Layout::Blake3DenseFixed];
        for (n, layout) in layouts.into_iter().enumerate() {
            let ids = layout.chunk_ids();
            let url = format!("file://{}", dir.path().join(format!("repo{n}")).display());
            let handle = rt.handle().clone();
            let made = Repository::init_with(
                Store::open(&url).unwrap(),
                handle.clone(),
                &key,
                Sizes::SMALL,
                layout,
            )
            .unwrap();
            let device = DeviceId([1; 16]);
            let backup = |repo: &Repository| {
                let lock = repo.lock(device, Purpose::Backup, true).unwrap();
                let done = repo.backup(&lock, &src, None, 1000, None, &mut |_| {});
                lock.release().unwrap();
                done.unwrap()
            };
            backup(&made);
            let repo = Repository::open(Store::open(&url).unwrap(), handle, &key).unwrap();
            assert_eq!(repo.config().layout, layout);
            let other = match ids {
                ChunkIds::HmacSha256 => ChunkIds::Blake3,
                ChunkIds::Blake3 => ChunkIds::HmacSha256,
            };
            let index = repo.load_index().unwrap();
            assert!(index.contains(&ChunkNamer::new(&repo.keys, ids).id(&note)));
            assert!(!index.contains(&ChunkNamer::new(&repo.keys, other).id(&note)));
            std::fs::write(src.join("note2"), b"one more").unwrap();
            let second = backup(&repo);
            assert_eq!(second.stats.new_chunks, 1, "{ids:?}: {:?}", second.stats);
            std::fs::remove_file(src.join("note2")).unwrap();
            let dest = dir.path().join(format!("out{n}"));
            repo.restore(&second.snapshot, &dest, &mut |_| {}).unwrap();
            assert_eq!(std::fs::read(dest.join("log")).unwrap(), log);
            assert_eq!(std::fs::read(dest.join("note2")).unwrap(), b"one more");
            repo.check(&repo.catalog().unwrap(), true).unwrap();
        }
    }
}
