//! Simulation: five real hosts (openraft, the redb log and state machine, the rollback mark)
//! in this process, their Raft messages on a seeded in-memory network ([`wire`]) that delays,
//! loses and reorders them, while a seeded nemesis cuts links (isolated nodes, minority
//! splits, one-way cuts), changes the loss rate, and stops nodes (cleanly: the page cache
//! stays) and restarts them from their disks. Clients meanwhile read records linearizably and compare-and-set them. Once the
//! network heals, every record's history must be linearizable ([`check`]), every replica
//! must hold the same records, and a new write must apply.
//!
//! Each seed's run is bounded (a fixed number of nemesis steps); CI runs a few seeds drawn
//! from the OS and prints each. `LOCKBOX_SIM_SEED=S` replays seed S (the nemesis' schedule
//! exactly, each link's fates until its traffic first differs; thread timing not at all),
//! `LOCKBOX_SIM_SEEDS=N` runs N seeds.

#[path = "sim/check.rs"]
mod check;
mod common;
#[path = "sim/wire.rs"]
mod wire;

use check::{Read, Reply, Write};
use lockbox_raft::{
    Command, GroupId, Host, HostConfig, NodeId, Outcome, ProposeError, Role, Timing,
};
use openraft::BasicNode;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use wire::Net;

const NODES: u64 = 5;
const GROUPS: [GroupId; 2] = [1, 2];
/// The records the clients fight over: two share a group, so their entries interleave.
const RECORDS: [(GroupId, &[u8]); 3] = [(1, b"a"), (1, b"b"), (2, b"c")];
const CLIENTS: u64 = 6;
const STEPS: u32 = 12;
const DEFAULT_SEEDS: u64 = 3;

/// Short enough that a bounded run sees many elections. openraft waits one heartbeat for an
/// append's answer, which must cover the wire's delay (up to 20 ms there and back) and a
/// loaded follower's fsync; a late one is retried, not fatal.
fn timing() -> Timing {
    Timing {
        heartbeat_ms: 100,
        election_min_ms: 400,
        election_max_ms: 800,
        snapshot_every: 40,
        commit_wait: Duration::from_secs(2),
    }
}

/// The running hosts, shared with the clients; in id order, so a seed's picks repeat.
type Hosts = Arc<RwLock<BTreeMap<NodeId, Arc<Host>>>>;

struct Sim {
    net: Arc<Net>,
    /// Node `id`'s configuration at `id - 1`.
    nodes: Vec<HostConfig>,
    hosts: Hosts,
    _dir: tempfile::TempDir,
}

impl Sim {
    async fn start(seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (1..=NODES)
            .map(|id| HostConfig {
                id,
                db_path: dir.path().join(format!("node-{id}.redb")),
                marks: common::file_mark(id, dir.path()),
                log_keys: GROUPS.iter().map(|&g| (g, common::log_key(g))).collect(),
                groups: GROUPS.to_vec(),
                timing: timing(),
                tls: None,
            })
            .collect();
        let sim = Self {
            net: Net::new(seed, 10),
            nodes,
            hosts: Arc::default(),
            _dir: dir,
        };
        for id in 1..=NODES {
            sim.boot(id).await;
        }
        let members: BTreeMap<NodeId, BasicNode> = (1..=NODES)
            .map(|id| (id, BasicNode::new(wire::addr(id))))
            .collect();
        sim.host(1)
            .unwrap()
            .bootstrap(&members)
            .await
            .expect("bootstrap");
        sim.settle().await;
        sim
    }

