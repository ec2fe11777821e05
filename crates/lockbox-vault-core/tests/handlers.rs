//! Every request handler, through the real OPAQUE client: the happy paths, and every error with
//! proof that it asked for no write.

mod common;

use common::*;
use lockbox_crypto::BackupKey;
use lockbox_vault_core::client::{ClientError, ClientRecovery};
use lockbox_vault_core::{
    AccountStatus, Field, Outcome, Reply, Request, SessionId, VaultConfig, VaultError, VaultSecrets,
};
use rand_core::{CryptoRng, OsRng, RngCore};

const PW: &[u8] = b"correct horse battery staple";

fn enrolled(limit: u8) -> (Harness, BackupKey) {
    let mut h = Harness::new();
    let key = BackupKey::generate(&mut OsRng);
    assert_eq!(h.enroll(&acct("alice"), PW, &key, limit), 1);
    (h, key)
}

/// Runs a request that must fail with `want`, and proves nothing was or could be written.
fn expect_err(h: &mut Harness, request: Request, want: VaultError) {
    let before = h.store.clone();
    let sessions = h.vault.sessions().len();
    match h.handle(request) {
        Err(e) => assert_eq!(e, want),
        Ok(outcome) => panic!("expected {want:?}, got {outcome:?}"),
    }
    assert_eq!(h.store, before, "an error changed the store");
    assert!(
        h.vault.sessions().len() <= sessions,
        "an error opened a session"
    );
}

fn login_start(ke1: Vec<u8>) -> Request {
    Request::LoginStart {
        account: acct("alice"),
        ke1,
    }
}

fn login_finish(session: &SessionId, ke3: Vec<u8>) -> Request {
    Request::LoginFinish {
        account: acct("alice"),
        session: session.as_bytes().to_vec(),
        ke3,
    }
}

fn fresh_ke1(h: &Harness, password: &[u8]) -> (Vec<u8>, ClientRecovery) {
    ClientRecovery::start(password, acct("alice"), h.identity(), &mut OsRng).unwrap()
}

#[test]
fn enroll_then_recover_returns_k_and_resets_attempts() {
    let (mut h, key) = enrolled(10);
    let alice = acct("alice");
    assert_eq!(
        h.run(Request::Status {
            account: alice.clone()
        })
        .unwrap(),
        Reply::Status(AccountStatus::Active {
            generation: 1,
            created_at_ms: Some(h.now),
            attempts_left: 10,
            limit: 10
        })
    );
    // Two abandoned logins cost two attempts; a success restores the limit.
    h.login_start(&alice, PW).unwrap();
    h.login_start(&alice, b"wrong").unwrap();
    assert_eq!(h.attempts(&alice), Some((8, 10)));
    let (got, _) = h.recover(&alice, PW);
    assert_eq!(got, key);
    assert_eq!(h.attempts(&alice), Some((10, 10)));
}

#[test]
fn ke2_is_withheld_until_the_decrement_is_durable() {
    let (mut h, _) = enrolled(10);
    let (ke1, _) = fresh_ke1(&h, PW);
    let outcome = h.handle(login_start(ke1)).unwrap();
    let Outcome::WriteThenReply { write, pending } = outcome else {
        panic!("KE1 must require a write first")
    };
    assert_eq!(write.record().attempts(), Some((9, 10)));
    assert_eq!(write.prior().and_then(|r| r.attempts()), Some((10, 10)));
    assert_eq!(
        h.vault.sessions().len(),
        0,
        "no session exists before the write is durable"
    );
    // The shell crashes before the commit: the KE2 dies with it, nothing was spent.
    drop((write, pending));
    h.crash();
    assert_eq!(h.attempts(&acct("alice")), Some((10, 10)));
}

#[test]
fn proofs_only_open_their_own_write() {
    let (mut h, _) = enrolled(10);
    let start = |h: &mut Harness| {
        let (ke1, _) = fresh_ke1(h, PW);
        match h.handle(login_start(ke1)).unwrap() {
            Outcome::WriteThenReply { write, pending } => (write, pending),
            other => panic!("{other:?}"),
        }
    };
    let (w1, _p1) = start(&mut h);
    let (_w2, p2) = start(&mut h);
    assert_eq!(
        h.vault.release(p2, w1.committed()).unwrap_err(),
        VaultError::ProofMismatch
    );
    // A proof from before a restart does not open a reply of the new process either.
    let (w3, _p3) = start(&mut h);
    h.crash();
    let (_w4, p4) = start(&mut h);
    assert_eq!(
        h.vault.release(p4, w3.committed()).unwrap_err(),
        VaultError::ProofMismatch
    );
}

