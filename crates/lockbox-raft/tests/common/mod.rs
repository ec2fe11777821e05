//! A cluster of real hosts in this process: each its own redb file and rollback mark, all
//! talking real gRPC on loopback; started, killed and restarted from their disks.
#![allow(dead_code)]

use lockbox_hsm::{FileMark, MarkStore, SoftwareSealer};
use lockbox_raft::{
    Command, GroupId, Host, HostConfig, HostError, LogKey, NodeId, Outcome, PeerTls, ProposeError,
    Timing,
};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const WAIT: Option<Duration> = Some(Duration::from_secs(60));

pub struct Node {
    pub tls: Option<PeerTls>,
    pub marks: Arc<dyn MarkStore>,
    pub id: NodeId,
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    groups: Vec<GroupId>,
    timing: Timing,
    running: Option<(
        Host,
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

impl Node {
    pub async fn start(&mut self) {
        self.try_start().await.expect("open host");
    }

    pub async fn try_start(&mut self) -> Result<(), HostError> {
        assert!(self.running.is_none());
        let host = Host::open(&HostConfig {
            id: self.id,
            db_path: self.db_path.clone(),
            marks: self.marks.clone(),
            log_keys: self.groups.iter().map(|&g| (g, log_key(g))).collect(),
            groups: self.groups.clone(),
            timing: self.timing,
            tls: self.tls.clone(),
        })
        .await?;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind");
        let peers = host.peer_server(None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = peers
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.running = Some((host, server, stop));
        Ok(())
    }

    /// As far as the others can tell, like SIGKILL: the listener and every connection close.
    /// (Aborting the server task alone would leave its connection tasks serving.)
    pub async fn kill(&mut self) {
        let (host, mut server, stop) = self.running.take().expect("running");
        let _ = stop.send(());
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        host.shutdown().await;
    }

    pub fn host(&self) -> &Host {
        &self.running.as_ref().expect("running").0
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The highest log index a write returned, per group: metrics may lag the reply.
    written: std::collections::HashMap<GroupId, u64>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes whose marks are sealed files beside (not inside) their databases.
    pub async fn start(n: u64, groups: &[GroupId], timing: Timing) -> Self {
        Self::start_with(n, groups, timing, file_mark, |_| None).await
    }

    pub async fn start_with(
        n: u64,
        groups: &[GroupId],
        timing: Timing,
        marks: impl Fn(NodeId, &Path) -> Arc<dyn MarkStore>,
        tls: impl Fn(NodeId) -> Option<PeerTls>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for id in 1..=n {
            // Reserve a port, free it, and bind it again in start(): restarts reuse it.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            nodes.push(Node {
                marks: marks(id, dir.path()),
                tls: tls(id),
                id,
                addr,
                db_path: dir.path().join(format!("node-{id}.redb")),
                groups: groups.to_vec(),
                timing,
                running: None,
            });
        }
        for node in &mut nodes {
            node.start().await;
        }
        let members: BTreeMap<NodeId, BasicNode> = nodes
            .iter()
            .map(|n| (n.id, BasicNode::new(n.addr.to_string())))
            .collect();
        nodes[0]
            .host()
            .bootstrap(&members)
            .await
            .expect("bootstrap");
        Self {
            nodes,
            written: Default::default(),
            _dir: dir,
        }
    }

    pub fn node(&mut self, id: NodeId) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    /// A running node that believes it leads `group` (polls until one does). It may be deposed
    /// a moment later; callers follow NotLeader.
    pub async fn leader(&self, group: GroupId) -> NodeId {
        for _ in 0..1200 {
            for node in self.nodes.iter().filter(|n| n.running.is_some()) {
                let m = node.host().raft(group).unwrap().metrics().borrow().clone();
                if m.state == openraft::ServerState::Leader {
                    return node.id;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader of group {group} within a minute");
    }

    /// The leader of `group` and the other nodes, in id order.
    pub async fn split(&self, group: GroupId) -> (NodeId, Vec<NodeId>) {
        let leader = self.leader(group).await;
        let others = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&id| id != leader)
            .collect();
        (leader, others)
    }

    /// Proposes through whoever leads `group` now, following NotLeader answers.
    pub async fn write(
        &mut self,
        group: GroupId,
        account: &[u8],
        expected: u64,
        sealed: &[u8],
    ) -> Outcome {
        let cmd = Command {
            account: account.to_vec(),
            expected_seq: expected,
            sealed: sealed.to_vec(),
        };
        for _ in 0..20 {
            let leader = self.leader(group).await;
            match self.node(leader).host().propose(group, cmd.clone()).await {
                Ok(done) => {
                    let top = self.written.entry(group).or_default();
                    *top = (*top).max(done.index);
                    return done.outcome;
                }
                Err(ProposeError::NotLeader { .. }) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("proposal failed: {e}"),
            }
        }
        panic!("no leader took the proposal");
    }

    /// Waits until every running replica of `group` has applied `index`.
    pub async fn all_applied(&self, group: GroupId, index: u64) {
        for node in self.nodes.iter().filter(|n| n.running.is_some()) {
            node.host()
                .raft(group)
                .unwrap()
                .wait(WAIT)
                .applied_index_at_least(Some(index), "caught up")
                .await
                .unwrap_or_else(|e| panic!("node {} did not catch up: {e}", node.id));
        }
    }

    /// The highest index any running replica has applied, or any write returned: at least
    /// that of every write that returned (metrics can lag a reply).
    pub async fn applied_anywhere(&self, group: GroupId) -> u64 {
        let written = self.written.get(&group).copied().unwrap_or(0);
        self.nodes
            .iter()
            .filter(|n| n.running.is_some())
            .map(|n| {
                n.host()
                    .raft(group)
                    .unwrap()
                    .metrics()
                    .borrow()
                    .last_applied
                    .map_or(0, |l| l.index)
            })
            .max()
            .unwrap_or(0)
            .max(written)
    }

    pub async fn stop_all(mut self) {
        for node in &mut self.nodes {
            if node.running.is_some() {
                node.kill().await;
            }
        }
    }
}

pub fn file_mark(id: NodeId, dir: &Path) -> Arc<dyn MarkStore> {
    let sealer = Arc::new(SoftwareSealer::create(dir.join(format!("sealer-{id}.key"))).unwrap());
    Arc::new(FileMark::new(
        dir.join(format!("mark-{id}")),
        sealer,
        &format!("node-{id}"),
    ))
}

/// Every replica of a group holds the same log key (the vault derives it from the partition's
/// secrets); a fixed one per group here.
pub fn log_key(group: GroupId) -> LogKey {
    let mut k = [0x5a; 32];
    k[..4].copy_from_slice(&group.to_be_bytes());
    LogKey::new(lockbox_crypto::Secret32::new(k))
}
