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

/// Device → gateway → node, every hop over TLS: the gateway trusts the node's certificate
/// through `[upstream] ca`, the device trusts the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_tls_and_reaches_a_tls_node() {
    let dir = tempfile::tempdir().unwrap();
    let write_cert = |name: &str| {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join(format!("{name}.pem")), cert.cert.pem()).unwrap();
        let key = dir.path().join(format!("{name}.key"));
        std::fs::write(key, cert.signing_key.serialize_pem()).unwrap();
        cert.cert.pem()
    };
    let node_ca = write_cert("node");
    let gateway_ca = write_cert("gateway");
    let node = TestNode::start_in(
        dir.path(),
        "[sealer]\nkind = \"software\"\n[tls]\ncert = \"node.pem\"\nkey = \"node.key\"\n",
    )
    .await;
    let port = node.endpoint().rsplit(':').next().unwrap().to_string();
    let node_url = format!("https://localhost:{port}");
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
