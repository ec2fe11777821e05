//! A `lockbox vault serve` node in its own process, as operators run it, for the end-to-end
//! vault tests (shared by tests/vault_process.rs and tests/vault_attacks.rs).
#![allow(dead_code)] // Each test binary uses a different part of this module.

use lockbox_client::{TokenSource, VaultClient};
use lockbox_token::{Issuer, MintingSource};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The partition every test node serves.
pub const PARTITION: u32 = 3;
/// The audience the test nodes expect in account tokens.
pub const FLEET: &str = "lockbox-test-fleet";

/// `lockbox vault serve --config CONFIG`.
pub fn vault_serve(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockbox"));
    c.args(["vault", "serve", "--config"]).arg(config);
    c
}

pub struct Node {
    pub child: Child,
    pub endpoint: String,
    /// The identity provider whose tokens the node accepts (kept in the test dir, so a
    /// restarted node accepts the same tokens).
    pub issuer: Arc<Issuer>,
    dir: PathBuf,
}

impl Node {
    /// Starts a node on `port` (0 = any) and waits for its `listening on ADDR` line.
    pub fn start(dir: &Path, port: u16) -> Node {
        let issuer = Arc::new(test_issuer(dir));
        let config = dir.join("vault.toml");
        std::fs::write(
            &config,
            format!(
                "node_id = \"proc-test\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\
                 partitions = [{PARTITION}]\n\
                 min_client_ksf = {{ m_cost_kib = 256, t_cost = 1, p_cost = 1 }}\n{}",
                lockbox_vault::config::AuthConfig::toml_section(&issuer, FLEET)
            ),
        )
        .unwrap();
        let (child, addr) = spawn_listening(vault_serve(&config));
        Node {
            child,
            endpoint: format!("http://{addr}"),
            issuer,
            dir: dir.to_path_buf(),
        }
    }

    /// The identity provider, minting a fresh token per request.
    pub fn tokens(&self) -> Arc<dyn TokenSource> {
        let lifetime = Duration::from_secs(600);
        Arc::new(MintingSource::new(
            Arc::clone(&self.issuer),
            FLEET,
            lifetime,
        ))
    }

    /// A file holding a fresh token for `account`, as `--token-file` reads it.
    pub fn token_file(&self, account: &str) -> PathBuf {
        let path = self.dir.join(format!("token-{account}"));
        let token = self.tokens().token_for(account.as_bytes()).unwrap();
        std::fs::write(&path, token).unwrap();
        path
    }

    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `lockbox gateway serve` process in front of a node, accepting the node's issuer.
pub struct Gateway {
    pub child: Child,
    pub endpoint: String,
}

impl Gateway {
    /// Starts a gateway relaying `partition` to `replica`, with `limits` as its `[limits]` body.
    pub fn start(dir: &Path, node: &Node, replica: &str, limits: &str) -> Gateway {
        Self::start_on(dir, node, replica, limits, "127.0.0.1:0")
    }

    /// [`Self::start`], listening on `listen` (e.g. `[::]:0` for IPv4 and IPv6 clients).
    pub fn start_on(dir: &Path, node: &Node, replica: &str, limits: &str, listen: &str) -> Gateway {
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\n{}[limits]\n{limits}\n\
                 [[partitions]]\nid = {PARTITION}\nreplicas = [\"{replica}\"]\n",
                lockbox_vault::config::AuthConfig::toml_section(&node.issuer, FLEET)
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockbox"));
        cmd.args(["gateway", "serve", "--config"]).arg(&config);
        let (child, addr) = spawn_listening(cmd);
        Gateway {
            child,
            endpoint: format!("http://{addr}"),
        }
    }

    /// A device talking to the vault through this gateway, keys pinned from the node, tokens
    /// from `node`'s issuer.
    pub async fn client(&self, node: &Node) -> VaultClient {
        let mut target = VaultClient::discover(&node.endpoint, PARTITION)
            .await
            .expect("discover");
        target.endpoint = self.endpoint.clone();
        VaultClient::connect(target)
            .await
            .expect("connect")
            .with_token_source(node.tokens())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a server command and waits for its `listening on ADDR` line.
pub fn spawn_listening(mut cmd: Command) -> (Child, String) {
    cmd.stderr(Stdio::inherit());
    listening(cmd)
}

/// [`spawn_listening`] with the server's log appended to `log`.
pub fn spawn_logged(mut cmd: Command, log: &Path) -> (Child, String) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.stderr(file);
    listening(cmd)
}

fn listening(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn lockbox");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A client that learned the node's keys from the node itself (trust on first use), with a
/// valid token for whichever account it acts for.
pub async fn client(node: &Node) -> VaultClient {
    anonymous_client(node)
        .await
        .with_token_source(node.tokens())
}

/// A client that sends no account token: a stranger who reached the node.
pub async fn anonymous_client(node: &Node) -> VaultClient {
    let target = VaultClient::discover(&node.endpoint, PARTITION)
        .await
        .expect("discover");
    VaultClient::connect(target).await.expect("connect")
}

/// The test dir's identity-provider key, created on first use.
fn test_issuer(dir: &Path) -> Issuer {
    let path = dir.join("issuer.key");
    if let Ok(hex_key) = std::fs::read_to_string(&path) {
        return Issuer::from_secret_bytes(&hex::decode(hex_key).unwrap()).unwrap();
    }
    let issuer = Issuer::generate().unwrap();
    std::fs::write(&path, hex::encode(issuer.secret_bytes())).unwrap();
    issuer
}
