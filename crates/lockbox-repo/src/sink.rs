//! The write side of a backup, in two halves on two threads. The walk's thread reads, chunks
//! and names each chunk (the tree needs its id at once) and decides what is new; a packing
//! thread compresses the new chunks, seals them into packs and uploads each full pack in the
//! background. Reading and hashing then overlap with zstd, AES-GCM and the copies into packs,
//! on the two cores a phone or a small server has.
//!
//! Packs are written lazily and flushed to the disk together when packing ends: every pack
//! [`Repository::with_sink`] returns is durable, so an index may name it.
//!
//! Memory stays bounded: a few MiB of chunks ([`QUEUED_BYTES`] at their largest size, plus the
//! one each thread holds) wait between the halves, one pack fills, and [`UPLOADS_IN_FLIGHT`]
//! more are uploading, in pack buffers reused from pack to pack ([`Buffers`]).

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use bytes::Bytes;
use lockbox_archive::{ArchiveError, ChunkRef, ChunkSink, CompressPolicy, FileToChunk};
use lockbox_crypto::OsRng;
use lockbox_store::{PutIf, StoreError};
use tokio::task::JoinHandle;

use crate::RepoError;
use crate::cache::FileCache;
use crate::cdc::Chunker;
use crate::ids::ChunkId;
use crate::index::{Index, IndexedPack};
use crate::pack::{self, Pack, PackBuilder};
use crate::repo::{BackupStats, Repository, object};

/// Sealed packs uploading at once while the next fills: bounds memory at about
/// `(UPLOADS_IN_FLIGHT + 1) * pack_target`.
const UPLOADS_IN_FLIGHT: usize = 3;
/// Bytes of new chunks (at their largest) that may wait for the packing thread.
const QUEUED_BYTES: usize = 4 << 20;
/// A compressed chunk is kept only if it is at most this percentage of the chunk.
const KEEP_PERCENT: usize = 97;

/// What the walk hands the packing thread, in the walk's order.
enum ToPack {
    /// The chunks that follow are one file's, compressed as `CompressPolicy` says.
    File(CompressPolicy),
    /// A new chunk of the current file.
    Chunk { id: ChunkId, data: Vec<u8> },
    /// A chunk already in its stored form (a prune's rewrite), sealed as it is.
    Stored {
        id: ChunkId,
        stored: Vec<u8>,
        compressed: bool,
        raw_len: u32,
    },
}

/// What the packing thread did.
pub(crate) struct Packed {
    pub packs: Vec<IndexedPack>,
    pub count: u64,
    pub bytes: u64,
}

impl Repository {
    /// Runs `write` with a sink deduplicating against `index`, and a packing thread behind it;
    /// returns the sink (its counters and new cache), and what `write` returned with the packs
    /// that landed, or the first failure. Every upload has finished or failed when this
    /// returns. When packing fails, `write` sees only that it stopped, and the packing error is
    /// the one returned; any other failure of `write` is returned as it is.
    pub(crate) fn with_sink<'r, T, E: Into<RepoError>>(
        &'r self,
        index: &'r Index,
        write: impl FnOnce(&mut Sink<'r>) -> Result<T, E>,
    ) -> (Sink<'r>, Result<(T, Packed), RepoError>) {
        let max = self.config().sizes.chunk_max as usize;
        let (tx, rx) = sync_channel((QUEUED_BYTES / max.max(1)).max(1));
        std::thread::scope(|scope| {
            let packer = scope.spawn(|| Packer::new(self).run(rx));
            let mut sink = Sink {
                repo: self,
                index,
                fresh: HashSet::new(),
                to_packer: Some(tx),
                stats: BackupStats::default(),
                cache_old: None,
                cache_new: None,
                started_unix_ms: 0,
                chunker: None,
                stopped: false,
            };
            let written = write(&mut sink);
            // Closing the queue tells the packing thread to seal its last pack and finish.
            sink.to_packer = None;
            let packed = packer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let outcome = match (written, packed) {
                (Ok(t), Ok(p)) => Ok((t, p)),
                (Err(_), Err(e)) if sink.stopped => Err(e),
                (Err(e), _) => Err(e.into()),
                (Ok(_), Err(e)) => Err(e),
            };
            (sink, outcome)
        })
    }
}

