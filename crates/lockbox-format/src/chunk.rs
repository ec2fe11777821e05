//! One chunk: nonce, padding, sealing and opening, and the error-path search that tells a
//! reordered chunk from a corrupt one.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use lockbox_crypto::{CHUNK_TAG_LEN, StreamKeys};
use zeroize::Zeroize;

use crate::FormatError;

/// Length of the AES-GCM tag after each chunk.
pub const GCM_TAG_LEN: usize = 16;
/// How far from its position the error path looks for where a chunk that does not open
/// belongs: chunk `j` is trial-opened at every counter in `[j - 16, j + 16]` other than `j`,
/// under both last-flag values (at most 64 extra opens, on the error path only).
pub const REORDER_WINDOW: u64 = 16;
const PAD_MARK: u8 = 0x80;

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
    pub(crate) chunk_tag: [u8; CHUNK_TAG_LEN],
    pub(crate) chunk_size: usize,
}

impl ChunkCipher {
    pub(crate) fn new(keys: &StreamKeys, chunk_size: usize) -> Result<Self, FormatError> {
        let aead = UnboundKey::new(&AES_256_GCM, keys.payload.expose())
            .map_err(|_| FormatError::Crypto)?;
        Ok(Self {
            aead: LessSafeKey::new(aead),
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

    /// Error path: the position other than `index`, at most [`REORDER_WINDOW`] away, under
    /// which `ct`/`tag` opens with either flag, nearest first. Each trial is a real AEAD open
    /// into `scratch` (one chunk long), which is wiped after every trial: whatever opens here
    /// is only evidence for the error, never output.
    pub(crate) fn locate(
        &self,
        ct: &[u8],
        tag: &[u8],
        index: u64,
        scratch: &mut [u8],
    ) -> Option<u64> {
        neighbours(index).find(|&i| {
            self.opens_wiped(i, false, ct, tag, scratch)
                || self.opens_wiped(i, true, ct, tag, scratch)
        })
    }

    fn opens_wiped(&self, i: u64, last: bool, ct: &[u8], tag: &[u8], scratch: &mut [u8]) -> bool {
        // `open` wipes `scratch` when it fails; a chunk that opens here is misplaced, so its
        // plaintext is wiped too.
        let opened = self.open(i, last, ct, tag, scratch);
        if opened {
            scratch.zeroize();
        }
        opened
    }
}

/// The counters within [`REORDER_WINDOW`] of `index`, `index` itself excluded, nearest first.
fn neighbours(index: u64) -> impl Iterator<Item = u64> {
    (1..=REORDER_WINDOW)
        .flat_map(move |d| [index.checked_sub(d), index.checked_add(d)])
        .flatten()
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
    fn neighbours_are_the_window_nearest_first() {
        let n: Vec<u64> = neighbours(100).collect();
        assert_eq!(n.len(), 2 * REORDER_WINDOW as usize);
        assert_eq!(&n[..4], &[99, 101, 98, 102]);
        assert_eq!(n.iter().min(), Some(&(100 - REORDER_WINDOW)));
        assert_eq!(n.iter().max(), Some(&(100 + REORDER_WINDOW)));
        assert!(!n.contains(&100));
        assert_eq!(
            neighbours(0).collect::<Vec<_>>(),
            (1..=REORDER_WINDOW).collect::<Vec<_>>()
        );
        assert_eq!(neighbours(u64::MAX).count(), REORDER_WINDOW as usize);
    }

    #[test]
    fn locate_finds_the_true_position_within_the_window_and_nothing_else() {
        let c = cipher(1024);
        let w = REORDER_WINDOW;
        for (at, last) in [(0, false), (1, true), (4000, false), (u64::MAX - 1, true)] {
            let mut out = Vec::new();
            let data = vec![at as u8 | 1; if last { 100 } else { 1024 }];
            c.seal(at, last, &data, &mut out).unwrap();
            let (_, ct, tag) = split(&out);
            let mut scratch = vec![0u8; 1024];
            for from in [at.saturating_sub(w), at.saturating_add(w), at ^ 1] {
                if from != at {
                    assert_eq!(c.locate(ct, tag, from, &mut scratch), Some(at), "{from}");
                    assert!(scratch.iter().all(|&b| b == 0), "scratch wiped");
                }
            }
            assert_eq!(
                c.locate(ct, tag, at, &mut scratch),
                None,
                "its own position is skipped"
            );
            if let Some(far) = at.checked_add(w + 1) {
                assert_eq!(
                    c.locate(ct, tag, far, &mut scratch),
                    None,
                    "outside the window"
                );
            }
            if let Some(far) = at.checked_sub(w + 1) {
                assert_eq!(
                    c.locate(ct, tag, far, &mut scratch),
                    None,
                    "outside the window"
                );
            }
            let mut bad = ct.to_vec();
            bad[3] ^= 1;
            assert_eq!(c.locate(&bad, tag, at ^ 1, &mut scratch), None);
            let mut bad_tag = tag.to_vec();
            bad_tag[15] ^= 1;
            assert_eq!(c.locate(ct, &bad_tag, at ^ 1, &mut scratch), None);
        }
    }
}
