//! `gateway.toml`. Example (only `listen`, `[auth]`, and `manifest_log` or `[[partitions]]` are
//! required; the rest have the defaults shown):
//!
//! ```toml
//! listen = "127.0.0.1:7400"
//! metrics_listen = "127.0.0.1:9400"     # Prometheus /metrics; omit to disable
//! max_concurrent_requests = 1024
//!
//! [auth]                                # the identity provider's token key and this fleet
//! issuer_public_key = "hex…"
//! audience = "lockbox-fleet-eu1"
//!
//! [tls]                                 # omit for plaintext gRPC on loopback
//! cert = "gateway.pem"
//! key = "gateway.key"
//!
//! [upstream]                            # how the gateway reaches vault nodes
//! ca = "fleet-ca.pem"                   # trust for https:// replicas; omit for http://
//! timeout_secs = 30
//! max_concurrent_per_replica = 64
//!
//! [limits]                              # see `limits::LimitsConfig`; 0 disables a rate
//! global_per_second = 2000
//! client_per_second = 20
//! client_burst = 60
//! account_per_minute = 60
//! account_burst = 20
//! login_free = 5
//! login_backoff_base_ms = 1000
//! login_backoff_max_secs = 3600
//! login_forgive_secs = 600
//! max_tracked = 1000000
//!
//! manifest_log = "fleet/manifests"      # the countersigned manifest log: served to devices,
//!                                       # and the partition map (restart to take a new one)
//! # or, without a fleet manifest (tests, a single node), the partition map by hand:
//! # [[partitions]]
//! # id = 0
//! # replicas = ["http://127.0.0.1:7401"]
//! ```

use lockbox_proto::config_file;
use lockbox_proto::tls::TlsConfig;
use lockbox_token::AuthConfig;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::limits::LimitsConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The countersigned manifest log (`lockbox fleet init`'s `manifests/` directory): served
    /// to devices, and the partition map. Either this or `[[partitions]]`.
    #[serde(default)]
    pub manifest_log: Option<PathBuf>,
    #[serde(default)]
    pub partitions: Vec<PartitionRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub ca: Option<PathBuf>,
    pub timeout_secs: u64,
    pub max_concurrent_per_replica: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            ca: None,
            timeout_secs: 30,
            max_concurrent_per_replica: 64,
        }
    }
}

/// One partition and the vault nodes that hold its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRoute {
    pub id: u32,
    pub replicas: Vec<String>,
}

fn default_max_concurrent() -> usize {
    1024
}

pub use lockbox_proto::config_file::ConfigError;

impl GatewayConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg = config_file::load(path, Self::parse)?;
        let base = config_file::base_dir(path);
        if let Some(tls) = &mut cfg.tls {
            tls.resolve_relative(base);
        }
        for p in [cfg.upstream.ca.as_mut(), cfg.manifest_log.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        self.auth.verifier().map_err(|e| format!("[auth]: {e}"))?;
        self.limits
            .validate()
            .map_err(|e| format!("[limits]: {e}"))?;
        if self.max_concurrent_requests == 0 || self.upstream.max_concurrent_per_replica == 0 {
            return Err("concurrency limits must be at least 1".into());
        }
        if !(1..=600).contains(&self.upstream.timeout_secs) {
            return Err("[upstream] `timeout_secs` must be 1..=600".into());
        }
        match (&self.manifest_log, self.partitions.is_empty()) {
            (Some(_), false) => {
                return Err("give `manifest_log` or [[partitions]], not both".into());
            }
            (None, true) => {
                return Err(
                    "`manifest_log` or at least one [[partitions]] entry is required".into(),
                );
            }
            _ => {}
        }
        let mut seen = BTreeSet::new();
        for p in &self.partitions {
            if !seen.insert(p.id) {
                return Err(format!("partition {} is listed twice", p.id));
            }
            if p.replicas.is_empty() {
                return Err(format!("partition {} has no replicas", p.id));
            }
            for r in &p.replicas {
                if !(r.starts_with("http://") || r.starts_with("https://")) {
                    return Err(format!(
                        "partition {}: replica `{r}` must be an http:// or https:// URL",
                        p.id
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen = \"127.0.0.1:7400\"\n[auth]\nissuer_public_key = \"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"\naudience = \"f\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = GatewayConfig::parse(&format!(
            "{BASE}[[partitions]]\nid = 0\nreplicas = [\"http://127.0.0.1:7401\"]\n"
        ))
        .unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.upstream, UpstreamConfig::default());
        assert_eq!(c.partitions[0].replicas.len(), 1);
    }

    #[test]
    fn errors_name_the_problem() {
        let bad = |tail: &str| GatewayConfig::parse(&format!("{BASE}{tail}")).unwrap_err();
        assert!(bad("").contains("partitions"));
        assert!(bad("[[partitions]]\nid = 0\nreplicas = []\n").contains("no replicas"));
        assert!(bad("[[partitions]]\nid = 0\nreplicas = [\"127.0.0.1:1\"]\n").contains("http://"));
        let twice = "[[partitions]]\nid = 3\nreplicas = [\"http://a\"]\n";
        assert!(bad(&format!("{twice}{twice}")).contains("twice"));
        let e = bad(
            "[limits]\nlogin_forgive_secs = 0\n[[partitions]]\nid = 0\nreplicas = [\"http://a\"]\n",
        );
        assert!(e.contains("login_forgive_secs"), "{e}");
        let e = GatewayConfig::parse(
            "listen = \"127.0.0.1:1\"\n[[partitions]]\nid = 0\nreplicas = [\"http://a\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("auth"), "{e}");
    }
}
