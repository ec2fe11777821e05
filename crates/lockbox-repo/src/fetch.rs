//! Chunks for a restore: fetched by ranged reads, opened, decompressed and verified against
//! their ids on the runtime, a bounded amount ahead of the writer, in the order the tree names
//! them. Chunks that lie side by side in one pack (a file's chunks, as a backup wrote them) are
//! fetched by one read, then opened in parallel.
//!
//! What is ahead is bounded three ways: in chunk bytes (what the chunks decompress to, not what
//! they take in the pack, so well-compressed text cannot blow it up), with every chunk costing
//! at least [`CHUNK_FLOOR`] (so a folder of tiny files cannot hold thousands of tasks and
//! buffers for a few bytes each), and in runs, that is reads open at once ([`AHEAD_RUNS`]).

use std::collections::VecDeque;
use std::ops::Range;

use lockbox_archive::{ArchiveError, ChunkRef, ChunkSource};
use lockbox_crypto::Secret32;
use lockbox_store::{ObjectName, Store, StoreError};
use tokio::task::JoinHandle;

use crate::RepoError;
use crate::ids::{ChunkId, ChunkNamer, PackId};
use crate::index::{Index, Location};
use crate::pack::{self, BlobEntry};
use crate::repo::{Repository, object};

/// Cost of the chunks (as the writer gets them, see [`cost`]) fetched or being fetched ahead
/// of the one the writer asks for: what bounds the restore's memory, whatever the chunks
/// compressed to.
const AHEAD_BYTES: u64 = 8 << 20;
/// The most one read fetches: adjacent blobs of one pack whose chunks cost up to this much
/// (or a single larger chunk).
const RUN_BYTES: u64 = 2 << 20;
/// What the smallest chunk costs against [`AHEAD_BYTES`] and [`RUN_BYTES`]: each one ahead
/// holds a task, a buffer and its bookkeeping whatever its length.
const CHUNK_FLOOR: u64 = 4 << 10;
/// The most runs (reads, each with its connection and response) ahead at once: a slow provider
/// must not see one request per identical tiny file.
const AHEAD_RUNS: usize = 32;

/// What a chunk of `len` bytes counts for against the read-ahead's bounds.
fn cost(len: u32) -> u64 {
    u64::from(len).max(CHUNK_FLOOR)
}

type Opening = JoinHandle<Result<Vec<u8>, RepoError>>;
type Reading = JoinHandle<Result<VecDeque<Opening>, RepoError>>;

/// Chunks fetched by one read, and where the fetch is.
struct Run {
    state: RunState,
}

enum RunState {
    /// What the index says against the chunk (missing, another length): fails when reached.
    Refused(ChunkRef, RepoError),
    Reading(VecDeque<ChunkRef>, Reading),
    /// The read landed; one task per chunk opens it, in the run's order.
    Opening(VecDeque<(ChunkRef, Opening)>),
}

impl Run {
    fn first(&self) -> Option<&ChunkRef> {
        match &self.state {
            RunState::Refused(chunk, _) => Some(chunk),
            RunState::Reading(chunks, _) => chunks.front(),
            RunState::Opening(tasks) => tasks.front().map(|(chunk, _)| chunk),
        }
    }

    /// What the chunks it will still give the writer cost against the read-ahead's bounds.
    fn cost(&self) -> u64 {
        match &self.state {
            RunState::Refused(chunk, _) => cost(chunk.len),
            RunState::Reading(chunks, _) => chunks.iter().map(|c| cost(c.len)).sum(),
            RunState::Opening(tasks) => tasks.iter().map(|(c, _)| cost(c.len)).sum(),
        }
    }
}

/// A run being gathered from the announced order before its read starts.
struct Gathering {
    pack: PackId,
    range: Range<u64>,
    chunks: VecDeque<ChunkRef>,
    blobs: Vec<BlobEntry>,
    /// What its chunks cost ([`cost`]).
    len: u64,
}

impl Gathering {
    fn new(chunk: ChunkRef, loc: Location) -> Self {
        Gathering {
            pack: loc.pack,
            range: loc.blob.range(),
            chunks: VecDeque::from([chunk]),
            blobs: vec![loc.blob],
            len: cost(chunk.len),
        }
    }

    /// Whether the blob at `loc` directly follows this run's in its pack, within one read.
    fn extends_to(&self, loc: &Location) -> bool {
        loc.pack == self.pack
            && loc.blob.range().start == self.range.end
            && self.len + cost(loc.blob.raw_len) <= RUN_BYTES
    }

    fn push(&mut self, chunk: ChunkRef, loc: Location) {
        self.range.end = loc.blob.range().end;
        self.blobs.push(loc.blob);
        self.chunks.push_back(chunk);
        self.len += cost(chunk.len);
    }
}

