//! The lockbox backup stream format (DESIGN.md §3, spec in `docs/format.md`): a 100-byte
//! authenticated header, then fixed-size AES-256-GCM chunks in the style of age's STREAM.
//!
//! Does: encrypt and decrypt one backup stream under a [`BackupKey`], with a sans-IO core
//! ([`Encoder`], [`Decoder`]) and thin adapters ([`EncryptWriter`], [`DecryptReader`], and with
//! the `tokio` feature `AsyncEncryptWriter`/`AsyncDecryptReader`), plus the two-thread batch
//! paths [`encrypt_stream`] and [`decrypt_stream`] for whole streams. Memory stays bounded
//! whatever the stream length: a few chunks for the adapters, a few MiB for the batch paths. Every way a stream can be damaged (wrong key,
//! truncation, extension, reordering, chunks from another backup, bit flips) is detected and
//! reported as its own [`FormatError`], and no plaintext is released from a chunk that did not
//! verify.
//!
//! Does not: archive or compress (that is `lockbox-archive`), store anything, hide the
//! approximate size, creation time or backup id of a stream (see the spec's "What leaks").
//!
//! Trusts: `lockbox-crypto` for key derivation, `aws-lc-rs` for AES-256-GCM, RustCrypto
//! `hmac`/`sha2` for the header MAC, and the RNG handed to [`Encoder::new`] for backup ids.
#![forbid(unsafe_code)]

mod chunk;
mod decoder;
mod encoder;
mod error;
mod header;
mod io;
mod pipeline;
#[cfg(feature = "tokio")]
mod tokio_io;

pub use chunk::{GCM_TAG_LEN, REORDER_WINDOW, segment_len};
pub use decoder::Decoder;
pub use encoder::{Encoder, EncoderParams};
pub use error::FormatError;
pub use header::{
    HEADER_LEN, Header, MAGIC, MAX_CHUNK_SIZE_LOG2, MIN_CHUNK_SIZE_LOG2, VERSION, parse_header,
};
pub use io::{DecryptReader, EncryptWriter};
pub use lockbox_crypto::{BackupId, BackupKey};
pub use pipeline::{decrypt_stream, encrypt_stream};
#[cfg(feature = "tokio")]
pub use tokio_io::{AsyncDecryptReader, AsyncEncryptWriter};

/// Default plaintext bytes per chunk: 64 KiB.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;

/// What a finished stream amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Number of chunks, the final one included (always at least 1).
    pub chunks: u64,
    /// Plaintext bytes carried.
    pub plaintext_len: u64,
    /// Bytes of the whole stream, header included.
    pub ciphertext_len: u64,
}

/// Length of a stream of `chunks` chunks of `chunk_size` bytes, header included.
pub(crate) fn stream_len(chunks: u64, chunk_size: usize) -> u64 {
    (HEADER_LEN as u64).saturating_add(chunks.saturating_mul(segment_len(chunk_size) as u64))
}
