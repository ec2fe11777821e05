//! `vault.toml`: one file per node. Example (every key shown; only `listen`, `data_dir` and
//! `[auth]` are required, the rest have the defaults shown):
//!
//! ```toml
//! node_id = "vault-1"
//! listen = "127.0.0.1:7401"
//! data_dir = "/var/lib/lockbox/vault-1"
//! metrics_listen = "127.0.0.1:9401"    # Prometheus /metrics; omit to disable
//! advertise = "https://vault-1.internal:7401"  # the URL the fleet manifest lists for this node
//!                                       # (default: from `listen` and `[tls]`)
//! partitions = [0]                      # partitions this node serves
//! session_ttl_secs = 60                 # OPAQUE login/registration sessions
//! max_sessions_per_account = 16         # open sessions one account may hold at once
//! max_concurrent_requests = 256
//! max_envelope_age_secs = 300           # older (or future) sealed requests are refused
//! replay_cache_entries = 1000000        # envelopes remembered to refuse byte-for-byte replays
//! replay_entries_per_account = 1024     # one account's share of them (then BUSY for it only)
//! # Weakest client Argon2id accepted at enrollment. Default: the production floor (19 MiB, t=2,
//! # p=1). Lower it only for tests and benchmarks: weaker client KSFs make stolen vault
//! # records cheaper to attack.
//! min_client_ksf = { m_cost_kib = 19456, t_cost = 2, p_cost = 1 }
//!
//! [auth]                                # who may act for an account (required)
//! issuer_public_key = "hex…"            # the identity provider's Ed25519 token key (32 bytes)
//! audience = "lockbox-fleet-eu1"        # this fleet's name, the tokens' `aud`
//!
//! [sealer]                              # what seals records and partition secrets at rest
//! kind = "software"                     # embedded default: a 0600 key file in data_dir
//! # kind = "pkcs11"
//! # module = "/usr/lib/softhsm/libsofthsm2.so"
//! # token_label = "lockbox-vault-1"
//! # PIN: from LOCKBOX_HSM_PIN, or pin_file = "/run/secrets/hsm-pin"
//!
//! [tls]                                 # omit for plaintext gRPC on loopback
//! cert = "node.pem"
//! key = "node.key"
//!
//! [replication]                         # omit for a single node that replicates nothing
//! raft_id = 1                           # this node's Raft id: unique, never reused
//! peer_listen = "10.0.0.1:7501"         # node-to-node Raft traffic (mutual TLS)
//! peer_advertise = "10.0.0.1:7501"      # where the others reach it (default: peer_listen)
//! bootstrap = false                     # true on exactly one node of a new cluster
//! # The cluster's first membership, used once, by the bootstrapping node; later changes are
//! # `lockbox vault members add|remove`, never an edit here.
//! members = [{ id = 1, addr = "10.0.0.1:7501" }, { id = 2, addr = "10.0.0.2:7501" }]
//! mark_file = "/var/lib/lockbox/vault-1.raft-mark"  # software sealer only; default beside
//!                                       # data_dir, never inside it (a PKCS#11 sealer keeps
//!                                       # the mark in its token)
//! heartbeat_ms = 500
//! election_timeout_ms = [1500, 3000]
//! [replication.tls]                     # required unless peer_listen is a loopback address
//! cert = "node-peer.pem"                # signed by the node CA
//! key = "node-peer.key"
//! ca = "node-ca.pem"                    # the CA every peer's certificate must chain to
//! ```

use lockbox_proto::config_file;
use lockbox_vault_core::KsfParams;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    #[serde(default = "default_node_id")]
    pub node_id: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub advertise: Option<String>,
    #[serde(default = "default_partitions")]
    pub partitions: Vec<u32>,
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    #[serde(default = "default_max_sessions_per_account")]
    pub max_sessions_per_account: usize,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// The weakest client Argon2id parameters accepted at enrollment. Defaults to
    /// [`KsfParams::PRODUCTION_FLOOR`]; lower only for tests and benchmarks.
    #[serde(
        default = "default_min_client_ksf",
        deserialize_with = "deserialize_ksf"
    )]
    pub min_client_ksf: KsfParams,
    #[serde(default = "default_max_envelope_age")]
    pub max_envelope_age_secs: u64,
    #[serde(default = "default_replay_cache_entries")]
    pub replay_cache_entries: usize,
    #[serde(default = "default_replay_entries_per_account")]
    pub replay_entries_per_account: usize,
    pub auth: AuthConfig,
    #[serde(default)]
    pub sealer: SealerConfig,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub replication: Option<ReplicationConfig>,
}

