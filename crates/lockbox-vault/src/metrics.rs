//! Prometheus metrics. Names are stable API for dashboards and alerts:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `lockbox_vault_requests_total{op,result}` | counter | requests by operation and outcome |
//! | `lockbox_vault_request_seconds{op}` | histogram | latency, including the durable write |
//! | `lockbox_vault_login_attempts_total` | counter | KE1s answered (each spent an attempt) |
//! | `lockbox_vault_login_success_total` | counter | KE3s that verified |
//! | `lockbox_vault_login_failure_total` | counter | KE3s that did not verify |
//! | `lockbox_vault_records_destroyed_total` | counter | records destroyed by the guess limit |
//! | `lockbox_vault_enrollments_total` | counter | records written by enrollment |
//! | `lockbox_vault_write_conflicts_total` | counter | conditional writes retried |

use std::net::SocketAddr;

pub const REQUESTS: &str = "lockbox_vault_requests_total";
pub const REQUEST_SECONDS: &str = "lockbox_vault_request_seconds";
pub const LOGIN_ATTEMPTS: &str = "lockbox_vault_login_attempts_total";
pub const LOGIN_SUCCESS: &str = "lockbox_vault_login_success_total";
pub const LOGIN_FAILURE: &str = "lockbox_vault_login_failure_total";
pub const DESTROYED: &str = "lockbox_vault_records_destroyed_total";
pub const ENROLLMENTS: &str = "lockbox_vault_enrollments_total";
pub const WRITE_CONFLICTS: &str = "lockbox_vault_write_conflicts_total";
pub const FORWARDED: &str = "lockbox_vault_forwarded_total";

/// Serves `/metrics` on `addr`. Must run inside a tokio runtime; once per process.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(REQUESTS, "Vault requests by operation and result");
    describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Vault request latency"
    );
    describe_counter!(LOGIN_ATTEMPTS, "Password attempts spent (KE2 released)");
    describe_counter!(LOGIN_SUCCESS, "Successful OPAQUE logins");
    describe_counter!(LOGIN_FAILURE, "Failed OPAQUE logins");
    describe_counter!(DESTROYED, "Records destroyed after the guess limit");
    describe_counter!(ENROLLMENTS, "Records enrolled or replaced");
    describe_counter!(
        WRITE_CONFLICTS,
        "Conditional record writes that lost a race and retried"
    );
    describe_counter!(
        FORWARDED,
        "Requests this follower handed to its partition's leader"
    );
}
