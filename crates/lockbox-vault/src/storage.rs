//! The vault node's durable state, in redb with fsync on every commit.
//!
//! This is the seam the replicated vault replaces: [`RecordStore`] is all the service needs —
//! read a record, and commit a new one *conditionally* on the sequence number it read. A
//! conditional commit is what keeps concurrent logins honest: two KE1s that both read
//! `attempts_left = 5` cannot both write `4`; the second gets [`StorageError::Conflict`] and is
//! retried against the fresh record. The Raft state machine will implement the same trait by
//! turning `commit` into a log entry whose apply step does the same compare-and-set, returning
//! only once a quorum has it.
//!
//! Values are sealed by the caller (HSM key, AAD = partition ‖ account ‖ seq); this module
//! stores bytes and never sees a key.

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use std::path::Path;

/// Records: key = partition (4 bytes BE) ‖ account, value = seq (8 bytes BE) ‖ sealed record.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Node-level sealed blobs (partition secrets), by name.
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("record changed concurrently (expected seq {expected}, found {found})")]
    Conflict { expected: u64, found: u64 },
    #[error("vault database: {0}")]
    Db(String),
    #[error("vault database is corrupt: {0}")]
    Corrupt(&'static str),
    /// Replicated: this node does not lead the partition (now). Nothing was written.
    #[error("this node does not lead partition {0}")]
    NotLeader(u32),
    /// Replicated: no quorum answered the read. Nothing was decided.
    #[error("partition unavailable: {0}")]
    Unavailable(String),
    /// Replicated: the write entered the log but its commit was not seen; it may yet apply.
    #[error("write outcome unknown: {0}")]
    Unknown(String),
}

impl StorageError {
    /// Whether the request may succeed if the device sends it again (to whichever node leads
    /// now): the partition is between leaders, not broken.
    pub fn is_replication(&self) -> bool {
        matches!(
            self,
            Self::NotLeader(_) | Self::Unavailable(_) | Self::Unknown(_)
        )
    }
}

fn db_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Db(e.to_string())
}

/// A record as stored: its sequence number (1 for the first write) and the sealed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub sealed: Vec<u8>,
}

/// What the vault service needs from storage. Every successful `commit` is durable.
pub trait RecordStore: Send + Sync + 'static {
    fn load(&self, partition: u32, account: &[u8]) -> Result<Option<Stored>, StorageError>;
    /// Writes `sealed` as sequence `expected_seq + 1` if the stored sequence is still
    /// `expected_seq` (0 = no record yet). Returns the new sequence number.
    ///
    /// [`StorageError::Conflict`] must mean *definitely not applied*: the service then gives
    /// the request's session back and re-runs it, so a store that reported a conflict for a
    /// write it had applied (say, a replicated log re-proposing an entry after a leader change)
    /// would let one password proof reset the counter twice. Any outcome the store cannot vouch
    /// for is another error, which the service drops without re-running.
    fn commit(
        &self,
        partition: u32,
        account: &[u8],
        expected_seq: u64,
        sealed: &[u8],
    ) -> Result<u64, StorageError>;
}

#[derive(Debug)]
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = Database::create(path).map_err(db_err)?;
        let txn = begin_durable(&db)?;
        txn.open_table(RECORDS).map_err(db_err)?;
        txn.open_table(SECRETS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    pub fn load_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(SECRETS).map_err(db_err)?;
        Ok(table.get(name).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Stores a node secret once; an existing value is never overwritten.
    pub fn store_secret_once(&self, name: &str, sealed: &[u8]) -> Result<bool, StorageError> {
        let txn = begin_durable(&self.db)?;
        let inserted = {
            let mut table = txn.open_table(SECRETS).map_err(db_err)?;
            if table.get(name).map_err(db_err)?.is_some() {
                false
            } else {
                table.insert(name, sealed).map_err(db_err)?;
                true
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(inserted)
    }
}

/// A write transaction whose commit returns only once it is on disk (fsync).
fn begin_durable(db: &Database) -> Result<WriteTransaction, StorageError> {
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate).map_err(db_err)?;
    Ok(txn)
}

fn record_key(partition: u32, account: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + account.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(account);
    k
}

fn stored_seq(v: &[u8]) -> Result<u64, StorageError> {
    let seq = v
        .first_chunk::<8>()
        .ok_or(StorageError::Corrupt("short record value"))?;
    Ok(u64::from_be_bytes(*seq))
}

fn split_value(v: &[u8]) -> Result<Stored, StorageError> {
    let seq = stored_seq(v)?; // checks that the 8 bytes are there
    Ok(Stored {
        seq,
        sealed: v[8..].to_vec(),
    })
}

impl RecordStore for RedbStore {
    fn load(&self, partition: u32, account: &[u8]) -> Result<Option<Stored>, StorageError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(RECORDS).map_err(db_err)?;
        let key = record_key(partition, account);
        let got = table.get(key.as_slice()).map_err(db_err)?;
        got.map(|v| split_value(v.value())).transpose()
    }

    fn commit(
        &self,
        partition: u32,
        account: &[u8],
        expected_seq: u64,
        sealed: &[u8],
    ) -> Result<u64, StorageError> {
        let key = record_key(partition, account);
        let txn = begin_durable(&self.db)?;
        let seq = {
            let mut table = txn.open_table(RECORDS).map_err(db_err)?;
            let found = match table.get(key.as_slice()).map_err(db_err)? {
                Some(v) => stored_seq(v.value())?,
                None => 0,
            };
            if found != expected_seq {
                return Err(StorageError::Conflict {
                    expected: expected_seq,
                    found,
                });
            }
            let seq = found + 1;
            let mut value = Vec::with_capacity(8 + sealed.len());
            value.extend_from_slice(&seq.to_be_bytes());
            value.extend_from_slice(sealed);
            table
                .insert(key.as_slice(), value.as_slice())
                .map_err(db_err)?;
            seq
        };
        txn.commit().map_err(db_err)?;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_commit_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            assert_eq!(s.load(1, b"alice").unwrap(), None);
            assert_eq!(s.commit(1, b"alice", 0, b"v1").unwrap(), 1);
            assert!(matches!(
                s.commit(1, b"alice", 0, b"stale"),
                Err(StorageError::Conflict {
                    expected: 0,
                    found: 1
                })
            ));
            assert_eq!(s.commit(1, b"alice", 1, b"v2").unwrap(), 2);
            assert_eq!(
                s.load(2, b"alice").unwrap(),
                None,
                "partitions are separate"
            );
            assert!(s.store_secret_once("p1", b"sealed").unwrap());
            assert!(!s.store_secret_once("p1", b"other").unwrap());
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(
            s.load(1, b"alice").unwrap(),
            Some(Stored {
                seq: 2,
                sealed: b"v2".to_vec()
            })
        );
        assert_eq!(
            s.load_secret("p1").unwrap().as_deref(),
            Some(&b"sealed"[..])
        );
    }
}
