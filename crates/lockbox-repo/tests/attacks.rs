//! The storage provider as attacker, through a provider that lies ([`Hostile`]): it answers
//! writes it never made, deletes and hides what it likes, and plants objects. Each test is an
//! attack that worked on an earlier build.

mod common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{BackupAs, Fixture, messages, small};
use lockbox_repo::{Fault, RepoError, Repository};
use lockbox_store::test_support::{Hostile, JUNK_PIECE, OnPut, Reads};

const URL: &str = "hostile://provider";

fn entry(seq: u64) -> String {
    format!("catalog/{seq:020}")
}

/// A repository behind a hostile provider, with `snapshots` snapshots of a small tree.
fn hostile_repo(snapshots: u64) -> (Fixture, Arc<Hostile>, Repository) {
    let f = Fixture::new();
    let src = f.folder("src");
    fs::create_dir_all(&src).unwrap();
    let provider = Hostile::over_folder(&f.folder("cloud"));
    let repo =
        Repository::init(provider.store(URL), f.rt.handle().clone(), &f.key, small()).unwrap();
    for i in 0..snapshots {
        fs::write(src.join("chat.db"), messages(i, 2_000)).unwrap();
        repo.backup_as(&src, f.device, None, i + 1, &mut |_| {})
            .unwrap();
    }
    (f, provider, repo)
}

#[test]
fn a_provider_that_answers_taken_and_rolls_back_cannot_move_the_mark_back() {
    let (f, provider, repo) = hostile_repo(3);
    let mark = repo.catalog().unwrap().mark();
    assert_eq!(mark.seq, 3);
    // The next entry is refused as taken, and meanwhile entries 2 and 3 vanish: the backup
    // that lists again must not take entry 2 for its own.
    provider.on_put(|name, tamper| {
        if name == entry(4) {
            tamper.delete = vec![entry(2), entry(3)];
            return OnPut::Refuse;
        }
        OnPut::Pass
    });
    let err = repo
        .backup_as(&f.folder("src"), f.device, Some(&mark), 10, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, RepoError::RolledBack { .. }), "{err:?}");
    assert_eq!(err.fault(), Fault::Integrity);
    assert!(
        !f.folder("cloud").join(entry(2)).exists(),
        "the backup wrote into the gap the provider made"
    );
}

#[test]
fn a_lost_reply_to_the_catalog_write_does_not_list_the_snapshot_twice() {
    let (f, provider, repo) = hostile_repo(1);
    let once = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&once);
    provider.on_put(move |name, _| {
        if name == entry(2) && !flag.swap(true, Ordering::SeqCst) {
            return OnPut::StoreThenRefuse;
        }
        OnPut::Pass
    });
    let mark = repo.catalog().unwrap().mark();
    let backup = repo
        .backup_as(&f.folder("src"), f.device, Some(&mark), 10, &mut |_| {})
        .unwrap();
    assert!(once.load(Ordering::SeqCst), "the reply was never lost");
    let catalog = repo.catalog().unwrap();
    assert_eq!(catalog.len(), 2, "{:?}", catalog.snapshots());
    assert_eq!(backup.snapshot.seq, 2);
    assert_eq!(backup.mark, catalog.mark());
    catalog.check_mark(&backup.mark).unwrap();
}

#[test]
fn check_verifies_the_catalog_it_is_given_not_a_shorter_one_listed_again() {
    let (_f, provider, repo) = hostile_repo(3);
    let catalog = repo.catalog().unwrap();
    // From now on the provider shows a catalog that ends at entry 1.
    provider.tamper().hidden = vec![entry(2), entry(3)];
    let report = repo.check(&catalog, false).unwrap();
    assert_eq!(report.snapshots, 3);
}

