//! Attacks from the review of prune, the writer lock and the file cache; each broke an
//! earlier build (a kept snapshot lost its data, or a panic).

mod common;

use std::fs;
use std::sync::{Arc, Mutex, mpsc};

use common::{BackupAs, Fixture, messages, noise, objects, small};
use lockbox_repo::{DeviceId, PruneReport, Purpose, RepoError, Repository};
use lockbox_store::Store;
use lockbox_store::test_support::{Hostile, OnPut};

fn prune(repo: &Repository, device: DeviceId, keep: usize) -> Result<PruneReport, RepoError> {
    let lock = repo.lock(device, Purpose::Prune, true)?;
    let catalog = repo.catalog()?;
    let (report, _) = repo.prune(&lock, catalog, &lockbox_repo::Keep::last(keep), 100)?;
    lock.release()?;
    Ok(report)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_damaged_kept_snapshot_stops_prune_before_anything_is_forgotten() {
    let f = Fixture::new();
    let repo = f.init("repo", small());
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    for day in 0..3u64 {
        fs::write(src.join("chat.db"), messages(day, 2_000)).unwrap();
        repo.backup_as(&src, f.device, None, day + 1, &mut |_| {})
            .unwrap();
    }
    let newest = repo.catalog().unwrap().latest().unwrap();
    fs::remove_file(f.folder("repo/snapshots").join(newest.id.hex())).unwrap();

    let err = prune(&repo, f.device, 1).unwrap_err();
    assert_eq!(err.fault(), lockbox_repo::Fault::Integrity, "{err}");
    let after = repo.catalog().unwrap();
    assert_eq!(
        after.snapshots().len(),
        3,
        "intact snapshots were forgotten"
    );
    let older = after.snapshots()[1];
    repo.restore(&older, &f.folder("dest"), &mut |_| {})
        .unwrap();
}

#[test]
fn a_writer_whose_lock_was_taken_over_commits_nothing() {
    let f = Fixture::new();
    let cloud = f.folder("cloud");
    let provider = Hostile::over_folder(&cloud);
    let url = "hostile://cloud";
    let repo_a =
        Repository::init(provider.store(url), f.rt.handle().clone(), &f.key, small()).unwrap();
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("chat.db"), messages(1, 2_000)).unwrap();
    let first = repo_a
        .backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap();
    fs::write(src.join("photo.jpg"), noise(9, 400_000)).unwrap();

    // A's backup sleeps just before its index object, long enough for its lock to look stale.
    let (asleep, wake_b) = mpsc::channel::<()>();
    let (wake_a, sleeping) = mpsc::channel::<()>();
    let sleeping = Arc::new(Mutex::new(sleeping));
    let once = Arc::new(Mutex::new(false));
    provider.on_put(move |name, _| {
        if name.starts_with("index/") && !std::mem::replace(&mut *once.lock().unwrap(), true) {
            asleep.send(()).unwrap();
            sleeping.lock().unwrap().recv().unwrap();
        }
        OnPut::Pass
    });
    let key = f.key.clone();
    let b_cloud = cloud.clone();
    let b = std::thread::spawn(move || {
        wake_b.recv().unwrap();
        let mut lock = fs::read(b_cloud.join("lock")).unwrap();
        let old = now_ms() - 11 * 60 * 1000;
        lock[25..33].copy_from_slice(&old.to_be_bytes());
        fs::write(b_cloud.join("lock"), lock).unwrap();
        let rt = common::runtime();
        let store = Store::open(&format!("file://{}", b_cloud.display())).unwrap();
        let repo_b = Repository::open(store, rt.handle().clone(), &key).unwrap();
        // B takes the lock over and collects A's packs, which no index names yet.
        let report = prune(&repo_b, DeviceId([2; 16]), 5).unwrap();
        wake_a.send(()).unwrap();
        report
    });
    let lock = repo_a.lock(f.device, Purpose::Backup, false).unwrap();
    let err = repo_a
        .backup(&lock, &src, None, 2, None, &mut |_| {})
        .unwrap_err();
    let report = b.join().unwrap();
    assert!(report.packs_deleted > 0, "{report:?}");
    assert!(matches!(err, RepoError::LockLost { .. }), "{err:?}");
    drop(lock);
    let catalog = repo_a.catalog().unwrap();
    assert_eq!(catalog.latest().unwrap().id, first.snapshot.id);
    repo_a.check(&catalog, true).unwrap();
}

#[test]
fn a_replayed_index_object_does_not_make_prune_delete_live_packs() {
    let mut replayed = false;
    for _ in 0..40 {
        let f = Fixture::new();
        let repo = f.init("repo", small());
        let src = common::photo_and_note(&f, &repo);
        let old_index: Vec<_> = objects(&f.folder("repo"), "index")
            .into_iter()
            .map(|p| {
                let b = fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        fs::remove_file(src.join("a.jpg")).unwrap();
        repo.backup_as(&src, f.device, None, 2, &mut |_| {})
            .unwrap();
        assert!(prune(&repo, f.device, 1).unwrap().packs_rewritten >= 1);
        // The file comes back and is uploaded again, into a new pack.
        fs::write(src.join("a.jpg"), noise(1, 230_000)).unwrap();
        repo.backup_as(&src, f.device, None, 3, &mut |_| {})
            .unwrap();
        // The provider replays the first backup's index, whose packs are gone.
        for (p, b) in &old_index {
            fs::write(p, b).unwrap();
        }
        if objects(&f.folder("repo"), "index")[0] != old_index[0].0 {
            continue; // it must be read first to win the locations
        }
        replayed = true;
        prune(&repo, f.device, 1).unwrap();
        let catalog = repo.catalog().unwrap();
        repo.check(&catalog, true).unwrap();
        let dest = f.folder("dest");
        repo.restore(&catalog.latest().unwrap(), &dest, &mut |_| {})
            .unwrap();
        break;
    }
    assert!(replayed, "the replayed index never sorted first");
}

#[test]
fn a_far_future_file_time_is_backed_up_not_a_panic() {
    let f = Fixture::new();
    let repo = f.init("repo", small());
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    let file = src.join("x");
    fs::write(&file, b"hello").unwrap();
    // 2300-01-01: past what i64 nanoseconds hold.
    let far = std::time::UNIX_EPOCH + std::time::Duration::new(10_413_792_000, 500_000_000);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(far)
        .unwrap();
    let cache = lockbox_repo::FileCache::new(repo.id());
    let lock = repo.lock(f.device, Purpose::Backup, true).unwrap();
    let b = repo
        .backup(&lock, &src, None, 5, Some(&cache), &mut |_| {})
        .unwrap();
    assert_eq!(b.stats.files, 1);
    assert!(b.cache.is_empty());
}
