//! `write_dir` and `scan_size`: turn a directory tree into an archive stream.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::ArchiveError;
use crate::chunks::{ChunkRef, ChunkSink, FileToChunk};
use crate::format::{
    BLOCK_END, BLOCK_RAW, BLOCK_REF, BLOCK_ZSTD, MAGIC, MAX_BLOCK_SIZE, MAX_CHUNK_SIZE,
    MAX_PATH_LEN, MODE_MASK, Mtime, TAG_DIR, TAG_END, TAG_FILE, TAG_HARDLINK, TAG_SYMLINK,
    TREE_MAGIC, TREE_VERSION, VERSION, encode_bytes, encode_common,
};
use crate::walk::{Node, Walker};

/// Extensions of already-compressed formats: their blocks are stored without trying zstd.
const MEDIA_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "heic", "heif", "avif", "mp4", "m4v", "mov", "mkv",
    "webm", "avi", "m4a", "mp3", "aac", "opus", "ogg", "oga", "flac", "zip", "gz", "tgz", "bz2",
    "xz", "zst", "7z", "rar", "br", "lz4", "jxl", "pdf", "docx", "xlsx", "pptx", "apk", "jar",
];
/// A compressed block is kept only if it is at most this percentage of the input.
const KEEP_PERCENT: usize = 97;
/// Blocks at the start of a file that may fail to compress before we stop trying.
const PROBE_BLOCKS: u32 = 2;
/// Once given up, one block in this many is tried again, so a file whose data turns
/// compressible (an archive of a photo and a text log) is compressed again.
const REPROBE_EVERY: u32 = 16;

/// How [`write_dir`] encodes file data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// zstd level (1..=19 sensible; default 3).
    pub compression_level: i32,
    /// Uncompressed bytes per block, 1..=[`MAX_BLOCK_SIZE`] (default 256 KiB).
    pub block_size: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression_level: 3,
            block_size: 256 * 1024,
        }
    }
}

/// Counters of one archive or restore run.
///
/// `write_dir`: `bytes_in` = file bytes read, `bytes_out` = archive bytes written.
/// `restore`: `bytes_in` = archive bytes read, `bytes_out` = file bytes written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Objects that were not archived (fifos, sockets, devices).
    pub skipped: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Entries deleted during the walk (both formats), and in trees also files that vanished
    /// before their read or kept changing while read (after [`READ_ATTEMPTS`] reads); none of
    /// them is in the output.
    pub vanished: u64,
    pub changing: u64,
    /// Trees only: further names of files already in the tree, kept as hard links.
    pub hardlinks: u64,
}

/// Times a tree reads a file that changes while it is read before leaving it out.
pub const READ_ATTEMPTS: usize = 3;

/// Total size of the regular files below `root` (symlinks not followed), for a progress bar.
pub fn scan_size(root: &Path) -> Result<u64, ArchiveError> {
    let mut walker = Walker::new(root)?;
    let mut total = 0u64;
    while let Some(node) = walker.next_node()? {
        if node.meta.is_file() {
            total = total.saturating_add(node.meta.len());
        }
    }
    Ok(total)
}

/// Archive the tree below `root` into `out`, returning `out` and the counters. `progress` is
/// called with the number of file bytes read so far. Symlinks are stored, never followed; other
/// special files are skipped with a warning. `root`'s own metadata is not stored.
pub fn write_dir<W: Write>(
    root: &Path,
    out: W,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, ArchiveStats), ArchiveError> {
    if opts.block_size == 0 || opts.block_size > MAX_BLOCK_SIZE {
        return Err(ArchiveError::InvalidOptions(
            "block size must be 1 byte to 1 MiB",
        ));
    }
    let compressor = zstd::bulk::Compressor::new(opts.compression_level)
        .map_err(|_| ArchiveError::InvalidOptions("unsupported zstd compression level"))?;
    let w = Encoder::new(out, opts.block_size, compressor);
    w.write(root, (&MAGIC, VERSION), progress)
}

