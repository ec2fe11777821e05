//! Feeds arbitrary bytes, in arbitrary split sizes, to the stream decoder under a fixed key.
//! Must never panic, and must emit nothing more once it has failed. The batch decryptor
//! (`decrypt_stream`) must reach the same verdict on the same bytes.
//!
//! Input layout: byte 0 picks the mode. Odd: the rest is the whole stream. Even: a valid
//! header (key [7; 32], backup id [9; 32], 1 KiB chunks) is prepended, so the fuzzer spends
//! its time in the chunk logic. Byte 1 seeds the split sizes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lockbox_format::{
    BackupKey, Decoder, FormatError, HEADER_LEN, decrypt_stream, parse_header, segment_len,
};

/// Header of a stream under key [7; 32] with backup id [9; 32], created 0, 1 KiB chunks
/// (generated from docs/format.md by crates/lockbox-format/tests/vectors/crosscheck.py).
const VALID_HEADER: &str = "894c42580d0a1a0a010a0000000000000000000009090909090909090909090909\
    090909090909090909090909090909090909095aeae54567d28b6877c29e90d7026a450552cc8c2af43539cf65\
    3348e68f05f807411fda6fe6beb2941ba2a7c068e59c";

/// `VALID_HEADER` decoded, checked once to still be a valid header.
static HEADER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let header = hex::decode(VALID_HEADER).expect("VALID_HEADER is hex");
    let key = BackupKey::from_bytes([7; 32]);
    assert!(
        parse_header(&header, &key).is_ok(),
        "the seed header must stay valid"
    );
    header
});

fuzz_target!(|data: &[u8]| {
    let [mode, seed, rest @ ..] = data else { return };
    let key = BackupKey::from_bytes([7; 32]);
    let mut stream = Vec::new();
    if mode % 2 == 0 {
        stream.extend_from_slice(&HEADER);
    }
    stream.extend_from_slice(rest);

    let (released, verdict) = decode_in_pieces(&stream, &key, usize::from(*seed).max(1));
    let mut plain = Vec::new();
    let batched = decrypt_stream(stream.as_slice(), &mut plain, &key)
        .map(drop)
        .map_err(|e| FormatError::from_io(&e).cloned().expect("only format errors from memory"));
    assert_eq!(batched, verdict, "the batch decryptor disagrees with the decoder");
    assert!(plain == released, "the batch decryptor released other plaintext");
    if verdict.is_ok() {
        assert!(stream.len() >= HEADER_LEN + segment_len(1024));
    }
});

/// The plaintext the streaming decoder released and its verdict on `stream`, fed in pieces of
/// varying size.
fn decode_in_pieces(
    stream: &[u8],
    key: &BackupKey,
    mut step: usize,
) -> (Vec<u8>, Result<(), FormatError>) {
    let mut dec = Decoder::new(key);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let end = (pos + step).min(stream.len());
        if let Err(e) = dec.update(&stream[pos..end], &mut out) {
            let before = out.len();
            assert_eq!(dec.update(b"x", &mut out), Err(e.clone()), "errors are final");
            assert_eq!(out.len(), before, "nothing emitted after an error");
            return (out, Err(e));
        }
        pos = end;
        step = step.wrapping_mul(7).wrapping_add(13) % 4099 + 1;
    }
    let verdict = dec.finish(&mut out).map(drop);
    (out, verdict)
}
