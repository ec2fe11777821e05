//! Typed errors. A `VaultError` from [`crate::Vault::handle`] never carries a write: every error
//! leaves the persisted state exactly as it was.

/// A request field that did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Account,
    Session,
    RegistrationRequest,
    RegistrationUpload,
    WrappedKey,
    Ke1,
    Ke3,
    CatalogPin,
}

impl core::fmt::Display for Field {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Field::Account => "account id",
            Field::Session => "session id",
            Field::RegistrationRequest => "registration request",
            Field::RegistrationUpload => "registration upload",
            Field::WrappedKey => "wrapped key",
            Field::Ke1 => "KE1",
            Field::Ke3 => "KE3",
            Field::CatalogPin => "catalog pin",
        })
    }
}

/// Why the vault refused a request. No variant implies any state change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    // Faults of the request (the client's or a tampering relay's).
    #[error("malformed {0}")]
    Malformed(Field),
    #[error("attempt limit {0} is outside 1..=100")]
    AttemptLimitOutOfRange(u32),
    #[error("client Argon2id parameters are weaker than the vault's policy")]
    KsfBelowPolicy,

    // The account's state.
    #[error("no vault record for this account")]
    NoRecord,
    #[error("the vault record was destroyed")]
    Destroyed,
    #[error("this KE1 was already used; start a new login")]
    ReplayedKe1,
    #[error(
        "this record was enrolled without a catalog key, so it holds no catalog pin; a password change enrolls it with one"
    )]
    NoCatalogKey,
    #[error("this record holds a catalog pin: enroll with a client that sends a catalog key")]
    CatalogKeyRequired,
    #[error("the catalog pin is not signed by this record's catalog key")]
    BadCatalogPin,

    // Sessions.
    #[error("no such session (unknown, already used, or for an older record)")]
    NoSession,
    #[error("session expired")]
    SessionExpired,
    #[error("session belongs to another account")]
    SessionAccountMismatch,
    #[error("session is not at the step this request needs")]
    SessionKindMismatch,
    #[error("the record changed since this enrollment started")]
    StaleGeneration,

    // Faults of the shell or of capacity (retryable or bugs, never the client's).
    #[error("too many open sessions; retry later")]
    Busy,
    #[error("too many open sessions for this account; finish or let one expire first")]
    AccountBusy,
    #[error("the shell passed a record of another account")]
    RecordAccountMismatch,
    #[error("durability proof belongs to another write")]
    ProofMismatch,
    #[error("record generation counter exhausted")]
    GenerationExhausted,
    #[error("internal OPAQUE failure")]
    Internal,
}

/// Why a stored record did not decode. Records are sealed at rest, so any of these means
/// corruption or a bug, never an attack that got past the seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("trailing bytes after record")]
    TrailingBytes,
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    #[error("unknown record state tag {0}")]
    UnknownState(u8),
    #[error("bad account id length")]
    BadAccount,
    #[error("attempt limit or attempts left out of range")]
    BadAttempts,
    #[error("bad Argon2id parameters")]
    BadKsf,
    #[error("bad OPAQUE registration")]
    BadRegistration,
    #[error("bad wrapped key length")]
    BadWrappedKey,
    #[error("bad KE1 fingerprint ring")]
    BadRing,
    #[error("bad catalog key or pin")]
    BadCatalog,
}
