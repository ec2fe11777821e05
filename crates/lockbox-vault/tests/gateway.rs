//! What a hostile relay (the gateway role) can and cannot do with envelopes it carries. Every
//! refusal must leave the accounts' attempt counters exactly as they were.

mod common;

use common::{KSF, PARTITION, TestNode, attempts, new_key};
use lockbox_client::{ClientError, VaultClient, open_response};
use lockbox_proto::envelope::seal_request;
use lockbox_proto::pb::{self, request::Op, response::Result as Reply};
use lockbox_vault_core::AccountId;
use lockbox_vault_core::client::ClientRecovery;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};

/// A node with alice and bob enrolled (limit 5 each) and a client.
async fn setup() -> (TestNode, VaultClient) {
    let node = TestNode::start().await;
    let c = node.client().await;
    for account in [&b"alice"[..], b"bob"] {
        c.enroll(account, b"pw", &new_key(), 5, KSF).await.unwrap();
    }
    (node, c)
}

async fn assert_untouched(c: &VaultClient) {
    assert_eq!(attempts(c, b"alice").await, (5, 5));
    assert_eq!(attempts(c, b"bob").await, (5, 5));
}

/// A LoginStart carrying a real KE1 of `account`: the request a guesser would want relayed.
fn login_start(c: &VaultClient, account: &[u8]) -> pb::Request {
    let id = AccountId::new(account).unwrap();
    let (ke1, _) =
        ClientRecovery::start(b"pw", id, c.target().identity.clone(), &mut OsRng).unwrap();
    c.request(account, Op::LoginStart(pb::LoginStart { ke1: ke1.into() }))
}

fn envelope_error(err: ClientError) -> tonic::Code {
    match err {
        ClientError::Envelope { code, .. } => code,
        other => panic!("expected a gRPC refusal, got {other:?}"),
    }
}

