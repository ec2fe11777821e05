//! The fast paths for a whole `Read` into a `Write`. Encryption: plaintext is read straight into
//! the segment slots of a batch buffer, and batches are sealed and written on a second thread
//! while the next batch is read. Decryption: ciphertext is read in whole segments on a second
//! thread while the previous batch is opened and written. Reading and AES-GCM overlap, and
//! nothing is copied twice.

use std::io::{self, Read, Write};
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use zeroize::Zeroizing;

use crate::decoder::Body;
use crate::header::HEADER_LEN;
use crate::{Decoder, Encoder, FormatError, StreamSummary};
use lockbox_crypto::{BackupKey, CHUNK_TAG_LEN};

/// Plaintext per batch: 4 MiB, or one chunk when chunks are larger.
const BATCH_BYTES: usize = 4 << 20;

/// Encryption batches hold plaintext, so they are zeroized when dropped; decryption batches
/// hold only ciphertext and are plain vectors (no 4 MiB wipe per stream).
type Plaintext = Zeroizing<Vec<u8>>;

/// A batch on its way from the reading thread to the sealer or opener, in slots of one segment
/// each.
struct Batch<B> {
    buf: B,
    /// Slots filled, in order from the start of `buf`.
    full: usize,
    /// Set on the last batch: the bytes read into the slot after `full` (possibly 0).
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
    let len = slots_per_batch(BATCH_BYTES, chunk_size) * segment;
    let ((to_sealer, batches), (to_reader, empties)) =
        batch_channels(|| Zeroizing::new(vec![0u8; len]));
    // Plaintext goes where `seal_segments_in_place` wants it: after each segment's chunk tag.
    let plaintext = CHUNK_TAG_LEN..CHUNK_TAG_LEN + chunk_size;
    std::thread::scope(|scope| {
        let sealer = scope.spawn(move || seal_batches(encoder, output, batches, to_reader));
        let read = read_slots(&mut input, segment, plaintext, to_sealer, empties);
        let sealed = sealer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        read?;
        sealed
    })
}

/// Segments per batch: `batch_bytes` of plaintext, and at least one chunk.
fn slots_per_batch(batch_bytes: usize, chunk_size: usize) -> usize {
    (batch_bytes / chunk_size).max(1)
}

/// Full batches from the reading thread to its consumer, and empty buffers back.
type Channels<B> = (
    (SyncSender<Batch<B>>, Receiver<Batch<B>>),
    (SyncSender<B>, Receiver<B>),
);

/// The channels between the reading thread and its consumer, with two empty buffers from
/// `buffer` already queued, so that reading one batch overlaps processing the other.
fn batch_channels<B>(buffer: impl Fn() -> B) -> Channels<B> {
    let (to_consumer, batches) = sync_channel(1);
    let (to_reader, empties) = sync_channel(2);
    for _ in 0..2 {
        let _ = to_reader.send(buffer());
    }
    ((to_consumer, batches), (to_reader, empties))
}

/// Reader side: fills the `slot` range of each `stride`-byte slot of the buffers it is given,
/// in order, until EOF or an input error. Stops quietly if the consumer went away (its error
/// wins).
fn read_slots<R: Read, B: AsMut<[u8]>>(
    input: &mut R,
    stride: usize,
    slot: Range<usize>,
    to_consumer: SyncSender<Batch<B>>,
    empties: Receiver<B>,
) -> io::Result<()> {
    while let Ok(mut buf) = empties.recv() {
        let bytes = buf.as_mut();
        let mut full = 0;
        let mut tail = None;
        while full < bytes.len() / stride {
            let at = full * stride;
            let n = read_full(input, &mut bytes[at + slot.start..at + slot.end])?;
            if n < slot.len() {
                tail = Some(n);
                break;
            }
            full += 1;
        }
        let last = tail.is_some();
        if to_consumer.send(Batch { buf, full, tail }).is_err() || last {
            break;
        }
    }
    Ok(())
}

