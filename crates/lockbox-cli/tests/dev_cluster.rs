//! `lockbox dev cluster` as a developer runs it: a real process tree (nodes, ceremony, gateway)
//! that a device reaches with nothing but client.toml, that stops cleanly on SIGTERM, and that
//! stops and says so when one of its processes dies.

mod common;
mod device_cluster;

use common::{assert_fails_with, lockbox, run};
use lockbox_client::VaultClient;
use lockbox_crypto::{BackupKey, OsRng};
use lockbox_vault_core::KsfParams;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};

const FLEET: &str = "lockbox-dev";

/// A `lockbox dev cluster` process that has printed `ready`.
struct Cluster {
    child: Child,
    dir: PathBuf,
    stderr: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn start(args: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let stderr = tmp.path().join("cluster.stderr");
        let mut child = lockbox()
            .args(["dev", "cluster", "--dir"])
            .arg(&dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let mut cluster = Cluster {
            child,
            dir,
            stderr,
            _tmp: tmp,
        };
        if first != "ready" {
            let status = cluster.child.wait().unwrap();
            panic!(
                "no `ready` ({first:?}, {status}): {}",
                cluster.stderr_text()
            );
        }
        cluster
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn client_toml(&self) -> toml::Table {
        toml::from_str(&std::fs::read_to_string(self.dir.join("client.toml")).unwrap()).unwrap()
    }

    fn pid(&self, file: &str) -> Pid {
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap();
        Pid::from_raw(text.trim().parse().unwrap())
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Cluster {
    /// A failed test still stops the cluster, which stops its processes.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// The process's command line, NUL-separated args joined with spaces; `None` once it is gone.
fn cmdline(pid: Pid) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

fn is_gone(pid: Pid) -> bool {
    kill(pid, None) == Err(nix::errno::Errno::ESRCH)
}

/// Enrolls and recovers one account per partition in `partitions` (as the manifest places
/// them), through the gateway in client.toml, with only its pins trusted.
fn round_trips(client: &toml::Table, partitions: &[u32]) {
    let (gateway, pin, tokens) = device_cluster::device(client);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let now = lockbox_proto::unix_now_ms();
        let verified = lockbox_client::fleet::update(&gateway, None, &pin, None, now)
            .await
            .unwrap();
        let manifest = verified.manifest();
        for &partition in partitions {
            let account = (0..256)
                .map(|i| format!("+1555010{i:04}").into_bytes())
                .find(|a| manifest.partition_for(a).partition == partition)
                .unwrap();
            let target = lockbox_client::fleet::target(manifest, &account, &gateway);
            let c = VaultClient::connect(target)
                .await
                .unwrap()
                .with_token_source(tokens.clone());
            let key = BackupKey::generate(&mut OsRng);
            // The nodes keep the production floor: the weakest cost they accept.
            c.enroll(&account, b"pw", &key, 5, KsfParams::PRODUCTION_FLOOR)
                .await
                .unwrap();
            assert_eq!(c.recover(&account, b"pw").await.unwrap(), key);
        }
    });
}

#[test]
fn a_device_with_only_client_toml_uses_the_cluster_which_stops_on_sigterm() {
    let mut cluster = Cluster::start(&["--nodes", "2", "--partitions", "3"]);
    let client = cluster.client_toml();
    let mut keys: Vec<&str> = client.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "dev_issuer_key",
            "fleet_id",
            "fleet_public_key",
            "gateway",
            "witness_public_key"
        ]
    );
    assert_eq!(client["fleet_id"].as_str(), Some(FLEET));
    // The default sealer: a software key file per node.
    assert!(cluster.dir.join("nodes/2/data/sealer.key").is_file());
    let pids = ["nodes/1/pid", "nodes/2/pid", "gateway.pid"].map(|f| cluster.pid(f));
    for (pid, role) in pids
        .iter()
        .zip(["vault serve", "vault serve", "gateway serve"])
    {
        let cmd = cmdline(*pid).unwrap_or_else(|| panic!("pid {pid} is not running"));
        assert!(cmd.contains(role), "{cmd}");
    }
    let verified = run(lockbox()
        .args(["fleet", "verify-log", "--dir"])
        .arg(cluster.dir.join("fleet")));
    common::assert_exit(&verified, 0);

    // Partitions 0 and 1, each replicated on both nodes.
    round_trips(&client, &[0, 1]);

    cluster.signal(Signal::SIGTERM);
    let status = cluster.wait();
    assert_eq!(status.code(), Some(0), "{}", cluster.stderr_text());
    for pid in pids {
        assert!(is_gone(pid), "pid {pid} outlived the cluster");
    }
    assert!(!cluster.dir.join("nodes/1/pid").exists());
    assert!(!cluster.dir.join("gateway.pid").exists());
}

#[test]
fn a_non_empty_dir_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
    let out = run(lockbox().args(["dev", "cluster", "--dir"]).arg(&dir));
    assert_fails_with(&out, 1, &format!("{} is not empty", dir.display()));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn a_softhsm_cluster_seals_in_its_token_and_serves_a_device() {
    let mut cluster = Cluster::start(&["--nodes", "1", "--partitions", "2", "--hsm", "softhsm"]);
    let config = std::fs::read_to_string(cluster.dir.join("nodes/1/vault.toml")).unwrap();
    let config: toml::Table = toml::from_str(&config).unwrap();
    assert_eq!(config["sealer"]["kind"].as_str(), Some("pkcs11"));
    assert_eq!(config["sealer"]["token_label"].as_str(), Some("node-1"));
    // No software key file: the secrets are sealed in the token.
    assert!(!cluster.dir.join("nodes/1/data/sealer.key").exists());
    round_trips(&cluster.client_toml(), &[1]);
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait().code(), Some(0), "{}", cluster.stderr_text());
}

