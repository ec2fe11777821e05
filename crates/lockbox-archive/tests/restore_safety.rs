mod common;

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::symlink;

use common::{Crafted, archive, names};
use lockbox_archive::{ArchiveError, ArchiveReader, WriteOptions, restore};

fn sample_archive() -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("d/e")).unwrap();
    fs::write(src.path().join("d/e/f.txt"), "hello world\n".repeat(2000)).unwrap();
    fs::write(src.path().join("d/g"), b"g").unwrap();
    fs::write(src.path().join("empty"), b"").unwrap();
    symlink("d/g", src.path().join("link")).unwrap();
    let opts = WriteOptions {
        block_size: 1000,
        ..WriteOptions::default()
    };
    archive(src.path(), &opts).0
}

/// Restore `bytes` into `<fresh parent>/dest`; return the error, checking nothing was left.
fn restore_fails(bytes: &[u8]) -> ArchiveError {
    restore_fails_from(bytes)
}

fn restore_fails_from(input: impl Read) -> ArchiveError {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("dest");
    let err = restore(input, &dest, &mut |_| {}).expect_err("restore must fail");
    assert!(
        !dest.exists(),
        "dest must not exist after a failed restore ({err})"
    );
    assert!(
        names(parent.path()).is_empty(),
        "temporary directory left behind ({err})"
    );
    err
}

#[test]
fn destination_must_be_missing_or_empty() {
    let bytes = sample_archive();
    let parent = tempfile::tempdir().unwrap();

    let full = parent.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep"), b"mine").unwrap();
    let err = restore(bytes.as_slice(), &full, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ArchiveError::DestinationNotEmpty(_)),
        "{err:?}"
    );
    assert_eq!(names(&full), ["keep"]);

    let file = parent.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = restore(bytes.as_slice(), &file, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ArchiveError::DestinationNotEmpty(_)),
        "{err:?}"
    );

    let empty = parent.path().join("empty");
    fs::create_dir(&empty).unwrap();
    restore(bytes.as_slice(), &empty, &mut |_| {}).unwrap();
    assert_eq!(names(&empty), ["d", "empty", "link"]);

    let missing = parent.path().join("missing");
    restore(bytes.as_slice(), &missing, &mut |_| {}).unwrap();
    assert_eq!(fs::read(missing.join("d/g")).unwrap(), b"g");
    assert_eq!(names(parent.path()), ["empty", "file", "full", "missing"]);

    let orphan = parent.path().join("no/such/parent");
    let err = restore(bytes.as_slice(), &orphan, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[test]
fn truncated_stream_fails_at_every_cut_and_leaves_nothing() {
    let bytes = sample_archive();
    assert!(bytes.len() > 500, "archive spans several blocks");
    for cut in (0..bytes.len()).step_by(37).chain([bytes.len() - 1]) {
        let err = restore_fails(&bytes[..cut]);
        assert!(
            matches!(err, ArchiveError::Truncated | ArchiveError::NotAnArchive),
            "cut at {cut}: {err:?}"
        );
    }
}

#[derive(Debug)]
struct Tampered;
impl std::fmt::Display for Tampered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("authentication failed")
    }
}
impl std::error::Error for Tampered {}

/// Yields `data[..fail_at]`, then fails with a custom error; or fails at EOF if `fail_at` is past it.
struct FailingReader<'a> {
    data: &'a [u8],
    pos: usize,
    fail_at: usize,
}

impl Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = self.fail_at.min(self.data.len());
        if self.pos >= limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, Tampered));
        }
        let end = limit.min(self.pos + buf.len());
        let n = end - self.pos;
        buf[..n].copy_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(n)
    }
}

fn assert_input_error(err: &ArchiveError) {
    match err {
        ArchiveError::Input(e) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(
                e.get_ref().is_some_and(|inner| inner.is::<Tampered>()),
                "{e:?}"
            );
        }
        other => panic!("expected Input, got {other:?}"),
    }
}

#[test]
fn input_errors_are_carried_unchanged() {
    let bytes = sample_archive();
    for fail_at in [0, 5, 9, 40, bytes.len() / 2, bytes.len() - 1] {
        let err = restore_fails_from(FailingReader {
            data: &bytes,
            pos: 0,
            fail_at,
        });
        assert_input_error(&err);
    }
}

#[test]
fn end_of_input_is_read_so_a_failing_final_check_aborts_the_restore() {
    // All archive bytes arrive, then the reader fails instead of reporting EOF (as a decrypting
    // reader does when the final chunk does not verify): the restore must not complete.
    let bytes = sample_archive();
    let err = restore_fails_from(FailingReader {
        data: &bytes,
        pos: 0,
        fail_at: usize::MAX,
    });
    assert_input_error(&err);
}

#[test]
fn trailing_bytes_after_the_end_record_are_rejected() {
    let mut bytes = sample_archive();
    bytes.push(0);
    assert!(matches!(restore_fails(&bytes), ArchiveError::Malformed(_)));
}

#[test]
fn bad_magic_and_unknown_versions_are_rejected() {
    let mut bytes = sample_archive();
    bytes[0] ^= 1;
    assert!(matches!(restore_fails(&bytes), ArchiveError::NotAnArchive));
    bytes[0] ^= 1;
    bytes[8] = 2;
    assert!(matches!(
        restore_fails(&bytes),
        ArchiveError::UnsupportedVersion(2)
    ));
    assert!(matches!(restore_fails(b""), ArchiveError::NotAnArchive));
}

#[test]
fn reader_is_poisoned_after_an_error() {
    let mut bytes = Crafted::new().file(b"a", b"x").end();
    bytes.truncate(bytes.len() - 3);
    let mut reader = ArchiveReader::new(bytes.as_slice()).unwrap();
    reader.next_entry().unwrap().unwrap();
    assert!(reader.next_entry().is_err());
    assert!(reader.next_entry().is_err());
    assert!(reader.read_block().is_err());
}
