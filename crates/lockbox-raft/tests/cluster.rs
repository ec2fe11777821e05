//! Real Raft groups over real gRPC on loopback: five hosts in this process, each with its own
//! redb file, started, killed and restarted from their disks.

mod common;

use common::{Cluster, WAIT};
use lockbox_raft::{Command, GroupId, Outcome, ProposeError, Timing};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_replicas_decide_each_compare_and_set_when_it_applies() {
    let mut c = Cluster::start(5, &[1, 2, 3], Timing::default()).await;
    assert_eq!(
        c.write(1, b"alice", 0, b"v1").await,
        Outcome::Applied { seq: 1 }
    );
    assert_eq!(
        c.write(1, b"alice", 0, b"stale").await,
        Outcome::Conflict { found: 1 },
        "a write against a sequence that moved on must not apply"
    );
    assert_eq!(
        c.write(1, b"alice", 1, b"v2").await,
        Outcome::Applied { seq: 2 }
    );
    assert_eq!(
        c.write(2, b"alice", 0, b"other").await,
        Outcome::Applied { seq: 1 },
        "each group has its own records"
    );

    let (leader, others) = c.split(1).await;
    let follower = others[0];
    let refused = c
        .node(follower)
        .host()
        .propose(
            1,
            Command {
                account: b"bob".to_vec(),
                expected_seq: 0,
                sealed: b"x".to_vec(),
            },
        )
        .await;
    assert!(
        matches!(refused, Err(ProposeError::NotLeader { leader: Some(l), .. }) if l == leader),
        "a follower refuses and names the leader: {refused:?}"
    );
    assert!(
        c.node(follower).host().read(1, b"alice").await.is_err(),
        "a follower does not serve a decisive read"
    );
    let read = c
        .node(leader)
        .host()
        .read(1, b"alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((read.seq, read.sealed.as_slice()), (2, &b"v2"[..]));

    c.all_applied(1, c.applied_anywhere(1).await).await;
    for node in &c.nodes {
        let local = node.host().local_record(1, b"alice").unwrap().unwrap();
        assert_eq!(
            (local.seq, local.sealed.as_slice()),
            (2, &b"v2"[..]),
            "node {}",
            node.id
        );
        assert_eq!(node.host().local_record(3, b"alice").unwrap(), None);
        assert!(
            node.host().local_record(1, b"bob").unwrap().is_none(),
            "the refused proposal never applied anywhere"
        );
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_any_two_nodes_leader_included_loses_nothing_committed() {
    let mut c = Cluster::start(5, &[7], Timing::default()).await;
    for i in 0..10u64 {
        let account = format!("acct-{i}");
        assert_eq!(
            c.write(7, account.as_bytes(), 0, b"a").await,
            Outcome::Applied { seq: 1 }
        );
    }
    let (old_leader, others) = c.split(7).await;
    let other = others[0];
    c.node(old_leader).kill().await;
    c.node(other).kill().await;

    let new_leader = c.leader(7).await;
    assert!(![old_leader, other].contains(&new_leader));
    for i in 0..10u64 {
        let account = format!("acct-{i}");
        assert_eq!(
            c.write(7, account.as_bytes(), 1, b"b").await,
            Outcome::Applied { seq: 2 },
            "three of five carry on, with every earlier commit"
        );
    }

    c.node(old_leader).start().await;
    c.node(other).start().await;
    c.all_applied(7, c.applied_anywhere(7).await).await;
    for node in &c.nodes {
        for i in 0..10u64 {
            let account = format!("acct-{i}");
            let local = node
                .host()
                .local_record(7, account.as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(
                local.seq, 2,
                "node {} restarted from its disk and caught up",
                node.id
            );
        }
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_far_behind_catches_up_from_a_snapshot() {
    let timing = Timing {
        snapshot_every: 20,
        ..Timing::default()
    };
    let mut c = Cluster::start(5, &[4], timing).await;
    assert_eq!(
        c.write(4, b"early", 0, b"e").await,
        Outcome::Applied { seq: 1 }
    );
    let (_, others) = c.split(4).await;
    let lagging = others[0];
    c.node(lagging).kill().await;
    for i in 0..60u64 {
        let account = format!("late-{i}");
        assert_eq!(
            c.write(4, account.as_bytes(), 0, b"l").await,
            Outcome::Applied { seq: 1 }
        );
    }
    let leader = c.leader(4).await;
    let purged = c
        .node(leader)
        .host()
        .raft(4)
        .unwrap()
        .wait(WAIT)
        .metrics(|m| m.purged.is_some_and(|p| p.index > 20), "log compacted")
        .await
        .expect("the leader snapshots and purges its log")
        .purged
        .unwrap();

    c.node(lagging).start().await;
    c.all_applied(4, c.applied_anywhere(4).await).await;
    let host = c.node(lagging).host();
    let m = host.raft(4).unwrap().metrics().borrow().clone();
    assert!(
        m.snapshot.is_some_and(|s| s.index >= purged.index),
        "the entries it missed were purged, so it must have installed a snapshot: {m:?}"
    );
    assert!(host.local_record(4, b"early").unwrap().is_some());
    assert!(host.local_record(4, b"late-59").unwrap().is_some());

    // Its log was purged into a snapshot: what is left must still verify from the saved anchor.
    c.node(leader).kill().await;
    c.node(leader).start().await;
    assert_eq!(
        c.write(4, b"after", 0, b"a").await,
        Outcome::Applied { seq: 1 }
    );
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_to_many_groups_share_fsyncs() {
    let groups: Vec<GroupId> = (0..8).collect();
    let mut c = Cluster::start(5, &groups, Timing::default()).await;
    for &g in &groups {
        c.leader(g).await;
    }
    let before: Vec<_> = c.nodes.iter().map(|n| n.host().commit_stats()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut writers = 0;
    for &g in &groups {
        let leader = c.leader(g).await;
        let raft = c.node(leader).host().raft(g).unwrap();
        for w in 0..8u32 {
            writers += 1;
            let raft = raft.clone();
            tasks.spawn(async move {
                for i in 0..10u32 {
                    let cmd = Command {
                        account: format!("w{w}-{i}").into_bytes(),
                        expected_seq: 0,
                        sealed: vec![7; 300],
                    };
                    let resp = raft.client_write(cmd).await.expect("committed");
                    assert_eq!(resp.data, Outcome::Applied { seq: 1 });
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let entries = writers * 10;
    for (node, before) in c.nodes.iter().zip(before) {
        let after = node.host().commit_stats();
        let (commits, fsyncs, jobs, shared) = (
            after.commits - before.commits,
            after.fsyncs - before.fsyncs,
            after.jobs - before.jobs,
            after.shared - before.shared,
        );
        println!(
            "node {}: {entries} entries in 8 groups; {jobs} jobs in {commits} commits \
             ({fsyncs} fsync'd, {shared} shared by several groups), max batch {}",
            node.id, after.max_batch
        );
        assert!(
            jobs > commits,
            "node {}: {jobs} jobs took {commits} commits: nothing was batched",
            node.id
        );
        assert!(
            shared > 0,
            "node {}: no commit carried appends of two groups together",
            node.id
        );
    }
    c.stop_all().await;
}
