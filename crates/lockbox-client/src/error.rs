//! Client errors, by fault and retryability.

use lockbox_proto::pb;
use lockbox_vault_core::client::ClientError as StepError;

/// Why a vault operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The password is wrong. The attempt is spent whatever the device does next.
    #[error("wrong password ({attempts_left} attempts left)")]
    WrongPassword { attempts_left: u8 },
    /// The record was destroyed after too many wrong passwords; the key is gone for good.
    #[error(
        "the vault record was destroyed after too many wrong passwords: the key it held is gone for good"
    )]
    Destroyed,
    /// There is no vault record for this account (never enrolled, or deleted).
    #[error("no vault record for this account")]
    NoRecord,
    /// The vault could not be reached or could not make a change durable. Retryable.
    #[error("vault unavailable: {0}")]
    Unavailable(String),
    /// The vault opened the request and refused it.
    #[error("vault refused the request ({code:?}): {message}")]
    Rejected {
        code: pb::error::Code,
        message: String,
    },
    /// The node (or a relay) refused the envelope before opening it: gRPC status `code`.
    #[error("vault node refused the envelope ({code:?}): {message}")]
    Envelope { code: tonic::Code, message: String },
    /// The vault's answer is malformed, does not open, or is not the pinned vault's.
    #[error("vault protocol error: {0}")]
    Protocol(String),
    /// The vault refused the account token (missing, expired, forged, another account's or
    /// another fleet's): get a fresh one from the messaging service's login.
    #[error("account token refused: {0}")]
    Unauthorized(String),
    /// The Argon2id cost asked for is above what this device accepts (a hostile vault could
    /// otherwise pin the device).
    #[error(
        "Argon2id cost m={m_cost_kib} KiB, t={t_cost}, p={p_cost} is above this device's limit"
    )]
    KsfTooCostly {
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
    },
    /// The gateway is slowing this account or this client down (a login backoff, or a rate
    /// limit): nothing was sent to the vault, nothing was spent. Retry after `retry_after`.
    #[error("{message}")]
    RateLimited {
        retry_after: std::time::Duration,
        message: String,
    },
    /// The fleet manifest the gateway served does not verify under the pinned keys (rolled back,
    /// forked, singly signed, expired, another fleet's…): the device keeps what it had.
    #[error("fleet manifest refused: {0}")]
    Manifest(#[from] lockbox_proto::manifest::ManifestError),
    /// The vault answered with a catalog pin that `K` did not sign: a vault (or relay) that
    /// lies about how far the backup catalog reaches.
    #[error("the vault's catalog pin is not signed by this backup key")]
    BadCatalogPin,
    /// The caller passed something the protocol cannot carry (e.g. an empty account id).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
}

impl ClientError {
    /// A wrong password: the user may try again if attempts remain.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Self::WrongPassword { .. })
    }

    /// The record is destroyed: only the recovery code can restore backups now.
    pub fn is_destroyed(&self) -> bool {
        matches!(self, Self::Destroyed)
    }

    /// Transient: the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::RateLimited { .. })
    }

    pub(crate) fn protocol(what: impl core::fmt::Display) -> Self {
        Self::Protocol(what.to_string())
    }

    /// Maps an `Error` reply from inside the envelope. The vault's message is shown to users, so
    /// control characters (terminal escapes a hostile vault could send) are dropped.
    pub(crate) fn from_vault(e: &pb::Error) -> Self {
        use pb::error::Code;
        let code = Code::try_from(e.code).unwrap_or(Code::Unspecified);
        let e = &pb::Error {
            code: e.code,
            message: printable(&e.message),
        };
        match code {
            Code::NoRecord => Self::NoRecord,
            Code::Destroyed => Self::Destroyed,
            Code::Unavailable | Code::Busy => Self::Unavailable(e.message.clone()),
            Code::Unauthorized => Self::Unauthorized(e.message.clone()),
            _ => Self::Rejected {
                code,
                message: e.message.clone(),
            },
        }
    }
}

