//! Backups into a repository in a local folder, and back: round trips, dedup on stored bytes,
//! and what the storage can and cannot do to them.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{BackupAs, Fixture, messages, noise, objects, small, stored_bytes, tree};
use lockbox_crypto::BackupKey;
use lockbox_repo::{Fault, RepoError, Repository, Sizes};

fn build(root: &std::path::Path) {
    fs::create_dir_all(root.join("Databases")).unwrap();
    fs::create_dir_all(root.join("Media/Images")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("Databases/msgstore.db"), messages(1, 40_000)).unwrap();
    fs::write(root.join("Databases/empty.db-wal"), b"").unwrap();
    for i in 0..4 {
        fs::write(
            root.join(format!("Media/Images/IMG-{i}.jpg")),
            noise(i + 10, 300_000),
        )
        .unwrap();
    }
    fs::write(
        root.join(std::ffi::OsStr::from_encoded_bytes_unchecked_safe(
            b"caf\xe9.txt",
        )),
        b"latin-1 name",
    )
    .unwrap();
    symlink("Databases/msgstore.db", root.join("latest")).unwrap();
    fs::hard_link(
        root.join("Databases/msgstore.db"),
        root.join("Databases/msgstore-link.db"),
    )
    .unwrap();
}

/// `OsStr::from_bytes` without `unsafe`.
trait FromBytes {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

#[test]
fn a_tree_round_trips_and_the_catalog_lists_it() {
    let f = Fixture::new();
    let src = f.folder("src");
    build(&src);
    let repo = f.init("repo", small());
    let backup = repo
        .backup_as(&src, f.device, None, 1_700_000_000_000, &mut |_| {})
        .unwrap();
    assert_eq!(backup.snapshot.seq, 1);
    assert_eq!(backup.mark.seq, 1);
    assert_eq!(backup.stats.files, 7);
    assert!(backup.stats.packs > 1, "{:?}", backup.stats);

    // A new handle (another process, say) sees the same catalog.
    let repo = f.open("repo");
    let catalog = repo.catalog().unwrap();
    assert_eq!(catalog.snapshots(), vec![backup.snapshot]);
    catalog.check_mark(&backup.mark).unwrap();

    let dest = f.folder("back");
    let restored = repo
        .restore(&catalog.latest().unwrap(), &dest, &mut |_| {})
        .unwrap();
    assert_eq!(tree(&dest), tree(&src));
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
    assert_eq!(
        ino("Databases/msgstore.db"),
        ino("Databases/msgstore-link.db")
    );
    assert_eq!(restored.hardlinks, 1);
}

#[test]
fn the_daily_change_stores_little_more_than_what_changed() {
    let f = Fixture::new();
    let src = f.folder("src");
    build(&src);
    let before = f.folder("before");
    fs::create_dir(&before).unwrap();
    let repo = f.init("repo", small());
    let first = repo
        .backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap();
    let old_tree = tree(&src);
    let after_first = stored_bytes(&f.folder("repo"));

    // A day: messages appended to the database, two new photos.
    let mut db = fs::read(src.join("Databases/msgstore.db")).unwrap();
    let appended = messages(2, 2_000);
    db.extend_from_slice(&appended);
    fs::write(src.join("Databases/msgstore.db"), &db).unwrap();
    for i in 0..2 {
        fs::write(
            src.join(format!("Media/Images/NEW-{i}.jpg")),
            noise(100 + i, 200_000),
        )
        .unwrap();
    }
    let changed = appended.len() as u64 + 400_000;
    let second = repo
        .backup_as(&src, f.device, Some(&first.mark), 2, &mut |_| {})
        .unwrap();
    let grew = stored_bytes(&f.folder("repo")) - after_first;
    // Slack: one chunk of the database before the append point (at most chunk_max) and the
    // per-backup objects.
    let bound = changed * 12 / 10 + 64 * 1024 + 16 * 1024;
    assert!(
        grew <= bound,
        "stored {grew} bytes for {changed} changed (bound {bound})"
    );
    assert!(second.stats.reused_bytes > 1_000_000, "{:?}", second.stats);
    assert_eq!(second.snapshot.seq, 2);

    // Both snapshots restore as they were.
    let catalog = repo.catalog().unwrap();
    let snaps = catalog.snapshots();
    assert_eq!(snaps.len(), 2);
    repo.restore(&snaps[0], &f.folder("one"), &mut |_| {})
        .unwrap();
    repo.restore(&snaps[1], &f.folder("two"), &mut |_| {})
        .unwrap();
    assert_eq!(tree(&f.folder("one")), old_tree);
    assert_eq!(tree(&f.folder("two")), tree(&src));
}

/// A video (random-looking bytes) is cut in largest-size chunks from its start, so one that
/// grows shares all but its last chunk with the backup before, and the same video under
/// another name shares every chunk.
#[test]
fn a_dense_file_that_grows_uploads_only_its_end() {
    let f = Fixture::new();
    let repo = f.init("repo", small());
    let max = small().chunk_max as usize;
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    let mut video = noise(7, 10 * max + 123);
    fs::write(src.join("clip.bin"), &video).unwrap();
    let first = repo
        .backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap();
    assert_eq!(first.stats.new_chunks, 11, "{:?}", first.stats);
    video.extend_from_slice(&noise(8, 2 * max));
    fs::write(src.join("clip.bin"), &video).unwrap();
    fs::write(src.join("copy.bin"), &video).unwrap();
    let second = repo
        .backup_as(&src, f.device, None, 2, &mut |_| {})
        .unwrap();
    assert_eq!(second.stats.new_chunks, 3, "{:?}", second.stats);
    assert!(
        second.stats.new_bytes <= 3 * max as u64,
        "{:?}",
        second.stats
    );
    let dest = f.folder("dest");
    repo.restore(&second.snapshot, &dest, &mut |_| {}).unwrap();
    assert_eq!(tree(&dest), tree(&src));
}

/// Compression gives up on a file whose first chunks do not shrink, but not for good: an
/// archive that opens with a photo and goes on with a text log is still stored compressed.
/// (Its random start makes it dense, so it is cut in largest-size chunks, and one in 16 of
/// them is tried again: the first MiB of the log goes up as it is.)
#[test]
fn a_file_that_turns_compressible_is_compressed_again() {
    let f = Fixture::new();
    let repo = f.init("repo", small());
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    let mut bundle = noise(1, 300_000);
    let log = messages(2, 240_000);
    bundle.extend_from_slice(&log);
    fs::write(src.join("bundle.tar"), &bundle).unwrap();
    let stats = repo
        .backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap()
        .stats;
    assert!(
        stats.uploaded_bytes < 300_000 + log.len() as u64 / 2,
        "the log after the photo went up uncompressed: {stats:?} for {} bytes of log",
        log.len()
    );
}

#[test]
fn identical_files_are_stored_once() {
    let f = Fixture::new();
    let src = f.folder("src");
    fs::create_dir(&src).unwrap();
    let photo = noise(5, 500_000);
    for i in 0..5 {
        fs::write(src.join(format!("copy-{i}.jpg")), &photo).unwrap();
    }
    let repo = f.init("repo", small());
    let b = repo
        .backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap();
    assert_eq!(b.stats.new_bytes, 500_000);
    assert_eq!(b.stats.reused_bytes, 4 * 500_000);
    let packs: u64 = objects(&f.folder("repo"), "packs")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        packs < 520_000,
        "packs hold {packs} bytes for one 500,000-byte file"
    );
}

