//! The fleet ceremony through the binary: `lockbox fleet init` seals each partition's secrets to
//! its nodes before they first start, the nodes then serve exactly the keys the manifest lists,
//! and the manifest log is published, countersigned and verified, and caught when edited.

mod common;
mod vault_node;

use common::{assert_exit, lockbox, run};
use lockbox_client::VaultClient;
use lockbox_token::Issuer;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const FLEET: &str = "test-fleet";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node config in `dir/name` serving `partitions`, at a fixed loopback port.
fn node_config(dir: &Path, name: &str, partitions: &str, issuer: &Issuer) -> (PathBuf, u16) {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    let port = free_port();
    let config = root.join("vault.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\
             partitions = {partitions}\n{}",
            lockbox_token::AuthConfig::toml_section(issuer, FLEET)
        ),
    )
    .unwrap();
    (config, port)
}

fn fleet_init(fleet: &Path, nodes: &[&Path]) -> std::process::Output {
    let mut cmd = lockbox();
    cmd.args([
        "fleet",
        "init",
        "--fleet-id",
        FLEET,
        "--gateway",
        "http://127.0.0.1:7400",
    ])
    .arg("--dir")
    .arg(fleet);
    for n in nodes {
        cmd.arg("--node").arg(n);
    }
    run(&mut cmd)
}

fn show_json(file: &Path) -> serde_json::Value {
    let out = run(lockbox().args(["fleet", "show", "--json"]).arg(file));
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verify_log(fleet: &Path) -> std::process::Output {
    run(lockbox().args(["fleet", "verify-log", "--dir"]).arg(fleet))
}

#[test]
fn the_ceremony_installs_the_keys_the_manifest_lists() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate().unwrap();
    let (n1, _) = node_config(dir.path(), "n1", "[0, 1]", &issuer);
    let (n2, port2) = node_config(dir.path(), "n2", "[1]", &issuer);
    let fleet = dir.path().join("fleet");
    assert_exit(&fleet_init(&fleet, &[&n1, &n2]), 0);
    let key_mode = std::fs::metadata(fleet.join("fleet.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let first = fleet.join("manifests/00000001.manifest");
    let m = show_json(&first);
    assert_eq!(m["sequence"], 1);
    assert_eq!(m["signatures"], "fleet-signed and witnessed");
    assert_eq!(m["token_keys"][0], issuer.public_key_hex());
    let parts = m["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["range_start"], 0);
    assert_eq!(parts[1]["range_end"], u64::MAX);
    assert_eq!(parts[1]["replicas"].as_array().unwrap().len(), 2);

    // The node, started after the ceremony, serves the ceremony's keys, not fresh ones.
    let (mut child, _addr) = vault_node::spawn_listening(vault_node::vault_serve(&n2));
    let served = vault_node::rt().block_on(async {
        VaultClient::discover(&format!("http://127.0.0.1:{port2}"), 1)
            .await
            .unwrap()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        hex::encode(served.hpke_public_key.to_bytes()),
        parts[1]["hpke_public_key"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(served.identity.public_key),
        parts[1]["opaque_server_public_key"].as_str().unwrap()
    );

    // A second ceremony never replaces a node's secrets, and writes nothing when it refuses.
    let (fresh, _) = node_config(dir.path(), "n3", "[2]", &issuer);
    let fleet2 = dir.path().join("fleet2");
    let again = fleet_init(&fleet2, &[&fresh, &n1]);
    assert_exit(&again, 1);
    let said = common::stderr(&again);
    assert!(
        said.contains("node n1") && said.contains("already holds secrets"),
        "{said}"
    );
    assert!(!fleet2.exists());
    // n3, listed first, got nothing either: a ceremony of its own still succeeds.
    assert_exit(&fleet_init(&fleet2, &[&fresh]), 0);
}

#[test]
fn the_log_is_published_countersigned_verified_and_caught_when_edited() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::generate().unwrap();
    let (n1, _) = node_config(dir.path(), "n1", "[0]", &issuer);
    let fleet = dir.path().join("fleet");
    assert_exit(&fleet_init(&fleet, &[&n1]), 0);
    assert_exit(&verify_log(&fleet), 0);

    let out = run(lockbox().args(["fleet", "publish", "--dir"]).arg(&fleet));
    assert_exit(&out, 0);
    let pending = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(
        show_json(&pending)["signatures"],
        "fleet-signed, not witnessed"
    );
    let pins = std::fs::read_to_string(fleet.join("pins.toml")).unwrap();
    let pins: toml::Table = toml::from_str(&pins).unwrap();
    let fleet_key = pins["fleet_public_key"].as_str().unwrap();
    let second = fleet.join("manifests/00000002.manifest");
    let witness = |input: &Path, out: &Path| {
        run(lockbox()
            .args(["fleet", "witness", "--fleet-public-key", fleet_key])
            .arg("--witness-dir")
            .arg(fleet.join("witness"))
            .arg("--in")
            .arg(input)
            .arg("--out")
            .arg(out))
    };
    assert_exit(&witness(&pending, &second), 0);
    let out = verify_log(&fleet);
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 manifests"));
    assert_eq!(
        show_json(&second)["previous_hash"],
        show_json(&fleet.join("manifests/00000001.manifest"))["hash"]
    );

    // A fork: another manifest 2, fleet-signed. The witness has seen 2 already and refuses.
    std::fs::remove_file(&second).unwrap();
    let forked = run(lockbox()
        .args(["fleet", "publish", "--valid-days", "7", "--dir"])
        .arg(&fleet));
    assert_exit(&forked, 0);
    let fork = PathBuf::from(String::from_utf8(forked.stdout).unwrap().trim());
    let refused = witness(&fork, &dir.path().join("fork.manifest"));
    assert_exit(&refused, 3);
    assert!(
        common::stderr(&refused).contains("conflicts"),
        "{}",
        common::stderr(&refused)
    );

    // An edited manifest breaks the log.
    let first = fleet.join("manifests/00000001.manifest");
    let mut bytes = std::fs::read(&first).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 1;
    std::fs::write(&first, bytes).unwrap();
    let out = verify_log(&fleet);
    assert_exit(&out, 3);
}
