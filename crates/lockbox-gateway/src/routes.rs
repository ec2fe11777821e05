//! Where a sealed request goes: its partition's replicas, over bounded connection pools.
//! Channels connect lazily, so a gateway starts (and serves other partitions) while a node is
//! down. A replica that refuses the connection got nothing, so the request goes to the next
//! one; any other failure is `Unavailable` and is not retried here: the device reseals and
//! retries (docs/vault-protocol.md, "Retries").

use lockbox_proto::pb::vault_client::VaultClient;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::{PartitionRoute, UpstreamConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("replica URL `{0}` is not valid")]
    Url(String),
    #[error("cannot read the upstream CA {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS for `{url}`: {source}")]
    Tls {
        url: String,
        source: tonic::transport::Error,
    },
}

#[derive(Debug)]
struct Replicas {
    clients: Vec<VaultClient<Channel>>,
    next: AtomicUsize,
}

/// Every partition's replicas.
#[derive(Debug)]
pub struct Routes {
    partitions: HashMap<u32, Replicas>,
}

impl Routes {
    pub fn new(routes: &[PartitionRoute], upstream: &UpstreamConfig) -> Result<Self, RouteError> {
        let ca = match &upstream.ca {
            Some(path) => Some(std::fs::read(path).map_err(|source| RouteError::Ca {
                path: path.display().to_string(),
                source,
            })?),
            None => None,
        };
        let max = lockbox_proto::MAX_MESSAGE_BYTES * 2;
        let mut partitions = HashMap::new();
        for route in routes {
            let clients = route
                .replicas
                .iter()
                .map(|url| {
                    let channel = endpoint(url, ca.as_deref(), upstream)?.connect_lazy();
                    Ok(VaultClient::new(channel)
                        .max_decoding_message_size(max)
                        .max_encoding_message_size(max))
                })
                .collect::<Result<Vec<_>, RouteError>>()?;
            let replicas = Replicas {
                clients,
                next: AtomicUsize::new(0),
            };
            partitions.insert(route.id, replicas);
        }
        Ok(Self { partitions })
    }

    /// Every replica of `partition`, starting with the next in turn, or `None` if this fleet
    /// has no such partition.
    pub fn pick(&self, partition: u32) -> Option<Vec<VaultClient<Channel>>> {
        let r = self.partitions.get(&partition)?;
        let n = r.clients.len();
        let first = r.next.fetch_add(1, Ordering::Relaxed) % n;
        Some((0..n).map(|k| r.clients[(first + k) % n].clone()).collect())
    }
}

fn endpoint(url: &str, ca: Option<&[u8]>, up: &UpstreamConfig) -> Result<Endpoint, RouteError> {
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|_| RouteError::Url(url.to_owned()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(up.timeout_secs))
        .concurrency_limit(up.max_concurrent_per_replica)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(pem) = ca {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls).map_err(|source| RouteError::Tls {
            url: url.to_owned(),
            source,
        })?;
    }
    Ok(ep)
}
