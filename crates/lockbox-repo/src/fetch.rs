//! Chunks for a restore: fetched by ranged reads, opened, decompressed and verified against
//! their ids on the runtime, a bounded number ahead of the writer, in the order the tree names
//! them.

use std::collections::VecDeque;
use std::ops::Range;

use lockbox_archive::{ArchiveError, ChunkRef, ChunkSource};
use lockbox_crypto::Secret32;
use lockbox_store::{ObjectName, Store, StoreError};
use tokio::task::JoinHandle;

use crate::RepoError;
use crate::ids::{ChunkId, PackId};
use crate::index::Index;
use crate::pack::{self, BlobEntry};
use crate::repo::{Repository, object};

/// Chunks in flight ahead of the one the writer asks for (at most 8 MiB each, 1 MiB with the
/// default sizes).
const AHEAD: usize = 16;

type Pending = Result<JoinHandle<Result<Vec<u8>, RepoError>>, RepoError>;

pub(crate) struct Source<'r> {
    repo: &'r Repository,
    index: &'r Index,
    upcoming: std::vec::IntoIter<ChunkRef>,
    ahead: VecDeque<(ChunkRef, Pending)>,
    /// False once the writer asked out of the announced order: then each chunk is fetched when
    /// asked for.
    in_order: bool,
}

impl<'r> Source<'r> {
    /// A source that will be asked for `order`, in that order.
    pub(crate) fn new(repo: &'r Repository, index: &'r Index, order: Vec<ChunkRef>) -> Self {
        Source {
            repo,
            index,
            upcoming: order.into_iter(),
            ahead: VecDeque::new(),
            in_order: true,
        }
    }

    fn fill(&mut self) {
        while self.in_order && self.ahead.len() < AHEAD {
            let Some(chunk) = self.upcoming.next() else {
                return;
            };
            let pending = self.start(&chunk);
            self.ahead.push_back((chunk, pending));
        }
    }

    /// Starts fetching `chunk`; what the index says against it fails at once.
    fn start(&self, chunk: &ChunkRef) -> Pending {
        let id = ChunkId(chunk.id);
        let loc = *self
            .index
            .get(&id)
            .ok_or_else(|| RepoError::MissingChunk { chunk: id.short() })?;
        let object_name = pack::pack_object(&loc.pack);
        if loc.blob.raw_len != chunk.len {
            return Err(RepoError::ChunkMismatch {
                chunk: id.short(),
                object: object_name,
            });
        }
        let name = object(&object_name)?;
        let store = self.repo.store();
        let pack_key = self.repo.keys.pack_key(&loc.pack.0);
        let chunk_key = self.repo.keys.chunk_id.clone();
        Ok(self.repo.rt().spawn(async move {
            let sealed = read_range(&store, &name, loc.blob.range()).await?;
            open_chunk(
                &pack_key,
                &chunk_key,
                &loc.pack,
                &loc.blob,
                &sealed,
                &object_name,
            )
        }))
    }

    fn wait(&self, pending: Pending) -> Result<Vec<u8>, RepoError> {
        let task = pending?;
        self.repo
            .rt()
            .block_on(task)
            .map_err(|e| StoreError::TaskFailed {
                url: self.repo.url().to_owned(),
                object: "a chunk".into(),
                reason: e.to_string(),
            })?
    }

    fn abort_all(&mut self) {
        for (_, pending) in self.ahead.drain(..) {
            if let Ok(task) = pending {
                task.abort();
            }
        }
    }
}

impl Drop for Source<'_> {
    fn drop(&mut self) {
        self.abort_all();
    }
}

impl ChunkSource for Source<'_> {
    fn read_chunk(&mut self, chunk: &ChunkRef, buf: &mut Vec<u8>) -> Result<(), ArchiveError> {
        self.fill();
        let pending = match self.ahead.pop_front() {
            Some((next, pending)) if next == *chunk => pending,
            _ => {
                self.in_order = false;
                self.abort_all();
                self.start(chunk)
            }
        };
        *buf = self.wait(pending)?;
        Ok(())
    }
}

/// Bytes `range` of the pack `name`; missing or cut short is damage.
async fn read_range(
    store: &Store,
    name: &ObjectName,
    range: Range<u64>,
) -> Result<bytes::Bytes, RepoError> {
    match store.get_object_range(name, range).await {
        Err(e) if e.is_not_found() => Err(RepoError::corrupt(
            name.as_str(),
            "is missing from the storage",
        )),
        Err(StoreError::ShortRead { .. }) => Err(RepoError::corrupt(
            name.as_str(),
            "is shorter than its index says: truncated",
        )),
        other => Ok(other?),
    }
}

/// The chunk `blob` of `pack` from its sealed bytes: opened, decompressed (capped at its
/// length, so a bomb fails instead of growing memory), and checked against its id.
///
/// The seal alone proves that a holder of K sealed these bytes for this chunk id: it is
/// AES-256-GCM under the pack's key (from K and the pack id), with the offset in the nonce and
/// the chunk id, flags and length as associated data. Recomputing the id also proves the bytes
/// are that chunk's: a writer that sealed other bytes under the id (a bug, or another device of
/// the account that holds K and lies) would otherwise be restored without a word.
pub(crate) fn open_chunk(
    pack_key: &Secret32,
    chunk_key: &Secret32,
    pack: &PackId,
    blob: &BlobEntry,
    sealed: &[u8],
    object_name: &str,
) -> Result<Vec<u8>, RepoError> {
    let stored = pack::open_blob(pack_key, pack, blob, sealed)?;
    unpack_chunk(chunk_key, blob, stored, object_name)
}

/// An opened blob's chunk: decompressed (capped at its length) and checked against its id.
pub(crate) fn unpack_chunk(
    chunk_key: &Secret32,
    blob: &BlobEntry,
    stored: Vec<u8>,
    object_name: &str,
) -> Result<Vec<u8>, RepoError> {
    let raw_len = blob.raw_len as usize;
    let data = if blob.compressed {
        zstd::bulk::decompress(&stored, raw_len).map_err(|_| {
            RepoError::corrupt(
                object_name,
                format!("chunk {} does not decompress", blob.id),
            )
        })?
    } else {
        stored
    };
    if data.len() != raw_len || ChunkId::keyed(chunk_key, &data) != blob.id {
        return Err(RepoError::ChunkMismatch {
            chunk: blob.id.short(),
            object: object_name.to_owned(),
        });
    }
    Ok(data)
}
