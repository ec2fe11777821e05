//! A partition's state machine: the sealed records, the compare-and-set that decides each
//! write, and snapshots of both.
//!
//! The compare-and-set runs when an entry is applied, in log order, identically on every replica,
//! so its outcome is the same wherever it is read; the proposer gets it back through openraft.
//! Applied state is written without its own fsync: the log it comes from is durable, and redb
//! makes the next fsync'd batch (the next append) carry it.

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, SnapshotId, StorageIOError};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

use crate::db::{DbError, NodeDb};
use crate::log::{META, decode, encode, meta_key, put_meta, read_meta};
use crate::types::{
    Command, Entry, GroupId, LogId, NodeId, Outcome, Snapshot, SnapshotMeta, StorageError, Stored,
    StoredMembership, TypeConfig,
};

/// Records: key = group (4 bytes BE) ‖ account, value = seq (8 bytes BE) ‖ sealed record.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

const TAG_APPLIED: u8 = 10;
const TAG_SNAPSHOT: u8 = 11;

fn record_key(group: GroupId, account: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + account.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(account);
    k
}

fn split_value(v: &[u8]) -> Result<Stored, DbError> {
    let (seq, sealed) = v
        .split_first_chunk::<8>()
        .ok_or_else(|| DbError("short record value".into()))?;
    Ok(Stored {
        seq: u64::from_be_bytes(*seq),
        sealed: sealed.to_vec(),
    })
}

fn join_value(seq: u64, sealed: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + sealed.len());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(sealed);
    v
}

/// Reads `account`'s record in `group` as this replica has applied it. Linearizable only after
/// the caller has confirmed a read index (see [`crate::Host::read`]).
pub(crate) fn load_record(
    db: &NodeDb,
    group: GroupId,
    account: &[u8],
) -> Result<Option<Stored>, DbError> {
    db.get(RECORDS, &record_key(group, account))?
        .map(|v| split_value(&v))
        .transpose()
}

/// The last log id `group`'s state machine has applied, as committed to the database.
pub(crate) fn applied_on_disk(db: &NodeDb, group: GroupId) -> Result<Option<LogId>, DbError> {
    Ok(read_meta::<Applied>(db, group, TAG_APPLIED)?.and_then(|a| a.last))
}

/// The highest node id any applied membership of `group` ever named: a new member's id must be
/// above it, so that no id is ever used twice (a removed node's id stays spent).
pub(crate) fn highest_member_id(db: &NodeDb, group: GroupId) -> Result<NodeId, DbError> {
    Ok(read_meta::<Applied>(db, group, TAG_APPLIED)?.map_or(0, |a| a.highest_id))
}

/// What the state machine records about itself, beside the records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembership,
    highest_id: NodeId,
}

/// A snapshot as stored and sent: every record of the group, and the highest member id.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    highest_id: NodeId,
}

fn apply_cas(txn: &WriteTransaction, group: GroupId, cmd: &Command) -> Result<Outcome, DbError> {
    let mut table = txn.open_table(RECORDS).map_err(DbError::from_display)?;
    let key = record_key(group, &cmd.account);
    let found = match table.get(key.as_slice()).map_err(DbError::from_display)? {
        Some(v) => split_value(v.value())?.seq,
        None => 0,
    };
    if found != cmd.expected_seq {
        return Ok(Outcome::Conflict { found });
    }
    let seq = found + 1;
    table
        .insert(key.as_slice(), join_value(seq, &cmd.sealed).as_slice())
        .map_err(DbError::from_display)?;
    Ok(Outcome::Applied { seq })
}

fn sm_err(e: DbError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: DbError) -> StorageError {
    StorageIOError::read_snapshot(None, &e).into()
}

/// One group's state machine.
#[derive(Debug)]
pub struct StateMachine {
    group: GroupId,
    db: NodeDb,
    applied: Applied,
    snapshots_built: u64,
}

impl StateMachine {
    pub fn open(db: &NodeDb, group: GroupId) -> Result<Self, DbError> {
        Ok(Self {
            group,
            db: db.clone(),
            applied: read_meta(db, group, TAG_APPLIED)?.unwrap_or_default(),
            snapshots_built: 0,
        })
    }
}

