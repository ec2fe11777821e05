//! Prune: forgets all but the newest snapshots, frees what only they held, rewrites
//! mostly-empty packs, and survives being killed at any write.

mod common;

use std::fs;
use std::path::Path;

use common::{BackupAs, Fixture, messages, noise, objects, small, stored_bytes, tree};
use lockbox_repo::{DeviceId, Purpose, RepoError, Repository};
use lockbox_store::test_support::Hostile;

/// Four days of a chat directory: the database grows, and each day's photo replaces the
/// last (so older photos live only in older snapshots).
fn four_days(f: &Fixture, repo: &Repository) {
    let src = f.folder("src");
    fs::create_dir_all(src.join("Media")).unwrap();
    for day in 0..4u64 {
        fs::write(
            src.join("msgstore.db"),
            messages(1, 3_000 + 500 * day as usize),
        )
        .unwrap();
        if day > 0 {
            fs::remove_file(src.join(format!("Media/IMG-{}.jpg", day - 1))).unwrap();
        }
        fs::write(
            src.join(format!("Media/IMG-{day}.jpg")),
            noise(100 + 2 * day, 300_000),
        )
        .unwrap();
        repo.backup_as(&src, f.device, None, day + 1, &mut |_| {})
            .unwrap();
    }
}

fn prune(repo: &Repository, keep: usize) -> Result<lockbox_repo::PruneReport, RepoError> {
    let lock = repo.lock(DeviceId([1; 16]), Purpose::Prune, true)?;
    let catalog = repo.catalog()?;
    let (report, _) = repo.prune(&lock, catalog, &lockbox_repo::Keep::last(keep), 100)?;
    lock.release()?;
    Ok(report)
}

fn assert_restores_source(f: &Fixture, repo: &Repository, dest: &Path) {
    let latest = repo.catalog().unwrap().latest().unwrap();
    repo.restore(&latest, dest, &mut |_| {}).unwrap();
    assert_eq!(tree(dest), tree(&f.folder("src")));
}

#[test]
fn prune_keeps_the_newest_and_frees_what_only_forgotten_snapshots_held() {
    let f = Fixture::new();
    let repo = f.init("repo", small());
    four_days(&f, &repo);
    let before = repo.catalog().unwrap();
    let before_bytes = stored_bytes(&f.folder("repo/packs"));

    let report = prune(&repo, 2).unwrap();
    assert_eq!((report.forgotten, report.kept), (2, 2), "{report:?}");
    let after = repo.catalog().unwrap();
    // Forgetting appends: the old mark still holds, and the list is the newest two.
    after.check_mark(&before.mark()).unwrap();
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after.snapshots(), before.snapshots()[2..].to_vec());
    // The two forgotten photos (about 600 KB) are gone from the packs.
    let after_bytes = stored_bytes(&f.folder("repo/packs"));
    assert!(
        after_bytes + 500_000 < before_bytes,
        "packs {before_bytes} -> {after_bytes}: {report:?}"
    );
    assert_eq!(objects(&f.folder("repo"), "snapshots").len(), 2);
    assert_eq!(objects(&f.folder("repo"), "index").len(), 1);
    let check = repo.check(&after, true).unwrap();
    assert_eq!(check.snapshots, 2);
    assert_restores_source(&f, &repo, &f.folder("dest"));

    // Nothing more to do: a second prune forgets and deletes nothing.
    let again = prune(&repo, 2).unwrap();
    assert_eq!((again.forgotten, again.packs_deleted), (0, 0), "{again:?}");
    assert!(matches!(prune(&repo, 0), Err(RepoError::KeepNothing)));
}

#[test]
fn a_mostly_empty_pack_is_rewritten_with_only_its_live_chunks() {
    let f = Fixture::new();
    let repo = f.init("repo", small());
    let src = common::photo_and_note(&f, &repo);
    fs::remove_file(src.join("a.jpg")).unwrap();
    repo.backup_as(&src, f.device, None, 2, &mut |_| {})
        .unwrap();

    let report = prune(&repo, 1).unwrap();
    assert!(report.packs_rewritten >= 1, "{report:?}");
    assert!(report.pack_bytes_after < 100_000, "{report:?}");
    repo.check(&repo.catalog().unwrap(), true).unwrap();
    assert_restores_source(&f, &repo, &f.folder("dest"));
}

