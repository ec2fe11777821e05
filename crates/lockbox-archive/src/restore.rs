//! `restore`: extract an archive stream into a fresh directory, atomically.

use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::chunks::ChunkSource;
use crate::format::Mtime;
use crate::mount;
use crate::partial::{self, parent_of};
use crate::reader::{ArchiveReader, Entry, EntryKind, Flavor};
use crate::{ArchiveError, ArchiveStats};

/// Restored permission bits: setuid and setgid are dropped, a restore never creates set-id
/// programs from archive data.
const RESTORE_MODE_MASK: u32 = 0o1777;

/// Extract the archive read from `input` into `dest`, which must be missing or an empty
/// directory (its parent must exist). `progress` gets the file bytes written so far.
///
/// Everything goes into a temporary directory beside `dest` (mode 0700, which the restored root
/// keeps), renamed onto `dest` only after the end-of-archive record was read and `input`
/// reported end-of-file. On any error the temporary directory is removed and `dest` is left as
/// it was. Leftovers of killed restores and decrypts beside `dest` are removed first
/// ([`crate::partial::sweep`]).
pub fn restore<R: Read>(
    input: R,
    dest: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStats, ArchiveError> {
    restore_with(input, dest, &mut Body::Inline, None, progress)
}

/// [`restore`] for a tree: each file's data comes from `source`, chunk by chunk, in the order
/// the tree lists them. Same atomicity and safety.
pub fn restore_tree<R: Read>(
    input: R,
    dest: &Path,
    source: &mut dyn ChunkSource,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStats, ArchiveError> {
    restore_tree_part(input, dest, source, None, progress)
}

/// [`restore_tree`] of only the entry at `part` (a tree path, '/'-separated bytes) and what is
/// below it, with the directories above it; the rest of the tree is read and checked, its data
/// never asked for. A `part` the tree does not hold is [`ArchiveError::NotInArchive`], and
/// nothing is left behind.
pub fn restore_tree_part<R: Read>(
    input: R,
    dest: &Path,
    source: &mut dyn ChunkSource,
    part: Option<&[u8]>,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStats, ArchiveError> {
    let mut body = Body::Chunks {
        source,
        buf: Vec::new(),
    };
    restore_with(input, dest, &mut body, part, progress)
}

/// Whether `path` is restored when only `part` is: it, what is below it, what is above it.
pub fn in_part(path: &[u8], part: &[u8]) -> bool {
    let below = |a: &[u8], b: &[u8]| a.len() > b.len() && a.starts_with(b) && a[b.len()] == b'/';
    path == part || below(path, part) || below(part, path)
}

/// Where restored file data come from.
enum Body<'a> {
    /// From the archive's own blocks.
    Inline,
    /// From a chunk source, as the tree's references name them.
    Chunks {
        source: &'a mut dyn ChunkSource,
        buf: Vec<u8>,
    },
}

impl Body<'_> {
    fn flavor(&self) -> Flavor {
        match self {
            Body::Inline => Flavor::Archive,
            Body::Chunks { .. } => Flavor::Tree,
        }
    }

    /// The next piece of the current file, `None` at its end.
    fn next_piece<'b, R: Read>(
        &'b mut self,
        reader: &'b mut ArchiveReader<R>,
    ) -> Result<Option<&'b [u8]>, ArchiveError> {
        match self {
            Body::Inline => reader.read_block(),
            Body::Chunks { source, buf } => {
                let Some(chunk) = reader.read_ref()? else {
                    return Ok(None);
                };
                source.read_chunk(&chunk, buf)?;
                if buf.len() != chunk.len as usize {
                    return Err(ArchiveError::Chunks(
                        format!(
                            "chunk store gave {} bytes for a chunk of {}",
                            buf.len(),
                            chunk.len
                        )
                        .into(),
                    ));
                }
                Ok(Some(buf.as_slice()))
            }
        }
    }
}