pub(crate) struct Source<'r> {
    repo: &'r Repository,
    index: &'r Index,
    upcoming: std::iter::Peekable<std::vec::IntoIter<ChunkRef>>,
    ahead: VecDeque<Run>,
    ahead_bytes: u64,
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
            upcoming: order.into_iter().peekable(),
            ahead: VecDeque::new(),
            ahead_bytes: 0,
            in_order: true,
        }
    }

    fn fill(&mut self) {
        while self.in_order && self.ahead_bytes < AHEAD_BYTES && self.ahead.len() < AHEAD_RUNS {
            let Some(run) = self.next_run() else {
                return;
            };
            self.ahead_bytes += run.cost();
            self.ahead.push_back(run);
        }
    }

    /// The next run of the announced order (the chunks that follow each other in one pack).
    fn next_run(&mut self) -> Option<Run> {
        let first = self.upcoming.next()?;
        let loc = match self.locate(&first) {
            Ok(loc) => loc,
            Err(e) => return Some(refused(first, e)),
        };
        let mut run = Gathering::new(first, loc);
        while let Some(&next) = self.upcoming.peek() {
            match self.locate(&next) {
                Ok(loc) if run.extends_to(&loc) => run.push(next, loc),
                _ => break,
            }
            self.upcoming.next();
        }
        Some(self.start(run))
    }

    /// Where the index puts `chunk`; what it says against it fails at once.
    fn locate(&self, chunk: &ChunkRef) -> Result<Location, RepoError> {
        let id = ChunkId(chunk.id);
        let loc = *self
            .index
            .get(&id)
            .ok_or_else(|| RepoError::MissingChunk { chunk: id.short() })?;
        if loc.blob.raw_len != chunk.len {
            return Err(RepoError::ChunkMismatch {
                chunk: id.short(),
                object: pack::pack_object(&loc.pack),
            });
        }
        Ok(loc)
    }

    /// Starts the read of `run`, which then starts opening each of its chunks.
    fn start(&self, run: Gathering) -> Run {
        let object_name = pack::pack_object(&run.pack);
        let name = match object(&object_name) {
            Ok(name) => name,
            Err(e) => {
                let first = run.chunks.front().copied().expect("a run has a chunk");
                return refused(first, e);
            }
        };
        let store = self.repo.store();
        let pack_key = self.repo.keys.pack_key(&run.pack.0);
        let namer = self.repo.namer.clone();
        let Gathering {
            pack,
            range,
            chunks,
            blobs,
            ..
        } = run;
        let reading = self.repo.rt().spawn(async move {
            let bytes = read_range(&store, &name, range.clone()).await?;
            Ok(blobs
                .into_iter()
                .map(|blob| {
                    let at = (blob.range().start - range.start) as usize;
                    let sealed = bytes.slice(at..at + blob.sealed_len as usize);
                    let (pack_key, namer) = (pack_key.clone(), namer.clone());
                    let object_name = object_name.clone();
                    tokio::spawn(async move {
                        open_chunk(&pack_key, &namer, &pack, &blob, &sealed, &object_name)
                    })
                })
                .collect())
        });
        Run {
            state: RunState::Reading(chunks, reading),
        }
    }

    fn join<T>(&self, task: JoinHandle<Result<T, RepoError>>) -> Result<T, RepoError> {
        self.repo
            .rt()
            .block_on(task)
            .map_err(|e| StoreError::TaskFailed {
                url: self.repo.url().to_owned(),
                object: "a chunk".into(),
                reason: e.to_string(),
            })?
    }

    /// The front run's first chunk, which the writer asked for.
    fn take_front(&mut self) -> Result<Vec<u8>, RepoError> {
        let Some(mut run) = self.ahead.pop_front() else {
            return Err(RepoError::corrupt(
                "the restore",
                "asked for a chunk not fetched",
            ));
        };
        let mut tasks = match run.state {
            RunState::Refused(chunk, e) => {
                self.ahead_bytes -= cost(chunk.len);
                return Err(e);
            }
            RunState::Reading(chunks, reading) => {
                chunks.into_iter().zip(self.join(reading)?).collect()
            }
            RunState::Opening(tasks) => tasks,
        };
        let Some((chunk, opening)) = tasks.pop_front() else {
            return Err(RepoError::corrupt(
                "the restore",
                "asked for a chunk not fetched",
            ));
        };
        self.ahead_bytes -= cost(chunk.len);
        if !tasks.is_empty() {
            run.state = RunState::Opening(tasks);
            self.ahead.push_front(run);
        }
        self.join(opening)
    }

    fn abort_all(&mut self) {
        for run in self.ahead.drain(..) {
            match run.state {
                RunState::Refused(..) => {}
                RunState::Reading(_, task) => task.abort(),
                RunState::Opening(tasks) => tasks.iter().for_each(|(_, task)| task.abort()),
            }
        }
        self.ahead_bytes = 0;
    }
}

