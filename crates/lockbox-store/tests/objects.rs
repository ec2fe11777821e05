//! Named objects (the repository's layout) against a real S3-protocol server and a local folder.

use bytes::Bytes;
use lockbox_store::test_support::{S3Server, StorageServer};
use lockbox_store::{ObjectName, PutIf, Store, StoreError};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn name(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

fn objects_round_trip(store: &Store, rt: &Runtime) {
    assert!(rt.block_on(store.list_objects("packs")).unwrap().is_empty());
    let a = name("packs/aa/one");
    let b = name("packs/bb/two");
    rt.block_on(store.put_object(&b, Bytes::from_static(b"second"), PutIf::Always))
        .unwrap();
    rt.block_on(store.put_object(&a, Bytes::from_static(b"0123456789"), PutIf::Always))
        .unwrap();
    rt.block_on(store.put_object(&name("index/x"), Bytes::from_static(b"i"), PutIf::Always))
        .unwrap();

    let listed = rt.block_on(store.list_objects("packs")).unwrap();
    let names: Vec<_> = listed.iter().map(|o| (o.name.as_str(), o.size)).collect();
    assert_eq!(names, [("packs/aa/one", 10), ("packs/bb/two", 6)]);

    assert_eq!(
        &rt.block_on(store.get_object(&a)).unwrap()[..],
        b"0123456789"
    );
    assert_eq!(
        &rt.block_on(store.get_object_range(&a, 2..5)).unwrap()[..],
        b"234"
    );
    let err = rt.block_on(store.get_object_range(&a, 8..20)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ShortRead { .. } | StoreError::Storage { .. }
        ),
        "{err:?}"
    );
    let err = rt
        .block_on(store.get_object(&name("packs/none")))
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    // Absent: a second writer of the same name is refused and the first object stays.
    let entry = name("catalog/00000000000000000001");
    rt.block_on(store.put_object(&entry, Bytes::from_static(b"first"), PutIf::Absent))
        .unwrap();
    let err = rt
        .block_on(store.put_object(&entry, Bytes::from_static(b"other"), PutIf::Absent))
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        &rt.block_on(store.get_object(&entry)).unwrap()[..],
        b"first"
    );

    rt.block_on(store.delete_object(&a)).unwrap();
    rt.block_on(store.delete_object(&a)).unwrap();
    let left = rt.block_on(store.list_objects("packs")).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, b);
    // Repository objects are not single-stream backups.
    assert!(rt.block_on(store.list()).unwrap().is_empty());
}

#[test]
fn named_objects_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("file://{}/repo", dir.path().display())).unwrap();
    objects_round_trip(&store, &runtime());
}

#[test]
fn named_objects_on_s3() {
    let server = S3Server::start();
    objects_round_trip(&server.store("phone/repo"), &runtime());
}
