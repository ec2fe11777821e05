//! The node's Raft high-water mark (DESIGN.md §5): for every group, the newest vote it saved and
//! the last log id it holds, kept in a [`MarkStore`] its disk cannot roll back.
//!
//! Raft's safety rests on a replica never forgetting a vote it cast or an entry it acknowledged.
//! A replica restarted from an older copy of its disk would do both (vote twice in a term, or
//! help elect a leader without a committed entry), so the committer raises the mark after each
//! fsync'd batch and before any acknowledgement it covers leaves, and [`check`] refuses a disk
//! found behind it. A refused replica never votes, acknowledges or serves; it comes back only as a
//! new member (a new node id) that catches up from the quorum.
//!
//! The mark only ever lags the disk: it is raised after the fsync (a crash in between leaves the
//! disk ahead, which is fine), and lowered with a truncation (which removes only entries no
//! quorum committed) *before* the batch carrying the truncation commits. A node whose store holds
//! no mark at all starts only on an empty disk, and stores an empty mark before its first write.

use lockbox_hsm::MarkStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::db::DbError;
use crate::types::{GroupId, LogId, Vote};

const MARK_VERSION: u8 = 1;

/// One group's part of the mark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMark {
    pub vote: Option<Vote>,
    pub last: Option<LogId>,
}

/// A change a job makes to its group's mark once its batch is on disk.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MarkChange {
    Vote(Vote),
    Last(Option<LogId>),
}

/// The whole node's mark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighWater {
    groups: BTreeMap<GroupId, GroupMark>,
}

impl HighWater {
    pub fn group(&self, group: GroupId) -> GroupMark {
        self.groups.get(&group).copied().unwrap_or_default()
    }

    /// Applies `change`; says whether the mark moved.
    pub(crate) fn apply(&mut self, group: GroupId, change: MarkChange) -> bool {
        let entry = self.groups.entry(group).or_default();
        let before = *entry;
        match change {
            MarkChange::Vote(v) => entry.vote = Some(v),
            MarkChange::Last(l) => entry.last = l,
        }
        *entry != before
    }

    /// The mark with every lowering in `changes` applied and no raise: what may be stored
    /// before a batch commits (a mark below the disk is always safe, one above it refuses an
    /// honest node after a crash).
    pub(crate) fn floor(&self, changes: &[(GroupId, MarkChange)]) -> Self {
        let mut out = self.clone();
        for &(group, change) in changes {
            if let MarkChange::Last(l) = change {
                let entry = out.groups.entry(group).or_default();
                entry.last = entry.last.min(l);
            }
        }
        out
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, DbError> {
        let mut out = vec![MARK_VERSION];
        out.extend(postcard::to_stdvec(self).map_err(DbError::from_display)?);
        Ok(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DbError> {
        match bytes.split_first() {
            Some((&MARK_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(DbError::from_display)
            }
            _ => Err(DbError("the rollback mark has an unknown format".into())),
        }
    }

    /// Loads the mark from `store`; `None` if it holds none (a new node, or a lost mark).
    pub(crate) fn load(store: &dyn MarkStore) -> Result<Option<Self>, DbError> {
        store
            .load()
            .map_err(DbError::from_display)?
            .map(|bytes| Self::decode(&bytes))
            .transpose()
    }
}

/// How a group's disk stands against the mark.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "group {group}: the disk holds vote {disk_vote:?} and last log {disk_last:?}, but this node \
     had already saved vote {mark_vote:?} and acknowledged up to {mark_last:?}: its disk went back \
     in time"
)]
pub struct RolledBack {
    pub group: GroupId,
    pub disk_vote: Option<Vote>,
    pub disk_last: Option<LogId>,
    pub mark_vote: Option<Vote>,
    pub mark_last: Option<LogId>,
}

fn at_least<T: PartialOrd>(disk: &Option<T>, mark: &Option<T>) -> bool {
    match (disk, mark) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(d), Some(m)) => matches!(
            d.partial_cmp(m),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ),
    }
}

/// Refuses a disk whose vote or log is behind (or beside) what the mark says it had.
pub fn check(
    group: GroupId,
    mark: GroupMark,
    disk_vote: Option<Vote>,
    disk_last: Option<LogId>,
) -> Result<(), RolledBack> {
    if at_least(&disk_vote, &mark.vote) && at_least(&disk_last, &mark.last) {
        Ok(())
    } else {
        Err(RolledBack {
            group,
            disk_vote,
            disk_last,
            mark_vote: mark.vote,
            mark_last: mark.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    #[test]
    fn a_disk_behind_its_mark_is_refused_and_one_level_or_ahead_is_not() {
        let mark = GroupMark {
            vote: Some(Vote::new(5, 2)),
            last: log(5, 40),
        };
        assert!(check(1, mark, Some(Vote::new(5, 2)), log(5, 40)).is_ok());
        assert!(check(1, mark, Some(Vote::new_committed(6, 3)), log(6, 41)).is_ok());
        assert!(
            check(1, mark, Some(Vote::new(4, 2)), log(5, 40)).is_err(),
            "older vote"
        );
        assert!(
            check(1, mark, Some(Vote::new(5, 1)), log(5, 40)).is_err(),
            "an older vote of the same term: forgetting (5, 2) would let this replica grant it \
             again to (5, 1)'s rival"
        );
        assert!(
            check(1, mark, Some(Vote::new(5, 2)), log(5, 39)).is_err(),
            "shorter log"
        );
        assert!(check(1, mark, None, None).is_err(), "an emptied disk");
        assert!(
            check(1, GroupMark::default(), None, None).is_ok(),
            "a new node"
        );
    }

    #[test]
    fn the_mark_round_trips_and_refuses_another_format() {
        let mut hw = HighWater::default();
        assert!(hw.apply(3, MarkChange::Vote(Vote::new(2, 1))));
        assert!(
            !hw.apply(3, MarkChange::Vote(Vote::new(2, 1))),
            "no change, no write"
        );
        assert!(hw.apply(3, MarkChange::Last(log(2, 9))));
        let bytes = hw.encode().unwrap();
        assert_eq!(HighWater::decode(&bytes).unwrap(), hw);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(HighWater::decode(&other).is_err());
    }
}