/// Sealer side: seals and writes batches in order; the batch with a tail finishes the stream.
fn seal_batches<W: Write>(
    mut encoder: Encoder,
    mut output: W,
    batches: Receiver<Batch<Plaintext>>,
    to_reader: SyncSender<Plaintext>,
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

/// Decrypts the whole stream `input` into `output` and returns `output` with the stream's
/// totals. Same verdict as a [`crate::DecryptReader`] read to its end (same first error, and
/// `Ok` only for a complete, verified stream), and it writes only verified chunks, in order
/// (before an error, possibly fewer than the reader would have released). The ciphertext is
/// read on a second thread in whole segments and opened without extra copies.
///
/// It works in batches of about 4 MiB: on a slow pipe, plaintext and errors come out a batch
/// at a time, and after an error it returns once the reading thread's current read finishes.
/// For interactive streams use [`crate::DecryptReader`].
/// Memory: two ciphertext batches and one plaintext batch (≈ 12 MiB with 64 KiB chunks; more
/// for larger chunks, as one batch holds at least one chunk), zeroized when dropped.
pub fn decrypt_stream<R: Read + Send, W: Write>(
    input: R,
    output: W,
    key: &BackupKey,
) -> io::Result<(W, StreamSummary)> {
    decrypt_stream_batched(input, output, key, BATCH_BYTES)
}

fn decrypt_stream_batched<R: Read + Send, W: Write>(
    mut input: R,
    output: W,
    key: &BackupKey,
    batch_bytes: usize,
) -> io::Result<(W, StreamSummary)> {
    let mut decoder = Decoder::new(key);
    let mut header = [0u8; HEADER_LEN];
    let n = read_full(&mut input, &mut header)?;
    let mut scratch = Vec::new();
    decoder
        .update(&header[..n], &mut scratch)
        .map_err(FormatError::into_io)?;
    if decoder.body().is_none() {
        return Err(decoder
            .finish(&mut scratch)
            .map_or_else(FormatError::into_io, |_| {
                io::Error::other("stream ended inside its header")
            }));
    }
    let body = decoder.body().expect("checked above");
    let segment = body.segment_len();
    let per_batch = slots_per_batch(batch_bytes, body.chunk_size());
    let ((to_opener, batches), (to_reader, empties)) =
        batch_channels(|| vec![0u8; per_batch * segment]);
    std::thread::scope(|scope| {
        let reader =
            scope.spawn(move || read_slots(&mut input, segment, 0..segment, to_opener, empties));
        let opened = open_batches(body, output, per_batch, batches, to_reader);
        let read = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        match opened {
            // The input failed: its error says why the stream stopped.
            Err(Stop::InputGone) => Err(read
                .err()
                .unwrap_or_else(|| io::Error::other("input failed before the end of the stream"))),
            Err(Stop::Failed(e)) => Err(e),
            Ok(done) => Ok(done),
        }
    })
}

enum Stop {
    /// The reader stopped before the end of the stream (its own error explains why).
    InputGone,
    Failed(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Failed(e)
    }
}

/// Opener side: opens segments in order and writes their plaintext. The last whole segment of
/// a batch is held back until the next batch shows whether more input follows it, exactly as
/// the streaming decoder decides which chunk is final.
fn open_batches<W: Write>(
    body: &mut Body,
    mut output: W,
    per_batch: usize,
    batches: Receiver<Batch<Vec<u8>>>,
    to_reader: SyncSender<Vec<u8>>,
) -> Result<(W, StreamSummary), Stop> {
    let segment = body.segment_len();
    let cs = body.chunk_size();
    // Sized on first need (a short stream's only batch needs little), never grown in place: a
    // bigger buffer replaces it, and the old one is zeroized as it drops.
    let mut plain = Zeroizing::new(Vec::new());
    let mut held: Option<Vec<u8>> = None;
    for batch in batches {
        let end = batch.tail;
        let mut segments: Vec<&[u8]> = held.iter().map(Vec::as_slice).collect();
        segments.extend(batch.buf[..batch.full * segment].chunks_exact(segment));
        let (opened, keep) = match (end, segments.split_last()) {
            (None, Some((last, rest))) => (rest, Some(last.to_vec())),
            _ => (segments.as_slice(), None),
        };
        if plain.len() < opened.len() * cs {
            let room = if end.is_some() {
                opened.len()
            } else {
                per_batch + 1
            };
            plain = Zeroizing::new(vec![0u8; room * cs]);
        }
        let mut written = 0;
        let mut result = Ok(());
        for (i, seg) in opened.iter().enumerate() {
            let final_chunk = end == Some(0) && i + 1 == opened.len();
            match body.open_into(seg, final_chunk, &mut plain[written..written + cs]) {
                Ok(n) => written += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        output.write_all(&plain[..written])?;
        result.map_err(|e| Stop::Failed(e.into_io()))?;
        match end {
            None => {
                held = keep;
                let _ = to_reader.send(batch.buf);
            }
            // The final chunk verified: the stream is complete.
            Some(0) if !opened.is_empty() => {
                output.flush()?;
                return Ok((output, body.summary()));
            }
            // No segment at all, or an incomplete one after the last.
            Some(_) => return Err(Stop::Failed(FormatError::Truncated.into_io())),
        }
    }
    Err(Stop::InputGone)
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

    /// Damage done to an encrypted stream before decrypting it both ways.
    #[derive(Debug, Clone)]
    enum Damage {
        None,
        Flip(prop::sample::Index, u8),
        Truncate(prop::sample::Index),
        Append(Vec<u8>),
        Swap(prop::sample::Index, prop::sample::Index),
        Duplicate(prop::sample::Index),
        WrongKey,
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            Just(Damage::None),
            (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Damage::Flip(i, b)),
            any::<prop::sample::Index>().prop_map(Damage::Truncate),
            proptest::collection::vec(any::<u8>(), 1..2100).prop_map(Damage::Append),
            (any::<prop::sample::Index>(), any::<prop::sample::Index>())
                .prop_map(|(a, b)| Damage::Swap(a, b)),
            any::<prop::sample::Index>().prop_map(Damage::Duplicate),
            Just(Damage::WrongKey),
        ]
    }

    const SEG: usize = 1024 + 4 + 16;

    fn apply(stream: &mut Vec<u8>, damage: &Damage) {
        let segments = (stream.len() - HEADER_LEN) / SEG;
        let at = |i: &prop::sample::Index| HEADER_LEN + i.index(segments) * SEG;
        match damage {
            Damage::None | Damage::WrongKey => {}
            Damage::Flip(i, bit) => {
                let i = i.index(stream.len());
                stream[i] ^= 1 << bit;
            }
            Damage::Truncate(i) => stream.truncate(i.index(stream.len())),
            Damage::Append(extra) => stream.extend_from_slice(extra),
            Damage::Swap(a, b) => {
                let (a, b) = (at(a), at(b));
                let seg_a = stream[a..a + SEG].to_vec();
                stream.copy_within(b..b + SEG, a);
                stream[b..b + SEG].copy_from_slice(&seg_a);
            }
            Damage::Duplicate(i) => {
                let i = at(i);
                let copy = stream[i..i + SEG].to_vec();
                stream.splice(i..i, copy);
            }
        }
    }

    /// The plaintext released and the error (format error, or other I/O error text), if any.
    type Decrypted = (Vec<u8>, Result<(), String>);

    fn describe(e: io::Error) -> String {
        match FormatError::from_io(&e) {
            Some(f) => format!("{f:?}"),
            None => format!("{:?}: {e}", e.kind()),
        }
    }

    fn via_reader(stream: &[u8], key: &BackupKey) -> Decrypted {
        let mut out = Vec::new();
        let end = DecryptReader::new(stream, key).read_to_end(&mut out);
        (out, end.map(drop).map_err(describe))
    }

    /// What the sans-IO decoder releases and concludes when fed the whole stream at once.
    fn via_decoder(stream: &[u8], key: &BackupKey) -> Decrypted {
        let mut dec = crate::Decoder::new(key);
        let mut out = Vec::new();
        let end = match dec.update(stream, &mut out) {
            Ok(()) => dec.finish(&mut out).map(drop),
            Err(e) => Err(e),
        };
        (out, end.map_err(|e| format!("{e:?}")))
    }

    fn via_batches(stream: &[u8], key: &BackupKey, batch: usize, piece: usize) -> Decrypted {
        let mut out = Vec::new();
        let end = decrypt_stream_batched(Dribble(stream, piece), &mut out, key, batch)
            .map(drop)
            .map_err(describe);
        (out, end)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Differential: the batch decryptor fails with exactly the streaming reader's error (or
        /// succeeds with the same plaintext), and before an error releases only whole verified
        /// chunks in order, whatever the damage, batch size and read sizes (batches of 1 to 4
        /// chunks exercise the segment held back across batches). Against the reader only the
        /// verdict is compared (it withholds a whole input read's worth of plaintext before an
        /// error); against the sans-IO decoder, the released plaintext too.
        #[test]
        fn decrypt_stream_matches_the_reader(
            len in prop_oneof![Just(0usize), Just(1), Just(1023), Just(1024), Just(1025), Just(4096), 0usize..9000],
            damage in damage(),
            chunks_per_batch in 1usize..5,
            piece in prop_oneof![Just(usize::MAX), 1usize..3000],
        ) {
            let key = BackupKey::from_bytes([3; 32]);
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let enc = Encoder::new(&key, params(1024), &mut Fixed).unwrap();
            let (mut stream, _) = encrypt_stream(data.as_slice(), Vec::new(), enc).unwrap();
            apply(&mut stream, &damage);
            let key = match damage {
                Damage::WrongKey => BackupKey::from_bytes([4; 32]),
                _ => key,
            };
            let expected = via_reader(&stream, &key);
            if matches!(damage, Damage::None) {
                prop_assert_eq!(&expected, &(data.clone(), Ok(())));
            }
            let (released, end) = via_batches(&stream, &key, chunks_per_batch * 1024, piece);
            prop_assert_eq!(&end, &expected.1);
            match &end {
                Ok(()) => prop_assert!(released == data),
                // Verified chunks only, in order, whole: never a byte of the failing chunk.
                Err(_) => prop_assert!(data.starts_with(&released) && released.len() % 1024 == 0),
            }
            // Exactly what the sans-IO decoder releases before the same verdict.
            prop_assert_eq!((released, end), via_decoder(&stream, &key));
        }
    }

    #[test]
    fn decrypt_stream_reports_input_and_output_errors() {
        let key = BackupKey::from_bytes([3; 32]);
        let enc = Encoder::new(&key, params(1024), &mut Fixed).unwrap();
        let data = vec![9u8; 50_000];
        let (stream, _) = encrypt_stream(data.as_slice(), Vec::new(), enc).unwrap();
        let err = decrypt_stream(stream.as_slice(), BrokenSink, &key).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        /// The stream's first 20 000 bytes, then a broken pipe.
        struct DiesAt<'a>(&'a [u8]);
        impl Read for DiesAt<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "input died"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        let err = decrypt_stream(DiesAt(&stream[..20_000]), &mut out, &key).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(out.len() < 20_000 && data.starts_with(&out));
    }
}