/// `[replication]`: this node's place in the partitions' Raft groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    pub raft_id: u64,
    pub peer_listen: SocketAddr,
    #[serde(default)]
    pub peer_advertise: Option<String>,
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub mark_file: Option<PathBuf>,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election")]
    pub election_timeout_ms: [u64; 2],
    #[serde(default)]
    pub tls: Option<PeerTlsConfig>,
}

/// One voter of the first membership.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    pub addr: String,
}

/// `[replication.tls]`: the node's peer certificate and key, and the node CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn default_heartbeat() -> u64 {
    lockbox_raft::Timing::default().heartbeat_ms
}
fn default_election() -> [u64; 2] {
    let t = lockbox_raft::Timing::default();
    [t.election_min_ms, t.election_max_ms]
}

impl ReplicationConfig {
    /// Where the other replicas reach this one.
    pub fn peer_addr(&self) -> String {
        self.peer_advertise
            .clone()
            .unwrap_or_else(|| self.peer_listen.to_string())
    }

    fn validate(&self) -> Result<(), String> {
        if self.tls.is_none() && !self.peer_listen.ip().is_loopback() {
            return Err(format!(
                "[replication]: peer_listen = {} is not loopback, so [replication.tls] is \
                 required: plain Raft traffic would let anyone who reaches the port rewrite \
                 this node's log",
                self.peer_listen
            ));
        }
        if self.bootstrap && !self.members.iter().any(|m| m.id == self.raft_id) {
            return Err("[replication]: a bootstrapping node must be one of `members`".into());
        }
        let [min, max] = self.election_timeout_ms;
        if self.heartbeat_ms == 0 || min <= self.heartbeat_ms * 2 || max <= min {
            return Err(
                "[replication]: need 0 < 2 × heartbeat_ms < election_timeout_ms[0] \
                 < election_timeout_ms[1]"
                    .into(),
            );
        }
        let mut ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.members.len() {
            return Err("[replication]: `members` names one id twice".into());
        }
        Ok(())
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = &mut self.mark_file {
            fix(p);
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            fix(&mut tls.ca);
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SealerConfig {
    /// Key file `sealer.key` in `data_dir` unless `key_file` says otherwise.
    #[default]
    Software,
    #[serde(rename = "software-file")]
    SoftwareFile { key_file: PathBuf },
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        #[serde(default)]
        pin_file: Option<PathBuf>,
    },
}

pub use lockbox_token::{AuthConfig, DEV_AUDIENCE};

pub use lockbox_proto::tls::TlsConfig;

fn default_node_id() -> String {
    "vault".into()
}
fn default_partitions() -> Vec<u32> {
    vec![0]
}
fn default_session_ttl() -> u64 {
    60
}
fn default_max_sessions_per_account() -> usize {
    16
}
fn default_max_concurrent() -> usize {
    256
}
fn default_max_envelope_age() -> u64 {
    300
}
fn default_replay_cache_entries() -> usize {
    1_000_000
}
fn default_replay_entries_per_account() -> usize {
    1024
}
fn default_min_client_ksf() -> KsfParams {
    KsfParams::PRODUCTION_FLOOR
}

/// `{ m_cost_kib, t_cost, p_cost }` as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KsfToml {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

fn deserialize_ksf<'de, D: Deserializer<'de>>(d: D) -> Result<KsfParams, D::Error> {
    let k = KsfToml::deserialize(d)?;
    KsfParams::new(k.m_cost_kib, k.t_cost, k.p_cost).map_err(serde::de::Error::custom)
}

pub use lockbox_proto::config_file::ConfigError;

impl VaultConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg = config_file::load(path, |text| {
            let cfg: Self = toml::from_str(text).map_err(|e| e.to_string())?;
            cfg.validate()?;
            Ok(cfg)
        })?;
        cfg.resolve_relative(config_file::base_dir(path));
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.partitions.is_empty() {
            return Err("`partitions` must name at least one partition".into());
        }
        if !(1..=3600).contains(&self.session_ttl_secs) {
            return Err("`session_ttl_secs` must be 1..=3600".into());
        }
        if !(1..=65_536).contains(&self.max_sessions_per_account) {
            return Err("`max_sessions_per_account` must be 1..=65536".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("`max_concurrent_requests` must be at least 1".into());
        }
        if !(10..=3600).contains(&self.max_envelope_age_secs) {
            return Err("`max_envelope_age_secs` must be 10..=3600".into());
        }
        if self.replay_cache_entries < 1024 {
            return Err("`replay_cache_entries` must be at least 1024".into());
        }
        if !(16..=self.replay_cache_entries).contains(&self.replay_entries_per_account) {
            return Err("`replay_entries_per_account` must be 16..=`replay_cache_entries`".into());
        }
        self.auth.verifier().map_err(|e| format!("[auth]: {e}"))?;
        if let Some(r) = &self.replication {
            r.validate()?;
        }
        Ok(())
    }

    /// The URL gateways and devices reach this node at: `advertise`, or `listen` when that is a
    /// concrete address.
    pub fn replica_url(&self) -> Result<String, String> {
        if let Some(url) = &self.advertise {
            return Ok(url.clone());
        }
        if self.listen.ip().is_unspecified() || self.listen.port() == 0 {
            return Err(format!(
                "node {}: `listen = {}` is no address to reach it at; set `advertise`",
                self.node_id, self.listen
            ));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.listen))
    }

