//! What a partition's log carries and what applying it returns.

use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// A vault node's id. Never reused: a node that lost its state comes back under a new one.
pub type NodeId = u64;
/// A partition, which is one Raft group.
pub type GroupId = u32;

openraft::declare_raft_types!(
    /// The vault's Raft types: a record write in, its outcome out.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A conditional record write: `sealed` becomes sequence `expected_seq + 1` of `account`'s
/// record if the record is still at `expected_seq` (0 = none yet) when the entry is applied.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub account: Vec<u8>,
    pub expected_seq: u64,
    pub sealed: Vec<u8>,
}

impl core::fmt::Debug for Command {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Command")
            .field("account_len", &self.account.len())
            .field("expected_seq", &self.expected_seq)
            .field("sealed_len", &self.sealed.len())
            .finish()
    }
}

impl core::fmt::Display for Command {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cas(expected_seq={})", self.expected_seq)
    }
}

/// What applying an entry did. Decided once, on apply, identically on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The record is now at `seq`.
    Applied { seq: u64 },
    /// The record was at `found`, not the expected sequence: nothing was written.
    Conflict { found: u64 },
    /// A blank or membership entry: no record touched.
    NoOp,
}

/// A record as the state machine holds it: its sequence number and the sealed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub sealed: Vec<u8>,
}
