//! The keys of one incremental repository (DESIGN.md §3, docs/repository.md).

use crate::key::{BackupKey, KEY_CHECK_LEN};
use crate::labels;
use crate::secret::{Secret32, derive32, hkdf_expand};

/// Length of a repository id, pack id or index id.
pub const REPO_ID_LEN: usize = 32;

/// Every long-lived key of the repository `repo_id` under `K`. Per-pack and per-index keys are
/// derived from these with the object's random id, so no key ever seals under two objects.
pub struct RepoKeys {
    /// HMAC-SHA256 key: chunk id = MAC(chunk bytes), in repositories of config version 1.
    pub chunk_id: Secret32,
    /// Keyed-BLAKE3 key: chunk id = BLAKE3(key, chunk bytes), from config version 2 on.
    pub chunk_id_blake3: Secret32,
    pack: Secret32,
    index: Secret32,
    /// HMAC-SHA256 key of catalog entries.
    pub catalog_mac: Secret32,
    /// HMAC-SHA256 key of the config object.
    pub config_mac: Secret32,
    /// Public: written in the config object.
    pub key_check: [u8; KEY_CHECK_LEN],
    /// Secret: seeds the chunker's gear table.
    pub chunker_seed: u64,
    snapshot: Secret32,
}

impl core::fmt::Debug for RepoKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RepoKeys([REDACTED])")
    }
}

impl RepoKeys {
    /// The AES-256-GCM key of the pack `pack_id`.
    pub fn pack_key(&self, pack_id: &[u8; REPO_ID_LEN]) -> Secret32 {
        derive32(self.pack.expose(), Some(pack_id), labels::REPO_PACK_KEY)
    }

    /// The key this repository's snapshot streams are sealed under, in place of K.
    pub fn snapshot_key(&self) -> BackupKey {
        BackupKey::from_bytes(*self.snapshot.expose())
    }

    /// The AES-256-GCM key of the index object `index_id`.
    pub fn index_key(&self, index_id: &[u8; REPO_ID_LEN]) -> Secret32 {
        derive32(self.index.expose(), Some(index_id), labels::REPO_INDEX_KEY)
    }
}

impl BackupKey {
    /// The keys of the repository `repo_id` (a random public id in its config object).
    pub fn repo_keys(&self, repo_id: &[u8; REPO_ID_LEN]) -> RepoKeys {
        let repo = derive32(self.expose(), Some(repo_id), labels::REPO);
        let ikm = repo.expose();
        let mut key_check = [0u8; KEY_CHECK_LEN];
        hkdf_expand(ikm, None, labels::REPO_KEY_CHECK, &mut key_check);
        let mut seed = [0u8; 8];
        hkdf_expand(ikm, None, labels::REPO_CHUNKER_SEED, &mut seed);
        RepoKeys {
            chunk_id: derive32(ikm, None, labels::REPO_CHUNK_ID),
            chunk_id_blake3: derive32(ikm, None, labels::REPO_CHUNK_ID_BLAKE3),
            pack: derive32(ikm, None, labels::REPO_PACK),
            index: derive32(ikm, None, labels::REPO_INDEX),
            catalog_mac: derive32(ikm, None, labels::REPO_CATALOG_MAC),
            config_mac: derive32(ikm, None, labels::REPO_CONFIG_MAC),
            key_check,
            chunker_seed: u64::from_be_bytes(seed),
            snapshot: derive32(ikm, None, labels::REPO_SNAPSHOT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_keys_depend_on_key_and_repository_and_are_distinct() {
        let k = BackupKey::from_bytes([1; 32]);
        let a = k.repo_keys(&[7; 32]);
        for other in [
            k.repo_keys(&[8; 32]),
            BackupKey::from_bytes([2; 32]).repo_keys(&[7; 32]),
        ] {
            assert_ne!(a.chunk_id, other.chunk_id);
            assert_ne!(a.chunk_id_blake3, other.chunk_id_blake3);
            assert_ne!(a.catalog_mac, other.catalog_mac);
            assert_ne!(a.key_check, other.key_check);
            assert_ne!(a.pack_key(&[3; 32]), other.pack_key(&[3; 32]));
            assert_ne!(a.snapshot, other.snapshot);
        }
        let all = [
            a.chunk_id.clone(),
            a.chunk_id_blake3.clone(),
            a.pack.clone(),
            a.index.clone(),
            a.catalog_mac.clone(),
            a.config_mac.clone(),
            a.pack_key(&[3; 32]),
            a.pack_key(&[4; 32]),
            a.index_key(&[3; 32]),
            a.snapshot.clone(),
        ];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn debug_is_redacted() {
        let keys = BackupKey::from_bytes([1; 32]).repo_keys(&[7; 32]);
        assert_eq!(format!("{keys:?}"), "RepoKeys([REDACTED])");
    }

    #[test]
    fn repo_keys_golden() {
        // Pinned: a change to a label or the derivation would orphan every repository.
        let keys = BackupKey::from_bytes([0x11; 32]).repo_keys(&[0x22; 32]);
        assert_eq!(hex::encode(keys.key_check), GOLDEN_REPO_KEY_CHECK);
        assert_eq!(
            hex::encode(keys.pack_key(&[0x33; 32]).expose()),
            GOLDEN_PACK_KEY
        );
        assert_eq!(
            hex::encode(keys.snapshot_key().expose()),
            GOLDEN_SNAPSHOT_KEY
        );
    }
    // Computed with an independent HKDF (Python hmac/hashlib) when pinned.
    const GOLDEN_REPO_KEY_CHECK: &str = "eac2109a6cf4b0ab4b9720267bbe20a0";
    const GOLDEN_PACK_KEY: &str =
        "8347124cda2d35e5a533c7676653d1746d5837ae0f88b84aa7b77f612c08f46f";
    const GOLDEN_SNAPSHOT_KEY: &str =
        "0fba9f08d67d88d71afe3c9162cf280bb0f4114ac0c3c65cba4004d451dcf4c4";
}
