//! Runs `ArchiveReader::new_tree` (a snapshot's tree: entries whose file data are chunk
//! references) over arbitrary bytes: every entry and reference is read. Never touches the
//! filesystem; must never panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_archive::{ArchiveReader, EntryKind, MAX_CHUNK_SIZE};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = ArchiveReader::new_tree(data) else {
        return;
    };
    loop {
        match reader.next_entry() {
            Ok(Some(entry)) => {
                let mut total = 0u64;
                while let Ok(Some(chunk)) = reader.read_ref() {
                    assert!(chunk.len as usize <= MAX_CHUNK_SIZE && chunk.len > 0);
                    total += u64::from(chunk.len);
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