fn stopped(repo: &Repository) -> RepoError {
    RepoError::Store(StoreError::TaskFailed {
        url: repo.url().to_owned(),
        object: "a pack".into(),
        reason: "the packing thread stopped".into(),
    })
}

/// The walk's half: names chunks, skips what the repository or this backup already holds, and
/// queues the rest for the packing thread.
pub(crate) struct Sink<'r> {
    repo: &'r Repository,
    index: &'r Index,
    fresh: HashSet<ChunkId>,
    to_packer: Option<SyncSender<ToPack>>,
    pub stats: BackupStats,
    /// The device's file cache from the last backup, and the one this backup builds.
    pub cache_old: Option<&'r FileCache>,
    pub cache_new: Option<FileCache>,
    pub started_unix_ms: u64,
    chunker: Option<Chunker>,
    /// A send found the packing thread gone: its own error is the one to report.
    stopped: bool,
}

/// Why cutting a file stopped.
enum Cut {
    Read(std::io::Error),
    Sink(RepoError),
}

impl From<std::io::Error> for Cut {
    fn from(e: std::io::Error) -> Self {
        Cut::Read(e)
    }
}

impl Sink<'_> {
    fn send(&mut self, msg: ToPack) -> Result<(), RepoError> {
        let sent = self.to_packer.as_ref().map(|tx| tx.send(msg));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => {
                self.stopped = true;
                Err(stopped(self.repo))
            }
        }
    }

    fn held(&self, id: &ChunkId) -> bool {
        self.index.contains(id) || self.fresh.contains(id)
    }

    /// Names `data`, a chunk of the current file, and queues a copy unless it is held already.
    fn add_chunk(&mut self, data: &[u8]) -> Result<ChunkRef, RepoError> {
        let id = self.repo.namer.id(data);
        let len = data.len() as u32;
        if self.held(&id) {
            self.stats.reused_chunks += 1;
            self.stats.reused_bytes += u64::from(len);
        } else {
            self.send(ToPack::Chunk {
                id,
                data: data.to_vec(),
            })?;
            self.fresh.insert(id);
            self.stats.new_chunks += 1;
            self.stats.new_bytes += u64::from(len);
        }
        Ok(ChunkRef { id: id.0, len })
    }

    /// Queues `stored` (the chunk `id` of `raw_len` bytes, as stored) to be sealed as it is.
    pub(crate) fn add_stored(
        &mut self,
        id: ChunkId,
        stored: Vec<u8>,
        compressed: bool,
        raw_len: u32,
    ) -> Result<(), RepoError> {
        self.send(ToPack::Stored {
            id,
            stored,
            compressed,
            raw_len,
        })
    }

    /// Pushes the cached chunks of `file` if its metadata is unchanged and the repository still
    /// holds every one of them.
    fn reuse_cached(&mut self, file: &FileToChunk<'_>, refs: &mut Vec<ChunkRef>) -> bool {
        let Some(cached) = self.cache_old.and_then(|c| c.get(file.rel, file.meta)) else {
            return false;
        };
        if !cached.iter().all(|r| self.held(&ChunkId(r.id))) {
            return false;
        }
        refs.extend_from_slice(cached);
        self.stats.cached_files += 1;
        self.stats.reused_chunks += cached.len() as u64;
        self.stats.reused_bytes += file.meta.len();
        if let Some(cache) = &mut self.cache_new {
            cache.put(file.rel, file.meta, refs, self.started_unix_ms);
        }
        true
    }
}

