//! Round trips through the sans-IO core and the blocking adapters, at every chunk boundary and
//! with arbitrary split points on both sides.

mod common;

use std::io::{Read, Write};

use common::*;
use lockbox_format::{
    Decoder, DecryptReader, Encoder, EncryptWriter, FormatError, StreamSummary, segment_len,
};
use proptest::prelude::*;

/// Encodes `plain` feeding the encoder the pieces given by `splits`.
fn encode_split(plain: &[u8], splits: &[usize], seed: u8) -> (Vec<u8>, StreamSummary) {
    let mut enc = Encoder::new(&key(), params(CS), &mut FixedRng(seed)).unwrap();
    let mut out = enc.header_bytes().to_vec();
    let mut rest = plain;
    for &s in splits {
        let (a, b) = rest.split_at(s.min(rest.len()));
        enc.update(a, &mut out).unwrap();
        rest = b;
    }
    enc.update(rest, &mut out).unwrap();
    let summary = enc.finish(&mut out).unwrap();
    (out, summary)
}

fn decode_split(stream: &[u8], splits: &[usize]) -> (Vec<u8>, StreamSummary) {
    let mut dec = Decoder::new(&key());
    let mut out = Vec::new();
    let mut rest = stream;
    for &s in splits {
        let (a, b) = rest.split_at(s.min(rest.len()));
        dec.update(a, &mut out).unwrap();
        rest = b;
    }
    dec.update(rest, &mut out).unwrap();
    let summary = dec.finish(&mut out).unwrap();
    (out, summary)
}

fn boundary_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(CS - 1),
        Just(CS),
        Just(CS + 1),
        Just(2 * CS),
        Just(2 * CS - 1),
        Just(2 * CS + 1),
        0..CS * 9,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn core_round_trip(
        len in boundary_len(),
        enc_splits in prop::collection::vec(0usize..3000, 0..8),
        dec_splits in prop::collection::vec(0usize..3000, 0..8),
    ) {
        let plain = data(len);
        let (stream, summary) = encode_split(&plain, &enc_splits, 1);
        // The split points do not change the bytes.
        prop_assert!(stream == encrypt(&plain), "split points change nothing");
        let chunks = len / CS + 1;
        prop_assert_eq!(stream.len(), HDR + chunks * segment_len(CS));
        prop_assert_eq!(summary, StreamSummary {
            chunks: chunks as u64,
            plaintext_len: len as u64,
            ciphertext_len: stream.len() as u64,
        });
        let (out, dsummary) = decode_split(&stream, &dec_splits);
        prop_assert!(out == plain);
        prop_assert_eq!(dsummary, summary);
    }

    #[test]
    fn io_round_trip(
        len in boundary_len(),
        write_sizes in prop::collection::vec(1usize..2500, 1..6),
        read_size in 1usize..5000,
    ) {
        let plain = data(len);
        let mut w = EncryptWriter::new(Vec::new(), &key(), params(CS), &mut FixedRng(1)).unwrap();
        let mut rest = &plain[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = write_sizes[i % write_sizes.len()].min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        w.flush().unwrap();
        let (stream, summary) = w.finish().unwrap();
        prop_assert!(stream == encrypt(&plain), "same bytes as the sans-IO encoder");
        prop_assert_eq!(summary.plaintext_len, len as u64);

        let mut r = DecryptReader::new(&stream[..], &key());
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 { break; }
            out.extend_from_slice(&buf[..n]);
        }
        prop_assert!(out == plain);
        prop_assert_eq!(r.summary(), Some(&summary));
    }
}

#[test]
fn chunk_size_limits() {
    for cs in [1 << 10, 1 << 16, 1 << 20] {
        let plain = data(cs + 3);
        let mut enc = Encoder::new(&key(), params(cs), &mut FixedRng(3)).unwrap();
        assert_eq!(enc.header().chunk_size, cs);
        let mut out = enc.header_bytes().to_vec();
        enc.update(&plain, &mut out).unwrap();
        enc.finish(&mut out).unwrap();
        assert_eq!(out.len(), HDR + 2 * segment_len(cs));
        let (got, r) = decode_steps(&key(), &out, 4096);
        assert_eq!(r.unwrap().plaintext_len, plain.len() as u64);
        assert_eq!(got, plain);
    }
    for bad in [512, 1000, 32 << 20] {
        let r = Encoder::new(&key(), params(bad), &mut FixedRng(3));
        assert_eq!(r.err(), Some(FormatError::InvalidChunkSize(bad)));
    }
}

#[test]
fn final_chunk_hides_the_exact_length() {
    let a = encrypt(&data(1));
    let b = encrypt(&data(CS - 1));
    assert_eq!(a.len(), b.len());
}

#[test]
fn header_is_readable_before_the_body() {
    let stream = encrypt(&data(5000));
    let mut r = DecryptReader::new(&stream[..], &key());
    let h = r.header().unwrap().clone();
    assert_eq!(h.chunk_size, CS);
    assert_eq!(h.created_unix_ms, 1_750_000_000_000);
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, data(5000));
}

#[test]
fn reader_reports_damage_as_invalid_data_and_never_eof() {
    let stream = encrypt(&data(3 * CS));
    let cut = &stream[..stream.len() - SEG];
    let mut r = DecryptReader::new(cut, &key());
    let mut out = Vec::new();
    let e = r.read_to_end(&mut out).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(FormatError::from_io(&e), Some(&FormatError::Truncated));
    // The last segment left is held back until EOF shows it is not a final chunk.
    assert!(
        out == data(2 * CS),
        "verified chunks were delivered, then the error"
    );
    // It stays an error: no late Ok(0).
    let e2 = r.read(&mut [0; 16]).unwrap_err();
    assert_eq!(FormatError::from_io(&e2), Some(&FormatError::Truncated));
    assert!(r.summary().is_none());
}

#[test]
fn header_of_a_wrong_key_stream_is_an_error() {
    let stream = encrypt(&data(10));
    let mut r = DecryptReader::new(&stream[..], &lockbox_format::BackupKey::from_bytes([1; 32]));
    let e = r.header().unwrap_err();
    assert_eq!(FormatError::from_io(&e), Some(&FormatError::WrongKey));
    let mut r = DecryptReader::new(&stream[..50], &key());
    let e = r.header().unwrap_err();
    assert_eq!(FormatError::from_io(&e), Some(&FormatError::Truncated));
}

/// A writer that fails after `left` bytes.
struct FailingWriter {
    left: usize,
}
impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn writer_is_unusable_after_an_inner_failure() {
    let mut w = EncryptWriter::new(
        FailingWriter { left: 500 },
        &key(),
        params(CS),
        &mut FixedRng(1),
    )
    .unwrap();
    assert!(w.write_all(&data(3 * CS)).is_err());
    assert!(w.write(&[1]).is_err(), "no silent gap in the stream");
    assert!(w.finish().is_err());
}

#[test]
fn huge_single_write_is_taken_in_bounded_batches() {
    let plain = data(3 << 20);
    let mut w = EncryptWriter::new(Vec::new(), &key(), params(CS), &mut FixedRng(1)).unwrap();
    let n = w.write(&plain).unwrap();
    assert!(n < plain.len() && n >= CS, "took {n}");
    w.write_all(&plain[n..]).unwrap();
    let (stream, _) = w.finish().unwrap();
    let got = decode(&stream).unwrap();
    let first_diff = got.iter().zip(&plain).position(|(a, b)| a != b);
    assert_eq!((got.len(), first_diff), (plain.len(), None));
}
