//! Every HKDF `info` label and every domain-separation prefix (signatures, hashes) lockbox uses.
//! Labels are versioned (`lockbox/v1/...`) and distinct, so no two derivations can ever produce
//! the same key and no signature or hash made for one purpose is valid for another. A new format
//! version gets new labels.

/// Per-backup key: `HKDF-SHA256(ikm = K, salt = backup_id, info = BACKUP)`.
pub const BACKUP: &[u8] = b"lockbox/v1/backup";
/// Expanded from the per-backup key: the AES-256-GCM key that seals the chunks.
pub const PAYLOAD: &[u8] = b"lockbox/v1/payload";
/// Expanded from the per-backup key: the HMAC-SHA256 key that authenticates the header.
pub const HEADER_MAC: &[u8] = b"lockbox/v1/header-mac";
/// Expanded from the per-backup key: the key-check value stored in the header, which lets a
/// decoder say "wrong key" rather than "corrupt data".
pub const KEY_CHECK: &[u8] = b"lockbox/v1/key-check";
/// Expanded from the per-backup key: the short tag that marks each chunk as this backup's.
pub const CHUNK_TAG: &[u8] = b"lockbox/v1/chunk-tag";
/// Vault path: `wrap_key = HKDF-SHA256(ikm = OPAQUE export_key, info = WRAP)`.
pub const WRAP: &[u8] = b"lockbox/v1/wrap";

/// Catalog pin: the Ed25519 seed a device signs its catalog position with for the vault,
/// `HKDF-SHA256(ikm = K, info = VAULT_CATALOG_PIN_KEY)`. The vault keeps only the public key.
pub const VAULT_CATALOG_PIN_KEY: &[u8] = b"lockbox/v1/vault/catalog-pin/key";
/// Prefix of the message a catalog pin signs: `VAULT_CATALOG_PIN ‖ len(account) ‖ account ‖
/// sequence ‖ body`.
pub const VAULT_CATALOG_PIN: &[u8] = b"lockbox/v1/vault/catalog-pin/sign";

/// Vault login: the key that seals `wrapped_K` in the login reply, expanded from the OPAQUE
/// session key (which seals exactly one reply).
pub const VAULT_LOGIN_REPLY: &[u8] = b"lockbox/v1/vault-login-reply";
/// HPKE `info` prefix for a client → vault request envelope (followed by partition and account).
pub const ENVELOPE: &[u8] = b"lockbox/v1/envelope";
/// HPKE exporter context for the key that seals the vault's response to one request.
pub const RESPONSE: &[u8] = b"lockbox/v1/response";

/// PASETO implicit assertion of every account token: a token signed for anything else by the
/// same identity-provider key never verifies as an account token.
pub const ACCOUNT_TOKEN: &[u8] = b"lockbox/v1/account-token";

/// Prefix of the message the fleet key signs: `FLEET_MANIFEST_FLEET ‖ body`.
pub const FLEET_MANIFEST_FLEET: &[u8] = b"lockbox/v1/fleet-manifest/fleet";
/// Prefix of the message the witness key countersigns: `FLEET_MANIFEST_WITNESS ‖ body`.
pub const FLEET_MANIFEST_WITNESS: &[u8] = b"lockbox/v1/fleet-manifest/witness";
/// Chain hash of a manifest: `SHA-256(FLEET_MANIFEST_HASH ‖ body)`.
pub const FLEET_MANIFEST_HASH: &[u8] = b"lockbox/v1/fleet-manifest/hash";
/// Account routing: `HMAC-SHA256(routing_key, FLEET_ROUTING ‖ account)`.
pub const FLEET_ROUTING: &[u8] = b"lockbox/v1/fleet-routing";

/// A replicated partition's record key: `HKDF(partition secrets, PARTITION_RECORD_KEY ‖
/// partition)`, the same on every replica.
pub const PARTITION_RECORD_KEY: &[u8] = b"lockbox/v1/partition-record-key";
/// One account's record key under it: `HKDF(record key, RECORD_KEY ‖ account)`.
pub const RECORD_KEY: &[u8] = b"lockbox/v1/record-key";
/// A replicated partition's log-chain key: `HKDF(partition secrets, PARTITION_LOG_KEY ‖
/// partition)`.
pub const PARTITION_LOG_KEY: &[u8] = b"lockbox/v1/partition-log-key";

