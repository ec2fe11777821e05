//! Retries after a lost reply (DESIGN.md §4): a repeated KE1 or KE3 gets the reply already
//! released for it, byte for byte, spends nothing and evaluates nothing; any other repeat is
//! refused as before.

mod common;

use common::*;
use lockbox_crypto::BackupKey;
use lockbox_vault_core::client::ClientRecovery;
use lockbox_vault_core::{Outcome, Reply, Request, SessionId, VaultError};
use rand_core::OsRng;

const PW: &[u8] = b"correct horse battery staple";

fn enrolled(limit: u8) -> (Harness, BackupKey) {
    let mut h = Harness::new();
    let key = BackupKey::generate(&mut OsRng);
    h.enroll(&acct("alice"), PW, &key, limit);
    (h, key)
}

fn login_start(ke1: &[u8]) -> Request {
    Request::LoginStart {
        account: acct("alice"),
        ke1: ke1.to_vec(),
    }
}

fn login_finish(session: &SessionId, ke3: &[u8]) -> Request {
    Request::LoginFinish {
        account: acct("alice"),
        session: session.as_bytes().to_vec(),
        ke3: ke3.to_vec(),
    }
}

fn ke1(h: &Harness, password: &[u8]) -> (Vec<u8>, ClientRecovery) {
    ClientRecovery::start(password, acct("alice"), h.identity(), &mut OsRng).unwrap()
}

/// Handles `request`, which must be answered at once, with no write.
fn repeat(h: &mut Harness, request: Request) -> Reply {
    let before = h.store.clone();
    let sessions = h.vault.sessions().len();
    match h.handle(request) {
        Ok(Outcome::Reply(reply)) => {
            assert_eq!(h.store, before, "a repeat changed the store");
            assert_eq!(
                h.vault.sessions().len(),
                sessions,
                "a repeat opened a session"
            );
            reply
        }
        other => panic!("expected a repeated reply without a write, got {other:?}"),
    }
}

/// Handles `request`, which must be refused with `want` and change nothing.
fn refused(h: &mut Harness, request: Request, want: VaultError) {
    let before = h.store.clone();
    match h.handle(request) {
        Err(e) => assert_eq!(e, want),
        Ok(outcome) => panic!("expected {want:?}, got {outcome:?}"),
    }
    assert_eq!(h.store, before, "a refusal changed the store");
}

fn started(reply: &Reply) -> (SessionId, Vec<u8>, lockbox_vault_core::KsfParams) {
    let Reply::LoginStarted {
        session, ke2, ksf, ..
    } = reply
    else {
        panic!("expected KE2, got {reply:?}")
    };
    (*session, ke2.clone(), *ksf)
}

#[test]
fn a_repeated_ke1_gets_the_same_ke2_and_spends_nothing() {
    let (mut h, key) = enrolled(10);
    let (ke1, client) = ke1(&h, PW);
    let first = h.run(login_start(&ke1)).unwrap();
    assert_eq!(h.attempts(&acct("alice")), Some((9, 10)));
    for _ in 0..3 {
        assert_eq!(
            repeat(&mut h, login_start(&ke1)),
            first,
            "not the same reply"
        );
    }
    assert_eq!(h.attempts(&acct("alice")), Some((9, 10)), "a repeat spent");
    // The login goes on from the repeated KE2.
    let (session, ke2, ksf) = started(&first);
    let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    let Reply::Recovered {
        sealed_wrapped_key, ..
    } = h.run(login_finish(&session, &ke3)).unwrap()
    else {
        panic!("login did not finish")
    };
    assert_eq!(opening.open(&sealed_wrapped_key).unwrap(), key);
}

/// Other KE1s spent attempts meanwhile and pushed this one out of the ring of recent KE1s: its
/// login session still answers a repeat with the stored reply, not with a fresh evaluation.
#[test]
fn a_repeated_ke1_is_answered_from_its_session_even_after_the_ring_forgot_it() {
    let (mut h, _) = enrolled(10);
    let (ke1_bytes, _) = ke1(&h, PW);
    let first = h.run(login_start(&ke1_bytes)).unwrap();
    for _ in 0..lockbox_vault_core::KE1_RING_LEN {
        let (other, _) = ke1(&h, b"guess");
        h.run(login_start(&other)).unwrap();
    }
    let left = h.attempts(&acct("alice"));
    assert_eq!(repeat(&mut h, login_start(&ke1_bytes)), first);
    assert_eq!(h.attempts(&acct("alice")), left);
}

