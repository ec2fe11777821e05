use std::path::PathBuf;

use crate::KeyId;

/// Why sealing, unsealing or opening a sealer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// GCM authentication failed: wrong AAD, a modified blob, or a blob moved between keys.
    #[error("sealed data failed authentication (wrong AAD, or the blob was tampered with)")]
    Tampered,
    /// The blob names a key this sealer does not hold.
    #[error("sealed data names unknown key id {0}")]
    UnknownKey(KeyId),
    /// The blob is too short or has an unsupported version.
    #[error("sealed data is malformed: {reason}")]
    Malformed { reason: &'static str },
    /// The PKCS#11 module file does not exist.
    #[error("PKCS#11 module not found at {}", path.display())]
    ModuleNotFound { path: PathBuf },
    /// No slot holds a token with this label.
    #[error("no PKCS#11 token labelled {label:?}")]
    TokenNotFound { label: String },
    /// The token rejected the user PIN.
    #[error("the PKCS#11 token rejected the user PIN")]
    WrongPin,
    /// No PIN in the configuration nor in the environment.
    #[error("no PKCS#11 user PIN configured (set it in the config or in {var})")]
    MissingPin { var: &'static str },
    /// A key in the token with our label is not sensitive or is extractable; we refuse to use it.
    #[error("PKCS#11 key {label:?} is extractable or not sensitive; refusing to use it")]
    InsecureKey { label: String },
    /// The rollback mark could not be read or written.
    #[error("rollback mark: {0}")]
    Mark(String),
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 error: {0}")]
    Pkcs11(String),
    /// The software key file could not be created, read, parsed or written.
    #[error("key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    /// The AES-GCM implementation or the OS RNG failed.
    #[error("cryptographic backend failure: {0}")]
    Crypto(&'static str),
}
