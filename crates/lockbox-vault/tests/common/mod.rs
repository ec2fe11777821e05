//! Shared setup: a real vault node serving gRPC on loopback inside the test process, with its own
//! temporary data directory, and clients for it.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use lockbox_client::{TokenSource, VaultClient};
use lockbox_crypto::BackupKey;
use lockbox_token::{Issuer, MintingSource};
use lockbox_vault::{ServeError, VaultConfig};
use lockbox_vault_core::KsfParams;
use rand_core::OsRng;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Argon2id cost used by every test client, and accepted by every test node.
pub const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;
pub const PARTITION: u32 = 0;
/// The audience every test node expects in account tokens.
pub const FLEET: &str = "lockbox-test-fleet";

/// A running node. Dropping it leaves the server task to die with the test's runtime.
pub struct TestNode {
    _dir: Option<tempfile::TempDir>,
    /// The identity provider whose tokens this node accepts.
    pub issuer: Arc<Issuer>,
    root: PathBuf,
    sealer_toml: String,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestNode {
    /// A node with the software sealer in a fresh temporary directory.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let mut node = Self::start_in(&root, "[sealer]\nkind = \"software\"\n").await;
        node._dir = Some(dir);
        node
    }

    /// A node whose config lives in `root` (data in `root/data`), with `sealer_toml` appended.
    pub async fn start_in(root: &Path, sealer_toml: &str) -> Self {
        let mut node = Self {
            _dir: None,
            issuer: Arc::new(Issuer::generate().expect("issuer key")),
            root: root.to_path_buf(),
            sealer_toml: sealer_toml.to_owned(),
            addr: "127.0.0.1:0".parse().expect("address"),
            shutdown: None,
            task: None,
        };
        node.launch().await;
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn write_config(&self) -> VaultConfig {
        let text = format!(
            "listen = \"{addr}\"\ndata_dir = \"data\"\npartitions = [{PARTITION}]\n\
             min_client_ksf = {{ m_cost_kib = {m}, t_cost = {t}, p_cost = {p} }}\n{sealer}\n{auth}",
            addr = self.addr,
            auth = lockbox_vault::config::AuthConfig::toml_section(&self.issuer, FLEET),
            m = KSF.m_cost_kib(),
            t = KSF.t_cost(),
            p = KSF.p_cost(),
            sealer = self.sealer_toml,
        );
        let path = self.root.join("vault.toml");
        std::fs::write(&path, text).expect("write vault.toml");
        VaultConfig::load(&path).expect("load vault.toml")
    }

    /// Binds (on the previous port after a restart) and serves in a task.
    async fn launch(&mut self) {
        let cfg = self.write_config();
        // A fresh data_dir is created by the node itself (the first start of every test).
        let bound = lockbox_vault::bind(cfg)
            .await
            .unwrap_or_else(|e| panic!("vault node did not start: {e}"));
        self.addr = bound.local_addr();
        let (tx, rx) = oneshot::channel();
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(bound.serve(async {
            let _ = rx.await;
        })));
    }

    /// Graceful shutdown: waits until the server has stopped.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("node stops within 20 s")
                .expect("server task")
                .expect("server exits cleanly");
        }
    }

    /// Stops the node and starts a new process-equivalent on the same data dir and port: new
    /// sealer, database handle and vault core (so all sessions are gone).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// A client that learned the keys from this node (trust on first use), with a valid token
    /// for whichever account it acts for.
    pub async fn client(&self) -> VaultClient {
        self.anonymous_client()
            .await
            .with_token_source(self.tokens())
    }

    /// A client that sends no account token: a stranger who reached the node.
    pub async fn anonymous_client(&self) -> VaultClient {
        let target = VaultClient::discover(&self.endpoint(), PARTITION)
            .await
            .expect("discover partition keys");
        VaultClient::connect(target).await.expect("connect")
    }

    /// This node's identity provider, minting a fresh token per request.
    pub fn tokens(&self) -> Arc<dyn TokenSource> {
        let lifetime = Duration::from_secs(600);
        Arc::new(MintingSource::new(
            Arc::clone(&self.issuer),
            FLEET,
            lifetime,
        ))
    }

    /// A token for `account` from this node's identity provider.
    pub fn token(&self, account: &[u8]) -> String {
        self.tokens().token_for(account).expect("mint token")
    }
}

pub fn new_key() -> BackupKey {
    BackupKey::generate(&mut OsRng)
}

/// `(attempts_left, limit)` of an active record; panics on any other state.
pub async fn attempts(client: &VaultClient, account: &[u8]) -> (u8, u8) {
    let status = client.status(account).await.expect("status");
    status
        .attempts()
        .unwrap_or_else(|| panic!("expected an active record, got {status:?}"))
}
