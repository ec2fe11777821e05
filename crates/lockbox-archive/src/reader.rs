//! Pull parser for the archive stream. Never touches the filesystem; memory stays bounded by
//! [`MAX_BLOCK_SIZE`] and [`MAX_PATH_LEN`] whatever the input.

use std::io::{ErrorKind, Read};
use std::path::Path;

use crate::ArchiveError;
use crate::chunks::{CHUNK_ID_LEN, ChunkRef};
use crate::error::show_path;
use crate::format::{
    BLOCK_END, BLOCK_RAW, BLOCK_REF, BLOCK_ZSTD, MAGIC, MAX_BLOCK_SIZE, MAX_CHUNK_SIZE,
    MAX_PATH_LEN, MODE_MASK, Mtime, TAG_DIR, TAG_END, TAG_FILE, TAG_HARDLINK, TAG_SYMLINK,
    TREE_MAGIC, TREE_VERSION, VERSION, is_ancestor_or_self, parent, path_order, validate_path,
};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    /// A regular file of `size` bytes; its data follows (see [`ArchiveReader::read_block`]).
    File {
        size: u64,
    },
    /// A symbolic link, stored as its raw target bytes (never followed).
    Symlink {
        target: Vec<u8>,
    },
    /// Trees only: another name (hard link) of the regular file at `target`, an earlier file
    /// entry of the same tree; it has no data of its own.
    HardLink {
        target: Vec<u8>,
    },
}

/// One archive entry header. Its path has been validated (relative, no `.`/`..`), comes after
/// the previous entry in depth-first order, and its parent is a directory entry of this archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    pub mtime: Mtime,
}

impl Entry {
    /// The relative path as raw Unix bytes, '/'-separated.
    pub fn path_bytes(&self) -> &[u8] {
        &self.path
    }

    /// The relative path.
    pub fn path(&self) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(&self.path))
    }
}

/// What a stream holds as file data: blocks of the data itself, or references to chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Archive,
    Tree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Entries,
    Data { remaining: u64 },
    Finished,
    Failed,
}

/// Reads an archive entry by entry: [`next_entry`](Self::next_entry), then for files
/// [`read_block`](Self::read_block) until `None` (or let `next_entry` skip the data).
///
/// `next_entry` returns `Ok(None)` only after the end-of-archive record was read **and** the
/// input returned end-of-file; trailing bytes are an error. After any error the reader is
/// poisoned and keeps failing.
///
/// Header fields are read with many small `read` calls: pass a buffered reader (or a slice).
pub struct ArchiveReader<R: Read> {
    input: R,
    flavor: Flavor,
    state: State,
    bytes_read: u64,
    /// Path of the previous entry, for the ordering (and so duplicate) check.
    prev: Vec<u8>,
    /// Deepest directory still open: its path and all its ancestors may hold the next entry.
    open_dir: Vec<u8>,
    stored: Vec<u8>,
    block: Vec<u8>,
    chunk: Option<ChunkRef>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    /// Trees: paths of the file entries so far, the only targets a hard link may name.
    files: std::collections::HashSet<Vec<u8>>,
}

impl<R: Read> std::fmt::Debug for ArchiveReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("flavor", &self.flavor)
            .field("state", &self.state)
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

impl<R: Read> ArchiveReader<R> {
    /// Read and check the magic and version of an archive.
    pub fn new(input: R) -> Result<Self, ArchiveError> {
        Self::open(input, Flavor::Archive)
    }

    /// Read and check the magic and version of a tree, whose file data are chunk references
    /// (read them with [`read_ref`](Self::read_ref)).
    pub fn new_tree(input: R) -> Result<Self, ArchiveError> {
        Self::open(input, Flavor::Tree)
    }

    pub(crate) fn open(input: R, flavor: Flavor) -> Result<Self, ArchiveError> {
        let (expect_magic, expect_version) = match flavor {
            Flavor::Archive => (MAGIC, VERSION),
            Flavor::Tree => (TREE_MAGIC, TREE_VERSION),
        };
        let mut reader = ArchiveReader {
            input,
            flavor,
            state: State::Entries,
            bytes_read: 0,
            prev: Vec::new(),
            open_dir: Vec::new(),
            stored: Vec::new(),
            block: Vec::new(),
            chunk: None,
            decompressor: None,
            files: std::collections::HashSet::new(),
        };
        let mut magic = [0u8; MAGIC.len()];
        reader.fill(&mut magic).map_err(|e| match e {
            ArchiveError::Truncated => ArchiveError::NotAnArchive,
            other => other,
        })?;
        if magic != expect_magic {
            return Err(ArchiveError::NotAnArchive);
        }
        let version = reader.u8()?;
        if version != expect_version {
            return Err(ArchiveError::UnsupportedVersion(version));
        }
        Ok(reader)
    }

    /// Bytes consumed from the input so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Give back the input reader.
    pub fn into_inner(self) -> R {
        self.input
    }

