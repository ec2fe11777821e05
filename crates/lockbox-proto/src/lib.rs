//! Wire messages of lockbox: the vault's protobuf/gRPC protocol ([`pb`]), the vault nodes' Raft
//! transport ([`raft_pb`]), the HPKE envelopes ([`envelope`]) that carry every client request end
//! to end to a vault partition, and the signed fleet manifest ([`manifest`]) that tells a device
//! which partitions and keys to use.
//!
//! Does: define versioned messages, size limits, and seal/open requests and responses; sign,
//! countersign and verify fleet manifests and their hash chain.
//! Does not: decide anything about records or passwords (that is `lockbox-vault-core`), or do
//! network I/O (tonic does, in the vault and gateway crates).
//! Trusts: the partition public key it is handed (the client pins it through a signed fleet
//! manifest), the fleet and witness public keys the caller pins, the `hpke` crate (RFC 9180) and
//! aws-lc-rs for AES-256-GCM, Ed25519, SHA-256 and HMAC.
#![forbid(unsafe_code)]

pub mod config_file;
pub mod envelope;
pub mod manifest;
pub mod tls;

/// Generated protobuf and gRPC code for `lockbox.vault.v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("lockbox.vault.v1");
}

/// Generated protobuf and gRPC code for `lockbox.raft.v1`: the vault nodes' Raft transport.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod raft_pb {
    tonic::include_proto!("lockbox.raft.v1");
}

/// Whether a failed call never reached the server: the connection was refused, so nothing was
/// delivered and the same request may go elsewhere. Any other failure may follow a delivery.
/// Only a local failure carries its cause; a status relayed from another hop never counts.
pub fn never_delivered(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The wall clock as Unix milliseconds: what envelopes carry in `sent_at_ms` and manifests in
/// their times, for every side (device, gateway, node, tools) to read the same way.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Wire-format version carried in every [`pb::SealedRequest`].
pub const WIRE_VERSION: u32 = 1;
/// Largest encoded message either side accepts; larger ones are refused before parsing.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Largest account id, in bytes.
pub const MAX_ACCOUNT_BYTES: usize = 64;

/// Length of the HPKE encapsulated key in every [`pb::SealedRequest`] (X25519).
pub const ENC_LEN: usize = 32;

/// Why an envelope was refused on its outside, before anyone tried to open it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("unsupported wire version {0}")]
    Version(u32),
    #[error("account id must be 1..={MAX_ACCOUNT_BYTES} bytes")]
    Account,
    #[error("malformed or oversized envelope")]
    Envelope,
}

impl pb::SealedRequest {
    /// The checks anyone on the path can make without a key: version, sizes.
    pub fn check_shape(&self) -> Result<(), ShapeError> {
        if self.version != WIRE_VERSION {
            return Err(ShapeError::Version(self.version));
        }
        if self.account.is_empty() || self.account.len() > MAX_ACCOUNT_BYTES {
            return Err(ShapeError::Account);
        }
        if self.enc.len() != ENC_LEN || self.ciphertext.len() > MAX_MESSAGE_BYTES {
            return Err(ShapeError::Envelope);
        }
        Ok(())
    }
}

impl pb::Request {
    /// The class the envelope around this request must carry in the clear.
    pub fn class(&self) -> pb::RequestClass {
        match self.op {
            Some(pb::request::Op::LoginStart(_)) => pb::RequestClass::LoginStart,
            _ => pb::RequestClass::Other,
        }
    }
}

impl core::fmt::Debug for pb::Request {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use pb::request::Op;
        let op = self.op.as_ref().map(|op| match op {
            Op::RegisterStart(_) => "RegisterStart",
            Op::RegisterFinish(_) => "RegisterFinish",
            Op::LoginStart(_) => "LoginStart",
            Op::LoginFinish(_) => "LoginFinish",
            Op::ChangePasswordStart(_) => "ChangePasswordStart",
            Op::Delete(_) => "Delete",
            Op::Status(_) => "Status",
            Op::PinCatalog(_) => "PinCatalog",
        });
        f.debug_struct("Request")
            .field("account", &self.account)
            .field(
                "account_token",
                &format_args!("[REDACTED {} bytes]", self.account_token.len()),
            )
            .field("sent_at_ms", &self.sent_at_ms)
            .field("op", &op)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_debug_redacts_the_account_token() {
        let r = super::pb::Request {
            account: b"alice".to_vec().into(),
            account_token: "v4.public.secret-token".into(),
            sent_at_ms: 1,
            op: Some(super::pb::request::Op::Status(super::pb::Status {})),
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("Status"), "{shown}");
    }
}