    /// Relative paths in the file are relative to the file, as operators expect.
    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let SealerConfig::SoftwareFile { key_file } = &mut self.sealer {
            fix(key_file);
        }
        if let SealerConfig::Pkcs11 {
            pin_file: Some(p), ..
        } = &mut self.sealer
        {
            fix(p);
        }
        if let Some(tls) = &mut self.tls {
            tls.resolve_relative(base);
        }
        if let Some(r) = &mut self.replication {
            r.resolve_relative(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "[auth]\nissuer_public_key = \"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"\naudience = \"test-fleet\"\n";

    /// `text` (top-level keys) with a valid `[auth]` after it.
    fn load(text: &str) -> Result<VaultConfig, ConfigError> {
        load_exact(&format!("{text}{AUTH}"))
    }

    fn load_exact(text: &str) -> Result<VaultConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.toml");
        std::fs::write(&p, text).unwrap();
        VaultConfig::load(&p)
    }

    #[test]
    fn auth_is_required_and_checked() {
        let base = "listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\n";
        let e = load_exact(base).unwrap_err();
        assert!(e.to_string().contains("auth"), "{e}");
        let e = load_exact(&format!(
            "{base}[auth]\nissuer_public_key = \"abcd\"\naudience = \"f\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        let c = load(base).unwrap();
        assert_eq!(c.auth.audience, "test-fleet");
        assert_eq!(c.max_envelope_age_secs, 300);
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = load("listen = \"127.0.0.1:7401\"\ndata_dir = \"data\"\n").unwrap();
        assert!(c.data_dir.is_absolute() && c.data_dir.ends_with("data"));
        assert_eq!(c.partitions, vec![0]);
        assert!(matches!(c.sealer, SealerConfig::Software));
        assert!(c.tls.is_none());
        assert_eq!(c.min_client_ksf, KsfParams::PRODUCTION_FLOOR);
    }

    #[test]
    fn min_client_ksf_parses_and_is_validated() {
        let base = "listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\n";
        let c = load(&format!(
            "{base}min_client_ksf = {{ m_cost_kib = 256, t_cost = 1, p_cost = 1 }}\n"
        ))
        .unwrap();
        assert_eq!(c.min_client_ksf, KsfParams::INSECURE_TEST_ONLY);
        let e = load(&format!(
            "{base}min_client_ksf = {{ m_cost_kib = 256, t_cost = 0, p_cost = 1 }}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("Argon2id"), "{e}");
    }

    #[test]
    fn pkcs11_sealer_parses() {
        let c = load_exact(&format!(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\n{AUTH}[sealer]\nkind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"t\"\n",
        ))
        .unwrap();
        assert!(
            matches!(c.sealer, SealerConfig::Pkcs11 { ref token_label, .. } if token_label == "t")
        );
    }

    #[test]
    fn replication_parses_and_refuses_plain_peers_off_loopback() {
        let base = "listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\n";
        let section = "[replication]\nraft_id = 2\nmembers = [{ id = 1, addr = \"a:1\" }, { id = 2, addr = \"b:1\" }]\n";
        let c = load_exact(&format!(
            "{base}{AUTH}{section}peer_listen = \"127.0.0.1:7501\"\n"
        ))
        .unwrap();
        let r = c.replication.unwrap();
        assert_eq!((r.raft_id, r.members.len()), (2, 2));
        assert_eq!(r.peer_addr(), "127.0.0.1:7501");
        assert_eq!(r.election_timeout_ms, [1500, 3000]);
        let e = load_exact(&format!(
            "{base}{AUTH}{section}peer_listen = \"10.0.0.2:7501\"\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("[replication.tls] is required"),
            "{e}"
        );
        let e = load_exact(&format!(
            "{base}{AUTH}{section}peer_listen = \"127.0.0.1:7501\"\nelection_timeout_ms = [400, 300]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("election_timeout_ms"), "{e}");
        let e = load_exact(&format!(
            "{base}{AUTH}[replication]\nraft_id = 3\nbootstrap = true\npeer_listen = \"127.0.0.1:1\"\nmembers = [{{ id = 1, addr = \"a:1\" }}]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("one of `members`"), "{e}");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = load("listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\npartitons = [1]\n").unwrap_err();
        assert!(e.to_string().contains("partitons"), "{e}");
        let e = load("listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\npartitions = []\n").unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
    }
}