    /// Waits until every node of every group knows a leader: the cluster exists before any
    /// fault (a bootstrapping node stopped at once would leave only itself knowing the members).
    async fn settle(&self) {
        for _ in 0..600 {
            let hosts: Vec<_> = self.hosts.read().unwrap().values().cloned().collect();
            let known = |h: &Arc<Host>, g| {
                h.raft(g)
                    .unwrap()
                    .metrics()
                    .borrow()
                    .current_leader
                    .is_some()
            };
            if hosts.iter().all(|h| GROUPS.iter().all(|&g| known(h, g))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the simulated cluster did not elect its first leaders within a minute");
    }

    fn host(&self, id: NodeId) -> Option<Arc<Host>> {
        self.hosts.read().unwrap().get(&id).cloned()
    }

    fn running(&self) -> Vec<NodeId> {
        self.hosts.read().unwrap().keys().copied().collect()
    }

    /// Starts node `id` from its disk. A refusal (rolled back, altered log) fails the run: no
    /// fault here touches a disk, so a host that will not reopen has lost track of its own state.
    async fn boot(&self, id: NodeId) {
        let host = Host::open_on_wire(&self.nodes[id as usize - 1], self.net.endpoint(id))
            .await
            .unwrap_or_else(|e| panic!("node {id} does not restart from its own disk: {e}"));
        self.net.up(id, host.peer_service(None));
        self.hosts.write().unwrap().insert(id, Arc::new(host));
    }

    /// Takes node `id` off the network and shuts it down; its disk stays.
    async fn stop(&self, id: NodeId) {
        self.net.down(id);
        let host = self.hosts.write().unwrap().remove(&id).expect("running");
        host.shutdown().await;
    }
}

/// The nemesis: one seeded fault per step, then a pause of its own length.
async fn nemesis(sim: &Sim, rng: &mut ChaCha8Rng, log: &mut Vec<String>) {
    for _ in 0..STEPS {
        let pick = |rng: &mut ChaCha8Rng, n: u64| rng.next_u64() % n;
        let node = 1 + pick(rng, NODES);
        let action = match pick(rng, 7) {
            0 => {
                sim.net.heal();
                "heal".to_string()
            }
            1 => {
                sim.net.heal();
                for other in (1..=NODES).filter(|&o| o != node) {
                    sim.net.cut(node, other);
                    sim.net.cut(other, node);
                }
                format!("isolate {node}")
            }
            2 => {
                let second = 1 + (node + pick(rng, NODES - 1)) % NODES;
                sim.net.heal();
                for out in [node, second] {
                    for other in (1..=NODES).filter(|o| ![node, second].contains(o)) {
                        sim.net.cut(out, other);
                        sim.net.cut(other, out);
                    }
                }
                format!("split {{{node}, {second}}} from the rest")
            }
            3 => {
                let to = 1 + (node + pick(rng, NODES - 1)) % NODES;
                sim.net.cut(node, to);
                format!("cut {node} -> {to}")
            }
            4 => {
                let per_mille = [0, 30, 150][pick(rng, 3) as usize];
                sim.net.set_loss(per_mille);
                format!("loss {per_mille}/1000")
            }
            _ => {
                let running = sim.running();
                if running.contains(&node) && running.len() as u64 > NODES - 2 {
                    sim.stop(node).await;
                    format!("stop {node}")
                } else if !running.contains(&node) {
                    sim.boot(node).await;
                    format!("restart {node}")
                } else {
                    "(two down already)".to_string()
                }
            }
        };
        // Long enough, often, for a cut-off leader's lease to run out and a new one to rise
        // while the old one still believes it leads.
        let pause = 200 + pick(rng, 1800);
        log.push(format!("{action}, then {pause} ms"));
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// What one record went through, as its clients saw it.
#[derive(Default)]
struct History {
    writes: Vec<Write>,
    reads: Vec<Read>,
}

/// The hosts that believe they lead `group`: more than one while a deposed leader has not
/// heard of it yet.
fn leaders(hosts: &Hosts, group: GroupId) -> Vec<Arc<Host>> {
    let hosts = hosts.read().unwrap();
    hosts
        .values()
        .filter(|h| h.role(group) == Some(Role::Leader))
        .cloned()
        .collect()
}

impl History {
    /// A linearizable read through `host`, recorded if it answered.
    async fn read(
        &mut self,
        host: &Host,
        group: GroupId,
        account: &[u8],
    ) -> Option<(u64, Vec<u64>)> {
        let start = Instant::now();
        let record = host.read(group, account).await.ok()?;
        let (seq, list) = match record {
            Some(s) => (
                s.seq,
                check::decode(&s.sealed).expect("a value the clients wrote"),
            ),
            None => (0, Vec::new()),
        };
        let end = Instant::now();
        self.reads.push(Read {
            start,
            end,
            seq,
            list: list.clone(),
        });
        Some((seq, list))
    }

    /// Writes `list` plus a new op at `expected`, through `host`, and records the reply.
    async fn cas(
        &mut self,
        host: &Host,
        group: GroupId,
        account: &[u8],
        op: u64,
        expected: u64,
        mut list: Vec<u64>,
    ) -> Reply {
        list.push(op);
        let cmd = Command {
            account: account.to_vec(),
            expected_seq: expected,
            sealed: check::encode(&list),
        };
        let start = Instant::now();
        let reply = match host.propose(group, cmd).await {
            Ok(c) => match c.outcome {
                Outcome::Applied { seq } => Reply::Applied(seq),
                Outcome::Conflict { found } => Reply::Conflict(found),
                Outcome::NoOp => panic!("a record write applied as a no-op"),
            },
            Err(ProposeError::NotLeader { .. }) => Reply::NotApplied,
            Err(_) => Reply::Unknown,
        };
        let end = Instant::now();
        self.writes.push(Write {
            op,
            expected,
            start,
            end,
            reply,
        });
        reply
    }
}

/// A client: read a record from whoever leads, then write the list it read plus its own op,
/// at the sequence it read (or, now and then, at an older one, to draw conflicts). While two
/// hosts believe they lead, it sometimes writes through the other one: what it read is still
/// the record's true history at that sequence. `doubled` counts the ops that met two leaders.
async fn client(
    hosts: Hosts,
    mut rng: ChaCha8Rng,
    ops: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    doubled: Arc<AtomicU64>,
) -> HashMap<usize, History> {
    let mut seen: HashMap<usize, History> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let r = (rng.next_u64() % RECORDS.len() as u64) as usize;
        let (group, account) = RECORDS[r];
        // Any of them: a client that stayed with a deposed leader is what a stale read needs.
        let mut believers = leaders(&hosts, group);
        if believers.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let host = believers.swap_remove((rng.next_u64() % believers.len() as u64) as usize);
        if !believers.is_empty() {
            doubled.fetch_add(1, Ordering::Relaxed);
        }
        let history = seen.entry(r).or_default();
        let Some((seq, list)) = history.read(&host, group, account).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // A sequence the record has left can never match again: a sure conflict, unless it
        // was read at 0. (A guess ahead could apply, and the list would no longer be the
        // history.)
        let (expected, list) = match rng.next_u64() % 8 {
            0 if seq > 0 => (seq - 1, list[..list.len() - 1].to_vec()),
            _ => (seq, list),
        };
        let writer = if !believers.is_empty() && rng.next_u64().is_multiple_of(2) {
            believers.swap_remove((rng.next_u64() % believers.len() as u64) as usize)
        } else {
            host
        };
        let op = ops.fetch_add(1, Ordering::Relaxed);
        history
            .cas(&writer, group, account, op, expected, list)
            .await;
    }
    seen
}

/// After the faults, with everyone back and the network whole: the group must take a write
/// (following leadership as it settles). Once one applies, no write still in flight can
/// change the record (each expects an older sequence), so the read after it is final.
async fn finish(
    sim: &Sim,
    ops: &AtomicU64,
    group: GroupId,
    account: &[u8],
    h: &mut History,
) -> Result<(u64, Vec<u64>, Arc<Host>), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(host) = leaders(&sim.hosts, group).pop()
            && let Some((seq, list)) = h.read(&host, group, account).await
        {
            let op = ops.fetch_add(1, Ordering::Relaxed);
            if let Reply::Applied(_) = h.cas(&host, group, account, op, seq, list).await
                && let Some((seq, list)) = h.read(&host, group, account).await
            {
                return Ok((seq, list, host));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "group {group} took no write and read within a minute of healing"
    ))
}

/// Runs one seed: its report, and how many client writes applied while the faults lasted.
async fn run(seed: u64) -> Result<(String, usize), String> {
    let sim = Sim::start(seed).await;
    let doubled = Arc::new(AtomicU64::new(0));
    let (ops, stop) = (
        Arc::new(AtomicU64::new(1)),
        Arc::new(AtomicBool::new(false)),
    );
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let rng = ChaCha8Rng::seed_from_u64(wire::mix(wire::mix(seed) ^ (c + 1)));
            let (ops, stop, doubled) = (ops.clone(), stop.clone(), doubled.clone());
            tokio::spawn(client(sim.hosts.clone(), rng, ops, stop, doubled))
        })
        .collect();
    let mut schedule = Vec::new();
    nemesis(&sim, &mut ChaCha8Rng::seed_from_u64(seed), &mut schedule).await;
    stop.store(true, Ordering::Relaxed);
    let mut histories: HashMap<usize, History> = HashMap::new();
    for c in clients {
        for (r, h) in c.await.expect("client task") {
            let all = histories.entry(r).or_default();
            all.writes.extend(h.writes);
            all.reads.extend(h.reads);
        }
    }

