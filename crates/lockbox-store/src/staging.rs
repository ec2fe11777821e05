//! Leftovers of killed uploads into a local folder, and the lock that tells them from the
//! staging of uploads that are still running.
//!
//! object_store's local backend writes a multipart upload to `NAME.lbx#N` and renames it to
//! `NAME.lbx` on completion; a process killed in between leaves the staging file, which never
//! lists. Every upload holds a shared flock on the folder itself while it runs (the kernel
//! drops it when the process dies, however it dies). An upload that can take the lock
//! exclusively knows no other upload is running, so every staging file is a leftover: it removes
//! them, then keeps the lock shared like any other upload. No age threshold is needed, a paused
//! or slow upload is never touched, and no lock file is left in the folder.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::BackupName;

/// The folder's upload lock, held shared by one running upload; released on drop.
#[derive(Debug)]
pub(crate) struct UploadLock {
    _file: File,
}

impl UploadLock {
    /// Takes the upload lock of `root`, first removing the staging files of killed uploads if no
    /// other upload is running. Returns the lock and the files removed.
    pub(crate) fn acquire(root: &Path) -> io::Result<(UploadLock, Vec<PathBuf>)> {
        let file = File::open(root)?;
        let removed = match file.try_lock() {
            Ok(()) => {
                let removed = sweep(root);
                // Converts the exclusive lock: from here on, other uploads may start.
                file.lock_shared()?;
                removed
            }
            Err(TryLockError::WouldBlock) => {
                // Another upload runs (or sweeps, briefly): leave every staging file alone.
                file.lock_shared()?;
                Vec::new()
            }
            Err(TryLockError::Error(e)) => {
                // No locking here (some network filesystems): never sweep without it.
                tracing::warn!(folder = ?root, error = %e, "cannot lock the backup folder; leftovers of interrupted uploads are kept");
                Vec::new()
            }
        };
        Ok((UploadLock { _file: file }, removed))
    }
}

/// Removes the staging files directly in `root`. Only called under the exclusive lock.
fn sweep(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let is_staging = entry.file_name().to_str().and_then(parse_staging).is_some();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !(is_staging && is_file) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed.push(entry.path()),
            Err(e) => {
                tracing::warn!(path = ?entry.path(), error = %e, "cannot remove an interrupted upload")
            }
        }
    }
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), folder = ?root, "removed staging files of interrupted uploads");
    }
    removed
}

/// Parses a local-folder staging file name, `{backup file name}#{digits}` (what object_store's
/// local backend writes while a multipart upload runs); anything else is `None`.
fn parse_staging(file_name: &str) -> Option<BackupName> {
    let (object, suffix) = file_name.split_once('#')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    BackupName::parse(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_parse_strictly() {
        let name = BackupName::new(1_700_000_000_123, "00112233aabbccdd").unwrap();
        let staged = format!("{}#1", name.file_name());
        assert_eq!(parse_staging(&staged), Some(name.clone()));
        assert_eq!(
            parse_staging(&format!("{}#12", name.file_name())),
            Some(name.clone())
        );
        for bad in [
            name.file_name(),
            format!("{}#", name.file_name()),
            format!("{}#1x", name.file_name()),
            format!("{}.tmp#1", name.file_name()),
            "notes.txt#1".to_owned(),
        ] {
            assert_eq!(parse_staging(&bad), None, "{bad}");
        }
    }

    #[test]
    fn staging_is_swept_only_while_no_other_upload_holds_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let backup = root.join("lockbox-1700000000000-00112233aabbccdd.lbx");
        let staged = root.join("lockbox-1700000000000-00112233aabbccdd.lbx#1");
        let unrelated = root.join("notes.txt#1");
        for f in [&backup, &staged, &unrelated] {
            std::fs::write(f, b"x").unwrap();
        }
        let (running, removed) = UploadLock::acquire(root).unwrap();
        assert_eq!(removed, vec![staged.clone()]);
        assert!(backup.exists() && unrelated.exists());

        // While that upload runs, its staging file stays whoever starts next.
        std::fs::write(&staged, b"x").unwrap();
        let (second, removed) = UploadLock::acquire(root).unwrap();
        assert!(removed.is_empty() && staged.exists());
        drop((running, second));
        let (_third, removed) = UploadLock::acquire(root).unwrap();
        assert_eq!(removed, vec![staged]);
    }
}
