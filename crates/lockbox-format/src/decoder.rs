use lockbox_crypto::{BackupKey, CHUNK_TAG_LEN};
use zeroize::Zeroize;

use crate::chunk::{ChunkCipher, unpadded_len};
use crate::header::{self, HEADER_LEN, Header};
use crate::{FormatError, StreamSummary};

/// Sans-IO stream decoder. Feed it the stream in pieces of any size with [`Decoder::update`],
/// then call [`Decoder::finish`] at end of input. Plaintext is appended to `out` only for
/// chunks that verified, and the stream is complete only once `finish` returns `Ok`.
///
/// Holds at most one segment of ciphertext. The first error is final: every later call
/// returns it again.
pub struct Decoder {
    state: State,
    header: Option<Header>,
}

enum State {
    /// Header bytes seen so far (fewer than [`HEADER_LEN`]), and the key to check them with.
    Header(Vec<u8>, Box<BackupKey>),
    Body(Box<Body>),
    Failed(FormatError),
}

pub(crate) struct Body {
    cipher: ChunkCipher,
    /// Ciphertext of the next segment, at most one segment long. It is opened once more
    /// input shows whether it is the last one.
    pending: Vec<u8>,
    index: u64,
    plaintext_len: u64,
}

impl core::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match &self.state {
            State::Header(..) => "header",
            State::Body(_) => "body",
            State::Failed(_) => "failed",
        };
        f.debug_struct("Decoder")
            .field("state", &state)
            .field("header", &self.header)
            .finish()
    }
}

impl Decoder {
    pub fn new(key: &BackupKey) -> Self {
        Self {
            state: State::Header(Vec::with_capacity(HEADER_LEN), Box::new(key.clone())),
            header: None,
        }
    }

    /// The authenticated header, once it has been read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Consumes `input`, appending the plaintext of every chunk that verified to `out`.
    pub fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        let result = self.step(input, out);
        self.fail_on(result)
    }

    /// Ends the stream: opens the last segment as the final chunk.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<StreamSummary, FormatError> {
        match &mut self.state {
            State::Failed(e) => Err(e.clone()),
            State::Header(..) => Err(FormatError::Truncated),
            State::Body(body) => body.finish(out),
        }
    }

    fn step(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        if let State::Header(buf, key) = &mut self.state {
            let take = (HEADER_LEN - buf.len()).min(input.len());
            buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            header::check_prefix(buf)?;
            let Ok(bytes) = <&[u8; HEADER_LEN]>::try_from(buf.as_slice()) else {
                return Ok(());
            };
            let (header, keys) = header::parse(bytes, key)?;
            let cipher = ChunkCipher::new(&keys, header.chunk_size)?;
            self.state = State::Body(Box::new(Body {
                pending: Vec::with_capacity(cipher.segment_len()),
                cipher,
                index: 0,
                plaintext_len: 0,
            }));
            self.header = Some(header);
        }
        match &mut self.state {
            State::Body(body) => body.update(input, out),
            State::Failed(e) => Err(e.clone()),
            State::Header(..) => Ok(()),
        }
    }

    /// The body decoder once the header has been read and checked (`None` before, or after a
    /// failure). For the batch decryptor, which feeds whole segments itself.
    pub(crate) fn body(&mut self) -> Option<&mut Body> {
        match &mut self.state {
            State::Body(body) => Some(body),
            _ => None,
        }
    }

    fn fail_on(&mut self, result: Result<(), FormatError>) -> Result<(), FormatError> {
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }
}