/// Write the tree below `root` into `out`: the same walk and entries as [`write_dir`], but
/// each regular file's data goes to `sink`, and the tree records the chunk references it
/// gives back. Returns `out` and the counters (`bytes_in` = file bytes chunked or reused).
pub fn write_tree<W: Write>(
    root: &Path,
    out: W,
    sink: &mut dyn ChunkSink,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, ArchiveStats), ArchiveError> {
    let w = Encoder::with_body(
        out,
        Body::Chunks {
            sink,
            refs: Vec::new(),
            links: std::collections::HashMap::new(),
        },
    );
    w.write(root, (&TREE_MAGIC, TREE_VERSION), progress)
}

struct Encoder<'a, W> {
    out: W,
    stats: ArchiveStats,
    frame: Vec<u8>,
    body: Body<'a>,
}

/// How file data are written: as blocks of the data, or as chunk references.
enum Body<'a> {
    Blocks(BlockCoder),
    Chunks {
        sink: &'a mut dyn ChunkSink,
        refs: Vec<ChunkRef>,
        /// Files with more than one name, by (device, inode), to the first name written.
        links: std::collections::HashMap<(u64, u64), Vec<u8>>,
    },
}

struct BlockCoder {
    block_size: usize,
    compressor: zstd::bulk::Compressor<'static>,
    input: Vec<u8>,
    packed: Vec<u8>,
}

impl<'a, W: Write> Encoder<'a, W> {
    fn new(out: W, block_size: usize, compressor: zstd::bulk::Compressor<'static>) -> Self {
        Self::with_body(
            out,
            Body::Blocks(BlockCoder {
                block_size,
                compressor,
                input: vec![0; block_size],
                packed: Vec::with_capacity(block_size),
            }),
        )
    }

    fn with_body(out: W, body: Body<'a>) -> Self {
        Encoder {
            out,
            stats: ArchiveStats::default(),
            frame: Vec::new(),
            body,
        }
    }

    fn write(
        mut self,
        root: &Path,
        (magic, version): (&[u8; 8], u8),
        progress: &mut dyn FnMut(u64),
    ) -> Result<(W, ArchiveStats), ArchiveError> {
        let mut walker = Walker::new(root)?;
        emit(&mut self.out, &mut self.stats, magic)?;
        emit(&mut self.out, &mut self.stats, &[version])?;
        while let Some(node) = walker.next_node()? {
            self.entry(&node, progress)?;
        }
        self.stats.vanished += walker.vanished;
        emit(&mut self.out, &mut self.stats, &[TAG_END])?;
        self.out.flush().map_err(ArchiveError::Output)?;
        Ok((self.out, self.stats))
    }

