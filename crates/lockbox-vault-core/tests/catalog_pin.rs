//! Catalog pins (DESIGN.md §3): the vault keeps the newest catalog position of an account, which
//! only the holder of `K` can move, only forward, and which never touches the guess counter.

mod common;

use common::*;
use lockbox_crypto::BackupKey;
use lockbox_vault_core::{
    CATALOG_PIN_BODY_LEN, CatalogPin, Outcome, Record, Reply, Request, VaultError,
};
use rand_core::OsRng;

const PW: &[u8] = b"correct horse";

fn pin_request(account: &str, pin: &CatalogPin) -> Request {
    Request::PinCatalog {
        account: acct(account),
        pin: pin.encode().to_vec(),
    }
}

fn pinned(h: &mut Harness, account: &str, pin: &CatalogPin) -> Result<CatalogPin, VaultError> {
    match h.run(pin_request(account, pin))? {
        Reply::Pinned { pin } => Ok(pin),
        other => panic!("unexpected {other:?}"),
    }
}

fn enrolled() -> (Harness, BackupKey) {
    let mut h = Harness::new();
    let k = BackupKey::generate(&mut OsRng);
    h.enroll(&acct("alice"), PW, &k, 10);
    (h, k)
}

fn pin(k: &BackupKey, account: &str, seq: u64, tag: u8) -> CatalogPin {
    CatalogPin::sign(k, &acct(account), seq, [tag; CATALOG_PIN_BODY_LEN])
}

#[test]
fn a_recovery_returns_the_newest_pin_signed_by_k() {
    let (mut h, k) = enrolled();
    let (_, _, none) = h.recover_pinned(&acct("alice"), PW);
    assert_eq!(none, None, "no pin before the first backup");
    assert_eq!(
        pinned(&mut h, "alice", &pin(&k, "alice", 3, 1))
            .unwrap()
            .sequence(),
        3
    );
    assert_eq!(
        pinned(&mut h, "alice", &pin(&k, "alice", 5, 2))
            .unwrap()
            .sequence(),
        5
    );
    let (key, _, got) = h.recover_pinned(&acct("alice"), PW);
    assert_eq!(key.expose(), k.expose());
    assert_eq!(got, Some(pin(&k, "alice", 5, 2)));
}

/// The gateway, or anyone holding the account token, cannot move the pin: not with a pin of
/// another key, not with one of another account, not with a byte changed.
#[test]
fn only_k_moves_the_pin() {
    let (mut h, k) = enrolled();
    let before = h.store[&acct("alice")].clone();
    let stranger = BackupKey::generate(&mut OsRng);
    let mut tampered = pin(&k, "alice", 9, 1).encode();
    tampered[3] ^= 1;
    let attempts = [
        pin(&stranger, "alice", u64::MAX, 1).encode(),
        pin(&k, "bob", 9, 1).encode(),
        tampered,
    ];
    for bytes in attempts {
        let got = h.handle(Request::PinCatalog {
            account: acct("alice"),
            pin: bytes.to_vec(),
        });
        assert!(
            matches!(got, Err(VaultError::BadCatalogPin)),
            "{:?}",
            got.map(|_| ())
        );
    }
    for junk in [vec![], vec![0; 135], vec![0; 137]] {
        let got = h.handle(Request::PinCatalog {
            account: acct("alice"),
            pin: junk,
        });
        assert!(matches!(got, Err(VaultError::Malformed(_))));
    }
    assert_eq!(h.store[&acct("alice")], before, "nothing was written");
}

/// A replayed older pin (a relay holding yesterday's request) neither moves the pin back nor
/// writes anything; the answer names the pin held.
#[test]
fn a_pin_never_moves_back() {
    let (mut h, k) = enrolled();
    pinned(&mut h, "alice", &pin(&k, "alice", 7, 7)).unwrap();
    for old in [pin(&k, "alice", 6, 6), pin(&k, "alice", 7, 9)] {
        match h.handle(pin_request("alice", &old)).unwrap() {
            Outcome::Reply(Reply::Pinned { pin: held }) => {
                assert_eq!(held, pin(&k, "alice", 7, 7));
            }
            other => panic!("an older or equal pin asked for {other:?}"),
        }
    }
    assert_eq!(h.store[&acct("alice")].catalog_pin().unwrap().sequence(), 7);
}

/// Pinning is no door to the counter: a pin written after a spent attempt keeps it spent, and
/// a pin decided before a KE1 committed loses its compare-and-swap instead of undoing it.
#[test]
fn pinning_never_gives_an_attempt_back() {
    let (mut h, k) = enrolled();
    let alice = acct("alice");
    let stale = h
        .handle(pin_request("alice", &pin(&k, "alice", 1, 1)))
        .unwrap();
    h.login_start(&alice, b"wrong").unwrap();
    assert_eq!(h.attempts(&alice), Some((9, 10)));
    assert_eq!(
        h.commit(stale),
        None,
        "the stale pin write must lose its CAS"
    );
    assert_eq!(h.attempts(&alice), Some((9, 10)));
    pinned(&mut h, "alice", &pin(&k, "alice", 1, 1)).unwrap();
    assert_eq!(h.attempts(&alice), Some((9, 10)));
    assert_eq!(h.store[&alice].catalog_pin().unwrap().sequence(), 1);
}

