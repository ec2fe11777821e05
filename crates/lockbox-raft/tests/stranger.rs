//! The stranger who reaches a node's Raft port. Raft trusts its peers completely: one forged
//! AppendEntries in a made-up leader's name rewrites a replica's log, and with it the records
//! it applies. So the peer transport is mutual TLS under the cluster's node CA, and this test
//! plays the stranger three ways against it, then sends the same forged message with a real
//! node certificate to show the message itself would have worked.

mod common;

use common::{Cluster, file_mark};
use lockbox_proto::raft_pb::RaftMessage;
use lockbox_proto::raft_pb::raft_client::RaftClient;
use lockbox_raft::{Command, GroupId, NodeId, Outcome, PeerTls, Timing, TypeConfig};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const G: GroupId = 3;
const STRANGER: NodeId = 99;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for 127.0.0.1 signed by `ca`: (cert PEM, key PEM).
fn issue(ca: &Ca) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn peer_tls(ca: &Ca) -> PeerTls {
    let (cert, key) = issue(ca);
    PeerTls::from_pem(cert.as_bytes(), key.as_bytes(), ca.pem.as_bytes())
}

/// AppendEntries from a leader that does not exist: a newer term, one entry that resets the
/// account's record, committed at once.
fn forged(prev: LogId<NodeId>, term: u64) -> AppendEntriesRequest<TypeConfig> {
    let log_id = LogId::new(CommittedLeaderId::new(term, STRANGER), prev.index + 1);
    AppendEntriesRequest {
        vote: Vote::new_committed(term, STRANGER),
        prev_log_id: Some(prev),
        entries: vec![openraft::Entry {
            log_id,
            payload: EntryPayload::Normal(Command {
                account: b"acct".to_vec(),
                expected_seq: 1,
                sealed: b"attempts=10 (forged)".to_vec(),
            }),
        }],
        leader_commit: Some(log_id),
    }
}

async fn send(
    endpoint: Endpoint,
    target: NodeId,
    req: &AppendEntriesRequest<TypeConfig>,
) -> Result<AppendEntriesResponse<NodeId>, String> {
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let reply = RaftClient::new(channel)
        .append_entries(RaftMessage {
            group: G,
            payload: postcard::to_stdvec(req).unwrap().into(),
            target,
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let result: Result<AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>> =
        postcard::from_bytes(&reply.payload).unwrap();
    result.map_err(|e| e.to_string())
}

fn tls_endpoint(url: &str, ca: &Ca, identity: Option<(String, String)>) -> Endpoint {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
}

/// Five nodes under mutual TLS with `node_ca`, and one record written (seq 1, "attempts=3").
async fn tls_cluster(node_ca: &Ca) -> Cluster {
    let mut c = Cluster::start_with(5, &[G], Timing::default(), file_mark, |_| {
        Some(peer_tls(node_ca))
    })
    .await;
    assert_eq!(
        c.write(G, b"acct", 0, b"attempts=3").await,
        Outcome::Applied { seq: 1 }
    );
    c.all_applied(G, c.applied_anywhere(G).await).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_cannot_speak_raft_to_a_node_only_a_certified_peer_can() {
    let node_ca = ca();
    let mut c = tls_cluster(&node_ca).await;
    let (_, followers) = c.split(G).await;
    let victim = c.node(followers[0]);
    let raft = victim.host().raft(G).unwrap();
    let m = raft.metrics().borrow().clone();
    let req = forged(m.last_applied.unwrap(), m.current_term + 10);
    let addr = victim.addr;

    let plain = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let https = format!("https://{addr}");
    let foreign = ca();
    let attempts = [
        ("plain gRPC", plain),
        (
            "TLS without a client certificate",
            tls_endpoint(&https, &node_ca, None),
        ),
        (
            "TLS with a certificate from another CA",
            tls_endpoint(&https, &node_ca, Some(issue(&foreign))),
        ),
    ];
    for (how, endpoint) in attempts {
        let got = send(endpoint, victim.id, &req).await;
        assert!(
            got.is_err(),
            "{how}: the node took a stranger's AppendEntries: {got:?}"
        );
    }
    let record = victim.host().local_record(G, b"acct").unwrap().unwrap();
    assert_eq!(
        record.sealed, b"attempts=3",
        "the victim's record is untouched"
    );
    assert_eq!(
        raft.metrics().borrow().current_term,
        m.current_term,
        "and so is its term"
    );

    // The control: the same message with a node certificate is obeyed. (That is the trust the
    // node CA carries; it must sign only vault nodes.)
    let insider = tls_endpoint(&https, &node_ca, Some(issue(&node_ca)));
    let got = send(insider, victim.id, &req).await;
    assert!(
        matches!(got, Ok(AppendEntriesResponse::Success)),
        "the forged message is a real threat: {got:?}"
    );
    let forged_applied = raft
        .wait(common::WAIT)
        .applied_index_at_least(Some(req.entries[0].log_id.index), "forged entry applied")
        .await;
    assert!(forged_applied.is_ok());
    let record = victim.host().local_record(G, b"acct").unwrap().unwrap();
    assert_eq!(record.sealed, b"attempts=10 (forged)");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_chunk_past_the_limit_is_refused_before_it_is_buffered() {
    use lockbox_raft::net::MAX_SNAPSHOT_BYTES;
    use openraft::raft::InstallSnapshotRequest;
    let node_ca = ca();
    let mut c = tls_cluster(&node_ca).await;
    let (_, followers) = c.split(G).await;
    let victim = c.node(followers[0]);
    let m = victim.host().raft(G).unwrap().metrics().borrow().clone();
    let https = format!("https://{}", victim.addr);
    // A certified peer (or a buggy one): a chunk that would make the node grow its buffer to
    // past the limit (a terabyte, were it 1 << 40).
    let req: InstallSnapshotRequest<TypeConfig> = InstallSnapshotRequest {
        vote: Vote::new_committed(m.current_term + 1, STRANGER),
        meta: openraft::SnapshotMeta {
            last_log_id: m.last_applied,
            last_membership: openraft::StoredMembership::default(),
            snapshot_id: "huge".into(),
        },
        offset: MAX_SNAPSHOT_BYTES,
        data: vec![0; 16],
        done: false,
    };
    assert!(req.offset + 16 > MAX_SNAPSHOT_BYTES);
    let channel = tls_endpoint(&https, &node_ca, Some(issue(&node_ca)))
        .connect()
        .await
        .unwrap();
    let refused = RaftClient::new(channel)
        .install_snapshot(RaftMessage {
            group: G,
            payload: postcard::to_stdvec(&req).unwrap().into(),
            target: victim.id,
        })
        .await;
    let status = refused.expect_err("a chunk past the limit must be refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert_eq!(
        c.write(G, b"acct", 1, b"attempts=2").await,
        Outcome::Applied { seq: 2 },
        "and the node carries on"
    );
    c.stop_all().await;
}
