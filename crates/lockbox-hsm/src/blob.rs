//! The sealed blob layout shared by every sealer (see the crate docs).

use crate::{KeyId, SealError};

/// Version byte of the current blob format.
pub const BLOB_VERSION: u8 = 1;
/// Length of the AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Version byte + key id + nonce.
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Bytes of the header that are bound into the GCM additional data.
const BOUND_LEN: usize = 1 + 4;

/// A parsed blob: header fields plus a borrowed ciphertext (with tag).
pub(crate) struct Parsed<'a> {
    pub key_id: KeyId,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: &'a [u8],
}

/// Fills `buf` from the OS RNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), SealError> {
    use rand_core::RngCore;
    rand_core::OsRng
        .try_fill_bytes(buf)
        .map_err(|_| SealError::Crypto("OS RNG failed"))
}

/// Draws a fresh nonce from the OS RNG.
pub(crate) fn fresh_nonce() -> Result<[u8; NONCE_LEN], SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    Ok(nonce)
}

/// The blob header for `key_id` and `nonce`.
pub(crate) fn header(key_id: KeyId, nonce: &[u8; NONCE_LEN]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = BLOB_VERSION;
    h[1..5].copy_from_slice(&key_id.0.to_be_bytes());
    h[5..].copy_from_slice(nonce);
    h
}

/// The GCM additional data: version ‖ key id ‖ caller AAD. The bound prefix has a fixed
/// length, so the concatenation is unambiguous.
pub(crate) fn full_aad(key_id: KeyId, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BOUND_LEN + aad.len());
    out.push(BLOB_VERSION);
    out.extend_from_slice(&key_id.0.to_be_bytes());
    out.extend_from_slice(aad);
    out
}

pub(crate) fn parse(sealed: &[u8]) -> Result<Parsed<'_>, SealError> {
    let (&version, rest) = sealed.split_first().ok_or(SealError::Malformed {
        reason: "empty blob",
    })?;
    if version != BLOB_VERSION {
        return Err(SealError::Malformed {
            reason: "unsupported blob version",
        });
    }
    if sealed.len() < HEADER_LEN + TAG_LEN {
        return Err(SealError::Malformed {
            reason: "blob shorter than header and tag",
        });
    }
    let (id, rest) = rest.split_at(4);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    Ok(Parsed {
        key_id: KeyId(u32::from_be_bytes(id.try_into().map_err(|_| {
            SealError::Malformed {
                reason: "bad key id",
            }
        })?)),
        nonce: nonce.try_into().map_err(|_| SealError::Malformed {
            reason: "bad nonce",
        })?,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_parse() {
        let nonce = [7u8; NONCE_LEN];
        let mut blob = header(KeyId(0x0102_0304), &nonce).to_vec();
        blob.extend_from_slice(&[9u8; TAG_LEN + 3]);
        let p = parse(&blob).unwrap();
        assert_eq!(p.key_id, KeyId(0x0102_0304));
        assert_eq!(p.nonce, nonce);
        assert_eq!(p.ciphertext, &[9u8; TAG_LEN + 3][..]);
        assert_eq!(&blob[..5], &[1, 1, 2, 3, 4]);
    }

    #[test]
    fn short_or_unversioned_blobs_are_malformed() {
        assert!(matches!(parse(&[]), Err(SealError::Malformed { .. })));
        let short = [BLOB_VERSION; HEADER_LEN + TAG_LEN - 1];
        assert!(matches!(parse(&short), Err(SealError::Malformed { .. })));
        let mut wrong = vec![2u8];
        wrong.extend_from_slice(&[0u8; HEADER_LEN + TAG_LEN]);
        assert!(matches!(parse(&wrong), Err(SealError::Malformed { .. })));
    }

    #[test]
    fn full_aad_binds_version_and_key_id() {
        assert_eq!(full_aad(KeyId(5), b"ab"), vec![1, 0, 0, 0, 5, b'a', b'b']);
    }
}
