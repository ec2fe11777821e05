//! Stored vault records are decoded strictly: arbitrary bytes must never panic, and anything
//! that decodes must re-encode to exactly the same bytes (one encoding per record), in the
//! format version it was read in (1: legacy, no creation time; 2: salted, with it; 3: as 2,
//! with the catalog key and pin).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_vault_core::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(record.encode(), data, "a record has two encodings");
        assert_eq!(record.format_version(), data[0], "version changed on re-encode");
        let stores_time = record.format_version() >= 2 && !record.is_destroyed();
        assert_eq!(record.created_at_ms().is_some(), stores_time);
        assert_eq!(
            record.catalog_key().is_some(),
            record.format_version() == 3,
            "only version 3 carries a catalog key"
        );
        assert!(record.catalog_pin().is_none() || record.catalog_key().is_some());
    }
});
