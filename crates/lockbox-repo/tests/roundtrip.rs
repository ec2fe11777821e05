//! Random trees round trip through a repository, twice with random changes between, and the
//! second backup stores no chunk the first already holds.

mod common;

use std::fs;
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip_and_dedup(files in files()) {
        let f = Fixture::new();
        let src = f.folder("src");
        write(&src, &files, false);
        let repo = f.init("repo", small());
        let first = repo.backup_as(&src, f.device, None, 1, &mut |_| {}).unwrap();
        let before = tree(&src);
        write(&src, &files, true);
        let second = repo.backup_as(&src, f.device, Some(&first.mark), 2, &mut |_| {}).unwrap();
        let changed: u64 = files.iter().filter(|x| x.4).count() as u64 * 14;
        // New bytes: at most the changed files' last chunks plus what was appended.
        let touched = files.iter().filter(|x| x.4 && x.3 > 0).count() as u64;
        prop_assert!(second.stats.new_bytes <= changed + touched * u64::from(small().chunk_max),
            "{:?}", second.stats);

        let snaps = repo.catalog().unwrap().snapshots();
        repo.restore(&snaps[0], &f.folder("one"), &mut |_| {}).unwrap();
        repo.restore(&snaps[1], &f.folder("two"), &mut |_| {}).unwrap();
        prop_assert_eq!(tree(&f.folder("one")), before);
        prop_assert_eq!(tree(&f.folder("two")), tree(&src));
    }
}