fn restore_with<R: Read>(
    input: R,
    dest: &Path,
    body: &mut Body<'_>,
    part: Option<&[u8]>,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStats, ArchiveError> {
    check_destination(dest)?;
    partial::sweep(parent_of(dest));
    let staging = Staging::create(dest)?;
    let stats = extract(input, &staging.path, body, part, progress)?;
    staging.commit(dest)?;
    Ok(stats)
}

/// Whether `restore` would accept `dest` (absent, or an empty directory that is not a mount
/// point), so a caller can refuse before spending anything on a download or a password attempt.
/// `restore` checks again.
pub fn check_destination(dest: &Path) -> Result<(), ArchiveError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ArchiveError::io(dest)(e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(ArchiveError::io(dest))?;
            if entries.next().is_some() {
                return Err(ArchiveError::DestinationNotEmpty(dest.to_path_buf()));
            }
            // The tree is staged beside `dest` and renamed onto it, which a mount point refuses
            // (EBUSY): say so now, not after writing the whole tree.
            if mount::is_mount_point(dest)? {
                return Err(ArchiveError::DestinationIsMountPoint(dest.to_path_buf()));
            }
            Ok(())
        }
        Ok(_) => Err(ArchiveError::DestinationNotEmpty(dest.to_path_buf())),
    }
}

/// The `.NAME.lockbox-partial-XXXX` directory, locked while this restore lives; removed on drop
/// unless committed.
struct Staging {
    path: PathBuf,
    /// The staging directory, opened (and locked) when it was made.
    dir: File,
    committed: bool,
}

impl Staging {
    fn create(dest: &Path) -> Result<Self, ArchiveError> {
        let (path, lock) = partial::staging_dir(dest).map_err(ArchiveError::io(parent_of(dest)))?;
        Ok(Staging {
            path,
            dir: lock,
            committed: false,
        })
    }

    /// Makes the restored tree durable, then moves it into place and makes the move durable:
    /// after a crash, `dest` is either absent or complete, never a tree of empty files.
    fn commit(mut self, dest: &Path) -> Result<(), ArchiveError> {
        // One syncfs flushes every restored file and directory at once (per-file fsync would
        // cost a disk round trip per photo). Through the handle opened before the first file
        // was written: Linux reports a write-back error to syncfs only on handles older than
        // the error, and each file's write-back has been under way since it was written.
        rustix::fs::syncfs(&self.dir).map_err(|e| ArchiveError::io(&self.path)(e.into()))?;
        fs::rename(&self.path, dest).map_err(ArchiveError::io(dest))?;
        self.committed = true;
        // The restore is complete and in place; a failure to persist the rename itself is only
        // worth a warning (after a crash the tree would be back under its partial name).
        let parent = parent_of(dest);
        if let Err(e) = fs::File::open(parent).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = ?parent, error = %e, "could not sync the directory entry of the restore");
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(e) = partial::remove_tree(&self.path) {
            tracing::warn!(path = ?self.path, error = %e, "could not remove partial restore");
        }
    }
}

/// A directory created by this restore, whose mode and mtime are applied after its children.
struct PendingDir {
    path: PathBuf,
    mode: u32,
    mtime: Mtime,
}

