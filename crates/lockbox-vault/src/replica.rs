//! A node's replicated partitions: [`RaftRecords`] is the [`RecordStore`] whose commits are
//! entries in the partition's Raft log (`lockbox-raft`), and whose reads go through the leader.
//!
//! A commit returns once a quorum holds the entry and its apply decided the compare-and-set;
//! `Conflict` comes only from that apply, so it means *not applied*. A refusal before the
//! entry entered the log is [`StorageError::NotLeader`]; anything after is
//! [`StorageError::Unknown`], which the service drops without re-running (the entry may yet
//! commit). Both reach the device as `UNAVAILABLE`, and its retry finds the truth on the leader.

use lockbox_raft::{Command, Host, Outcome, ProposeError, ReadError};
use std::sync::Arc;

use crate::storage::{RecordStore, StorageError, Stored};

/// Records kept in the partitions' Raft groups of one host.
#[derive(Debug, Clone)]
pub struct RaftRecords {
    host: Arc<Host>,
    rt: tokio::runtime::Handle,
}

impl RaftRecords {
    /// `rt` runs the Raft calls; the store itself is called from blocking threads.
    pub fn new(host: Arc<Host>, rt: tokio::runtime::Handle) -> Self {
        Self { host, rt }
    }
}

impl RecordStore for RaftRecords {
    fn load(&self, partition: u32, account: &[u8]) -> Result<Option<Stored>, StorageError> {
        let read = self.rt.block_on(self.host.read(partition, account));
        match read {
            Ok(found) => Ok(found.map(|s| Stored {
                seq: s.seq,
                sealed: s.sealed,
            })),
            Err(ReadError::NotLeader { .. }) => Err(StorageError::NotLeader(partition)),
            Err(e) => Err(StorageError::Unavailable(e.to_string())),
        }
    }

    fn commit(
        &self,
        partition: u32,
        account: &[u8],
        expected_seq: u64,
        sealed: &[u8],
    ) -> Result<u64, StorageError> {
        let cmd = Command {
            account: account.to_vec(),
            expected_seq,
            sealed: sealed.to_vec(),
        };
        match self.rt.block_on(self.host.propose(partition, cmd)) {
            Ok(c) => match c.outcome {
                Outcome::Applied { seq } => Ok(seq),
                Outcome::Conflict { found } => Err(StorageError::Conflict {
                    expected: expected_seq,
                    found,
                }),
                Outcome::NoOp => Err(StorageError::Unknown(
                    "a record write applied as no write".into(),
                )),
            },
            Err(ProposeError::NotLeader { .. }) => Err(StorageError::NotLeader(partition)),
            Err(e) => Err(StorageError::Unknown(e.to_string())),
        }
    }
}
