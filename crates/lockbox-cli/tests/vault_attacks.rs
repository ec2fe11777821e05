//! The security review's attacks (issue 12), and those on the catalog pin (issue 15), played as
//! an attacker would: against a real `lockbox vault serve` process over loopback, with nothing
//! but what the attacker can send and see. Each test asserts that the attack learns (or moves)
//! nothing it should not.

mod common;
mod vault_node;

use hkdf::Hkdf;
use lockbox_client::{ClientError, VaultClient};
use lockbox_crypto::{BackupKey, OsRng};
use lockbox_proto::pb::{self, request::Op, response::Result as Reply};
use lockbox_vault_core::client::{ClientEnrollment, ClientRecovery};
use lockbox_vault_core::{AccountId, AttemptLimit, KsfParams};
use sha2::Sha512;
use vault_node::{Node, client, rt};

const ACCOUNT: &[u8] = b"+15550003333";
const PASSWORD: &[u8] = b"correct horse battery";
const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

/// A client for `node` with ACCOUNT enrolled under PASSWORD (limit 10), and its key.
async fn enrolled(node: &Node) -> (VaultClient, BackupKey) {
    let c = client(node).await;
    let key = BackupKey::generate(&mut OsRng);
    c.enroll(ACCOUNT, PASSWORD, &key, 10, KSF).await.unwrap();
    (c, key)
}

/// A RegisterStart for `account` with `password` blinded, and the device's state to finish it.
fn register_start(c: &VaultClient, account: &[u8], password: &[u8]) -> (Op, ClientEnrollment) {
    let id = AccountId::new(account).unwrap();
    let (registration_request, state) =
        ClientEnrollment::start(password, id, c.target().identity.clone(), &mut OsRng).unwrap();
    let op = Op::RegisterStart(pb::RegisterStart {
        registration_request: registration_request.into(),
    });
    (op, state)
}

/// One counted attempt: a KE1 for a throwaway password, keeping the KE2 the vault answers.
async fn one_counted_ke2(c: &VaultClient) -> Vec<u8> {
    let id = AccountId::new(ACCOUNT).unwrap();
    let (ke1, _) =
        ClientRecovery::start(b"x", id, c.target().identity.clone(), &mut OsRng).unwrap();
    let response = c
        .call_raw(
            ACCOUNT,
            c.request(ACCOUNT, Op::LoginStart(pb::LoginStart { ke1: ke1.into() })),
        )
        .await
        .unwrap();
    match response.result {
        Some(Reply::LoginStarted(s)) => s.ke2.to_vec(),
        other => panic!("expected KE2, got {other:?}"),
    }
}

/// The masking key the vault's OPRF gives `candidate`, learned through RegisterStart: blind the
/// candidate, have the vault evaluate it, finish the registration locally (never sent).
async fn masking_key_via_registration(c: &VaultClient, candidate: &[u8]) -> Option<Vec<u8>> {
    let (op, state) = register_start(c, ACCOUNT, candidate);
    let started = match c
        .call_raw(ACCOUNT, c.request(ACCOUNT, op))
        .await
        .ok()?
        .result
    {
        Some(Reply::RegisterStarted(s)) => s,
        _ => return None,
    };
    let limit = AttemptLimit::new(10).unwrap();
    let dummy = BackupKey::generate(&mut OsRng);
    let upload = state
        .finish(
            &started.registration_response,
            &dummy,
            limit,
            KSF,
            &mut OsRng,
        )
        .ok()?;
    // RegistrationUpload = client public key (32) ‖ masking key (64) ‖ envelope (96).
    Some(upload.upload[32..96].to_vec())
}

/// RFC 9807 §6.1.2.2: unmask KE2's credential response with a candidate's masking key. The
/// first 32 bytes are the server's public key exactly when the candidate is the password.
fn unmasks(ke2: &[u8], masking_key: &[u8], server_public_key: &[u8; 32]) -> bool {
    let (nonce, masked) = (&ke2[32..64], &ke2[64..192]);
    let hk = Hkdf::<Sha512>::from_prk(masking_key).expect("64-byte PRK");
    let mut pad = [0u8; 128];
    let info = [nonce, b"CredentialResponsePad"].concat();
    hk.expand(&info, &mut pad).unwrap();
    let pk: Vec<u8> = masked[..32].iter().zip(&pad).map(|(m, p)| m ^ p).collect();
    pk == server_public_key
}

