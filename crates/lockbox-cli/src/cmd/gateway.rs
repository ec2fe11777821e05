//! `lockbox gateway serve`: the relay between devices and the vault nodes.

use anyhow::Result;
use lockbox_gateway::GatewayConfig;
use std::path::Path;

use super::vault::{announce, server_runtime, shutdown_signal};

pub fn serve(config: &Path) -> Result<()> {
    let cfg = GatewayConfig::load(config)?;
    server_runtime()?.block_on(async move {
        let partitions: Vec<u32> = cfg.partitions.iter().map(|p| p.id).collect();
        let gateway = lockbox_gateway::bind(cfg).await?;
        let addr = gateway.local_addr();
        tracing::info!(%addr, ?partitions, "gateway serving");
        announce(addr);
        gateway.serve(shutdown_signal()).await?;
        tracing::info!("gateway stopped");
        Ok(())
    })
}