    /// The next entry, skipping any unread data of the previous file; `Ok(None)` at the verified
    /// end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ArchiveError> {
        self.guard(|r| {
            if let State::Data { .. } = r.state {
                r.skip_blocks()?;
            }
            match r.state {
                State::Finished => Ok(None),
                _ => r.parse_entry(),
            }
        })
    }

    /// The next block of the current file's data, `Ok(None)` once its declared size was read
    /// and verified (or when no file data is pending).
    pub fn read_block(&mut self) -> Result<Option<&[u8]>, ArchiveError> {
        self.expect_flavor(Flavor::Archive)?;
        let more = self.guard(|r| r.next_block(true))?;
        Ok(more.then_some(self.block.as_slice()))
    }

    /// In a tree: the next chunk of the current file's data, `Ok(None)` once the chunks add up
    /// to its declared size (or when no file data is pending).
    pub fn read_ref(&mut self) -> Result<Option<ChunkRef>, ArchiveError> {
        self.expect_flavor(Flavor::Tree)?;
        let more = self.guard(|r| r.next_block(true))?;
        Ok(if more { self.chunk.take() } else { None })
    }

    fn expect_flavor(&self, flavor: Flavor) -> Result<(), ArchiveError> {
        if self.flavor != flavor {
            let what = match flavor {
                Flavor::Archive => "blocks read from a tree (use read_ref)",
                Flavor::Tree => "chunk references read from an archive (use read_block)",
            };
            return Err(ArchiveError::malformed(what));
        }
        Ok(())
    }

    /// Skip the rest of the current file's data (still checking the block structure and sizes).
    pub fn skip_data(&mut self) -> Result<(), ArchiveError> {
        self.guard(Self::skip_blocks)
    }

    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ArchiveError>,
    ) -> Result<T, ArchiveError> {
        if self.state == State::Failed {
            return Err(ArchiveError::malformed(
                "archive reader used after an error",
            ));
        }
        let result = f(self);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn skip_blocks(&mut self) -> Result<(), ArchiveError> {
        while self.next_block(false)? {}
        Ok(())
    }

    fn parse_entry(&mut self) -> Result<Option<Entry>, ArchiveError> {
        let tag = self.u8()?;
        if tag == TAG_END {
            self.expect_eof()?;
            self.state = State::Finished;
            return Ok(None);
        }
        let tree_only = tag == TAG_HARDLINK && self.flavor == Flavor::Tree;
        if ![TAG_DIR, TAG_FILE, TAG_SYMLINK].contains(&tag) && !tree_only {
            return Err(ArchiveError::malformed(format!(
                "unknown entry type {tag:#04x}"
            )));
        }
        let path = self.bytes()?;
        validate_path(&path)?;
        let mode = self.u32()?;
        if mode & !MODE_MASK != 0 {
            return Err(ArchiveError::malformed("mode has bits outside 0o7777"));
        }
        let mtime = Mtime {
            secs: self.i64()?,
            nanos: self.u32()?,
        }
        .check()?;
        let kind = match tag {
            TAG_DIR => EntryKind::Directory,
            TAG_FILE => EntryKind::File { size: self.u64()? },
            TAG_HARDLINK => {
                let target = self.bytes()?;
                validate_path(&target)?;
                if !self.files.contains(&target) {
                    return Err(ArchiveError::malformed(format!(
                        "hard link {} to {}, which is not an earlier file of this tree",
                        show_path(&path),
                        show_path(&target)
                    )));
                }
                EntryKind::HardLink { target }
            }
            _ => EntryKind::Symlink {
                target: self.link_target()?,
            },
        };
        self.place(&path, &kind)?;
        if let EntryKind::File { size } = kind {
            self.state = State::Data { remaining: size };
            if self.flavor == Flavor::Tree {
                self.files.insert(path.clone());
            }
        }
        Ok(Some(Entry {
            path,
            kind,
            mode,
            mtime,
        }))
    }

    fn link_target(&mut self) -> Result<Vec<u8>, ArchiveError> {
        let target = self.bytes()?;
        if target.is_empty() || target.contains(&0) {
            return Err(ArchiveError::malformed("invalid symlink target"));
        }
        Ok(target)
    }

    /// Enforce depth-first order: strictly after the previous entry (so no duplicates), and the
    /// parent is an open directory entry of this archive (so never a symlink or a file).
    fn place(&mut self, path: &[u8], kind: &EntryKind) -> Result<(), ArchiveError> {
        if !self.prev.is_empty() && path_order(&self.prev, path).is_ge() {
            let what = if self.prev == path {
                "duplicate entry"
            } else {
                "entry out of order"
            };
            return Err(ArchiveError::malformed(format!(
                "{what}: {}",
                show_path(path)
            )));
        }
        let parent = parent(path);
        if !is_ancestor_or_self(parent, &self.open_dir) {
            return Err(ArchiveError::malformed(format!(
                "parent of {} is not a directory of this archive",
                show_path(path)
            )));
        }
        self.open_dir.clear();
        self.open_dir.extend_from_slice(match kind {
            EntryKind::Directory => path,
            _ => parent,
        });
        self.prev.clear();
        self.prev.extend_from_slice(path);
        Ok(())
    }

    /// Read one block into `self.block` (decoded if `decode`); `false` at the end of the data.
    fn next_block(&mut self, decode: bool) -> Result<bool, ArchiveError> {
        let State::Data { remaining } = self.state else {
            return Ok(false);
        };
        let kind = self.u8()?;
        if kind == BLOCK_END {
            if remaining != 0 {
                return Err(ArchiveError::malformed(
                    "file data shorter than its declared size",
                ));
            }
            self.state = State::Entries;
            return Ok(false);
        }
        let allowed = match self.flavor {
            Flavor::Archive => kind == BLOCK_RAW || kind == BLOCK_ZSTD,
            Flavor::Tree => kind == BLOCK_REF,
        };
        if !allowed {
            return Err(ArchiveError::malformed(format!(
                "unknown block type {kind:#04x}"
            )));
        }
        let max = match self.flavor {
            Flavor::Archive => MAX_BLOCK_SIZE,
            Flavor::Tree => MAX_CHUNK_SIZE,
        };
        let raw_len = self.length_up_to(max)?;
        if raw_len as u64 > remaining {
            return Err(ArchiveError::malformed(
                "file data longer than its declared size",
            ));
        }
        match kind {
            BLOCK_RAW => self.read_raw(raw_len, decode)?,
            BLOCK_ZSTD => self.read_zstd(raw_len, decode)?,
            BLOCK_REF => {
                let id = self.array::<CHUNK_ID_LEN>()?;
                let len = u32::try_from(raw_len).unwrap_or(u32::MAX);
                self.chunk = Some(ChunkRef { id, len });
            }
            _ => {
                return Err(ArchiveError::malformed(format!(
                    "unknown block type {kind:#04x}"
                )));
            }
        }
        self.state = State::Data {
            remaining: remaining - raw_len as u64,
        };
        Ok(true)
    }

    fn block_len(&mut self) -> Result<usize, ArchiveError> {
        self.length_up_to(MAX_BLOCK_SIZE)
    }

    fn length_up_to(&mut self, max: usize) -> Result<usize, ArchiveError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if len == 0 || len > max {
            return Err(ArchiveError::malformed("block length out of range"));
        }
        Ok(len)
    }

    fn read_raw(&mut self, len: usize, decode: bool) -> Result<(), ArchiveError> {
        let mut block = std::mem::take(&mut self.block);
        block.resize(len, 0);
        let result = self.fill(&mut block);
        if !decode {
            block.clear();
        }
        self.block = block;
        result
    }

    fn read_zstd(&mut self, raw_len: usize, decode: bool) -> Result<(), ArchiveError> {
        let stored_len = self.block_len()?;
        if stored_len >= raw_len {
            return Err(ArchiveError::malformed(
                "compressed block is not smaller than its data",
            ));
        }
        let mut stored = std::mem::take(&mut self.stored);
        stored.resize(stored_len, 0);
        self.fill(&mut stored)?;
        self.stored = stored;
        if decode {
            self.decompress(raw_len)?;
        }
        Ok(())
    }

    fn decompress(&mut self, raw_len: usize) -> Result<(), ArchiveError> {
        let corrupt = |_| ArchiveError::malformed("corrupt compressed block");
        let decompressor = match &mut self.decompressor {
            Some(d) => d,
            slot => slot.insert(zstd::bulk::Decompressor::new().map_err(corrupt)?),
        };
        self.block.clear();
        self.block.reserve_exact(raw_len);
        // Output is capped at the buffer's capacity: a bomb fails instead of growing memory.
        let written = decompressor
            .decompress_to_buffer(&self.stored, &mut self.block)
            .map_err(corrupt)?;
        if written != raw_len || self.block.len() != raw_len {
            return Err(ArchiveError::malformed(
                "compressed block has the wrong length",
            ));
        }
        Ok(())
    }

    fn expect_eof(&mut self) -> Result<(), ArchiveError> {
        let mut probe = [0u8; 1];
        loop {
            match self.input.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(ArchiveError::malformed(
                        "trailing data after end of archive",
                    ));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::Input(e)),
            }
        }
    }

    /// Like `read_exact`, but end-of-file is [`ArchiveError::Truncated`] and input errors are
    /// passed on unchanged.
    fn fill(&mut self, mut buf: &mut [u8]) -> Result<(), ArchiveError> {
        while !buf.is_empty() {
            match self.input.read(buf) {
                Ok(0) => return Err(ArchiveError::Truncated),
                Ok(n) => {
                    let n = n.min(buf.len());
                    self.bytes_read += n as u64;
                    buf = &mut buf[n..];
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::Input(e)),
            }
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ArchiveError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8, ArchiveError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, ArchiveError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ArchiveError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, ArchiveError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, ArchiveError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len > MAX_PATH_LEN {
            return Err(ArchiveError::UnsafePath("(longer than 4096 bytes)".into()));
        }
        let mut buf = vec![0u8; len];
        self.fill(&mut buf)?;
        Ok(buf)
    }
}
