//! A replica's log edited on its own disk (DESIGN.md §5: MAC-chained entries): the replica must
//! refuse to start rather than replay or serve the edited entry.

mod common;

use common::Cluster;
use lockbox_raft::log::LogOpenError;
use lockbox_raft::{GroupId, HostError, NodeId, Outcome, Timing};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const G: GroupId = 2;
const LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raft_log");

/// Five writes, applied everywhere; then one follower stopped, ready for editing.
async fn stopped_follower() -> (Cluster, NodeId) {
    let mut c = Cluster::start(5, &[G], Timing::default()).await;
    for seq in 0..5u64 {
        let value = format!("attempts={}", 10 - seq);
        assert_eq!(
            c.write(G, b"acct", seq, value.as_bytes()).await,
            Outcome::Applied { seq: seq + 1 }
        );
    }
    c.all_applied(G, c.applied_anywhere(G).await).await;
    let (_, followers) = c.split(G).await;
    c.node(followers[0]).kill().await;
    (c, followers[0])
}

fn keys(path: &Path) -> Vec<Vec<u8>> {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(LOG).unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| row.unwrap().0.value().to_vec())
        .collect()
}

fn edit(path: &Path, f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>, &[Vec<u8>])) {
    let rows = keys(path);
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(LOG).unwrap();
        f(&mut table, &rows);
    }
    txn.commit().unwrap();
}

async fn refuses(c: &mut Cluster, v: NodeId, at: u64) {
    match c.node(v).try_start().await {
        Err(HostError::Log(LogOpenError::Tampered { group, index })) => {
            assert_eq!((group, index), (G, at));
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(()) => panic!("node {v} started on an edited log"),
    }
}

fn index(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[4..12].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_altered_on_disk_is_found_at_start() {
    let (mut c, v) = stopped_follower().await;
    let path = c.node(v).db_path.clone();
    let mut at = 0;
    edit(&path, |table, rows| {
        let key = rows.last().unwrap();
        at = index(key);
        let mut value = table.get(key.as_slice()).unwrap().unwrap().value().to_vec();
        // The last byte is the sealed record's: still a well-formed entry, another value.
        *value.last_mut().unwrap() ^= 0x01;
        table.insert(key.as_slice(), value.as_slice()).unwrap();
    });
    refuses(&mut c, v, at).await;
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_removed_from_the_middle_is_found_at_start() {
    let (mut c, v) = stopped_follower().await;
    let path = c.node(v).db_path.clone();
    let mut next = 0;
    edit(&path, |table, rows| {
        let middle = &rows[rows.len() / 2];
        next = index(&rows[rows.len() / 2 + 1]);
        table.remove(middle.as_slice()).unwrap();
    });
    refuses(&mut c, v, next).await;
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_untouched_log_verifies_and_the_node_rejoins() {
    let (mut c, v) = stopped_follower().await;
    c.node(v).start().await;
    assert_eq!(
        c.write(G, b"acct", 5, b"attempts=5").await,
        Outcome::Applied { seq: 6 }
    );
    c.all_applied(G, c.applied_anywhere(G).await).await;
    let local = c.node(v).host().local_record(G, b"acct").unwrap().unwrap();
    assert_eq!(local.seq, 6);
    c.stop_all().await;
}
