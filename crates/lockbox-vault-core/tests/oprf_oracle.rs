//! Security review issue 12, item 1: RegisterStart must not be an uncounted password oracle.
//!
//! The attack, played exactly as a client holding the account's token would: one KE1 (one
//! counted attempt) for a KE2, then one RegisterStart per candidate password, each registration
//! finished locally (never sent) to learn the candidate's masking key, which unmasks the KE2's
//! masked response to the vault's public key only for the right password.

mod common;

use aws_lc_rs::hkdf::{HKDF_SHA512, KeyType, Prk};
use common::*;
use lockbox_crypto::BackupKey;
use lockbox_vault_core::client::{ClientEnrollment, ClientRecovery};
use lockbox_vault_core::{AccountId, KE2_LEN, KsfParams, Reply, Request};
use rand_core::OsRng;

const PW: &[u8] = b"correct horse battery staple";

/// Layout of KE2 (opaque-ke 4.0.1): evaluated element (32) ‖ masking nonce (32) ‖ masked
/// response (server public key 32 ‖ envelope 96) ‖ key exchange message.
const NONCE_AT: usize = 32;
const MASKED_AT: usize = 64;
const MASKED_LEN: usize = 32 + 96;
/// Layout of a RegistrationUpload: client public key (32) ‖ masking key (64) ‖ envelope (96).
const MASKING_KEY: core::ops::Range<usize> = 32..96;

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The server public key a masking key finds in a KE2's masked response (RFC 9807 §6.3.2.2).
fn unmask_server_key(masking_key: &[u8], ke2: &[u8]) -> [u8; 32] {
    assert_eq!(ke2.len(), KE2_LEN);
    let nonce = &ke2[NONCE_AT..MASKED_AT];
    let mut pad = [0u8; MASKED_LEN];
    Prk::new_less_safe(HKDF_SHA512, masking_key)
        .expand(&[nonce, b"CredentialResponsePad"], Len(MASKED_LEN))
        .unwrap()
        .fill(&mut pad)
        .unwrap();
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = pad[i] ^ ke2[MASKED_AT + i];
    }
    key
}

fn masking_key(upload: &[u8]) -> Vec<u8> {
    upload[MASKING_KEY].to_vec()
}

/// A registration the attacker starts with `candidate` and finishes on its own machine with the
/// record's Argon2id parameters (they come with every KE2): the candidate's masking key.
fn candidate_masking_key(
    h: &mut Harness,
    account: &AccountId,
    candidate: &[u8],
    ksf: KsfParams,
) -> Vec<u8> {
    let (msg, client) =
        ClientEnrollment::start(candidate, account.clone(), h.identity(), &mut OsRng).unwrap();
    let reply = h
        .run(Request::RegisterStart {
            account: account.clone(),
            registration_request: msg,
        })
        .unwrap();
    let Reply::RegistrationStarted { response, .. } = reply else {
        panic!("unexpected {reply:?}")
    };
    let limit = lockbox_vault_core::AttemptLimit::DEFAULT;
    let key = BackupKey::generate(&mut OsRng);
    let upload = client
        .finish(&response, &key, limit, ksf, &mut OsRng)
        .unwrap();
    // The attacker never finishes; it waits for the session to expire (a per-account session
    // quota only slows the attack down, it does not stop it).
    h.now += 60_000;
    masking_key(&upload.upload)
}

/// One KE1 (one counted attempt) for a KE2, then the offline test of each candidate. Returns
/// the candidates found and the attempts spent.
fn attack<'c>(h: &mut Harness, candidates: &[&'c [u8]]) -> (Vec<&'c [u8]>, Vec<u8>, u8) {
    let alice = acct("alice");
    let before = h.attempts(&alice).unwrap().0;
    let (ke1, _) =
        ClientRecovery::start(b"anything", alice.clone(), h.identity(), &mut OsRng).unwrap();
    let Reply::LoginStarted { ke2, ksf, .. } = h
        .run(Request::LoginStart {
            account: alice.clone(),
            ke1,
        })
        .unwrap()
    else {
        panic!("no KE2")
    };
    let vault_key = h.identity().public_key;
    let found = (candidates.iter().copied())
        .filter(|c| {
            let mk = candidate_masking_key(h, &alice, c, ksf);
            unmask_server_key(&mk, &ke2) == vault_key
        })
        .collect();
    let spent = before - h.attempts(&alice).unwrap().0;
    (found, ke2, spent)
}

fn shown(found: &[&[u8]]) -> Vec<String> {
    let text = |c: &&[u8]| String::from_utf8_lossy(c).into_owned();
    found.iter().map(text).collect()
}

#[test]
fn register_start_is_not_an_uncounted_password_oracle() {
    let mut h = Harness::new();
    let alice = acct("alice");
    let (session, pending) = h.register_start(&alice, PW);
    let enrollment = pending.finish(&BackupKey::generate(&mut OsRng), 10);
    let record_masking_key = masking_key(&enrollment.upload);
    h.run(enrollment.into_request(alice.clone(), session))
        .unwrap();

    let candidates: [&[u8]; 4] = [b"123456", b"password", PW, b"hunter2"];
    let (found, ke2, spent) = attack(&mut h, &candidates);
    assert_eq!(
        unmask_server_key(&record_masking_key, &ke2),
        h.identity().public_key,
        "control: the record's own masking key unmasks its KE2"
    );
    assert!(
        found.is_empty(),
        "RegisterStart answered {} offline guesses for {spent} counted attempt(s); password found: {:?}",
        candidates.len(),
        shown(&found)
    );
    assert_eq!(spent, 1);
}

/// A legacy (version 1) record's logins still use the bare account id, which no registration
/// evaluates any more.
#[test]
fn register_start_is_no_oracle_against_a_legacy_record_either() {
    let mut h = legacy_harness();
    let record = unhex(LEGACY_RECORD_HEX);
    // version, account "alice", generation, empty ring, state, limit, attempts, Argon2id: 31 bytes.
    let registration = &record[31..31 + 192];
    let candidates: [&[u8]; 3] = [b"123456", LEGACY_PASSWORD, b"hunter2"];
    let (found, ke2, spent) = attack(&mut h, &candidates);
    assert_eq!(
        unmask_server_key(&registration[MASKING_KEY], &ke2),
        h.identity().public_key,
        "control: the legacy record's masking key unmasks its KE2"
    );
    assert!(found.is_empty(), "password found: {:?}", shown(&found));
    assert_eq!(spent, 1);
}
