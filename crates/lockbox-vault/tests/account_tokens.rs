//! Finding 3 of the security review: HPKE base mode authenticates no sender, so the vault itself
//! must check who acts for an account. A stranger who reaches the node, or a relay holding
//! another account's token, must not spend attempts, read status, or replace a record; and a
//! token-less request must not take a session slot (finding 4).

mod common;

use common::{FLEET, KSF, TestNode, attempts, new_key};
use lockbox_client::{ClientError, FixedToken, Status, VaultClient};
use lockbox_token::{Issuer, TokenClaims};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

async fn with_token(node: &TestNode, token: String) -> VaultClient {
    node.anonymous_client()
        .await
        .with_token_source(Arc::new(FixedToken::new(token)))
}

fn unauthorized(result: Result<impl std::fmt::Debug, ClientError>, says: &str) {
    match result {
        Err(ClientError::Unauthorized(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected an unauthorized refusal saying {says:?}, got {other:?}"),
    }
}

/// Every way of not holding alice's token, each refused with its own reason, with alice's
/// record untouched: no attempt spent, no status read, no record replaced.
#[tokio::test]
async fn only_the_accounts_token_acts_for_it() {
    let node = TestNode::start().await;
    let owner = node.client().await;
    let key = new_key();
    owner.enroll(b"alice", b"pw", &key, 5, KSF).await.unwrap();

    let now = OffsetDateTime::now_utc();
    let sign = |issuer: &Issuer, account: &str, audience: &str, iat, exp| {
        issuer
            .sign(&TokenClaims {
                account,
                audience,
                token_id: "t",
                issued_at: iat,
                expires_at: exp,
            })
            .unwrap()
    };
    let hour = Duration::hours(1);
    let forger = Issuer::generate().unwrap();
    let strangers = [
        (node.anonymous_client().await, "no account token"),
        (
            with_token(&node, node.token(b"mallory")).await,
            "another account",
        ),
        (
            with_token(
                &node,
                sign(&node.issuer, "alice", FLEET, now - hour * 2, now - hour),
            )
            .await,
            "expired",
        ),
        (
            with_token(
                &node,
                sign(&node.issuer, "alice", "other-fleet", now, now + hour),
            )
            .await,
            "another vault fleet",
        ),
        (
            with_token(&node, sign(&forger, "alice", FLEET, now, now + hour)).await,
            "not signed by the trusted",
        ),
        (
            with_token(
                &node,
                sign(&node.issuer, "alice", FLEET, now, now + hour * 30),
            )
            .await,
            "longer than 24 h",
        ),
        (
            with_token(&node, "v4.public.bm90IGEgdG9rZW4".into()).await,
            "not a PASETO",
        ),
    ];
    for (stranger, says) in &strangers {
        unauthorized(stranger.status(b"alice").await, says);
        unauthorized(stranger.login_start(b"alice", b"guess").await, says);
        unauthorized(
            stranger
                .enroll(b"alice", b"mine now", &new_key(), 5, KSF)
                .await,
            says,
        );
    }
    assert_eq!(attempts(&owner, b"alice").await, (5, 5));
    assert_eq!(owner.recover(b"alice", b"pw").await.unwrap(), key);
}

/// A flood of token-less registration starts takes no session slot: the owner's logins go on.
#[tokio::test]
async fn requests_without_a_token_take_no_session_slot() {
    let node = TestNode::start().await;
    let owner = node.client().await;
    let key = new_key();
    owner.enroll(b"alice", b"pw", &key, 5, KSF).await.unwrap();
    let stranger = node.anonymous_client().await;
    for i in 0..200u32 {
        let account = format!("victim-{i}");
        unauthorized(
            stranger
                .enroll(account.as_bytes(), b"x", &new_key(), 5, KSF)
                .await,
            "no account token",
        );
    }
    assert_eq!(owner.recover(b"alice", b"pw").await.unwrap(), key);
    assert_eq!(
        owner.status(b"victim-0").await.unwrap(),
        Status::Absent,
        "a token-less enrollment must not create a record"
    );
}