    let applied = histories
        .values()
        .flat_map(|h| &h.writes)
        .filter(|w| matches!(w.reply, Reply::Applied(_)))
        .count();
    sim.net.heal();
    sim.net.set_loss(0);
    for id in 1..=NODES {
        if !sim.running().contains(&id) {
            sim.boot(id).await;
        }
    }
    let mut report = Vec::new();
    for (r, &(group, account)) in RECORDS.iter().enumerate() {
        let mut h = histories.remove(&r).unwrap_or_default();
        let (seq, list, host) = finish(&sim, &ops, group, account, &mut h)
            .await
            .map_err(|e| format!("record {r}: {e}"))?;
        check::check(seq, &list, &h.writes, &h.reads)
            .map_err(|e| format!("record {r}: {e}\nschedule: {schedule:#?}"))?;
        converged(&sim, &host, group, account, seq)
            .await
            .map_err(|e| format!("record {r}: {e}"))?;
        let count = |f: fn(&Reply) -> bool| h.writes.iter().filter(|w| f(&w.reply)).count();
        report.push(format!(
            "record {r}: seq {seq}, {} reads, writes {} applied / {} conflict / {} refused / {} unknown",
            h.reads.len(),
            count(|r| matches!(r, Reply::Applied(_))),
            count(|r| matches!(r, Reply::Conflict(_))),
            count(|r| *r == Reply::NotApplied),
            count(|r| *r == Reply::Unknown),
        ));
    }
    let t = &sim.net.traffic;
    report.push(format!(
        "messages: {} delivered ({} snapshot chunks), {} lost, {} refused; {} ops met two leaders; schedule: {}",
        t.delivered.load(Ordering::Relaxed),
        t.snapshots.load(Ordering::Relaxed),
        t.lost.load(Ordering::Relaxed),
        t.refused.load(Ordering::Relaxed),
        doubled.load(Ordering::Relaxed),
        schedule.join("; ")
    ));
    for id in sim.running() {
        sim.stop(id).await;
    }
    Ok((report.join("\n"), applied))
}

