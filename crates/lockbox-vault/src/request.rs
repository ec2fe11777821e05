//! The request inside an opened envelope: decoded strictly (protobuf, then the account binding
//! and field ranges) into the core's [`Request`]. Its payloads stay raw bytes; the core parses
//! them. Public so that the fuzz target can reach it.

use lockbox_proto::pb;
use lockbox_vault_core::{AccountId, CatalogKey, KsfParams, Request, VaultError};
use prost::Message;

/// Why the plaintext of an envelope is no request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// The request inside an opened envelope, for the envelope's account and class.
pub fn decode(
    outer_account: &[u8],
    outer_class: i32,
    plain: &[u8],
) -> Result<pb::Request, RequestError> {
    let req = pb::Request::decode(plain).map_err(|_| RequestError::Malformed("request"))?;
    if req.account.as_ref() != outer_account {
        return Err(RequestError::Malformed(
            "account differs from the envelope's",
        ));
    }
    if req.class() as i32 != outer_class {
        return Err(RequestError::Malformed(
            "envelope class differs from its request",
        ));
    }
    Ok(req)
}

/// The core's view of an admitted request (payloads still raw; the core parses them).
pub fn to_core(req: pb::Request) -> Result<Request, RequestError> {
    use pb::request::Op;
    let account = AccountId::new(&req.account)?;
    let ksf = |k: Option<pb::KsfParams>| -> Result<KsfParams, RequestError> {
        let k = k.ok_or(RequestError::Malformed("missing Argon2id parameters"))?;
        KsfParams::new(k.m_cost_kib, k.t_cost, k.p_cost)
            .map_err(|_| RequestError::Malformed("Argon2id parameters"))
    };
    let limit = |l: u32| {
        u8::try_from(l).map_err(|_| RequestError::Vault(VaultError::AttemptLimitOutOfRange(l)))
    };
    Ok(
        match req.op.ok_or(RequestError::Malformed("missing operation"))? {
            Op::RegisterStart(r) => Request::RegisterStart {
                account,
                registration_request: r.registration_request.to_vec(),
            },
            Op::RegisterFinish(r) => Request::RegisterFinish {
                account,
                session: r.session.to_vec(),
                upload: r.registration_upload.to_vec(),
                wrapped_key: r.wrapped_key.to_vec(),
                attempt_limit: limit(r.attempt_limit)?,
                ksf: ksf(r.ksf)?,
                catalog_key: match r.catalog_key.len() {
                    0 => None,
                    _ => Some(CatalogKey::from_bytes(
                        r.catalog_key
                            .as_ref()
                            .try_into()
                            .map_err(|_| RequestError::Malformed("catalog key is not 32 bytes"))?,
                    )),
                },
            },
            Op::LoginStart(r) => Request::LoginStart {
                account,
                ke1: r.ke1.to_vec(),
            },
            Op::LoginFinish(r) => Request::LoginFinish {
                account,
                session: r.session.to_vec(),
                ke3: r.ke3.to_vec(),
            },
            Op::ChangePasswordStart(r) => Request::ChangePassword {
                account,
                session: r.session.to_vec(),
                registration_request: r.registration_request.to_vec(),
            },
            Op::Delete(r) => Request::Delete {
                account,
                session: r.session.to_vec(),
            },
            Op::Status(_) => Request::Status { account },
            Op::PinCatalog(r) => Request::PinCatalog {
                account,
                pin: r.pin.to_vec(),
            },
        },
    )
}