#[test]
fn a_planted_oversized_catalog_entry_is_refused_unread() {
    let (f, _provider, repo) = hostile_repo(1);
    let planted = f.folder("cloud").join(entry(2));
    let file = fs::File::create(&planted).unwrap();
    // Sparse: a gigabyte on the listing, nothing on disk.
    file.set_len(1 << 30).unwrap();
    let err = repo.catalog().unwrap_err();
    assert!(err.to_string().contains("far more than an entry"), "{err}");
    assert_eq!(err.fault(), Fault::Integrity);
}

#[test]
fn a_repository_the_device_knows_is_never_replaced_or_restarted() {
    let (f, provider, repo) = hostile_repo(1);
    let known = repo.id();
    let open = || Repository::open_known(provider.store(URL), f.rt.handle().clone(), &f.key, known);
    open().unwrap();

    // Replaced by a repository the provider made under another key: refused by id, before
    // any key is tried (it would look like a wrong key).
    let config = f.folder("cloud").join("config");
    let ours = fs::read(&config).unwrap();
    let other = Fixture::new();
    let theirs = Repository::init(
        other.store("theirs"),
        f.rt.handle().clone(),
        &lockbox_crypto::BackupKey::from_bytes([9; 32]),
        small(),
    )
    .unwrap();
    assert_ne!(theirs.id(), known);
    fs::copy(other.folder("theirs").join("config"), &config).unwrap();
    let err = open().unwrap_err();
    assert!(matches!(err, RepoError::Replaced { .. }), "{err:?}");
    assert_eq!(err.fault(), Fault::Integrity);

    // Deleted: gone, an integrity failure, not an empty storage to start afresh in.
    fs::remove_file(&config).unwrap();
    let err = open().unwrap_err();
    assert!(matches!(err, RepoError::Vanished { .. }), "{err:?}");
    assert_eq!(err.fault(), Fault::Integrity);
    fs::write(&config, ours).unwrap();
    open().unwrap();
}

#[test]
fn a_flipped_version_byte_is_damage_not_a_newer_format() {
    let (f, _provider, repo) = hostile_repo(2);
    let cloud = f.folder("cloud");
    let mut objects = vec![cloud.join("config"), cloud.join(entry(2))];
    objects.extend(common::objects(&cloud, "index").into_iter().take(1));
    objects.extend(common::objects(&cloud, "packs").into_iter().take(1));
    for path in objects {
        let good = fs::read(&path).unwrap();
        let mut bad = good.clone();
        bad[8] ^= 0x03;
        fs::write(&path, &bad).unwrap();
        let err = Repository::open(
            lockbox_store::Store::open(&format!("file://{}", cloud.display())).unwrap(),
            f.rt.handle().clone(),
            &f.key,
        )
        .and_then(|r| {
            let catalog = r.catalog()?;
            r.check(&catalog, true)
        })
        .unwrap_err();
        assert!(
            !matches!(err, RepoError::UnsupportedVersion { .. }),
            "{path:?}: {err:?}"
        );
        assert_eq!(err.fault(), Fault::Integrity, "{path:?}: {err}");
        fs::write(&path, good).unwrap();
    }
    drop(repo);
}

/// Files of a few bytes each, as a chat app's folder holds by the thousand: every identical one
/// is a reference to the same chunk, so each is a read of its own. A restore from a slow
/// provider must not open one request per file at once (it did: the read-ahead was counted in
/// chunk bytes alone, 8 MiB of 5-byte chunks).
#[test]
fn a_restore_of_many_tiny_files_from_a_slow_provider_holds_few_reads_open() {
    let (f, provider, repo) = hostile_repo(0);
    let src = f.folder("src");
    for i in 0..3_000 {
        let same = format!("same {}\n", i % 2);
        fs::write(src.join(format!("same{i}")), same).unwrap();
        fs::write(src.join(format!("tiny{i}")), format!("{i:08}")).unwrap();
    }
    repo.backup_as(&src, f.device, None, 1, &mut |_| {})
        .unwrap();
    let latest = repo.catalog().unwrap().latest().unwrap();
    provider.tamper().read_delay = Some(std::time::Duration::from_millis(5));
    provider.reset_reads();
    let dest = f.folder("dest");
    repo.restore(&latest, &dest, &mut |_| {}).unwrap();
    let reads = provider.reads();
    // Identical files each need a read of their own (the rest share reads with neighbours).
    assert!(reads.total > 1_500, "a read per identical file: {reads:?}");
    assert!(reads.most_at_once <= 32, "{reads:?}");
    assert_eq!(common::tree(&dest), common::tree(&src));
}