#[test]
fn a_prune_killed_at_any_write_leaves_every_kept_snapshot_restorable() {
    let mut finished = false;
    for writes in 0..400u64 {
        let f = Fixture::new();
        let provider = Hostile::over_folder(&f.folder("cloud"));
        let store = || provider.store("hostile://cloud");
        let repo = Repository::init(store(), f.rt.handle().clone(), &f.key, small()).unwrap();
        four_days(&f, &repo);
        let mark = repo.catalog().unwrap().mark();

        provider.tamper().writes_left = Some(writes);
        let killed = prune(&repo, 2);
        provider.tamper().writes_left = None;
        if killed.is_ok() {
            finished = true;
            eprintln!("prune finished with {writes} writes allowed");
            assert!(writes > 5, "a prune that writes almost nothing: {killed:?}");
            break;
        }

        // What the crash left: an intact catalog (with or without the forget entry) whose
        // every live snapshot verifies down to each chunk.
        let repo = Repository::open(store(), f.rt.handle().clone(), &f.key).unwrap();
        let catalog = repo.catalog().unwrap();
        catalog.check_mark(&mark).unwrap();
        let live = catalog.snapshots().len();
        assert!(
            live == 4 || live == 2,
            "after {writes} writes: {live} snapshots"
        );
        repo.check(&catalog, true)
            .unwrap_or_else(|e| panic!("killed after {writes} writes: {e}"));

        // The next prune (taking over the dead one's lock) finishes the job.
        let report = prune(&repo, 2).unwrap();
        let catalog = repo.catalog().unwrap();
        assert_eq!(catalog.snapshots().len(), 2, "{report:?}");
        repo.check(&catalog, true).unwrap();
        let cloud = f.folder("cloud");
        assert_eq!(
            objects(&cloud, "snapshots").len(),
            2,
            "after {writes} writes"
        );
        assert_eq!(objects(&cloud, "index").len(), 1, "after {writes} writes");
        assert!(!cloud.join("lock").exists());
        assert_restores_source(&f, &repo, &f.folder("dest"));
    }
    assert!(finished, "prune never finished within the write budget");
}