/// Builds snapshots from a consistent read of the group's applied state.
#[derive(Debug)]
pub struct SnapshotBuilder {
    group: GroupId,
    db: NodeDb,
    serial: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (group, serial) = (self.group, self.serial);
        let (meta, data) = read_snapshot_state(&self.db, group, serial).map_err(snap_err)?;
        let stored = encode(&(&meta, &data)).map_err(snap_err)?;
        let last = meta.last_log_id;
        self.db
            .write(false, None, move |txn| {
                store_snapshot_if_newer(txn, group, last, &stored)
            })
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Keeps `stored` as the group's snapshot unless the one already kept is as new or newer: builds
/// run in their own task, and one that read older state must not replace a later build or an
/// installed snapshot (a lagging follower would be sent the stale one forever).
fn store_snapshot_if_newer(
    txn: &WriteTransaction,
    group: GroupId,
    last: Option<LogId>,
    stored: &[u8],
) -> Result<(), DbError> {
    let kept = {
        let table = txn.open_table(META).map_err(DbError::from_display)?;
        let value = table
            .get(meta_key(group, TAG_SNAPSHOT).as_slice())
            .map_err(DbError::from_display)?;
        match value {
            Some(v) => Some(
                postcard::take_from_bytes::<SnapshotMeta>(v.value())
                    .map_err(DbError::from_display)?
                    .0
                    .last_log_id,
            ),
            None => None,
        }
    };
    if kept.is_some_and(|kept| kept >= last) {
        return Ok(());
    }
    put_meta(txn, group, TAG_SNAPSHOT, stored)
}

/// The applied state and every record of `group`, read in one read transaction.
fn read_snapshot_state(
    db: &NodeDb,
    group: GroupId,
    serial: u64,
) -> Result<(SnapshotMeta, Vec<u8>), DbError> {
    let txn = db.read()?;
    let applied: Applied = match txn.open_table(META) {
        Ok(t) => t
            .get(meta_key(group, TAG_APPLIED).as_slice())
            .map_err(DbError::from_display)?
            .map(|v| decode(v.value()))
            .transpose()?
            .unwrap_or_default(),
        Err(redb::TableError::TableDoesNotExist(_)) => Applied::default(),
        Err(e) => return Err(DbError::from_display(e)),
    };
    let mut records = Vec::new();
    match txn.open_table(RECORDS) {
        Ok(t) => {
            let lo = group.to_be_bytes();
            for row in t.range(lo.as_slice()..).map_err(DbError::from_display)? {
                let (k, v) = row.map_err(DbError::from_display)?;
                let Some(account) = k.value().strip_prefix(&lo) else {
                    break;
                };
                records.push((account.to_vec(), v.value().to_vec()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(DbError::from_display(e)),
    }
    let (last, highest_id) = (applied.last, applied.highest_id);
    let snapshot_id: SnapshotId = format!(
        "g{group}-{}-{serial}",
        last.map_or_else(|| "none".to_string(), |l| l.index.to_string())
    );
    let meta = SnapshotMeta {
        last_log_id: last,
        last_membership: applied.membership,
        snapshot_id,
    };
    Ok((
        meta,
        encode(&SnapshotBody {
            records,
            highest_id,
        })?,
    ))
}

fn replace_records(
    txn: &WriteTransaction,
    group: GroupId,
    body: &SnapshotBody,
) -> Result<(), DbError> {
    let mut table = txn.open_table(RECORDS).map_err(DbError::from_display)?;
    let lo = group.to_be_bytes();
    let hi = group.checked_add(1).map(u32::to_be_bytes);
    match hi {
        Some(hi) => table.retain_in(lo.as_slice()..hi.as_slice(), |_, _| false),
        None => table.retain_in(lo.as_slice().., |_, _| false),
    }
    .map_err(DbError::from_display)?;
    for (account, value) in &body.records {
        split_value(value)?;
        table
            .insert(record_key(group, account).as_slice(), value.as_slice())
            .map_err(DbError::from_display)?;
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (group, mut applied) = (self.group, self.applied.clone());
        let (outcomes, applied) = self
            .db
            .write(false, None, move |txn| {
                let mut outcomes = Vec::with_capacity(entries.len());
                for entry in &entries {
                    applied.last = Some(entry.log_id);
                    outcomes.push(match &entry.payload {
                        EntryPayload::Blank => Outcome::NoOp,
                        EntryPayload::Normal(cmd) => apply_cas(txn, group, cmd)?,
                        EntryPayload::Membership(m) => {
                            let named = m.nodes().map(|(id, _)| *id).max().unwrap_or(0);
                            applied.highest_id = applied.highest_id.max(named);
                            applied.membership =
                                StoredMembership::new(Some(entry.log_id), m.clone());
                            Outcome::NoOp
                        }
                    });
                }
                put_meta(txn, group, TAG_APPLIED, &encode(&applied)?)?;
                Ok((outcomes, applied))
            })
            .await
            .map_err(sm_err)?;
        self.applied = applied;
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            group: self.group,
            db: self.db.clone(),
            serial: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = decode(&data).map_err(snap_err)?;
        let named = meta
            .last_membership
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .max()
            .unwrap_or(0);
        let applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
            highest_id: body.highest_id.max(named),
        };
        let group = self.group;
        let stored = encode(&(meta, &data)).map_err(snap_err)?;
        let state = encode(&applied).map_err(sm_err)?;
        self.db
            .write(true, None, move |txn| {
                replace_records(txn, group, &body)?;
                put_meta(txn, group, TAG_APPLIED, &state)?;
                put_meta(txn, group, TAG_SNAPSHOT, &stored)
            })
            .await
            .map_err(sm_err)?;
        self.applied = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored: Option<(SnapshotMeta, Vec<u8>)> =
            read_meta(&self.db, self.group, TAG_SNAPSHOT).map_err(snap_err)?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockbox_hsm::{FileMark, SoftwareSealer};
    use openraft::CommittedLeaderId;
    use std::sync::Arc;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        }
    }

    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SoftwareSealer::create(dir.path().join("k")).unwrap());
        let marks = Arc::new(FileMark::new(dir.path().join("m"), sealer, "t"));
        let db = NodeDb::open(&dir.path().join("n.redb"), marks).unwrap();
        for index in [20u64, 10, 30, 25] {
            let m = meta(index);
            let stored = encode(&(&m, &vec![index as u8])).unwrap();
            db.write(false, None, move |txn| {
                store_snapshot_if_newer(txn, 7, m.last_log_id, &stored)
            })
            .await
            .unwrap();
        }
        let mut sm = StateMachine::open(&db, 7).unwrap();
        let kept = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(kept.meta.snapshot_id, "s30", "the newest build stays");
        assert_eq!(kept.snapshot.into_inner(), vec![30u8]);
    }

    #[tokio::test]
    async fn the_log_is_not_purged_past_a_snapshot_still_being_installed() {
        use crate::chain::LogKey;
        use crate::log::{LogStore, TAG_PURGED};
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(SoftwareSealer::create(dir.path().join("k")).unwrap());
        let marks = Arc::new(FileMark::new(dir.path().join("m"), sealer, "t"));
        let db = NodeDb::open(&dir.path().join("n.redb"), marks).unwrap();
        let key = LogKey::new(lockbox_crypto::Secret32::new([3; 32]));
        let mut log = LogStore::open(&db, 7, key).unwrap();
        let mut sm = StateMachine::open(&db, 7).unwrap();
        let upto = meta(50).last_log_id.unwrap();
        let purge = tokio::spawn(async move { log.purge(upto).await });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!purge.is_finished(), "the purge waits for the install");
        assert_eq!(read_meta::<LogId>(&db, 7, TAG_PURGED).unwrap(), None);

        let body = encode(&SnapshotBody {
            records: vec![],
            highest_id: 0,
        })
        .unwrap();
        sm.install_snapshot(&meta(50), Box::new(Cursor::new(body)))
            .await
            .unwrap();
        purge.await.unwrap().unwrap();
        assert_eq!(read_meta::<LogId>(&db, 7, TAG_PURGED).unwrap(), Some(upto));
    }
}