fn vault_error(response: &pb::Response) -> pb::error::Code {
    match &response.result {
        Some(Reply::Error(e)) => pb::error::Code::try_from(e.code).unwrap(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn envelope_relabelled_to_another_account_does_not_open() {
    let (_node, c) = setup().await;
    let (mut sealed, _) = c
        .seal(b"alice", &login_start(&c, b"alice"), &mut OsRng)
        .unwrap();
    sealed.account = b"bob".to_vec().into();
    let err = c.send_sealed(sealed).await.unwrap_err();
    assert_eq!(envelope_error(err), tonic::Code::InvalidArgument);
    assert_untouched(&c).await;
}

/// bob's envelope (the gateway authenticated bob) carrying a request for alice.
#[tokio::test]
async fn inner_account_must_match_the_envelope() {
    let (_node, c) = setup().await;
    let (sealed, awaiting) = c
        .seal(b"bob", &login_start(&c, b"alice"), &mut OsRng)
        .unwrap();
    let response = open_response(awaiting, &c.send_sealed(sealed).await.unwrap()).unwrap();
    assert_eq!(vault_error(&response), pb::error::Code::Malformed);
    assert_untouched(&c).await;
}

/// A client (or relay) that labels a LoginStart as "other" to dodge the gateway's login
/// backoff, or another request as a LoginStart, is refused before anything is spent.
#[tokio::test]
async fn mislabelled_request_class_is_refused() {
    let (_node, c) = setup().await;
    let (mut sealed, awaiting) = c
        .seal(b"alice", &login_start(&c, b"alice"), &mut OsRng)
        .unwrap();
    assert_eq!(sealed.class, pb::RequestClass::LoginStart as i32);
    sealed.class = pb::RequestClass::Other.into();
    let response = open_response(awaiting, &c.send_sealed(sealed).await.unwrap()).unwrap();
    assert_eq!(vault_error(&response), pb::error::Code::Malformed);

    let status = c.request(b"alice", Op::Status(pb::Status {}));
    let (mut sealed, awaiting) = c.seal(b"alice", &status, &mut OsRng).unwrap();
    sealed.class = pb::RequestClass::LoginStart.into();
    let response = open_response(awaiting, &c.send_sealed(sealed).await.unwrap()).unwrap();
    assert_eq!(vault_error(&response), pb::error::Code::Malformed);
    assert_untouched(&c).await;
}

#[tokio::test]
async fn tampered_garbage_and_oversized_envelopes_are_refused() {
    let (node, c) = setup().await;
    let (good, _) = c
        .seal(b"alice", &login_start(&c, b"alice"), &mut OsRng)
        .unwrap();

    let mut flipped = good.clone();
    let mut ct = flipped.ciphertext.to_vec();
    ct[10] ^= 0x01;
    flipped.ciphertext = ct.into();
    let mut garbage = good.clone();
    garbage.ciphertext = random(200).into();
    let mut bad_enc = good.clone();
    bad_enc.enc = random(31).into();
    let mut oversized = good.clone();
    oversized.ciphertext = random(lockbox_proto::MAX_MESSAGE_BYTES + 1).into();
    let mut old_version = good.clone();
    old_version.version = 0;
    for sealed in [flipped, garbage, bad_enc, oversized, old_version] {
        let err = c.send_sealed(sealed).await.unwrap_err();
        assert_eq!(envelope_error(err), tonic::Code::InvalidArgument);
    }

    // Far beyond what the node decodes at all, sent by a relay with no size limit of its own:
    // refused by the node's gRPC layer before any parsing.
    let mut huge = good.clone();
    huge.ciphertext = random(lockbox_proto::MAX_MESSAGE_BYTES * 3).into();
    let mut relay = pb::vault_client::VaultClient::connect(node.endpoint())
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let status = relay.call(huge).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert_untouched(&c).await;
}

#[tokio::test]
async fn unknown_partition_is_not_found() {
    let (node, c) = setup().await;
    let mut target = c.target().clone();
    target.partition = PARTITION + 7;
    let elsewhere = VaultClient::connect(target).await.unwrap();
    let err = elsewhere.status(b"alice").await.unwrap_err();
    assert_eq!(envelope_error(err), tonic::Code::NotFound);
    let err = VaultClient::discover(&node.endpoint(), PARTITION + 7)
        .await
        .unwrap_err();
    assert_eq!(envelope_error(err), tonic::Code::NotFound);
    assert_untouched(&c).await;
}

#[tokio::test]
async fn garbage_inside_a_valid_envelope_is_malformed() {
    let (_node, c) = setup().await;
    let short_ke1 = c.request(
        b"alice",
        Op::LoginStart(pb::LoginStart {
            ke1: random(5).into(),
        }),
    );
    let no_op = pb::Request {
        op: None,
        ..c.request(b"alice", Op::Status(pb::Status {}))
    };
    let bad_finish = c.request(
        b"alice",
        Op::LoginFinish(pb::LoginFinish {
            session: random(16).into(),
            ke3: random(3).into(),
        }),
    );
    for request in [short_ke1, no_op, bad_finish] {
        let response = c.call_raw(b"alice", request).await.unwrap();
        assert_eq!(vault_error(&response), pb::error::Code::Malformed);
    }

    // Bytes that are not a protobuf `Request` at all, properly sealed.
    let t = c.target();
    let (sealed, awaiting) = seal_request(
        &t.hpke_public_key,
        t.partition,
        b"alice",
        &[0xFF; 40],
        &mut OsRng,
    )
    .unwrap();
    let envelope = pb::SealedRequest {
        version: lockbox_proto::WIRE_VERSION,
        partition: t.partition,
        account: b"alice".to_vec().into(),
        enc: sealed.enc.into(),
        ciphertext: sealed.ciphertext.into(),
        class: pb::RequestClass::Other.into(),
    };
    let response = open_response(awaiting, &c.send_sealed(envelope).await.unwrap()).unwrap();
    assert_eq!(vault_error(&response), pb::error::Code::Malformed);
    assert_untouched(&c).await;
}

/// A relay that replays a LoginStart envelope gets no second KE2 and spends no second attempt.
#[tokio::test]
async fn replayed_login_start_envelope_is_refused() {
    let (_node, c) = setup().await;
    let request = login_start(&c, b"alice");
    let seed = [42u8; 32];
    let (first, awaiting) = c
        .seal(b"alice", &request, &mut ChaCha20Rng::from_seed(seed))
        .unwrap();
    let response = open_response(awaiting, &c.send_sealed(first.clone()).await.unwrap()).unwrap();
    assert!(
        matches!(response.result, Some(Reply::LoginStarted(ref s)) if s.attempts_left == 4),
        "{response:?}"
    );
    assert_eq!(attempts(&c, b"alice").await, (4, 5));

    // Sealing again with the same randomness gives the same bytes, and the key to read the answer.
    let (replay, awaiting) = c
        .seal(b"alice", &request, &mut ChaCha20Rng::from_seed(seed))
        .unwrap();
    assert_eq!(replay, first);
    let response = open_response(awaiting, &c.send_sealed(replay).await.unwrap()).unwrap();
    assert_eq!(vault_error(&response), pb::error::Code::Replayed);
    assert_eq!(attempts(&c, b"alice").await, (4, 5));
    assert_eq!(attempts(&c, b"bob").await, (5, 5));
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

/// A relay that holds a LoginStart past the freshness window (300 s by default) and delivers it
/// late gets `STALE`: the vault spends nothing on it, and the device's own fresh try works.
#[tokio::test]
async fn a_delayed_envelope_is_stale_and_spends_nothing() {
    let (_node, c) = setup().await;
    for late_by_secs in [301, 3600] {
        let mut request = login_start(&c, b"alice");
        request.sent_at_ms -= late_by_secs * 1000;
        let (sealed, awaiting) = c.seal(b"alice", &request, &mut OsRng).unwrap();
        let response = open_response(awaiting, &c.send_sealed(sealed).await.unwrap()).unwrap();
        assert_eq!(vault_error(&response), pb::error::Code::Stale);
    }
    assert_untouched(&c).await;
    assert!(c.recover(b"alice", b"pw").await.is_ok());
}

/// A relay that reorders two concurrent logins of one account (both KE1s, then the second KE3
/// before the first) changes nothing: each KE3 finishes its own session, each login spent one
/// attempt, and both succeed.
#[tokio::test]
async fn reordered_logins_each_finish_their_own_session() {
    let (_node, c) = setup().await;
    let first = c.login_start(b"alice", b"pw").await.unwrap();
    let second = c.login_start(b"alice", b"pw").await.unwrap();
    assert_eq!((first.attempts_left(), second.attempts_left()), (4, 3));
    assert!(c.login_finish(second).await.is_ok());
    assert!(c.login_finish(first).await.is_ok());
    assert_untouched(&c).await;
}