    fn entry(&mut self, node: &Node, progress: &mut dyn FnMut(u64)) -> Result<(), ArchiveError> {
        let ft = node.meta.file_type();
        let frame = &mut self.frame;
        frame.clear();
        if ft.is_dir() {
            encode_common(
                frame,
                TAG_DIR,
                &node.rel,
                mode(&node.meta),
                mtime(&node.meta),
            );
            self.stats.dirs += 1;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&node.full).map_err(ArchiveError::io(&node.full))?;
            let target = target.as_os_str().as_bytes();
            if target.len() > MAX_PATH_LEN {
                return Err(ArchiveError::PathTooLong(node.full.clone()));
            }
            encode_common(frame, TAG_SYMLINK, &node.rel, 0o777, mtime(&node.meta));
            encode_bytes(frame, target);
            self.stats.symlinks += 1;
        } else if ft.is_file() && matches!(self.body, Body::Chunks { .. }) {
            return self.chunked_file(node, progress);
        } else if ft.is_file() {
            // Open before writing the header so an unreadable file fails with its path.
            let file = open_walked_file(node)?;
            encode_common(
                frame,
                TAG_FILE,
                &node.rel,
                mode(&node.meta),
                mtime(&node.meta),
            );
            frame.extend_from_slice(&node.meta.len().to_be_bytes());
            emit(&mut self.out, &mut self.stats, frame)?;
            self.stats.files += 1;
            return self.file_data(node, file, progress);
        } else {
            tracing::warn!(path = ?node.full, "skipping special file (not archived)");
            self.stats.skipped += 1;
        }
        emit(&mut self.out, &mut self.stats, frame)
    }

    fn file_data(
        &mut self,
        node: &Node,
        file: File,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ArchiveError> {
        match &mut self.body {
            Body::Blocks(coder) => {
                let sink = Emit {
                    out: &mut self.out,
                    stats: &mut self.stats,
                    frame: &mut self.frame,
                };
                coder.file_data(node, file, sink, progress)?;
            }
            Body::Chunks { .. } => unreachable!("tree files go through chunked_file"),
        }
        emit(&mut self.out, &mut self.stats, &[BLOCK_END])
    }

    /// A regular file of a tree: read into chunks first, then written with the size, mode and
    /// time it had while it was read. A file that changes while read is read again, up to
    /// [`READ_ATTEMPTS`] times; one that vanished, or kept changing, is left out of the tree,
    /// counted and logged, never cut short.
    fn chunked_file(
        &mut self,
        node: &Node,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ArchiveError> {
        let Body::Chunks { sink, refs, links } = &mut self.body else {
            unreachable!("only trees have chunks");
        };
        let inode = (node.meta.dev(), node.meta.ino());
        if node.meta.nlink() > 1
            && let Some(target) = links.get(&inode)
        {
            let frame = &mut self.frame;
            frame.clear();
            encode_common(
                frame,
                TAG_HARDLINK,
                &node.rel,
                mode(&node.meta),
                mtime(&node.meta),
            );
            encode_bytes(frame, target);
            self.stats.hardlinks += 1;
            return emit(&mut self.out, &mut self.stats, frame);
        }
        for _ in 0..READ_ATTEMPTS {
            let (file, meta) = match open_again(node)? {
                Reopened::File(file, meta) => (file, meta),
                Reopened::Gone => {
                    tracing::warn!(path = ?node.full, "file vanished during the backup; not in the snapshot");
                    self.stats.vanished += 1;
                    return Ok(());
                }
            };
            if !read_chunks(node, &meta, file, &mut **sink, refs)? {
                continue;
            }
            let frame = &mut self.frame;
            frame.clear();
            encode_common(frame, TAG_FILE, &node.rel, mode(&meta), mtime(&meta));
            frame.extend_from_slice(&meta.len().to_be_bytes());
            emit(&mut self.out, &mut self.stats, frame)?;
            for chunk in refs.iter() {
                frame.clear();
                frame.push(BLOCK_REF);
                frame.extend_from_slice(&chunk.len.to_be_bytes());
                frame.extend_from_slice(&chunk.id);
                emit(&mut self.out, &mut self.stats, frame)?;
            }
            self.stats.files += 1;
            self.stats.bytes_in += meta.len();
            progress(self.stats.bytes_in);
            if meta.nlink() > 1 {
                links.insert((meta.dev(), meta.ino()), node.rel.clone());
            }
            return emit(&mut self.out, &mut self.stats, &[BLOCK_END]);
        }
        tracing::warn!(path = ?node.full, "file kept changing while it was read; not in the snapshot");
        self.stats.changing += 1;
        Ok(())
    }
}

/// A walked file opened again for reading.
enum Reopened {
    File(File, Metadata),
    /// Gone, or no longer a regular file.
    Gone,
}

fn open_again(node: &Node) -> Result<Reopened, ArchiveError> {
    let file = match open_nofollow(&node.full) {
        Ok(file) => file,
        // ELOOP: replaced by a symlink since the walk.
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(40) => {
            return Ok(Reopened::Gone);
        }
        Err(e) => return Err(ArchiveError::io(&node.full)(e)),
    };
    let meta = file.metadata().map_err(ArchiveError::io(&node.full))?;
    // Another inode at the path is not the file the walk saw (a link to something outside the
    // tree may have been put there): that file is gone.
    if !meta.is_file() || meta.ino() != node.meta.ino() || meta.dev() != node.meta.dev() {
        return Ok(Reopened::Gone);
    }
    Ok(Reopened::File(file, meta))
}

/// Whether two looks at a file saw the same content: size, times and identity.
fn unchanged(a: &Metadata, b: &Metadata) -> bool {
    (
        a.len(),
        a.mtime(),
        a.mtime_nsec(),
        a.ctime(),
        a.ctime_nsec(),
        a.ino(),
        a.dev(),
    ) == (
        b.len(),
        b.mtime(),
        b.mtime_nsec(),
        b.ctime(),
        b.ctime_nsec(),
        b.ino(),
        b.dev(),
    )
}

/// The output and its counters, lent to whatever writes file data.
struct Emit<'o, W> {
    out: &'o mut W,
    stats: &'o mut ArchiveStats,
    frame: &'o mut Vec<u8>,
}