/// Finding 1: one counted KE1, then candidate passwords tested offline through RegisterStart.
/// With the OPRF key shared between registration and login, the right candidate unmasks the KE2
/// (the review found it among hundreds for 2 counted attempts). Every OPRF evaluation under the
/// live record's key must be a counted guess, so here no candidate may unmask, the right one
/// included, and the record must have paid exactly the one attempt.
#[test]
fn register_start_is_no_password_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    rt().block_on(async {
        let (c, key) = enrolled(&node).await;
        let ke2 = one_counted_ke2(&c).await;
        let server_pk = c.target().identity.public_key;
        let candidates: [&[u8]; 4] = [b"123456", b"password", PASSWORD, b"letmein"];
        let mut confirmed = Vec::new();
        for candidate in candidates {
            let mk = masking_key_via_registration(&c, candidate).await;
            if mk.is_some_and(|mk| unmasks(&ke2, &mk, &server_pk)) {
                confirmed.push(String::from_utf8_lossy(candidate).into_owned());
            }
        }
        assert!(
            confirmed.is_empty(),
            "RegisterStart confirmed {confirmed:?} offline for one counted attempt"
        );
        assert_eq!(c.status(ACCOUNT).await.unwrap().attempts(), Some((9, 10)));
        assert_eq!(c.recover(ACCOUNT, PASSWORD).await.unwrap(), key);
    });
}

/// Finding 2: a relay delivers one sealed request twice. Both answers would be sealed under the
/// same exported key; with a fixed nonce their XOR is the XOR of two plaintexts (a session id
/// was read this way) and GCM forgeries follow. The second delivery must be refused, and no two
/// responses may ever share a nonce.
#[test]
fn a_relayed_duplicate_is_refused_and_never_shares_a_nonce() {
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    rt().block_on(async {
        let (c, _) = enrolled(&node).await;
        let request = c.request(ACCOUNT, register_start(&c, ACCOUNT, b"x").0);
        // The relay keeps the envelope; the device's answer key is re-derived from the same
        // randomness so the test can read both answers.
        let seal = || {
            c.seal(ACCOUNT, &request, &mut ChaCha20Rng::from_seed([9; 32]))
                .unwrap()
        };
        let (envelope, awaiting) = seal();
        let first = c.send_sealed(envelope.clone()).await.unwrap();
        let second = c.send_sealed(envelope).await.unwrap();
        assert_ne!(
            first.ciphertext[..12],
            second.ciphertext[..12],
            "two responses under one exported key share a nonce"
        );
        let first = lockbox_client::open_response(awaiting, &first).unwrap();
        assert!(
            matches!(first.result, Some(Reply::RegisterStarted(_))),
            "{first:?}"
        );
        let second = lockbox_client::open_response(seal().1, &second).unwrap();
        assert!(
            matches!(second.result, Some(Reply::Error(ref e))
                if e.code == pb::error::Code::Replayed as i32),
            "the duplicate was executed again: {second:?}"
        );
    });
}

/// Finding 4: one account's token holder opening registrations without end takes two slots of
/// the session table (each new registration evicts that account's oldest), so neither other
/// accounts nor the account's own owner are locked out.
#[test]
fn one_account_cannot_exhaust_the_session_table() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    rt().block_on(async {
        let c = client(&node).await;
        let key = BackupKey::generate(&mut OsRng);
        c.enroll(ACCOUNT, PASSWORD, &key, 10, KSF).await.unwrap();
        let mallory = b"+15550009999";
        let mut busy = 0;
        for _ in 0..64 {
            let id = AccountId::new(mallory).unwrap();
            let (registration_request, _) =
                ClientEnrollment::start(b"x", id, c.target().identity.clone(), &mut OsRng).unwrap();
            let op = Op::RegisterStart(pb::RegisterStart {
                registration_request: registration_request.into(),
            });
            let response = c.call_raw(mallory, c.request(mallory, op)).await.unwrap();
            match response.result {
                Some(Reply::RegisterStarted(_)) => {}
                Some(Reply::Error(e)) if e.code == pb::error::Code::Busy as i32 => busy += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        assert_eq!(busy, 0, "registrations evict, they are never refused");
        assert_eq!(c.recover(ACCOUNT, PASSWORD).await.unwrap(), key);
        assert_eq!(
            c.recover(mallory, b"x").await.unwrap_err(),
            ClientError::NoRecord
        );
    });
}

/// Finding 3 through the CLI: without the account's token, `lockbox key` commands are refused
/// with their own message, before any attempt is spent.
#[test]
fn the_cli_needs_the_accounts_token() {
    use common::{assert_fails_with, lockbox, run};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    let account = std::str::from_utf8(ACCOUNT).unwrap();
    rt().block_on(enrolled(&node));
    let key_cmd = |args: &[&str]| {
        let mut c = lockbox();
        c.arg("key").args(args).args([
            "--vault",
            &node.endpoint,
            "--account",
            account,
            "--partition",
            "3",
        ]);
        c.env("LOCKBOX_PASSWORD", "guess guess");
        c
    };
    let out = dir.path().join("code");
    let recover = ["recover", "--out", out.to_str().unwrap()];
    assert_fails_with(&run(&mut key_cmd(&recover)), 1, "no account token");
    let stranger = node.token_file("+15550008888");
    let o = run(key_cmd(&recover).arg("--token-file").arg(&stranger));
    assert_fails_with(&o, 2, "account token refused");
    assert!(
        common::stderr(&o).contains("another account"),
        "{}",
        common::stderr(&o)
    );
    let status = run(key_cmd(&["status"])
        .arg("--token-file")
        .arg(node.token_file(account)));
    common::assert_exit(&status, 0);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("10 of 10 attempts left"), "{said}");
}

