mod common;

use std::fs;

use common::{Crafted, names};
use lockbox_archive::{
    ArchiveError, ArchiveReader, MAX_BLOCK_SIZE, MAX_PATH_LEN, restore, validate_path,
};

/// Restore `bytes`, expect failure, and check nothing exists at dest nor beside it.
fn rejected(bytes: &[u8]) -> ArchiveError {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("dest");
    let err = restore(bytes, &dest, &mut |_| {}).expect_err("archive must be rejected");
    assert!(!dest.exists(), "{err}");
    assert!(
        names(parent.path()).is_empty(),
        "leftover temporary directory after: {err}"
    );
    err
}

/// Read every entry and its data with the bare reader (no filesystem).
fn read_all(bytes: &[u8]) -> Result<usize, ArchiveError> {
    let mut reader = ArchiveReader::new(bytes)?;
    let mut n = 0;
    while reader.next_entry()?.is_some() {
        while reader.read_block()?.is_some() {}
        n += 1;
    }
    Ok(n)
}

/// Both the bare reader and `restore` must reject `bytes` as malformed.
fn assert_malformed(bytes: &[u8]) {
    assert!(matches!(read_all(bytes), Err(ArchiveError::Malformed(_))));
    assert!(matches!(rejected(bytes), ArchiveError::Malformed(_)));
}

/// A valid archive of every record kind: a directory, a file of one raw and one zstd block
/// (`head` then 3000 `q`), a symlink to `link_target`, and a small file `e`.
fn valid_archive(link_target: &[u8]) -> Vec<u8> {
    let compressed = zstd::bulk::compress(&[b'q'; 3000], 3).unwrap();
    let bytes = Crafted::new()
        .dir(b"d")
        .file_header(b"d/f", 3004)
        .raw(b"head")
        .zstd(3000, &compressed)
        .data_end()
        .symlink(b"d/l", link_target)
        .file(b"e", b"tail")
        .end();
    assert_eq!(read_all(&bytes).unwrap(), 4);
    bytes
}

#[test]
fn crafted_valid_archive_restores() {
    // Guards the helper: the same encoder builds the malicious cases below.
    let bytes = valid_archive(b"../../anywhere");
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("dest");
    restore(bytes.as_slice(), &dest, &mut |_| {}).unwrap();
    let data = fs::read(dest.join("d/f")).unwrap();
    assert_eq!(&data[..4], b"head");
    assert!(data[4..].iter().all(|&b| b == b'q') && data.len() == 3004);
    assert_eq!(
        fs::read_link(dest.join("d/l")).unwrap().as_os_str(),
        "../../anywhere"
    );
    assert_eq!(fs::read(dest.join("e")).unwrap(), b"tail");
}

#[test]
fn unsafe_paths_are_rejected() {
    for ok in [&b"a"[..], b"a/b", b"a b/..c/.d", b"x/y/z", b"\xff/\xfe"] {
        assert!(validate_path(ok).is_ok(), "{ok:?}");
    }
    let long = vec![b'a'; MAX_PATH_LEN + 1];
    for path in [
        &b"../x"[..],
        b"/etc/x",
        b"a/../../x",
        b"./x",
        b"a//b",
        b"x/",
        b"",
        b"a\0b",
        b"/a",
        b".",
        b"..",
        b"a/./b",
        b"a/../b",
        &long,
    ] {
        let unsafe_path = |r| matches!(r, Err(ArchiveError::UnsafePath(_)));
        assert!(unsafe_path(validate_path(path)), "{path:?}");
        let mut c = Crafted::new();
        if path.starts_with(b"a/") {
            c.dir(b"a");
        }
        let bytes = c.file(path, b"pwned").end();
        assert!(unsafe_path(Err(rejected(&bytes))), "{path:?}");
    }
}

#[test]
fn messages_show_non_utf8_paths() {
    let err = validate_path(b"\xff/..").unwrap_err();
    assert_eq!(err.to_string(), r#"unsafe path in archive: "\xFF/..""#);
    let bytes = Crafted::new()
        .file(b"\xff\n", b"")
        .file(b"\xff\n", b"")
        .end();
    let err = rejected(&bytes);
    assert_eq!(
        err.to_string(),
        r#"malformed archive: duplicate entry: "\xFF\n""#
    );
}

#[test]
fn a_symlink_cannot_be_used_to_write_outside() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().as_os_str().as_encoded_bytes();
    let cases = [
        Crafted::new()
            .symlink(b"evil", target)
            .file(b"evil/pwned", b"x")
            .end(),
        Crafted::new()
            .symlink(b"evil", target)
            .dir(b"evil/sub")
            .end(),
        Crafted::new()
            .symlink(b"evil", target)
            .symlink(b"evil/l", b"x")
            .end(),
    ];
    for bytes in cases {
        assert_malformed(&bytes);
        assert!(
            names(outside.path()).is_empty(),
            "something was written through the symlink"
        );
    }
}

