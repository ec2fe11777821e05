//! The 100-byte stream header: layout, MAC, and the parse order that gives each fault its error.

use hmac::{Hmac, Mac};
use lockbox_crypto::{BACKUP_ID_LEN, BackupId, BackupKey, KEY_CHECK_LEN, StreamKeys};
use sha2::Sha256;

use crate::FormatError;

/// The 8 magic bytes every lockbox stream starts with: `"\x89LBX\r\n\x1a\n"`.
pub const MAGIC: [u8; 8] = [0x89, b'L', b'B', b'X', 0x0D, 0x0A, 0x1A, 0x0A];
/// The only format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the stream header.
pub const HEADER_LEN: usize = 100;
/// Smallest allowed `log2(chunk_size)`: 1 KiB.
pub const MIN_CHUNK_SIZE_LOG2: u8 = 10;
/// Largest allowed `log2(chunk_size)`: 16 MiB.
pub const MAX_CHUNK_SIZE_LOG2: u8 = 24;

const VERSION_AT: usize = 8;
const LOG2_AT: usize = 9;
const RESERVED: core::ops::Range<usize> = 10..12;
const CREATED: core::ops::Range<usize> = 12..20;
const BACKUP_ID: core::ops::Range<usize> = 20..52;
const KEY_CHECK: core::ops::Range<usize> = 52..68;
const MAC: core::ops::Range<usize> = 68..100;
const MAC_COVERS: core::ops::Range<usize> = 0..52;

type HmacSha256 = Hmac<Sha256>;

/// The public facts a stream header records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Random per backup; the salt of every key the stream uses.
    pub backup_id: BackupId,
    /// Plaintext bytes per chunk (a power of two, 1 KiB..=16 MiB).
    pub chunk_size: usize,
    /// Creation time chosen by the writer, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// `log2(chunk_size)` if `chunk_size` is allowed.
pub(crate) fn chunk_size_log2(chunk_size: usize) -> Result<u8, FormatError> {
    let log2 = chunk_size.trailing_zeros() as u8;
    if chunk_size.is_power_of_two() && log2_allowed(log2) {
        Ok(log2)
    } else {
        Err(FormatError::InvalidChunkSize(chunk_size))
    }
}

fn log2_allowed(log2: u8) -> bool {
    (MIN_CHUNK_SIZE_LOG2..=MAX_CHUNK_SIZE_LOG2).contains(&log2)
}

fn header_mac(keys: &StreamKeys) -> HmacSha256 {
    HmacSha256::new_from_slice(keys.header_mac.expose()).expect("HMAC accepts any key length")
}

/// The header bytes for `header`, authenticated with `keys` (which must be derived from
/// `header.backup_id`). `header.chunk_size` must already be validated.
pub(crate) fn encode(header: &Header, log2: u8, keys: &StreamKeys) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[VERSION_AT] = VERSION;
    h[LOG2_AT] = log2;
    h[CREATED].copy_from_slice(&header.created_unix_ms.to_be_bytes());
    h[BACKUP_ID].copy_from_slice(&header.backup_id.0);
    h[KEY_CHECK].copy_from_slice(&keys.key_check);
    let mut mac = header_mac(keys);
    mac.update(&h[MAC_COVERS]);
    h[MAC].copy_from_slice(&mac.finalize().into_bytes());
    h
}

/// Checks what can be checked on a header prefix of any length: the magic and the version.
/// Called on every partial header so a non-lockbox input fails at its first wrong byte.
pub(crate) fn check_prefix(prefix: &[u8]) -> Result<(), FormatError> {
    let n = prefix.len().min(MAGIC.len());
    if prefix[..n] != MAGIC[..n] {
        return Err(FormatError::NotLockbox);
    }
    match prefix.get(VERSION_AT) {
        Some(&v) if v != VERSION => Err(FormatError::UnsupportedVersion(v)),
        _ => Ok(()),
    }
}