/// Incremental repository: `repo_key = HKDF-SHA256(ikm = K, salt = repo_id, info = REPO)`. Every
/// key below is expanded from it, so nothing of one repository opens in another.
pub const REPO: &[u8] = b"lockbox/v1/repo";
/// Expanded from the repository key: the HMAC-SHA256 key that names chunks (chunk id = MAC of
/// the chunk's bytes), so the storage cannot test whether a user holds a known file.
pub const REPO_CHUNK_ID: &[u8] = b"lockbox/v1/repo/chunk-id";
/// Expanded from the repository key: the keyed-BLAKE3 key that names chunks in repositories
/// whose config is version 2 (chunk id = BLAKE3 keyed hash of the chunk's bytes). A key of its
/// own, so no key is ever used with two MACs.
pub const REPO_CHUNK_ID_BLAKE3: &[u8] = b"lockbox/v1/repo/chunk-id-blake3";
/// Expanded from the repository key: the base of the per-pack keys.
pub const REPO_PACK: &[u8] = b"lockbox/v1/repo/pack";
/// Per-pack AES-256-GCM key: `HKDF(ikm = pack base, salt = pack_id, info = REPO_PACK_KEY)`.
pub const REPO_PACK_KEY: &[u8] = b"lockbox/v1/repo/pack-key";
/// Expanded from the repository key: the base of the per-index-object keys.
pub const REPO_INDEX: &[u8] = b"lockbox/v1/repo/index";
/// Per-index-object AES-256-GCM key: `HKDF(ikm = index base, salt = index_id, info = this)`.
pub const REPO_INDEX_KEY: &[u8] = b"lockbox/v1/repo/index-key";
/// Expanded from the repository key: the HMAC-SHA256 key of catalog entries.
pub const REPO_CATALOG_MAC: &[u8] = b"lockbox/v1/repo/catalog-mac";
/// Expanded from the repository key: the HMAC-SHA256 key of the repository's config object.
pub const REPO_CONFIG_MAC: &[u8] = b"lockbox/v1/repo/config-mac";
/// Expanded from the repository key: the key-check value in the config object, which tells
/// "wrong key" from "corrupt config".
pub const REPO_KEY_CHECK: &[u8] = b"lockbox/v1/repo/key-check";
/// Expanded from the repository key: the seed of the content-defined chunker's gear table, so
/// chunk boundaries (and so chunk sizes the storage sees) depend on the key, not only on content.
pub const REPO_CHUNKER_SEED: &[u8] = b"lockbox/v1/repo/chunker-seed";
/// Expanded from the repository key: the key snapshot streams are sealed under (in the backup
/// stream format, in place of K), so a snapshot never opens as a single-stream backup under K,
/// nor as a snapshot of another repository.
pub const REPO_SNAPSHOT: &[u8] = b"lockbox/v1/repo/snapshot";

/// All labels, for the test that proves they are distinct.
pub const ALL: &[&[u8]] = &[
    BACKUP,
    PAYLOAD,
    HEADER_MAC,
    KEY_CHECK,
    CHUNK_TAG,
    WRAP,
    VAULT_LOGIN_REPLY,
    ENVELOPE,
    RESPONSE,
    ACCOUNT_TOKEN,
    FLEET_MANIFEST_FLEET,
    FLEET_MANIFEST_WITNESS,
    FLEET_MANIFEST_HASH,
    FLEET_ROUTING,
    PARTITION_RECORD_KEY,
    RECORD_KEY,
    PARTITION_LOG_KEY,
    REPO,
    REPO_CHUNK_ID,
    REPO_CHUNK_ID_BLAKE3,
    REPO_PACK,
    REPO_PACK_KEY,
    REPO_INDEX,
    REPO_INDEX_KEY,
    REPO_CATALOG_MAC,
    REPO_CONFIG_MAC,
    REPO_KEY_CHECK,
    REPO_CHUNKER_SEED,
    REPO_SNAPSHOT,
    VAULT_CATALOG_PIN_KEY,
    VAULT_CATALOG_PIN,
];

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_distinct_and_versioned() {
        for (i, a) in super::ALL.iter().enumerate() {
            assert!(a.starts_with(b"lockbox/v1/"));
            for b in &super::ALL[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
