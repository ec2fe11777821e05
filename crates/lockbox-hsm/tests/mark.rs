//! Rollback marks: in a SoftHSM2 token object (each test in its own process and token
//! directory), and in a sealed file.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use lockbox_hsm::test_support::run_isolated;
use lockbox_hsm::{FileMark, MarkStore, Pkcs11Mark, SealError, Sealer, SoftwareSealer};
use std::sync::Arc;

#[test]
fn a_token_mark_keeps_its_last_value_across_opens_and_is_private() {
    run_isolated(|hsm| {
        let token = hsm.new_token();
        let mark = Pkcs11Mark::open(&token.config, "node-3").unwrap();
        assert!(mark.outlives_disk_rollback());
        assert_eq!(
            mark.load().unwrap(),
            None,
            "no value before the first store"
        );
        mark.store(b"term 4, index 17").unwrap();
        mark.store(b"term 5, index 30").unwrap();
        drop(mark);

        let again = Pkcs11Mark::open(&token.config, "node-3").unwrap();
        assert_eq!(
            again.load().unwrap().as_deref(),
            Some(&b"term 5, index 30"[..])
        );
        let other = Pkcs11Mark::open(&token.config, "node-4").unwrap();
        assert_eq!(other.load().unwrap(), None, "each name is its own object");

        let session = token.open_session();
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Label(b"lockbox-mark/node-3".to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "one object per mark, updated in place");
        let attrs = session
            .get_attributes(found[0], &[AttributeType::Token, AttributeType::Private])
            .unwrap();
        assert!(attrs.contains(&Attribute::Token(true)), "{attrs:?}");
        assert!(attrs.contains(&Attribute::Private(true)), "{attrs:?}");
    });
}

#[test]
fn a_crash_between_create_and_destroy_leaves_the_newer_mark_in_force() {
    run_isolated(|hsm| {
        let token = hsm.new_token();
        let mark = Pkcs11Mark::open(&token.config, "n").unwrap();
        mark.store(b"new").unwrap();
        // (`mark` stays open: it keeps the token logged in for the test's own session.)
        // What a crash after C_CreateObject and before C_DestroyObject would leave, with the
        // older object (serial 0) found first or last depending on the token.
        let session = token.open_session();
        let mut stale = 0u64.to_be_bytes().to_vec();
        stale.extend_from_slice(b"old");
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(b"lockbox-mark/n".to_vec()),
                Attribute::Value(stale),
            ])
            .unwrap();
        let reopened = Pkcs11Mark::open(&token.config, "n").unwrap();
        assert_eq!(reopened.load().unwrap().as_deref(), Some(&b"new"[..]));
        let left = session
            .find_objects(&[Attribute::Label(b"lockbox-mark/n".to_vec())])
            .unwrap();
        assert_eq!(left.len(), 1, "the older object is removed on open");
        drop(mark);
    });
}

#[test]
fn a_public_object_under_the_marks_label_is_ignored() {
    run_isolated(|hsm| {
        let token = hsm.new_token();
        let mark = Pkcs11Mark::open(&token.config, "n").unwrap();
        mark.store(b"real").unwrap();
        // Public objects need no PIN: what anyone with access to the token could leave there.
        let session = token.open_session();
        let mut impostor = u64::MAX.to_be_bytes().to_vec();
        impostor.extend_from_slice(b"forged");
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Label(b"lockbox-mark/n".to_vec()),
                Attribute::Value(impostor),
            ])
            .unwrap();
        let reopened = Pkcs11Mark::open(&token.config, "n").unwrap();
        assert_eq!(reopened.load().unwrap().as_deref(), Some(&b"real"[..]));
        drop(mark);
    });
}

/// What a fresh handle on the file at `path` loads, as a node starting would.
fn loaded(path: &std::path::Path, sealer: &Arc<dyn Sealer>, name: &str) -> Option<Vec<u8>> {
    FileMark::new(path, sealer.clone(), name).load().unwrap()
}