/// Issue 15's catalog pin, attacked as a relay and as a holder of the account token would,
/// against a real node: the device's PinCatalog envelope replayed, its older pin sent again in
/// a fresh envelope, a pin with a forged signature, one signed by another key, and another
/// account's valid pin. None moves the pin, none costs an attempt, and the next login returns
/// the device's newest pin.
#[test]
fn the_catalog_pin_moves_only_forward_and_only_under_k() {
    use lockbox_vault_core::{CATALOG_PIN_BODY_LEN, CatalogPin};
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    rt().block_on(async {
        let (c, key) = enrolled(&node).await;
        let id = AccountId::new(ACCOUNT).unwrap();
        let body = |b: u8| [b; CATALOG_PIN_BODY_LEN];
        let pin_op = |pin: &CatalogPin| {
            Op::PinCatalog(pb::PinCatalog {
                pin: pin.encode().to_vec().into(),
            })
        };
        // What the vault answers an envelope carrying `op` for `account`.
        let send = |account: &'static [u8], op: Op| {
            let c = &c;
            async move {
                let (sealed, awaiting) =
                    c.seal(account, &c.request(account, op), &mut OsRng).unwrap();
                let answer = c.send_sealed(sealed).await.unwrap();
                lockbox_client::open_response(awaiting, &answer).unwrap()
            }
        };
        let held = |reply: &pb::Response| match &reply.result {
            Some(Reply::Pinned(p)) => CatalogPin::decode(&p.pin).map(|p| (p.sequence(), *p.body())),
            _ => None,
        };
        let refused = |reply: &pb::Response, code: pb::error::Code| {
            matches!(&reply.result, Some(Reply::Error(e)) if e.code == code as i32)
        };

        // The device pins entry 1, then entry 2; the relay kept the first envelope.
        let first = CatalogPin::sign(&key, &id, 1, body(1));
        let request = c.request(ACCOUNT, pin_op(&first));
        // Seeded, so the test can open the answer to the replay too.
        let seal_first = || {
            c.seal(ACCOUNT, &request, &mut ChaCha20Rng::from_seed([7; 32]))
                .unwrap()
        };
        let (kept, awaiting) = seal_first();
        let answer = c.send_sealed(kept.clone()).await.unwrap();
        let reply = lockbox_client::open_response(awaiting, &answer).unwrap();
        assert_eq!(held(&reply), Some((1, body(1))), "{reply:?}");
        let second = c.pin_catalog(ACCOUNT, &key, 2, body(2)).await.unwrap();
        assert_eq!(second.sequence(), 2);

        // Replayed byte for byte: refused as a replay.
        let replayed = c.send_sealed(kept).await.unwrap();
        let reply = lockbox_client::open_response(seal_first().1, &replayed).unwrap();
        assert!(refused(&reply, pb::error::Code::Replayed), "{reply:?}");
        // The old pin in a fresh envelope: the vault keeps the newer one and says so.
        let reply = send(ACCOUNT, pin_op(&first)).await;
        assert_eq!(held(&reply), Some((2, body(2))), "{reply:?}");
        // A forged signature, and a pin another key signed: refused.
        let mut forged = CatalogPin::sign(&key, &id, 3, body(3)).encode();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = CatalogPin::decode(&forged).unwrap();
        let reply = send(ACCOUNT, pin_op(&forged)).await;
        assert!(refused(&reply, pb::error::Code::BadCatalogPin), "{reply:?}");
        let stranger = BackupKey::generate(&mut OsRng);
        let reply = send(ACCOUNT, pin_op(&CatalogPin::sign(&stranger, &id, 4, body(4)))).await;
        assert!(refused(&reply, pb::error::Code::BadCatalogPin), "{reply:?}");
        // Another account's own valid pin, sent for this one: refused (the account is signed).
        const OTHER: &[u8] = b"+15550004444";
        let other_key = BackupKey::generate(&mut OsRng);
        c.enroll(OTHER, PASSWORD, &other_key, 10, KSF).await.unwrap();
        let other = c
            .pin_catalog(OTHER, &other_key, 9, body(9))
            .await
            .unwrap();
        let reply = send(ACCOUNT, pin_op(&other)).await;
        assert!(refused(&reply, pb::error::Code::BadCatalogPin), "{reply:?}");

        // Nothing cost an attempt, and the login hands back the device's newest pin.
        assert_eq!(c.status(ACCOUNT).await.unwrap().attempts(), Some((10, 10)));
        let (recovered, pin) = c.recover_pinned(ACCOUNT, PASSWORD).await.unwrap();
        assert_eq!(recovered.expose(), key.expose());
        let pin = pin.expect("the vault holds a pin");
        assert_eq!((pin.sequence(), *pin.body()), (2, body(2)));
    });
}
