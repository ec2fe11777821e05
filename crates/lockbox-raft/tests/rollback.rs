//! Rollback (DESIGN.md §5): a replica restarted from an older copy of its disk must refuse to
//! take part, and the cluster must go on answering with the true records. Played against the
//! mark in a SoftHSM2 token (the production path; each test in its own process) and against
//! the sealed-file mark of the embedded default.

mod common;

use common::{Cluster, file_mark};
use lockbox_hsm::test_support::run_isolated_with_tokens;
use lockbox_hsm::{MarkStore, Pkcs11Mark};
use lockbox_raft::{GroupId, HostError, NodeId, Outcome, Timing};
use std::path::PathBuf;
use std::sync::Arc;

const G: GroupId = 1;
const ACCOUNT: &[u8] = b"acct";

fn old_copy(path: &std::path::Path) -> PathBuf {
    path.with_extension("old")
}

/// Spends five "guesses" (record writes) after `victims` took a copy of their disks, makes
/// sure they acknowledged them, then puts the old copies back.
async fn roll_back(c: &mut Cluster, victims: &[NodeId]) {
    assert_eq!(
        c.write(G, ACCOUNT, 0, b"attempts=10").await,
        Outcome::Applied { seq: 1 }
    );
    c.all_applied(G, c.applied_anywhere(G).await).await;
    for &v in victims {
        let node = c.node(v);
        node.kill().await;
        std::fs::copy(&node.db_path, old_copy(&node.db_path)).unwrap();
        node.start().await;
    }
    for seq in 1..=5u64 {
        let value = format!("attempts={}", 10 - seq);
        assert_eq!(
            c.write(G, ACCOUNT, seq, value.as_bytes()).await,
            Outcome::Applied { seq: seq + 1 }
        );
    }
    c.all_applied(G, c.applied_anywhere(G).await).await;
    for &v in victims {
        let node = c.node(v);
        node.kill().await;
        std::fs::copy(old_copy(&node.db_path), &node.db_path).unwrap();
    }
}

async fn assert_true_record(c: &mut Cluster) {
    let leader = c.leader(G).await;
    let read = c
        .node(leader)
        .host()
        .read(G, ACCOUNT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (read.seq, read.sealed.as_slice()),
        (6, &b"attempts=5"[..]),
        "the cluster answers with the spent counter, not the restored one"
    );
}

async fn refuses(c: &mut Cluster, v: NodeId) {
    match c.node(v).try_start().await {
        Err(HostError::RolledBack(r)) => {
            assert_eq!(r.group, G);
            assert!(r.disk_last < r.mark_last, "{r}");
        }
        Err(e) => panic!("node {v} failed for another reason: {e}"),
        Ok(()) => panic!("node {v} started on a disk older than its mark"),
    }
}

async fn scenario(mut c: Cluster) {
    let (_, followers) = c.split(G).await;
    let victims = [followers[0], followers[1]];
    roll_back(&mut c, &victims).await;

    refuses(&mut c, victims[0]).await;
    assert_true_record(&mut c).await;
    refuses(&mut c, victims[1]).await;
    assert_true_record(&mut c).await;
    assert_eq!(
        c.write(G, ACCOUNT, 6, b"attempts=4").await,
        Outcome::Applied { seq: 7 },
        "the three honest replicas carry on without the two refused ones"
    );
    c.stop_all().await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn two_replicas_restored_from_old_disks_refuse_to_start_against_their_token_marks() {
    run_isolated_with_tokens(5, |hsm| {
        let tokens: Vec<_> = (0..5).map(|_| hsm.new_token()).collect();
        runtime().block_on(async {
            let c = Cluster::start_with(
                5,
                &[G],
                Timing::default(),
                |id, _| {
                    let token = &tokens[usize::try_from(id - 1).unwrap()];
                    let mark = Pkcs11Mark::open(&token.config, &format!("node-{id}")).unwrap();
                    Arc::new(mark) as Arc<dyn MarkStore>
                },
                |_| None,
            )
            .await;
            scenario(c).await;
        });
    });
}

#[test]
fn a_data_directory_restored_on_its_own_is_caught_by_the_file_mark() {
    runtime().block_on(async {
        let c = Cluster::start_with(5, &[G], Timing::default(), file_mark, |_| None).await;
        scenario(c).await;
    });
}

#[test]
fn a_node_whose_mark_was_deleted_refuses_to_start() {
    runtime().block_on(async {
        let mut c = Cluster::start_with(5, &[G], Timing::default(), file_mark, |_| None).await;
        assert_eq!(
            c.write(G, ACCOUNT, 0, b"attempts=10").await,
            Outcome::Applied { seq: 1 }
        );
        c.all_applied(G, c.applied_anywhere(G).await).await;
        let (_, followers) = c.split(G).await;
        let v = followers[0];
        c.node(v).kill().await;
        let dir = c.node(v).db_path.parent().unwrap().to_path_buf();
        std::fs::remove_file(dir.join(format!("mark-{v}"))).unwrap();
        match c.node(v).try_start().await {
            Err(HostError::MarkMissing(group)) => assert_eq!(group, G),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(()) => panic!("started with nothing to vouch for its disk"),
        }
        c.stop_all().await;
    });
}
