//! What a tree's file data point to: chunks that a [`ChunkSink`] stored while the tree was
//! written and a [`ChunkSource`] gives back on restore. This crate never sees how or where.

use std::fs::Metadata;
use std::io::Read;
use std::path::Path;

use crate::ArchiveError;

/// Length of a chunk id.
pub const CHUNK_ID_LEN: usize = 32;

/// One piece of a file's data in a tree: the chunk's id and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub id: [u8; CHUNK_ID_LEN],
    /// 1..=[`crate::MAX_CHUNK_SIZE`].
    pub len: u32,
}

/// A regular file about to be written into a tree.
#[derive(Debug, Clone, Copy)]
pub struct FileToChunk<'a> {
    /// Where the walk found it.
    pub path: &'a Path,
    /// Its path in the tree.
    pub rel: &'a [u8],
    /// What the walk saw (size, mtime, inode): a sink may reuse earlier chunks when these are
    /// unchanged, without reading.
    pub meta: &'a Metadata,
}

/// Stores file data as chunks while a tree is written ([`crate::write_tree`]).
pub trait ChunkSink {
    /// Pushes to `refs` the chunks that make up `file`, in order, adding up to exactly
    /// `file.meta.len()` bytes. `data` yields the file's bytes (at most that many); a sink
    /// either reads it to its end or not at all (when it already knows the chunks). Errors of
    /// the sink's own go in [`ArchiveError::Chunks`].
    fn chunk_file(
        &mut self,
        file: &FileToChunk<'_>,
        data: &mut dyn Read,
        refs: &mut Vec<ChunkRef>,
    ) -> Result<(), ArchiveError>;
}

/// Gives back chunks while a tree is restored ([`crate::restore_tree`]).
pub trait ChunkSource {
    /// Replaces `buf` with the `chunk.len` bytes of `chunk`, verified. Errors of the source's
    /// own go in [`ArchiveError::Chunks`].
    fn read_chunk(&mut self, chunk: &ChunkRef, buf: &mut Vec<u8>) -> Result<(), ArchiveError>;
}
