//! A partition's Raft log and vote, in the node database.
//!
//! The log's live part (everything not yet purged into a snapshot) is also kept in memory: an
//! appended entry must be readable as soon as `append` returns, before its batch is fsync'd, and
//! replication reads the tail far more often than anything else. Disk is for restarts.

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use redb::TableDefinition;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::chain::{LogKey, Mac, ZERO_ANCHOR};
use crate::db::{DbError, NodeDb};
use crate::mark::MarkChange;
use crate::types::{Entry, GroupId, LogId, StorageError, TypeConfig, Vote};

/// Log entries: key = group (4 bytes BE) ‖ index (8 bytes BE), value = chain MAC (32) ‖
/// postcard(entry) (see [`crate::chain`]).
pub(crate) const LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raft_log");
/// Per-group Raft state: key = group ‖ tag, value = postcard(value).
pub(crate) const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raft_meta");

pub(crate) const TAG_VOTE: u8 = 1;
pub(crate) const TAG_COMMITTED: u8 = 2;
pub(crate) const TAG_PURGED: u8 = 3;
/// The chain MAC of the last purged entry, which the first live one chains from.
pub(crate) const TAG_ANCHOR: u8 = 4;
/// How long a purge waits for the state machine to reach it (a snapshot install in progress).
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

pub(crate) fn log_key(group: GroupId, index: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn meta_key(group: GroupId, tag: u8) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4] = tag;
    k
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    postcard::to_stdvec(value).map_err(DbError::from_display)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    postcard::from_bytes(bytes).map_err(DbError::from_display)
}

/// Reads one META value of `group` in a read transaction.
pub(crate) fn read_meta<T: serde::de::DeserializeOwned>(
    db: &NodeDb,
    group: GroupId,
    tag: u8,
) -> Result<Option<T>, DbError> {
    db.get(META, &meta_key(group, tag))?
        .map(|v| decode(&v))
        .transpose()
}

/// Writes one META value inside a batch.
pub(crate) fn put_meta(
    txn: &redb::WriteTransaction,
    group: GroupId,
    tag: u8,
    value: &[u8],
) -> Result<(), DbError> {
    let mut table = txn.open_table(META).map_err(DbError::from_display)?;
    table
        .insert(meta_key(group, tag).as_slice(), value)
        .map_err(DbError::from_display)?;
    Ok(())
}

fn delete_log_range(
    txn: &redb::WriteTransaction,
    group: GroupId,
    from: u64,
    to_inclusive: u64,
) -> Result<(), DbError> {
    let mut table = txn.open_table(LOG).map_err(DbError::from_display)?;
    let (lo, hi) = (log_key(group, from), log_key(group, to_inclusive));
    table
        .retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)
        .map_err(DbError::from_display)?;
    Ok(())
}

#[derive(Debug, Default)]
struct Mem {
    entries: BTreeMap<u64, Entry>,
    macs: BTreeMap<u64, Mac>,
    anchor: Mac,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl Mem {
    /// The MAC entry `index` chains from: its predecessor's, or the anchor.
    fn prev_mac(&self, index: u64) -> Mac {
        index
            .checked_sub(1)
            .and_then(|p| self.macs.get(&p))
            .copied()
            .unwrap_or(self.anchor)
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.last_purged)
    }
}

/// Why a group's log could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// The stored entry does not verify against the chain: edited, swapped, or a gap before it.
    #[error(
        "group {group}: log entry {index} on this node's disk fails its MAC chain (altered, \
         replaced, or entries removed before it)"
    )]
    Tampered { group: GroupId, index: u64 },
}

fn index_of(key: &[u8]) -> Result<u64, DbError> {
    key.get(4..)
        .and_then(|i| i.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| DbError("malformed log key".into()))
}

/// Checks a stored value against the chain so far and decodes it.
fn verified(
    key: &LogKey,
    group: GroupId,
    mem: &Mem,
    index: u64,
    value: &[u8],
) -> Result<(Mac, Entry), LogOpenError> {
    let tampered = LogOpenError::Tampered { group, index };
    let Some((mac, bytes)) = value.split_first_chunk::<32>() else {
        return Err(tampered);
    };
    let follows = match mem.entries.keys().next_back() {
        Some(&last) => last.checked_add(1) == Some(index),
        None => true,
    };
    if !follows || !key.verify(group, &mem.prev_mac(index), bytes, mac) {
        return Err(tampered);
    }
    let entry: Entry = decode(bytes)?;
    if entry.log_id.index != index {
        return Err(tampered);
    }
    Ok((*mac, entry))
}

