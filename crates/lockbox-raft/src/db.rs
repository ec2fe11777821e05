//! One redb database per node, shared by every partition it hosts, written by one thread that
//! commits whatever is waiting together: group commit.
//!
//! redb allows one writer at a time, and an fsync costs the same for one entry as for a hundred.
//! So every write (a group's log append, vote, truncation, apply, snapshot) is a job sent to the
//! committer thread, which takes all the jobs waiting, runs them in order in one write
//! transaction and commits it once. The commit is fsync'd (`Durability::Immediate`) when any job
//! in the batch needs it (appends and votes do); otherwise it is only made visible, and becomes
//! durable with the next fsync'd commit, which redb orders after it. Jobs of one group reach the
//! thread in the order the group sent them, so its writes apply in that order.
//!
//! A failed batch fails every job in it: a disk that refuses a write is a node-wide fault, and
//! openraft stops a group whose storage failed rather than guess.

use lockbox_hsm::MarkStore;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::mark::{HighWater, MarkChange};
use crate::types::GroupId;

/// The most jobs one transaction takes; more wait for the next.
const MAX_BATCH: usize = 1024;

#[derive(Debug, Clone, thiserror::Error)]
#[error("node database: {0}")]
pub struct DbError(pub(crate) String);

impl DbError {
    pub(crate) fn from_display(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

impl From<redb::Error> for DbError {
    fn from(e: redb::Error) -> Self {
        Self::from_display(e)
    }
}

/// What a job does inside the shared transaction.
type Work = Box<dyn FnOnce(&WriteTransaction) -> Result<(), DbError> + Send>;
/// Told the batch's fate once it is committed (or not).
type Done = Box<dyn FnOnce(Result<(), DbError>) + Send>;

struct Job {
    durable: bool,
    mark: Option<(GroupId, MarkChange)>,
    work: Work,
    done: Done,
}

/// How the committer has batched so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Of those, the fsync'd ones.
    pub fsyncs: u64,
    /// Jobs they carried.
    pub jobs: u64,
    /// The largest batch.
    pub max_batch: u64,
    /// Rollback-mark writes (at most one per commit).
    pub marks: u64,
    /// Commits that carried log appends or votes of more than one group.
    pub shared: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    fsyncs: AtomicU64,
    jobs: AtomicU64,
    max_batch: AtomicU64,
    marks: AtomicU64,
    shared: AtomicU64,
}

/// A node's database and its committer. Cheap to clone; the thread stops when the last clone
/// goes.
#[derive(Clone, Debug)]
pub struct NodeDb {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Taken by [`NodeDb::close`], so the file is released even while clones of the handle
    /// (say, in a task that has not finished yet) are still around.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
    /// The rollback mark as the node found it when it opened the database (`None`: no mark).
    opened_mark: Option<HighWater>,
}

impl core::fmt::Debug for Job {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Job")
            .field("durable", &self.durable)
            .finish()
    }
}

impl NodeDb {
    /// Opens (or creates) the database at `path` and starts its committer, which keeps the
    /// rollback mark in `marks`.
    pub fn open(path: &Path, marks: Arc<dyn MarkStore>) -> Result<Self, DbError> {
        let db = Arc::new(Database::create(path).map_err(DbError::from_display)?);
        Self::start(db, marks, None)
    }

    /// Like [`Self::open`], with jobs already queued before the committer first looks: lets a
    /// test see one batch take them all.
    #[cfg(test)]
    fn open_with_backlog(
        path: &Path,
        marks: Arc<dyn MarkStore>,
        backlog: Vec<Job>,
    ) -> Result<Self, DbError> {
        let db = Arc::new(Database::create(path).map_err(DbError::from_display)?);
        Self::start(db, marks, Some(backlog))
    }

