//! The vault's replicated partitions (DESIGN.md §5): each partition is one openraft group of
//! replicas, a node hosts replicas of many, and all of a node's groups share one redb database
//! whose single writer commits what arrives together in one fsync (group commit).
//!
//! Does: keep each group's log, vote and state machine (sealed records, with the
//! compare-and-set on the record sequence decided when an entry is applied) in redb; snapshot
//! and compact the log; carry Raft messages between nodes over one gRPC service, multiplexed by
//! group, under mutual TLS (or, in a simulation, on the test's own [`Wire`]); propose a write
//! and return the outcome its apply decided once a quorum committed it; read linearizably
//! through the leader; keep the node's rollback mark
//! ([`mark`]) ahead of every acknowledgement and refuse a disk found behind it; MAC-chain the
//! log on disk ([`chain`]) and refuse an altered entry.
//! Not yet: authenticate the applied state on disk (see docs/decisions.md).
//! Does not: seal or open records (the caller hands sealed bytes), decide anything about
//! passwords or guesses (`lockbox-vault-core`), or derive the partition log keys (the vault
//! node makes them from the partition's secrets).
//! Trusts: openraft for consensus, redb to honour fsync, the node CA that signs every peer's
//! certificate (mutual TLS), and its rollback mark store.
#![forbid(unsafe_code)]

pub mod chain;
pub mod db;
pub mod host;
pub mod log;
pub mod mark;
pub mod members;
pub mod net;
pub mod sm;
pub mod types;

pub use chain::LogKey;
pub use db::{CommitStats, DbError, NodeDb};
pub use host::{
    Committed, Host, HostConfig, HostError, PeerServer, ProposeError, ReadError, Role, Timing,
};
pub use lockbox_proto::raft_pb::RaftMessage;
pub use members::{GroupMembers, MemberError, MemberRequest};
pub use net::{
    ForwardHandler, Forwarded, MemberReply, PeerTls, RaftService, Rpc, Wire, WireCall, ask_members,
};
pub use openraft::BasicNode;
pub use types::{Command, GroupId, NodeId, Outcome, Stored, TypeConfig};
