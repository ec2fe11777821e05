//! Blocking `std::io` adapters over [`Encoder`] and [`Decoder`].

use std::io::{self, Read, Write};

use lockbox_crypto::{BackupKey, CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::{Decoder, Encoder, EncoderParams, FormatError, Header, StreamSummary, segment_len};

/// Plaintext taken per `write` call / ciphertext read per `read` call: big enough to amortize
/// per-call costs, small enough that memory stays bounded.
pub(crate) const IO_BATCH: usize = 1 << 20;

/// How much of a `len`-byte write to take in one call.
pub(crate) fn write_batch(len: usize, chunk_size: usize) -> usize {
    len.min(IO_BATCH.max(chunk_size))
}

/// Encrypts everything written to it into `inner`. Call [`EncryptWriter::finish`] at the end:
/// a writer dropped without it leaves a stream that decodes as [`FormatError::Truncated`].
pub struct EncryptWriter<W: Write> {
    inner: W,
    encoder: Encoder,
    out: Vec<u8>,
    /// Set when `inner` failed mid-segment: the stream on `inner` is unusable.
    broken: bool,
}

impl<W: Write> core::fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EncryptWriter")
            .field("encoder", &self.encoder)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<W: Write> EncryptWriter<W> {
    /// Starts a stream on `inner` and writes its header.
    pub fn new<R: RngCore + CryptoRng>(
        inner: W,
        key: &BackupKey,
        params: EncoderParams,
        rng: &mut R,
    ) -> io::Result<Self> {
        let encoder = Encoder::new(key, params, rng).map_err(FormatError::into_io)?;
        Self::from_encoder(inner, encoder)
    }

    /// Starts the stream of an existing, unused `encoder` on `inner` and writes its header.
    /// Lets a caller learn the backup id (to name the object) before the sink exists.
    pub fn from_encoder(mut inner: W, encoder: Encoder) -> io::Result<Self> {
        inner.write_all(&encoder.header_bytes())?;
        let chunk_size = encoder.header().chunk_size;
        let cap = write_batch(usize::MAX, chunk_size) + crate::segment_len(chunk_size);
        Ok(Self {
            inner,
            encoder,
            out: Vec::with_capacity(cap),
            broken: false,
        })
    }

    pub fn header(&self) -> &Header {
        self.encoder.header()
    }

    /// Writes the final chunk, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<(W, StreamSummary)> {
        self.check()?;
        self.out.clear();
        let summary = self
            .encoder
            .finish(&mut self.out)
            .map_err(FormatError::into_io)?;
        self.inner.write_all(&self.out)?;
        self.inner.flush()?;
        Ok((self.inner, summary))
    }

    fn check(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier write failed; the stream is unusable",
            ));
        }
        Ok(())
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = write_batch(buf.len(), self.encoder.header().chunk_size);
        self.out.clear();
        self.encoder
            .update(&buf[..n], &mut self.out)
            .map_err(FormatError::into_io)?;
        let written = self.inner.write_all(&self.out);
        self.out.clear();
        if let Err(e) = written {
            self.broken = true;
            return Err(e);
        }
        Ok(n)
    }

    /// Flushes `inner`. Plaintext of an incomplete chunk stays buffered until it fills or
    /// the stream is finished.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts the stream read from `inner`. `read` returns `Ok(0)` only after the final chunk
/// verified and `inner` reached EOF; damage surfaces as an `io::Error` of kind `InvalidData`
/// carrying a [`FormatError`] (see [`FormatError::from_io`]).
pub struct DecryptReader<R: Read> {
    inner: R,
    core: ReaderCore,
    inbuf: Vec<u8>,
}

/// The part of a decrypting reader that does not depend on how bytes arrive.
#[derive(Debug)]
pub(crate) struct ReaderCore {
    decoder: Option<Decoder>,
    header: Option<Header>,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    summary: Option<StreamSummary>,
    failed: Option<FormatError>,
}

impl ReaderCore {
    pub(crate) fn new(key: &BackupKey) -> Self {
        Self {
            decoder: Some(Decoder::new(key)),
            header: None,
            plain: Zeroizing::new(Vec::new()),
            pos: 0,
            summary: None,
            failed: None,
        }
    }

    pub(crate) fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    pub(crate) fn summary(&self) -> Option<&StreamSummary> {
        self.summary.as_ref()
    }

    /// The header once known, or [`FormatError::Truncated`] if the stream ended without one.
    pub(crate) fn header_or_truncated(&self) -> io::Result<&Header> {
        self.header()
            .ok_or_else(|| FormatError::Truncated.into_io())
    }

    /// True while the header is still to come: the adapter should read more input.
    pub(crate) fn wants_header(&self) -> bool {
        self.header.is_none() && !self.done()
    }

    /// Hands out up to `max` bytes of verified plaintext: `Some` with what a read returns now
    /// (empty at the verified end, or when `max` is 0), `None` if more input must be fed first.
    pub(crate) fn take(&mut self, max: usize) -> Option<&[u8]> {
        let start = self.pos;
        let n = (self.plain.len() - start).min(max);
        if n == 0 && max != 0 && !self.done() {
            return None;
        }
        self.pos += n;
        Some(&self.plain[start..self.pos])
    }

    /// True once the stream verified to its end.
    fn done(&self) -> bool {
        self.summary.is_some()
    }

    /// Feeds freshly read ciphertext; an empty `input` means EOF.
    pub(crate) fn feed(&mut self, input: &[u8]) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone().into_io());
        }
        self.plain.clear();
        self.pos = 0;
        // Room for all the plaintext this input can release (at most the input plus one
        // buffered segment), so `plain` never reallocates and leaves plaintext in freed memory.
        let pending = self
            .header
            .as_ref()
            .map_or(0, |h| segment_len(h.chunk_size));
        self.plain.reserve(input.len() + pending);
        let result = match self.decoder.take() {
            None => return Ok(()),
            Some(decoder) if input.is_empty() => decoder
                .finish(&mut self.plain)
                .map(|s| self.summary = Some(s)),
            Some(mut decoder) => {
                let r = decoder.update(input, &mut self.plain);
                if self.header.is_none() {
                    self.header = decoder.header().cloned();
                }
                self.decoder = Some(decoder);
                r
            }
        };
        result.map_err(|e| {
            self.failed = Some(e.clone());
            e.into_io()
        })
    }
}

impl<R: Read> core::fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DecryptReader")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl<R: Read> DecryptReader<R> {
    pub fn new(inner: R, key: &BackupKey) -> Self {
        Self {
            inner,
            core: ReaderCore::new(key),
            inbuf: vec![0; IO_BATCH],
        }
    }

    /// The authenticated header, reading it from `inner` first if needed.
    pub fn header(&mut self) -> io::Result<&Header> {
        while self.core.wants_header() {
            self.fill()?;
        }
        self.core.header_or_truncated()
    }

    /// Totals of the stream, once `read` has returned `Ok(0)`.
    pub fn summary(&self) -> Option<&StreamSummary> {
        self.core.summary()
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads once from `inner` and decodes what came (or finishes at EOF).
    fn fill(&mut self) -> io::Result<()> {
        let n = loop {
            match self.inner.read(&mut self.inbuf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.core.feed(&self.inbuf[..n])
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(plain) = self.core.take(buf.len()) {
                buf[..plain.len()].copy_from_slice(plain);
                return Ok(plain.len());
            }
            self.fill()?;
        }
    }
}
