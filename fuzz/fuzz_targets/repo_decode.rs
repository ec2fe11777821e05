//! Every decoder of the incremental repository's objects (packs, pack headers, index objects
//! and bodies, config, catalog entries, snapshot headers) over arbitrary bytes: must never
//! panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lockbox_repo::fuzzing::decode_all(data);
});
