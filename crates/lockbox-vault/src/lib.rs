//! A Backup Key Vault node (DESIGN.md §4–§5): serves the vault's gRPC protocol for the partitions
//! it hosts, keeps records in redb (fsync on every commit), sealed at rest under its HSM key.
//!
//! Does: open HPKE envelopes, drive `lockbox-vault-core` for each request, make every write
//! durable before releasing the reply that depends on it (a KE2 never leaves before its attempt
//! is spent on disk), seal the response back to the client, export Prometheus metrics.
//! Also checks, before the core evaluates or spends anything, that every request carries a valid
//! account token for its account (inside the envelope, so no relay can forge or move it), was
//! sealed recently, and is not a byte-for-byte replay.
//! Does not: issue tokens or rate-limit per client (the gateway does), replicate (the [`storage::RecordStore`] seam is where the Raft group goes), decide
//! anything about passwords or guesses (the core does).
//! Trusts: its sealer (software key file or PKCS#11 token), its local disk to honour fsync, and
//! the partition secrets it created or was given.
//!
//! Honest limit: this process holds OPAQUE secrets and session state in memory while it runs;
//! in production the core is meant to run inside HSM firmware or an enclave.
#![forbid(unsafe_code)]

pub mod admission;
pub mod config;
pub mod metrics;
pub mod node;
pub mod replay;
pub mod replica;
pub mod request;
pub mod server;
pub mod service;
pub mod storage;

pub use config::VaultConfig;
pub use server::{BoundNode, ServeError, bind, peer_tls};
