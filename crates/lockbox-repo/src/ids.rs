//! Ids: repository, pack, index, snapshot (random, public) and chunk (a keyed MAC, public).

use hmac::{Hmac, Mac};
use lockbox_crypto::{CryptoRng, RepoKeys, RngCore};
use sha2::Sha256;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// A fresh random id.
            pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
                let mut id = [0u8; 32];
                rng.fill_bytes(&mut id);
                Self(id)
            }

            /// Lowercase hex of all 32 bytes.
            pub fn hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 bytes in hex, as people see it.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..8])
            }

            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut id = [0u8; 32];
                hex::decode_to_slice(s, &mut id).ok()?;
                Some(Self(id))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.short())
            }
        }
    };
}

id_type!(
    /// A repository's random id, in its config object; every key of the repository is bound to it.
    RepoId
);
id_type!(
    /// A pack object's random id, in its name and its first bytes; its key is bound to it.
    PackId
);
id_type!(
    /// An index object's random id; its key is bound to it.
    IndexId
);
id_type!(
    /// A snapshot's id: the backup id of its stream.
    SnapshotId
);
id_type!(
    /// A chunk's id: HMAC-SHA256 of its bytes under the repository's chunk-id key.
    ChunkId
);

impl ChunkId {
    pub fn of(keys: &RepoKeys, data: &[u8]) -> Self {
        Self::keyed(&keys.chunk_id, data)
    }

    /// The id of `data` under the chunk-id key itself.
    pub(crate) fn keyed(chunk_key: &lockbox_crypto::Secret32, data: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(chunk_key.expose())
            .expect("HMAC takes any key length");
        mac.update(data);
        Self(mac.finalize().into_bytes().into())
    }
}

/// A device's random id (in its home), recorded in each catalog entry it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId(pub [u8; 16]);

impl DeviceId {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        Self(id)
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}
