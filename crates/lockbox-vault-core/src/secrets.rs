//! The partition's long-term OPAQUE secrets, in a form the shell can seal with its HSM.

use opaque_ke::ServerSetup;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::suite::Suite;

/// Length of [`VaultSecrets::to_bytes`]: OPRF seed (64) ‖ server private key (32) ‖ dummy public
/// key used to fake responses (32).
pub const SECRETS_LEN: usize = 128;

/// Why unsealed secret bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("vault secrets must be 128 bytes, got {0}")]
    WrongLength(usize),
    #[error("vault secrets do not decode (bad scalar or point)")]
    Invalid,
}

/// OPAQUE `ServerSetup`: the OPRF seed and the server's static key pair. Created once per
/// partition (fleet ceremony), sealed at rest by the HSM, and shared by the partition's replicas.
#[derive(Clone)]
pub struct VaultSecrets(ServerSetup<Suite>);

impl VaultSecrets {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(ServerSetup::new(rng))
    }

    /// The secret bytes, to be sealed immediately; zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize().to_vec())
    }

    /// Exactly [`SECRETS_LEN`] bytes from [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretsError> {
        if bytes.len() != SECRETS_LEN {
            return Err(SecretsError::WrongLength(bytes.len()));
        }
        ServerSetup::<Suite>::deserialize(bytes)
            .map(Self)
            .map_err(|_| SecretsError::Invalid)
    }

    /// The server's static OPAQUE public key, published in the fleet manifest.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0.keypair().public().serialize());
        out
    }

    /// What a client must know about this vault: its OPAQUE identity and public key.
    pub fn identity(&self, server_id: &[u8]) -> VaultIdentity {
        VaultIdentity {
            server_id: server_id.to_vec(),
            public_key: self.public_key(),
        }
    }

    pub(crate) fn setup(&self) -> &ServerSetup<Suite> {
        &self.0
    }
}

impl core::fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("VaultSecrets([REDACTED])")
    }
}

/// The OPAQUE server identifier of vault partition `partition` (`lockbox-vault/p{partition}`),
/// the one spelling that nodes and clients both bind into every transcript.
pub fn partition_server_id(partition: u32) -> Vec<u8> {
    format!("lockbox-vault/p{partition}").into_bytes()
}

/// The public facts a client pins for a vault partition (from the signed fleet manifest):
/// the OPAQUE server identifier bound into every transcript, and the server's static public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultIdentity {
    pub server_id: Vec<u8>,
    pub public_key: [u8; 32],
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn round_trip_and_strict_length() {
        let s = VaultSecrets::generate(&mut OsRng);
        let bytes = s.to_bytes();
        assert_eq!(bytes.len(), SECRETS_LEN);
        let back = VaultSecrets::from_bytes(&bytes).unwrap();
        assert_eq!(back.public_key(), s.public_key());
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(
            VaultSecrets::from_bytes(&bytes[..SECRETS_LEN - 1]).unwrap_err(),
            SecretsError::WrongLength(127)
        );
        assert!(VaultSecrets::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        assert_eq!(
            VaultSecrets::from_bytes(&[0xFF; SECRETS_LEN]).unwrap_err(),
            SecretsError::Invalid
        );
        assert_ne!(
            VaultSecrets::generate(&mut OsRng).public_key(),
            s.public_key()
        );
        assert_eq!(format!("{s:?}"), "VaultSecrets([REDACTED])");
    }
}