/// Every replica applies what the leader read, and holds the same record.
async fn converged(
    sim: &Sim,
    leader: &Host,
    group: GroupId,
    account: &[u8],
    seq: u64,
) -> Result<(), String> {
    let index = leader
        .raft(group)
        .unwrap()
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |l| l.index);
    let want = leader.local_record(group, account).unwrap();
    if want.as_ref().map_or(0, |s| s.seq) != seq {
        return Err(format!(
            "the leader's own copy is not at the sequence it read ({seq})"
        ));
    }
    for id in sim.running() {
        let host = sim.host(id).unwrap();
        host.raft(group)
            .unwrap()
            .wait(Some(Duration::from_secs(60)))
            .applied_index_at_least(Some(index), "caught up")
            .await
            .map_err(|e| format!("node {id} did not catch up with group {group}: {e}"))?;
        let local = host.local_record(group, account).unwrap();
        if local != want {
            return Err(format!(
                "node {id} holds another record than the leader after catching up"
            ));
        }
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("LOCKBOX_SIM_SEED") {
        return vec![s.parse().expect("LOCKBOX_SIM_SEED is a number")];
    }
    let n = std::env::var("LOCKBOX_SIM_SEEDS").map_or(DEFAULT_SEEDS, |n| {
        n.parse().expect("LOCKBOX_SIM_SEEDS is a number")
    });
    let mut bytes = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let base = u64::from_le_bytes(bytes) >> 16;
    (0..n).map(|i| base + i).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_faults_never_break_linearizability_and_every_replica_converges() {
    let mut progress = 0;
    for seed in seeds() {
        println!(
            "simulation seed {seed} (replay: LOCKBOX_SIM_SEED={seed} cargo test -p lockbox-raft --test sim)"
        );
        let bounded = tokio::time::timeout(Duration::from_secs(300), run(seed));
        match bounded
            .await
            .unwrap_or_else(|_| Err("did not finish within 5 minutes".into()))
        {
            Ok((report, applied)) => {
                println!("{report}");
                progress += applied;
            }
            Err(e) => panic!(
                "seed {seed}: {e}\nreplay: LOCKBOX_SIM_SEED={seed} cargo test -p lockbox-raft --test sim -- --nocapture"
            ),
        }
    }
    // A seed may cut off every quorum for its whole run; all of them together may not.
    assert!(
        progress > 0,
        "no client write applied under any seed: the run tested nothing"
    );
}
