//! The outside review's attacks on the gateway (issue 13), played against real `lockbox gateway
//! serve` and `lockbox vault serve` processes: a client address that floods, a reply lost on its
//! way back while the account is in login backoff, and limits too large to count.

mod vault_node;

use lockbox_client::VaultClient;
use lockbox_crypto::{BackupKey, OsRng};
use lockbox_proto::pb::vault_server::{Vault, VaultServer};
use lockbox_proto::pb::{self, vault_client::VaultClient as RawClient};
use lockbox_token::Issuer;
use lockbox_vault_core::KsfParams;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tonic::transport::Channel;
use vault_node::{FLEET, Gateway, Node, client, rt};

const PASSWORD: &[u8] = b"correct horse battery";
const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

async fn enroll(node: &Node, account: &[u8]) -> BackupKey {
    let key = BackupKey::generate(&mut OsRng);
    client(node)
        .await
        .enroll(account, PASSWORD, &key, 5, KSF)
        .await
        .unwrap();
    key
}

/// `(attempts_left, limit)` as the node itself reports it, bypassing the gateway.
async fn attempts(node: &Node, account: &[u8]) -> (u8, u8) {
    let status = client(node).await.status(account).await.unwrap();
    status.attempts().expect("active record")
}

/// A device on this machine's IPv4 loopback, talking to `gateway` (which listens on `[::]`).
async fn ipv4_device(gateway: &Gateway, node: &Node) -> VaultClient {
    let port = gateway.endpoint.rsplit(':').next().unwrap();
    let mut target = VaultClient::discover(&node.endpoint, vault_node::PARTITION)
        .await
        .unwrap();
    target.endpoint = format!("http://127.0.0.1:{port}");
    VaultClient::connect(target)
        .await
        .unwrap()
        .with_token_source(node.tokens())
}

/// One client address (IPv6 loopback) sends calls as fast as it can. Its own rate refuses
/// nearly all of them; those refusals must not use up the global budget, or a single address
/// locks every other client out of the gateway.
#[test]
fn one_address_flooding_does_not_lock_other_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    let limits = "global_per_second = 10\nclient_per_second = 1\nclient_burst = 2\n\
                  account_per_minute = 0\nlogin_free = 1000";
    let gateway = Gateway::start_on(dir.path(), &node, &node.endpoint, limits, "[::]:0");
    rt().block_on(async {
        enroll(&node, b"alice").await;
        let port = gateway.endpoint.rsplit(':').next().unwrap().to_owned();
        let flooder = RawClient::connect(format!("http://[::1]:{port}"))
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let mut floods = Vec::new();
        for _ in 0..4 {
            let (mut raw, stop, sent) = (flooder.clone(), Arc::clone(&stop), Arc::clone(&sent));
            floods.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = raw.call(pb::SealedRequest::default()).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        while sent.load(Ordering::Relaxed) < 500 {
            tokio::task::yield_now().await;
        }
        let device = ipv4_device(&gateway, &node).await;
        let first = device.status(b"alice").await;
        let second = device.status(b"alice").await;
        stop.store(true, Ordering::Relaxed);
        for f in floods {
            f.await.unwrap();
        }
        assert!(first.is_ok(), "{first:?}");
        assert!(second.is_ok(), "{second:?}");
    });
}

/// Relays to the node, but loses the answer to the next login start it is armed for (after
/// the vault acted on it), as a dropped connection would.
struct LossyLink {
    upstream: RawClient<Channel>,
    lose_next_login_start: AtomicBool,
    login_starts_relayed: AtomicUsize,
}

struct LinkService(Arc<LossyLink>);

#[tonic::async_trait]
impl Vault for LinkService {
    async fn call(
        &self,
        request: tonic::Request<pb::SealedRequest>,
    ) -> Result<tonic::Response<pb::SealedResponse>, tonic::Status> {
        let link = &self.0;
        let sealed = request.into_inner();
        let login_start = sealed.class == pb::RequestClass::LoginStart as i32;
        let answer = link.upstream.clone().call(sealed).await?;
        if login_start {
            link.login_starts_relayed.fetch_add(1, Ordering::SeqCst);
            if link.lose_next_login_start.swap(false, Ordering::SeqCst) {
                return Err(tonic::Status::unavailable("connection reset"));
            }
        }
        Ok(answer)
    }

    async fn info(
        &self,
        request: tonic::Request<pb::InfoRequest>,
    ) -> Result<tonic::Response<pb::InfoResponse>, tonic::Status> {
        self.0.upstream.clone().info(request.into_inner()).await
    }
}

async fn start_lossy_link(node: &Node) -> (String, Arc<LossyLink>) {
    let link = Arc::new(LossyLink {
        upstream: RawClient::connect(node.endpoint.clone()).await.unwrap(),
        lose_next_login_start: AtomicBool::new(false),
        login_starts_relayed: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VaultServer::new(LinkService(Arc::clone(&link))))
            .serve_with_incoming(incoming),
    );
    (format!("http://{addr}"), link)
}

/// The user mistyped once, so the account's next login start puts it in backoff. That login's
/// KE2 is lost on the way back, after the vault spent the attempt; the device's retry reaches
/// the gateway inside the backoff. The vault would repeat the KE2 for free while the login
/// session is open, so the device must wait out the backoff and retry rather than give up on
/// an attempt it paid for and never had the use of.
#[test]
fn a_lost_ke2_is_fetched_again_after_the_backoff_instead_of_wasting_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), 0);
    rt().block_on(async {
        let key = enroll(&node, b"alice").await;
        let (link_endpoint, link) = start_lossy_link(&node).await;
        let limits = "client_per_second = 0\naccount_per_minute = 0\nlogin_free = 1\n\
                      login_backoff_base_ms = 1000";
        let gateway = Gateway::start(dir.path(), &node, &link_endpoint, limits);
        let device = gateway.client(&node).await;
        let typo = device.recover(b"alice", b"typo").await;
        assert!(
            matches!(typo, Err(ref e) if e.is_auth_failure()),
            "{typo:?}"
        );

        link.lose_next_login_start.store(true, Ordering::SeqCst);
        let pending = device.login_start(b"alice", PASSWORD).await;
        let pending = match pending {
            Ok(p) => p,
            Err(e) => panic!("the paid-for KE2 was given up: {e}"),
        };
        // The typo, the lost delivery and its retry; only the first two spent an attempt.
        assert_eq!(link.login_starts_relayed.load(Ordering::SeqCst), 3);
        assert_eq!(attempts(&node, b"alice").await, (3, 5));
        assert_eq!(device.login_finish(pending).await.unwrap(), key);
        assert_eq!(attempts(&node, b"alice").await, (5, 5));
    });
}

/// Limits in seconds that overflow when counted in milliseconds are a config error (exit 1,
/// naming the key), not a panic at start or, after wrapping to zero, at the first login.
#[test]
fn limits_too_large_to_count_in_milliseconds_are_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate().unwrap();
    for (key, value) in [
        ("login_forgive_secs", "2305843009213693952"),
        ("login_backoff_max_secs", "18446744073709551615"),
    ] {
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n{}[limits]\n{key} = {value}\n\
                 [[partitions]]\nid = 0\nreplicas = [\"http://127.0.0.1:1\"]\n",
                lockbox_vault::config::AuthConfig::toml_section(&issuer, FLEET)
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockbox"))
            .args(["gateway", "serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}
