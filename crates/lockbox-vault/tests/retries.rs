//! Retries after a lost reply, through a real node over gRPC (DESIGN.md §4: a request retried
//! after a lost reply never costs a second attempt without the device having had the use of the
//! first, and never costs none). A relay can drop any answer; the device then re-seals the same
//! operation in a fresh envelope (a byte-identical one is refused by the replay cache).

mod common;

use common::{KSF, TestNode, attempts, new_key};
use lockbox_client::{ClientError, VaultClient};
use lockbox_proto::pb::{self, request::Op, response::Result as Reply};
use lockbox_vault_core::client::ClientRecovery;
use lockbox_vault_core::{AccountId, KsfParams};
use rand_core::OsRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

const ALICE: &[u8] = b"alice";
const PW: &[u8] = b"pw";
const LIMIT: u8 = 5;

async fn enrolled() -> (TestNode, VaultClient, lockbox_crypto::BackupKey) {
    let node = TestNode::start().await;
    let c = node.client().await;
    let key = new_key();
    c.enroll(ALICE, PW, &key, LIMIT, KSF).await.unwrap();
    (node, c, key)
}

/// Seals `op` in a fresh envelope (new HPKE `enc`, new `sent_at_ms`), sends it, opens the answer.
async fn send(c: &VaultClient, op: Op) -> pb::Response {
    c.call_raw(ALICE, c.request(ALICE, op)).await.unwrap()
}

/// Seals and sends `op`, and throws the answer away, as a relay that loses the reply would.
async fn send_and_lose_the_reply(c: &VaultClient, op: Op) {
    let (sealed, _awaiting) = c.seal(ALICE, &c.request(ALICE, op), &mut OsRng).unwrap();
    c.send_sealed(sealed).await.unwrap();
}

fn login_started(response: pb::Response, what: &str) -> pb::LoginStarted {
    match response.result {
        Some(Reply::LoginStarted(s)) => s,
        other => panic!("expected KE2 {what}, got {other:?}"),
    }
}

fn ksf_of(started: &pb::LoginStarted) -> KsfParams {
    let k = started.ksf.unwrap();
    KsfParams::new(k.m_cost_kib, k.t_cost, k.p_cost).unwrap()
}

fn recovery(c: &VaultClient) -> (Vec<u8>, ClientRecovery) {
    let id = AccountId::new(ALICE).unwrap();
    ClientRecovery::start(PW, id, c.target().identity.clone(), &mut OsRng).unwrap()
}

/// The vault spent an attempt for a KE1 and its KE2 was lost on the way back. The device re-seals
/// the same KE1: it gets the same KE2 (same session, same attempts left), no second attempt is
/// spent, and the login completes.
#[tokio::test]
async fn a_relay_that_drops_the_first_ke2_costs_one_attempt() {
    let (_node, c, key) = enrolled().await;
    let (ke1, recovery) = recovery(&c);
    let login_start = || {
        Op::LoginStart(pb::LoginStart {
            ke1: ke1.clone().into(),
        })
    };

    send_and_lose_the_reply(&c, login_start()).await;
    assert_eq!(attempts(&c, ALICE).await, (LIMIT - 1, LIMIT));
    let started = login_started(send(&c, login_start()).await, "on the retry");
    assert_eq!(started.attempts_left, u32::from(LIMIT - 1));
    assert_eq!(
        attempts(&c, ALICE).await,
        (LIMIT - 1, LIMIT),
        "the retry spent"
    );
    let again = login_started(send(&c, login_start()).await, "on a second retry");
    assert_eq!(again, started, "a retry got a different answer");

    let (ke3, opening) = recovery
        .finish(&started.ke2, ksf_of(&started), &mut OsRng)
        .unwrap();
    let finish = Op::LoginFinish(pb::LoginFinish {
        session: started.session,
        ke3: ke3.into(),
    });
    let Some(Reply::LoginOk(ok)) = send(&c, finish).await.result else {
        panic!("login did not finish");
    };
    assert_eq!(opening.open(&ok.sealed_wrapped_key).unwrap(), key);
    assert_eq!(attempts(&c, ALICE).await, (LIMIT, LIMIT));
}