/// A password change keeps K and so its pin; a new enrollment under another K starts without
/// one (the old pin says nothing about the new key's repository).
#[test]
fn a_password_change_keeps_the_pin_and_a_new_key_drops_it() {
    let (mut h, k) = enrolled();
    let alice = acct("alice");
    pinned(&mut h, "alice", &pin(&k, "alice", 4, 4)).unwrap();
    h.enroll(&alice, b"new password", &k, 10);
    let (_, _, kept) = h.recover_pinned(&alice, b"new password");
    assert_eq!(kept.map(|p| p.sequence()), Some(4));

    let k2 = BackupKey::generate(&mut OsRng);
    h.enroll(&alice, PW, &k2, 10);
    let (key, _, dropped) = h.recover_pinned(&alice, PW);
    assert_eq!(key.expose(), k2.expose());
    assert_eq!(dropped, None);
    assert!(matches!(
        h.handle(pin_request("alice", &pin(&k, "alice", 9, 9))),
        Err(VaultError::BadCatalogPin)
    ));
}

#[test]
fn no_pin_without_a_live_record_with_a_catalog_key() {
    let mut h = Harness::new();
    let k = BackupKey::generate(&mut OsRng);
    assert!(matches!(
        h.handle(pin_request("alice", &pin(&k, "alice", 1, 1))),
        Err(VaultError::NoRecord)
    ));
    let mut legacy = legacy_harness();
    let k = BackupKey::from_bytes(LEGACY_KEY);
    assert!(matches!(
        legacy.handle(pin_request("alice", &pin(&k, "alice", 1, 1))),
        Err(VaultError::NoCatalogKey)
    ));
    let (mut h, k) = enrolled();
    // Ten KE1s spend the ten attempts; the eleventh finds none left and destroys the record.
    for _ in 0..10 {
        h.login_start(&acct("alice"), b"wrong").unwrap();
    }
    let (ke1, _) = lockbox_vault_core::client::ClientRecovery::start(
        b"wrong",
        acct("alice"),
        h.identity(),
        &mut OsRng,
    )
    .unwrap();
    let last = h.run(Request::LoginStart {
        account: acct("alice"),
        ke1,
    });
    assert_eq!(last, Ok(Reply::Destroyed));
    assert!(h.store[&acct("alice")].is_destroyed());
    assert!(matches!(
        h.handle(pin_request("alice", &pin(&k, "alice", 1, 1))),
        Err(VaultError::Destroyed)
    ));
}

/// A device reading the pin back trusts K, not the vault: a reply whose pin K did not sign is
/// refused.
#[test]
fn the_device_refuses_a_pin_k_did_not_sign() {
    let (mut h, k) = enrolled();
    pinned(&mut h, "alice", &pin(&k, "alice", 2, 2)).unwrap();
    let (session, ke2, ksf, client) = h.login_start(&acct("alice"), PW).unwrap();
    let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    let reply = h
        .run(Request::LoginFinish {
            account: acct("alice"),
            session: session.as_bytes().to_vec(),
            ke3,
        })
        .unwrap();
    let Reply::Recovered {
        sealed_wrapped_key, ..
    } = reply
    else {
        panic!("{reply:?}")
    };
    let forged = pin(&BackupKey::generate(&mut OsRng), "alice", 99, 9).encode();
    let got = opening.open_pinned(&sealed_wrapped_key, Some(&forged));
    assert!(matches!(
        got,
        Err(lockbox_vault_core::client::ClientError::BadCatalogPin)
    ));
    let stored = Record::decode(&h.store[&acct("alice")].encode()).unwrap();
    assert_eq!(stored.catalog_pin().unwrap().sequence(), 2);
}

/// An older client (no catalog key) re-enrolling over a pinned record would drop the pin and
/// leave every later restore unchecked: refused, and the record keeps its pin.
#[test]
fn an_enrollment_without_a_catalog_key_cannot_drop_a_pin() {
    let (mut h, k) = enrolled();
    let alice = acct("alice");
    pinned(&mut h, "alice", &pin(&k, "alice", 3, 3)).unwrap();
    let (session, enrollment) = h.register_start(&alice, b"other password");
    let mut request = enrollment
        .finish(&k, 10)
        .into_request(alice.clone(), session);
    if let Request::RegisterFinish { catalog_key, .. } = &mut request {
        *catalog_key = None;
    }
    assert!(matches!(
        h.handle(request),
        Err(VaultError::CatalogKeyRequired)
    ));
    assert_eq!(h.store[&alice].catalog_pin().unwrap().sequence(), 3);
}
