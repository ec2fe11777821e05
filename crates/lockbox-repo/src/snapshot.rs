//! The header at the start of a snapshot's plaintext, before its tree. The snapshot is one
//! stream in the backup stream format (under K, its backup id = the snapshot id), so the
//! stream authenticates the header and the tree together, and catches truncation, reordering
//! and chunks of other streams.
//!
//! ```text
//! header = "LBXSNAP\0" | version 1 | repo_id[32] | device_id[16] | created_unix_ms u64
//!          | files u64 | bytes u64
//! ```

use crate::ids::{DeviceId, RepoId, SnapshotId};
use crate::wire::Cursor;

const SNAP_MAGIC: [u8; 8] = *b"LBXSNAP\0";
const SNAP_VERSION: u8 = 1;
pub(crate) const SNAP_HEADER_LEN: usize = 8 + 1 + 32 + 16 + 8 * 3;

/// What a snapshot says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotHeader {
    pub repo: RepoId,
    pub device: DeviceId,
    pub created_unix_ms: u64,
    pub files: u64,
    pub bytes: u64,
}

impl SnapshotHeader {
    pub fn encode(&self) -> [u8; SNAP_HEADER_LEN] {
        let mut out = Vec::with_capacity(SNAP_HEADER_LEN);
        out.extend_from_slice(&SNAP_MAGIC);
        out.push(SNAP_VERSION);
        out.extend_from_slice(&self.repo.0);
        out.extend_from_slice(&self.device.0);
        for v in [self.created_unix_ms, self.files, self.bytes] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.try_into().expect("fixed length")
    }

    /// `None` if these bytes are not a snapshot header of this version.
    pub fn decode(bytes: &[u8; SNAP_HEADER_LEN]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        if c.array::<8>().ok()? != SNAP_MAGIC || c.u8().ok()? != SNAP_VERSION {
            return None;
        }
        Some(SnapshotHeader {
            repo: RepoId(c.array().ok()?),
            device: DeviceId(c.array().ok()?),
            created_unix_ms: c.u64().ok()?,
            files: c.u64().ok()?,
            bytes: c.u64().ok()?,
        })
    }
}

/// The object name of a snapshot.
pub(crate) fn snapshot_object(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.hex())
}
