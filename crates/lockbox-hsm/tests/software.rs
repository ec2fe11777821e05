//! `SoftwareSealer` against real key files in a temp dir.

mod common;

use std::os::unix::fs::PermissionsExt;

use lockbox_hsm::{KeyId, SealError, Sealer, SoftwareSealer};

fn fresh() -> (tempfile::TempDir, SoftwareSealer) {
    let dir = tempfile::tempdir().unwrap();
    let sealer = SoftwareSealer::create(dir.path().join("seal.keys")).unwrap();
    (dir, sealer)
}

#[test]
fn software_sealer_meets_the_contract() {
    let (_dir, s) = fresh();
    assert_eq!(s.current_key_id(), KeyId(1));
    common::full_contract(&s);
}

#[test]
fn key_file_is_created_owner_only() {
    let (_dir, s) = fresh();
    let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    s.rotate().unwrap();
    let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "rotation must keep the file owner-only");
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let (_dir, s) = fresh();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let err = SoftwareSealer::open(s.path()).unwrap_err();
        assert!(matches!(err, SealError::KeyFile { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o400)).unwrap();
    SoftwareSealer::open(s.path()).unwrap();
}

#[test]
fn create_never_overwrites_an_existing_key_file() {
    let (_dir, s) = fresh();
    let before = std::fs::read(s.path()).unwrap();
    assert!(matches!(
        SoftwareSealer::create(s.path()),
        Err(SealError::KeyFile { .. })
    ));
    assert_eq!(std::fs::read(s.path()).unwrap(), before);
}

#[test]
fn reopened_sealer_unseals_old_blobs_and_keeps_rotations() {
    let (_dir, s) = fresh();
    let first = s.seal(common::AAD, common::PLAINTEXT).unwrap();
    assert_eq!(s.rotate().unwrap(), KeyId(2));
    let second = s.seal(common::AAD, common::PLAINTEXT).unwrap();
    let path = s.path().to_path_buf();
    drop(s);

    let reopened = SoftwareSealer::open(&path).unwrap();
    assert_eq!(reopened.current_key_id(), KeyId(2));
    for blob in [&first, &second] {
        assert_eq!(
            reopened.unseal(common::AAD, blob).unwrap().as_slice(),
            common::PLAINTEXT
        );
    }
}

#[test]
fn another_key_file_cannot_unseal() {
    let (_d1, a) = fresh();
    let (_d2, b) = fresh();
    let blob = a.seal(common::AAD, common::PLAINTEXT).unwrap();
    assert!(matches!(
        b.unseal(common::AAD, &blob),
        Err(SealError::Tampered)
    ));
}

#[test]
fn corrupted_or_missing_key_file_is_a_key_file_error() {
    let (dir, s) = fresh();
    let mut bytes = std::fs::read(s.path()).unwrap();
    bytes[20] ^= 1;
    std::fs::write(s.path(), &bytes).unwrap();
    let err = SoftwareSealer::open(s.path()).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    let missing = SoftwareSealer::open(dir.path().join("nope")).unwrap_err();
    assert!(matches!(missing, SealError::KeyFile { .. }), "{missing}");
}

#[test]
fn debug_output_has_no_key_material() {
    let (_dir, s) = fresh();
    let dbg = format!("{s:?}");
    assert!(
        dbg.contains("SoftwareSealer") && dbg.contains("current_key_id"),
        "{dbg}"
    );
    let file = std::fs::read(s.path()).unwrap();
    let key = &file[17..49];
    assert!(!dbg.contains(&format!("{:?}", key)), "{dbg}");
}

/// Checks the documented blob layout byte for byte by opening a blob with the raw key from
/// the key file: GCM AAD must be `version ‖ key id ‖ caller AAD`, nothing less.
#[test]
fn blob_layout_matches_the_documented_format() {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let (_dir, s) = fresh();
    let file = std::fs::read(s.path()).unwrap();
    // magic(8) ‖ format(1) ‖ count(4) ‖ key id(4) ‖ key(32)
    assert_eq!(&file[13..17], &1u32.to_be_bytes());
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &file[17..49]).unwrap());

    let blob = s.seal(common::AAD, common::PLAINTEXT).unwrap();
    let open = |aad: Vec<u8>| {
        let nonce = Nonce::try_assume_unique_for_key(&blob[5..17]).unwrap();
        let mut buf = blob[17..].to_vec();
        key.open_in_place(nonce, Aad::from(aad), &mut buf)
            .map(|pt| pt.to_vec())
    };
    assert!(
        open(common::AAD.to_vec()).is_err(),
        "header must be bound into the AAD"
    );
    let bound = [&blob[..5], common::AAD].concat();
    assert_eq!(open(bound).unwrap(), common::PLAINTEXT);
}