    fn start(
        db: Arc<Database>,
        marks: Arc<dyn MarkStore>,
        backlog: Option<Vec<Job>>,
    ) -> Result<Self, DbError> {
        let opened_mark = HighWater::load(marks.as_ref())?;
        let (tx, rx) = mpsc::channel();
        for job in backlog.into_iter().flatten() {
            let _ = tx.send(job);
        }
        let counters = Arc::new(Counters::default());
        let thread = {
            let (db, counters) = (db.clone(), counters.clone());
            let mut committer = Committer {
                marks,
                mark: opened_mark.clone().unwrap_or_default(),
            };
            std::thread::Builder::new()
                .name("raft-commit".into())
                .spawn(move || committer.run(&db, &rx, &counters))
                .map_err(|e| DbError(format!("cannot start the committer thread: {e}")))?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db: std::sync::RwLock::new(Some(db)),
                jobs: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                counters,
                opened_mark,
            }),
        })
    }

    /// The rollback mark as it stood when the database was opened, before any new write.
    pub fn opened_mark(&self) -> Option<&HighWater> {
        self.inner.opened_mark.as_ref()
    }

    pub fn stats(&self) -> CommitStats {
        let c = &self.inner.counters;
        CommitStats {
            commits: c.commits.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            jobs: c.jobs.load(Ordering::Relaxed),
            max_batch: c.max_batch.load(Ordering::Relaxed),
            marks: c.marks.load(Ordering::Relaxed),
            shared: c.shared.load(Ordering::Relaxed),
        }
    }

    pub fn read(&self) -> Result<ReadTransaction, DbError> {
        let db = self
            .inner
            .db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        db.ok_or_else(|| DbError("the node database is closed".into()))?
            .begin_read()
            .map_err(DbError::from_display)
    }

    /// One value of `table` by key, read outside any batch; `None` if absent (or if the table
    /// was never written).
    pub(crate) fn get(
        &self,
        table: redb::TableDefinition<&[u8], &[u8]>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, DbError> {
        let txn = self.read()?;
        let table = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(DbError::from_display(e)),
        };
        let value = table.get(key).map_err(DbError::from_display)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn submit(&self, job: Job) {
        let sender = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match sender.as_ref() {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    (job.done)(Err(DbError("the committer has stopped".into())));
                }
            }
            None => (job.done)(Err(DbError("the node database is closed".into()))),
        }
    }

    /// Queues `work`; `done` hears once its batch is committed (fsync'd when `durable`) and the
    /// rollback mark carries `mark`.
    pub(crate) fn submit_with(
        &self,
        durable: bool,
        mark: Option<(GroupId, MarkChange)>,
        work: impl FnOnce(&WriteTransaction) -> Result<(), DbError> + Send + 'static,
        done: impl FnOnce(Result<(), DbError>) + Send + 'static,
    ) {
        self.submit(Job {
            durable,
            mark,
            work: Box::new(work),
            done: Box::new(done),
        });
    }

    /// Runs `work` in the next batch and returns its result once the batch is committed.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        durable: bool,
        mark: Option<(GroupId, MarkChange)>,
        work: impl FnOnce(&WriteTransaction) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let out = Arc::new(Mutex::new(None));
        let slot = out.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit_with(
            durable,
            mark,
            move |txn| {
                let value = work(txn)?;
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                Ok(())
            },
            move |result| {
                let _ = tx.send(result);
            },
        );
        rx.await
            .map_err(|_| DbError("the committer dropped a job".into()))??;
        let value = out.lock().unwrap_or_else(|p| p.into_inner()).take();
        value.ok_or_else(|| DbError("a committed job left no result".into()))
    }

    /// Stops the committer after the jobs already queued, and waits for it. Later writes fail.
    pub fn close(&self) {
        self.inner.stop();
        drop(
            self.inner
                .db
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

impl Inner {
    /// Drops the job sender (the committer ends after the jobs already queued) and joins it.
    fn stop(&self) {
        drop(self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The committer thread's own state: the mark as last stored.
struct Committer {
    marks: Arc<dyn MarkStore>,
    mark: HighWater,
}

impl Committer {
    fn run(&mut self, db: &Database, rx: &mpsc::Receiver<Job>, counters: &Counters) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let durable = batch.iter().any(|j| j.durable);
            let changes: Vec<_> = batch.iter().filter_map(|j| j.mark).collect();
            let (works, dones): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|j| (j.work, j.done)).unzip();
            let jobs = works.len() as u64;
            let mut result = self
                .lower(&changes)
                .and_then(|()| commit_batch(db, durable, works));
            if result.is_ok() {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .fsyncs
                    .fetch_add(u64::from(durable), Ordering::Relaxed);
                counters.jobs.fetch_add(jobs, Ordering::Relaxed);
                counters.max_batch.fetch_max(jobs, Ordering::Relaxed);
                let first = changes.first().map(|(g, _)| *g);
                if changes.iter().any(|(g, _)| Some(*g) != first) {
                    counters.shared.fetch_add(1, Ordering::Relaxed);
                }
                result = self.advance(&changes, counters);
            }
            if result.is_err() {
                tracing::error!(jobs, "a node database batch failed; every job in it fails");
            }
            for done in dones {
                done(result.clone());
            }
        }
    }

    /// Stores the batch's lowerings (truncations) before it commits: fsync'd with another
    /// group's append, a truncation would otherwise be on disk while the mark still says more.
    fn lower(&mut self, changes: &[(GroupId, MarkChange)]) -> Result<(), DbError> {
        let floor = self.mark.floor(changes);
        if floor == self.mark {
            return Ok(());
        }
        self.marks
            .store(&floor.encode()?)
            .map_err(|e| DbError(format!("cannot lower the rollback mark: {e}")))?;
        self.mark = floor;
        Ok(())
    }

    /// Moves the mark to cover the batch just committed, before anyone hears of it.
    fn advance(
        &mut self,
        changes: &[(GroupId, MarkChange)],
        counters: &Counters,
    ) -> Result<(), DbError> {
        let mut next = self.mark.clone();
        let mut moved = false;
        for &(group, change) in changes {
            moved |= next.apply(group, change);
        }
        if !moved {
            return Ok(());
        }
        let stored = self.marks.store(&next.encode()?);
        // Even a store that failed may have reached the disk: from here on the mark is taken to
        // say `next`, so a later truncation below it is lowered in the store before it commits.
        self.mark = next;
        stored.map_err(|e| DbError(format!("cannot advance the rollback mark: {e}")))?;
        counters.marks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn commit_batch(db: &Database, durable: bool, works: Vec<Work>) -> Result<(), DbError> {
    let mut txn = db.begin_write().map_err(DbError::from_display)?;
    let level = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(level).map_err(DbError::from_display)?;
    for work in works {
        if let Err(e) = work(&txn) {
            let _ = txn.abort();
            return Err(e);
        }
    }
    txn.commit().map_err(DbError::from_display)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Vote;
    use lockbox_hsm::{FileMark, SoftwareSealer};
    use redb::TableDefinition;

    fn marks_in(dir: &Path) -> Arc<dyn MarkStore> {
        let key = dir.join("sealer.key");
        let sealer = Arc::new(if key.exists() {
            SoftwareSealer::open(&key).unwrap()
        } else {
            SoftwareSealer::create(&key).unwrap()
        });
        Arc::new(FileMark::new(dir.join("mark"), sealer, "test"))
    }

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    /// Whether row `row` is in the committed table.
    fn on_disk(db: &NodeDb, row: u64) -> bool {
        let read = db.read().unwrap();
        let t = read.open_table(T).unwrap();
        t.get(row).unwrap().is_some()
    }

    /// Group 1's log cut back: row `row` removed, the mark lowered to `to`.
    fn truncation(
        row: u64,
        to: Option<crate::types::LogId>,
        done: mpsc::Sender<Result<(), DbError>>,
    ) -> Job {
        Job {
            durable: false,
            mark: Some((1, MarkChange::Last(to))),
            work: Box::new(move |txn| {
                let mut t = txn.open_table(T).map_err(DbError::from_display)?;
                t.remove(row).map_err(DbError::from_display)?;
                Ok(())
            }),
            done: Box::new(move |r| {
                let _ = done.send(r);
            }),
        }
    }

    fn put(i: u64, durable: bool, done: mpsc::Sender<Result<(), DbError>>) -> Job {
        Job {
            durable,
            mark: None,
            work: Box::new(move |txn| {
                let mut t = txn.open_table(T).map_err(DbError::from_display)?;
                t.insert(i, i * 10).map_err(DbError::from_display)?;
                Ok(())
            }),
            done: Box::new(move |r| {
                let _ = done.send(r);
            }),
        }
    }

    #[test]
    fn waiting_jobs_share_one_fsyncd_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let backlog = (0..50).map(|i| put(i, i == 7, tx.clone())).collect();
        let db =
            NodeDb::open_with_backlog(&dir.path().join("n.redb"), marks_in(dir.path()), backlog)
                .unwrap();
        for _ in 0..50 {
            rx.recv().unwrap().unwrap();
        }
        let stats = db.stats();
        assert_eq!(
            (stats.commits, stats.fsyncs, stats.jobs, stats.max_batch),
            (1, 1, 50, 50),
            "fifty queued jobs, one of them durable: one commit, fsync'd"
        );
        let read = db.read().unwrap();
        let t = read.open_table(T).unwrap();
        assert_eq!(t.get(49).unwrap().unwrap().value(), 490);
    }

    #[test]
    fn a_failing_job_fails_its_whole_batch_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut backlog: Vec<Job> = vec![put(1, true, tx.clone())];
        let fail_tx = tx.clone();
        backlog.push(Job {
            durable: false,
            mark: None,
            work: Box::new(|_| Err(DbError("refused".into()))),
            done: Box::new(move |r| {
                let _ = fail_tx.send(r);
            }),
        });
        let db =
            NodeDb::open_with_backlog(&dir.path().join("n.redb"), marks_in(dir.path()), backlog)
                .unwrap();
        assert!(rx.recv().unwrap().is_err());
        assert!(rx.recv().unwrap().is_err());
        let read = db.read().unwrap();
        assert!(
            read.open_table(T).is_err(),
            "the first job's table must not exist: the batch was aborted"
        );
        let value = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(db.write(true, None, |txn| {
                let mut t = txn.open_table(T).map_err(DbError::from_display)?;
                t.insert(2, 3).map_err(DbError::from_display)?;
                Ok(5u8)
            }))
            .unwrap();
        assert_eq!(value, 5, "the committer carries on after a failed batch");
        assert_eq!(db.stats().fsyncs, 1);
    }

    #[test]
    fn a_closed_database_refuses_writes_and_can_be_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.redb");
        let db = NodeDb::open(&path, marks_in(dir.path())).unwrap();
        db.close();
        let (tx, rx) = mpsc::channel();
        db.submit(put(1, true, tx));
        assert!(rx.recv().unwrap().is_err());
        drop(db);
        NodeDb::open(&path, marks_in(dir.path()))
            .expect("the file is free once the last handle is gone");
    }

    #[test]
    fn a_batch_moves_the_mark_once_before_anyone_hears_and_a_mark_that_cannot_move_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut backlog: Vec<Job> = (0..3).map(|i| put(i, true, tx.clone())).collect();
        backlog[0].mark = Some((1, MarkChange::Vote(Vote::new(3, 2))));
        backlog[2].mark = Some((2, MarkChange::Vote(Vote::new(1, 1))));
        let marks = marks_in(dir.path());
        let db =
            NodeDb::open_with_backlog(&dir.path().join("n.redb"), marks.clone(), backlog).unwrap();
        for _ in 0..3 {
            rx.recv().unwrap().unwrap();
        }
        assert_eq!(db.stats().marks, 1, "one mark write for the batch");
        let stored = HighWater::load(marks.as_ref()).unwrap().unwrap();
        assert_eq!(stored.group(1).vote, Some(Vote::new(3, 2)));
        assert_eq!(stored.group(2).vote, Some(Vote::new(1, 1)));
        db.close();
        drop(db);

        let sealer = Arc::new(SoftwareSealer::create(dir.path().join("other.key")).unwrap());
        let unwritable: Arc<dyn MarkStore> = Arc::new(FileMark::new(
            dir.path().join("missing/dir/mark"),
            sealer,
            "t",
        ));
        let mut job = put(9, true, tx);
        job.mark = Some((1, MarkChange::Vote(Vote::new(4, 2))));
        let _db =
            NodeDb::open_with_backlog(&dir.path().join("m.redb"), unwritable, vec![job]).unwrap();
        assert!(
            rx.recv().unwrap().is_err(),
            "a write the mark cannot cover is not acknowledged"
        );
    }

    #[test]
    fn a_truncation_is_never_on_disk_while_the_mark_still_says_more() {
        use crate::types::LogId;
        use openraft::CommittedLeaderId;
        let log = |i| Some(LogId::new(CommittedLeaderId::new(1, 1), i));
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(&dir.path().join("n.redb"), marks_in(dir.path())).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut rows = put(10, true, tx.clone());
        rows.mark = Some((1, MarkChange::Last(log(10))));
        db.submit(rows);
        rx.recv().unwrap().unwrap();

        // From here the mark cannot be written (what a crash in the middle of a store leaves).
        let mark = dir.path().join("mark");
        std::fs::remove_file(&mark).unwrap();
        std::fs::create_dir_all(mark.join("in-the-way")).unwrap();
        let truncate = truncation(10, log(5), tx.clone());
        db.submit(truncate);
        let mut other = put(20, true, mpsc::channel().0);
        other.mark = Some((2, MarkChange::Vote(Vote::new(1, 1))));
        db.submit(other);
        assert!(
            rx.recv().unwrap().is_err(),
            "the truncation is not acknowledged"
        );
        assert!(
            on_disk(&db, 10),
            "nor on disk: the mark, which still says 10, could not be lowered first"
        );
    }

    /// A mark store whose calls fail once `fail` is set, though each value still lands (a
    /// flush that reported an error after the write).
    #[derive(Debug, Default)]
    struct Flaky {
        fail: std::sync::atomic::AtomicBool,
        value: Mutex<Option<Vec<u8>>>,
    }

    impl MarkStore for Flaky {
        fn load(&self) -> Result<Option<Vec<u8>>, lockbox_hsm::SealError> {
            Ok(self.value.lock().unwrap().clone())
        }
        fn store(&self, value: &[u8]) -> Result<(), lockbox_hsm::SealError> {
            *self.value.lock().unwrap() = Some(value.to_vec());
            if self.fail.load(Ordering::SeqCst) {
                return Err(lockbox_hsm::SealError::Mark("flush failed".into()));
            }
            Ok(())
        }
        fn outlives_disk_rollback(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_mark_store_that_failed_still_counts_for_the_next_lowering() {
        use crate::types::LogId;
        use openraft::CommittedLeaderId;
        let log = |i| Some(LogId::new(CommittedLeaderId::new(1, 1), i));
        let dir = tempfile::tempdir().unwrap();
        let marks = Arc::new(Flaky::default());
        let db = NodeDb::open(&dir.path().join("n.redb"), marks.clone()).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut first = put(10, true, tx.clone());
        first.mark = Some((1, MarkChange::Last(log(10))));
        db.submit(first);
        rx.recv().unwrap().unwrap();

        // The mark saying 20 lands, but its store reports a failure; so does every store after.
        marks.fail.store(true, Ordering::SeqCst);
        let mut second = put(20, true, tx.clone());
        second.mark = Some((1, MarkChange::Last(log(20))));
        db.submit(second);
        assert!(rx.recv().unwrap().is_err());
        let truncate = truncation(20, log(15), tx);
        db.submit(truncate);
        assert!(
            rx.recv().unwrap().is_err(),
            "the truncation is not acknowledged"
        );
        assert!(
            on_disk(&db, 20),
            "nor on disk: the mark may say 20, and could not be lowered first"
        );
    }
}
