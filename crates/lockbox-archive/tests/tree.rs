//! Trees: the archive's walk and entries with file data held as chunk references, restored
//! through a chunk source. The chunk store here is a map in memory with fixed-size chunks and
//! SHA-less ids (a counter): the repository's own chunking and ids are tested in lockbox-repo.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

use common::{set_mode, set_mtime, snapshot};
use lockbox_archive::{
    ArchiveError, ArchiveReader, ChunkRef, ChunkSink, ChunkSource, EntryKind, FileToChunk,
    TREE_MAGIC, WriteOptions, restore, restore_tree, write_dir, write_tree,
};

/// Chunks of at most `size` bytes, identical chunks stored once.
#[derive(Default)]
struct MapStore {
    size: usize,
    chunks: HashMap<[u8; 32], Vec<u8>>,
    by_content: HashMap<Vec<u8>, [u8; 32]>,
    files_seen: Vec<Vec<u8>>,
}

impl MapStore {
    fn new(size: usize) -> Self {
        MapStore {
            size,
            ..MapStore::default()
        }
    }
}

impl ChunkSink for MapStore {
    fn chunk_file(
        &mut self,
        file: &FileToChunk<'_>,
        data: &mut dyn Read,
        refs: &mut Vec<ChunkRef>,
    ) -> Result<(), ArchiveError> {
        self.files_seen.push(file.rel.to_vec());
        let mut all = Vec::new();
        data.read_to_end(&mut all).unwrap();
        for piece in all.chunks(self.size) {
            let next = self.chunks.len() as u64;
            let id = *self.by_content.entry(piece.to_vec()).or_insert_with(|| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&next.to_be_bytes());
                id
            });
            self.chunks.insert(id, piece.to_vec());
            refs.push(ChunkRef {
                id,
                len: piece.len() as u32,
            });
        }
        Ok(())
    }
}

impl ChunkSource for MapStore {
    fn read_chunk(&mut self, chunk: &ChunkRef, buf: &mut Vec<u8>) -> Result<(), ArchiveError> {
        let data = self
            .chunks
            .get(&chunk.id)
            .ok_or_else(|| ArchiveError::Chunks("no such chunk".into()))?;
        buf.clear();
        buf.extend_from_slice(data);
        Ok(())
    }
}

fn build(root: &std::path::Path) {
    fs::create_dir_all(root.join("db/wal")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("db/msgstore.db"), b"0123456789".repeat(1000)).unwrap();
    fs::write(root.join("db/copy.db"), b"0123456789".repeat(1000)).unwrap();
    fs::write(root.join("db/wal/empty"), b"").unwrap();
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.jpg")),
        b"not utf-8",
    )
    .unwrap();
    symlink("db/msgstore.db", root.join("link")).unwrap();
    set_mode(&root.join("db/copy.db"), 0o640);
    set_mtime(&root.join("db/copy.db"), 1_600_000_000, 5);
    set_mtime(&root.join("empty"), 1_500_000_000, 0);
}

#[test]
fn a_tree_round_trips_through_its_chunks_and_dedups_them() {
    let src = tempfile::tempdir().unwrap();
    build(src.path());
    let mut store = MapStore::new(4096);
    let (tree, stats) = write_tree(src.path(), Vec::new(), &mut store, &mut |_| {}).unwrap();
    assert!(tree.starts_with(&TREE_MAGIC));
    assert_eq!((stats.files, stats.dirs, stats.symlinks), (4, 3, 1));
    assert_eq!(stats.bytes_in, 20_009);
    // Two equal 10,000-byte files are the same three distinct chunks (4096, 4096, 1808).
    assert_eq!(store.chunks.len(), 4, "{:?}", store.chunks.len());
    // The tree holds references, not data.
    assert!(tree.len() < 1000, "tree of {} bytes", tree.len());

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("back");
    restore_tree(tree.as_slice(), &dest, &mut store, &mut |_| {}).unwrap();
    assert_eq!(snapshot(&dest), snapshot(src.path()));
}

