//! The simulation's network: every Raft message between the hosts of one process goes through
//! [`Net`], which delivers it to the target's real `RaftService` (postcard in, postcard out, as
//! over gRPC) after a delay, or loses it, or refuses it across a cut link, as its seed decides.
//!
//! A message's fate is a function of the seed, the link (from, to, call) and how many messages
//! that link carried before it, not of which task asked first, so the faults a seed injects
//! repeat on a replay only as far as each link's traffic does (heartbeats follow the clock, so
//! after the first difference the fates differ; the nemesis' schedule replays exactly). A lost
//! request or reply is only noticed by the caller when its timeout runs out, as on a real
//! network; a request keeps going after its caller gave up, and may arrive late, after newer
//! ones, as it could over gRPC, whose handler also runs on when the caller has gone.

use lockbox_raft::{NodeId, RaftMessage, RaftService, Rpc, Wire, WireCall};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// SplitMix64: a fixed, well-mixed function of its input (test randomness, not crypto).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn addr(id: NodeId) -> String {
    format!("sim-node-{id}")
}

/// What the network does to one message.
#[derive(Debug, Clone, Copy)]
struct Fate {
    there: Duration,
    back: Duration,
    lose_request: bool,
    lose_reply: bool,
}

/// Counts of what the network did, for the report.
#[derive(Debug, Default)]
pub struct Traffic {
    pub delivered: AtomicU64,
    pub snapshots: AtomicU64,
    pub lost: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The nodes that are up, by address.
    up: HashMap<String, (NodeId, RaftService)>,
    /// Directed links that carry nothing: (from, to).
    cut: HashSet<(NodeId, NodeId)>,
    /// Chance, per thousand, that a request or its reply is lost.
    loss_per_mille: u64,
    /// Messages each link has carried so far.
    sent: HashMap<(NodeId, NodeId, u8), u64>,
}

#[derive(Debug)]
pub struct Net {
    seed: u64,
    max_delay_ms: u64,
    state: Mutex<State>,
    pub traffic: Traffic,
}

impl Net {
    pub fn new(seed: u64, max_delay_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            seed,
            max_delay_ms,
            state: Mutex::default(),
            traffic: Traffic::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Node `id` is up and answers at [`addr`]`(id)` with `service`.
    pub fn up(&self, id: NodeId, service: RaftService) {
        self.state().up.insert(addr(id), (id, service));
    }

    /// Node `id` is down: nothing reaches it any more.
    pub fn down(&self, id: NodeId) {
        self.state().up.remove(&addr(id));
    }

    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.state().cut.insert((from, to));
    }

    pub fn heal(&self) {
        self.state().cut.clear();
    }

    pub fn set_loss(&self, per_mille: u64) {
        self.state().loss_per_mille = per_mille;
    }

    /// The wire node `from` sends on.
    pub fn endpoint(self: &Arc<Self>, from: NodeId) -> Arc<dyn Wire> {
        Arc::new(Endpoint {
            from,
            net: self.clone(),
        })
    }

    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.state().cut.contains(&(from, to))
    }

    /// Where a message goes, and what befalls it; `None` if it cannot leave at all.
    fn route(&self, from: NodeId, to_addr: &str, rpc: Rpc) -> Option<(NodeId, RaftService, Fate)> {
        let mut state = self.state();
        let (to, service) = state.up.get(to_addr).cloned()?;
        if state.cut.contains(&(from, to)) {
            return None;
        }
        let loss = state.loss_per_mille;
        let n = state.sent.entry((from, to, rpc as u8)).or_default();
        *n += 1;
        let link = (from << 48) ^ (to << 40) ^ ((rpc as u64) << 32);
        let r = mix(self.seed ^ mix(link ^ *n));
        let delay = |bits: u64| Duration::from_millis(bits % (self.max_delay_ms + 1));
        let fate = Fate {
            there: delay(r & 0xffff),
            back: delay((r >> 16) & 0xffff),
            lose_request: (r >> 32) % 1000 < loss,
            lose_reply: (r >> 44) % 1000 < loss,
        };
        Some((to, service, fate))
    }
}

#[derive(Debug)]
struct Endpoint {
    from: NodeId,
    net: Arc<Net>,
}

impl Wire for Endpoint {
    fn call(&self, addr: &str, rpc: Rpc, msg: RaftMessage, timeout: Duration) -> WireCall {
        let (net, from) = (self.net.clone(), self.from);
        let route = net.route(from, addr, rpc);
        Box::pin(async move {
            let Some((to, service, fate)) = route else {
                net.traffic.refused.fetch_add(1, Ordering::Relaxed);
                // A refused connection still takes a moment; without it a cut link spins.
                tokio::time::sleep(Duration::from_millis(2)).await;
                return Err(tonic::Status::unavailable(
                    "simulated: no route to the node",
                ));
            };
            let (answer, answered) = tokio::sync::oneshot::channel();
            let carrier = net.clone();
            tokio::spawn(async move {
                tokio::time::sleep(fate.there).await;
                if fate.lose_request {
                    return;
                }
                let reply = service.dispatch(rpc, msg).await;
                tokio::time::sleep(fate.back).await;
                if !fate.lose_reply && !carrier.is_cut(to, from) {
                    let _ = answer.send(reply);
                }
            });
            let deadline = tokio::time::Instant::now() + timeout;
            if let Ok(Ok(reply)) = tokio::time::timeout_at(deadline, answered).await {
                net.traffic.delivered.fetch_add(1, Ordering::Relaxed);
                if rpc == Rpc::Snapshot {
                    net.traffic.snapshots.fetch_add(1, Ordering::Relaxed);
                }
                return reply;
            }
            // Lost on the way, or late: either way the caller hears nothing until its timeout.
            tokio::time::sleep_until(deadline).await;
            net.traffic.lost.fetch_add(1, Ordering::Relaxed);
            Err(tonic::Status::deadline_exceeded(
                "simulated: lost in the network",
            ))
        })
    }
}