fn write_err(e: DbError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

/// One group's log. Its reader shares the in-memory tail.
#[derive(Debug)]
pub struct LogStore {
    group: GroupId,
    key: LogKey,
    db: NodeDb,
    mem: Arc<Mutex<Mem>>,
}

/// A read handle on a group's log, for replication.
#[derive(Debug, Clone)]
pub struct LogReader {
    mem: Arc<Mutex<Mem>>,
}

fn lock(mem: &Mutex<Mem>) -> MutexGuard<'_, Mem> {
    mem.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogStore {
    /// Loads `group`'s log, vote and purge point from the node database, checking the log's
    /// MAC chain under `key`.
    pub fn open(db: &NodeDb, group: GroupId, key: LogKey) -> Result<Self, LogOpenError> {
        let mut mem = Mem {
            vote: read_meta(db, group, TAG_VOTE)?,
            committed: read_meta::<Option<LogId>>(db, group, TAG_COMMITTED)?.flatten(),
            last_purged: read_meta(db, group, TAG_PURGED)?,
            anchor: read_meta(db, group, TAG_ANCHOR)?.unwrap_or(ZERO_ANCHOR),
            entries: BTreeMap::new(),
            macs: BTreeMap::new(),
        };
        let txn = db.read()?;
        match txn.open_table(LOG) {
            Ok(table) => {
                let (lo, hi) = (log_key(group, 0), log_key(group, u64::MAX));
                for row in table
                    .range(lo.as_slice()..=hi.as_slice())
                    .map_err(DbError::from_display)?
                {
                    let (k, value) = row.map_err(DbError::from_display)?;
                    let index = index_of(k.value())?;
                    let (mac, entry) = verified(&key, group, &mem, index, value.value())?;
                    mem.macs.insert(index, mac);
                    mem.entries.insert(index, entry);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(DbError::from_display(e).into()),
        }
        Ok(Self {
            group,
            key,
            db: db.clone(),
            mem: Arc::new(Mutex::new(mem)),
        })
    }

    /// Waits until the state machine has `upto` applied on disk. openraft purges the log up to
    /// an installed snapshot while the state machine is still installing it; a purge made
    /// durable first (by another group's fsync) and a crash would leave the log purged past
    /// what was applied, and the group unable to start.
    async fn wait_applied(&self, upto: LogId) -> Result<(), StorageError> {
        let deadline = tokio::time::Instant::now() + PURGE_WAIT;
        loop {
            let applied = crate::sm::applied_on_disk(&self.db, self.group).map_err(write_err)?;
            if applied >= Some(upto) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(write_err(DbError(format!(
                    "refusing to purge the log to {upto}: the state machine has applied only \
                     {applied:?} after {PURGE_WAIT:?}"
                ))));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The vote and last log id this log holds: what the rollback check compares.
    pub fn disk_state(&self) -> (Option<Vote>, Option<LogId>) {
        let mem = lock(&self.mem);
        (mem.vote, mem.last_log_id())
    }
}

fn entries_in<RB: RangeBounds<u64>>(mem: &Mutex<Mem>, range: RB) -> Vec<Entry> {
    let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
    lock(mem)
        .entries
        .range(bounds)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(entries_in(&self.mem, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(entries_in(&self.mem, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = lock(&self.mem);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            mem: self.mem.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let (group, bytes) = (self.group, encode(vote).map_err(write_err)?);
        let mark = Some((group, MarkChange::Vote(*vote)));
        self.db
            .write(true, mark, move |txn| {
                put_meta(txn, group, TAG_VOTE, &bytes)
            })
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        lock(&self.mem).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.mem).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let (group, bytes) = (self.group, encode(&committed).map_err(write_err)?);
        lock(&self.mem).committed = committed;
        // Not fsync'd: a committed index forgotten in a crash is learned again from the leader.
        self.db
            .write(false, None, move |txn| {
                put_meta(txn, group, TAG_COMMITTED, &bytes)
            })
            .await
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.mem).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let group = self.group;
        let mut rows = Vec::new();
        let last = {
            let mut mem = lock(&self.mem);
            for entry in entries {
                let index = entry.log_id.index;
                let bytes = encode(&entry).map_err(write_err)?;
                let mac = self.key.mac(group, &mem.prev_mac(index), &bytes);
                let mut row = mac.to_vec();
                row.extend_from_slice(&bytes);
                rows.push((index, row));
                mem.macs.insert(index, mac);
                mem.entries.insert(index, entry);
            }
            mem.last_log_id()
        };
        self.db.submit_with(
            true,
            Some((group, MarkChange::Last(last))),
            move |txn| {
                let mut table = txn.open_table(LOG).map_err(DbError::from_display)?;
                for (index, bytes) in rows {
                    table
                        .insert(log_key(group, index).as_slice(), bytes.as_slice())
                        .map_err(DbError::from_display)?;
                }
                Ok(())
            },
            move |result| callback.log_io_completed(result.map_err(std::io::Error::other)),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let group = self.group;
        let last = {
            let mut mem = lock(&self.mem);
            mem.entries.split_off(&log_id.index);
            mem.macs.split_off(&log_id.index);
            mem.last_log_id()
        };
        // Ordered before any later append, whose fsync makes it durable too. The mark comes down
        // with it: only entries no quorum committed are ever truncated.
        self.db
            .write(false, Some((group, MarkChange::Last(last))), move |txn| {
                delete_log_range(txn, group, log_id.index, u64::MAX)
            })
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wait_applied(log_id).await?;
        let (group, bytes) = (self.group, encode(&log_id).map_err(write_err)?);
        let anchor = {
            let mut mem = lock(&self.mem);
            // Past the live log (a snapshot installed beyond it), the next entry starts afresh.
            let anchor = mem.macs.get(&log_id.index).copied().unwrap_or(ZERO_ANCHOR);
            mem.entries = mem.entries.split_off(&(log_id.index + 1));
            mem.macs = mem.macs.split_off(&(log_id.index + 1));
            mem.last_purged = Some(log_id);
            mem.anchor = anchor;
            encode(&anchor).map_err(write_err)?
        };
        self.db
            .write(false, None, move |txn| {
                delete_log_range(txn, group, 0, log_id.index)?;
                put_meta(txn, group, TAG_ANCHOR, &anchor)?;
                put_meta(txn, group, TAG_PURGED, &bytes)
            })
            .await
            .map_err(write_err)
    }
}