#[test]
fn a_correct_ke3_that_loses_a_race_succeeds_when_rerun() {
    let (mut h, key) = enrolled(10);
    let alice = acct("alice");
    let (session, ke2, ksf, client) = h.login_start(&alice, PW).unwrap();
    let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    let request = login_finish(&session, ke3);
    let Outcome::WriteThenReply { write, pending } = h.handle(request.clone()).unwrap() else {
        panic!("a correct KE3 resets the counter with a write")
    };
    // A guesser's KE1 commits first: the KE3's write no longer applies to the stored record.
    h.login_start(&alice, b"guess").unwrap();
    assert_ne!(h.store.get(&alice), write.prior(), "the CAS must fail");
    h.vault.abandon(pending, write.rejected()).unwrap();
    let Reply::Recovered {
        sealed_wrapped_key, ..
    } = h.run(request.clone()).unwrap()
    else {
        panic!("the re-run KE3 must recover")
    };
    assert_eq!(opening.open(&sealed_wrapped_key).unwrap(), key);
    assert_eq!(h.attempts(&alice), Some((10, 10)));
    // The login was used once: the same KE3 again only repeats the reply, with no write.
    match h.handle(request).unwrap() {
        Outcome::Reply(Reply::Recovered {
            sealed_wrapped_key: again,
            ..
        }) => assert_eq!(again, sealed_wrapped_key),
        other => panic!("expected the same reply, got {other:?}"),
    }
    assert_eq!(h.attempts(&alice), Some((10, 10)));
}

#[test]
fn wrong_password_is_detected_by_the_client_and_costs_an_attempt() {
    let (mut h, _) = enrolled(10);
    let (_, ke2, ksf, client) = h.login_start(&acct("alice"), b"guess").unwrap();
    assert_eq!(
        client.finish(&ke2, ksf, &mut OsRng).unwrap_err(),
        ClientError::WrongPassword
    );
    assert_eq!(h.attempts(&acct("alice")), Some((9, 10)));
}