#[test]
fn the_wrong_key_is_told_apart_from_damage() {
    let f = Fixture::new();
    f.init("repo", Sizes::default());
    let err = Repository::open(
        f.store("repo"),
        f.rt.handle().clone(),
        &BackupKey::from_bytes([8; 32]),
    )
    .unwrap_err();
    assert!(matches!(err, RepoError::WrongKey { .. }), "{err:?}");
    assert_eq!(err.fault(), Fault::Auth);

    // Damage to the sizes, the key-check value or the MAC is damage, not a wrong key.
    let config = f.folder("repo/config");
    let good = fs::read(&config).unwrap();
    for at in [45, good.len() - 40, good.len() - 1] {
        flip(&config, at);
        let err = Repository::open(f.store("repo"), f.rt.handle().clone(), &f.key).unwrap_err();
        assert!(
            matches!(err, RepoError::Corrupt { .. }),
            "byte {at}: {err:?}"
        );
        assert_eq!(err.fault(), Fault::Integrity);
        fs::write(&config, &good).unwrap();
    }
    f.open("repo");

    let err = Repository::open(f.store("none"), f.rt.handle().clone(), &f.key).unwrap_err();
    assert!(matches!(err, RepoError::NoRepository { .. }), "{err:?}");
}

/// Backs up `build`'s tree twice (one change between), returns the fixture and repository.
fn two_snapshots() -> (Fixture, Repository) {
    let f = Fixture::new();
    let src = f.folder("src");
    build(&src);
    let repo = f.init("repo", small());
    repo.backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap();
    fs::write(src.join("Databases/new.db"), messages(9, 5_000)).unwrap();
    repo.backup_as(&src, f.device, None, 2, &mut |_| {})
        .unwrap();
    (f, repo)
}