impl<W: Write> Emit<'_, W> {
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        emit(self.out, self.stats, bytes)
    }

    fn frame(&mut self) -> Result<(), ArchiveError> {
        emit(self.out, self.stats, self.frame)
    }
}

/// Hands a file, as `meta` describes it, to the sink. False if the file changed while read
/// (fewer bytes than its size, or other size, times or identity afterwards): its chunks are
/// not to be used.
fn read_chunks(
    node: &Node,
    meta: &Metadata,
    file: File,
    sink: &mut dyn ChunkSink,
    refs: &mut Vec<ChunkRef>,
) -> Result<bool, ArchiveError> {
    let size = meta.len();
    let mut data = Counted {
        inner: (&file).take(size),
        read: 0,
    };
    refs.clear();
    let info = FileToChunk {
        path: &node.full,
        rel: &node.rel,
        meta,
    };
    sink.chunk_file(&info, &mut data, refs)?;
    let after = file.metadata().map_err(ArchiveError::io(&node.full))?;
    if (data.read != 0 && data.read != size) || !unchanged(meta, &after) {
        return Ok(false);
    }
    let total: u64 = refs.iter().map(|r| u64::from(r.len)).sum();
    let bad_len = refs
        .iter()
        .any(|r| r.len == 0 || r.len as usize > MAX_CHUNK_SIZE);
    if total != size || bad_len {
        return Err(ArchiveError::Chunks(
            format!(
                "the chunk store returned {} bytes of chunks for {:?}, which has {size}",
                total, node.full
            )
            .into(),
        ));
    }
    Ok(true)
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl BlockCoder {
    fn file_data<W: Write>(
        &mut self,
        node: &Node,
        file: File,
        mut out: Emit<'_, W>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ArchiveError> {
        let mut remaining = node.meta.len();
        let mut reader = file.take(remaining);
        let mut policy = CompressPolicy::for_path(&node.full);
        while remaining > 0 {
            let want =
                usize::try_from(remaining).map_or(self.block_size, |r| r.min(self.block_size));
            reader
                .read_exact(&mut self.input[..want])
                .map_err(|e| match e.kind() {
                    ErrorKind::UnexpectedEof => ArchiveError::FileChanged(node.full.clone()),
                    _ => ArchiveError::io(&node.full)(e),
                })?;
            remaining -= want as u64;
            self.block(want, &mut policy, &mut out)?;
            out.stats.bytes_in += want as u64;
            progress(out.stats.bytes_in);
        }
        Ok(())
    }

    fn block<W: Write>(
        &mut self,
        len: usize,
        policy: &mut CompressPolicy,
        out: &mut Emit<'_, W>,
    ) -> Result<(), ArchiveError> {
        let compressed = policy.should_try() && self.try_compress(len);
        policy.record(compressed);
        let (kind, payload) = if compressed {
            (BLOCK_ZSTD, &self.packed[..])
        } else {
            (BLOCK_RAW, &self.input[..len])
        };
        out.frame.clear();
        out.frame.push(kind);
        out.frame.extend_from_slice(&be_u32(len));
        if compressed {
            out.frame.extend_from_slice(&be_u32(payload.len()));
        }
        out.frame()?;
        out.bytes(payload)
    }

    /// Compress into a buffer capped at the size worth keeping: too big fails, so we store raw.
    fn try_compress(&mut self, len: usize) -> bool {
        let limit = len * KEEP_PERCENT / 100;
        self.packed.clear();
        self.packed.reserve_exact(limit);
        let mut out = std::mem::take(&mut self.packed);
        let ok = self
            .compressor
            .compress_to_buffer(&self.input[..len], &mut out)
            .is_ok()
            && !out.is_empty()
            && out.len() <= limit;
        self.packed = out;
        ok
    }
}

/// Whether a file's data may be worth compressing: false for known media and archive
/// extensions, which are compressed already.
pub fn worth_compressing(path: &Path) -> bool {
    !path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MEDIA_EXTENSIONS.iter().any(|m| m.eq_ignore_ascii_case(e)))
}