#[test]
fn trees_and_archives_are_not_mistaken_for_each_other() {
    let src = tempfile::tempdir().unwrap();
    build(src.path());
    let mut store = MapStore::new(4096);
    let (tree, _) = write_tree(src.path(), Vec::new(), &mut store, &mut |_| {}).unwrap();
    let (archive, _) = write_dir(
        src.path(),
        Vec::new(),
        &WriteOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(matches!(
        ArchiveReader::new(tree.as_slice()),
        Err(ArchiveError::NotAnArchive)
    ));
    assert!(matches!(
        ArchiveReader::new_tree(archive.as_slice()),
        Err(ArchiveError::NotAnArchive)
    ));
    let out = tempfile::tempdir().unwrap();
    let err = restore(tree.as_slice(), &out.path().join("a"), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::NotAnArchive), "{err:?}");
    assert!(!out.path().join("a").exists());

    // A tree whose file data is an inline block (an archive's) is refused.
    let mut reader = ArchiveReader::new_tree(tree.as_slice()).unwrap();
    let mut first_file = None;
    while let Some(entry) = reader.next_entry().unwrap() {
        if let EntryKind::File { size } = entry.kind {
            assert!(reader.read_block().is_err(), "blocks read from a tree");
            first_file = Some(size);
            break;
        }
    }
    assert!(first_file.is_some());
}

/// Flips the block type of the first chunk reference (tag 3 after a file header) to `to`.
fn with_first_ref_tag(tree: &[u8], to: u8) -> Vec<u8> {
    // Files in this tree: the first 3-byte followed by a length of 4096 (00 00 10 00).
    let at = tree
        .windows(5)
        .position(|w| w == [3, 0, 0, 0x10, 0])
        .expect("a reference");
    let mut bad = tree.to_vec();
    bad[at] = to;
    bad
}

#[test]
fn a_tree_with_bad_file_data_restores_nothing() {
    let src = tempfile::tempdir().unwrap();
    build(src.path());
    let mut store = MapStore::new(4096);
    let (tree, _) = write_tree(src.path(), Vec::new(), &mut store, &mut |_| {}).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("back");

    for tag in [1u8, 2, 9] {
        let bad = with_first_ref_tag(&tree, tag);
        let err = restore_tree(bad.as_slice(), &dest, &mut store, &mut |_| {}).unwrap_err();
        assert!(matches!(err, ArchiveError::Malformed(_)), "{tag}: {err:?}");
        assert!(!dest.exists());
    }

    // A chunk the store does not have, and a store that gives the wrong length.
    let mut empty = MapStore::new(4096);
    let err = restore_tree(tree.as_slice(), &dest, &mut empty, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::Chunks(_)), "{err:?}");
    assert!(!dest.exists());
    for data in store.chunks.values_mut() {
        data.push(0);
    }
    let err = restore_tree(tree.as_slice(), &dest, &mut store, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("chunk store gave 10 bytes for a chunk of 9"),
        "{err}"
    );
    assert!(!dest.exists());
}

/// A sink that reports fewer bytes than the file holds.
struct Short;

impl ChunkSink for Short {
    fn chunk_file(
        &mut self,
        file: &FileToChunk<'_>,
        data: &mut dyn Read,
        refs: &mut Vec<ChunkRef>,
    ) -> Result<(), ArchiveError> {
        std::io::copy(data, &mut std::io::sink()).unwrap();
        let len = file.meta.len().saturating_sub(1) as u32;
        if len > 0 {
            refs.push(ChunkRef { id: [0; 32], len });
        }
        Ok(())
    }
}

#[test]
fn a_sink_whose_chunks_do_not_add_up_fails_the_tree() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), b"hello").unwrap();
    let err = write_tree(src.path(), Vec::new(), &mut Short, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ArchiveError::Chunks(_)), "{err:?}");
    assert!(err.to_string().contains("4 bytes of chunks"), "{err}");
}

/// A store whose `meddle` runs on each file before it is read, as another process would.
struct Meddled<F: FnMut(&std::path::Path, u32)> {
    store: MapStore,
    meddle: F,
    reads: HashMap<Vec<u8>, u32>,
}

impl<F: FnMut(&std::path::Path, u32)> ChunkSink for Meddled<F> {
    fn chunk_file(
        &mut self,
        file: &FileToChunk<'_>,
        data: &mut dyn Read,
        refs: &mut Vec<ChunkRef>,
    ) -> Result<(), ArchiveError> {
        let n = self.reads.entry(file.rel.to_vec()).or_default();
        *n += 1;
        (self.meddle)(file.path, *n);
        self.store.chunk_file(file, data, refs)
    }
}

fn meddled<F: FnMut(&std::path::Path, u32)>(meddle: F) -> Meddled<F> {
    Meddled {
        store: MapStore::new(4),
        meddle,
        reads: HashMap::new(),
    }
}

