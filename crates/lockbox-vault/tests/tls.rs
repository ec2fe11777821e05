//! gRPC over TLS when `[tls]` is configured.

mod common;

use common::{KSF, PARTITION, TestNode, new_key};
use lockbox_client::VaultClient;

const ACCOUNT: &[u8] = b"+15550009999";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_grpc_over_tls_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("node.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("node.key"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let node = TestNode::start_in(
        dir.path(),
        "[sealer]\nkind = \"software\"\n[tls]\ncert = \"node.pem\"\nkey = \"node.key\"\n",
    )
    .await;
    let port = node.endpoint().rsplit(':').next().unwrap().to_string();
    let tls_endpoint = format!("https://localhost:{port}");
    let ca = cert.cert.pem();
    let target = VaultClient::discover_with_ca(&tls_endpoint, PARTITION, Some(ca.as_bytes()))
        .await
        .expect("discover over TLS");
    let client = VaultClient::connect_with_ca(target, ca.as_bytes())
        .await
        .unwrap()
        .with_token_source(node.tokens());
    let key = new_key();
    client.enroll(ACCOUNT, b"pw", &key, 3, KSF).await.unwrap();
    assert_eq!(client.recover(ACCOUNT, b"pw").await.unwrap(), key);
    // A plaintext client gets nowhere.
    assert!(
        VaultClient::discover(&node.endpoint(), PARTITION)
            .await
            .is_err()
    );
    // Neither does a TLS client that trusts another CA.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let err =
        VaultClient::discover_with_ca(&tls_endpoint, PARTITION, Some(other.cert.pem().as_bytes()))
            .await;
    assert!(
        err.is_err(),
        "a certificate from an untrusted CA was accepted"
    );
}
