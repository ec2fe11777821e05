//! One test per error class, each asserting the exact variant.

mod common;

use common::*;
use lockbox_format::{BackupKey, FormatError};

fn three_chunks() -> Vec<u8> {
    encrypt(&data(2 * CS + 100))
}

#[test]
fn intact_stream_decodes() {
    let plain = data(2 * CS + 100);
    assert_eq!(decode(&encrypt(&plain)), Ok(plain));
}

#[test]
fn wrong_key() {
    let s = three_chunks();
    let (out, r) = decode_steps(&BackupKey::from_bytes([0x43; 32]), &s, usize::MAX);
    assert_eq!(r, Err(FormatError::WrongKey));
    assert!(r.unwrap_err().is_wrong_key());
    assert!(out.is_empty());
}

#[test]
fn not_lockbox() {
    assert_eq!(
        decode(b"PK\x03\x04 a zip file"),
        Err(FormatError::NotLockbox)
    );
    let mut s = three_chunks();
    s[3] = b'Y';
    assert_eq!(decode(&s), Err(FormatError::NotLockbox));
    // Detected at the first wrong byte, before the header is complete.
    let mut dec = lockbox_format::Decoder::new(&key());
    assert_eq!(
        dec.update(b"\x89LBY", &mut Vec::new()),
        Err(FormatError::NotLockbox)
    );
}

#[test]
fn unsupported_version() {
    let mut s = three_chunks();
    s[8] = 2;
    assert_eq!(decode(&s), Err(FormatError::UnsupportedVersion(2)));
    assert_eq!(decode(&s[..9]), Err(FormatError::UnsupportedVersion(2)));
}

#[test]
fn truncated_inside_header() {
    let s = three_chunks();
    for n in [0, 1, 7, 8, 9, 50, 99] {
        assert_eq!(decode(&s[..n]), Err(FormatError::Truncated), "cut at {n}");
    }
}

#[test]
fn truncated_empty_body() {
    let s = three_chunks();
    assert_eq!(decode(&s[..HDR]), Err(FormatError::Truncated));
}

#[test]
fn truncated_mid_chunk() {
    let s = three_chunks();
    for cut in [HDR + 1, HDR + SEG - 1, HDR + SEG + 500, s.len() - 1] {
        let (out, r) = decode_steps(&key(), &s[..cut], usize::MAX);
        assert_eq!(r, Err(FormatError::Truncated), "cut at {cut}");
        assert!(
            out.len() <= (cut - HDR) / SEG * CS,
            "only verified chunks were emitted"
        );
    }
}

#[test]
fn truncated_at_chunk_boundary() {
    let s = three_chunks();
    for chunks in [1, 2] {
        let r = decode(&s[..HDR + chunks * SEG]);
        assert_eq!(r, Err(FormatError::Truncated), "{chunks} chunks kept");
    }
}

#[test]
fn trailing_data() {
    let mut s = three_chunks();
    s.push(0);
    assert_eq!(decode(&s), Err(FormatError::TrailingData));
    // A whole extra segment appended after the real end.
    let mut s = three_chunks();
    let extra = s[seg(0)].to_vec();
    s.extend_from_slice(&extra);
    assert_eq!(decode(&s), Err(FormatError::TrailingData));
}

#[test]
fn reordered() {
    let s = three_chunks();
    let mut r = s[..HDR].to_vec();
    r.extend_from_slice(&s[seg(1)]);
    r.extend_from_slice(&s[seg(0)]);
    r.extend_from_slice(&s[seg(2)]);
    let (out, res) = decode_steps(&key(), &r, 7);
    assert_eq!(
        res,
        Err(FormatError::ChunkOutOfOrder {
            index: 0,
            belongs_at: 1
        })
    );
    assert!(out.is_empty());
}

