//! Prometheus metrics. Names are stable API for dashboards and alerts:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `lockbox_gateway_requests_total{result}` | counter | relayed calls by outcome |
//! | `lockbox_gateway_limited_total{scope}` | counter | calls refused by a limit (global, client, account, login, busy) |
//! | `lockbox_gateway_upstream_seconds` | histogram | time the vault took to answer a relayed call |
//! | `lockbox_gateway_tracked{table}` | gauge | keys the limit tables hold (client, account, login) |

use std::net::SocketAddr;

pub const REQUESTS: &str = "lockbox_gateway_requests_total";
pub const LIMITED: &str = "lockbox_gateway_limited_total";
pub const UPSTREAM_SECONDS: &str = "lockbox_gateway_upstream_seconds";
pub const TRACKED: &str = "lockbox_gateway_tracked";
pub const REPLICA_REFUSED: &str = "lockbox_gateway_replica_refused_total";

/// Serves `/metrics` on `addr`. Must run inside a tokio runtime; once per process.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Relayed vault calls by result");
    describe_counter!(LIMITED, "Calls refused by a rate limit or backoff");
    describe_histogram!(
        UPSTREAM_SECONDS,
        metrics::Unit::Seconds,
        "Vault latency seen by the gateway"
    );
    describe_gauge!(TRACKED, "Keys held by the limit tables");
    describe_counter!(
        REPLICA_REFUSED,
        "Replicas that refused the connection, so the call went to the next"
    );
    Ok(())
}