/// A provider that answers each read of a pack with a body that runs on past the range (an
/// endless one would do; here 16 MiB more) must not get the reader to hold it: the read stops
/// at the first piece past what was asked, and the restore or check reports damage. Both took
/// every byte it sent, the restore for up to 32 reads at once.
#[test]
fn a_provider_that_runs_pack_reads_on_past_their_end_is_cut_off() {
    let (f, provider, repo) = hostile_repo(2);
    let catalog = repo.catalog().unwrap();
    let latest = catalog.latest().unwrap();
    provider.tamper().padded_reads = Some(("packs/".into(), 16 << 20));
    let at_most_a_piece_each = |reads: Reads| {
        assert!(reads.total >= 1, "{reads:?}");
        assert!(
            reads.junk_taken <= reads.total as u64 * JUNK_PIECE as u64,
            "{reads:?}"
        );
    };

    provider.reset_reads();
    let err = repo
        .restore(&latest, &f.folder("dest"), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.fault(), Fault::Integrity, "{err}");
    at_most_a_piece_each(provider.reads());
    assert!(
        err.to_string().contains("more bytes than the read asked"),
        "{err}"
    );

    provider.reset_reads();
    let err = repo.check(&catalog, true).unwrap_err();
    assert_eq!(err.fault(), Fault::Integrity, "{err}");
    at_most_a_piece_each(provider.reads());
    assert!(err.to_string().contains("longer than"), "{err}");
}

/// The same against the snapshot object, which is read whole: its catalog entry records its
/// length, so the read stops one piece past it and the restore reports damage. Before, the
/// reader took every byte sent (an endless body would have exhausted its memory).
#[test]
fn a_provider_that_runs_a_snapshot_read_on_past_its_recorded_length_is_cut_off() {
    let (f, provider, repo) = hostile_repo(1);
    let latest = repo.catalog().unwrap().latest().unwrap();
    assert!(latest.sealed_len.is_some_and(|len| len > 0), "{latest:?}");
    provider.tamper().padded_reads = Some(("snapshots/".into(), 16 << 20));
    provider.reset_reads();
    let err = repo
        .restore(&latest, &f.folder("dest"), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.fault(), Fault::Integrity, "{err}");
    assert!(err.to_string().contains("longer than"), "{err}");
    let reads = provider.reads();
    assert!(reads.total >= 1, "{reads:?}");
    assert!(reads.junk_taken <= JUNK_PIECE as u64, "{reads:?}");
}

/// Junk planted under `index/` (names that parse, bodies that do not open) fails the restore
/// at the first junk object read, with a few reads in flight, not after every object was read
/// and held: before, all were fetched and kept before the first was opened.
#[test]
fn junk_index_objects_stop_the_restore_at_the_first_one() {
    let (f, provider, repo) = hostile_repo(1);
    let latest = repo.catalog().unwrap().latest().unwrap();
    let index_dir = f.folder("cloud").join("index");
    for i in 0..64u32 {
        fs::write(index_dir.join(format!("00{i:062x}")), vec![0xa5; 64 << 10]).unwrap();
    }
    provider.reset_reads();
    let err = repo
        .restore(&latest, &f.folder("dest"), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.fault(), Fault::Integrity, "{err}");
    let reads = provider.reads();
    assert!(
        reads.total <= 16,
        "read most of the 64 junk objects: {reads:?}"
    );
}
