//! The incremental backup repository (DESIGN.md §3, format in docs/repository.md): a daily
//! backup uploads only the chunks that changed.
//!
//! Does: cut files by content-defined chunking (fastcdc, seeded from the key), name each chunk
//! by a keyed MAC, compress it where it helps, seal it with AES-256-GCM and pack chunks into
//! objects of several MiB, with an encrypted index of where each chunk is; write each
//! snapshot's tree (paths, metadata, chunk references) as one stream in the backup stream
//! format; keep an authenticated, chained catalog of snapshots that list, latest and restore go
//! through, never object names. Restores verify every chunk against its id.
//!
//! Prunes: forgets snapshots by appending to the catalog, deletes packs no snapshot needs and
//! rewrites mostly-empty ones, in an order that a crash at any point leaves restorable. Writers
//! (backup, prune) hold the repository's lock object.
//!
//! Does not: keep the device's high-water mark (the caller stores the [`CatalogMark`] a backup
//! returns and hands it back), talk to the vault.
//!
//! Trusts: the key K it is given; `lockbox-crypto` for key derivation, `aws-lc-rs` for
//! AES-256-GCM, RustCrypto for HMAC-SHA256, `lockbox-format` for the snapshot streams,
//! `lockbox-archive` for walking and restoring trees. The storage is trusted for availability
//! only: every object read from it is authenticated before use, and what it can still do
//! (hide the newest entries, delete objects) is caught against the caller's mark or reported
//! as missing.
#![forbid(unsafe_code)]

mod cache;
mod catalog;
mod cdc;
mod config;
mod error;
mod fetch;
mod ids;
mod index;
mod lock;
mod pack;
mod prune;
mod repo;
mod retention;
mod sink;
mod snapshot;
mod wire;

pub use cache::FileCache;
pub use catalog::{Catalog, CatalogMark, SnapshotEntry};
pub use config::{Config, Layout, Sizes};
pub use error::{Fault, RepoError};
pub use ids::{ChunkId, ChunkIds, DeviceId, IndexId, PackId, RepoId, SnapshotId};
pub use index::{Index, IndexedPack, Location};
pub use lock::{LOCK_REFRESH, LOCK_STALE_MS, LockHolder, Purpose, RepoLock};
pub use pack::BlobEntry;
pub use prune::PruneReport;
pub use repo::{Backup, BackupStats, CheckReport, Repository};
pub use retention::Keep;

/// Entry points for the fuzz targets (`fuzz/fuzz_targets/repo_decode.rs`): every decoder of
/// repository objects, on arbitrary bytes. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use lockbox_crypto::BackupKey;

    use crate::ids::{IndexId, PackId, RepoId};

    /// Runs every decoder over `data`, both the checks before authentication (under a fixed
    /// key, which arbitrary bytes never pass) and the parsers of authenticated contents.
    pub fn decode_all(data: &[u8]) {
        let key = BackupKey::from_bytes([1; 32]);
        let keys = key.repo_keys(&[2; 32]);
        let _ = crate::pack::read_pack(&keys, &PackId([3; 32]), data);
        let _ = crate::pack::parse_header(data, u64::from(u32::MAX));
        let _ = crate::index::decode_index(&keys, &IndexId([3; 32]), data);
        let _ = crate::index::parse_body(data);
        let _ = crate::config::Config::decode(&key, "fuzz", data, None);
        let _ = crate::catalog::Catalog::verify(&keys, RepoId([2; 32]), vec![(1, data.to_vec())]);
        if let Some((version, fields)) = data.split_first() {
            let _ = crate::catalog::parse_entry(*version, fields);
        }
        if let Some(head) = data.first_chunk::<{ crate::snapshot::SNAP_HEADER_LEN }>() {
            let _ = crate::snapshot::SnapshotHeader::decode(head);
        }
    }
}
