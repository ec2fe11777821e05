//! A vault node's replicas: one Raft group per partition it hosts, sharing one database, one
//! committer and one transport.

use lockbox_hsm::MarkStore;
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::chain::LogKey;
use crate::db::{CommitStats, DbError, NodeDb};
use crate::log::{LogOpenError, LogStore};
use crate::mark::{self, RolledBack};
use crate::net::{Channels, ForwardHandler, Groups, Network, PeerTls, RaftService, Wire};
use crate::sm::{StateMachine, load_record};
use crate::types::{Command, GroupId, NodeId, Outcome, Raft, Stored};

/// Raft timing. The defaults hold on a loaded 2-core machine: an election waits for well over
/// any fsync'd append seen there under load (tens of milliseconds), so a slow disk does not
/// depose a healthy leader.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) after this many applied entries.
    pub snapshot_every: u64,
    /// How long a proposal may wait for its commit before its outcome is reported unknown.
    pub commit_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 500,
            election_min_ms: 1500,
            election_max_ms: 3000,
            snapshot_every: 10_000,
            commit_wait: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub id: NodeId,
    pub db_path: PathBuf,
    /// Where the rollback mark lives: the HSM token in production.
    pub marks: Arc<dyn MarkStore>,
    /// Each hosted group's log key (the same on every replica of the group).
    pub log_keys: BTreeMap<GroupId, LogKey>,
    pub groups: Vec<GroupId>,
    pub timing: Timing,
    /// Mutual TLS with the other nodes; `None` (plain gRPC) only on loopback, in tests.
    pub tls: Option<PeerTls>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("this node hosts no replica of group {0}")]
    UnknownGroup(GroupId),
    /// The disk is older than what this node already promised: it must not take part. Bring
    /// it back as a new member (a new node id, an empty disk) that catches up from the quorum.
    #[error("refusing to start: {0}")]
    RolledBack(#[from] RolledBack),
    /// An entry on this node's disk was altered: it must not take part either.
    #[error("refusing to start: {0}")]
    Log(#[from] LogOpenError),
    /// The disk holds Raft state but the mark store holds no mark: it was deleted or replaced,
    /// and nothing vouches for the disk.
    #[error(
        "refusing to start: group {0} has Raft state on disk but the rollback mark is missing \
         (deleted, or another token); bring the node back as a new member"
    )]
    MarkMissing(GroupId),
    #[error("no log key for group {0}")]
    MissingLogKey(GroupId),
}

/// A committed proposal: what its apply decided, and where in the group's log it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub outcome: Outcome,
    pub index: u64,
}

/// Why a proposal has no outcome. Only [`ProposeError::NotLeader`] means *definitely not
/// applied*; after [`ProposeError::Unknown`] the entry may yet commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader of group {group} (leader: {leader:?})")]
    NotLeader {
        group: GroupId,
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("this node hosts no replica of group {0}")]
    UnknownGroup(GroupId),
}

/// Why a linearizable read was refused. Nothing was read; any replica may be asked again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader of group {group} (leader: {leader:?})")]
    NotLeader {
        group: GroupId,
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    #[error("group unavailable: {0}")]
    Unavailable(String),
    #[error("this node hosts no replica of group {0}")]
    UnknownGroup(GroupId),
}

/// What this replica is in its group, as far as it knows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Another node leads (`leader`: its id and peer address, when known).
    Follower {
        leader: Option<(NodeId, String)>,
    },
}

/// A node's replicas of its groups.
#[derive(Debug)]
pub struct Host {
    id: NodeId,
    db: NodeDb,
    groups: Groups,
    channels: Channels,
    timing: Timing,
    tls: Option<PeerTls>,
    /// No rollback mark existed when this host opened: a node that never took part before.
    new: bool,
}