/// `text` without control characters, at most 512 characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(512).collect()
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        match s.code() {
            Code::ResourceExhausted => Self::RateLimited {
                retry_after: retry_after(&s),
                message: printable(s.message()),
            },
            // Only a gateway answers so: the vault's own token check is inside the envelope.
            Code::Unauthenticated | Code::PermissionDenied => {
                Self::Unauthorized(printable(s.message()))
            }
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown => Self::Unavailable(format!("{:?}: {}", s.code(), s.message())),
            code => Self::Envelope {
                code,
                message: printable(s.message()),
            },
        }
    }
}

/// The gateway's `retry-after-ms` hint, bounded so a hostile relay cannot park the device.
fn retry_after(s: &tonic::Status) -> std::time::Duration {
    let ms = s
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1000);
    std::time::Duration::from_millis(ms.min(3_600_000))
}

impl From<tonic::transport::Error> for ClientError {
    fn from(e: tonic::transport::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Maps a failed device-side protocol step. A wrong password at KE2 is handled by the caller,
/// which knows how many attempts the vault said are left.
impl From<StepError> for ClientError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::BadCatalogPin => Self::BadCatalogPin,
            e => Self::Protocol(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_codes_map_by_fault() {
        let err = |code: pb::error::Code| {
            ClientError::from_vault(&pb::Error {
                code: code.into(),
                message: "m".into(),
            })
        };
        assert_eq!(err(pb::error::Code::NoRecord), ClientError::NoRecord);
        assert!(err(pb::error::Code::Destroyed).is_destroyed());
        assert!(err(pb::error::Code::Unavailable).is_retryable());
        assert_eq!(
            err(pb::error::Code::Replayed),
            ClientError::Rejected {
                code: pb::error::Code::Replayed,
                message: "m".into()
            }
        );
        let unknown = ClientError::from_vault(&pb::Error {
            code: 999,
            message: String::new(),
        });
        assert!(matches!(
            unknown,
            ClientError::Rejected {
                code: pb::error::Code::Unspecified,
                ..
            }
        ));
    }

    #[test]
    fn a_vault_cannot_send_terminal_escapes() {
        let e = ClientError::from_vault(&pb::Error {
            code: pb::error::Code::Malformed.into(),
            message: "bad\u{1b}[2J\u{7}request\n".into(),
        });
        assert_eq!(
            e.to_string(),
            "vault refused the request (Malformed): bad[2Jrequest"
        );
    }

    #[test]
    fn grpc_status_maps_by_retryability() {
        assert!(ClientError::from(tonic::Status::unavailable("down")).is_retryable());
        assert_eq!(
            ClientError::from(tonic::Status::not_found("p9")),
            ClientError::Envelope {
                code: tonic::Code::NotFound,
                message: "p9".into()
            }
        );
        assert!(ClientError::WrongPassword { attempts_left: 2 }.is_auth_failure());
        assert!(!ClientError::Destroyed.is_auth_failure());
    }

    #[test]
    fn gateway_refusals_map_to_unauthorized_and_rate_limited() {
        let denied = ClientError::from(tonic::Status::permission_denied("another account's"));
        assert_eq!(
            denied,
            ClientError::Unauthorized("another account's".into())
        );
        let missing = ClientError::from(tonic::Status::unauthenticated("no token"));
        assert!(matches!(missing, ClientError::Unauthorized(_)));

        let mut slow = tonic::Status::resource_exhausted("rate limited (login): retry in 4000 ms");
        slow.metadata_mut()
            .insert("retry-after-ms", "4000".parse().unwrap());
        let e = ClientError::from(slow);
        assert!(e.is_retryable());
        assert!(matches!(e, ClientError::RateLimited { retry_after, .. }
            if retry_after == std::time::Duration::from_secs(4)));
        let mut hostile = tonic::Status::resource_exhausted("x");
        hostile
            .metadata_mut()
            .insert("retry-after-ms", "99999999999".parse().unwrap());
        assert!(
            matches!(ClientError::from(hostile), ClientError::RateLimited { retry_after, .. }
            if retry_after == std::time::Duration::from_secs(3600))
        );
    }
}
