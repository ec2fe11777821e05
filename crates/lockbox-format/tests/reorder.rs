//! How a misplaced chunk is reported (docs/format.md §4, rule 3.5): an authentic chunk of this
//! backup within 16 positions of where it sits is `ChunkOutOfOrder` naming its true position;
//! further away it is `ChunkCorrupt`. Every decoding path (sans-IO decoder, `DecryptReader`,
//! `decrypt_stream`) gives the same verdict and releases nothing but the chunks before it.

mod common;

use std::io::Read;

use common::*;
use lockbox_format::{DecryptReader, FormatError, REORDER_WINDOW, decrypt_stream};

/// Chunks in the test stream: 19 full ones and a final one.
const CHUNKS: usize = 20;
/// The documented classification window.
const WINDOW: usize = 16;

#[test]
fn the_window_is_the_documented_one() {
    assert_eq!(REORDER_WINDOW, WINDOW as u64);
}

fn plain() -> Vec<u8> {
    data((CHUNKS - 1) * CS + 5)
}

/// The stream with the segment at `slot` replaced by a copy of segment `from`.
fn with_segment(slot: usize, from: usize) -> Vec<u8> {
    let mut s = encrypt(&plain());
    let copy = s[seg(from)].to_vec();
    s[seg(slot)].copy_from_slice(&copy);
    s
}

/// Decodes `stream` along all three paths, checks they agree, and returns the verdict.
fn verdict(stream: &[u8]) -> Result<(), FormatError> {
    let (core_out, core) = decode_steps(&key(), stream, 333);
    let mut reader_out = Vec::new();
    let reader = DecryptReader::new(stream, &key())
        .read_to_end(&mut reader_out)
        .map(drop)
        .map_err(|e| FormatError::from_io(&e).cloned().unwrap());
    let mut batch_out = Vec::new();
    let batch = decrypt_stream(stream, &mut batch_out, &key())
        .map(drop)
        .map_err(|e| FormatError::from_io(&e).cloned().unwrap());
    let core = core.map(drop);
    assert_eq!(reader, core, "DecryptReader disagrees");
    assert_eq!(batch, core, "decrypt_stream disagrees");
    if let Err(
        FormatError::ChunkOutOfOrder { index, .. }
        | FormatError::ChunkCorrupt { index }
        | FormatError::ForeignChunk { index },
    ) = core
    {
        let verified = &plain()[..index as usize * CS];
        for (path, out) in [("core", &core_out), ("batch", &batch_out)] {
            assert!(
                out == verified,
                "{path}: released {} bytes, not the {} verified",
                out.len(),
                verified.len()
            );
        }
        // The reader may hold back verified bytes that were still buffered when it failed.
        assert!(
            verified.starts_with(&reader_out),
            "reader: released unverified bytes"
        );
    }
    core
}

fn out_of_order(index: usize, belongs_at: usize) -> Result<(), FormatError> {
    Err(FormatError::ChunkOutOfOrder {
        index: index as u64,
        belongs_at: belongs_at as u64,
    })
}

fn corrupt(index: usize) -> Result<(), FormatError> {
    Err(FormatError::ChunkCorrupt {
        index: index as u64,
    })
}

#[test]
fn intact_stream_decodes_on_every_path() {
    assert_eq!(verdict(&encrypt(&plain())), Ok(()));
}

#[test]
fn chunk_from_ahead_within_the_window_names_its_position() {
    for (slot, from) in [(0, 1), (2, 2 + WINDOW), (3, 3 + WINDOW - 1)] {
        assert_eq!(
            verdict(&with_segment(slot, from)),
            out_of_order(slot, from),
            "{from} at {slot}"
        );
    }
}

#[test]
fn chunk_from_behind_within_the_window_names_its_position() {
    for (slot, from) in [(1, 0), (18, 18 - WINDOW), (CHUNKS - 1, CHUNKS - 1 - WINDOW)] {
        assert_eq!(
            verdict(&with_segment(slot, from)),
            out_of_order(slot, from),
            "{from} at {slot}"
        );
    }
}

#[test]
fn final_chunk_moved_inside_the_window_is_out_of_order() {
    let last = CHUNKS - 1;
    assert_eq!(
        verdict(&with_segment(last - WINDOW, last)),
        out_of_order(last - WINDOW, last)
    );
}

#[test]
fn chunk_from_outside_the_window_is_corrupt() {
    for (slot, from) in [
        (1, 2 + WINDOW),
        (0, WINDOW + 1),
        (CHUNKS - 1, CHUNKS - 2 - WINDOW),
    ] {
        assert_eq!(
            verdict(&with_segment(slot, from)),
            corrupt(slot),
            "{from} at {slot}"
        );
    }
}

#[test]
fn chunk_of_another_backup_given_our_chunk_tag_is_corrupt() {
    let mut s = encrypt(&plain());
    let other = encrypt_with(&key(), &plain(), CS, 2);
    let ours = s[seg(0)][..4].to_vec();
    s[seg(4)].copy_from_slice(&other[seg(4)]);
    s[seg(4)][..4].copy_from_slice(&ours);
    assert_eq!(verdict(&s), corrupt(4));
}

#[test]
fn chunk_of_another_backup_is_foreign() {
    let mut s = encrypt(&plain());
    let other = encrypt_with(&key(), &plain(), CS, 2);
    s[seg(4)].copy_from_slice(&other[seg(4)]);
    assert_eq!(verdict(&s), Err(FormatError::ForeignChunk { index: 4 }));
}

#[test]
fn cut_at_a_segment_boundary_is_truncated_and_extended_is_trailing_data() {
    let s = encrypt(&plain());
    assert_eq!(verdict(&s[..HDR + 7 * SEG]), Err(FormatError::Truncated));
    let mut longer = s.clone();
    longer.extend_from_slice(&s[seg(3)]);
    assert_eq!(verdict(&longer), Err(FormatError::TrailingData));
}
