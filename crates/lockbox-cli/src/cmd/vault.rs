//! `lockbox vault serve`: one vault node process.

use anyhow::{Context, Result};
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
