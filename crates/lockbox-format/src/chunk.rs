//! One chunk: nonce, padding, sealing and opening, and the error-path search that tells a
//! reordered chunk from a corrupt one.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptingKey, UnboundCipherKey,
};
use lockbox_crypto::{CHUNK_TAG_LEN, StreamKeys};
use zeroize::{Zeroize, Zeroizing};

use crate::FormatError;

/// Length of the AES-GCM tag after each chunk.
pub const GCM_TAG_LEN: usize = 16;
/// How far past the current chunk the error path looks for the position a chunk belongs at.
pub const SEARCH_AHEAD: u64 = 4096;
const PAD_MARK: u8 = 0x80;
const BLOCK: usize = 16;

/// Bytes of one segment on the wire: chunk tag, ciphertext, GCM tag.
pub const fn segment_len(chunk_size: usize) -> usize {
    CHUNK_TAG_LEN + chunk_size + GCM_TAG_LEN
}

/// The 96-bit nonce of chunk `index`: 11-byte big-endian counter, then the last-chunk flag.
pub(crate) fn nonce_bytes(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Length of the data in a padded final chunk, or `None` if the ISO/IEC 7816-4 padding is bad.
pub(crate) fn unpadded_len(chunk: &[u8]) -> Option<usize> {
    let mark = chunk.iter().rposition(|&b| b != 0)?;
    (chunk[mark] == PAD_MARK).then_some(mark)
}

/// The per-stream chunk keys.
pub(crate) struct ChunkCipher {
    aead: LessSafeKey,
    /// Raw AES under the same key: only for the error-path search.
    ecb: EncryptingKey,
    ecb_dec: DecryptingKey,
    pub(crate) chunk_tag: [u8; CHUNK_TAG_LEN],
    pub(crate) chunk_size: usize,
}

impl ChunkCipher {
    pub(crate) fn new(keys: &StreamKeys, chunk_size: usize) -> Result<Self, FormatError> {
        let key = keys.payload.expose();
        let aead = UnboundKey::new(&AES_256_GCM, key).map_err(|_| FormatError::Crypto)?;
        let raw = || UnboundCipherKey::new(&AES_256, key);
        let ecb = raw()
            .and_then(EncryptingKey::ecb)
            .map_err(|_| FormatError::Crypto)?;
        let ecb_dec = raw()
            .and_then(DecryptingKey::ecb)
            .map_err(|_| FormatError::Crypto)?;
        Ok(Self {
            aead: LessSafeKey::new(aead),
            ecb,
            ecb_dec,
            chunk_tag: keys.chunk_tag,
            chunk_size,
        })
    }

    pub(crate) fn segment_len(&self) -> usize {
        segment_len(self.chunk_size)
    }

    /// Appends the segment of chunk `index` to `out`. `data` is a whole chunk, or for the last
    /// chunk less than a whole chunk (it is padded). Seals in place inside `out`.
    pub(crate) fn seal(
        &self,
        index: u64,
        last: bool,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        debug_assert!(if last {
            data.len() < self.chunk_size
        } else {
            data.len() == self.chunk_size
        });
        // Grow `out` before the plaintext lands in it: a reallocation later would leave a
        // copy of the plaintext in freed memory.
        out.reserve(self.segment_len());
        let start = out.len();
        out.extend_from_slice(&[0; CHUNK_TAG_LEN]);
        out.extend_from_slice(data);
        out.resize(start + self.segment_len(), 0);
        let result = self.seal_segment(index, last, data.len(), &mut out[start..]);
        if result.is_err() {
            out[start..].zeroize();
            out.truncate(start);
        }
        result
    }

    /// Seals one segment in place. `segment` is exactly one segment long and its data region
    /// (after the chunk tag) holds the plaintext: a whole chunk, or for the last chunk `len`
    /// bytes, which are padded here. Writes the chunk tag and the GCM tag around it.
    pub(crate) fn seal_segment(
        &self,
        index: u64,
        last: bool,
        len: usize,
        segment: &mut [u8],
    ) -> Result<(), FormatError> {
        debug_assert_eq!(segment.len(), self.segment_len());
        let (head, rest) = segment.split_at_mut(CHUNK_TAG_LEN);
        let (body, tag_out) = rest.split_at_mut(self.chunk_size);
        head.copy_from_slice(&self.chunk_tag);
        if last {
            body[len] = PAD_MARK;
            body[len + 1..].fill(0);
        }
        let nonce = Nonce::assume_unique_for_key(nonce_bytes(index, last));
        match self
            .aead
            .seal_in_place_separate_tag(nonce, Aad::empty(), body)
        {
            Ok(tag) => {
                tag_out.copy_from_slice(tag.as_ref());
                Ok(())
            }
            Err(_) => {
                body.zeroize();
                Err(FormatError::Crypto)
            }
        }
    }

    /// Test-only: seals a whole chunk under the final flag without padding, which no encoder
    /// does, to check the decoder rejects it.
    #[cfg(test)]
    pub(crate) fn seal_unpadded_final(&self, index: u64, data: &[u8], out: &mut Vec<u8>) {
        assert_eq!(data.len(), self.chunk_size);
        let start = out.len();
        out.extend_from_slice(&self.chunk_tag);
        out.extend_from_slice(data);
        let nonce = Nonce::assume_unique_for_key(nonce_bytes(index, true));
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce, Aad::empty(), &mut out[start + CHUNK_TAG_LEN..])
            .unwrap();
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens `ct`/`tag` as chunk `index` into `plain` (same length as `ct`). On failure `plain`
    /// holds no plaintext.
    pub(crate) fn open(
        &self,
        index: u64,
        last: bool,
        ct: &[u8],
        tag: &[u8],
        plain: &mut [u8],
    ) -> bool {
        let nonce = Nonce::assume_unique_for_key(nonce_bytes(index, last));
        let ok = self
            .aead
            .open_separate_gather(nonce, Aad::empty(), ct, tag, plain)
            .is_ok();
        if !ok {
            plain.zeroize();
        }
        ok
    }

    /// Error path: the position `i` in `0..=hi`, `i != skip`, under which `ct`/`tag` opens
    /// (with either flag), if any.
    ///
    /// GCM's tag is `E_K(J0(nonce)) ^ GHASH_H(ct)`, and the GHASH part does not depend on the
    /// nonce. So `GHASH_H(ct)` is computed once (by re-sealing under a reference nonce), and
    /// `D_K(tag ^ GHASH_H(ct))` is then the `J0` block of the one nonce the chunk was sealed
    /// under, if it was sealed under this key at all. That costs two passes over the chunk
    /// instead of `2 * hi` trial decryptions. A position found this way is confirmed with a
    /// real AEAD open, so a fault here can only miss a position, never invent one.
    pub(crate) fn locate(&self, ct: &[u8], tag: &[u8], skip: u64, hi: u64) -> Option<u64> {
        let ghash = self.ghash_of(ct)?;
        let mut block = [0u8; BLOCK];
        for (b, (t, g)) in block.iter_mut().zip(tag.iter().zip(&ghash)) {
            *b = t ^ g;
        }
        let j0 = self
            .ecb_dec
            .decrypt(&mut block, DecryptionContext::None)
            .ok()?;
        let (index, last) = parse_j0(j0)?;
        let ok = index <= hi && index != skip && self.confirm(index, last, ct, tag);
        ok.then_some(index)
    }

    fn confirm(&self, index: u64, last: bool, ct: &[u8], tag: &[u8]) -> bool {
        let mut scratch = Zeroizing::new(vec![0u8; ct.len()]);
        self.open(index, last, ct, tag, &mut scratch)
    }

    /// `GHASH_H(ct)` as GCM computes it with empty AAD: the tag of `ct` under any nonce `r`,
    /// xor `E_K(J0(r))`. The tag under `r` comes from sealing `ct ^ keystream(r)`, which
    /// re-encrypts to exactly `ct`.
    fn ghash_of(&self, ct: &[u8]) -> Option<[u8; BLOCK]> {
        if !ct.len().is_multiple_of(BLOCK) {
            return None;
        }
        let r = [0xA5u8; 12];
        let mut buf = Zeroizing::new(Vec::with_capacity(ct.len()));
        for k in 0..ct.len() / BLOCK {
            buf.extend_from_slice(&counter_block(&r, 2 + k as u32));
        }
        self.ecb.encrypt(&mut buf).ok()?;
        buf.iter_mut().zip(ct).for_each(|(b, c)| *b ^= c);
        let t = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(r), Aad::empty(), &mut buf)
            .ok()?;
        if buf.as_slice() != ct {
            return None;
        }
        let mut e = j0(&r);
        self.ecb.encrypt(&mut e).ok()?;
        let mut g = [0u8; BLOCK];
        for (k, b) in g.iter_mut().enumerate() {
            *b = t.as_ref()[k] ^ e[k];
        }
        Some(g)
    }
}

