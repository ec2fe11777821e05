mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use common::{archive, names, set_mode, set_mtime, snapshot};
use lockbox_archive::{
    ArchiveError, ArchiveReader, EntryKind, WriteOptions, restore, scan_size, write_dir,
};
use rand_core::{OsRng, RngCore};

const BLOCK: usize = 4096;

fn small_blocks() -> WriteOptions {
    WriteOptions {
        block_size: BLOCK,
        ..WriteOptions::default()
    }
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    OsRng.fill_bytes(&mut v);
    v
}

fn text(len: usize) -> Vec<u8> {
    let line = b"lockbox keeps encrypted chat backups; hello hello hello 0123456789\n";
    line.iter().copied().cycle().take(len).collect()
}

/// A tree with every feature the archive must preserve.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir(root.join("empty_dir")).unwrap();
    fs::create_dir(root.join("private")).unwrap();
    fs::write(root.join("empty_file"), b"").unwrap();
    fs::write(root.join("a/b/c/deep.txt"), b"deep").unwrap();
    for (i, len) in [BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK + 7]
        .into_iter()
        .enumerate()
    {
        fs::write(root.join(format!("a/edge{i}.txt")), text(len)).unwrap();
    }
    fs::write(root.join("a/big.log"), text(300_000)).unwrap();
    fs::write(root.join("a/noise.bin"), random(50_000)).unwrap();
    fs::write(root.join("private/secret"), b"0600").unwrap();
    fs::write(root.join("a/run.sh"), b"#!/bin/sh\n").unwrap();
    fs::write(root.join("a/ro.txt"), b"read only").unwrap();
    fs::write(root.join("a-b"), b"sorts between a and a/...").unwrap();
    symlink("b/c/deep.txt", root.join("a/rel_link")).unwrap();
    symlink("/etc/hostname", root.join("abs_link")).unwrap();
    symlink("does/not/exist", root.join("a/b/dangling")).unwrap();

    set_mode(&root.join("private/secret"), 0o600);
    set_mode(&root.join("a/run.sh"), 0o755);
    set_mode(&root.join("a/ro.txt"), 0o444);
    set_mtime(&root.join("a/run.sh"), 1_500_000_000, 123_456_789);
    set_mtime(&root.join("empty_file"), 1_000_000_000, 1);
    // Directory mtimes last: creating children changes them.
    set_mtime(&root.join("a/b/c"), 1_400_000_000, 999_999_999);
    set_mtime(&root.join("empty_dir"), 1_300_000_000, 42);
    set_mode(&root.join("private"), 0o700);
    set_mtime(&root.join("private"), 1_200_000_000, 7);
}

#[test]
fn round_trip_preserves_content_modes_mtimes_and_links() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let (bytes, written) = archive(src.path(), &small_blocks());
    assert_eq!(
        (
            written.files,
            written.dirs,
            written.symlinks,
            written.skipped
        ),
        (13, 5, 3, 0)
    );
    assert_eq!(written.bytes_out, bytes.len() as u64);

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("restored");
    let mut last = 0;
    let restored = restore(bytes.as_slice(), &dest, &mut |n| {
        assert!(n >= last);
        last = n;
    })
    .unwrap();

    let (before, after) = (snapshot(src.path()), snapshot(&dest));
    assert_eq!(before.len(), 21);
    assert_eq!(before, after);
    assert_eq!(
        fs::read_link(dest.join("abs_link")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        (restored.files, restored.dirs, restored.symlinks),
        (13, 5, 3)
    );
    assert_eq!(restored.bytes_out, written.bytes_in);
    assert_eq!(restored.bytes_in, bytes.len() as u64);
    assert_eq!(last, written.bytes_in);
    assert_eq!(
        names(out.path()),
        ["restored"],
        "no temporary directory left behind"
    );
}

#[test]
fn progress_and_scan_size_count_file_bytes() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let expected: u64 = snapshot(src.path())
        .values()
        .filter(|s| s.kind == "file")
        .map(|s| s.content.len() as u64)
        .sum();
    assert_eq!(scan_size(src.path()).unwrap(), expected);

    let mut seen = Vec::new();
    let (_, stats) = write_dir(src.path(), Vec::new(), &small_blocks(), &mut |n| {
        seen.push(n)
    })
    .unwrap();
    assert_eq!(stats.bytes_in, expected);
    assert_eq!(seen.last(), Some(&expected));
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn entries_come_depth_first_in_name_order() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let (bytes, _) = archive(src.path(), &WriteOptions::default());
    let mut reader = ArchiveReader::new(bytes.as_slice()).unwrap();
    let mut paths = Vec::new();
    while let Some(entry) = reader.next_entry().unwrap() {
        paths.push(String::from_utf8(entry.path_bytes().to_vec()).unwrap());
    }
    let pos = |p: &str| paths.iter().position(|x| x == p).unwrap();
    assert_eq!(paths[0], "a");
    assert!(
        pos("a") < pos("a/b") && pos("a/b") < pos("a/b/c") && pos("a/b/c") < pos("a/b/c/deep.txt")
    );
    assert!(
        pos("a/run.sh") < pos("a-b"),
        "a's subtree is complete before a-b"
    );
}