/// Per-file decision whether to try zstd on the next block (or chunk): not for known media,
/// and, after the file's first blocks failed to shrink, only one block in [`REPROBE_EVERY`]:
/// what starts incompressible (random-looking media under an unknown extension) mostly stays
/// so, and zstd's search costs as much on it as on text. A re-tried block that shrinks turns
/// compression back on for the rest of the file.
#[derive(Debug)]
pub struct CompressPolicy {
    enabled: bool,
    blocks: u32,
    failures: u32,
    skipped: u32,
}

impl CompressPolicy {
    pub fn for_path(path: &Path) -> Self {
        CompressPolicy {
            enabled: worth_compressing(path),
            blocks: 0,
            failures: 0,
            skipped: 0,
        }
    }

    pub fn should_try(&self) -> bool {
        self.enabled && (!self.gave_up() || self.skipped >= REPROBE_EVERY)
    }

    fn gave_up(&self) -> bool {
        self.failures >= PROBE_BLOCKS
    }

    /// Counts the next block (`compressed`: it was tried and shrank enough to be kept so).
    pub fn record(&mut self, compressed: bool) {
        let tried = self.should_try();
        if self.gave_up() {
            match (tried, compressed) {
                (false, _) => self.skipped += 1,
                (true, true) => self.failures = 0,
                (true, false) => self.skipped = 0,
            }
        } else if self.blocks < PROBE_BLOCKS && !compressed {
            self.failures += 1;
        }
        self.blocks = self.blocks.saturating_add(1);
    }
}

/// Writes `bytes` to the archive and counts them.
fn emit(out: &mut impl Write, stats: &mut ArchiveStats, bytes: &[u8]) -> Result<(), ArchiveError> {
    out.write_all(bytes).map_err(ArchiveError::Output)?;
    stats.bytes_out += bytes.len() as u64;
    Ok(())
}

/// A block length field (lengths are at most [`MAX_BLOCK_SIZE`]).
fn be_u32(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

fn mode(meta: &Metadata) -> u32 {
    meta.permissions().mode() & MODE_MASK
}

fn mtime(meta: &Metadata) -> Mtime {
    let nanos = u32::try_from(meta.mtime_nsec())
        .unwrap_or(0)
        .min(999_999_999);
    Mtime {
        secs: meta.mtime(),
        nanos,
    }
}

/// Opens `path` for reading without following a symlink or blocking on a FIFO
/// (O_NOFOLLOW | O_NONBLOCK).
fn open_nofollow(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags as i32)
        .open(path)
}