/// GCM's counter block for a 96-bit nonce: `nonce || be32(counter)`.
fn counter_block(nonce: &[u8; 12], counter: u32) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..12].copy_from_slice(nonce);
    b[12..].copy_from_slice(&counter.to_be_bytes());
    b
}

/// The chunk index and last flag of a `J0` block built by [`j0`] from [`nonce_bytes`].
fn parse_j0(b: &[u8]) -> Option<(u64, bool)> {
    let ok_shape = b.len() == BLOCK && b[..3] == [0; 3] && b[12..] == [0, 0, 0, 1];
    let last = match b.get(11) {
        Some(0) => false,
        Some(1) => true,
        _ => return None,
    };
    let index = u64::from_be_bytes(b.get(3..11)?.try_into().ok()?);
    ok_shape.then_some((index, last))
}

/// GCM's pre-counter block `J0`, whose encryption masks the tag.
fn j0(nonce: &[u8; 12]) -> [u8; BLOCK] {
    counter_block(nonce, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockbox_crypto::{BackupId, BackupKey};

    fn cipher(chunk_size: usize) -> ChunkCipher {
        let keys = BackupKey::from_bytes([4; 32]).stream_keys(&BackupId([5; 32]));
        ChunkCipher::new(&keys, chunk_size).unwrap()
    }

    fn split(seg: &[u8]) -> (&[u8], &[u8], &[u8]) {
        let (t, rest) = seg.split_at(CHUNK_TAG_LEN);
        let (ct, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
        (t, ct, tag)
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(nonce_bytes(0, false), [0; 12]);
        assert_eq!(nonce_bytes(1, true), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(
            nonce_bytes(u64::MAX, false),
            [0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]
        );
    }

    #[test]
    fn padding() {
        assert_eq!(unpadded_len(&[1, 2, 0x80, 0, 0]), Some(2));
        assert_eq!(unpadded_len(&[0x80, 0, 0]), Some(0));
        assert_eq!(unpadded_len(&[1, 2, 0x80]), Some(2));
        assert_eq!(unpadded_len(&[1, 2, 0x81, 0]), None);
        assert_eq!(unpadded_len(&[0, 0]), None);
    }

    #[test]
    fn seal_open_and_segment_shape() {
        let c = cipher(1024);
        let mut out = Vec::new();
        c.seal(7, true, b"hello", &mut out).unwrap();
        assert_eq!(out.len(), segment_len(1024));
        let (t, ct, tag) = split(&out);
        assert_eq!(t, c.chunk_tag);
        let mut plain = vec![0; 1024];
        assert!(!c.open(7, false, ct, tag, &mut plain));
        assert!(plain.iter().all(|&b| b == 0));
        assert!(!c.open(6, true, ct, tag, &mut plain));
        assert!(c.open(7, true, ct, tag, &mut plain));
        assert_eq!(unpadded_len(&plain), Some(5));
        assert_eq!(&plain[..5], b"hello");
    }

    #[test]
    fn locate_finds_the_true_position_and_nothing_else() {
        let c = cipher(1024);
        for (at, last) in [
            (0, false),
            (1, true),
            (4000, false),
            (4100, true),
            (u64::MAX - 1, true),
        ] {
            let mut out = Vec::new();
            let data = vec![at as u8; if last { 100 } else { 1024 }];
            c.seal(at, last, &data, &mut out).unwrap();
            let (_, ct, tag) = split(&out);
            let expect = (at <= 4100).then_some(at);
            assert_eq!(c.locate(ct, tag, u64::MAX, 4100), expect);
            assert_eq!(c.locate(ct, tag, 7, u64::MAX), Some(at), "any distance");
            assert_eq!(c.locate(ct, tag, at, u64::MAX), None, "skip is honoured");
            if at > 0 {
                assert_eq!(
                    c.locate(ct, tag, u64::MAX, at - 1),
                    None,
                    "outside the window"
                );
            }
            let mut bad = ct.to_vec();
            bad[3] ^= 1;
            assert_eq!(c.locate(&bad, tag, u64::MAX, u64::MAX), None);
            let mut bad_tag = tag.to_vec();
            bad_tag[15] ^= 1;
            assert_eq!(c.locate(ct, &bad_tag, u64::MAX, u64::MAX), None);
        }
    }
}