#[test]
fn duplicated() {
    let s = three_chunks();
    let mut r = s[..HDR].to_vec();
    r.extend_from_slice(&s[seg(0)]);
    r.extend_from_slice(&s[seg(0)]);
    r.extend_from_slice(&s[seg(1)]);
    r.extend_from_slice(&s[seg(2)]);
    let (out, res) = decode_steps(&key(), &r, 1000);
    assert_eq!(
        res,
        Err(FormatError::ChunkOutOfOrder {
            index: 1,
            belongs_at: 0
        })
    );
    assert_eq!(out, data(CS), "only the first, genuine chunk was emitted");
}

#[test]
fn final_chunk_moved_forward_is_out_of_order() {
    let s = three_chunks();
    let mut r = s[..HDR].to_vec();
    r.extend_from_slice(&s[seg(0)]);
    r.extend_from_slice(&s[seg(2)]);
    assert_eq!(
        decode(&r),
        Err(FormatError::ChunkOutOfOrder {
            index: 1,
            belongs_at: 2
        })
    );
}

#[test]
fn foreign_chunk_from_another_backup_under_the_same_key() {
    let s = three_chunks();
    let other = encrypt_with(&key(), &data(2 * CS + 100), CS, 2);
    assert_ne!(s[..HDR], other[..HDR], "a different backup id");
    let mut r = s.clone();
    r[seg(1)].copy_from_slice(&other[seg(1)]);
    let (out, res) = decode_steps(&key(), &r, usize::MAX);
    assert_eq!(res, Err(FormatError::ForeignChunk { index: 1 }));
    assert_eq!(out, data(CS));
    assert!(res.unwrap_err().is_integrity());
}

#[test]
fn flipped_chunk_tag_is_corrupt_not_foreign() {
    let mut s = three_chunks();
    s[seg(1).start] ^= 0x10;
    assert_eq!(decode(&s), Err(FormatError::ChunkCorrupt { index: 1 }));
}

#[test]
fn flipped_ciphertext_bit_is_corrupt() {
    let mut s = three_chunks();
    s[seg(2).start + 40] ^= 1;
    let (out, r) = decode_steps(&key(), &s, usize::MAX);
    assert_eq!(r, Err(FormatError::ChunkCorrupt { index: 2 }));
    assert_eq!(out, data(2 * CS));
}

#[test]
fn header_key_check_flip_is_corrupt_not_wrong_key() {
    let mut s = three_chunks();
    s[60] ^= 4;
    assert_eq!(decode(&s), Err(FormatError::HeaderCorrupt));
}

#[test]
fn header_mac_flip_is_corrupt() {
    let mut s = three_chunks();
    s[99] ^= 0x80;
    assert_eq!(decode(&s), Err(FormatError::HeaderCorrupt));
    let mut s = three_chunks();
    s[15] ^= 1; // created_unix_ms
    assert_eq!(decode(&s), Err(FormatError::HeaderCorrupt));
}

#[test]
fn errors_are_sticky() {
    let mut s = three_chunks();
    s[seg(0).start + 9] ^= 1;
    let mut dec = lockbox_format::Decoder::new(&key());
    let mut out = Vec::new();
    let first = dec.update(&s, &mut out);
    assert_eq!(first, Err(FormatError::ChunkCorrupt { index: 0 }));
    assert_eq!(dec.update(&[1, 2, 3], &mut out), first);
    assert_eq!(
        dec.finish(&mut out),
        Err(FormatError::ChunkCorrupt { index: 0 })
    );
    assert!(out.is_empty());
}

#[test]
fn data_that_ends_like_padding_round_trips() {
    // The padding mark is searched from the end, so data ending in 0x80 0x00.. or in zeros
    // must survive.
    let mut plain = data(100);
    plain.extend_from_slice(&[0x80, 0, 0]);
    assert_eq!(decode(&encrypt(&plain)), Ok(plain));
    let zeros = vec![0u8; CS - 1];
    assert_eq!(decode(&encrypt(&zeros)), Ok(zeros));
}