/// The vault verified a KE3 and reset the counter, and the wrapped key was lost on the way back.
/// The device re-seals the same KE3 and gets the same sealed wrapped key: it opens to K.
#[tokio::test]
async fn a_relay_that_drops_the_login_finish_reply_still_delivers_k() {
    let (_node, c, key) = enrolled().await;
    let (ke1, recovery) = recovery(&c);
    let started = login_started(
        send(&c, Op::LoginStart(pb::LoginStart { ke1: ke1.into() })).await,
        "for a fresh KE1",
    );
    let (ke3, opening) = recovery
        .finish(&started.ke2, ksf_of(&started), &mut OsRng)
        .unwrap();
    let finish = || {
        Op::LoginFinish(pb::LoginFinish {
            session: started.session.clone(),
            ke3: ke3.clone().into(),
        })
    };

    send_and_lose_the_reply(&c, finish()).await;
    let response = send(&c, finish()).await;
    let Some(Reply::LoginOk(ok)) = response.result else {
        panic!("expected the wrapped key on the retried KE3, got {response:?}");
    };
    assert_eq!(ok.session, started.session);
    assert_eq!(opening.open(&ok.sealed_wrapped_key).unwrap(), key);
    assert_eq!(attempts(&c, ALICE).await, (LIMIT, LIMIT));
}

/// A relay in front of the node that forwards every request and loses the answers of the calls
/// `drop` picks (counted from 0), as a gateway that drops a reply would: the device sees a
/// transport failure after the node has acted.
struct DroppingRelay {
    upstream: pb::vault_client::VaultClient<Channel>,
    calls: AtomicUsize,
    drop: fn(usize) -> bool,
}

#[tonic::async_trait]
impl pb::vault_server::Vault for DroppingRelay {
    async fn call(
        &self,
        request: tonic::Request<pb::SealedRequest>,
    ) -> Result<tonic::Response<pb::SealedResponse>, tonic::Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.upstream.clone().call(request.into_inner()).await?;
        if (self.drop)(n) {
            return Err(tonic::Status::unavailable("the relay lost the reply"));
        }
        Ok(answer)
    }

    async fn info(
        &self,
        request: tonic::Request<pb::InfoRequest>,
    ) -> Result<tonic::Response<pb::InfoResponse>, tonic::Status> {
        self.upstream.clone().info(request.into_inner()).await
    }
}

/// Starts a [`DroppingRelay`] in front of `node`; returns a device client that talks through it
/// (with the node's pinned keys and a valid token) and the relay, to read its call count.
async fn through_relay(
    node: &TestNode,
    drop: fn(usize) -> bool,
) -> (VaultClient, Arc<DroppingRelay>) {
    let upstream = pb::vault_client::VaultClient::connect(node.endpoint())
        .await
        .unwrap();
    let relay = Arc::new(DroppingRelay {
        upstream,
        calls: AtomicUsize::new(0),
        drop,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = pb::vault_server::VaultServer::from_arc(Arc::clone(&relay));
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let mut target = VaultClient::discover(&node.endpoint(), common::PARTITION)
        .await
        .unwrap();
    target.endpoint = format!("http://{addr}");
    let client = VaultClient::connect(target)
        .await
        .unwrap()
        .with_token_source(node.tokens());
    (client, relay)
}

impl DroppingRelay {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The device SDK itself retries: the relay loses the first answer to LoginStart and the first
/// to LoginFinish; the recovery still succeeds and exactly one attempt was spent for it.
#[tokio::test]
async fn the_client_retries_a_login_whose_replies_are_lost() {
    let (node, direct, key) = enrolled().await;
    // Calls through the relay: 0 LoginStart (lost), 1 LoginStart, 2 LoginFinish (lost), 3.
    let (c, relay) = through_relay(&node, |n| n == 0 || n == 2).await;

    let pending = c.login_start(ALICE, PW).await.unwrap();
    assert_eq!(pending.attempts_left(), LIMIT - 1);
    assert_eq!(attempts(&direct, ALICE).await, (LIMIT - 1, LIMIT));
    assert_eq!(c.login_finish(pending).await.unwrap(), key);
    assert_eq!(relay.calls(), 4);
    assert_eq!(attempts(&direct, ALICE).await, (LIMIT, LIMIT));
}

/// A relay that loses every answer: the device gives up after a bounded number of tries with a
/// retryable error, and all those deliveries together spent one attempt, not one each.
#[tokio::test]
async fn retries_are_bounded_and_all_of_them_cost_one_attempt() {
    let (node, direct, _key) = enrolled().await;
    let (c, relay) = through_relay(&node, |_| true).await;

    let err = c.login_start(ALICE, PW).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable(_)), "{err:?}");
    assert_eq!(
        relay.calls(),
        3,
        "the SDK delivers a login step at most 3 times"
    );
    assert_eq!(attempts(&direct, ALICE).await, (LIMIT - 1, LIMIT));
}
