//! The fleet manifest log a gateway serves and routes by (docs/fleet-manifest.md).
//!
//! The gateway reads the countersigned log from a directory at start and serves it as is: it is
//! not trusted for it (devices verify the chain under their pinned keys), but it refuses to start
//! on a log that does not parse or does not chain by sequence, so an operator's mistake shows at
//! once. Its partition map is the newest manifest's; it refuses an envelope addressed to another
//! partition than the one the manifest assigns the account to, before anything is relayed.

use lockbox_proto::manifest::{Manifest, SignedManifest};
use std::path::{Path, PathBuf};

use crate::config::PartitionRoute;

pub use lockbox_proto::manifest::MAX_PER_ANSWER;
/// Most bytes in one answer (always at least one manifest); the device asks again after the last.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read the manifest log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest log {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug)]
pub struct ManifestLog {
    entries: Vec<(u64, Vec<u8>)>,
    newest: Manifest,
}

impl ManifestLog {
    /// Every `*.manifest` in `dir`, in name order, which must be sequence 1, 2, 3, …
    pub fn load(dir: &Path) -> Result<Self, LogError> {
        let read = |source| LogError::Read {
            path: dir.into(),
            source,
        };
        let paths = lockbox_proto::manifest::log_files(dir).map_err(read)?;
        let mut entries = Vec::new();
        let mut newest = None;
        for path in paths {
            let invalid = |message: String| LogError::Invalid {
                path: path.clone(),
                message,
            };
            let bytes = std::fs::read(&path).map_err(|source| LogError::Read {
                path: path.clone(),
                source,
            })?;
            let signed = SignedManifest::from_bytes(&bytes).map_err(|e| invalid(e.to_string()))?;
            let m = Manifest::from_body(&signed.body).map_err(|e| invalid(e.to_string()))?;
            let expected = entries.len() as u64 + 1;
            if m.sequence() != expected {
                return Err(invalid(format!(
                    "holds manifest {}, expected {expected}",
                    m.sequence()
                )));
            }
            entries.push((m.sequence(), bytes));
            newest = Some(m);
        }
        let newest = newest.ok_or_else(|| LogError::Invalid {
            path: dir.into(),
            message: "no *.manifest files".into(),
        })?;
        Ok(Self { entries, newest })
    }

    pub fn newest(&self) -> &Manifest {
        &self.newest
    }

    /// The manifests after `sequence`, bounded by [`MAX_PER_ANSWER`] and [`MAX_ANSWER_BYTES`]
    /// (always at least one, if any).
    pub fn after(&self, sequence: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, m) in self.entries.iter().filter(|(s, _)| *s > sequence) {
            if out.len() == MAX_PER_ANSWER
                || (!out.is_empty() && bytes + m.len() > MAX_ANSWER_BYTES)
            {
                break;
            }
            bytes += m.len();
            out.push(m.clone());
        }
        out
    }

    /// The newest manifest's partitions, as routes.
    pub fn routes(&self) -> Vec<PartitionRoute> {
        self.newest
            .partitions()
            .iter()
            .map(|p| PartitionRoute {
                id: p.partition,
                replicas: p.replicas.clone(),
            })
            .collect()
    }

    /// The partition the newest manifest assigns `account` to.
    pub fn partition_for(&self, account: &[u8]) -> u32 {
        self.newest.partition_for(account).partition
    }
}
