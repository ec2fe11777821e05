//! Shared helpers for the integration tests.
#![allow(dead_code)]

use lockbox_crypto::{CryptoRng, RngCore};
use lockbox_format::{BackupKey, Decoder, Encoder, EncoderParams, FormatError, StreamSummary};

pub const CS: usize = 1024;
pub const SEG: usize = 4 + CS + 16;
pub const HDR: usize = 100;

/// A deterministic "RNG" that repeats a byte pattern: makes streams reproducible.
pub struct FixedRng(pub u8);

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for (i, b) in dest.iter_mut().enumerate() {
            *b = self.0.wrapping_add(i as u8);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for FixedRng {}

pub fn key() -> BackupKey {
    BackupKey::from_bytes([0x42; 32])
}

pub fn params(chunk_size: usize) -> EncoderParams {
    EncoderParams {
        chunk_size,
        created_unix_ms: 1_750_000_000_000,
    }
}

/// Plaintext with a position-dependent pattern, so misplaced bytes show up.
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// Encrypts `plain` in one go under `key` with a backup id seeded by `seed`.
pub fn encrypt_with(key: &BackupKey, plain: &[u8], cs: usize, seed: u8) -> Vec<u8> {
    let mut enc = Encoder::new(key, params(cs), &mut FixedRng(seed)).unwrap();
    let mut out = enc.header_bytes().to_vec();
    enc.update(plain, &mut out).unwrap();
    enc.finish(&mut out).unwrap();
    out
}

pub fn encrypt(plain: &[u8]) -> Vec<u8> {
    encrypt_with(&key(), plain, CS, 1)
}

/// Decodes `stream` fed in pieces of `step` bytes. Returns the plaintext emitted (even on
/// error) and the result.
pub fn decode_steps(
    key: &BackupKey,
    stream: &[u8],
    step: usize,
) -> (Vec<u8>, Result<StreamSummary, FormatError>) {
    let mut dec = Decoder::new(key);
    let mut out = Vec::new();
    for piece in stream.chunks(step.max(1)) {
        if let Err(e) = dec.update(piece, &mut out) {
            return (out, Err(e));
        }
    }
    let r = dec.finish(&mut out);
    (out, r)
}

pub fn decode(stream: &[u8]) -> Result<Vec<u8>, FormatError> {
    let (out, r) = decode_steps(&key(), stream, usize::MAX);
    r.map(|_| out)
}

/// Segment `i` of a stream (0-based), as a range.
pub fn seg(i: usize) -> std::ops::Range<usize> {
    HDR + i * SEG..HDR + (i + 1) * SEG
}
