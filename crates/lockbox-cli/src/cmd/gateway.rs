//! `lockbox gateway serve`: the relay between devices and the vault nodes.

use anyhow::Result;
use lockbox_gateway::GatewayConfig;
use std::path::Path;

use super::vault::{announce, server_runtime, shutdown_signal};

pub fn serve(config: &Path) -> Result<()> {
    let cfg = GatewayConfig::load(config)?;
    server_runtime()?.block_on(async move {
        let manifest_log = cfg.manifest_log.clone();
        let gateway = lockbox_gateway::bind(cfg).await?;
        let addr = gateway.local_addr();
        tracing::info!(%addr, ?manifest_log, "gateway serving");
        announce(addr);
        gateway.serve(shutdown_signal()).await?;
        tracing::info!("gateway stopped");
        Ok(())
    })
}
