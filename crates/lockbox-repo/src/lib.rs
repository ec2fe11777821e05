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
//! Does not: keep the device's high-water mark (the caller stores the [`CatalogMark`] a backup
//! returns and hands it back), prune (not yet), talk to the vault.
//!
//! Trusts: the key K it is given; `lockbox-crypto` for key derivation, `aws-lc-rs` for
//! AES-256-GCM, RustCrypto for HMAC-SHA256, `lockbox-format` for the snapshot streams,
//! `lockbox-archive` for walking and restoring trees. The storage is trusted for availability
//! only: every object read from it is authenticated before use, and what it can still do
//! (hide the newest entries, delete objects) is caught against the caller's mark or reported
//! as missing.
#![forbid(unsafe_code)]

mod catalog;
mod config;
mod error;
mod ids;
mod index;
mod pack;
mod repo;
mod snapshot;
mod wire;

pub use catalog::{Catalog, CatalogMark, SnapshotEntry};
pub use config::{Config, Sizes};
pub use error::{Fault, RepoError};
pub use ids::{ChunkId, DeviceId, IndexId, PackId, RepoId, SnapshotId};
pub use index::{Index, IndexedPack, Location};
pub use pack::BlobEntry;
pub use repo::{Backup, BackupStats, CheckReport, Repository};