fn raft_config(timing: &Timing) -> Result<Arc<openraft::Config>, HostError> {
    let config = openraft::Config {
        cluster_name: "lockbox-vault".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    Ok(Arc::new(
        config
            .validate()
            .map_err(|e| HostError::Raft(e.to_string()))?,
    ))
}

impl Host {
    /// Opens the node database and starts a Raft for each group, from what the disk holds.
    pub async fn open(cfg: &HostConfig) -> Result<Self, HostError> {
        Self::start(cfg, Channels::new(cfg.tls.clone())).await
    }

    /// Like [`Self::open`], with every Raft message sent on `wire` instead of gRPC (a
    /// simulation's network). What arrives for this node goes to [`Self::peer_service`].
    pub async fn open_on_wire(cfg: &HostConfig, wire: Arc<dyn Wire>) -> Result<Self, HostError> {
        Self::start(cfg, Channels::on_wire(wire)).await
    }

    async fn start(cfg: &HostConfig, channels: Channels) -> Result<Self, HostError> {
        let db = NodeDb::open(&cfg.db_path, cfg.marks.clone())?;
        let config = raft_config(&cfg.timing)?;
        let mut logs = Vec::new();
        let mark = db.opened_mark().cloned();
        for &group in &cfg.groups {
            let key = cfg
                .log_keys
                .get(&group)
                .cloned()
                .ok_or(HostError::MissingLogKey(group))?;
            let log = LogStore::open(&db, group, key)?;
            let (vote, last) = log.disk_state();
            match &mark {
                Some(m) => mark::check(group, m.group(group), vote, last)?,
                None if vote.is_some() || last.is_some() => {
                    return Err(HostError::MarkMissing(group));
                }
                None => {}
            }
            logs.push((group, log));
        }
        if mark.is_none() {
            // A new node: from here on, a missing mark means a lost one.
            let empty = mark::HighWater::default().encode()?;
            cfg.marks.store(&empty).map_err(|e| {
                HostError::Raft(format!("cannot store the first rollback mark: {e}"))
            })?;
        }
        let groups = Groups::default();
        for (group, log) in logs {
            let raft = Raft::new(
                cfg.id,
                config.clone(),
                Network::new(group, channels.clone()),
                log,
                StateMachine::open(&db, group)?,
            )
            .await
            .map_err(|e| HostError::Raft(e.to_string()))?;
            groups.insert(group, raft);
        }
        Ok(Self {
            id: cfg.id,
            db,
            groups,
            channels,
            timing: cfg.timing,
            tls: cfg.tls.clone(),
            new: mark.is_none(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether this node had never taken part in any group before this start (no rollback mark
    /// existed). Only such a node may [`bootstrap`](Self::bootstrap) a cluster: one that lost
    /// its disk but not its mark is refused at open, never mistaken for a new one.
    pub fn is_new(&self) -> bool {
        self.new
    }

    /// The peer transport's server (with mutual TLS when configured), to run on the node's
    /// peer address. `forward` runs the client requests other replicas hand to this one while
    /// it leads; without it, such requests are refused.
    pub fn peer_server(&self, forward: Option<Arc<dyn ForwardHandler>>) -> PeerServer {
        PeerServer {
            service: self.peer_service(forward).into_server(),
            tls: self.tls.clone(),
        }
    }

    /// What answers the Raft messages that arrive for this node: behind [`Self::peer_server`],
    /// or at the end of a simulation's [`Wire`].
    pub fn peer_service(&self, forward: Option<Arc<dyn ForwardHandler>>) -> RaftService {
        RaftService::new(self.id, self.groups.clone(), self.db.clone(), forward)
    }

    /// Whether this replica leads `group` now, and if not, who does. A leader that has been
    /// deposed without hearing of it yet still says `Leader`: what it then proposes or reads
    /// fails, so nothing rests on this answer but where a request is run.
    pub fn role(&self, group: GroupId) -> Option<Role> {
        let raft = self.raft(group)?;
        let m = raft.metrics().borrow().clone();
        if m.state == openraft::ServerState::Leader {
            return Some(Role::Leader);
        }
        let leader = m.current_leader.and_then(|l| {
            let node = m.membership_config.membership().get_node(&l)?;
            Some((l, node.addr.clone()))
        });
        Some(Role::Follower { leader })
    }

    /// Hands a client request for `group` to the replica at `addr` (its leader) over the peer
    /// transport, and returns that replica's answer.
    pub async fn forward(
        &self,
        group: GroupId,
        leader: (NodeId, &str),
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let wait = self.timing.commit_wait * 3;
        self.channels.forward(leader, group, payload, wait).await
    }

    /// Makes every group's first membership `members`. Run once, on one node, when a cluster is
    /// created; a group that already has a membership is left as it is.
    pub async fn bootstrap(&self, members: &BTreeMap<NodeId, BasicNode>) -> Result<(), HostError> {
        for (_, raft) in self.groups.all() {
            match raft.initialize(members.clone()).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(HostError::Raft(e.to_string())),
            }
        }
        Ok(())
    }

    pub fn raft(&self, group: GroupId) -> Option<Raft> {
        self.groups.get(group)
    }

    pub fn groups(&self) -> Vec<GroupId> {
        self.groups.all().into_iter().map(|(g, _)| g).collect()
    }

    /// Proposes `cmd` to `group` and returns the outcome its apply decided, once committed by a
    /// quorum. Only the leader accepts; any other replica answers [`ProposeError::NotLeader`].
    pub async fn propose(&self, group: GroupId, cmd: Command) -> Result<Committed, ProposeError> {
        let raft = self.raft(group).ok_or(ProposeError::UnknownGroup(group))?;
        // Only a refusal *before* the entry enters the log is "definitely not applied". openraft
        // also answers ForwardToLeader for an entry truncated from this node after it stepped
        // down, and another replica that holds it may still commit it: so the check is ours,
        // made first, and a later ForwardToLeader is an unknown outcome.
        if let Some(Role::Follower { leader }) = self.role(group) {
            let (leader, addr) = leader.unzip();
            return Err(ProposeError::NotLeader {
                group,
                leader,
                addr,
            });
        }
        let written = tokio::time::timeout(self.timing.commit_wait, raft.client_write(cmd)).await;
        match written {
            Ok(Ok(resp)) => Ok(Committed {
                outcome: resp.data,
                index: resp.log_id.index,
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::Unknown(format!(
                    "leadership moved (to {:?}) while the proposal was in flight",
                    f.leader_id
                )))
            }
            Ok(Err(e)) => Err(ProposeError::Unknown(e.to_string())),
            Err(_) => Err(ProposeError::Unknown(format!(
                "not committed within {:?}",
                self.timing.commit_wait
            ))),
        }
    }

    /// Reads `account`'s record in `group` linearizably: the leader confirms with a quorum that
    /// it still leads, and waits until it has applied everything committed before the read.
    pub async fn read(&self, group: GroupId, account: &[u8]) -> Result<Option<Stored>, ReadError> {
        let raft = self.raft(group).ok_or(ReadError::UnknownGroup(group))?;
        let confirmed =
            tokio::time::timeout(self.timing.commit_wait, raft.ensure_linearizable()).await;
        match confirmed {
            Ok(Ok(_)) => {}
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                return Err(ReadError::NotLeader {
                    group,
                    leader: f.leader_id,
                    addr: f.leader_node.map(|n| n.addr),
                });
            }
            Ok(Err(e)) => return Err(ReadError::Unavailable(e.to_string())),
            Err(_) => {
                return Err(ReadError::Unavailable(format!(
                    "no quorum confirmed leadership within {:?}",
                    self.timing.commit_wait
                )));
            }
        }
        load_record(&self.db, group, account).map_err(|e| ReadError::Unavailable(e.to_string()))
    }

    /// This replica's applied copy of a record, without asking anyone: for tests and
    /// diagnostics, never for a decision.
    pub fn local_record(&self, group: GroupId, account: &[u8]) -> Result<Option<Stored>, DbError> {
        load_record(&self.db, group, account)
    }

    pub fn commit_stats(&self) -> CommitStats {
        self.db.stats()
    }

    /// Stops every group and the committer. The database file is free once this returns.
    pub async fn shutdown(&self) {
        for (group, raft) in self.groups.all() {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(group, "raft shutdown: {e}");
            }
        }
        self.db.close();
    }
}

/// The peer transport's gRPC server.
#[derive(Debug)]
pub struct PeerServer {
    service: lockbox_proto::raft_pb::raft_server::RaftServer<RaftService>,
    tls: Option<PeerTls>,
}

impl PeerServer {
    /// Serves on `listener` until `shutdown` resolves, then closes every connection.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.server_config())?;
        }
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        builder
            .add_service(self.service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}
