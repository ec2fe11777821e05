//! Operator-facing parts of the node: gRPC over TLS when `[tls]` is configured, and the
//! Prometheus endpoint counting what happened.

mod common;

use common::{KSF, PARTITION, TestNode, new_key};
use lockbox_client::VaultClient;
use std::io::{Read, Write};

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
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_counts_attempts_and_destructions() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let node = TestNode::start_in(
        dir.path(),
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n[sealer]\nkind = \"software\"\n"),
    )
    .await;
    let client = node.client().await;
    client
        .enroll(ACCOUNT, b"pw", &new_key(), 2, KSF)
        .await
        .unwrap();
    client.recover(ACCOUNT, b"pw").await.unwrap();
    let _ = client.recover(ACCOUNT, b"wrong").await;
    let _ = client.recover(ACCOUNT, b"wrong").await;
    // A guesser who never sends KE3: the next KE1 finds no attempts left and destroys.
    client
        .enroll(ACCOUNT, b"pw", &new_key(), 1, KSF)
        .await
        .unwrap();
    drop(client.login_start(ACCOUNT, b"guess").await.unwrap());
    let err = client.login_start(ACCOUNT, b"guess").await.unwrap_err();
    assert!(err.is_destroyed(), "{err}");
    let body = tokio::task::spawn_blocking(move || scrape(metrics_port))
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
    };
    assert_eq!(value("lockbox_vault_login_attempts_total"), 4.0);
    assert_eq!(value("lockbox_vault_login_success_total"), 1.0);
    assert_eq!(value("lockbox_vault_records_destroyed_total"), 2.0);
    assert_eq!(value("lockbox_vault_enrollments_total"), 2.0);
    assert!(body.contains("lockbox_vault_request_seconds"), "{body}");
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}
