//! The gateway as operators run it (`lockbox gateway serve`), in front of a real vault node
//! process: devices work through it; it refuses tokens it should refuse before anything
//! reaches the vault; one account's login flood is slowed without slowing another account.

mod vault_node;

use lockbox_client::{ClientError, FixedToken, VaultClient};
use lockbox_crypto::{BackupKey, OsRng};
use lockbox_proto::pb::{self, request::Op};
use lockbox_token::Issuer;
use lockbox_vault_core::client::ClientRecovery;
use lockbox_vault_core::{AccountId, KsfParams};
use std::sync::Arc;
use std::time::Duration;
use vault_node::{FLEET, Gateway, Node, client, rt};

const PASSWORD: &[u8] = b"correct horse battery";
const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;
/// Limits that never get in a test's way.
const OPEN: &str = "client_per_second = 0\naccount_per_minute = 0\nlogin_free = 1000";

struct Fleet {
    _dir: tempfile::TempDir,
    node: Node,
    gateway: Gateway,
}

fn fleet(limits: &str) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    let gateway = Gateway::start(dir.path(), &node, &node.endpoint.clone(), limits);
    Fleet {
        _dir: dir,
        node,
        gateway,
    }
}

/// Enrolls `accounts` directly at the node (limit 5 each).
async fn enroll(node: &Node, accounts: &[&[u8]]) {
    let c = client(node).await;
    for account in accounts {
        let key = BackupKey::generate(&mut OsRng);
        c.enroll(account, PASSWORD, &key, 5, KSF).await.unwrap();
    }
}

/// `(attempts_left, limit)` as the node itself reports it, bypassing the gateway.
async fn attempts(node: &Node, account: &[u8]) -> (u8, u8) {
    let status = client(node).await.status(account).await.unwrap();
    status.attempts().expect("active record")
}

/// A LoginStart with a real KE1 for `account`.
fn login_start(c: &VaultClient, account: &[u8]) -> pb::Request {
    let id = AccountId::new(account).unwrap();
    let (ke1, _) =
        ClientRecovery::start(b"guess", id, c.target().identity.clone(), &mut OsRng).unwrap();
    c.request(account, Op::LoginStart(pb::LoginStart { ke1: ke1.into() }))
}

#[test]
fn a_device_enrolls_recovers_and_reads_status_through_the_gateway() {
    let f = fleet(OPEN);
    rt().block_on(async {
        let c = f.gateway.client(&f.node).await;
        let key = BackupKey::generate(&mut OsRng);
        c.enroll(b"alice", PASSWORD, &key, 5, KSF).await.unwrap();
        assert_eq!(c.recover(b"alice", PASSWORD).await.unwrap(), key);
        assert_eq!(
            c.recover(b"alice", b"wrong").await,
            Err(ClientError::WrongPassword { attempts_left: 4 })
        );
        assert_eq!(c.status(b"alice").await.unwrap().attempts(), Some((4, 5)));
        assert_eq!(attempts(&f.node, b"alice").await, (4, 5));
    });
}