#[test]
fn a_node_that_dies_stops_the_cluster_which_names_it() {
    let mut cluster = Cluster::start(&["--nodes", "2", "--partitions", "2"]);
    let others = [cluster.pid("nodes/1/pid"), cluster.pid("gateway.pid")];
    kill(cluster.pid("nodes/2/pid"), Signal::SIGKILL).unwrap();
    let status = cluster.wait();
    let said = cluster.stderr_text();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains("node-2") && said.contains("exited unexpectedly"),
        "{said}"
    );
    for pid in others {
        assert!(is_gone(pid), "pid {pid} outlived the cluster");
    }
}

/// `lockbox vault members`: the operator lists the groups through any node, removes one
/// member (the partitions keep serving on the other two), and cannot reuse a spent id.
#[test]
fn members_are_listed_removed_and_ids_never_reused() {
    let cluster = Cluster::start(&["--nodes", "3", "--partitions", "2"]);
    let config = cluster.dir.join("nodes/2/vault.toml");
    let members = |args: &[&str]| {
        run(lockbox()
            .args(["vault", "members"])
            .args(args)
            .arg("--config")
            .arg(&config))
    };
    let listed = members(&["list", "--json"]);
    common::assert_exit(&listed, 0);
    let groups: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for g in groups {
        assert_eq!(g["voters"].as_array().unwrap().len(), 3, "{g}");
        assert!(g["leader"].is_u64(), "{g}");
        assert_eq!(g["highest_id"], 3);
    }

    let reused = members(&["add", "--id", "2", "--addr", "127.0.0.1:9"]);
    assert_fails_with(&reused, 1, "ids up to 3 have been used");
    let removed = members(&["remove", "--id", "3"]);
    common::assert_exit(&removed, 0);
    let listed = members(&["list", "--json"]);
    let groups: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    for g in groups.as_array().unwrap() {
        let voters: Vec<u64> = g["voters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[0].as_u64().unwrap())
            .collect();
        assert_eq!(voters, [1, 2], "{g}");
    }
    let again = members(&["add", "--id", "3", "--addr", "127.0.0.1:9"]);
    assert_fails_with(&again, 1, "ids up to 3 have been used");
    round_trips(&cluster.client_toml(), &[0, 1]);
}

/// `lockbox bench vault` with `--json -`: its report, parsed.
fn bench(cluster: &Cluster, accounts: &str) -> std::process::Output {
    run(lockbox()
        .arg("--config")
        .arg(cluster.dir.join("client.toml"))
        .args([
            "bench",
            "vault",
            "--accounts",
            accounts,
            "--concurrency",
            "4",
        ])
        .args([
            "--duration",
            "1",
            "--ceiling-duration",
            "0.2",
            "--json",
            "-",
        ]))
}

#[test]
fn bench_vault_loads_a_bench_cluster_through_its_gateway() {
    let cluster = Cluster::start(&["--nodes", "3", "--partitions", "2", "--bench"]);
    let out = bench(&cluster, "6");
    common::assert_exit(&out, 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = &report["phases"];
    assert_eq!(phases["enroll"]["ok"], 6, "{report}");
    assert_eq!(phases["enroll"]["errors"], 0, "{report}");
    // Every recovery checked its key; wrong guesses are answered as wrong, at most 4 each.
    assert!(phases["recover"]["ok"].as_u64().unwrap() > 0, "{report}");
    let wrong = phases["wrong_guess"]["ok"].as_u64().unwrap();
    assert!((1..=24).contains(&wrong), "{report}");
    assert!(phases["status"]["ok"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["recoveries_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["recovery_p99_ms"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["ceiling_logins_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(report["partitions"], 2, "{report}");
    let note = report["client_argon2id"]["note"].as_str().unwrap();
    assert!(note.contains("load generation only"), "{report}");
}

#[test]
fn bench_vault_refuses_a_cluster_that_keeps_the_argon2id_floor() {
    let cluster = Cluster::start(&["--nodes", "1", "--partitions", "1"]);
    let out = bench(&cluster, "2");
    assert_fails_with(
        &out,
        1,
        "start the fleet for load with `lockbox dev cluster --bench`",
    );
}

/// `lockbox demo` runs a dev cluster, which takes SIGINT so that it can stop its processes: a
/// Ctrl-C during the demo must still end the demo, with an error, and leave no process behind.
#[test]
fn demo_stops_on_ctrl_c_and_leaves_no_process() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("demo");
    let stderr = tmp.path().join("demo.stderr");
    let mut child = lockbox()
        .arg("demo")
        .arg("--workdir")
        .arg(&work)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut before = String::new();
    // Once the gateway's address is printed, the cluster runs and its pid files are written.
    while !before.contains("   gateway http") {
        let read = out.read_line(&mut before).unwrap();
        assert!(read > 0, "the demo ended before its cluster ran: {before}");
    }
    let cluster = work.join("cluster");
    let pids: Vec<Pid> = (1..=5)
        .map(|i| format!("nodes/{i}/pid"))
        .chain(["gateway.pid".to_string()])
        .map(|f| {
            let text = std::fs::read_to_string(cluster.join(&f)).unwrap();
            Pid::from_raw(text.trim().parse().unwrap())
        })
        .collect();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let mut after = String::new();
    std::io::Read::read_to_string(&mut out, &mut after).unwrap();
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    // The signal came during step 2; the check after steps 3–4 must end it before step 5.
    assert!(
        !after.contains("\n5. "),
        "the demo ran on after Ctrl-C: {after}"
    );
    assert_eq!(status.code(), Some(1), "{after}\n{err}");
    assert!(err.contains("interrupted"), "{err}");
    for pid in pids {
        assert!(is_gone(pid), "{pid} outlived the demo");
    }
}
