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
