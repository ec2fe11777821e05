//! Membership of a node's groups, as an operator changes it: list, add a member (first as a
//! learner that catches up, then as a voter), remove one. A node id is never used twice: each
//! group's state machine keeps the highest id any of its memberships ever named, and a new
//! member's id must be above it, so a node that lost its state (or was removed) comes back only
//! under a new id.
//!
//! The operations run on the group's leader; elsewhere they answer [`MemberError::NotLeader`]
//! with the leader's address, and the caller asks there.

use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

use crate::db::NodeDb;
use crate::sm::highest_member_id;
use crate::types::{GroupId, NodeId, Raft};

/// How long an added member may take to catch up before the add gives up (it stays a learner).
const CATCH_UP_WITHIN: Duration = Duration::from_secs(300);

/// What an operator asks of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRequest {
    List,
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
}

/// A group's membership as one replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembers {
    pub group: GroupId,
    /// The replica that answered.
    pub node: NodeId,
    pub leader: Option<NodeId>,
    pub voters: Vec<(NodeId, String)>,
    pub learners: Vec<(NodeId, String)>,
    /// Every id up to this one is spent.
    pub highest_id: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MemberError {
    #[error("node {node} does not lead group {group}")]
    NotLeader {
        group: GroupId,
        node: NodeId,
        leader: Option<(NodeId, String)>,
    },
    #[error(
        "node id {id} cannot join group {group}: ids up to {highest} have been used; a node \
         that lost its state or was removed comes back under a new, higher id"
    )]
    IdSpent {
        group: GroupId,
        id: NodeId,
        highest: NodeId,
    },
    #[error("node {id} is not a member of group {group}")]
    NotMember { group: GroupId, id: NodeId },
    #[error("group {group}: {message}")]
    Raft { group: GroupId, message: String },
}

pub(crate) fn list(raft: &Raft, db: &NodeDb, group: GroupId) -> GroupMembers {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
    let (mut voters, mut learners) = (Vec::new(), Vec::new());
    for (id, node) in membership.nodes() {
        let entry = (*id, node.addr.clone());
        if voter_ids.contains(id) {
            voters.push(entry);
        } else {
            learners.push(entry);
        }
    }
    GroupMembers {
        group,
        node: m.id,
        leader: m.current_leader,
        voters,
        learners,
        highest_id: highest_member_id(db, group).unwrap_or(0),
    }
}

fn raft_err(group: GroupId, e: impl std::fmt::Display) -> MemberError {
    MemberError::Raft {
        group,
        message: e.to_string(),
    }
}

/// Confirms this replica leads (with a quorum) and has applied everything before the change.
async fn lead(raft: &Raft, group: GroupId) -> Result<(), MemberError> {
    match raft.ensure_linearizable().await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(MemberError::NotLeader {
                group,
                node: raft.metrics().borrow().id,
                leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
            })
        }
        Err(e) => Err(raft_err(group, e)),
    }
}

pub(crate) async fn add(
    raft: &Raft,
    db: &NodeDb,
    group: GroupId,
    id: NodeId,
    addr: String,
) -> Result<GroupMembers, MemberError> {
    lead(raft, group).await?;
    let highest = highest_member_id(db, group).map_err(|e| raft_err(group, e))?;
    if id <= highest {
        return Err(MemberError::IdSpent { group, id, highest });
    }
    let learner = raft.add_learner(id, BasicNode::new(addr), true);
    tokio::time::timeout(CATCH_UP_WITHIN, learner)
        .await
        .map_err(|_| raft_err(group, "the new member did not catch up in time"))?
        .map_err(|e| raft_err(group, e))?;
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(|e| raft_err(group, e))?;
    Ok(list(raft, db, group))
}

pub(crate) async fn remove(
    raft: &Raft,
    db: &NodeDb,
    group: GroupId,
    id: NodeId,
) -> Result<GroupMembers, MemberError> {
    lead(raft, group).await?;
    let now = list(raft, db, group);
    let change = if now.voters.iter().any(|(v, _)| *v == id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else if now.learners.iter().any(|(l, _)| *l == id) {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    } else {
        return Err(MemberError::NotMember { group, id });
    };
    raft.change_membership(change, false)
        .await
        .map_err(|e| raft_err(group, e))?;
    Ok(list(raft, db, group))
}
