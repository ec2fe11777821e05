//! The replicated store under load: five hosts in this process (each its own redb file and
//! rollback mark, plain gRPC on loopback), concurrent writers spread over the groups, and what
//! group commit and the rollback mark cost per committed entry.

use anyhow::{Context, Result, bail};
use lockbox_crypto::Secret32;
use lockbox_hsm::{FileMark, HsmPin, MarkStore, Pkcs11Config, Pkcs11Mark, SoftwareSealer};
use lockbox_raft::{
    BasicNode, Command, CommitStats, GroupId, Host, HostConfig, LogKey, NodeId, Outcome, Timing,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: u64 = 5;
const PIN: &str = "1234";

fn token_label(id: NodeId) -> String {
    format!("lockbox-bench-{id}")
}

/// Parent: the mark stores alone, then the cluster with file marks and with token marks (the
/// token runs need SOFTHSM2_CONF set at load time, so they run in a child process).
pub fn bench(groups: u32, writers: usize, secs: f64) -> Result<()> {
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let conf = lockbox_hsm::softhsm::write_conf(dir.path())?;
    for id in 1..=NODES {
        lockbox_hsm::softhsm::init_token(dir.path(), &token_label(id), "5678", PIN)?;
    }
    println!("### Rollback mark: one store (300-byte mark, one thread, {secs} s each)\n");
    println!("| mark store | stores/s | mean |\n|---|---:|---:|");
    let sealer = Arc::new(SoftwareSealer::create(dir.path().join("sealer.key"))?);
    let file = FileMark::new(dir.path().join("mark"), sealer, "bench");
    mark_rate(
        "sealed file, in place, one fdatasync (embedded default)",
        &file,
        secs,
    )?;
    print!(
        "{}",
        child(&conf, &["mark-pkcs11", "--seconds", &secs.to_string()])?
    );
    println!();
    println!(
        "### Replicated writes: 5 replicas per group, {groups} groups, {writers} writers, {secs} s\n"
    );
    println!(
        "| replicas | rollback mark | commits/s | p50 | p99 | p99.9 | fsyncs per entry (leader, follower) | mark writes per entry (leader) | largest batch |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let args = |nodes: u64, mark: &str| {
        [
            "raft-cluster".to_string(),
            "--nodes".into(),
            nodes.to_string(),
            "--mark".into(),
            mark.into(),
            "--groups".into(),
            groups.to_string(),
            "--writers".into(),
            writers.to_string(),
            "--seconds".into(),
            secs.to_string(),
        ]
    };
    // One replica is the reference: the same code, load and disk without replication.
    for (nodes, mark) in [
        (1, "file"),
        (NODES, "file"),
        (1, "pkcs11"),
        (NODES, "pkcs11"),
    ] {
        let a = args(nodes, mark);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        print!("{}", child(&conf, &a)?);
    }
    println!();
    Ok(())
}

fn child(conf: &Path, args: &[&str]) -> Result<String> {
    let out = Process::new(std::env::current_exe()?)
        .args(args)
        .env(lockbox_hsm::softhsm::CONF_ENV, conf)
        .output()?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn token_mark(id: NodeId, name: &str) -> Result<Arc<dyn MarkStore>> {
    let cfg =
        Pkcs11Config::new(lockbox_hsm::softhsm::MODULE, token_label(id)).with_pin(HsmPin::new(PIN));
    Ok(Arc::new(Pkcs11Mark::open(&cfg, name)?))
}

/// Child: one token mark's store rate.
pub fn pkcs11_mark(secs: f64) -> Result<()> {
    mark_rate(
        "PKCS#11 token object (SoftHSM2 2.6)",
        token_mark(1, "store-rate")?.as_ref(),
        secs,
    )
}

fn mark_rate(name: &str, mark: &dyn MarkStore, secs: f64) -> Result<()> {
    let value = [9u8; 300];
    let (wall, mut n) = (Instant::now(), 0u64);
    while wall.elapsed().as_secs_f64() < secs {
        mark.store(&value)?;
        n += 1;
    }
    anyhow::ensure!(mark.load()?.as_deref() == Some(&value[..]), "mark lost");
    let t = wall.elapsed().as_secs_f64();
    println!(
        "| {name} | {:.0} | {:.2} ms |",
        n as f64 / t,
        t * 1e3 / n as f64
    );
    Ok(())
}

/// Child: the cluster run, one table row.
pub fn cluster(mark: &str, nodes: u64, groups: u32, writers: usize, secs: f64) -> Result<()> {
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let group_ids: Vec<GroupId> = (0..groups).collect();
        let mut hosts = Vec::new();
        let mut members = BTreeMap::new();
        let mut stops = Vec::new();
        for id in 1..=nodes {
            let marks: Arc<dyn MarkStore> = match mark {
                "file" => {
                    let sealer = Arc::new(SoftwareSealer::create(
                        dir.path().join(format!("sealer-{id}.key")),
                    )?);
                    Arc::new(FileMark::new(
                        dir.path().join(format!("mark-{id}")),
                        sealer,
                        "b",
                    ))
                }
                _ => token_mark(id, &format!("{nodes}-replica-run-node-{id}"))?,
            };
            let host = Host::open(&HostConfig {
                id,
                db_path: dir.path().join(format!("node-{id}.redb")),
                marks,
                log_keys: group_ids.iter().map(|&g| (g, log_key(g))).collect(),
                groups: group_ids.clone(),
                timing: Timing::default(),
                tls: None,
            })
            .await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            members.insert(id, BasicNode::new(listener.local_addr()?.to_string()));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            let peers = host.peer_server(None);
            tokio::spawn(async move {
                let _ = peers
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            hosts.push(host);
        }
        hosts[0].bootstrap(&members).await?;
        let mut rafts = Vec::new();
        for &g in &group_ids {
            let raft = hosts[0].raft(g).context("group")?;
            raft.wait(Some(Duration::from_secs(30)))
                .current_leader(1, "node 1 leads")
                .await?;
            rafts.push(raft);
        }
        let before: Vec<CommitStats> = hosts.iter().map(Host::commit_stats).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let raft = rafts[w % rafts.len()].clone();
            tasks.spawn(async move {
                let mut lat = Vec::new();
                let wall = Instant::now();
                let mut i = 0u64;
                while wall.elapsed().as_secs_f64() < secs {
                    let cmd = Command {
                        account: format!("w{w}-{i}").into_bytes(),
                        expected_seq: 0,
                        sealed: vec![7; 411],
                    };
                    let t = Instant::now();
                    let resp = raft.client_write(cmd).await?;
                    lat.push(t.elapsed());
                    anyhow::ensure!(resp.data == Outcome::Applied { seq: 1 });
                    i += 1;
                }
                anyhow::Ok(lat)
            });
        }
        let mut lat = Vec::new();
        while let Some(done) = tasks.join_next().await {
            lat.extend(done??);
        }
        let delta = |i: usize| {
            let (a, b) = (hosts[i].commit_stats(), before[i]);
            (a.fsyncs - b.fsyncs, a.marks - b.marks, a.max_batch)
        };
        let (leader_fsyncs, leader_marks, leader_batch) = delta(0);
        let (follower_fsyncs, _, follower_batch) = if nodes > 1 { delta(1) } else { (0, 0, 0) };
        lat.sort();
        let n = lat.len();
        anyhow::ensure!(n > 0, "nothing committed");
        let pct = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e3;
        let per = |x: u64| x as f64 / n as f64;
        println!(
            "| {nodes} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.3}, {:.3} | {:.3} | {} |",
            if mark == "file" {
                "sealed file"
            } else {
                "PKCS#11 token (SoftHSM2)"
            },
            n as f64 / secs,
            pct(0.50),
            pct(0.99),
            pct(0.999),
            per(leader_fsyncs),
            per(follower_fsyncs),
            per(leader_marks),
            leader_batch.max(follower_batch)
        );
        for stop in stops {
            let _ = stop.send(());
        }
        for host in hosts {
            host.shutdown().await;
        }
        anyhow::Ok(())
    })
}

fn log_key(group: GroupId) -> LogKey {
    let mut k = [0x42; 32];
    k[..4].copy_from_slice(&group.to_be_bytes());
    LogKey::new(Secret32::new(k))
}
