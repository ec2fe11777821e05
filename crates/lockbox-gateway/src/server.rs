//! Running a gateway: build the relay from its config, bind, serve (with gRPC health) until told
//! to stop, and let in-flight calls finish.

use lockbox_proto::manifest::pb::fleet_server::FleetServer;
use lockbox_proto::pb::vault_server::VaultServer;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

use crate::config::GatewayConfig;
use crate::fleet::ManifestLog;
use crate::limits::Limits;
use crate::routes::{RouteError, Routes};
use crate::service::GatewayService;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] lockbox_proto::tls::TlsError),
    #[error(transparent)]
    Routes(#[from] RouteError),
    #[error(transparent)]
    Log(#[from] crate::fleet::LogError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Metrics(String),
    #[error("[auth]: {0}")]
    Auth(lockbox_token::TokenError),
}

/// A gateway that is listening but not yet serving.
#[derive(Debug)]
pub struct BoundGateway {
    cfg: GatewayConfig,
    service: GatewayService,
    listener: tokio::net::TcpListener,
}

/// Builds the relay, installs metrics, and binds the listener.
pub async fn bind(cfg: GatewayConfig) -> Result<BoundGateway, ServeError> {
    let verifier = cfg.auth.verifier().map_err(ServeError::Auth)?;
    let log = cfg
        .manifest_log
        .as_deref()
        .map(ManifestLog::load)
        .transpose()?;
    let routes = match &log {
        Some(log) => Routes::new(&log.routes(), &cfg.upstream)?,
        None => Routes::new(&cfg.partitions, &cfg.upstream)?,
    };
    let l = &cfg.limits;
    if l.global_per_second == 0 || l.client_per_second == 0 || l.account_per_minute == 0 {
        tracing::warn!(
            global_per_second = l.global_per_second,
            client_per_second = l.client_per_second,
            account_per_minute = l.account_per_minute,
            "a rate limit is off: nothing here slows a flood of requests down"
        );
    }
    let service = GatewayService::new(verifier, Limits::new(&cfg.limits), routes, log);
    if let Some(addr) = cfg.metrics_listen {
        crate::metrics::install(addr).map_err(ServeError::Metrics)?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    Ok(BoundGateway {
        cfg,
        service,
        listener,
    })
}

impl BoundGateway {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let mut builder = Server::builder()
            .timeout(Duration::from_secs(self.cfg.upstream.timeout_secs + 5))
            .concurrency_limit_per_connection(self.cfg.max_concurrent_requests);
        if let Some(tls) = &self.cfg.tls {
            builder = builder.tls_config(ServerTlsConfig::new().identity(tls.identity()?))?;
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<VaultServer<GatewayService>>().await;
        let sweeper = tokio::spawn(sweep_loop(self.service.clone()));
        let max = lockbox_proto::MAX_MESSAGE_BYTES * 2;
        let fleet = FleetServer::new(self.service.clone());
        let grpc = VaultServer::new(self.service)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let result = builder
            .add_service(health_service)
            .add_service(fleet)
            .add_service(grpc)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        sweeper.abort();
        Ok(result?)
    }
}

async fn sweep_loop(service: GatewayService) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        service.sweep();
    }
}
