//! Runs `ArchiveReader` over arbitrary bytes: every entry and all its data are read and
//! discarded. Never touches the filesystem; must never panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_archive::{ArchiveReader, EntryKind, MAX_BLOCK_SIZE};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = ArchiveReader::new(data) else {
        return;
    };
    loop {
        match reader.next_entry() {
            Ok(Some(entry)) => {
                let mut total = 0u64;
                while let Ok(Some(block)) = reader.read_block() {
                    assert!(block.len() <= MAX_BLOCK_SIZE);
                    total += block.len() as u64;
                }
                if let EntryKind::File { size } = entry.kind {
                    assert!(total <= size);
                }
            }
            Ok(None) => {
                assert_eq!(reader.bytes_read() as usize, data.len());
                break;
            }
            Err(_) => break,
        }
    }
});