#[test]
fn a_repeated_ke1_is_refused_once_its_login_finished_or_expired() {
    let (mut h, _) = enrolled(10);
    // Finished (a wrong KE3).
    let (finished, _) = ke1(&h, PW);
    let (session, ..) = started(&h.run(login_start(&finished)).unwrap());
    h.run(login_finish(&session, &forged_ke3())).unwrap();
    refused(&mut h, login_start(&finished), VaultError::ReplayedKe1);
    // Finished (recovered).
    let (recovered, client) = ke1(&h, PW);
    let (session, ke2, ksf) = started(&h.run(login_start(&recovered)).unwrap());
    let (ke3, _) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    h.run(login_finish(&session, &ke3)).unwrap();
    refused(&mut h, login_start(&recovered), VaultError::ReplayedKe1);
    // Expired.
    let (expired, _) = ke1(&h, PW);
    h.run(login_start(&expired)).unwrap();
    h.now += h.vault.config().session_ttl_ms;
    refused(&mut h, login_start(&expired), VaultError::ReplayedKe1);
    // Lost in a crash.
    let (crashed, _) = ke1(&h, PW);
    h.run(login_start(&crashed)).unwrap();
    h.crash();
    refused(&mut h, login_start(&crashed), VaultError::ReplayedKe1);
    assert_eq!(h.attempts(&acct("alice")), Some((8, 10)));
}

/// A repeat never outlives its record: after a re-enrollment (a new generation) or once the
/// record is destroyed, the open login's stored KE2 is not handed out again.
#[test]
fn a_repeated_ke1_is_refused_for_another_generation_or_a_destroyed_record() {
    let (mut h, _) = enrolled(10);
    let (ke1_bytes, _) = ke1(&h, PW);
    h.run(login_start(&ke1_bytes)).unwrap();
    h.enroll(&acct("alice"), PW, &BackupKey::generate(&mut OsRng), 10);
    refused(&mut h, login_start(&ke1_bytes), VaultError::ReplayedKe1);

    let (mut h, _) = enrolled(1);
    let (last, _) = ke1(&h, PW);
    h.run(login_start(&last)).unwrap();
    assert_eq!(h.attempts(&acct("alice")), Some((0, 1)));
    let (destroying, _) = ke1(&h, b"guess");
    assert_eq!(h.run(login_start(&destroying)).unwrap(), Reply::Destroyed);
    refused(&mut h, login_start(&last), VaultError::Destroyed);
}

#[test]
fn a_repeated_ke3_gets_the_same_outcome_and_spends_nothing() {
    // Success: the same sealed wrapped key, the same session id.
    let (mut h, key) = enrolled(3);
    let (ke1_bytes, client) = ke1(&h, PW);
    let (session, ke2, ksf) = started(&h.run(login_start(&ke1_bytes)).unwrap());
    let (ke3, opening) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    let first = h.run(login_finish(&session, &ke3)).unwrap();
    assert_eq!(repeat(&mut h, login_finish(&session, &ke3)), first);
    let Reply::Recovered {
        sealed_wrapped_key, ..
    } = first
    else {
        panic!("expected recovery, got {first:?}")
    };
    assert_eq!(opening.open(&sealed_wrapped_key).unwrap(), key);
    assert_eq!(h.attempts(&acct("alice")), Some((3, 3)));

    // Wrong password: the same attempts left, nothing spent.
    let (ke1_bytes, _) = ke1(&h, b"guess");
    let (session, ..) = started(&h.run(login_start(&ke1_bytes)).unwrap());
    let forged = forged_ke3();
    let wrong = h.run(login_finish(&session, &forged)).unwrap();
    assert_eq!(wrong, Reply::Wrong { attempts_left: 2 });
    assert_eq!(repeat(&mut h, login_finish(&session, &forged)), wrong);
    assert_eq!(h.attempts(&acct("alice")), Some((2, 3)));

    // The last attempt: destroyed, and the repeat says so again.
    let (mut h, _) = enrolled(1);
    let (ke1_bytes, _) = ke1(&h, b"guess");
    let (session, ..) = started(&h.run(login_start(&ke1_bytes)).unwrap());
    assert_eq!(
        h.run(login_finish(&session, &forged)).unwrap(),
        Reply::Destroyed
    );
    assert_eq!(
        repeat(&mut h, login_finish(&session, &forged)),
        Reply::Destroyed
    );
}