fn extract<R: Read>(
    input: R,
    root: &Path,
    body: &mut Body<'_>,
    part: Option<&[u8]>,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStats, ArchiveError> {
    // Headers are parsed with small reads; buffer them (errors still pass through unchanged).
    let buffered = std::io::BufReader::with_capacity(64 * 1024, input);
    let mut reader = ArchiveReader::open(buffered, body.flavor())?;
    let mut stats = ArchiveStats::default();
    let mut dirs = Vec::new();
    // The reader guarantees each entry's parent is a directory entry before it, which was
    // created here: nothing is placed under a symlink or outside `root`.
    let mut found = part.is_none();
    while let Some(entry) = reader.next_entry()? {
        if let Some(part) = part {
            // Skipped entries are still read and checked; their data are passed over unread.
            if !in_part(entry.path_bytes(), part) {
                continue;
            }
            found |= entry.path_bytes().len() >= part.len();
        }
        let path = root.join(entry.path());
        match &entry.kind {
            EntryKind::Directory => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(ArchiveError::io(&path))?;
                dirs.push(PendingDir {
                    path,
                    mode: entry.mode,
                    mtime: entry.mtime,
                });
                stats.dirs += 1;
            }
            EntryKind::File { .. } => {
                write_file(&mut reader, body, &entry, &path, &mut stats, progress)?;
                stats.files += 1;
            }
            EntryKind::Symlink { target } => {
                restore_symlink(target, &path, entry.mtime)?;
                stats.symlinks += 1;
            }
            EntryKind::HardLink { target } => {
                // The reader vouches that `target` is an earlier file entry, which this
                // restore created below `root` (create_new, never through a symlink).
                use std::os::unix::ffi::OsStrExt;
                let target = root.join(std::ffi::OsStr::from_bytes(target));
                std::fs::hard_link(&target, &path).map_err(ArchiveError::io(&path))?;
                stats.hardlinks += 1;
            }
        }
    }
    if !found {
        return Err(ArchiveError::NotInArchive(
            String::from_utf8_lossy(part.unwrap_or_default()).into_owned(),
        ));
    }
    stats.bytes_in = reader.bytes_read();
    for dir in dirs.iter().rev() {
        let file = File::open(&dir.path).map_err(ArchiveError::io(&dir.path))?;
        set_metadata(&file, &dir.path, dir.mode, dir.mtime)?;
    }
    Ok(stats)
}

/// Bytes handed to one `write`. Linux (6.x, ext4) caches a multi-MiB write in large folios,
/// and in a VM whose balloon hands free memory back to the host those come from memory the host
/// must fault in page by page: restoring in 1 MiB writes took twice the system time of 128 KiB
/// writes here (docs/benchmarks.md), which the kernel caches in small folios it reuses.
const WRITE_PIECE: usize = 128 << 10;

fn write_file<R: Read>(
    reader: &mut ArchiveReader<R>,
    body: &mut Body<'_>,
    entry: &Entry,
    path: &Path,
    stats: &mut ArchiveStats,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ArchiveError> {
    // create_new: never follows a symlink nor overwrites anything already there.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(ArchiveError::io(path))?;
    while let Some(block) = body.next_piece(reader)? {
        for piece in block.chunks(WRITE_PIECE) {
            file.write_all(piece).map_err(ArchiveError::io(path))?;
        }
        stats.bytes_out += block.len() as u64;
        progress(stats.bytes_out);
    }
    start_writeback(&file);
    set_metadata(&file, path, entry.mode, entry.mtime)
}

/// Asks the kernel to start writing `file` to disk now, without waiting: the commit's syncfs
/// then finds most of the restore already on its way instead of flushing it all at the end. On
/// Linux, `POSIX_FADV_DONTNEED` starts writeback of dirty pages (and drops clean ones from the
/// cache, which a restored file has no more use for). Only a hint: durability is still the
/// commit's syncfs, so a refusal changes nothing.
fn start_writeback(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

fn set_metadata(file: &File, path: &Path, mode: u32, mtime: Mtime) -> Result<(), ArchiveError> {
    let perms = Permissions::from_mode(mode & RESTORE_MODE_MASK);
    file.set_permissions(perms)
        .map_err(ArchiveError::io(path))?;
    if let Some(time) = mtime.to_system_time() {
        file.set_times(FileTimes::new().set_modified(time))
            .map_err(ArchiveError::io(path))?;
    }
    Ok(())
}

fn restore_symlink(target: &[u8], path: &Path, mtime: Mtime) -> Result<(), ArchiveError> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT, utimensat};
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::OsStr::from_bytes(target);
    std::os::unix::fs::symlink(target, path).map_err(ArchiveError::io(path))?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime.secs,
            tv_nsec: i64::from(mtime.nanos),
        },
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| ArchiveError::io(path)(e.into()))
}
