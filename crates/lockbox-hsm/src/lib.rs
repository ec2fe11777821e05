//! Sealing at rest for the lockbox vault: everything a vault node keeps on disk (records,
//! partition secrets, its high-water mark) is sealed with AES-256-GCM under a key held by a
//! [`Sealer`].
//!
//! Two implementations share one blob format:
//! * [`SoftwareSealer`], the embedded default: keys in a local key file (mode 0600), AES-GCM
//!   in process via `aws-lc-rs`.
//! * [`Pkcs11Sealer`]: keys generated inside a PKCS#11 token (SoftHSM2 in tests) as
//!   non-extractable, sensitive AES-256 keys; AES-GCM runs inside the token.
//!
//! # Sealed blob format (version 1)
//!
//! ```text
//! offset  size  field
//! 0       1     version = 0x01
//! 1       4     key id, u32 big-endian
//! 5       12    nonce, fresh from the OS RNG for every seal
//! 17      n+16  AES-256-GCM ciphertext of the n-byte plaintext, then the 16-byte tag
//! ```
//!
//! The GCM additional data is `version ‖ key id ‖ caller AAD` (the first 5 bytes of the blob,
//! then the caller's AAD), so neither the version nor the key id can be swapped without failing
//! authentication. The vault passes `partition ‖ account ‖ version` as the caller AAD, which
//! stops a blob from being replayed under another record.
//!
//! Does: seal/unseal, key rotation (old keys stay usable for unseal), key storage, and the
//! node's rollback mark ([`MarkStore`]: a token object, or a sealed file).
//! Does not: decide what the AAD is, store blobs, or limit how many blobs one key seals
//! (with random 96-bit nonces, NIST SP 800-38D allows at most 2^32 seals per key; rotate
//! long before that).
//! Trusts: the OS RNG, `aws-lc-rs` for AES-GCM, the PKCS#11 module it is pointed at, and the
//! file system permissions that protect the software key file.
//!
//! [`softhsm`] sets up SoftHSM2 configurations and tokens for development.
//!
//! Feature `test-support` adds the `test_support` module: a SoftHSM2 harness that runs
//! each test in its own process with a private token directory (for this crate and the vault).
//!
//! Honest limit: the software sealer holds its keys in process memory (zeroized on drop);
//! only the PKCS#11 sealer keeps keys out of the process.
#![forbid(unsafe_code)]

mod blob;
mod error;
mod keyfile;
mod mark;
mod pkcs11;
pub mod softhsm;
mod software;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use blob::{BLOB_VERSION, HEADER_LEN, NONCE_LEN, TAG_LEN};
pub use error::SealError;
pub use mark::{FileMark, MarkStore, Pkcs11Mark};
pub use pkcs11::{
    DEFAULT_KEY_LABEL_PREFIX, HsmPin, PIN_ENV_VAR, Pkcs11Config, Pkcs11Sealer, shared_context,
};
pub use software::{MemorySealer, SoftwareSealer};

use std::fmt;

/// Identifies one sealing key. Key ids start at 1 and grow by one with each rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u32);

impl KeyId {
    /// The id after this one.
    pub fn next(self) -> Result<KeyId, SealError> {
        self.0
            .checked_add(1)
            .map(KeyId)
            .ok_or(SealError::Crypto("key id space exhausted"))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Seals and unseals data at rest. Implementations are safe to share between threads.
pub trait Sealer: Send + Sync + fmt::Debug {
    /// The key new blobs are sealed under.
    fn current_key_id(&self) -> KeyId;

    /// Seals `plaintext`, binding it to `aad`, under the current key.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError>;

    /// Opens a blob made by [`Sealer::seal`] with the same `aad`, under whichever key sealed it.
    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError>;

    /// Makes a new key current and returns its id; older keys stay usable for unseal.
    fn rotate(&self) -> Result<KeyId, SealError>;
}