impl ChunkSink for Sink<'_> {
    fn chunk_file(
        &mut self,
        file: &FileToChunk<'_>,
        data: &mut dyn Read,
        refs: &mut Vec<ChunkRef>,
    ) -> Result<(), ArchiveError> {
        if self.reuse_cached(file, refs) {
            return Ok(());
        }
        self.send(ToPack::File(CompressPolicy::for_path(file.path)))?;
        let mut chunker = self.chunker.take().unwrap_or_else(|| {
            let config = self.repo.config();
            let seed = self.repo.keys.chunker_seed;
            Chunker::new(config.sizes, seed, config.layout.dense_fixed())
        });
        let media = !lockbox_archive::worth_compressing(file.path);
        let cut = chunker.cut(data, media, |chunk| {
            refs.push(self.add_chunk(chunk).map_err(Cut::Sink)?);
            Ok(())
        });
        self.chunker = Some(chunker);
        cut.map_err(|e| match e {
            Cut::Read(source) => ArchiveError::Io {
                path: file.path.to_path_buf(),
                source,
            },
            Cut::Sink(e) => e.into(),
        })?;
        if let Some(cache) = &mut self.cache_new {
            cache.put(file.rel, file.meta, refs, self.started_unix_ms);
        }
        Ok(())
    }
}

impl Repository {
    /// Flushes `packs` to the disk where the storage is a local folder (they were written
    /// lazily): an index may name them only after this.
    pub(crate) fn make_durable(&self, packs: &[IndexedPack]) -> Result<(), RepoError> {
        let names = packs
            .iter()
            .map(|p| object(&pack::pack_object(&p.id)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.rt().block_on(self.store().make_durable(names))?)
    }
}

/// Pack buffers, lent to uploads and given back when an upload drops its bytes: a backup
/// allocates one per upload in flight plus the one filling, once. (A fresh 9 MiB buffer per
/// pack, freed on the upload's thread, left glibc's arenas holding freed buffers resident:
/// docs/decisions.md.)
struct Buffers {
    home: Sender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
}

/// A lent buffer; back home when the last [`Bytes`] over it is dropped.
struct Lent {
    buf: Vec<u8>,
    home: Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // The packer may have finished already: then the buffer is simply freed.
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}

impl Buffers {
    fn new() -> Self {
        let (home, free) = channel();
        Buffers { home, free }
    }

    /// A buffer given back earlier, or a new one of `capacity`.
    fn take(&self, capacity: usize) -> Vec<u8> {
        self.free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(capacity))
    }

    fn lend(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            buf,
            home: self.home.clone(),
        })
    }
}

/// The packing thread's half: compresses, seals into packs, uploads full packs a few at a time.
struct Packer<'r> {
    repo: &'r Repository,
    pack: Option<PackBuilder>,
    buffers: Buffers,
    uploads: VecDeque<JoinHandle<Result<IndexedPack, StoreError>>>,
    landed: Vec<IndexedPack>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    compressed: Vec<u8>,
    policy: CompressPolicy,
    count: u64,
    bytes: u64,
}

impl<'r> Packer<'r> {
    fn new(repo: &'r Repository) -> Self {
        Packer {
            repo,
            pack: None,
            buffers: Buffers::new(),
            uploads: VecDeque::new(),
            landed: Vec::new(),
            compressor: zstd::bulk::Compressor::new(3).ok(),
            compressed: Vec::new(),
            policy: CompressPolicy::for_path("".as_ref()),
            count: 0,
            bytes: 0,
        }
    }

