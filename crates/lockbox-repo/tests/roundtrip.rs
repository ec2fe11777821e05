//! Random trees round trip through a repository, twice with random changes between (the
//! daily pattern: a chat database that grows, new photos, some files rewritten), and the second
//! backup stores no chunk the first already holds. Files under two names stay hard links.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{BackupAs, Fixture, noise, small, tree};
use proptest::prelude::*;

/// A file: its directory (0..3), a name, its content seed and length, and whether it is
/// changed before the second backup.
fn files() -> impl Strategy<Value = Vec<(u8, Vec<u8>, u64, usize, bool)>> {
    let name = prop::collection::vec(
        prop_oneof![b'a'..=b'z', Just(0xe9u8), Just(b' '), Just(b'-')],
        1..12,
    );
    prop::collection::vec(
        (0u8..3, name, any::<u64>(), 0usize..150_000, any::<bool>()),
        0..12,
    )
}

fn write(root: &Path, files: &[(u8, Vec<u8>, u64, usize, bool)], changed: bool) {
    use std::os::unix::ffi::OsStrExt;
    for d in 0..3 {
        fs::create_dir_all(root.join(format!("d{d}/empty"))).unwrap();
    }
    for (dir, name, seed, len, change) in files {
        let path = root
            .join(format!("d{dir}"))
            .join(std::ffi::OsStr::from_bytes(name));
        let mut data = noise(*seed, *len);
        if changed && *change {
            data.extend_from_slice(b"appended today");
        }
        fs::write(path, data).unwrap();
    }
}

/// The day between the backups: the database's first length and what is appended to it, the
/// new photos' lengths, and hard links (file index, directory) made before the first backup.
type Day = (usize, usize, Vec<usize>, Vec<(usize, u8)>);

fn day() -> impl Strategy<Value = Day> {
    (
        0usize..300_000,
        1usize..20_000,
        prop::collection::vec(0usize..200_000, 0..3),
        prop::collection::vec((0usize..12, 0u8..3), 0..4),
    )
}

/// The files' own paths, in the order [`files`] drew them.
fn paths(root: &Path, files: &[(u8, Vec<u8>, u64, usize, bool)]) -> Vec<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    files
        .iter()
        .map(|(dir, name, ..)| {
            root.join(format!("d{dir}"))
                .join(std::ffi::OsStr::from_bytes(name))
        })
        .collect()
}

/// Second names (`d{dir}/link_{k}`, which no drawn name can be) for some of the files; returns the pairs made.
fn link(
    root: &Path,
    files: &[(u8, Vec<u8>, u64, usize, bool)],
    links: &[(usize, u8)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let paths = paths(root, files);
    let mut made = Vec::new();
    for (k, &(i, dir)) in links.iter().enumerate() {
        let Some(target) = paths.get(i) else { continue };
        let name = root.join(format!("d{dir}/link_{k}"));
        fs::hard_link(target, &name).unwrap();
        let rel = |p: &Path| {
            p.strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        };
        made.push((rel(target), rel(&name)));
    }
    made
}

/// The day's change: the database grows, new photos arrive.
fn live_a_day(root: &Path, appended: usize, photos: &[usize]) {
    let mut db = fs::OpenOptions::new()
        .append(true)
        .open(root.join("chat.db"))
        .unwrap();
    db.write_all(&noise(7, appended)).unwrap();
    fs::create_dir_all(root.join("photos")).unwrap();
    for (j, len) in photos.iter().enumerate() {
        fs::write(
            root.join(format!("photos/p{j}.jpg")),
            noise(100 + j as u64, *len),
        )
        .unwrap();
    }
}

/// Every pair of names is one file (one inode) in `root`.
fn still_linked(root: &Path, pairs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let ino = |rel: &[u8]| {
        fs::metadata(root.join(std::ffi::OsStr::from_bytes(rel)))
            .unwrap()
            .ino()
    };
    pairs.iter().all(|(a, b)| ino(a) == ino(b))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip_and_dedup(files in files(), (db, appended, photos, links) in day()) {
        let f = Fixture::new();
        let src = f.folder("src");
        write(&src, &files, false);
        fs::write(src.join("chat.db"), noise(6, db)).unwrap();
        let pairs = link(&src, &files, &links);
        let repo = f.init("repo", small());
        let first = repo.backup_as(&src, f.device, None, 1, &mut |_| {}).unwrap();
        let before = tree(&src);
        write(&src, &files, true);
        live_a_day(&src, appended, &photos);
        let second = repo.backup_as(&src, f.device, Some(&first.mark), 2, &mut |_| {}).unwrap();
        // New bytes: at most the changed files' last chunks plus what was appended to them, the
        // database's last chunk plus its growth, and the photos.
        let changed: u64 = files.iter().filter(|x| x.4).count() as u64 * 14;
        let touched = files.iter().filter(|x| x.4 && x.3 > 0).count() as u64 + 1;
        let day = appended as u64 + photos.iter().sum::<usize>() as u64;
        prop_assert!(second.stats.new_bytes <= changed + day + touched * u64::from(small().chunk_max),
            "{:?}", second.stats);

        let snaps = repo.catalog().unwrap().snapshots();
        repo.restore(&snaps[0], &f.folder("one"), &mut |_| {}).unwrap();
        repo.restore(&snaps[1], &f.folder("two"), &mut |_| {}).unwrap();
        prop_assert_eq!(tree(&f.folder("one")), before);
        prop_assert_eq!(tree(&f.folder("two")), tree(&src));
        prop_assert!(still_linked(&f.folder("one"), &pairs), "{pairs:?}");
        prop_assert!(still_linked(&f.folder("two"), &pairs), "{pairs:?}");
    }
}
