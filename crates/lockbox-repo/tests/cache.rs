//! The device's file cache: unchanged files are not read again, and no change slips past it.

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use common::{Fixture, messages, noise, small, tree};
use lockbox_repo::{Backup, FileCache, Purpose, Repository};

/// Milliseconds from now: a backup "started" this late vouches for files written before it.
fn later(secs: u64) -> u64 {
    (SystemTime::now() + Duration::from_secs(secs))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn backup(f: &Fixture, repo: &Repository, cache: Option<&FileCache>, now: u64) -> Backup {
    let lock = repo.lock(f.device, Purpose::Backup, true).unwrap();
    let b = repo
        .backup(&lock, &f.folder("src"), None, now, cache, &mut |_| {})
        .unwrap();
    lock.release().unwrap();
    b
}

#[test]
fn unchanged_files_come_from_the_cache_and_changed_ones_are_read() {
    let f = Fixture::new();
    let src = f.folder("src");
    fs::create_dir_all(src.join("Media")).unwrap();
    fs::write(src.join("msgstore.db"), messages(1, 20_000)).unwrap();
    for i in 0..3 {
        fs::write(
            src.join(format!("Media/{i}.jpg")),
            noise(10 + 2 * i, 200_000),
        )
        .unwrap();
    }
    let repo = f.init("repo", small());
    let first = backup(&f, &repo, None, later(10));
    assert_eq!(first.stats.cached_files, 0);
    assert_eq!(first.cache.len(), 4);

    // Nothing changed: every file from the cache, nothing new stored.
    let second = backup(&f, &repo, Some(&first.cache), later(20));
    assert_eq!(second.stats.cached_files, 4, "{:?}", second.stats);
    assert_eq!(second.stats.new_chunks, 0);

    // Same size, mtime put back: the ctime still tells, and the file is read.
    let db = src.join("msgstore.db");
    let mtime = fs::metadata(&db).unwrap().modified().unwrap();
    let mut bytes = fs::read(&db).unwrap();
    bytes[100] ^= 1;
    fs::write(&db, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let third = backup(&f, &repo, Some(&second.cache), later(30));
    assert_eq!(third.stats.cached_files, 3, "{:?}", third.stats);
    assert!(third.stats.new_chunks > 0);
    let dest = f.folder("dest");
    repo.restore(&third.snapshot, &dest, &mut |_| {}).unwrap();
    assert_eq!(tree(&dest), tree(&src));
}

#[test]
fn files_written_as_the_backup_starts_are_not_vouched_for() {
    let f = Fixture::new();
    fs::create_dir_all(f.folder("src")).unwrap();
    fs::write(f.folder("src/a"), b"fresh").unwrap();
    let repo = f.init("repo", small());
    // The backup starts now: the file's times are within the racy window.
    let b = backup(&f, &repo, None, later(0));
    assert!(b.cache.is_empty());
}

#[test]
fn a_cache_of_another_repository_is_not_used() {
    let f = Fixture::new();
    fs::create_dir_all(f.folder("src")).unwrap();
    fs::write(f.folder("src/a"), noise(1, 50_000)).unwrap();
    let one = f.init("one", small());
    let cached = backup(&f, &one, None, later(10)).cache;
    let two = f.init("two", small());
    let b = backup(&f, &two, Some(&cached), later(20));
    assert_eq!(b.stats.cached_files, 0);
    // Had it been used, the chunks (absent from this repository) would be missing.
    let dest = f.folder("dest");
    two.restore(&b.snapshot, &dest, &mut |_| {}).unwrap();
    assert_eq!(tree(&dest), tree(&f.folder("src")));
}