fn software(dir: &std::path::Path, name: &str) -> Arc<dyn Sealer> {
    Arc::new(SoftwareSealer::create(dir.join(name)).unwrap())
}

#[test]
fn a_file_mark_is_sealed_to_its_node_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = software(dir.path(), "a.key");
    let path = dir.path().join("mark");
    let mark = FileMark::new(&path, sealer.clone(), "node-1");
    assert!(!mark.outlives_disk_rollback());
    assert_eq!(mark.load().unwrap(), None);
    mark.store(b"v1").unwrap();
    mark.store(b"v2").unwrap();
    assert_eq!(
        loaded(&path, &sealer, "node-1").as_deref(),
        Some(&b"v2"[..])
    );
    assert!(
        matches!(
            FileMark::new(&path, sealer.clone(), "node-2").load(),
            Err(SealError::Tampered)
        ),
        "a mark copied to another node's name does not open"
    );
    let stranger = software(dir.path(), "b.key");
    assert!(
        FileMark::new(&path, stranger, "node-1").load().is_err(),
        "nor under another node's key"
    );
    // The file is two slots: v2 in the second, v1 (the value before) in the first.
    let size = std::fs::metadata(&path).unwrap().len() as usize / 2;
    let flip = |at: usize| {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    };
    // An edited (or torn) newest slot is never read: the value before it is, which is lower.
    flip(size + 30);
    let reopened = FileMark::new(&path, sealer.clone(), "node-1");
    assert_eq!(reopened.load().unwrap().as_deref(), Some(&b"v1"[..]));
    // With both slots edited, nothing vouches for the mark.
    flip(30);
    assert!(
        matches!(reopened.load(), Err(SealError::Tampered)),
        "an edited mark is refused"
    );
}

#[test]
fn a_file_mark_is_written_in_place_and_survives_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = software(dir.path(), "a.key");
    let path = dir.path().join("mark");
    // The whole-file format of earlier versions loads, and the first store replaces it.
    std::fs::write(
        &path,
        sealer.seal(b"lockbox/v1/rollback-mark/n", b"old").unwrap(),
    )
    .unwrap();
    let mark = FileMark::new(&path, sealer.clone(), "n");
    assert_eq!(mark.load().unwrap().as_deref(), Some(&b"old"[..]));
    mark.store(b"v1").unwrap();
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    let first = inode();
    for v in [&b"v2"[..], b"v3", b"v4"] {
        mark.store(v).unwrap();
    }
    assert_eq!(inode(), first, "stores in place keep the file");
    let size = std::fs::metadata(&path).unwrap().len() as usize / 2;
    // A store torn after its first bytes: the slot it wrote (v4's) is unreadable, v3 stands.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[size + 8] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let reopened = FileMark::new(&path, sealer.clone(), "n");
    assert_eq!(reopened.load().unwrap().as_deref(), Some(&b"v3"[..]));
    // The next store takes the torn slot, not v3's.
    reopened.store(b"v5").unwrap();
    assert_eq!(loaded(&path, &sealer, "n").as_deref(), Some(&b"v5"[..]));
    // A crash that wiped the start of the other slot (v3's) hides nothing of v5's.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(loaded(&path, &sealer, "n").as_deref(), Some(&b"v5"[..]));
    // A file moved away under the running node: its stores fail rather than go unread.
    let moving = FileMark::new(&path, sealer.clone(), "n");
    moving.load().unwrap();
    let aside = dir.path().join("aside");
    std::fs::rename(&path, &aside).unwrap();
    std::fs::copy(&aside, &path).unwrap();
    let err = moving.store(b"v6").unwrap_err();
    assert!(err.to_string().contains("moved"), "{err}");
    // A value larger than a slot grows the file (atomically), and loads.
    let big = vec![7u8; 3 * size];
    reopened.store(&big).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() as usize > 6 * size);
    assert_eq!(FileMark::new(&path, sealer, "n").load().unwrap(), Some(big));
}
