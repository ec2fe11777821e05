//! Key material for lockbox: the backup key `K`, its 64-digit recovery code, and every
//! HKDF derivation made from it, with their versioned labels in one place ([`labels`]).
//!
//! Does: generate `K` from an injected CSPRNG (the OS RNG in production), render and
//! leniently parse recovery codes, derive the per-backup stream keys and the vault wrap key.
//! Does not: encrypt anything (see `lockbox-format`), store keys, or talk to the network.
//! Trusts: the RNG it is given, and RustCrypto's `hkdf`/`sha2`.
//!
//! Secrets are zeroized on drop, print as `[REDACTED]` in `Debug`, and compare in constant time.
#![forbid(unsafe_code)]

mod key;
pub mod labels;
mod recovery;
mod repo;
mod secret;

pub use key::{BACKUP_ID_LEN, BackupId, BackupKey, CHUNK_TAG_LEN, KEY_CHECK_LEN, StreamKeys};
pub use rand_core::{CryptoRng, OsRng, RngCore};
pub use recovery::{RecoveryCode, RecoveryCodeError};
pub use repo::{REPO_ID_LEN, RepoKeys};
pub use secret::{Secret32, hkdf_expand};
