//! `lockbox vault serve`: one vault node process; `lockbox vault members`: its Raft groups'
//! membership.

use anyhow::{Context, Result};
use lockbox_raft::{GroupMembers, MemberError, MemberRequest};
use lockbox_vault::VaultConfig;
use std::io::Write;
use std::path::Path;

pub fn serve(config: &Path) -> Result<()> {
    let cfg = VaultConfig::load(config)?;
    server_runtime()?.block_on(async move {
        let node = lockbox_vault::bind(cfg.clone()).await?;
        let addr = node.local_addr();
        tracing::info!(node = %cfg.node_id, %addr, partitions = ?cfg.partitions, "vault node serving");
        announce(addr);
        node.serve(shutdown_signal()).await?;
        tracing::info!("vault node stopped");
        Ok(())
    })
}

pub(crate) fn server_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Scripts and tests wait for this line; it is the only thing a server writes to stdout.
pub(crate) fn announce(addr: std::net::SocketAddr) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")
        .and_then(|()| out.flush())
        .ok();
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// `lockbox vault members list|add|remove`.
pub fn members(command: crate::cli::MembersCommand) -> Result<()> {
    use crate::cli::MembersCommand as M;
    let (config, request) = match &command {
        M::List { config, .. } => (config, MemberRequest::List),
        M::Add { config, id, addr } => (
            config,
            MemberRequest::Add {
                id: *id,
                addr: addr.clone(),
            },
        ),
        M::Remove { config, id } => (config, MemberRequest::Remove { id: *id }),
    };
    let cfg = VaultConfig::load(config)?;
    let r = cfg.replication.clone().with_context(|| {
        format!(
            "{} has no [replication]: a single node has no members",
            config.display()
        )
    })?;
    let tls = lockbox_vault::peer_tls(&r)?;
    let here = r.peer_addr();
    let groups = server_runtime()?.block_on(async {
        let mut out = Vec::new();
        for &group in &cfg.partitions {
            out.push(ask(&here, tls.clone(), group, &request).await?);
        }
        anyhow::Ok(out)
    })?;
    match command {
        M::List { json: true, .. } => println!("{}", serde_json::to_string_pretty(&groups)?),
        _ => print_members(&groups),
    }
    Ok(())
}

/// Asks this node, and the group's leader when this node is not it.
async fn ask(
    here: &str,
    tls: Option<lockbox_raft::PeerTls>,
    group: u32,
    request: &MemberRequest,
) -> Result<GroupMembers> {
    let context = || format!("partition {group}");
    let answer = lockbox_raft::ask_members(here, tls.clone(), group, request)
        .await
        .with_context(|| format!("cannot reach this node's peer port {here}"))?;
    match answer {
        Err(MemberError::NotLeader {
            leader: Some((_, addr)),
            ..
        }) => lockbox_raft::ask_members(&addr, tls, group, request)
            .await
            .with_context(|| format!("cannot reach the leader at {addr}"))?
            .with_context(context),
        other => other.with_context(context),
    }
}

fn print_members(groups: &[GroupMembers]) {
    println!("partition  leader  voters  learners  ids used up to");
    for g in groups {
        let ids = |v: &[(u64, String)]| {
            let ids: Vec<String> = v.iter().map(|(id, addr)| format!("{id}@{addr}")).collect();
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(",")
            }
        };
        let leader = g.leader.map_or("-".to_string(), |l| l.to_string());
        println!(
            "{:<10} {:<7} {}  {}  {}",
            g.group,
            leader,
            ids(&g.voters),
            ids(&g.learners),
            g.highest_id
        );
    }
}
