//! gRPC over TLS when `[tls]` is configured.

mod common;

use common::{KSF, PARTITION, TestNode, new_key};
use lockbox_client::VaultClient;

const ACCOUNT: &[u8] = b"+15550009999";

/// A self-signed certificate for localhost in `dir/NAME.pem` and its key in `dir/NAME.key`;
/// returns the certificate PEM (the CA a client trusts).
fn write_cert(dir: &std::path::Path, name: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    cert.cert.pem()
}

/// A node serving TLS with `dir/node.pem`, and its `https://localhost:PORT` URL.
async fn tls_node(dir: &std::path::Path) -> (TestNode, String) {
    let node = TestNode::start_in(
        dir,
        "[sealer]\nkind = \"software\"\n[tls]\ncert = \"node.pem\"\nkey = \"node.key\"\n",
    )
    .await;
    let port = node.endpoint().rsplit(':').next().unwrap().to_string();
    (node, format!("https://localhost:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_grpc_over_tls_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_cert(dir.path(), "node");
    let (node, tls_endpoint) = tls_node(dir.path()).await;
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

/// Device → gateway → node, every hop over TLS: the gateway trusts the node's certificate
/// through `[upstream] ca`, the device trusts the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_tls_and_reaches_a_tls_node() {
    let dir = tempfile::tempdir().unwrap();
    let node_ca = write_cert(dir.path(), "node");
    let gateway_ca = write_cert(dir.path(), "gateway");
    let (node, node_url) = tls_node(dir.path()).await;
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{}[tls]\ncert = \"gateway.pem\"\nkey = \"gateway.key\"\n\
             [upstream]\nca = \"node.pem\"\n[[partitions]]\nid = {PARTITION}\nreplicas = [\"{node_url}\"]\n",
            lockbox_vault::config::AuthConfig::toml_section(&node.issuer, common::FLEET)
        ),
    )
    .unwrap();
    let gateway = lockbox_gateway::bind(lockbox_gateway::GatewayConfig::load(&config).unwrap())
        .await
        .unwrap();
    let gateway_url = format!("https://localhost:{}", gateway.local_addr().port());
    tokio::spawn(gateway.serve(std::future::pending()));

    let mut target = VaultClient::discover_with_ca(&node_url, PARTITION, Some(node_ca.as_bytes()))
        .await
        .unwrap();
    target.endpoint = gateway_url;
    let client = VaultClient::connect_with_ca(target.clone(), gateway_ca.as_bytes())
        .await
        .unwrap()
        .with_token_source(node.tokens());
    let key = new_key();
    client.enroll(ACCOUNT, b"pw", &key, 3, KSF).await.unwrap();
    assert_eq!(client.recover(ACCOUNT, b"pw").await.unwrap(), key);
    // A device that trusts only the node's certificate does not get through the gateway.
    let wrong = VaultClient::connect_with_ca(target, node_ca.as_bytes()).await;
    assert!(
        wrong.is_err(),
        "the gateway's certificate was accepted under another CA"
    );
}