fn restore_latest(f: &Fixture, repo: &Repository) -> Result<(), RepoError> {
    let latest = repo.catalog()?.latest().unwrap();
    let dest = f.folder("dest");
    let result = repo.restore(&latest, &dest, &mut |_| {}).map(|_| ());
    if result.is_err() {
        assert!(!dest.exists(), "a failed restore left {dest:?}");
    }
    result
}

fn flip(path: &std::path::Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn an_altered_blob_fails_the_restore_and_leaves_nothing() {
    let (f, repo) = two_snapshots();
    for pack in objects(&f.folder("repo"), "packs") {
        flip(&pack, 100);
    }
    let err = restore_latest(&f, &repo).unwrap_err();
    assert!(matches!(err, RepoError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("does not authenticate"), "{err}");
    assert_eq!(err.fault(), Fault::Integrity);
}

#[test]
fn a_blob_altered_behind_others_read_with_it_fails_the_restore() {
    // Restore reads a pack's neighbouring blobs together: damage past the first of them must
    // still surface, from the chunk it hits.
    let (f, repo) = two_snapshots();
    for pack in objects(&f.folder("repo"), "packs") {
        let len = fs::metadata(&pack).unwrap().len() as usize;
        flip(&pack, len / 3);
    }
    let err = restore_latest(&f, &repo).unwrap_err();
    assert!(err.to_string().contains("does not authenticate"), "{err}");
    assert_eq!(err.fault(), Fault::Integrity);
}

#[test]
fn a_truncated_pack_is_reported_as_such() {
    let (f, repo) = two_snapshots();
    let packs = objects(&f.folder("repo"), "packs");
    let originals: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
    // Cut in half, a blob's range ends past the end; cut to a few bytes, it starts there.
    for cut in [2, 60] {
        for (pack, bytes) in packs.iter().zip(&originals) {
            let len = if cut == 2 { bytes.len() / 2 } else { cut };
            fs::write(pack, &bytes[..len]).unwrap();
        }
        let err = restore_latest(&f, &repo).unwrap_err();
        assert!(err.to_string().contains("truncated"), "cut {cut}: {err}");
        assert_eq!(err.fault(), Fault::Integrity, "cut {cut}: {err}");
    }
}

#[test]
fn an_altered_index_is_refused() {
    let (f, repo) = two_snapshots();
    let index = objects(&f.folder("repo"), "index");
    assert_eq!(index.len(), 2);
    flip(&index[0], 60);
    let err = repo.load_index().unwrap_err();
    assert!(matches!(err, RepoError::Corrupt { .. }), "{err:?}");
    assert_eq!(err.fault(), Fault::Integrity);
}

#[test]
fn an_index_swapped_for_another_is_refused() {
    let (f, repo) = two_snapshots();
    let index = objects(&f.folder("repo"), "index");
    let other = fs::read(&index[1]).unwrap();
    fs::write(&index[0], other).unwrap();
    let err = repo.load_index().unwrap_err();
    assert!(err.to_string().contains("another index"), "{err}");
}

#[test]
fn a_catalog_entry_dropped_reordered_or_rolled_back_is_caught() {
    let (f, repo) = two_snapshots();
    let mark = repo.catalog().unwrap().mark();
    let entries = objects(&f.folder("repo"), "catalog");
    assert_eq!(entries.len(), 2);
    let (one, two) = (
        fs::read(&entries[0]).unwrap(),
        fs::read(&entries[1]).unwrap(),
    );

    // Reordered: entry 2's bytes under entry 1's name and the other way round.
    fs::write(&entries[0], &two).unwrap();
    fs::write(&entries[1], &one).unwrap();
    let err = repo.catalog().unwrap_err();
    assert!(
        matches!(err, RepoError::CatalogBroken { seq: 1, .. }),
        "{err:?}"
    );

    // Entry 1 dropped: a gap.
    fs::remove_file(&entries[0]).unwrap();
    fs::write(&entries[1], &two).unwrap();
    let err = repo.catalog().unwrap_err();
    assert!(
        matches!(err, RepoError::CatalogBroken { seq: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing"), "{err}");

    // The newest entry hidden: the chain is whole, the device's mark catches it.
    fs::write(&entries[0], &one).unwrap();
    fs::remove_file(&entries[1]).unwrap();
    let catalog = repo.catalog().unwrap();
    assert_eq!(catalog.len(), 1);
    let err = catalog.check_mark(&mark).unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::RolledBack {
                found: 1,
                expected: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.fault(), Fault::Integrity);
    // And a backup on top of the rolled-back catalog is refused, not forked.
    let err = repo
        .backup_as(&f.folder("src"), f.device, Some(&mark), 3, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, RepoError::RolledBack { .. }), "{err:?}");
}

#[test]
fn catalog_entries_and_snapshots_of_another_repository_are_refused() {
    let (f, repo) = two_snapshots();
    // Another repository under the same key, with two snapshots of its own.
    let other = f.init("other", small());
    let src = f.folder("src");
    other
        .backup_as(&src, f.device, None, 5, &mut |_| {})
        .unwrap();
    other
        .backup_as(&src, f.device, None, 6, &mut |_| {})
        .unwrap();

    let ours = objects(&f.folder("repo"), "catalog");
    let theirs = objects(&f.folder("other"), "catalog");
    let saved = fs::read(&ours[1]).unwrap();
    fs::copy(&theirs[1], &ours[1]).unwrap();
    let err = repo.catalog().unwrap_err();
    assert!(
        matches!(err, RepoError::CatalogBroken { seq: 2, .. }),
        "{err:?}"
    );
    fs::write(&ours[1], saved).unwrap();

    // Our latest snapshot's object replaced by theirs (same K, valid stream, but sealed under
    // their repository's snapshot key).
    let latest = repo.catalog().unwrap().latest().unwrap();
    let ours = f
        .folder("repo")
        .join(format!("snapshots/{}", latest.id.hex()));
    let theirs = &objects(&f.folder("other"), "snapshots")[0];
    fs::copy(theirs, &ours).unwrap();
    let err = restore_latest(&f, &repo).unwrap_err();
    assert!(matches!(err, RepoError::ForeignSnapshot { .. }), "{err:?}");
    assert!(err.to_string().contains("another repository"), "{err}");

    // And by our own first snapshot: a valid stream of this repository, the wrong one.
    let first = repo.catalog().unwrap().snapshots()[0];
    let first = f
        .folder("repo")
        .join(format!("snapshots/{}", first.id.hex()));
    fs::copy(first, &ours).unwrap();
    let err = restore_latest(&f, &repo).unwrap_err();
    assert!(err.to_string().contains("swapped"), "{err}");
}

#[test]
fn a_snapshot_under_another_key_is_refused() {
    let (f, repo) = two_snapshots();
    let stranger = Fixture {
        key: BackupKey::from_bytes([9; 32]),
        ..Fixture::new()
    };
    let src = f.folder("src");
    let theirs = stranger.init("repo", small());
    theirs
        .backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap();
    let latest = repo.catalog().unwrap().latest().unwrap();
    let ours = f
        .folder("repo")
        .join(format!("snapshots/{}", latest.id.hex()));
    fs::copy(&objects(&stranger.folder("repo"), "snapshots")[0], &ours).unwrap();
    let err = restore_latest(&f, &repo).unwrap_err();
    assert!(err.to_string().contains("another key"), "{err}");
    assert_eq!(err.fault(), Fault::Integrity);
}

#[test]
fn junk_in_the_bucket_is_ignored() {
    let (f, repo) = two_snapshots();
    let root = f.folder("repo");
    fs::write(root.join("catalog/README"), b"x").unwrap();
    fs::write(root.join("index/not-an-id"), b"x").unwrap();
    fs::write(root.join("lockbox-junk.lbx"), b"x").unwrap();
    assert_eq!(repo.catalog().unwrap().len(), 2);
    restore_latest(&f, &repo).unwrap();
}

#[test]
fn a_second_device_handle_continues_the_same_chain() {
    let (f, _) = two_snapshots();
    let repo = f.open("repo");
    let src = f.folder("src");
    let third = repo
        .backup_as(&src, lockbox_repo::DeviceId([2; 16]), None, 3, &mut |_| {})
        .unwrap();
    assert_eq!(third.snapshot.seq, 3);
    let catalog = repo.catalog().unwrap();
    assert_eq!(catalog.len(), 3);
    catalog.check_mark(&third.mark).unwrap();
}

#[test]
fn check_finds_missing_truncated_and_altered_packs() {
    let (f, repo) = two_snapshots();
    let report = repo.check(&repo.catalog().unwrap(), true).unwrap();
    assert_eq!(report.snapshots, 2);
    assert!(
        report.packs > 1 && report.packs == report.packs_read,
        "{report:?}"
    );
    assert!(report.chunks_read >= report.chunks, "{report:?}");

    let packs = objects(&f.folder("repo"), "packs");
    // A flipped bit inside a blob: only reading the data finds it.
    flip(&packs[0], 100);
    repo.check(&repo.catalog().unwrap(), false).unwrap();
    let err = repo.check(&repo.catalog().unwrap(), true).unwrap_err();
    assert!(err.to_string().contains("does not authenticate"), "{err}");
    flip(&packs[0], 100);

    let len = fs::metadata(&packs[1]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&packs[1])
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let err = repo.check(&repo.catalog().unwrap(), false).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    fs::remove_file(&packs[1]).unwrap();
    let err = repo.check(&repo.catalog().unwrap(), false).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(err.fault(), Fault::Integrity);
}
