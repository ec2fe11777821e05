//! Directory ⇄ byte stream for lockbox backups: the plaintext that `lockbox-format` encrypts.
//!
//! Does: walk a directory depth-first (never following symlinks) and write directories,
//! regular files and symlinks with their permission bits and mtimes into a small versioned
//! framing (magic + version, entries, explicit end record; see `docs/archive.md`). File data is
//! cut into blocks, each stored raw or zstd-compressed, whichever is worth it. Restores such a
//! stream atomically into a fresh directory: a failed or truncated restore leaves nothing that
//! looks complete.
//!
//! Does not: encrypt or authenticate (the surrounding `lockbox-format` stream does), store
//! owners, xattrs, ACLs, hard-link identity, special files, or the root directory's own metadata.
//!
//! Trusts: nothing about the input stream. [`ArchiveReader`] rejects unsafe paths, entries out of
//! depth-first order (hence duplicates), entries whose parent is not a directory of the same
//! archive, oversized blocks, and file data that does not add up to the declared size; its
//! memory is bounded by [`MAX_BLOCK_SIZE`]. `restore` creates every file with `create_new` and
//! checks each parent is a directory it created itself, so nothing outside the destination can
//! be reached through a symlink. It trusts the local filesystem and the `zstd` library.
#![forbid(unsafe_code)]

mod chunks;
mod error;
mod format;
mod mount;
pub mod partial;
mod reader;
mod restore;
mod walk;
mod writer;

pub use chunks::{CHUNK_ID_LEN, ChunkRef, ChunkSink, ChunkSource, FileToChunk};
pub use error::ArchiveError;
pub use format::{
    MAGIC, MAX_BLOCK_SIZE, MAX_CHUNK_SIZE, MAX_PATH_LEN, Mtime, TREE_MAGIC, TREE_VERSION, VERSION,
    validate_path,
};
pub use reader::{ArchiveReader, Entry, EntryKind};
pub use restore::{check_destination, in_part, restore, restore_tree, restore_tree_part};
pub use writer::{
    ArchiveStats, CompressPolicy, WriteOptions, scan_size, worth_compressing, write_dir, write_tree,
};
