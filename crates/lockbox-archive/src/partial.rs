//! Staging of plaintext beside its destination (a restore's directory, a decrypted file), and
//! removal of the staging that a killed run left behind.
//!
//! A staging entry is named `.NAME.lockbox-partial-XXXXXX` and is locked (flock, exclusive) by
//! the run that writes it for as long as that run lives; the kernel drops the lock when the
//! process dies, however it dies. [`sweep`] removes only the entries it can lock itself, so never
//! one a running lockbox is writing, whatever its age or speed. Creating and locking an entry
//! happen under a shared lock on the directory and sweeping under an exclusive one, so a sweep
//! never finds an entry in the instant between its creation and its lock.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What every staging name contains.
pub const PARTIAL_MARK: &str = ".lockbox-partial-";

/// Whether `name` is a staging name: `.NAME.lockbox-partial-…` (or `.lockbox-partial-…`, as
/// `decrypt -o` named its staging before).
pub fn is_partial_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.starts_with(b".")
        && bytes
            .windows(PARTIAL_MARK.len())
            .any(|w| w == PARTIAL_MARK.as_bytes())
}

/// Removes the staging entries in `dir` that no running process holds: leftovers of killed
/// restores and decrypts. Only entries owned by this user are considered. Returns the removed.
/// Best effort: anything it cannot lock, open or remove is left alone.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let Some(_dir_lock) = lock_dir(dir, true) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = rustix::process::geteuid().as_raw();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if is_partial_name(&entry.file_name()) && remove_if_unlocked(&path, me) {
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), dir = ?dir, "removed leftovers of interrupted runs");
    }
    removed
}

fn remove_if_unlocked(path: &Path, me: u32) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if meta.uid() != me || !(meta.is_dir() || meta.is_file()) {
        return false;
    }
    let Ok(held) = open_nofollow(path) else {
        return false;
    };
    if held.try_lock().is_err() {
        return false;
    }
    let result = if meta.is_dir() {
        remove_tree(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = ?path, error = %e, "could not remove a leftover of an interrupted run");
            false
        }
    }
}

/// A staging directory for `dest`, beside it: mode 0700, locked. The returned file holds the
/// lock; keep it open until the directory is renamed into place or removed.
pub(crate) fn staging_dir(dest: &Path) -> io::Result<(PathBuf, File)> {
    let parent = parent_of(dest);
    let _creating = lock_dir(parent, false);
    let dir = tempfile::Builder::new()
        .prefix(&staging_prefix(dest)?)
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(parent)?
        .keep();
    let held = open_nofollow(&dir).and_then(|f| lock_new(f, &dir));
    match held {
        Ok(file) => Ok((dir, file)),
        Err(e) => {
            let _ = fs::remove_dir(&dir);
            Err(e)
        }
    }
}

/// A staging file for `dest`, beside it: mode 0600, locked through the returned handle (which
/// `tempfile` removes on drop unless it is persisted).
pub fn staging_file(dest: &Path) -> io::Result<tempfile::NamedTempFile> {
    let parent = parent_of(dest);
    let _creating = lock_dir(parent, false);
    let file = tempfile::Builder::new()
        .prefix(&staging_prefix(dest)?)
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(parent)?;
    match file.as_file().try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::other("new staging file is locked")),
        // No locking on this filesystem: a sweep cannot lock it either, so it is safe.
        Err(fs::TryLockError::Error(_)) => Ok(file),
    }
}

fn lock_new(file: File, path: &Path) -> io::Result<File> {
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::other(format!(
            "{}: new staging directory is locked",
            path.display()
        ))),
        Err(fs::TryLockError::Error(_)) => Ok(file),
    }
}

/// `.NAME.lockbox-partial-`.
fn staging_prefix(dest: &Path) -> io::Result<OsString> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "destination has no name"))?;
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(PARTIAL_MARK);
    Ok(prefix)
}

/// A lock on directory `dir` (exclusive or shared), or `None` if it is busy (exclusive only)
/// or cannot be locked at all. Shared waits for a sweep to finish.
fn lock_dir(dir: &Path, exclusive: bool) -> Option<File> {
    let file = File::open(dir).ok()?;
    let locked = if exclusive {
        file.try_lock().is_ok()
    } else {
        file.lock_shared().is_ok()
    };
    locked.then_some(file)
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// The directory `dest` lives in (`.` for a bare name).
pub(crate) fn parent_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes a tree, first opening up directories restored read-only if that is what blocks it.
pub(crate) fn remove_tree(dir: &Path) -> io::Result<()> {
    if fs::remove_dir_all(dir).is_ok() {
        return Ok(());
    }
    make_writable(dir);
    fs::remove_dir_all(dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        for yes in [
            ".rk.lockbox-partial-abc",
            ".lockbox-partial-x1",
            ". .lockbox-partial-",
        ] {
            assert!(is_partial_name(OsStr::new(yes)), "{yes}");
        }
        for no in [
            "rk.lockbox-partial-abc",
            ".rk",
            "lockbox-partial",
            ".rk.lockbox-partia",
        ] {
            assert!(!is_partial_name(OsStr::new(no)), "{no}");
        }
    }

    #[test]
    fn sweep_removes_unlocked_staging_and_keeps_locked_and_foreign_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("chats");
        let (live, _held) = staging_dir(&dest).unwrap();
        let (dead, held) = staging_dir(&dest).unwrap();
        fs::write(dead.join("msgstore.db"), b"plaintext").unwrap();
        fs::create_dir(dead.join("ro")).unwrap();
        fs::set_permissions(dead.join("ro"), Permissions::from_mode(0o500)).unwrap();
        drop(held);
        let file = staging_file(&tmp.path().join("out")).unwrap();
        let dead_file = tmp.path().join(".out.lockbox-partial-old");
        fs::write(&dead_file, b"plaintext").unwrap();
        let other = tmp.path().join("lockbox-partial-not-ours");
        fs::write(&other, b"x").unwrap();
        let link = tmp.path().join(".l.lockbox-partial-link");
        std::os::unix::fs::symlink(&live, &link).unwrap();

        let mut removed = sweep(tmp.path());
        removed.sort();
        let mut expected = vec![dead.clone(), dead_file.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(live.is_dir() && file.path().exists() && other.exists());
        assert!(
            link.symlink_metadata().is_ok(),
            "symlinks are not followed or removed"
        );
        assert_eq!(
            fs::metadata(&live).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
