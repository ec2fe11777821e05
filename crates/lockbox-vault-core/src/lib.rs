//! The Backup Key Vault's decision logic, sans-IO: the server half of OPAQUE (RFC 9807), the
//! per-account guess limit, and the record format (DESIGN.md §4). Also the matching device-side
//! steps ([`client`]), used by tests and by the client SDK.
//!
//! Does: decide, for one request and the account's current [`Record`], exactly what must be
//! persisted and what may be replied ([`Outcome`]); hold OPAQUE login/registration sessions in
//! memory ([`Sessions`]); encode and strictly decode records.
//! Does not: read or write storage, read the clock, touch the network, seal anything at rest, or
//! authenticate accounts (the gateway does that; the shell checks the HPKE account binding).
//! Trusts: the shell to (1) serialise the requests of one account or apply each [`Write`] as a
//! compare-and-swap against [`Write::prior`], (2) construct a [`Durable`] proof only after a write
//! is durable on a quorum, (3) pass the clock and a CSPRNG; and `opaque-ke`, `argon2`, `aws-lc-rs`.
//!
//! Ciphersuite: OPRF ristretto255, key exchange TripleDH over ristretto255 with SHA-512, KSF
//! Argon2id with parameters chosen by the client at enrollment and stored in the record.
//! The OPRF key of each record comes from a credential identifier salted afresh at every
//! registration (kept in the record), so the only OPRF evaluations under a live record's key are
//! its own logins, each paid for with an attempt before its KE2 leaves.
//! The vault never sees `K` or the password: it stores `AEAD(HKDF(export_key, WRAP), K)`, which
//! only the device that knows the password can open.
//! It also keeps, per record, the newest catalog pin ([`CatalogPin`]): how far the account's
//! backup catalog reaches, signed by a key from `K` that the vault can verify but never use.
#![forbid(unsafe_code)]

pub mod client;
mod error;
mod guess;
mod pin;
mod record;
mod seal;
mod secrets;
mod session;
mod suite;
mod vault;

pub use error::{Field, RecordError, VaultError};
pub use guess::{AttemptLimit, GuessEvent, GuessState, GuessVerdict, guess_step};
pub use pin::{CATALOG_KEY_LEN, CATALOG_PIN_BODY_LEN, CATALOG_PIN_LEN, CatalogKey, CatalogPin};
pub use record::{
    AccountId, CREDENTIAL_SALT_LEN, KE1_FINGERPRINT_LEN, KE1_RING_LEN, MAX_ACCOUNT_LEN,
    MAX_ENCODED_RECORD_LEN, MAX_WRAPPED_KEY_LEN, RECORD_FORMAT_VERSION, Record,
};
pub use secrets::{SECRETS_LEN, SecretsError, VaultIdentity, VaultSecrets, partition_server_id};
pub use session::{MAX_REGISTRATIONS_PER_ACCOUNT, SESSION_ID_LEN, SessionId, Sessions};
pub use suite::{
    KE1_LEN, KE2_LEN, KE3_LEN, KsfError, KsfParams, REGISTRATION_REQUEST_LEN,
    REGISTRATION_RESPONSE_LEN, REGISTRATION_UPLOAD_LEN, Suite,
};
pub use vault::{
    AccountStatus, Durable, Outcome, PendingReply, Rejected, Reply, Request, Vault, VaultConfig,
    Write,
};
