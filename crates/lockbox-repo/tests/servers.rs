//! The repository against real storage servers on loopback, S3 (s3s-fs) and Azure Blob
//! (Azurite): backup, dedup (put-if-absent on each), restore, check, and a catalog entry the
//! server loses.

mod common;

use std::fs;

use common::{BackupAs, messages, noise, runtime, small, tree};
use lockbox_crypto::BackupKey;
use lockbox_repo::{DeviceId, RepoError, Repository};
use lockbox_store::ObjectName;
use lockbox_store::test_support::{AzureServer, S3Server, StorageServer};

#[test]
fn a_repository_on_s3_backs_up_dedups_restores_and_checks() {
    round_trip(&S3Server::start());
}

#[test]
fn a_repository_on_azure_backs_up_dedups_restores_and_checks() {
    round_trip(&AzureServer::start());
}

fn round_trip(server: &dyn StorageServer) {
    let rt = runtime();
    let key = BackupKey::from_bytes([3; 32]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("Media")).unwrap();
    fs::write(src.join("msgstore.db"), messages(1, 20_000)).unwrap();
    fs::write(src.join("Media/a.jpg"), noise(4, 700_000)).unwrap();

    let repo = Repository::init(
        server.store("phone/repo"),
        rt.handle().clone(),
        &key,
        small(),
    )
    .unwrap();
    let first = repo
        .backup_as(&src, DeviceId([1; 16]), None, 1, &mut |_| {})
        .unwrap();
    let second = repo
        .backup_as(&src, DeviceId([1; 16]), Some(&first.mark), 2, &mut |_| {})
        .unwrap();
    assert_eq!(second.stats.new_bytes, 0, "{:?}", second.stats);
    assert_eq!(second.stats.packs, 0);

    let repo = Repository::open(server.store("phone/repo"), rt.handle().clone(), &key).unwrap();
    let report = repo.check(&repo.catalog().unwrap(), true).unwrap();
    assert_eq!(report.snapshots, 2);
    let dest = dir.path().join("back");
    repo.restore(
        &repo.catalog().unwrap().latest().unwrap(),
        &dest,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(tree(&dest), tree(&src));

    // The server loses the newest catalog entry: the mark catches it.
    let newest = ObjectName::new("catalog/00000000000000000002").unwrap();
    rt.block_on(server.store("phone/repo").delete_object(&newest))
        .unwrap();
    let err = repo
        .catalog()
        .unwrap()
        .check_mark(&second.mark)
        .unwrap_err();
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
}
