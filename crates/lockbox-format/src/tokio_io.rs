//! Tokio `AsyncRead`/`AsyncWrite` adapters with the same guarantees as the blocking ones.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use lockbox_crypto::{BackupKey, CryptoRng, RngCore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::io::{IO_BATCH, ReaderCore, write_batch};
use crate::{Encoder, EncoderParams, FormatError, Header, StreamSummary};

/// Encrypts everything written to it into `inner`. End the stream with
/// [`AsyncEncryptWriter::finish`] or `shutdown()` (which also shuts `inner` down); a writer
/// dropped without either leaves a stream that decodes as [`FormatError::Truncated`].
pub struct AsyncEncryptWriter<W> {
    inner: W,
    header: Header,
    encoder: Option<Encoder>,
    /// Ciphertext not yet accepted by `inner`, from `written` on.
    out: Vec<u8>,
    written: usize,
    summary: Option<StreamSummary>,
    broken: bool,
}

impl<W> core::fmt::Debug for AsyncEncryptWriter<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AsyncEncryptWriter")
            .field("header", &self.header)
            .field("summary", &self.summary)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin> AsyncEncryptWriter<W> {
    /// Starts a stream; the header goes out with the first write, flush or shutdown.
    pub fn new<R: RngCore + CryptoRng>(
        inner: W,
        key: &BackupKey,
        params: EncoderParams,
        rng: &mut R,
    ) -> io::Result<Self> {
        let encoder = Encoder::new(key, params, rng).map_err(FormatError::into_io)?;
        let mut out = Vec::with_capacity(IO_BATCH.max(params.chunk_size) * 2);
        out.extend_from_slice(&encoder.header_bytes());
        Ok(Self {
            inner,
            header: encoder.header().clone(),
            encoder: Some(encoder),
            out,
            written: 0,
            summary: None,
            broken: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Totals of the stream, once it is finished.
    pub fn summary(&self) -> Option<&StreamSummary> {
        self.summary.as_ref()
    }

    /// The inner writer. Ciphertext still buffered is lost: finish or shut down first.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Writes the final chunk, flushes, and returns the inner writer (not shut down).
    pub async fn finish(mut self) -> io::Result<(W, StreamSummary)> {
        std::future::poll_fn(|cx| self.poll_finish(cx)).await?;
        let summary = self.summary.expect("set by poll_finish");
        Ok((self.inner, summary))
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(encoder) = self.encoder.take() {
            let summary = encoder
                .finish(&mut self.out)
                .map_err(FormatError::into_io)?;
            self.summary = Some(summary);
        }
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Hands all buffered ciphertext to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.broken {
            return Poll::Ready(Err(io::Error::other(
                "an earlier write failed; the stream is unusable",
            )));
        }
        while self.written < self.out.len() {
            let r = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]));
            match r {
                Ok(0) => return Poll::Ready(Err(self.fail(io::ErrorKind::WriteZero.into()))),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            }
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.broken = true;
        e
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AsyncEncryptWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        let Some(encoder) = this.encoder.as_mut() else {
            return Poll::Ready(Err(io::Error::other("write after the stream was finished")));
        };
        let n = write_batch(buf.len(), this.header.chunk_size);
        encoder
            .update(&buf[..n], &mut this.out)
            .map_err(FormatError::into_io)?;
        Poll::Ready(Ok(n))
    }

    /// Flushes `inner`. Plaintext of an incomplete chunk stays buffered.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Writes the final chunk, then shuts `inner` down.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_finish(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Decrypts the stream read from `inner`, with the guarantees of [`crate::DecryptReader`]:
/// EOF only after the final chunk verified and `inner` ended, damage as `InvalidData` errors
/// carrying a [`FormatError`].
pub struct AsyncDecryptReader<R> {
    inner: R,
    core: ReaderCore,
    inbuf: Vec<u8>,
}

impl<R> core::fmt::Debug for AsyncDecryptReader<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AsyncDecryptReader")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> AsyncDecryptReader<R> {
    pub fn new(inner: R, key: &BackupKey) -> Self {
        Self {
            inner,
            core: ReaderCore::new(key),
            inbuf: vec![0; IO_BATCH],
        }
    }

    /// The authenticated header, reading it from `inner` first if needed.
    pub async fn header(&mut self) -> io::Result<&Header> {
        std::future::poll_fn(|cx| {
            while self.core.wants_header() {
                ready!(self.poll_fill(cx))?;
            }
            Poll::Ready(Ok::<(), io::Error>(()))
        })
        .await?;
        self.core.header_or_truncated()
    }

    /// Totals of the stream, once it was read to EOF.
    pub fn summary(&self) -> Option<&StreamSummary> {
        self.core.summary()
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut buf = ReadBuf::new(&mut self.inbuf);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        Poll::Ready(self.core.feed(buf.filled()))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncDecryptReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some(plain) = self.core.take(buf.remaining()) {
                buf.put_slice(plain);
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_fill(cx))?;
        }
    }
}