/// Opens the regular file the walk saw, without following a symlink or blocking on a FIFO that
/// was swapped in since (O_NOFOLLOW | O_NONBLOCK), and checks it is still the same inode: a
/// file replaced during the backup must not pull in data from outside the tree.
fn open_walked_file(node: &Node) -> Result<File, ArchiveError> {
    use std::os::unix::fs::MetadataExt;
    let file = open_nofollow(&node.full).map_err(ArchiveError::io(&node.full))?;
    let now = file.metadata().map_err(ArchiveError::io(&node.full))?;
    if !now.is_file() || now.ino() != node.meta.ino() || now.dev() != node.meta.dev() {
        return Err(ArchiveError::FileChanged(node.full.clone()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {

    fn walked(path: &std::path::Path) -> Node {
        Node {
            rel: b"f".to_vec(),
            full: path.to_path_buf(),
            meta: std::fs::symlink_metadata(path).unwrap(),
        }
    }

    #[test]
    fn a_file_swapped_after_the_walk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (f, outside) = (dir.path().join("f"), dir.path().join("outside"));
        std::fs::write(&f, b"chat").unwrap();
        std::fs::write(&outside, b"secret outside the tree").unwrap();
        assert!(open_walked_file(&walked(&f)).is_ok());
        // Replaced by a symlink: O_NOFOLLOW refuses to open it.
        // (The original is renamed away, not deleted, so its inode number cannot be reused.)
        let node = walked(&f);
        std::fs::rename(&f, dir.path().join("f.old")).unwrap();
        std::os::unix::fs::symlink(&outside, &f).unwrap();
        assert!(open_walked_file(&node).is_err());
        // Replaced by another regular file: a different inode.
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, b"other").unwrap();
        let err = open_walked_file(&node).unwrap_err();
        assert!(matches!(err, ArchiveError::FileChanged(_)), "{err:?}");
    }

    use super::*;

    #[test]
    fn a_file_that_shrank_after_the_walk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        let node = walked(&f);
        std::fs::write(&f, b"01234").unwrap();
        let compressor = zstd::bulk::Compressor::new(3).unwrap();
        let mut w = Encoder::new(Vec::new(), 4, compressor);
        let err = w.entry(&node, &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, ArchiveError::FileChanged(ref p) if *p == f),
            "{err:?}"
        );
    }

    #[test]
    fn policy_skips_media_and_gives_up_after_two_failures() {
        assert!(!CompressPolicy::for_path(Path::new("a/b.JPG")).should_try());
        assert!(CompressPolicy::for_path(Path::new("a/b.txt")).should_try());

        let mut p = CompressPolicy::for_path(Path::new("x.bin"));
        p.record(false);
        assert!(p.should_try());
        p.record(false);
        assert!(!p.should_try());

        let mut p = CompressPolicy::for_path(Path::new("x.bin"));
        p.record(true);
        p.record(false);
        for _ in 0..5 {
            p.record(false);
        }
        assert!(
            p.should_try(),
            "failures after the first two blocks do not stop compression"
        );
    }

    #[test]
    fn policy_tries_again_now_and_then_and_resumes_when_data_shrinks() {
        let mut p = CompressPolicy::for_path(Path::new("bundle.tar"));
        p.record(false);
        p.record(false);
        let mut tried = Vec::new();
        for _ in 0..2 * REPROBE_EVERY + 2 {
            tried.push(p.should_try());
            p.record(false);
        }
        assert_eq!(tried.iter().filter(|t| **t).count(), 2, "{tried:?}");
        while !p.should_try() {
            p.record(false);
        }
        p.record(true);
        for _ in 0..5 {
            assert!(
                p.should_try(),
                "a block that shrank turns compression back on"
            );
            p.record(false);
        }
    }
}
