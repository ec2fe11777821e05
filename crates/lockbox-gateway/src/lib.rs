//! The gateway (the "ChatD" role, DESIGN.md §1–§2, §4): terminates device connections,
//! authenticates the account, rate-limits, and relays sealed vault requests to a replica of
//! their partition.
//!
//! Does: check the account token the device presents (`authorization: Bearer …`) against the
//! identity provider's key and this fleet, and that it names the envelope's account; apply a
//! global rate, a rate per client address, a rate per account, and a backoff on the account's
//! login starts; route by partition over bounded, lazily connected pools; serve gRPC health and
//! Prometheus metrics.
//! Does not: open envelopes, hold any vault secret, or see a password, `K`, the wrapped `K` or an
//! OPAQUE message in the clear (the vault checks the same token again inside the envelope, so a
//! gateway that lies about it gains nothing); count guesses (the vault does); retry (the device
//! reseals and retries; see docs/vault-protocol.md); hand out vault keys (devices pin them from
//! the fleet manifest).
//! Trusts: its config (the issuer key, the partition map) and the vault nodes to answer; nothing
//! a device sends beyond what the token proves.
#![forbid(unsafe_code)]

pub mod config;
pub mod fleet;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod service;

pub use config::GatewayConfig;
pub use server::{BoundGateway, ServeError, bind};