    /// Packs what arrives until the queue closes, then seals the last pack; waits for every
    /// upload even after a failure, so none outlives the backup.
    fn run(mut self, queue: Receiver<ToPack>) -> Result<Packed, RepoError> {
        let mut first_error = queue.iter().try_for_each(|msg| self.take(msg)).err();
        // Dropped before the wait, so a walk still sending learns at once that packing stopped.
        drop(queue);
        if first_error.is_none() {
            first_error = self.flush().err();
        }
        while !self.uploads.is_empty() {
            if let Err(e) = self.wait_one() {
                first_error.get_or_insert(e);
            }
        }
        if first_error.is_none() {
            first_error = self.repo.make_durable(&self.landed).err();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Packed {
                packs: self.landed,
                count: self.count,
                bytes: self.bytes,
            }),
        }
    }

    fn take(&mut self, msg: ToPack) -> Result<(), RepoError> {
        match msg {
            ToPack::File(policy) => {
                self.policy = policy;
                Ok(())
            }
            ToPack::Chunk { id, data } => {
                let len = data.len() as u32;
                let compressed = self.policy.should_try() && self.compress(&data);
                self.policy.record(compressed);
                let out = std::mem::take(&mut self.compressed);
                let result = self.seal(id, if compressed { &out } else { &data }, compressed, len);
                self.compressed = out;
                result
            }
            ToPack::Stored {
                id,
                stored,
                compressed,
                raw_len,
            } => self.seal(id, &stored, compressed, raw_len),
        }
    }

    /// zstd into `self.compressed`, capped at the size worth keeping.
    fn compress(&mut self, data: &[u8]) -> bool {
        let Some(compressor) = &mut self.compressor else {
            return false;
        };
        let limit = data.len() * KEEP_PERCENT / 100;
        self.compressed.clear();
        self.compressed.reserve(limit);
        compressor
            .compress_to_buffer(data, &mut self.compressed)
            .is_ok()
            && !self.compressed.is_empty()
            && self.compressed.len() <= limit
    }

    /// Seals `stored` into the current pack, which goes up once full.
    fn seal(
        &mut self,
        id: ChunkId,
        stored: &[u8],
        compressed: bool,
        raw_len: u32,
    ) -> Result<(), RepoError> {
        let sizes = self.repo.config().sizes;
        let buffers = &self.buffers;
        let pack = self.pack.get_or_insert_with(|| {
            let capacity = sizes.pack_target as usize + (1 << 20);
            PackBuilder::in_buffer(&self.repo.keys, buffers.take(capacity), &mut OsRng)
        });
        pack.add(id, stored, compressed, raw_len);
        if pack.len() >= sizes.pack_target as usize {
            self.flush()?;
        }
        Ok(())
    }

    /// Seals the current pack and starts its upload, waiting for the oldest one if too many
    /// are in flight.
    fn flush(&mut self) -> Result<(), RepoError> {
        let Some(pack) = self.pack.take() else {
            return Ok(());
        };
        let Pack { id, bytes, entries } = pack.finish();
        self.count += 1;
        self.bytes += bytes.len() as u64;
        let store = self.repo.store();
        let name = object(&pack::pack_object(&id))?;
        let bytes = self.buffers.lend(bytes);
        let indexed = IndexedPack {
            id,
            len: u32::try_from(bytes.len()).expect("packs stay far below 4 GiB"),
            blobs: entries,
        };
        // Flushed to the disk all at once before the run ends (`make_durable`), not one by one.
        self.uploads.push_back(self.repo.rt().spawn(async move {
            store.put_object_lazily(&name, bytes, PutIf::Absent).await?;
            Ok(indexed)
        }));
        // Finished uploads are collected at once, so a failed one stops the backup early.
        while self.uploads.len() > UPLOADS_IN_FLIGHT
            || self.uploads.front().is_some_and(|u| u.is_finished())
        {
            self.wait_one()?;
        }
        Ok(())
    }

    fn wait_one(&mut self) -> Result<(), RepoError> {
        let Some(upload) = self.uploads.pop_front() else {
            return Ok(());
        };
        let pack = self
            .repo
            .rt()
            .block_on(upload)
            .map_err(|e| StoreError::TaskFailed {
                url: self.repo.url().to_owned(),
                object: "a pack".into(),
                reason: e.to_string(),
            })??;
        self.landed.push(pack);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_buffer_comes_back_only_when_its_last_bytes_are_dropped() {
        let buffers = Buffers::new();
        let mut buf = buffers.take(1 << 20);
        buf.extend_from_slice(b"pack");
        let at = buf.as_ptr();
        let bytes = buffers.lend(buf);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(buffers.take(0).capacity(), 0, "a clone still reads it");
        assert_eq!(&clone[..], b"pack");
        drop(clone);
        let back = buffers.take(0);
        assert_eq!(back.as_ptr(), at, "the same allocation");
        assert!(back.capacity() >= 1 << 20);
    }
}
