//! The Prometheus endpoint counting what happened. Alone in its test binary: the metrics
//! recorder is process-global, so another test in the same process would add to its counters.

mod common;

use common::{KSF, TestNode, new_key};
use std::io::{Read, Write};

const ACCOUNT: &[u8] = b"+15550009999";

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
