//! Stored vault records are decoded strictly: arbitrary bytes must never panic, and anything
//! that decodes must re-encode to exactly the same bytes (one encoding per record).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_vault_core::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(record.encode(), data, "a record has two encodings");
    }
});