#[test]
fn a_file_that_changes_while_read_is_read_again_never_cut() {
    for change in ["shrink", "grow", "rewrite"] {
        let src = tempfile::tempdir().unwrap();
        let db = src.path().join("db");
        fs::write(&db, b"0123456789").unwrap();
        // It changes during its first read only: the second read is the one kept.
        let mut sink = meddled(|path, n| {
            if path.ends_with("db") && n == 1 {
                match change {
                    "shrink" => fs::write(path, b"01234").unwrap(),
                    "grow" => fs::write(path, b"0123456789abcdef").unwrap(),
                    _ => fs::write(path, b"ABCDEFGHIJ").unwrap(),
                }
            }
        });
        let (tree, stats) = write_tree(src.path(), Vec::new(), &mut sink, &mut |_| {}).unwrap();
        assert_eq!((stats.files, stats.changing), (1, 0), "{change}: {stats:?}");
        assert_eq!(sink.reads[&b"db".to_vec()], 2, "{change}");
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("out");
        restore_tree(&tree[..], &dest, &mut sink.store, &mut |_| {}).unwrap();
        assert_eq!(
            fs::read(dest.join("db")).unwrap(),
            fs::read(&db).unwrap(),
            "{change}"
        );
    }
}

#[test]
fn files_that_vanish_or_keep_changing_are_left_out_and_counted() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a-journal"), b"changes all the time").unwrap();
    fs::write(src.path().join("b-gone"), b"deleted while a is read").unwrap();
    fs::write(src.path().join("c-kept"), b"stays").unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"not in the tree").unwrap();
    fs::write(src.path().join("d-swapped"), b"walked").unwrap();
    let mut sink = meddled(|path, n| {
        if path.ends_with("a-journal") {
            fs::write(path, format!("version {n}")).unwrap();
            let _ = fs::remove_file(path.with_file_name("b-gone"));
        }
        // While it is read, a file from outside the tree is linked in in its place: the read
        // is retried, and the path now holds another inode than the walk saw.
        if path.ends_with("d-swapped") && n == 1 {
            fs::remove_file(path).unwrap();
            fs::hard_link(outside.path().join("secret"), path).unwrap();
        }
    });
    let (tree, stats) = write_tree(src.path(), Vec::new(), &mut sink, &mut |_| {}).unwrap();
    assert_eq!(
        (stats.files, stats.vanished, stats.changing),
        (1, 2, 1),
        "{stats:?}"
    );
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("out");
    restore_tree(&tree[..], &dest, &mut sink.store, &mut |_| {}).unwrap();
    let names: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("c-kept")]);
}

#[test]
fn hard_links_are_kept_as_links() {
    use std::os::unix::fs::MetadataExt;
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("a"), b"shared bytes").unwrap();
    fs::hard_link(src.path().join("a"), src.path().join("d/b")).unwrap();
    fs::hard_link(src.path().join("a"), src.path().join("z")).unwrap();
    // A file with another name outside the tree is just a file.
    let outside = tempfile::tempdir().unwrap();
    fs::write(src.path().join("lonely"), b"one name here").unwrap();
    fs::hard_link(src.path().join("lonely"), outside.path().join("other")).unwrap();

    let mut store = MapStore::new(4);
    let (tree, stats) = write_tree(src.path(), Vec::new(), &mut store, &mut |_| {}).unwrap();
    assert_eq!((stats.files, stats.hardlinks), (2, 2), "{stats:?}");
    assert_eq!(store.files_seen.len(), 2, "a linked file is read once");

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("out");
    let restored = restore_tree(&tree[..], &dest, &mut store, &mut |_| {}).unwrap();
    assert_eq!(restored.hardlinks, 2);
    let ino = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("d/b"));
    assert_eq!(ino("a"), ino("z"));
    assert_ne!(ino("a"), ino("lonely"));
    assert_eq!(fs::read(dest.join("z")).unwrap(), b"shared bytes");

    // A link may only name an earlier file of the same tree.
    let at = tree.windows(3).rposition(|w| w == [0, 1, b'a']).unwrap() + 2;
    let mut forged = tree.clone();
    forged[at] = b'c';
    let out2 = tempfile::tempdir().unwrap();
    let err =
        restore_tree(&forged[..], &out2.path().join("x"), &mut store, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("not an earlier file"), "{err}");
    assert!(!out2.path().join("x").exists());
}
