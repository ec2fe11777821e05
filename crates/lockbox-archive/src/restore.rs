//! `restore`: extract an archive stream into a fresh directory, atomically.

use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::format::Mtime;
use crate::reader::{ArchiveReader, Entry, EntryKind};
use crate::{ArchiveError, ArchiveStats};

/// Restored permission bits: setuid and setgid are dropped, a restore never creates set-id
/// programs from archive data.
const RESTORE_MODE_MASK: u32 = 0o1777;

/// Extract the archive read from `input` into `dest`, which must be missing or an empty
/// directory (its parent must exist). `progress` gets the file bytes written so far.
///
/// Everything goes into a temporary directory beside `dest`, renamed onto `dest` only after the
/// end-of-archive record was read and `input` reported end-of-file. On any error the temporary
/// directory is removed and `dest` is left as it was.
pub fn restore<R: Read>(
    input: R,
    dest: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStats, ArchiveError> {
    check_destination(dest)?;
    let staging = Staging::create(dest)?;
    let stats = extract(input, &staging.path, progress)?;
    staging.commit(dest)?;
    Ok(stats)
}

/// Whether `restore` would accept `dest` (absent, or an empty directory), so a caller can
/// refuse before spending anything on a download or a password attempt. `restore` checks again.
pub fn check_destination(dest: &Path) -> Result<(), ArchiveError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ArchiveError::io(dest)(e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(ArchiveError::io(dest))?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(ArchiveError::DestinationNotEmpty(dest.to_path_buf())),
            }
        }
        Ok(_) => Err(ArchiveError::DestinationNotEmpty(dest.to_path_buf())),
    }
}

/// The `.NAME.lockbox-partial-XXXX` directory; removed on drop unless committed.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(dest: &Path) -> Result<Self, ArchiveError> {
        let name = dest
            .file_name()
            .ok_or_else(|| ArchiveError::io(dest)(std::io::ErrorKind::InvalidInput.into()))?;
        let parent = parent_of(dest);
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".lockbox-partial-");
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(parent)
            .map_err(ArchiveError::io(parent))?;
        Ok(Staging {
            path: dir.keep(),
            committed: false,
        })
    }

    /// Makes the restored tree durable, then moves it into place and makes the move durable:
    /// after a crash, `dest` is either absent or complete, never a tree of empty files.
    fn commit(mut self, dest: &Path) -> Result<(), ArchiveError> {
        // One syncfs flushes every restored file and directory at once (per-file fsync would
        // cost a disk round trip per photo).
        let staged = fs::File::open(&self.path).map_err(ArchiveError::io(&self.path))?;
        rustix::fs::syncfs(&staged).map_err(|e| ArchiveError::io(&self.path)(e.into()))?;
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

/// The directory `dest` lives in (`.` for a bare name).
fn parent_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if fs::remove_dir_all(&self.path).is_err() {
            // A directory restored read-only blocks removal of its children: open them up.
            make_writable(&self.path);
            if let Err(e) = fs::remove_dir_all(&self.path) {
                tracing::warn!(path = ?self.path, error = %e, "could not remove partial restore");
            }
        }
    }
}

fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
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
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStats, ArchiveError> {
    // Headers are parsed with small reads; buffer them (errors still pass through unchanged).
    let mut reader = ArchiveReader::new(std::io::BufReader::with_capacity(64 * 1024, input))?;
    let mut stats = ArchiveStats::default();
    let mut dirs = Vec::new();
    // The reader guarantees each entry's parent is a directory entry before it, which was
    // created here: nothing is placed under a symlink or outside `root`.
    while let Some(entry) = reader.next_entry()? {
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
                write_file(&mut reader, &entry, &path, &mut stats, progress)?;
                stats.files += 1;
            }
            EntryKind::Symlink { target } => {
                restore_symlink(target, &path, entry.mtime)?;
                stats.symlinks += 1;
            }
        }
    }
    stats.bytes_in = reader.bytes_read();
    for dir in dirs.iter().rev() {
        let file = File::open(&dir.path).map_err(ArchiveError::io(&dir.path))?;
        set_metadata(&file, &dir.path, dir.mode, dir.mtime)?;
    }
    Ok(stats)
}

fn write_file<R: Read>(
    reader: &mut ArchiveReader<R>,
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
    while let Some(block) = reader.read_block()? {
        file.write_all(block).map_err(ArchiveError::io(path))?;
        stats.bytes_out += block.len() as u64;
        progress(stats.bytes_out);
    }
    set_metadata(&file, path, entry.mode, entry.mtime)
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