#[test]
fn forged_ke3_is_wrong_without_a_write_until_the_last_attempt_destroys() {
    let (mut h, _) = enrolled(2);
    let (s1, ..) = h.login_start(&acct("alice"), b"x").unwrap();
    let before = h.store.clone();
    match h.handle(login_finish(&s1, forged_ke3())).unwrap() {
        Outcome::Reply(Reply::Wrong { attempts_left: 1 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.store, before,
        "a wrong KE3 needs no write: KE1 already spent the attempt"
    );
    let (s2, ..) = h.login_start(&acct("alice"), b"y").unwrap();
    assert_eq!(h.attempts(&acct("alice")), Some((0, 2)));
    assert_eq!(
        h.run(login_finish(&s2, forged_ke3())).unwrap(),
        Reply::Destroyed
    );
    let rec = h.store.get(&acct("alice")).unwrap();
    assert!(rec.is_destroyed());
    assert_eq!(rec.generation(), 2);
    assert_eq!(rec.wrapped_key(), None);
}

#[test]
fn abandoned_logins_exhaust_and_destroy_the_record() {
    let (mut h, _) = enrolled(3);
    for left in [2, 1, 0] {
        h.login_start(&acct("alice"), b"x").unwrap();
        assert_eq!(h.attempts(&acct("alice")), Some((left, 3)));
    }
    let (ke1, _) = fresh_ke1(&h, PW);
    assert_eq!(h.run(login_start(ke1)).unwrap(), Reply::Destroyed);
    assert!(h.store[&acct("alice")].is_destroyed());
    let (ke1, _) = fresh_ke1(&h, PW);
    expect_err(&mut h, login_start(ke1), VaultError::Destroyed);
    h.crash();
    let (ke1, _) = fresh_ke1(&h, PW);
    expect_err(&mut h, login_start(ke1), VaultError::Destroyed);
}

#[test]
fn unknown_account() {
    let mut h = Harness::new();
    let (ke1, _) = fresh_ke1(&h, PW);
    expect_err(&mut h, login_start(ke1), VaultError::NoRecord);
    assert_eq!(
        h.run(Request::Status {
            account: acct("alice")
        })
        .unwrap(),
        Reply::Status(AccountStatus::Absent)
    );
}

#[test]
fn replayed_ke1_is_refused_without_spending_once_its_login_is_over() {
    let (mut h, _) = enrolled(10);
    let (ke1, _) = fresh_ke1(&h, PW);
    let Reply::LoginStarted { session, .. } = h.run(login_start(ke1.clone())).unwrap() else {
        panic!("expected KE2")
    };
    assert_eq!(h.attempts(&acct("alice")), Some((9, 10)));
    h.run(login_finish(&session, forged_ke3())).unwrap();
    expect_err(&mut h, login_start(ke1), VaultError::ReplayedKe1);
    assert_eq!(h.attempts(&acct("alice")), Some((9, 10)));
}

#[test]
fn replayed_ke3_repeats_its_reply_until_the_session_is_gone() {
    let (mut h, _) = enrolled(10);
    let (session, ke2, ksf, client) = h.login_start(&acct("alice"), PW).unwrap();
    let (ke3, _) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    let first = h.run(login_finish(&session, ke3.clone())).unwrap();
    // The session is now authenticated: the same KE3 only gets the same reply, with no write.
    match h.handle(login_finish(&session, ke3.clone())).unwrap() {
        Outcome::Reply(again) => assert_eq!(again, first),
        other => panic!("expected the same reply without a write, got {other:?}"),
    }
    h.crash();
    expect_err(&mut h, login_finish(&session, ke3), VaultError::NoSession);
}

#[test]
fn expired_session() {
    let (mut h, _) = enrolled(10);
    let (session, ke2, ksf, client) = h.login_start(&acct("alice"), PW).unwrap();
    let (ke3, _) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    h.now += 60_000;
    expect_err(
        &mut h,
        login_finish(&session, ke3.clone()),
        VaultError::SessionExpired,
    );
    expect_err(&mut h, login_finish(&session, ke3), VaultError::NoSession);
    assert_eq!(
        h.attempts(&acct("alice")),
        Some((9, 10)),
        "the expired login's attempt stays spent"
    );
}

#[test]
fn ke3_for_another_accounts_session() {
    let (mut h, _) = enrolled(10);
    h.enroll(&acct("mallory"), b"m", &BackupKey::generate(&mut OsRng), 10);
    let (session, ke2, ksf, client) = h.login_start(&acct("alice"), PW).unwrap();
    let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    let stolen = Request::LoginFinish {
        account: acct("mallory"),
        session: session.as_bytes().to_vec(),
        ke3: ke3.clone(),
    };
    expect_err(&mut h, stolen, VaultError::SessionAccountMismatch);
    // Alice's session was not cancelled by the misrouted message.
    let Reply::Recovered {
        sealed_wrapped_key, ..
    } = h.run(login_finish(&session, ke3)).unwrap()
    else {
        panic!()
    };
    opening.open(&sealed_wrapped_key).unwrap();
}

#[test]
fn garbage_in_every_field_is_malformed() {
    let (mut h, _) = enrolled(10);
    let alice = acct("alice");
    assert_eq!(
        lockbox_vault_core::AccountId::new(&[]).unwrap_err(),
        VaultError::Malformed(Field::Account)
    );
    assert_eq!(
        lockbox_vault_core::AccountId::new(&[1; 65]).unwrap_err(),
        VaultError::Malformed(Field::Account)
    );
    let (session, _, _, _) = h.login_start(&alice, PW).unwrap();
    let sid = session.as_bytes().to_vec();
    let junk = |n: usize| {
        let mut v = vec![0xFFu8; n];
        v[0] = 0x01;
        v
    };
    let cases = vec![
        (
            Request::RegisterStart {
                account: alice.clone(),
                registration_request: junk(32),
            },
            Field::RegistrationRequest,
        ),
        (
            Request::RegisterStart {
                account: alice.clone(),
                registration_request: vec![],
            },
            Field::RegistrationRequest,
        ),
        (
            Request::LoginStart {
                account: alice.clone(),
                ke1: junk(96),
            },
            Field::Ke1,
        ),
        (
            Request::LoginStart {
                account: alice.clone(),
                ke1: vec![0; 95],
            },
            Field::Ke1,
        ),
        (
            Request::LoginFinish {
                account: alice.clone(),
                session: vec![1; 3],
                ke3: forged_ke3(),
            },
            Field::Session,
        ),
        (
            Request::LoginFinish {
                account: alice.clone(),
                session: sid.clone(),
                ke3: vec![0; 65],
            },
            Field::Ke3,
        ),
        (
            Request::ChangePassword {
                account: alice.clone(),
                session: vec![],
                registration_request: junk(32),
            },
            Field::Session,
        ),
        (
            Request::ChangePassword {
                account: alice.clone(),
                session: sid.clone(),
                registration_request: junk(32),
            },
            Field::RegistrationRequest,
        ),
        (
            Request::Delete {
                account: alice.clone(),
                session: vec![0; 17],
            },
            Field::Session,
        ),
    ];
    for (request, field) in cases {
        expect_err(&mut h, request, VaultError::Malformed(field));
    }
    // Register finish: a real registration session, then garbage in each field.
    let (reg, pending) = h.register_start(&alice, PW);
    let good = pending.finish(&BackupKey::generate(&mut OsRng), 10);
    let finish =
        |session: Vec<u8>, upload: Vec<u8>, wrapped_key: Vec<u8>, attempt_limit: u8, ksf| {
            Request::RegisterFinish {
                account: alice.clone(),
                session,
                upload,
                wrapped_key,
                attempt_limit,
                ksf,
                catalog_key: None,
            }
        };
    let r = reg.as_bytes().to_vec();
    let u = good.upload.clone();
    let w = good.wrapped_key.clone();
    let cases = vec![
        (
            finish(vec![9; 15], u.clone(), w.clone(), 10, KSF),
            VaultError::Malformed(Field::Session),
        ),
        (
            finish(r.clone(), junk(192), w.clone(), 10, KSF),
            VaultError::Malformed(Field::RegistrationUpload),
        ),
        (
            finish(r.clone(), u[..191].to_vec(), w.clone(), 10, KSF),
            VaultError::Malformed(Field::RegistrationUpload),
        ),
        (
            finish(r.clone(), u.clone(), vec![], 10, KSF),
            VaultError::Malformed(Field::WrappedKey),
        ),
        (
            finish(r.clone(), u.clone(), vec![0; 97], 10, KSF),
            VaultError::Malformed(Field::WrappedKey),
        ),
        (
            finish(r.clone(), u.clone(), w.clone(), 0, KSF),
            VaultError::AttemptLimitOutOfRange(0),
        ),
        (
            finish(r.clone(), u.clone(), w.clone(), 101, KSF),
            VaultError::AttemptLimitOutOfRange(101),
        ),
    ];
    for (request, want) in cases {
        expect_err(&mut h, request, want);
    }
    // The registration session survived all that garbage and still works.
    assert!(matches!(
        h.run(good.into_request(alice.clone(), reg)).unwrap(),
        Reply::Enrolled { generation: 2 }
    ));
}

#[test]
fn weak_client_ksf_is_refused_by_policy() {
    let secrets = VaultSecrets::generate(&mut OsRng);
    let mut h = Harness::with_config(secrets, VaultConfig::new(SERVER_ID));
    let (reg, pending) = h.register_start(&acct("alice"), PW);
    let upload = pending.finish(&BackupKey::generate(&mut OsRng), 10);
    expect_err(
        &mut h,
        upload.into_request(acct("alice"), reg),
        VaultError::KsfBelowPolicy,
    );
}

#[test]
fn a_record_of_another_account_is_a_shell_bug() {
    let (mut h, _) = enrolled(10);
    let alices = h.store[&acct("alice")].clone();
    let err = h
        .vault
        .handle(
            Some(&alices),
            Request::Status {
                account: acct("bob"),
            },
            &mut OsRng,
            h.now,
        )
        .unwrap_err();
    assert_eq!(err, VaultError::RecordAccountMismatch);
}

#[test]
fn session_table_is_bounded() {
    let secrets = VaultSecrets::generate(&mut OsRng);
    let mut config = test_config();
    config.max_sessions = 2;
    let mut h = Harness::with_config(secrets, config);
    h.register_start(&acct("a"), PW);
    h.register_start(&acct("b"), PW);
    let (msg, _) = lockbox_vault_core::client::ClientEnrollment::start(
        PW,
        acct("c"),
        h.identity(),
        &mut OsRng,
    )
    .unwrap();
    let req = Request::RegisterStart {
        account: acct("c"),
        registration_request: msg,
    };
    expect_err(&mut h, req.clone(), VaultError::Busy);
    h.now += 60_000;
    assert!(h.run(req).is_ok(), "expired sessions make room");
}

#[test]
fn reenrollment_replaces_the_record_and_the_old_password() {
    let (mut h, _) = enrolled(10);
    let alice = acct("alice");
    h.login_start(&alice, b"x").unwrap();
    let (stale_session, ke2, ksf, client) = h.login_start(&alice, PW).unwrap();
    let new_key = BackupKey::generate(&mut OsRng);
    assert_eq!(h.enroll(&alice, b"new password", &new_key, 5), 2);
    assert_eq!(
        h.attempts(&alice),
        Some((5, 5)),
        "a new enrollment starts with its own full limit"
    );
    // A login begun against generation 1 cannot finish against generation 2.
    let (ke3, _) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    expect_err(
        &mut h,
        login_finish(&stale_session, ke3),
        VaultError::NoSession,
    );
    let (_, ke2, ksf, client) = h.login_start(&alice, PW).unwrap();
    assert_eq!(
        client.finish(&ke2, ksf, &mut OsRng).unwrap_err(),
        ClientError::WrongPassword
    );
    assert_eq!(h.recover(&alice, b"new password").0, new_key);
}

#[test]
fn an_old_enrollment_cannot_resurrect_a_destroyed_record() {
    let (mut h, _) = enrolled(10);
    let alice = acct("alice");
    // An enrollment is started, then the record is deleted (generation 1 -> 2).
    let (old_reg, old_pending) = h.register_start(&alice, b"attacker");
    let (_, auth) = h.recover(&alice, PW);
    let delete = Request::Delete {
        account: alice.clone(),
        session: auth.as_bytes().to_vec(),
    };
    assert_eq!(h.run(delete.clone()).unwrap(), Reply::Deleted);
    assert_eq!(h.store[&alice].generation(), 2);
    expect_err(&mut h, delete, VaultError::NoSession);
    // Finishing the old enrollment is refused; a new one works and gets generation 3.
    let upload = old_pending.finish(&BackupKey::generate(&mut OsRng), 10);
    expect_err(
        &mut h,
        upload.clone().into_request(alice.clone(), old_reg),
        VaultError::StaleGeneration,
    );
    expect_err(
        &mut h,
        upload.into_request(alice.clone(), old_reg),
        VaultError::NoSession,
    );
    assert!(h.store[&alice].is_destroyed());
    let key = BackupKey::generate(&mut OsRng);
    assert_eq!(h.enroll(&alice, b"fresh", &key, 10), 3);
    assert_eq!(h.recover(&alice, b"fresh").0, key);
}

#[test]
fn change_password_and_delete_need_a_successful_login() {
    let (mut h, key) = enrolled(10);
    let alice = acct("alice");
    let (msg, client) = lockbox_vault_core::client::ClientEnrollment::start(
        b"new pw",
        alice.clone(),
        h.identity(),
        &mut OsRng,
    )
    .unwrap();
    // A login session that has not finished is not authenticated.
    let (unauth, ..) = h.login_start(&alice, PW).unwrap();
    let change = |s: &SessionId| Request::ChangePassword {
        account: alice.clone(),
        session: s.as_bytes().to_vec(),
        registration_request: msg.clone(),
    };
    expect_err(&mut h, change(&unauth), VaultError::SessionKindMismatch);
    expect_err(
        &mut h,
        Request::Delete {
            account: alice.clone(),
            session: unauth.as_bytes().to_vec(),
        },
        VaultError::SessionKindMismatch,
    );
    expect_err(
        &mut h,
        change(&SessionId::parse(&[7; 16]).unwrap()),
        VaultError::NoSession,
    );

    let (_, auth) = h.recover(&alice, PW);
    let Reply::RegistrationStarted { session, response } = h.run(change(&auth)).unwrap() else {
        panic!()
    };
    expect_err(&mut h, change(&auth), VaultError::NoSession);
    let upload = client
        .finish(
            &response,
            &key,
            lockbox_vault_core::AttemptLimit::DEFAULT,
            KSF,
            &mut OsRng,
        )
        .unwrap();
    assert_eq!(
        h.run(upload.into_request(alice.clone(), session)).unwrap(),
        Reply::Enrolled { generation: 2 }
    );
    assert_eq!(
        h.recover(&alice, b"new pw").0,
        key,
        "same K under the new password"
    );
}

#[test]
fn encoded_records_contain_neither_k_nor_the_password() {
    let (mut h, key) = enrolled(10);
    let alice = acct("alice");
    let mut encodings = vec![h.store[&alice].encode()];
    h.recover(&alice, PW);
    encodings.push(h.store[&alice].encode());
    h.login_start(&alice, PW).unwrap();
    encodings.push(h.store[&alice].encode());
    for bytes in encodings {
        assert!(
            !bytes.windows(PW.len()).any(|w| w == PW),
            "password in record"
        );
        // Not even an 8-byte piece of K appears.
        for piece in key.expose().chunks(8) {
            assert!(!bytes.windows(8).any(|w| w == piece), "part of K in record");
        }
    }
}

/// The OS RNG, counting the bytes drawn: a request refused before any protocol work draws none.
struct CountingRng(usize);

impl RngCore for CountingRng {
    fn next_u32(&mut self) -> u32 {
        self.0 += 4;
        OsRng.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0 += 8;
        OsRng.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0 += dest.len();
        OsRng.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0 += dest.len();
        OsRng.try_fill_bytes(dest)
    }
}

impl CryptoRng for CountingRng {}

/// Handles `request` with a counting RNG; returns the result and the bytes drawn.
fn handle_counting(h: &mut Harness, request: Request) -> (Result<Outcome, VaultError>, usize) {
    let stored = h.store.get(request.account()).cloned();
    let mut rng = CountingRng(0);
    let result = h.vault.handle(stored.as_ref(), request, &mut rng, h.now);
    (result, rng.0)
}

fn registration_request(h: &Harness, account: &str) -> Request {
    let (msg, _) = lockbox_vault_core::client::ClientEnrollment::start(
        PW,
        acct(account),
        h.identity(),
        &mut OsRng,
    )
    .unwrap();
    Request::RegisterStart {
        account: acct(account),
        registration_request: msg,
    }
}

#[test]
fn one_account_cannot_hold_more_than_its_session_quota() {
    assert_eq!(VaultConfig::new(SERVER_ID).max_sessions_per_account, 16);
    let (mut h, _) = enrolled(100);
    let alice = acct("alice");
    for _ in 0..16 {
        h.login_start(&alice, b"guess").unwrap();
    }
    assert_eq!(h.vault.sessions().open_for(&alice), 16);
    let before = h.store.clone();

    // Refused before any OPRF or key-exchange work: no salt, no session id, no KE2 nonce drawn,
    // no write, no session, and no attempt spent.
    for request in [
        registration_request(&h, "alice"),
        login_start(fresh_ke1(&h, PW).0),
    ] {
        let (result, drawn) = handle_counting(&mut h, request);
        assert_eq!(result.unwrap_err(), VaultError::AccountBusy);
        assert_eq!(drawn, 0, "refused after drawing randomness");
    }
    assert_eq!(h.store, before);
    assert_eq!(h.attempts(&alice), Some((84, 100)));
    assert_eq!(h.vault.sessions().open_for(&alice), 16);

    // Another account is not Busy because of alice.
    assert!(matches!(
        h.run(registration_request(&h, "bob")).unwrap(),
        Reply::RegistrationStarted { .. }
    ));
    // Alice's expired sessions make room again.
    h.now += 60_000;
    assert!(h.run(registration_request(&h, "alice")).is_ok());
    assert_eq!(h.vault.sessions().open_for(&alice), 1);
}

#[test]
fn change_password_over_quota_keeps_the_authenticated_session() {
    let secrets = VaultSecrets::generate(&mut OsRng);
    let mut config = test_config();
    config.max_sessions_per_account = 2;
    let mut h = Harness::with_config(secrets, config);
    let alice = acct("alice");
    let key = BackupKey::generate(&mut OsRng);
    h.enroll(&alice, PW, &key, 10);
    let (_, auth) = h.recover(&alice, PW);
    h.register_start(&alice, b"other");
    let Request::RegisterStart {
        registration_request,
        ..
    } = registration_request(&h, "alice")
    else {
        unreachable!()
    };
    let change = Request::ChangePassword {
        account: alice.clone(),
        session: auth.as_bytes().to_vec(),
        registration_request,
    };
    expect_err(&mut h, change, VaultError::AccountBusy);
    let delete = Request::Delete {
        account: alice.clone(),
        session: auth.as_bytes().to_vec(),
    };
    assert_eq!(
        h.run(delete).unwrap(),
        Reply::Deleted,
        "the refused ChangePassword did not consume the authenticated session"
    );
}

#[test]
fn status_shows_when_the_record_was_replaced() {
    let (mut h, _) = enrolled(10);
    let alice = acct("alice");
    let status = |h: &mut Harness| match h.run(Request::Status {
        account: alice.clone(),
    }) {
        Ok(Reply::Status(s)) => s,
        other => panic!("{other:?}"),
    };
    let first = h.now;
    let AccountStatus::Active {
        generation: 1,
        created_at_ms: Some(t1),
        ..
    } = status(&mut h)
    else {
        panic!()
    };
    assert_eq!(t1, first);
    h.now += 5_000;
    h.login_start(&alice, PW).unwrap();
    assert!(
        matches!(
            status(&mut h),
            AccountStatus::Active { generation: 1, created_at_ms: Some(t), .. } if t == first
        ),
        "a login does not change the creation time"
    );
    h.enroll(
        &alice,
        b"someone else",
        &BackupKey::generate(&mut OsRng),
        10,
    );
    assert_eq!(
        status(&mut h),
        AccountStatus::Active {
            generation: 2,
            created_at_ms: Some(first + 5_000),
            attempts_left: 10,
            limit: 10
        }
    );
}

#[test]
fn request_debug_shows_lengths_not_bytes() {
    let session = vec![0xC1; 16];
    let requests = [
        Request::RegisterStart {
            account: acct("alice"),
            registration_request: vec![0xC1; 32],
        },
        Request::RegisterFinish {
            account: acct("alice"),
            session: session.clone(),
            upload: vec![0xC1; 192],
            wrapped_key: vec![0xC1; 60],
            attempt_limit: 10,
            ksf: KSF,
            catalog_key: None,
        },
        Request::LoginStart {
            account: acct("alice"),
            ke1: vec![0xC1; 96],
        },
        Request::LoginFinish {
            account: acct("alice"),
            session: session.clone(),
            ke3: vec![0xC1; 64],
        },
        Request::ChangePassword {
            account: acct("alice"),
            session: session.clone(),
            registration_request: vec![0xC1; 32],
        },
        Request::Delete {
            account: acct("alice"),
            session,
        },
    ];
    for request in requests {
        let shown = format!("{request:?}");
        assert!(
            !shown.contains("193") && !shown.to_lowercase().contains("c1"),
            "payload bytes in {shown}"
        );
        assert!(shown.contains(" bytes>"), "{shown}");
        assert!(shown.contains("AccountId(616c696365)"), "{shown}");
    }
    let finish = format!(
        "{:?}",
        Request::RegisterFinish {
            account: acct("a"),
            session: vec![0; 16],
            upload: vec![0; 192],
            wrapped_key: vec![0; 60],
            attempt_limit: 10,
            ksf: KSF,
            catalog_key: None,
        }
    );
    for part in [
        "upload: <192 bytes>",
        "wrapped_key: <60 bytes>",
        "attempt_limit: 10",
    ] {
        assert!(finish.contains(part), "{finish}");
    }
    let upload = lockbox_vault_core::client::EnrollmentUpload {
        upload: vec![0xC1; 192],
        wrapped_key: vec![0xC1; 60],
        attempt_limit: 10,
        ksf: KSF,
        catalog_key: lockbox_vault_core::CatalogKey::from_bytes([0xC1; 32]),
    };
    let shown = format!("{upload:?}");
    assert!(!shown.contains("193"), "{shown}");
    assert!(shown.contains("upload_len: 192") && shown.contains("wrapped_key_len: 60"));
}

/// A record written before issue 12 (version 1) still recovers after the upgrade, stays version 1
/// while only its counter changes, and a ChangePassword (even to the same password) replaces it
/// with a salted version-2 record.
#[test]
fn a_version_1_record_still_recovers_and_change_password_upgrades_it() {
    let mut h = legacy_harness();
    let alice = acct("alice");
    assert_eq!(
        h.run(Request::Status {
            account: alice.clone()
        })
        .unwrap(),
        Reply::Status(AccountStatus::Active {
            generation: 1,
            created_at_ms: None,
            attempts_left: 10,
            limit: 10
        })
    );
    h.login_start(&alice, b"wrong").unwrap();
    let (key, auth) = h.recover(&alice, LEGACY_PASSWORD);
    assert_eq!(key.expose(), &LEGACY_KEY);
    assert_eq!(h.store[&alice].format_version(), 1);
    assert_eq!(h.attempts(&alice), Some((10, 10)));

    let (msg, client) = lockbox_vault_core::client::ClientEnrollment::start(
        LEGACY_PASSWORD,
        alice.clone(),
        h.identity(),
        &mut OsRng,
    )
    .unwrap();
    let Reply::RegistrationStarted { session, response } = h
        .run(Request::ChangePassword {
            account: alice.clone(),
            session: auth.as_bytes().to_vec(),
            registration_request: msg,
        })
        .unwrap()
    else {
        panic!()
    };
    let limit = lockbox_vault_core::AttemptLimit::DEFAULT;
    let upload = client
        .finish(&response, &key, limit, KSF, &mut OsRng)
        .unwrap();
    h.run(upload.into_request(alice.clone(), session)).unwrap();
    let record = &h.store[&alice];
    assert_eq!((record.format_version(), record.generation()), (3, 2));
    assert_eq!(
        record.catalog_key(),
        Some(&lockbox_vault_core::CatalogKey::of(&key)),
        "the new registration carries the catalog key"
    );
    assert_eq!(record.created_at_ms(), Some(h.now));
    assert_eq!(h.recover(&alice, LEGACY_PASSWORD).0.expose(), &LEGACY_KEY);
}

/// Session-table exhaustion (issue 12, item 4): one account opening registrations as fast as it
/// can must not take every slot of the table.
#[test]
fn one_account_filling_the_table_does_not_make_another_busy() {
    let secrets = VaultSecrets::generate(&mut OsRng);
    let mut config = test_config();
    config.max_sessions = 2 * config.max_sessions_per_account;
    let mut h = Harness::with_config(secrets, config.clone());
    let mut refusals = vec![];
    for _ in 0..config.max_sessions {
        if let Err(e) = h.handle(registration_request(&h, "mallory")) {
            refusals.push(e);
        }
    }
    let bob = h.handle(registration_request(&h, "bob"));
    assert!(
        matches!(bob, Ok(Outcome::Reply(Reply::RegistrationStarted { .. }))),
        "bob: {bob:?} after mallory's refusals {refusals:?}"
    );
    // Her registrations evict each other: she never holds more than two slots.
    assert_eq!(refusals, vec![]);
    assert_eq!(
        h.vault.sessions().open_for(&acct("mallory")),
        lockbox_vault_core::MAX_REGISTRATIONS_PER_ACCOUNT
    );
}

/// Registrations cost no attempt, so a token holder could open them without end to fill the
/// account's quota and lock its owner out of logins (adversarial review of issue 12): an
/// account keeps at most two registration sessions, a new one evicts the oldest, and the
/// owner's login still starts.
#[test]
fn registrations_never_crowd_out_the_owners_login() {
    let (mut h, key) = enrolled(10);
    let alice = acct("alice");
    let (first, pending) = h.register_start(&alice, b"mallory");
    for _ in 0..40 {
        h.register_start(&alice, b"mallory");
        h.now += 1;
    }
    assert_eq!(
        h.vault.sessions().open_for(&alice),
        lockbox_vault_core::MAX_REGISTRATIONS_PER_ACCOUNT
    );
    assert_eq!(h.recover(&alice, PW).0, key);
    // The evicted registration cannot be finished, and the record is still alice's.
    let finished = h.register_finish(&alice, first, pending, &BackupKey::generate(&mut OsRng), 10);
    assert_eq!(finished, Err(VaultError::NoSession));
    assert_eq!(h.recover(&alice, PW).0, key);
}

/// Every successful login leaves an authenticated session (usable once for ChangePassword or
/// Delete) for the TTL; a new one replaces the account's previous one, so a user who recovers
/// again and again within a minute never fills the account's quota.
#[test]
fn repeated_recoveries_hold_one_authenticated_session() {
    let (mut h, key) = enrolled(10);
    let alice = acct("alice");
    for _ in 0..40 {
        assert_eq!(h.recover(&alice, PW).0, key);
        h.now += 1;
    }
    assert_eq!(h.vault.sessions().open_for(&alice), 1);
}