#[test]
fn a_symlink_cannot_replace_a_path_or_be_overwritten() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("file");
    let t = target.as_os_str().as_encoded_bytes();
    // Same path twice: the second entry would write through the link if it were followed.
    let bytes = Crafted::new().symlink(b"evil", t).file(b"evil", b"x").end();
    assert!(matches!(rejected(&bytes), ArchiveError::Malformed(_)));
    assert!(!target.exists());
}

#[test]
fn duplicates_and_disorder_are_rejected() {
    let cases = [
        Crafted::new().file(b"f", b"1").file(b"f", b"2").end(),
        Crafted::new().dir(b"d").dir(b"d").end(),
        Crafted::new().dir(b"d").file(b"d/x", b"").dir(b"d").end(),
        Crafted::new().file(b"b", b"").file(b"a", b"").end(),
        Crafted::new().file(b"x/y", b"").end(),
        Crafted::new().file(b"x", b"").file(b"x/y", b"").end(),
        Crafted::new()
            .dir(b"a")
            .dir(b"b")
            .file(b"a/late", b"")
            .end(),
    ];
    for bytes in cases {
        assert_malformed(&bytes);
    }
}

#[test]
fn oversized_blocks_are_rejected_before_reading_them() {
    let too_big = (MAX_BLOCK_SIZE + 1) as u32;
    let bytes = Crafted::new()
        .file_header(b"f", u64::from(too_big))
        .raw_claiming(too_big, b"")
        .end();
    assert!(matches!(rejected(&bytes), ArchiveError::Malformed(_)));
    let bytes = Crafted::new()
        .file_header(b"f", 10)
        .raw_claiming(0, b"")
        .end();
    assert!(matches!(rejected(&bytes), ArchiveError::Malformed(_)));
}

#[test]
fn sizes_that_do_not_add_up_are_rejected() {
    let cases = [
        Crafted::new()
            .file_header(b"f", 10)
            .raw(b"12345")
            .data_end()
            .end(),
        Crafted::new()
            .file_header(b"f", 5)
            .raw(b"1234567890")
            .data_end()
            .end(),
        Crafted::new()
            .file_header(b"f", 5)
            .raw(b"123")
            .raw(b"456")
            .data_end()
            .end(),
    ];
    for bytes in cases {
        assert_malformed(&bytes);
    }
}

#[test]
fn compressed_blocks_must_match_their_declared_length() {
    let bomb = zstd::bulk::compress(&vec![0u8; MAX_BLOCK_SIZE], 3).unwrap();
    let small = zstd::bulk::compress(&[7u8; 300], 3).unwrap();
    let cases = [
        Crafted::new()
            .file_header(b"f", 1000)
            .zstd(1000, &bomb)
            .data_end()
            .end(),
        Crafted::new()
            .file_header(b"f", 400)
            .zstd(400, &small)
            .data_end()
            .end(),
        Crafted::new()
            .file_header(b"f", 300)
            .zstd(300, b"not zstd")
            .data_end()
            .end(),
        // Stored size must be smaller than the data: no expansion through "compression".
        Crafted::new()
            .file_header(b"f", 4)
            .zstd(4, b"abcd")
            .data_end()
            .end(),
    ];
    for bytes in cases {
        assert_malformed(&bytes);
    }
}

#[test]
fn bad_fields_are_rejected() {
    let mut mode = Crafted::new().file(b"f", b"").end();
    mode[9 + 4..9 + 8].copy_from_slice(&0o10000u32.to_be_bytes());
    let mut nanos = Crafted::new().file(b"f", b"").end();
    nanos[9 + 16..9 + 20].copy_from_slice(&1_000_000_000u32.to_be_bytes());
    let cases = [
        mode,
        nanos,
        Crafted::new().symlink(b"l", b"").end(),
        Crafted::new().symlink(b"l", b"a\0b").end(),
        [Crafted::new().0, vec![9]].concat(),
    ];
    for bytes in cases {
        assert_malformed(&bytes);
    }
}

#[test]
fn reader_survives_every_single_byte_corruption() {
    let valid = valid_archive(b"f");
    let mut accepted = 0;
    for i in 0..valid.len() {
        for flip in [0x01, 0x80, 0xFF] {
            let mut bytes = valid.clone();
            bytes[i] ^= flip;
            accepted += usize::from(read_all(&bytes).is_ok());
        }
        assert!(
            read_all(&valid[..i]).is_err(),
            "prefix of {i} bytes accepted"
        );
    }
    // Only mtimes, modes and data bytes can change without breaking the structure.
    assert!(accepted < valid.len() * 3 / 2, "{accepted}");
}
