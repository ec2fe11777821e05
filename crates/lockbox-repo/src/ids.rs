//! Ids: repository, pack, index, snapshot (random, public) and chunk (a keyed MAC, public).

use hmac::{Hmac, Mac};
use lockbox_crypto::{CryptoRng, RepoKeys, RngCore, Secret32};
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
    /// A chunk's id: a keyed MAC of its bytes under the repository's chunk-id key, as its
    /// [`ChunkIds`] says.
    ChunkId
);

/// How a repository names its chunks, fixed by its config's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkIds {
    /// Config version 1: HMAC-SHA256 under the `chunk-id` key.
    HmacSha256,
    /// Config version 2, what new repositories use: keyed BLAKE3 under the `chunk-id-blake3`
    /// key, two to three times faster than HMAC-SHA256 with SHA-NI on the chunk sizes used.
    Blake3,
}

/// The chunk-id MAC with its key: what names and checks chunks.
#[derive(Clone)]
pub(crate) struct ChunkNamer {
    ids: ChunkIds,
    key: Secret32,
}

impl std::fmt::Debug for ChunkNamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkNamer({:?}, [REDACTED])", self.ids)
    }
}

impl ChunkNamer {
    pub(crate) fn new(keys: &RepoKeys, ids: ChunkIds) -> Self {
        let key = match ids {
            ChunkIds::HmacSha256 => keys.chunk_id.clone(),
            ChunkIds::Blake3 => keys.chunk_id_blake3.clone(),
        };
        ChunkNamer { ids, key }
    }

    /// The id of `data`.
    pub(crate) fn id(&self, data: &[u8]) -> ChunkId {
        match self.ids {
            ChunkIds::HmacSha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose())
                    .expect("HMAC takes any key length");
                mac.update(data);
                ChunkId(mac.finalize().into_bytes().into())
            }
            ChunkIds::Blake3 => ChunkId(*blake3::keyed_hash(self.key.expose(), data).as_bytes()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use lockbox_crypto::BackupKey;

    #[test]
    fn chunk_ids_golden() {
        // Computed independently from docs/repository.md with Python's hmac, hashlib and the
        // `blake3` package when pinned.
        let keys = BackupKey::from_bytes([0x11; 32]).repo_keys(&[0x22; 32]);
        let hmac = ChunkNamer::new(&keys, ChunkIds::HmacSha256).id(b"hello");
        let blake3 = ChunkNamer::new(&keys, ChunkIds::Blake3).id(b"hello");
        assert_eq!(hmac.hex(), GOLDEN_HMAC_ID);
        assert_eq!(blake3.hex(), GOLDEN_BLAKE3_ID);
    }
    const GOLDEN_HMAC_ID: &str = "7d41109f97d06bffdd2907ade73f4f70db278aac6a839e280275166f582c2dd5";
    const GOLDEN_BLAKE3_ID: &str =
        "0e9bd16f21b56d0ba042d47dcf6a7f74792ad733cbaaf340d280b6e4f8edf604";

    #[test]
    fn namer_debug_is_redacted() {
        let keys = BackupKey::from_bytes([0x11; 32]).repo_keys(&[0x22; 32]);
        let namer = ChunkNamer::new(&keys, ChunkIds::Blake3);
        assert_eq!(format!("{namer:?}"), "ChunkNamer(Blake3, [REDACTED])");
    }
}