/// Sends `request`, sealed with a valid inner token, to the gateway with `metadata` as the
/// `authorization` value (or none): the gateway alone decides.
async fn via_gateway(
    f: &Fleet,
    c: &VaultClient,
    account: &[u8],
    request: &pb::Request,
    authorization: Option<String>,
) -> tonic::Status {
    let (sealed, _) = c.seal(account, request, &mut OsRng).unwrap();
    let mut raw = pb::vault_client::VaultClient::connect(f.gateway.endpoint.clone())
        .await
        .unwrap();
    let mut call = tonic::Request::new(sealed);
    if let Some(value) = authorization {
        call.metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    raw.call(call).await.expect_err("the gateway must refuse")
}

#[test]
fn tokens_the_gateway_refuses_reach_nothing_and_spend_nothing() {
    let f = fleet(OPEN);
    rt().block_on(async {
        enroll(&f.node, &[b"alice", b"bob"]).await;
        let c = f.gateway.client(&f.node).await;
        let now = time::OffsetDateTime::now_utc();
        let hour = Duration::from_secs(3600);
        let stranger = Issuer::generate().unwrap();
        let bearer = |t: String| Some(format!("Bearer {t}"));
        let cases = [
            ("missing", None, tonic::Code::Unauthenticated),
            (
                "not bearer",
                Some("Basic abc".into()),
                tonic::Code::Unauthenticated,
            ),
            (
                "garbage",
                bearer("v4.public.garbage".into()),
                tonic::Code::Unauthenticated,
            ),
            (
                "expired",
                bearer(
                    f.node
                        .issuer
                        .mint(b"alice", FLEET, now - 2 * hour, hour)
                        .unwrap(),
                ),
                tonic::Code::Unauthenticated,
            ),
            (
                "wrong issuer",
                bearer(stranger.mint(b"alice", FLEET, now, hour).unwrap()),
                tonic::Code::Unauthenticated,
            ),
            (
                "another fleet",
                bearer(
                    f.node
                        .issuer
                        .mint(b"alice", "other-fleet", now, hour)
                        .unwrap(),
                ),
                tonic::Code::Unauthenticated,
            ),
            (
                "another account",
                bearer(f.node.issuer.mint(b"bob", FLEET, now, hour).unwrap()),
                tonic::Code::PermissionDenied,
            ),
        ];
        for (what, authorization, code) in cases {
            let status =
                via_gateway(&f, &c, b"alice", &login_start(&c, b"alice"), authorization).await;
            assert_eq!(status.code(), code, "{what}: {status:?}");
        }
        assert_eq!(attempts(&f.node, b"alice").await, (5, 5));
        assert_eq!(attempts(&f.node, b"bob").await, (5, 5));

        // A device holding only bob's token cannot act for alice through the gateway either.
        let bobs = f.node.issuer.mint(b"bob", FLEET, now, hour).unwrap();
        let target = c.target().clone();
        let as_bob = VaultClient::connect(target)
            .await
            .unwrap()
            .with_token_source(Arc::new(FixedToken::new(bobs)));
        let err = as_bob.recover(b"alice", b"guess").await.unwrap_err();
        assert!(matches!(err, ClientError::Unauthorized(_)), "{err:?}");
        assert_eq!(attempts(&f.node, b"alice").await, (5, 5));
    });
}

/// Past the gateway, the vault checks the copy of the token inside the envelope: a gateway
/// (or anyone) that presents a valid token outside cannot carry another account's inside.
#[test]
fn a_valid_outer_token_does_not_carry_a_bad_inner_one() {
    let f = fleet(OPEN);
    rt().block_on(async {
        enroll(&f.node, &[b"alice"]).await;
        let c = f.gateway.client(&f.node).await;
        let now = time::OffsetDateTime::now_utc();
        let hour = Duration::from_secs(3600);
        let mut request = login_start(&c, b"alice");
        request.account_token = f.node.issuer.mint(b"bob", FLEET, now, hour).unwrap();
        let (sealed, awaiting) = c.seal(b"alice", &request, &mut OsRng).unwrap();
        let answer = c.send_sealed(sealed).await.unwrap();
        let response = lockbox_client::open_response(awaiting, &answer).unwrap();
        let refused = matches!(
            response.result,
            Some(pb::response::Result::Error(ref e)) if e.code == pb::error::Code::Unauthorized as i32
        );
        assert!(refused, "{response:?}");
        assert_eq!(attempts(&f.node, b"alice").await, (5, 5));
    });
}

#[test]
fn one_accounts_login_flood_is_slowed_and_another_account_is_not() {
    let f = fleet(
        "client_per_second = 0\naccount_per_minute = 0\nlogin_free = 2\nlogin_backoff_base_ms = 60000",
    );
    rt().block_on(async {
        enroll(&f.node, &[b"alice", b"bob"]).await;
        let c = f.gateway.client(&f.node).await;
        // A script holding bob's token hammers his login starts.
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            outcomes.push(c.recover(b"bob", b"guess").await);
        }
        let wrong = outcomes
            .iter()
            .filter(|o| matches!(o, Err(ClientError::WrongPassword { .. })))
            .count();
        assert_eq!(wrong, 3, "{outcomes:?}");
        for o in &outcomes[3..] {
            let slowed = matches!(o, Err(ClientError::RateLimited { retry_after, .. })
                if *retry_after > Duration::from_secs(50) && *retry_after <= Duration::from_secs(60));
            assert!(slowed, "{o:?}");
        }
        // Only the relayed starts cost bob attempts; alice is untouched and logs in at once.
        assert_eq!(attempts(&f.node, b"bob").await, (2, 5));
        assert!(c.recover(b"alice", PASSWORD).await.is_ok());
        assert_eq!(c.status(b"bob").await.unwrap().attempts(), Some((2, 5)));
    });
}

#[test]
fn a_held_back_ke3_or_registration_finish_is_waited_out_not_wasted() {
    // One call per two seconds for the account: KE1 takes it, KE3 right after is held back.
    let f = fleet(
        "client_per_second = 0\naccount_per_minute = 30\naccount_burst = 1\nlogin_free = 1000",
    );
    rt().block_on(async {
        enroll(&f.node, &[b"alice"]).await;
        let c = f.gateway.client(&f.node).await;
        // The attempt is spent once KE1 is relayed; giving up on KE3 would waste it.
        let key = c.recover(b"alice", PASSWORD).await;
        assert!(key.is_ok(), "{key:?}");
        assert_eq!(attempts(&f.node, b"alice").await, (5, 5));
        // Likewise a registration's second step: the record is made, not left half-registered.
        let k = BackupKey::generate(&mut OsRng);
        let enrolled = c.enroll(b"bob", PASSWORD, &k, 5, KSF).await;
        assert!(enrolled.is_ok(), "{enrolled:?}");
        assert_eq!(attempts(&f.node, b"bob").await, (5, 5));
    });
}

#[test]
fn the_gateway_vouches_for_no_keys_and_reports_a_dead_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let gateway = Gateway::start(dir.path(), &node, &dead, OPEN);
    rt().block_on(async {
        let err = VaultClient::discover(&gateway.endpoint, vault_node::PARTITION)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Envelope {
                    code: tonic::Code::Unimplemented,
                    ..
                }
            ),
            "{err:?}"
        );
        let c = gateway.client(&node).await;
        let err = c.status(b"alice").await.unwrap_err();
        assert!(
            matches!(err, ClientError::Unavailable(ref m) if m.contains("unreachable")),
            "{err:?}"
        );
        assert!(err.is_retryable());

        let channel = tonic::transport::Endpoint::from_shared(gateway.endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let health = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "lockbox.vault.v1.Vault".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            health.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    });
}
