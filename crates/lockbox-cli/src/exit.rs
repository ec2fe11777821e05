//! Exit codes, as documented in `lockbox --help` and the README:
//! 0 ok, 1 usage or runtime error, 2 authentication failure (wrong key, recovery code or password,
//! or an account token the vault refused),
//! 3 data integrity failure (tampered, truncated, swapped), 4 vault record destroyed.

use lockbox_client::ClientError;
use lockbox_crypto::RecoveryCodeError;
use lockbox_format::FormatError;
use lockbox_proto::manifest::ManifestError;
use std::io;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Failure = 1,
    Auth = 2,
    Integrity = 3,
    Destroyed = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Integrity failures found by the CLI itself (not by the stream decoder).
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error(
        "object {object} holds backup {found}, not {expected}: the storage provider swapped or renamed backups"
    )]
    SwappedBackup {
        object: String,
        expected: String,
        found: String,
    },
}

/// A stream header that does not open as the backup it should be, told apart as far as the
/// header allows (see `cmd::verify`).
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Damaged or replaced: the header proves it (exit 3).
    #[error("{object} is corrupt: {what}")]
    Corrupt { object: String, what: String },
    /// Neither the key-check value nor the header MAC matches: what another key does, and
    /// also what a damaged backup id does (exit 2).
    #[error(
        "{object}: wrong key, or its header is corrupt (neither its key-check value nor its MAC matches this key)"
    )]
    WrongKeyOrCorrupt { object: String },
    /// No stored backup opens with this key (exit 2).
    #[error(
        "none of the {count} backups at {url} opens with this key: wrong key, or every header is corrupt"
    )]
    NoneOpens { url: String, count: usize },
    /// Objects are stored, none of them an intact backup for this key (exit 3).
    #[error("no intact backup at {url}: none of its {count} objects verifies (see above)")]
    NoneIntact { url: String, count: usize },
    /// A format this version does not read (exit 1).
    #[error("{object}: unsupported lockbox format version {version}; a newer lockbox made it")]
    UnsupportedVersion { object: String, version: u8 },
    /// Any other header fault, classified as the format classifies it.
    #[error("{object}: {source}")]
    Format {
        object: String,
        #[source]
        source: FormatError,
    },
}

impl HeaderError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Corrupt { .. } | Self::NoneIntact { .. } => Exit::Integrity,
            Self::WrongKeyOrCorrupt { .. } | Self::NoneOpens { .. } => Exit::Auth,
            Self::UnsupportedVersion { .. } => Exit::Failure,
            Self::Format { source, .. } => exit_for_format(source),
        }
    }
}

/// The exit code for an error: the most specific cause anywhere in its chain wins.
pub fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(h) = cause.downcast_ref::<HeaderError>() {
            return h.exit();
        }
        if let Some(f) = format_error(cause) {
            return exit_for_format(f);
        }
        if cause.is::<RecoveryCodeError>() {
            return Exit::Auth;
        }
        if cause.is::<IntegrityError>() {
            return Exit::Integrity;
        }
        if let Some(m) = cause.downcast_ref::<ManifestError>() {
            return match m {
                ManifestError::BadKey(_) | ManifestError::BadState(_) => Exit::Failure,
                _ => Exit::Integrity,
            };
        }
        match cause.downcast_ref::<ClientError>() {
            Some(ClientError::WrongPassword { .. } | ClientError::Unauthorized(_)) => {
                return Exit::Auth;
            }
            Some(ClientError::Destroyed) => return Exit::Destroyed,
            Some(ClientError::Manifest(_)) => return Exit::Integrity,
            _ => {}
        }
    }
    Exit::Failure
}

fn exit_for_format(f: &FormatError) -> Exit {
    if f.is_wrong_key() {
        Exit::Auth
    } else if f.is_integrity() {
        Exit::Integrity
    } else {
        Exit::Failure
    }
}

/// Finds a stream-format error wherever it hides: directly, or inside an `io::Error` from a
/// decrypting reader (an archive error that carried the reader's failure has that `io::Error`
/// as its source, so the chain reaches it).
fn format_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a FormatError> {
    if let Some(f) = cause.downcast_ref::<FormatError>() {
        return Some(f);
    }
    cause
        .downcast_ref::<io::Error>()
        .and_then(FormatError::from_io)
}

/// One line: the context chain joined with ": ", without repeating a cause that is already
/// spelled out by its parent.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}
