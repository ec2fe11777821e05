//! Exhaustive: every single-bit flip anywhere in a small stream (header and body) is an
//! error, and the decoder never hands out plaintext from a chunk that did not verify.

mod common;

use common::*;
use lockbox_format::FormatError;

#[test]
fn every_bit_flip_is_detected_and_releases_nothing_unverified() {
    let plain = data(CS + 200); // two chunks: one full, one final
    let stream = encrypt(&plain);
    assert_eq!(stream.len(), HDR + 2 * SEG);
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut s = stream.clone();
    for byte in 0..s.len() {
        for bit in 0..8 {
            s[byte] ^= 1 << bit;
            let (out, r) = decode_steps(&key(), &s, 333);
            let err = r.expect_err(&format!("flip of byte {byte} bit {bit} went unnoticed"));
            // Anything emitted must be a verified chunk: chunk 0 intact, and only when the
            // flip lies after it.
            if !out.is_empty() {
                assert!(byte >= seg(1).start, "byte {byte}: plaintext released");
                assert!(
                    out == plain[..CS],
                    "byte {byte}: released bytes are not chunk 0"
                );
            }
            check_class(byte, &err);
            let name = format!("{err:?}");
            let name = name.split([' ', '(']).next().unwrap_or_default().to_owned();
            *kinds.entry(name).or_default() += 1;
            s[byte] ^= 1 << bit;
        }
    }
    assert_eq!(s, stream);
    let total: usize = kinds.values().sum();
    assert_eq!(total, stream.len() * 8, "{kinds:?}");
}

/// Which error each region of the stream yields when one bit in it flips.
fn check_class(byte: usize, err: &FormatError) {
    let ok = match byte {
        0..8 => *err == FormatError::NotLockbox,
        8 => matches!(err, FormatError::UnsupportedVersion(_)),
        // log2, reserved, created: covered by the MAC.
        9..20 => *err == FormatError::HeaderCorrupt,
        // The backup id salts every key, so a flipped id looks like another key.
        20..52 => *err == FormatError::WrongKey,
        52..100 => *err == FormatError::HeaderCorrupt,
        _ => {
            let chunk = ((byte - HDR) / SEG) as u64;
            *err == FormatError::ChunkCorrupt { index: chunk }
        }
    };
    assert!(ok, "flip in byte {byte} gave {err:?}");
}
