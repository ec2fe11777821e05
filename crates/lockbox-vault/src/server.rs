//! Running a node: build the service from its config, bind, serve until told to stop, and let
//! in-flight requests finish (a request that already spent an attempt still gets its KE2).

use lockbox_proto::pb::vault_server::VaultServer;
use lockbox_vault_core::{VaultConfig as CoreConfig, partition_server_id};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

use crate::admission::Admission;
use crate::config::VaultConfig;
use crate::node::{self, NodeError};
use crate::service::{PartitionState, VaultService};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] lockbox_proto::tls::TlsError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Metrics(String),
    #[error("[auth]: {0}")]
    Auth(lockbox_token::TokenError),
}

/// A node that is listening but not yet serving.
#[derive(Debug)]
pub struct BoundNode {
    cfg: VaultConfig,
    service: VaultService,
    listener: tokio::net::TcpListener,
}

impl BoundNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let mut builder = Server::builder()
            .timeout(Duration::from_secs(30))
            .concurrency_limit_per_connection(self.cfg.max_concurrent_requests);
        if let Some(tls) = &self.cfg.tls {
            builder = builder.tls_config(ServerTlsConfig::new().identity(tls.identity()?))?;
        }
        let purger = tokio::spawn(purge_loop(self.service.clone()));
        let grpc = VaultServer::new(self.service)
            .max_decoding_message_size(lockbox_proto::MAX_MESSAGE_BYTES * 2)
            .max_encoding_message_size(lockbox_proto::MAX_MESSAGE_BYTES * 2);
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let result = builder
            .add_service(grpc)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        // Awaited so its service clone (and with it the database) is gone when this returns.
        purger.abort();
        let _ = purger.await;
        Ok(result?)
    }
}

/// Opens the sealer and storage, loads partitions, installs metrics, and binds the listener.
pub async fn bind(cfg: VaultConfig) -> Result<BoundNode, ServeError> {
    // The store creates data_dir, where the default software sealer keeps its key file.
    let store = Arc::new(node::open_store(&cfg)?);
    let sealer = node::open_sealer(&cfg)?;
    let mut partitions = Vec::new();
    for &id in &cfg.partitions {
        let keys = node::load_or_create_partition(&store, sealer.as_ref(), id)?;
        let mut core_cfg = CoreConfig::new(&partition_server_id(id));
        core_cfg.session_ttl_ms = cfg.session_ttl_secs * 1000;
        core_cfg.min_ksf = cfg.min_client_ksf;
        core_cfg.max_sessions_per_account = cfg.max_sessions_per_account;
        partitions.push(PartitionState::new(id, keys.hpke, keys.opaque, core_cfg));
    }
    if let Some(addr) = cfg.metrics_listen {
        crate::metrics::install(addr).map_err(ServeError::Metrics)?;
    }
    let verifier = cfg.auth.verifier().map_err(ServeError::Auth)?;
    let admission = Admission::new(
        verifier,
        cfg.max_envelope_age_secs * 1000,
        cfg.replay_cache_entries,
        cfg.replay_entries_per_account,
        crate::service::now_ms(),
    );
    let service = VaultService::new(
        cfg.node_id.clone(),
        partitions,
        store,
        sealer,
        cfg.max_concurrent_requests,
        admission,
    );
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    Ok(BoundNode {
        cfg,
        service,
        listener,
    })
}

async fn purge_loop(service: VaultService) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        service.purge_sessions();
    }
}