impl Body {
    fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        let seg = self.cipher.segment_len();
        if !self.pending.is_empty() {
            let take = (seg - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < seg || input.is_empty() {
                return Ok(());
            }
            let pending = std::mem::take(&mut self.pending);
            let result = self.open_next(&pending, false, out);
            self.pending = pending;
            self.pending.clear();
            result?;
        }
        // A segment is opened as non-final only when at least one more byte follows it.
        while input.len() > seg {
            let (segment, rest) = input.split_at(seg);
            self.open_next(segment, false, out)?;
            input = rest;
        }
        self.pending.extend_from_slice(input);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<StreamSummary, FormatError> {
        if self.pending.len() != self.cipher.segment_len() {
            return Err(FormatError::Truncated);
        }
        let pending = std::mem::take(&mut self.pending);
        self.open_next(&pending, true, out)?;
        Ok(self.summary())
    }

    pub(crate) fn summary(&self) -> StreamSummary {
        StreamSummary {
            chunks: self.index,
            plaintext_len: self.plaintext_len,
            ciphertext_len: crate::stream_len(self.index, self.cipher.chunk_size),
        }
    }

    pub(crate) fn segment_len(&self) -> usize {
        self.cipher.segment_len()
    }

    pub(crate) fn chunk_size(&self) -> usize {
        self.cipher.chunk_size
    }

    /// Opens `segment` as the next chunk, appending its plaintext to `out` if it verified.
    fn open_next(
        &mut self,
        segment: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let start = out.len();
        out.resize(start + self.cipher.chunk_size, 0);
        match self.open_into(segment, last, &mut out[start..]) {
            Ok(len) => {
                out.truncate(start + len);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Opens `segment` as chunk `self.index`, expected final or not, into `plain` (one chunk
    /// long), and classifies failures. Returns the plaintext length; on error `plain` holds no
    /// plaintext.
    pub(crate) fn open_into(
        &mut self,
        segment: &[u8],
        last: bool,
        plain: &mut [u8],
    ) -> Result<usize, FormatError> {
        let index = self.index;
        if index == u64::MAX {
            return Err(FormatError::CounterOverflow);
        }
        let cs = self.cipher.chunk_size;
        let (chunk_tag, rest) = segment.split_at(CHUNK_TAG_LEN);
        let (ct, tag) = rest.split_at(cs);
        let opened = self.cipher.open(index, last, ct, tag, plain);
        let error = if chunk_tag != self.cipher.chunk_tag {
            if opened {
                FormatError::ChunkCorrupt { index }
            } else {
                FormatError::ForeignChunk { index }
            }
        } else if opened {
            let len = if last { unpadded_len(plain) } else { Some(cs) };
            match len {
                Some(n) => {
                    self.plaintext_len += n as u64;
                    self.index += 1;
                    return Ok(n);
                }
                None => FormatError::ChunkCorrupt { index },
            }
        } else if self.cipher.open(index, !last, ct, tag, plain) {
            if last {
                FormatError::Truncated
            } else {
                FormatError::TrailingData
            }
        } else {
            match self.cipher.locate(ct, tag, index, plain) {
                Some(belongs_at) => FormatError::ChunkOutOfOrder { index, belongs_at },
                None => FormatError::ChunkCorrupt { index },
            }
        };
        plain.zeroize();
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Encoder, EncoderParams};

    #[test]
    fn authentic_final_chunk_without_padding_is_corrupt() {
        let key = BackupKey::from_bytes([6; 32]);
        let params = EncoderParams {
            chunk_size: 1024,
            created_unix_ms: 0,
        };
        let enc = Encoder::new(&key, params, &mut rand_core::OsRng).unwrap();
        let keys = key.stream_keys(&enc.header().backup_id);
        let cipher = ChunkCipher::new(&keys, 1024).unwrap();
        let mut stream = enc.header_bytes().to_vec();
        for data in [[1u8; 1024], [0u8; 1024]] {
            let mut s = stream.clone();
            cipher.seal_unpadded_final(0, &data, &mut s);
            let mut dec = Decoder::new(&key);
            let mut out = Vec::new();
            dec.update(&s, &mut out).unwrap();
            assert_eq!(
                dec.finish(&mut out),
                Err(FormatError::ChunkCorrupt { index: 0 })
            );
            assert!(out.is_empty());
        }
        // The same, properly padded, is accepted: the test above fails for the padding alone.
        let mut out = Vec::new();
        cipher.seal(0, true, &[1u8; 1023], &mut stream).unwrap();
        let mut dec = Decoder::new(&key);
        dec.update(&stream, &mut out).unwrap();
        assert_eq!(dec.finish(&mut out).unwrap().plaintext_len, 1023);
    }

    /// `plain` encrypted under `key` in 1 KiB chunks.
    fn small_chunk_stream(key: &BackupKey, plain: &[u8]) -> Vec<u8> {
        let params = EncoderParams {
            chunk_size: 1024,
            created_unix_ms: 0,
        };
        let mut enc = Encoder::new(key, params, &mut rand_core::OsRng).unwrap();
        let mut stream = enc.header_bytes().to_vec();
        enc.update(plain, &mut stream).unwrap();
        enc.finish(&mut stream).unwrap();
        stream
    }

    #[test]
    fn a_misplaced_chunk_leaves_no_plaintext_behind() {
        let key = BackupKey::from_bytes([6; 32]);
        let stream = small_chunk_stream(&key, &[0x5A; 3000]);
        let mut dec = Decoder::new(&key);
        dec.update(&stream[..HEADER_LEN], &mut Vec::new()).unwrap();
        let body = dec.body().unwrap();
        let seg = body.segment_len();
        let second = &stream[HEADER_LEN + seg..HEADER_LEN + 2 * seg];
        let mut plain = vec![0xEE; 1024];
        assert_eq!(
            body.open_into(second, false, &mut plain),
            Err(FormatError::ChunkOutOfOrder {
                index: 0,
                belongs_at: 1
            })
        );
        assert!(
            plain.iter().all(|&b| b == 0),
            "the trial open's plaintext was wiped"
        );
    }

    #[test]
    fn decoder_refuses_the_counter_past_the_limit() {
        let key = BackupKey::from_bytes([6; 32]);
        let stream = small_chunk_stream(&key, &[5; 2000]);
        let mut dec = Decoder::new(&key);
        let mut out = Vec::new();
        dec.update(&stream[..100], &mut out).unwrap();
        if let State::Body(body) = &mut dec.state {
            body.index = u64::MAX;
        }
        assert_eq!(
            dec.update(&stream[100..], &mut out),
            Err(FormatError::CounterOverflow)
        );
        assert!(out.is_empty());
    }
}
