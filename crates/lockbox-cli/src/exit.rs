//! Exit codes, as documented in `lockbox --help` and the README:
//! 0 ok, 1 usage or runtime error, 2 authentication failure (wrong key, recovery code or password,
//! or an account token the vault refused),
//! 3 data integrity failure (tampered, truncated, swapped), 4 vault record destroyed.

use lockbox_client::backup::BackupError;
use lockbox_client::catalog::HeaderError;
use lockbox_client::{ClientError, DeviceError, Fault, vault_fault};
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

/// The exit code for an error: the most specific cause anywhere in its chain wins.
pub fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(fault) = fault_of(cause) {
            return match fault {
                Fault::Auth => Exit::Auth,
                Fault::Integrity => Exit::Integrity,
                Fault::Destroyed => Exit::Destroyed,
                Fault::Other => Exit::Failure,
            };
        }
    }
    Exit::Failure
}

/// The fault one link of an error chain proves by itself, if any.
fn fault_of(cause: &(dyn std::error::Error + 'static)) -> Option<Fault> {
    if let Some(e) = cause.downcast_ref::<DeviceError>() {
        return e.fault();
    }
    if let Some(e) = cause.downcast_ref::<BackupError>() {
        return e.fault();
    }
    if let Some(h) = cause.downcast_ref::<HeaderError>() {
        return Some(h.fault());
    }
    if let Some(f) = format_error(cause) {
        return Some(Fault::of_format(f));
    }
    if cause.is::<RecoveryCodeError>() {
        return Some(Fault::Auth);
    }
    if let Some(m) = cause.downcast_ref::<ManifestError>() {
        return Some(match m {
            ManifestError::BadKey(_) | ManifestError::BadState(_) => Fault::Other,
            _ => Fault::Integrity,
        });
    }
    match cause.downcast_ref::<ClientError>() {
        Some(
            e @ (ClientError::WrongPassword { .. }
            | ClientError::Unauthorized(_)
            | ClientError::Destroyed
            | ClientError::Manifest(_)
            | ClientError::BadCatalogPin),
        ) => Some(vault_fault(e)),
        _ => None,
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
    lockbox_client::render_error(err.as_ref())
}
