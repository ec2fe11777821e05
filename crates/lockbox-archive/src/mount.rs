//! Is a directory a mount point? A restore renames its staging directory onto the destination,
//! and `rename(2)` onto a mount point fails with EBUSY, so a restore checks this first.

use std::path::Path;

use crate::ArchiveError;

/// What `statx` says about where a directory is mounted. The optional facts depend on the
/// kernel (Linux 5.8+) and filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MountFacts {
    /// Device of the filesystem the directory is on.
    pub(crate) dev: u64,
    /// Id of the mount the directory is on, if the kernel reports it.
    pub(crate) mnt_id: Option<u64>,
    /// Whether the directory is the root of a mount, if the kernel reports it.
    pub(crate) mount_root: Option<bool>,
}

/// Whether `dir` (a directory) is the root of a mount.
pub(crate) fn is_mount_point(dir: &Path) -> Result<bool, ArchiveError> {
    // `dir/..`: the directory it really sits in, whatever path led to it.
    let parent = dir.join("..");
    let facts = |p: &Path| read_facts(p).map_err(ArchiveError::io(p));
    Ok(decide(&facts(dir)?, &facts(&parent)?))
}

/// The decision, apart from the system calls: a reported mount root, another device than the
/// parent's (another filesystem), or another mount id (a bind mount of the same filesystem).
pub(crate) fn decide(dir: &MountFacts, parent: &MountFacts) -> bool {
    if let Some(root) = dir.mount_root {
        return root;
    }
    if dir.dev != parent.dev {
        return true;
    }
    matches!((dir.mnt_id, parent.mnt_id), (Some(a), Some(b)) if a != b)
}

fn read_facts(path: &Path) -> std::io::Result<MountFacts> {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    let x = statx(
        CWD,
        path,
        AtFlags::empty(),
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    )
    .map_err(std::io::Error::from)?;
    let dev = rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor);
    let mnt_id = (x.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(x.stx_mnt_id);
    let mount_root = x
        .stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
        .then(|| x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    Ok(MountFacts {
        dev,
        mnt_id,
        mount_root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn facts(dev: u64, mnt_id: Option<u64>, mount_root: Option<bool>) -> MountFacts {
        MountFacts {
            dev,
            mnt_id,
            mount_root,
        }
    }

    #[test]
    fn decides_from_whatever_the_kernel_reports() {
        let parent = facts(1, Some(10), Some(false));
        // Modern kernel: the mount-root attribute decides.
        assert!(decide(&facts(1, Some(10), Some(true)), &parent));
        assert!(!decide(&facts(1, Some(10), Some(false)), &parent));
        // No attribute: another filesystem, or another mount of the same one (bind mount).
        assert!(decide(&facts(2, None, None), &facts(1, None, None)));
        assert!(decide(&facts(1, Some(11), None), &parent));
        assert!(!decide(&facts(1, Some(10), None), &parent));
        // Old kernel, same device, no mount ids: an ordinary directory as far as can be seen.
        assert!(!decide(&facts(1, None, None), &facts(1, None, None)));
    }

    #[test]
    fn ordinary_directories_and_the_root_mount() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        assert!(!is_mount_point(&tmp.path().join("d")).unwrap());
        assert!(
            is_mount_point(Path::new("/proc")).unwrap(),
            "/proc is a mount point"
        );
    }
}
