//! Five replicated vault nodes in this process, each with its own data directory, rollback
//! mark and ports, talking real gRPC on loopback: requests reach any node, run on the
//! partition's leader, and what they spent survives losing any two nodes.

mod common;

use common::{FLEET, KSF, new_key};
use lockbox_client::{ClientError, VaultClient};
use lockbox_raft::{Host, MemberError, MemberRequest, Role};
use lockbox_token::{Issuer, MintingSource};
use lockbox_vault::node::{self, PartitionKeys};
use lockbox_vault::{ServeError, VaultConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const PART: u32 = 0;

struct Replica {
    root: PathBuf,
    addr: SocketAddr,
    running: Option<Running>,
}

struct Running {
    host: Arc<Host>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

fn addr_in_use(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::AddrInUse
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Replica {
    fn config(&self) -> VaultConfig {
        VaultConfig::load(&self.root.join("vault.toml")).expect("vault.toml")
    }

    async fn try_start(&mut self) -> Result<(), ServeError> {
        let bound = lockbox_vault::bind(self.config()).await?;
        let host = bound.replicas().expect("replicated");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        self.running = Some(Running { host, stop, task });
        Ok(())
    }

    async fn stop(&mut self) {
        let r = self.running.take().expect("running");
        let _ = r.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), r.task)
            .await
            .expect("node stops")
            .expect("task")
            .expect("clean exit");
    }

    fn role(&self) -> Option<Role> {
        self.running.as_ref()?.host.role(PART)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct Fleet {
    nodes: Vec<Replica>,
    issuer: Arc<Issuer>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Writes five node configs, installs one partition's secrets on all of them (the fleet
    /// ceremony's step) and starts them; node 1 bootstraps the group.
    async fn start() -> Self {
        // A port found free can be taken by another test's process before the node binds it:
        // then the whole fleet is made again on new ports.
        for _ in 0..5 {
            if let Some(fleet) = Self::try_build().await {
                return fleet;
            }
        }
        panic!("no free ports for a fleet after 5 tries");
    }

    async fn try_build() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Arc::new(Issuer::generate().unwrap());
        let peers: Vec<SocketAddr> = (0..5).map(|_| free_addr()).collect();
        let members: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{{ id = {}, addr = \"{a}\" }}", i + 1))
            .collect();
        let keys = PartitionKeys::generate();
        let mut nodes = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let id = i as u64 + 1;
            let root = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&root).unwrap();
            let addr = free_addr();
            let text = format!(
                "node_id = \"node-{id}\"\nlisten = \"{addr}\"\ndata_dir = \"data\"\npartitions = [{PART}]\n\
                 min_client_ksf = {{ m_cost_kib = {m}, t_cost = {t}, p_cost = {p} }}\n{auth}\n\
                 [replication]\nraft_id = {id}\npeer_listen = \"{peer}\"\nbootstrap = {boot}\n\
                 heartbeat_ms = 100\nelection_timeout_ms = [800, 1600]\nmembers = [{members}]\n",
                auth = lockbox_vault::config::AuthConfig::toml_section(&issuer, FLEET),
                m = KSF.m_cost_kib(),
                t = KSF.t_cost(),
                p = KSF.p_cost(),
                boot = id == 1,
                members = members.join(", "),
            );
            std::fs::write(root.join("vault.toml"), text).unwrap();
            let replica = Replica {
                root,
                addr,
                running: None,
            };
            let cfg = replica.config();
            let store = node::open_store(&cfg).unwrap();
            let sealer = node::open_sealer(&cfg).unwrap();
            node::install_partition(&store, sealer.as_ref(), PART, &keys).unwrap();
            nodes.push(replica);
        }
        for i in 0..nodes.len() {
            match nodes[i].try_start().await {
                Ok(()) => {}
                Err(e) if addr_in_use(&e) => {
                    for n in &mut nodes[..i] {
                        n.stop().await;
                    }
                    return None;
                }
                Err(e) => panic!("node starts: {e:?}"),
            }
        }
        let fleet = Self {
            nodes,
            issuer,
            _dir: dir,
        };
        fleet.leader().await;
        Some(fleet)
    }

    /// The index of the node that leads, once one does and the others know it.
    async fn leader(&self) -> usize {
        for _ in 0..600 {
            let leaders: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].role() == Some(Role::Leader))
                .collect();
            let followers_know = self
                .nodes
                .iter()
                .all(|n| !matches!(n.role(), Some(Role::Follower { leader: None })));
            if let [one] = leaders[..]
                && followers_know
            {
                return one;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader within 30 s");
    }

    /// Until node `i` has applied `account`'s record as the leader has.
    async fn wait_applied(&self, i: usize, account: &[u8]) {
        let leader = self.leader().await;
        let host = |n: usize| &self.nodes[n].running.as_ref().expect("running").host;
        for _ in 0..600 {
            let want = host(leader).local_record(PART, account).unwrap();
            if host(i).local_record(PART, account).unwrap() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {i} did not apply the leader's record within 30 s");
    }

    async fn client(&self, i: usize) -> VaultClient {
        let target = VaultClient::discover(&self.nodes[i].url(), PART)
            .await
            .expect("discover");
        let tokens = MintingSource::new(self.issuer.clone(), FLEET, Duration::from_secs(600));
        VaultClient::connect(target)
            .await
            .expect("connect")
            .with_token_source(Arc::new(tokens))
    }
}

/// What a client sees through node `i` once the partition has settled: retried while the
/// group is between leaders (UNAVAILABLE), the way a device retries.
async fn attempts_via(fleet: &Fleet, i: usize, account: &[u8]) -> (u8, u8) {
    let c = fleet.client(i).await;
    for _ in 0..100 {
        match c.status(account).await {
            Ok(s) => return s.attempts().expect("active record"),
            Err(ClientError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("status: {e}"),
        }
    }
    panic!("no status within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_follower_accepts_runs_on_the_leader_and_survives_losing_two_nodes() {
    let mut fleet = Fleet::start().await;
    let leader = fleet.leader().await;
    let follower = (leader + 1) % 5;
    let key = new_key();

    // Enrolled and guessed through a follower: it hands both to the leader.
    let c = fleet.client(follower).await;
    c.enroll(b"alice", b"pw", &key, 5, KSF).await.unwrap();
    let wrong = c.recover(b"alice", b"nope").await.unwrap_err();
    assert_eq!(wrong, ClientError::WrongPassword { attempts_left: 4 });
    for i in 0..5 {
        assert_eq!(
            attempts_via(&fleet, i, b"alice").await,
            (4, 5),
            "via node {i}"
        );
    }

    // Lose the leader and one more: the three left elect a leader that has every spent attempt.
    let other = (leader + 2) % 5;
    fleet.nodes[leader].stop().await;
    fleet.nodes[other].stop().await;
    let survivor = (leader + 3) % 5;
    assert_eq!(attempts_via(&fleet, survivor, b"alice").await, (4, 5));
    let new_leader = fleet.leader().await;
    assert!(new_leader != leader && new_leader != other);
    let c = fleet.client(survivor).await;
    let wrong = c.recover(b"alice", b"nope2").await.unwrap_err();
    assert_eq!(wrong, ClientError::WrongPassword { attempts_left: 3 });

    // The two come back from their disks, catch up, and with two others gone the count holds.
    fleet.nodes[leader].try_start().await.unwrap();
    fleet.nodes[other].try_start().await.unwrap();
    fleet.leader().await;
    let (a, b) = (new_leader, (new_leader + 1) % 5);
    fleet.nodes[a].stop().await;
    fleet.nodes[b].stop().await;
    let up = (0..5).find(|&i| fleet.nodes[i].running.is_some()).unwrap();
    assert_eq!(attempts_via(&fleet, up, b"alice").await, (3, 5));
    let c = fleet.client(up).await;
    assert_eq!(c.recover(b"alice", b"pw").await.unwrap(), key);
    assert_eq!(attempts_via(&fleet, up, b"alice").await, (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_restored_from_an_old_copy_of_its_disk_refuses_to_start() {
    let mut fleet = Fleet::start().await;
    let key = new_key();
    let leader = fleet.leader().await;
    let c = fleet.client(leader).await;
    c.enroll(b"bob", b"pw", &key, 3, KSF).await.unwrap();
    let victim = (leader + 1) % 5;
    // Wait until the victim has applied the enrollment, then copy its whole data directory.
    let data = fleet.nodes[victim].root.join("data");
    let old = fleet.nodes[victim].root.join("data.old");
    fleet.nodes[victim].stop().await;
    copy_dir(&data, &old);
    fleet.nodes[victim].try_start().await.unwrap();
    fleet.leader().await;

    // Spend every guess: the record is destroyed, with the victim voting along.
    for _ in 0..3 {
        let e = c.recover(b"bob", b"nope").await.unwrap_err();
        assert!(e.is_auth_failure() || e.is_destroyed(), "{e:?}");
    }
    let status = fleet.client(victim).await.status(b"bob").await.unwrap();
    assert!(status.is_destroyed(), "{status:?}");
    // The victim holds (so it acknowledged) the destroying write: a rollback must be caught.
    fleet.wait_applied(victim, b"bob").await;

    // Put the old copy back: the node must not take part.
    fleet.nodes[victim].stop().await;
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&old, &data).unwrap();
    let refused = fleet.nodes[victim].try_start().await.unwrap_err();
    let msg = refused.to_string();
    assert!(msg.contains("refusing to start"), "{msg}");

    // The rest still answer with the truth: destroyed stays destroyed.
    let up = (victim + 1) % 5;
    let status = fleet.client(up).await.status(b"bob").await.unwrap();
    assert!(status.is_destroyed(), "{status:?}");
    assert!(c.recover(b"bob", b"pw").await.is_err());

    // The operator brings the machine back as a new member: its Raft state and mark wiped, a
    // new id, added through the leader; the old id is removed and can never come back.
    let old_id = victim as u64 + 1;
    std::fs::remove_file(data.join("raft.redb")).unwrap();
    std::fs::remove_file(fleet.nodes[victim].root.join("data.raft-mark")).unwrap();
    let toml = fleet.nodes[victim].root.join("vault.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let text = text
        .replace(&format!("raft_id = {old_id}"), "raft_id = 6")
        .replace("bootstrap = true", "bootstrap = false");
    std::fs::write(&toml, text).unwrap();
    // (The leader is found first: a node that is no member yet knows none.)
    let leader = fleet.leader().await;
    fleet.nodes[victim].try_start().await.unwrap();
    let peer = fleet.nodes[victim]
        .config()
        .replication
        .unwrap()
        .peer_addr();
    let at = fleet.nodes[leader]
        .config()
        .replication
        .unwrap()
        .peer_addr();
    let ask = |req| {
        let at = at.clone();
        async move {
            lockbox_raft::ask_members(&at, None, PART, &req)
                .await
                .unwrap()
        }
    };
    let added = ask(MemberRequest::Add { id: 6, addr: peer }).await.unwrap();
    assert!(added.voters.iter().any(|(id, _)| *id == 6), "{added:?}");
    let removed = ask(MemberRequest::Remove { id: old_id }).await.unwrap();
    assert_eq!(removed.voters.len(), 5, "{removed:?}");
    assert!(removed.voters.iter().all(|(id, _)| *id != old_id));
    let again = ask(MemberRequest::Add {
        id: old_id,
        addr: "127.0.0.1:1".into(),
    })
    .await;
    assert!(
        matches!(again, Err(MemberError::IdSpent { highest: 6, .. })),
        "{again:?}"
    );
    // The new member caught up: it holds the destroyed record, as the leader does.
    let host = &fleet.nodes[victim].running.as_ref().unwrap().host;
    let theirs = fleet.nodes[leader]
        .running
        .as_ref()
        .unwrap()
        .host
        .local_record(PART, b"bob");
    assert_eq!(host.local_record(PART, b"bob").unwrap(), theirs.unwrap());
    assert!(host.local_record(PART, b"bob").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_rolled_back_at_once_both_refuse_and_the_quorum_keeps_the_truth() {
    let mut fleet = Fleet::start().await;
    let key = new_key();
    let leader = fleet.leader().await;
    let c = fleet.client(leader).await;
    c.enroll(b"carol", b"pw", &key, 4, KSF).await.unwrap();
    // Two followers' disks, copied while they are stopped (whole), with 4 attempts left.
    let victims = [(leader + 1) % 5, (leader + 2) % 5];
    for &v in &victims {
        fleet.wait_applied(v, b"carol").await;
        let root = fleet.nodes[v].root.clone();
        fleet.nodes[v].stop().await;
        copy_dir(&root.join("data"), &root.join("data.old"));
        fleet.nodes[v].try_start().await.unwrap();
    }
    fleet.leader().await;

    // Two wrong guesses, acknowledged by both victims too.
    for _ in 0..2 {
        let e = c.recover(b"carol", b"nope").await.unwrap_err();
        assert!(e.is_auth_failure(), "{e:?}");
    }
    for &v in &victims {
        fleet.wait_applied(v, b"carol").await;
        assert_eq!(attempts_via(&fleet, v, b"carol").await, (2, 4));
    }

    // Both old copies back at once: neither may take part.
    for &v in &victims {
        let root = fleet.nodes[v].root.clone();
        fleet.nodes[v].stop().await;
        std::fs::remove_dir_all(root.join("data")).unwrap();
        std::fs::rename(root.join("data.old"), root.join("data")).unwrap();
    }
    for &v in &victims {
        let refused = fleet.nodes[v].try_start().await.unwrap_err();
        assert!(
            refused.to_string().contains("refusing to start"),
            "{refused}"
        );
    }

    // The other three are a quorum and tell the truth: 2 left, not the 4 on the old disks; the
    // last two guesses destroy the record, and it stays destroyed.
    let up: Vec<usize> = (0..5).filter(|i| !victims.contains(i)).collect();
    assert_eq!(attempts_via(&fleet, up[0], b"carol").await, (2, 4));
    let c = fleet.client(up[1]).await;
    for _ in 0..2 {
        let e = c.recover(b"carol", b"nope").await.unwrap_err();
        assert!(e.is_auth_failure() || e.is_destroyed(), "{e:?}");
    }
    let status = fleet.client(up[2]).await.status(b"carol").await.unwrap();
    assert!(status.is_destroyed(), "{status:?}");
    assert!(c.recover(b"carol", b"pw").await.unwrap_err().is_destroyed());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A gateway that lists every replica passes over the ones that refuse connections (dead
/// machines): nothing reached them, so the same envelope goes to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_passes_over_dead_replicas() {
    let mut fleet = Fleet::start().await;
    let leader = fleet.leader().await;
    let key = new_key();
    fleet
        .client(leader)
        .await
        .enroll(b"carol", b"pw", &key, 5, KSF)
        .await
        .unwrap();
    let replicas: Vec<String> = fleet
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.url()))
        .collect();
    let config = fleet._dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n{}[[partitions]]\nid = {PART}\nreplicas = [{}]\n",
            lockbox_vault::config::AuthConfig::toml_section(&fleet.issuer, FLEET),
            replicas.join(", ")
        ),
    )
    .unwrap();
    let gateway = lockbox_gateway::bind(lockbox_gateway::GatewayConfig::load(&config).unwrap())
        .await
        .unwrap();
    let gateway_url = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.serve(std::future::pending()));

    let other = (leader + 1) % 5;
    fleet.nodes[leader].stop().await;
    fleet.nodes[other].stop().await;
    let up = (leader + 2) % 5;
    assert_eq!(attempts_via(&fleet, up, b"carol").await, (5, 5));
    fleet.leader().await;

    let mut target = VaultClient::discover(&fleet.nodes[up].url(), PART)
        .await
        .unwrap();
    target.endpoint = gateway_url;
    let tokens = MintingSource::new(fleet.issuer.clone(), FLEET, Duration::from_secs(600));
    let c = VaultClient::connect(target)
        .await
        .unwrap()
        .with_token_source(Arc::new(tokens));
    for i in 0..10 {
        let status = c.status(b"carol").await;
        assert!(status.is_ok(), "call {i} through the gateway: {status:?}");
    }
    assert_eq!(c.recover(b"carol", b"pw").await.unwrap(), key);
}

/// The leader spends the attempt and answers KE2, then dies before the KE3. The new leader
/// has the spent attempt (it was committed before KE2 left) and no session to finish: the
/// attempt is spent exactly once, neither given back nor spent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_lost_between_ke1_and_ke3_has_spent_the_attempt_exactly_once() {
    let mut fleet = Fleet::start().await;
    let leader = fleet.leader().await;
    let follower = (leader + 1) % 5;
    let key = new_key();
    let c = fleet.client(follower).await;
    c.enroll(b"dave", b"pw", &key, 5, KSF).await.unwrap();
    let pending = c.login_start(b"dave", b"pw").await.unwrap();
    assert_eq!(pending.attempts_left(), 4);

    fleet.nodes[leader].stop().await;
    let finished = c.login_finish(pending).await;
    assert!(
        finished.is_err(),
        "a KE3 finished on a leader that never saw the KE1"
    );
    assert_eq!(attempts_via(&fleet, follower, b"dave").await, (4, 5));
    let new_leader = fleet.leader().await;
    assert_ne!(new_leader, leader);
    // A fresh login is one more attempt, and its success gives them all back.
    let pending = c.login_start(b"dave", b"pw").await.unwrap();
    assert_eq!(pending.attempts_left(), 3);
    assert_eq!(c.login_finish(pending).await.unwrap(), key);
    assert_eq!(attempts_via(&fleet, follower, b"dave").await, (5, 5));
}

/// A thousand guesses at one account (limit 10) sent concurrently to every node while the
/// leader is stopped twice: at most 10 KE2s ever come back, and the record ends destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_guesses_across_failovers_get_at_most_the_limit() {
    const GUESSES: usize = 1000;
    const LIMIT: u8 = 10;
    let mut fleet = Fleet::start().await;
    let leader = fleet.leader().await;
    fleet
        .client(leader)
        .await
        .enroll(b"erin", b"pw", &new_key(), LIMIT, KSF)
        .await
        .unwrap();
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(Arc::new(fleet.client(i).await));
    }
    let ke2s = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for g in 0..GUESSES {
        let (c, ke2s, gate) = (clients[g % 5].clone(), ke2s.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let guess = format!("guess-{g}");
            if c.login_start(b"erin", guess.as_bytes()).await.is_ok() {
                ke2s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    // Two failovers while the guesses run.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let l = fleet.leader().await;
        fleet.nodes[l].stop().await;
        fleet.leader().await;
        fleet.nodes[l].try_start().await.unwrap();
    }
    while tasks.join_next().await.is_some() {}
    let got = ke2s.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        got <= usize::from(LIMIT),
        "{got} KE2s for a limit of {LIMIT}"
    );
    assert!(got > 0, "no guess was ever answered");
    // Whatever KE2s were lost in flight, their attempts were spent: the next KE1 destroys.
    let up = fleet.leader().await;
    let c = fleet.client(up).await;
    let last = c.login_start(b"erin", b"pw").await;
    assert!(
        matches!(last, Err(ClientError::Destroyed)),
        "{last:?} after {got} KE2s"
    );
    assert!(c.status(b"erin").await.unwrap().is_destroyed());
    eprintln!("{got} of {GUESSES} guesses got a KE2 (limit {LIMIT})");
}

/// With three of five nodes gone no request can run; the answer says so, and names neither the
/// members nor their addresses (the detail is in the operator's log).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_quorum_the_answer_is_unavailable_and_names_no_member() {
    let mut fleet = Fleet::start().await;
    let leader = fleet.leader().await;
    fleet
        .client(leader)
        .await
        .enroll(b"frank", b"pw", &new_key(), 5, KSF)
        .await
        .unwrap();
    let clients = [
        fleet.client(leader).await,
        fleet.client((leader + 1) % 5).await,
    ];
    for k in 2..5 {
        fleet.nodes[(leader + k) % 5].stop().await;
    }
    for c in &clients {
        match c.status(b"frank").await {
            Err(ClientError::Unavailable(message)) => {
                assert!(!message.contains("127.0.0.1"), "{message}");
                assert!(!message.contains("voters"), "{message}");
            }
            other => panic!("without a quorum: {other:?}"),
        }
    }
}