#[test]
fn writers_exclude_each_other_until_the_lock_is_released() {
    let f = Fixture::new();
    let repo = f.init("repo", small());
    let ours = DeviceId([1; 16]);
    let held = repo.lock(ours, Purpose::Prune, false).unwrap();
    let err = repo
        .lock(DeviceId([2; 16]), Purpose::Backup, true)
        .unwrap_err();
    assert!(matches!(err, RepoError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("a prune"), "{err}");
    // The same device, not knowing its other run is dead, waits too.
    let err = repo.lock(ours, Purpose::Backup, false).unwrap_err();
    assert!(matches!(err, RepoError::Locked { .. }), "{err:?}");
    held.release().unwrap();
    repo.lock(DeviceId([2; 16]), Purpose::Backup, false)
        .unwrap()
        .release()
        .unwrap();
}

/// A repository behind a provider that can be made to die, and an empty source folder.
fn behind_a_hostile_provider() -> (
    Fixture,
    std::sync::Arc<Hostile>,
    Repository,
    std::path::PathBuf,
) {
    let f = Fixture::new();
    let provider = Hostile::over_folder(&f.folder("cloud"));
    let repo = Repository::init(
        provider.store("hostile://cloud"),
        f.rt.handle().clone(),
        &f.key,
        small(),
    )
    .unwrap();
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    (f, provider, repo, src)
}

/// The same, with six 300 kB photos to back up.
fn six_photos_behind_a_hostile_provider(
    seed: u64,
) -> (
    Fixture,
    std::sync::Arc<Hostile>,
    Repository,
    std::path::PathBuf,
) {
    let (f, provider, repo, src) = behind_a_hostile_provider();
    for i in 0..6u64 {
        fs::write(src.join(format!("IMG-{i}.jpg")), noise(i + seed, 300_000)).unwrap();
    }
    (f, provider, repo, src)
}

/// Issue 15: an interrupted backup resumes without uploading again the packs that landed. The
/// provider dies after some writes, mid-backup; the next backup takes in the packs it finds
/// unindexed (authenticated first), uploads only the rest, restores byte for byte, and a prune
/// afterwards keeps them.
#[test]
fn an_interrupted_backup_resumes_without_uploading_its_packs_again() {
    let (f, provider, repo, src) = six_photos_behind_a_hostile_provider(10);
    let full = {
        let f2 = Fixture::new();
        let r = f2.init("ref", small());
        r.backup_as(&src, f2.device, None, 1, &mut |_| {})
            .unwrap()
            .stats
    };
    assert!(full.packs >= 4, "{full:?}");

    provider.tamper().writes_left = Some(3);
    let killed = repo.backup_as(&src, f.device, None, 1, &mut |_| {});
    provider.tamper().writes_left = None;
    // The provider's own error, not the walk's word that packing stopped: the two halves of
    // the backup run on two threads, and the cause must reach the user.
    let err = killed
        .expect_err("the provider died mid-backup")
        .to_string();
    assert!(err.contains("the provider went away"), "{err}");
    let landed = objects(&f.folder("cloud"), "packs").len() as u64;
    assert!(landed >= 1, "no pack landed before the provider died");
    assert!(objects(&f.folder("cloud"), "index").is_empty());

    let resumed = repo
        .backup_as(&src, f.device, None, 2, &mut |_| {})
        .unwrap();
    assert_eq!(resumed.stats.adopted_packs, landed, "{:?}", resumed.stats);
    assert_eq!(
        resumed.stats.packs + landed,
        full.packs,
        "the resumed backup uploaded landed packs again: {:?}",
        resumed.stats
    );
    assert!(resumed.stats.uploaded_bytes < full.uploaded_bytes);
    repo.check(&repo.catalog().unwrap(), true).unwrap();
    let dest = f.folder("dest");
    let latest = repo.catalog().unwrap().latest().unwrap();
    repo.restore(&latest, &dest, &mut |_| {}).unwrap();
    assert_eq!(tree(&dest), tree(&src));
    let report = prune(&repo, 1).unwrap();
    assert_eq!(report.packs_deleted, 0, "{report:?}");
    repo.check(&repo.catalog().unwrap(), true).unwrap();
}

/// Packs are written without a flush each; a power cut can leave an unindexed pack under its
/// name with its header on the disk and some blocks lost. The next backup must not adopt it
/// on its header alone: it would deduplicate against chunks that are gone.
#[test]
fn a_landed_pack_with_lost_blocks_is_not_adopted() {
    let (f, provider, repo, src) = six_photos_behind_a_hostile_provider(20);
    provider.tamper().writes_left = Some(3);
    assert!(
        repo.backup_as(&src, f.device, None, 1, &mut |_| {})
            .is_err()
    );
    provider.tamper().writes_left = None;
    let packs = objects(&f.folder("cloud"), "packs");
    assert!(!packs.is_empty(), "no pack landed before the provider died");
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[1024..5120].fill(0);
    fs::write(&packs[0], bytes).unwrap();

    let resumed = repo
        .backup_as(&src, f.device, None, 2, &mut |_| {})
        .unwrap();
    assert_eq!(
        resumed.stats.adopted_packs,
        packs.len() as u64 - 1,
        "{:?}",
        resumed.stats
    );
    repo.check(&repo.catalog().unwrap(), true).unwrap();
    let dest = f.folder("dest");
    let latest = repo.catalog().unwrap().latest().unwrap();
    repo.restore(&latest, &dest, &mut |_| {}).unwrap();
    assert_eq!(tree(&dest), tree(&src));
}

/// The backup's walk and its packing run on two threads. When the provider fails early in a
/// long backup, the walk is stopped mid-tree (it learns only that packing stopped), and what
/// reaches the user must be the provider's error, with nothing committed.
#[test]
fn a_backup_whose_uploads_fail_early_reports_the_providers_error() {
    let (f, provider, repo, src) = behind_a_hostile_provider();
    for i in 0..64u64 {
        fs::write(src.join(format!("IMG-{i}.jpg")), noise(i, 200_000)).unwrap();
    }
    let lock = repo.lock(f.device, Purpose::Backup, true).unwrap();
    provider.tamper().writes_left = Some(0);
    let err = repo
        .backup(&lock, &src, None, 1, None, &mut |_| {})
        .expect_err("the provider is gone")
        .to_string();
    provider.tamper().writes_left = None;
    lock.release().unwrap();
    assert!(err.contains("the provider went away"), "{err}");
    assert!(repo.catalog().unwrap().snapshots().is_empty());
    assert!(objects(&f.folder("cloud"), "index").is_empty());
}

#[test]
fn keep_daily_keeps_each_days_newest_and_what_it_needs() {
    const HOUR: u64 = 3_600_000;
    let f = Fixture::new();
    let repo = f.init("repo", small());
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    // Day 0 at 10:00 and 12:00, day 1 at 09:00, day 2 at 08:00 and 20:00; each time the
    // photo is replaced, so each snapshot alone holds its own.
    let hours = [10, 12, 24 + 9, 48 + 8, 48 + 20];
    let mut trees = Vec::new();
    for (i, h) in hours.iter().enumerate() {
        fs::write(src.join("photo.jpg"), noise(300 + i as u64, 200_000)).unwrap();
        repo.backup_as(&src, f.device, None, h * HOUR, &mut |_| {})
            .unwrap();
        trees.push(tree(&src));
    }
    let before = repo.catalog().unwrap().snapshots();
    let lock = repo.lock(f.device, Purpose::Prune, true).unwrap();
    let keep = lockbox_repo::Keep {
        daily: 2,
        ..Default::default()
    };
    let (report, after) = repo
        .prune(&lock, repo.catalog().unwrap(), &keep, 100 * HOUR)
        .unwrap();
    lock.release().unwrap();
    assert_eq!((report.forgotten, report.kept), (3, 2), "{report:?}");
    // Day 1's only snapshot and day 2's newest: not a suffix of the list.
    assert_eq!(after.snapshots(), vec![before[2], before[4]]);
    repo.check(&after, true).unwrap();
    for (entry, i) in after.snapshots().iter().zip([2, 4]) {
        let dest = f.folder(&format!("dest{i}"));
        repo.restore(entry, &dest, &mut |_| {}).unwrap();
        assert_eq!(tree(&dest), trees[i], "snapshot {i}");
    }
    assert_eq!(objects(&f.folder("repo"), "snapshots").len(), 2);
}