#[test]
fn text_is_compressed_and_random_or_media_data_is_stored() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("chat.txt"), text(2_000_000)).unwrap();
    let (_, stats) = archive(src.path(), &WriteOptions::default());
    assert!(stats.bytes_out * 20 < stats.bytes_in, "{stats:?}");

    for (name, data) in [
        ("noise.bin", random(2_000_000)),
        ("photo.JPG", text(2_000_000)),
    ] {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join(name), &data).unwrap();
        let (bytes, stats) = archive(src.path(), &WriteOptions::default());
        assert!(stats.bytes_out >= stats.bytes_in, "{name}: {stats:?}");
        assert!(
            stats.bytes_out < stats.bytes_in + 200,
            "{name}: small overhead, {stats:?}"
        );
        let dest = src.path().join("out");
        restore(bytes.as_slice(), &dest, &mut |_| {}).unwrap();
        assert_eq!(fs::read(dest.join(name)).unwrap(), data);
    }
}

#[test]
fn compression_is_decided_per_block() {
    // Random first half, text second half: the first block fails, the second still compresses.
    let src = tempfile::tempdir().unwrap();
    let mut data = random(256 * 1024);
    data.extend(text(3 * 256 * 1024));
    fs::write(src.path().join("mixed.dat"), &data).unwrap();
    let (bytes, stats) = archive(src.path(), &WriteOptions::default());
    assert!(stats.bytes_out < 300 * 1024, "{stats:?}");
    let dest = src.path().join("out");
    restore(bytes.as_slice(), &dest, &mut |_| {}).unwrap();
    assert_eq!(fs::read(dest.join("mixed.dat")).unwrap(), data);
}

#[test]
fn hard_links_become_independent_files() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("one"), b"shared").unwrap();
    fs::hard_link(src.path().join("one"), src.path().join("two")).unwrap();
    let (bytes, stats) = archive(src.path(), &WriteOptions::default());
    assert_eq!(stats.files, 2);
    let dest = src.path().join("out");
    restore(bytes.as_slice(), &dest, &mut |_| {}).unwrap();
    let (a, b) = (
        fs::metadata(dest.join("one")).unwrap(),
        fs::metadata(dest.join("two")).unwrap(),
    );
    assert_ne!(a.ino(), b.ino());
    assert_eq!(fs::read(dest.join("two")).unwrap(), b"shared");
}

#[test]
fn special_files_are_skipped_and_counted() {
    let src = tempfile::tempdir().unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(src.path().join("sock")).unwrap();
    fs::write(src.path().join("file"), b"x").unwrap();
    let (bytes, stats) = archive(src.path(), &WriteOptions::default());
    assert_eq!((stats.files, stats.skipped), (1, 1));
    let dest = src.path().join("out");
    restore(bytes.as_slice(), &dest, &mut |_| {}).unwrap();
    assert_eq!(names(&dest), ["file"]);
}

#[test]
fn symlinks_are_never_followed_when_archiving() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"must not be archived").unwrap();
    let src = tempfile::tempdir().unwrap();
    symlink(outside.path(), src.path().join("link_to_dir")).unwrap();
    let (bytes, stats) = archive(src.path(), &WriteOptions::default());
    assert_eq!((stats.files, stats.symlinks, stats.bytes_in), (0, 1, 0));
    assert!(!bytes.windows(6).any(|w| w == b"secret"));

    let link_root = src.path().join("root_link");
    symlink(src.path(), &link_root).unwrap();
    let err = write_dir(
        &link_root,
        Vec::new(),
        &WriteOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::NotADirectory(_)), "{err:?}");
}

#[test]
fn output_errors_are_passed_on_and_options_are_checked() {
    #[derive(Debug)]
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let src = tempfile::tempdir().unwrap();
    let err = write_dir(src.path(), Full, &WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Output(e) if e.raw_os_error() == Some(28)),
        "{err:?}"
    );

    let bad = WriteOptions {
        block_size: 2 << 20,
        ..WriteOptions::default()
    };
    let err = write_dir(src.path(), Vec::new(), &bad, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::InvalidOptions(_)));
}

#[test]
fn reader_exposes_entries_and_data() {
    let src = tempfile::tempdir().unwrap();
    let data = text(10_000);
    fs::write(src.path().join("f"), &data).unwrap();
    symlink("f", src.path().join("l")).unwrap();
    let (bytes, _) = archive(src.path(), &small_blocks());
    let mut reader = ArchiveReader::new(bytes.as_slice()).unwrap();
    let file = reader.next_entry().unwrap().unwrap();
    assert_eq!(file.kind, EntryKind::File { size: 10_000 });
    let mut got = Vec::new();
    while let Some(block) = reader.read_block().unwrap() {
        assert!(block.len() <= BLOCK);
        got.extend_from_slice(block);
    }
    assert_eq!(got, data);
    let link = reader.next_entry().unwrap().unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Symlink {
            target: b"f".to_vec()
        }
    );
    assert!(reader.next_entry().unwrap().is_none());
    assert!(reader.next_entry().unwrap().is_none(), "stays finished");
}