fn refused(chunk: ChunkRef, e: RepoError) -> Run {
    Run {
        state: RunState::Refused(chunk, e),
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
        let expected = self.ahead.front().and_then(Run::first);
        if expected != Some(chunk) {
            self.in_order = false;
            self.abort_all();
            let run = match self.locate(chunk) {
                Ok(loc) => self.start(Gathering::new(*chunk, loc)),
                Err(e) => refused(*chunk, e),
            };
            self.ahead_bytes += run.cost();
            self.ahead.push_back(run);
        }
        let chunk = self.take_front();
        if chunk.is_err() {
            self.in_order = false;
            self.abort_all();
        }
        *buf = chunk?;
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
        Err(StoreError::LongRead { .. }) => Err(RepoError::corrupt(
            name.as_str(),
            "was served with more bytes than the read asked for",
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
    namer: &ChunkNamer,
    pack: &PackId,
    blob: &BlobEntry,
    sealed: &[u8],
    object_name: &str,
) -> Result<Vec<u8>, RepoError> {
    let stored = pack::open_blob(pack_key, pack, blob, sealed)?;
    unpack_chunk(namer, blob, stored, object_name)
}

/// An opened blob's chunk: decompressed (capped at its length) and checked against its id.
pub(crate) fn unpack_chunk(
    namer: &ChunkNamer,
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
    if data.len() != raw_len || namer.id(&data) != blob.id {
        return Err(RepoError::ChunkMismatch {
            chunk: blob.id.short(),
            object: object_name.to_owned(),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of `raw` bytes stored in `sealed` bytes at `offset` of pack `pack`.
    fn at(pack: u8, offset: u32, raw: u32, sealed: u32) -> (ChunkRef, Location) {
        let id = [offset as u8 ^ pack; 32];
        let blob = BlobEntry {
            id: ChunkId(id),
            compressed: sealed < raw,
            raw_len: raw,
            offset,
            sealed_len: sealed,
        };
        let loc = Location {
            pack: PackId([pack; 32]),
            blob,
        };
        (ChunkRef { id, len: raw }, loc)
    }

    #[test]
    fn a_run_grows_only_over_the_next_blob_of_its_pack() {
        let (first, loc) = at(1, 100, 1000, 1016);
        let run = Gathering::new(first, loc);
        assert!(
            run.extends_to(&at(1, 1116, 1000, 1016).1),
            "the blob right after"
        );
        assert!(
            !run.extends_to(&at(1, 1117, 1000, 1016).1),
            "a gap would read bytes between"
        );
        assert!(!run.extends_to(&at(1, 50, 1000, 1016).1), "an earlier blob");
        assert!(!run.extends_to(&at(2, 1116, 1000, 1016).1), "another pack");
    }

    #[test]
    fn a_run_holds_at_most_its_bytes_of_chunks_however_well_they_compressed() {
        let quarter = (RUN_BYTES / 4) as u32;
        // Text that compressed 8:1: what bounds memory is the chunks' bytes, not the read.
        let (first, loc) = at(1, 0, quarter, quarter / 8);
        let mut run = Gathering::new(first, loc);
        let mut offset = quarter / 8;
        for _ in 0..3 {
            let (chunk, loc) = at(1, offset, quarter, quarter / 8);
            assert!(run.extends_to(&loc));
            run.push(chunk, loc);
            offset += quarter / 8;
        }
        assert_eq!(run.len, RUN_BYTES);
        assert_eq!(run.range, 0..u64::from(offset));
        assert_eq!(run.chunks.len(), run.blobs.len());
        assert!(!run.extends_to(&at(1, offset, 1, 17).1), "full");
        // A chunk larger than a run is still fetched, alone.
        let (big, loc) = at(1, 0, RUN_BYTES as u32 * 2, RUN_BYTES as u32 * 2 + 16);
        let alone = Gathering::new(big, loc);
        assert!(!alone.extends_to(&at(1, RUN_BYTES as u32 * 2 + 16, 1, 17).1));
    }

    #[test]
    fn tiny_chunks_cost_the_floor_so_a_run_holds_few_of_them() {
        let (first, loc) = at(1, 0, 5, 21);
        let mut run = Gathering::new(first, loc);
        let mut offset = 21;
        loop {
            let (chunk, loc) = at(1, offset, 5, 21);
            if !run.extends_to(&loc) {
                break;
            }
            run.push(chunk, loc);
            offset += 21;
        }
        assert_eq!(run.chunks.len() as u64, RUN_BYTES / CHUNK_FLOOR);
        assert_eq!(run.len, RUN_BYTES);
    }
}