/// Parses and authenticates a complete header. Returns the header and its stream keys.
pub(crate) fn parse(
    h: &[u8; HEADER_LEN],
    key: &BackupKey,
) -> Result<(Header, StreamKeys), FormatError> {
    check_prefix(h)?;
    let mut id = [0u8; BACKUP_ID_LEN];
    id.copy_from_slice(&h[BACKUP_ID]);
    let backup_id = BackupId(id);
    let keys = key.stream_keys(&backup_id);

    let mut mac = header_mac(&keys);
    mac.update(&h[MAC_COVERS]);
    let mac_ok = mac.verify_slice(&h[MAC]).is_ok();
    let mut stored_check = [0u8; KEY_CHECK_LEN];
    stored_check.copy_from_slice(&h[KEY_CHECK]);
    let check_ok = ct_eq_16(&stored_check, &keys.key_check);
    match (check_ok, mac_ok) {
        (true, true) => {}
        (false, false) => return Err(FormatError::WrongKey),
        _ => return Err(FormatError::HeaderCorrupt),
    }

    if h[RESERVED] != [0, 0] {
        return Err(FormatError::InvalidHeader("reserved bytes are not zero"));
    }
    let log2 = h[LOG2_AT];
    if !log2_allowed(log2) {
        return Err(FormatError::InvalidHeader("chunk size out of range"));
    }
    let mut created = [0u8; 8];
    created.copy_from_slice(&h[CREATED]);
    let header = Header {
        backup_id,
        chunk_size: 1usize << log2,
        created_unix_ms: u64::from_be_bytes(created),
    };
    Ok((header, keys))
}

/// Parses a header from `bytes`, taken as the whole input up to EOF (bytes past the header
/// are ignored). Useful to inspect a backup's header without decrypting its body.
pub fn parse_header(bytes: &[u8], key: &BackupKey) -> Result<Header, FormatError> {
    check_prefix(bytes)?;
    let h: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(FormatError::Truncated)?;
    parse(h, key).map(|(header, _)| header)
}

/// Constant-time equality of two 16-byte values.
fn ct_eq_16(a: &[u8; KEY_CHECK_LEN], b: &[u8; KEY_CHECK_LEN]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (BackupKey, Header, [u8; HEADER_LEN]) {
        let key = BackupKey::from_bytes([9; 32]);
        let header = Header {
            backup_id: BackupId([3; 32]),
            chunk_size: 1 << 16,
            created_unix_ms: 1_700_000_000_123,
        };
        let keys = key.stream_keys(&header.backup_id);
        let bytes = encode(&header, 16, &keys);
        (key, header, bytes)
    }

    #[test]
    fn round_trip_and_layout() {
        let (key, header, bytes) = sample();
        assert_eq!(&bytes[..8], b"\x89LBX\r\n\x1a\n");
        assert_eq!(bytes[8], 1);
        assert_eq!(bytes[9], 16);
        assert_eq!(&bytes[10..12], &[0, 0]);
        assert_eq!(&bytes[12..20], &1_700_000_000_123u64.to_be_bytes());
        assert_eq!(&bytes[20..52], &[3; 32]);
        assert_eq!(parse_header(&bytes, &key), Ok(header));
    }

    #[test]
    fn authentic_header_with_forbidden_values_is_invalid() {
        let (key, header, _) = sample();
        let keys = key.stream_keys(&header.backup_id);
        let resign = |mut h: [u8; HEADER_LEN]| {
            let mut mac = header_mac(&keys);
            mac.update(&h[MAC_COVERS]);
            h[MAC].copy_from_slice(&mac.finalize().into_bytes());
            h
        };
        let mut bad = encode(&header, 16, &keys);
        bad[10] = 1;
        assert_eq!(
            parse_header(&resign(bad), &key),
            Err(FormatError::InvalidHeader("reserved bytes are not zero"))
        );
        for log2 in [0, 9, 25, 255] {
            let mut bad = encode(&header, 16, &keys);
            bad[9] = log2;
            assert_eq!(
                parse_header(&resign(bad), &key),
                Err(FormatError::InvalidHeader("chunk size out of range"))
            );
        }
    }

    #[test]
    fn short_inputs() {
        let (key, _, bytes) = sample();
        for n in 0..HEADER_LEN {
            assert_eq!(
                parse_header(&bytes[..n], &key),
                Err(FormatError::Truncated),
                "{n}"
            );
        }
        assert_eq!(parse_header(b"\x89LBY", &key), Err(FormatError::NotLockbox));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size_log2(1024), Ok(10));
        assert_eq!(chunk_size_log2(16 << 20), Ok(24));
        for bad in [0, 1, 512, 1000, 1025, 32 << 20] {
            assert_eq!(
                chunk_size_log2(bad),
                Err(FormatError::InvalidChunkSize(bad))
            );
        }
    }
}
