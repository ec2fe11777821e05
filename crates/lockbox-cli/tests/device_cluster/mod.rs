#![allow(dead_code)] // Each test binary uses a different part of this module.
//! A `lockbox dev cluster` process and phones (homes) that talk to it: shared by the device
//! tests (tests/device_flow.rs, tests/attack_device.rs).

use crate::common::{assert_exit, lockbox, run};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lockbox_proto::manifest::{FleetPublicKey, Pin, WitnessPublicKey};
use lockbox_token::{Issuer, MintingSource};

/// A running `lockbox dev cluster`, stopped with SIGTERM on drop.
pub struct Cluster {
    child: Child,
    pub config: PathBuf,
}

impl Cluster {
    pub fn start(dir: &Path, nodes: u32, partitions: u32) -> Cluster {
        let (nodes, partitions) = (nodes.to_string(), partitions.to_string());
        Self::start_with(dir, &["--nodes", &nodes, "--partitions", &partitions])
    }

    /// `lockbox dev cluster --dir DIR/cluster ARGS…`, once it has said `ready`.
    pub fn start_with(dir: &Path, args: &[&str]) -> Cluster {
        let d = dir.join("cluster");
        let mut child = lockbox()
            .args(["dev", "cluster", "--dir"])
            .arg(&d)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.trim() == "ready" => break,
                Some(Ok(_)) => continue,
                other => panic!("dev cluster ended before `ready`: {other:?}"),
            }
        }
        Cluster {
            child,
            config: d.join("client.toml"),
        }
    }
}

impl Cluster {
    /// The directory the cluster wrote (configs, data, logs).
    pub fn dir(&self) -> &Path {
        self.config
            .parent()
            .expect("client.toml is in the cluster dir")
    }
}

/// What a device knows: client.toml's gateway and pins, and the dev issuer it names.
pub fn device(client: &toml::Table) -> (String, Pin, Arc<MintingSource>) {
    let s = |k: &str| client[k].as_str().unwrap().to_owned();
    let pin = Pin {
        fleet: FleetPublicKey::from_hex(&s("fleet_public_key")).unwrap(),
        witness: WitnessPublicKey::from_hex(&s("witness_public_key")).unwrap(),
        fleet_id: s("fleet_id"),
    };
    let key = std::fs::read_to_string(s("dev_issuer_key")).unwrap();
    let issuer = Issuer::from_secret_bytes(&hex::decode(key.trim()).unwrap()).unwrap();
    let tokens = MintingSource::new(Arc::new(issuer), &s("fleet_id"), Duration::from_secs(600));
    (s("gateway"), pin, Arc::new(tokens))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A phone: its own home, talking to the cluster, for one account and one store.
pub struct Phone<'a> {
    pub cluster: &'a Cluster,
    pub home: PathBuf,
    pub account: &'a str,
    pub store: String,
}

impl<'a> Phone<'a> {
    /// The same phone, acting for `account`.
    pub fn of(self, account: &'a str) -> Self {
        Self { account, ..self }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = lockbox();
        c.arg("--config")
            .arg(&self.cluster.config)
            .arg("--home")
            .arg(&self.home)
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str], password: Option<&str>) -> Output {
        let mut c = self.cmd(args);
        if let Some(p) = password {
            c.env("LOCKBOX_PASSWORD", p);
        }
        run(&mut c)
    }

    /// `enable --account A --store S EXTRA…`
    pub fn enable(&self, extra: &[&str], password: Option<&str>) -> Output {
        let mut args = vec!["enable", "--account", self.account, "--store", &self.store];
        args.extend_from_slice(extra);
        self.run(&args, password)
    }

    /// A new phone takes over: `restore DEST --account A --store S` with the password, or with
    /// `--recovery-code-file FILE`.
    pub fn take_over(&self, dest: &Path, password: Option<&str>, code: Option<&Path>) -> Output {
        let dest = dest.to_str().unwrap();
        let mut args = vec![
            "restore",
            dest,
            "--account",
            self.account,
            "--store",
            &self.store,
        ];
        match code {
            Some(file) => args.extend(["--recovery-code-file", file.to_str().unwrap()]),
            None => args.push("--password"),
        }
        self.run(&args, password)
    }

    /// A single-stream backup (`backup --stream`): what these device tests count and delete.
    pub fn backup(&self, dir: &Path) {
        let out = self.run(&["backup", "--stream", dir.to_str().unwrap()], None);
        assert_exit(&out, 0);
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"], None);
        assert_exit(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A scratch directory with a cluster of `nodes` nodes and `partitions` partitions in it.
pub fn world(nodes: u32, partitions: u32) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), nodes, partitions);
    (dir, cluster)
}

pub fn phone<'a>(cluster: &'a Cluster, dir: &Path, name: &str) -> Phone<'a> {
    Phone {
        cluster,
        home: dir.join(name),
        account: "",
        store: store_url(dir),
    }
}

pub fn msgs(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("msgs.db")).unwrap()
}

pub fn chats(dir: &Path, text: &str) -> PathBuf {
    let chats = dir.join(format!("chats-{}", text.len()));
    std::fs::create_dir_all(chats.join("media")).unwrap();
    std::fs::write(chats.join("msgs.db"), text).unwrap();
    std::fs::write(chats.join("media/cat.jpg"), vec![7u8; 100_000]).unwrap();
    chats
}

pub fn store_url(dir: &Path) -> String {
    format!("file://{}", dir.join("cloud").display())
}

pub fn stored_objects(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("cloud"))
        .map(|d| d.filter(|e| e.as_ref().unwrap().path().is_file()).count())
        .unwrap_or(0)
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