#[test]
fn a_different_ke3_on_a_finished_session_is_refused() {
    let (mut h, _) = enrolled(3);
    let (ke1_bytes, client) = ke1(&h, PW);
    let (session, ke2, ksf) = started(&h.run(login_start(&ke1_bytes)).unwrap());
    let (ke3, _) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    h.run(login_finish(&session, &ke3)).unwrap();
    let mut other = ke3.clone();
    other[0] ^= 1;
    refused(
        &mut h,
        login_finish(&session, &other),
        VaultError::SessionKindMismatch,
    );

    let (ke1_bytes, _) = ke1(&h, b"guess");
    let (session, ..) = started(&h.run(login_start(&ke1_bytes)).unwrap());
    h.run(login_finish(&session, &forged_ke3())).unwrap();
    refused(
        &mut h,
        login_finish(&session, &forged_ke3()),
        VaultError::SessionKindMismatch,
    );
    assert_eq!(h.attempts(&acct("alice")), Some((2, 3)));
}

/// A repeated success names the same authenticated session; it does not make it usable twice.
#[test]
fn a_repeated_success_does_not_give_a_second_authenticated_session() {
    let (mut h, _) = enrolled(3);
    let (ke1_bytes, client) = ke1(&h, PW);
    let (session, ke2, ksf) = started(&h.run(login_start(&ke1_bytes)).unwrap());
    let (ke3, _) = client.finish(&ke2, ksf, &mut OsRng).unwrap();
    let first = h.run(login_finish(&session, &ke3)).unwrap();
    let again = repeat(&mut h, login_finish(&session, &ke3));
    assert_eq!(again, first);
    let delete = Request::Delete {
        account: acct("alice"),
        session: session.as_bytes().to_vec(),
    };
    assert_eq!(h.run(delete.clone()).unwrap(), Reply::Deleted);
    refused(&mut h, delete, VaultError::NoSession);
    // The KE3's outcome is gone with the session it named.
    refused(&mut h, login_finish(&session, &ke3), VaultError::NoSession);
}

/// Remembered failures only serve retries: they never hold the account's session quota against
/// a new login.
#[test]
fn remembered_failures_never_crowd_a_new_login_out() {
    let (mut h, _) = enrolled(100);
    let quota = h.vault.config().max_sessions_per_account;
    for _ in 0..quota + 2 {
        let (ke1_bytes, _) = ke1(&h, b"guess");
        let (session, ..) = started(&h.run(login_start(&ke1_bytes)).unwrap());
        h.run(login_finish(&session, &forged_ke3())).unwrap();
    }
    assert!(h.vault.sessions().open_for(&acct("alice")) <= quota);
    let (ke1_bytes, _) = ke1(&h, PW);
    started(&h.run(login_start(&ke1_bytes)).unwrap());
}

/// Two copies of one KE1 decided on the same record (the retry overtook the first copy's write):
/// both evaluate, one write wins, and the loser's re-run gets the winner's stored reply, so only
/// one KE2 ever leaves and one attempt is spent.
#[test]
fn two_copies_of_a_ke1_in_flight_release_one_ke2() {
    let (mut h, _) = enrolled(10);
    let (ke1_bytes, _) = ke1(&h, PW);
    let first = h.handle(login_start(&ke1_bytes)).unwrap();
    let second = h.handle(login_start(&ke1_bytes)).unwrap();
    let released = h.commit(first).expect("the first write wins");
    let Outcome::WriteThenReply { write, pending } = second else {
        panic!("the second copy was decided on the old record too")
    };
    assert_ne!(
        h.store.get(&acct("alice")),
        write.prior(),
        "the CAS must fail"
    );
    h.vault.abandon(pending, write.rejected()).unwrap();
    assert_eq!(repeat(&mut h, login_start(&ke1_bytes)), released);
    assert_eq!(h.attempts(&acct("alice")), Some((9, 10)));
}
