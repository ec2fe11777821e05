//! The fast path for encrypting a whole `Read` into a `Write`: plaintext is read straight into
//! the segment slots of a batch buffer, and batches are sealed and written on a second thread
//! while the next batch is read. Reading and AES-GCM overlap, and nothing is copied twice.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use zeroize::Zeroizing;

use crate::{Encoder, FormatError, StreamSummary};
use lockbox_crypto::CHUNK_TAG_LEN;

/// Plaintext per batch: 4 MiB, or one chunk when chunks are larger.
const BATCH_BYTES: usize = 4 << 20;

/// A batch on its way from the reader to the sealer.
struct Batch {
    buf: Zeroizing<Vec<u8>>,
    /// Whole chunks filled, in order from the start of `buf`.
    full: usize,
    /// Set on the last batch: plaintext bytes of the final chunk, in the slot after `full`.
    tail: Option<usize>,
}

/// Encrypts everything `input` yields into `output`, header first, and returns `output` with
/// the stream's totals. Equivalent to an [`crate::EncryptWriter`] fed with `io::copy`, with the
/// same bytes out, but it reads into the sealing buffers directly and seals on a second thread.
/// Memory: two batches (≈ 8 MiB with 64 KiB chunks), zeroized when dropped.
pub fn encrypt_stream<R: Read, W: Write + Send>(
    mut input: R,
    mut output: W,
    encoder: Encoder,
) -> io::Result<(W, StreamSummary)> {
    output.write_all(&encoder.header_bytes())?;
    let chunk_size = encoder.header().chunk_size;
    let segment = encoder.segment_len();
    let chunks_per_batch = (BATCH_BYTES / chunk_size).max(1);
    let (to_sealer, batches) = sync_channel::<Batch>(1);
    let (to_reader, empties) = sync_channel::<Zeroizing<Vec<u8>>>(2);
    for _ in 0..2 {
        let _ = to_reader.send(Zeroizing::new(vec![0u8; chunks_per_batch * segment]));
    }
    std::thread::scope(|scope| {
        let sealer = scope.spawn(move || seal_batches(encoder, output, batches, to_reader));
        let read = read_batches(
            &mut input,
            chunk_size,
            segment,
            chunks_per_batch,
            to_sealer,
            empties,
        );
        let sealed = sealer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        read?;
        sealed
    })
}

/// Reader side: fills batches until EOF. Stops quietly if the sealer went away (its error wins).
fn read_batches<R: Read>(
    input: &mut R,
    chunk_size: usize,
    segment: usize,
    chunks_per_batch: usize,
    to_sealer: SyncSender<Batch>,
    empties: Receiver<Zeroizing<Vec<u8>>>,
) -> io::Result<()> {
    while let Ok(mut buf) = empties.recv() {
        let mut full = 0;
        let mut tail = None;
        while full < chunks_per_batch {
            let start = full * segment + CHUNK_TAG_LEN;
            let n = read_full(input, &mut buf[start..start + chunk_size])?;
            if n < chunk_size {
                tail = Some(n);
                break;
            }
            full += 1;
        }
        let last = tail.is_some();
        if to_sealer.send(Batch { buf, full, tail }).is_err() || last {
            break;
        }
    }
    Ok(())
}

/// Sealer side: seals and writes batches in order; the batch with a tail finishes the stream.
fn seal_batches<W: Write>(
    mut encoder: Encoder,
    mut output: W,
    batches: Receiver<Batch>,
    to_reader: SyncSender<Zeroizing<Vec<u8>>>,
) -> io::Result<(W, StreamSummary)> {
    let segment = encoder.segment_len();
    for mut batch in batches {
        let whole = batch.full * segment;
        encoder
            .seal_segments_in_place(&mut batch.buf[..whole])
            .map_err(FormatError::into_io)?;
        if let Some(len) = batch.tail {
            let summary = encoder
                .finish_in_place(&mut batch.buf[whole..whole + segment], len)
                .map_err(FormatError::into_io)?;
            output.write_all(&batch.buf[..whole + segment])?;
            output.flush()?;
            return Ok((output, summary));
        }
        output.write_all(&batch.buf[..whole])?;
        let _ = to_reader.send(batch.buf);
    }
    Err(io::Error::other(
        "input failed before the end of the stream",
    ))
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecryptReader, EncoderParams, EncryptWriter};
    use lockbox_crypto::BackupKey;
    use proptest::prelude::*;

    /// An RNG that returns a fixed backup id, so two encoders produce identical streams.
    struct Fixed;
    impl rand_core::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            7
        }
        fn next_u64(&mut self) -> u64 {
            7
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            d.fill(7)
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
            d.fill(7);
            Ok(())
        }
    }
    impl rand_core::CryptoRng for Fixed {}

    fn params(chunk_size: usize) -> EncoderParams {
        EncoderParams {
            chunk_size,
            created_unix_ms: 42,
        }
    }

    /// Reads in odd-sized pieces, as pipes do.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn same_bytes_as_the_writer_and_decrypts(
            len in prop_oneof![Just(0usize), Just(1), Just(1023), Just(1024), Just(1025), 0usize..20_000, Just(4096 * 1024 + 1)],
            piece in 1usize..5000,
        ) {
            let key = BackupKey::from_bytes([3; 32]);
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let enc = Encoder::new(&key, params(1024), &mut Fixed).unwrap();
            let (fast, summary) = encrypt_stream(Dribble(&data, piece), Vec::new(), enc).unwrap();
            let mut w = EncryptWriter::new(Vec::new(), &key, params(1024), &mut Fixed).unwrap();
            w.write_all(&data).unwrap();
            let (slow, slow_summary) = w.finish().unwrap();
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(summary, slow_summary);
            let mut back = Vec::new();
            DecryptReader::new(fast.as_slice(), &key).read_to_end(&mut back).unwrap();
            prop_assert_eq!(back, data);
        }
    }

    struct FailAfter(usize);
    impl Read for FailAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "input died"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn input_error_is_reported_and_stream_left_unfinished() {
        let key = BackupKey::from_bytes([3; 32]);
        let enc = Encoder::new(&key, params(1024), &mut Fixed).unwrap();
        let err = encrypt_stream(FailAfter(10_000_000), Vec::new(), enc).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[derive(Debug)]
    struct BrokenSink;
    impl Write for BrokenSink {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_error_is_reported_without_hanging() {
        let key = BackupKey::from_bytes([3; 32]);
        let enc = Encoder::new(&key, params(1024), &mut Fixed).unwrap();
        let err = encrypt_stream(FailAfter(usize::MAX), BrokenSink, enc).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
