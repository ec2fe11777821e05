use lockbox_crypto::{BackupId, BackupKey, CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::chunk::ChunkCipher;
use crate::header::{self, HEADER_LEN, Header};
use crate::{DEFAULT_CHUNK_SIZE, FormatError, StreamSummary};

/// What the writer of a stream chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderParams {
    /// Plaintext bytes per chunk: a power of two from 1 KiB to 16 MiB.
    pub chunk_size: usize,
    /// Recorded in the header (in the clear, authenticated).
    pub created_unix_ms: u64,
}

impl Default for EncoderParams {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            created_unix_ms: 0,
        }
    }
}

/// Sans-IO stream encoder. Write [`Encoder::header_bytes`] first, then everything
/// [`Encoder::update`] and [`Encoder::finish`] append. Holds at most one chunk of plaintext.
pub struct Encoder {
    header: Header,
    header_bytes: [u8; HEADER_LEN],
    cipher: ChunkCipher,
    /// Plaintext of the chunk being filled; always shorter than a chunk between calls.
    pending: Zeroizing<Vec<u8>>,
    chunks: u64,
    plaintext_len: u64,
}

impl core::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Encoder")
            .field("header", &self.header)
            .field("chunks", &self.chunks)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// A new stream under `key`, with a fresh backup id drawn from `rng`.
    pub fn new<R: RngCore + CryptoRng>(
        key: &BackupKey,
        params: EncoderParams,
        rng: &mut R,
    ) -> Result<Self, FormatError> {
        let log2 = header::chunk_size_log2(params.chunk_size)?;
        let header = Header {
            backup_id: BackupId::generate(rng),
            chunk_size: params.chunk_size,
            created_unix_ms: params.created_unix_ms,
        };
        let keys = key.stream_keys(&header.backup_id);
        Ok(Self {
            header_bytes: header::encode(&header, log2, &keys),
            cipher: ChunkCipher::new(&keys, params.chunk_size)?,
            header,
            pending: Zeroizing::new(Vec::with_capacity(params.chunk_size)),
            chunks: 0,
            plaintext_len: 0,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The 100 header bytes, to be written before any segment.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        self.header_bytes
    }

    /// Encrypts `input`, appending every segment that became complete to `out`.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        let cs = self.cipher.chunk_size;
        if !self.pending.is_empty() {
            let take = (cs - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            self.plaintext_len += take as u64;
            if self.pending.len() < cs {
                return Ok(());
            }
            let index = self.next_index()?;
            self.cipher.seal(index, false, &self.pending, out)?;
            self.pending.clear();
        }
        while input.len() >= cs {
            let (chunk, rest) = input.split_at(cs);
            let index = self.next_index()?;
            self.cipher.seal(index, false, chunk, out)?;
            self.plaintext_len += cs as u64;
            input = rest;
        }
        self.pending.extend_from_slice(input);
        self.plaintext_len += input.len() as u64;
        Ok(())
    }

    /// Seals the final chunk (the pending bytes, padded) and appends it to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<StreamSummary, FormatError> {
        let index = self.next_index()?;
        self.cipher.seal(index, true, &self.pending, out)?;
        Ok(self.summary())
    }

    fn summary(&self) -> StreamSummary {
        StreamSummary {
            chunks: self.chunks,
            plaintext_len: self.plaintext_len,
            ciphertext_len: crate::stream_len(self.chunks, self.cipher.chunk_size),
        }
    }

    /// Fast path for [`crate::encrypt_stream`]: seals back-to-back whole segments whose data
    /// regions already hold the plaintext of the next full chunks. Only valid while no partial
    /// chunk is pending (the caller never mixes it with [`Encoder::update`]).
    pub(crate) fn seal_segments_in_place(
        &mut self,
        segments: &mut [u8],
    ) -> Result<(), FormatError> {
        debug_assert!(self.pending.is_empty());
        let cs = self.cipher.chunk_size;
        for segment in segments.chunks_exact_mut(self.cipher.segment_len()) {
            let index = self.next_index()?;
            self.cipher.seal_segment(index, false, cs, segment)?;
            self.plaintext_len += cs as u64;
        }
        Ok(())
    }

    /// Fast path for [`crate::encrypt_stream`]: seals the final chunk in place; its data region
    /// holds `len` (< chunk size) plaintext bytes.
    pub(crate) fn finish_in_place(
        mut self,
        segment: &mut [u8],
        len: usize,
    ) -> Result<StreamSummary, FormatError> {
        debug_assert!(self.pending.is_empty() && len < self.cipher.chunk_size);
        let index = self.next_index()?;
        self.cipher.seal_segment(index, true, len, segment)?;
        self.plaintext_len += len as u64;
        Ok(self.summary())
    }

    pub(crate) fn segment_len(&self) -> usize {
        self.cipher.segment_len()
    }

    /// Claims the next chunk index; a stream has at most 2^64 - 1 chunks.
    fn next_index(&mut self) -> Result<u64, FormatError> {
        let index = self.chunks;
        self.chunks = index.checked_add(1).ok_or(FormatError::CounterOverflow)?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_overflow_is_an_error() {
        let key = BackupKey::from_bytes([1; 32]);
        let params = EncoderParams {
            chunk_size: 1024,
            created_unix_ms: 0,
        };
        let mut enc = Encoder::new(&key, params, &mut rand_core::OsRng).unwrap();
        enc.chunks = u64::MAX - 1;
        let mut out = Vec::new();
        enc.update(&[0; 1024], &mut out).unwrap();
        assert_eq!(
            out.len(),
            crate::segment_len(1024),
            "index 2^64-2 is still allowed"
        );
        assert_eq!(enc.finish(&mut out), Err(FormatError::CounterOverflow));
    }

    #[test]
    fn full_chunks_are_sealed_eagerly() {
        let key = BackupKey::from_bytes([1; 32]);
        let params = EncoderParams {
            chunk_size: 1024,
            created_unix_ms: 0,
        };
        let mut enc = Encoder::new(&key, params, &mut rand_core::OsRng).unwrap();
        let mut out = Vec::new();
        enc.update(&[7; 1000], &mut out).unwrap();
        assert!(out.is_empty());
        enc.update(&[7; 24], &mut out).unwrap();
        assert_eq!(out.len(), crate::segment_len(1024));
        let summary = enc.finish(&mut out).unwrap();
        assert_eq!(summary.chunks, 2);
        assert_eq!(summary.plaintext_len, 1024);
        assert_eq!(summary.ciphertext_len, 100 + 2 * 1044);
        assert_eq!(out.len(), 2 * 1044);
    }
}
