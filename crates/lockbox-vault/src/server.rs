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
use crate::config::{ReplicationConfig, VaultConfig};
use crate::node::{self, NodeError};
use crate::replica::RaftRecords;
use crate::service::{PartitionState, VaultService};
use crate::storage::RecordStore;
use lockbox_raft::{BasicNode, Host, HostConfig, LogKey, PeerTls, Timing};
use std::collections::BTreeMap;

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
    #[error("replication: {0}")]
    Replication(#[from] lockbox_raft::HostError),
    #[error("cannot read [replication.tls] {path}: {source}")]
    PeerTls {
        path: String,
        source: std::io::Error,
    },
}

/// A replicated node's Raft side: its groups and the peer listener.
struct Replication {
    host: Arc<Host>,
    listener: tokio::net::TcpListener,
}

/// A node that is listening but not yet serving.
pub struct BoundNode {
    cfg: VaultConfig,
    service: VaultService,
    listener: tokio::net::TcpListener,
    replication: Option<Replication>,
}

impl core::fmt::Debug for BoundNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BoundNode")
            .field("node_id", &self.cfg.node_id)
            .field("replicated", &self.replication.is_some())
            .finish_non_exhaustive()
    }
}

impl BoundNode {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The node's Raft groups, when replicated: for an operator's tools and tests to ask who
    /// leads.
    pub fn replicas(&self) -> Option<Arc<Host>> {
        Some(self.replication.as_ref()?.host.clone())
    }

    /// The peer (Raft) address, when replicated.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        let r = self.replication.as_ref()?;
        r.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests. A replicated node
    /// also serves its peers, and stops its Raft groups last.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Some(replication) = self.replication.take() else {
            return self.serve_clients(shutdown).await;
        };
        let (stop_peers, peers_stopped) = tokio::sync::oneshot::channel::<()>();
        let handler: Arc<dyn lockbox_raft::ForwardHandler> = Arc::new(self.service.clone());
        let peers = replication.host.peer_server(Some(handler));
        let peer_task = tokio::spawn(peers.serve(replication.listener, async {
            let _ = peers_stopped.await;
        }));
        let result = self.serve_clients(shutdown).await;
        let _ = stop_peers.send(());
        match peer_task.await {
            Ok(Err(e)) => tracing::warn!("peer transport: {e}"),
            Err(e) => tracing::warn!("peer transport task: {e}"),
            Ok(Ok(())) => {}
        }
        replication.host.shutdown().await;
        result
    }

    async fn serve_clients(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
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
    if !cfg
        .min_client_ksf
        .at_least(&lockbox_vault_core::KsfParams::PRODUCTION_FLOOR)
    {
        tracing::warn!(
            floor = ?cfg.min_client_ksf,
            "min_client_ksf is below the production floor: passwords enrolled here are cheap to \
             guess offline if a record ever leaks; for tests and benchmarks only"
        );
    }
    let mut partitions = Vec::new();
    let mut log_keys = BTreeMap::new();
    for &id in &cfg.partitions {
        let keys =
            node::load_or_create_partition(&store, sealer.as_ref(), id, cfg.replication.is_none())?;
        let record_key = keys.record_key(id);
        log_keys.insert(id, keys.log_key(id));
        let mut core_cfg = CoreConfig::new(&partition_server_id(id));
        core_cfg.session_ttl_ms = cfg.session_ttl_secs * 1000;
        core_cfg.min_ksf = cfg.min_client_ksf;
        core_cfg.max_sessions_per_account = cfg.max_sessions_per_account;
        let mut part = PartitionState::new(id, keys.hpke, keys.opaque, core_cfg);
        if cfg.replication.is_some() {
            part = part.with_record_key(record_key);
        }
        partitions.push(part);
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
    let (records, replication): (Arc<dyn RecordStore>, _) = match &cfg.replication {
        None => (store, None),
        Some(r) => {
            let host = Arc::new(open_host(&cfg, r, &sealer, &log_keys).await?);
            let listener = bind_addr(r.peer_listen).await?;
            bootstrap(&host, r).await?;
            let records = RaftRecords::new(host.clone(), tokio::runtime::Handle::current());
            (Arc::new(records), Some(Replication { host, listener }))
        }
    };
    let mut service = VaultService::new(
        cfg.node_id.clone(),
        partitions,
        records,
        sealer,
        cfg.max_concurrent_requests,
        admission,
    );
    if let Some(r) = &replication {
        service = service.replicated(r.host.clone());
    }
    let listener = bind_addr(cfg.listen).await?;
    Ok(BoundNode {
        cfg,
        service,
        listener,
        replication,
    })
}

async fn bind_addr(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

async fn open_host(
    cfg: &VaultConfig,
    r: &ReplicationConfig,
    sealer: &Arc<dyn lockbox_hsm::Sealer>,
    log_keys: &BTreeMap<u32, LogKey>,
) -> Result<Host, ServeError> {
    let [election_min_ms, election_max_ms] = r.election_timeout_ms;
    let timing = Timing {
        heartbeat_ms: r.heartbeat_ms,
        election_min_ms,
        election_max_ms,
        ..Timing::default()
    };
    let tls = peer_tls(r)?;
    let host = Host::open(&HostConfig {
        id: r.raft_id,
        db_path: cfg.data_dir.join("raft.redb"),
        marks: node::open_marks(cfg, sealer, r.raft_id)?,
        log_keys: log_keys.clone(),
        groups: cfg.partitions.clone(),
        timing,
        tls,
    })
    .await?;
    Ok(host)
}

/// The peer transport's mutual TLS from `[replication.tls]` (none: plain, loopback only).
pub fn peer_tls(r: &ReplicationConfig) -> Result<Option<PeerTls>, ServeError> {
    let Some(t) = &r.tls else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServeError::PeerTls {
            path: path.display().to_string(),
            source,
        })
    };
    Ok(Some(PeerTls::from_pem(
        &read(&t.cert)?,
        &read(&t.key)?,
        &read(&t.ca)?,
    )))
}

/// A new cluster's first membership, made by the one node configured to, on its first start
/// only: a node that has taken part before (it has a rollback mark) never bootstraps again.
async fn bootstrap(host: &Host, r: &ReplicationConfig) -> Result<(), ServeError> {
    if !(r.bootstrap && host.is_new()) {
        return Ok(());
    }
    let members = r
        .members
        .iter()
        .map(|m| (m.id, BasicNode::new(&m.addr)))
        .collect();
    tracing::info!(
        members = r.members.len(),
        "bootstrapping the partitions' groups"
    );
    Ok(host.bootstrap(&members).await?)
}

async fn purge_loop(service: VaultService) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        service.purge_sessions();
    }
}
