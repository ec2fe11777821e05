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
             partitions = {partitions}\n\
             min_client_ksf = {{ m_cost_kib = 256, t_cost = 1, p_cost = 1 }}\n{}",
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

/// The whole pinned path: ceremony, nodes, a gateway that serves the manifest log and routes by
/// it, and a device that knows only pins.toml — no trust on first use anywhere.
#[test]
fn a_device_that_pins_the_fleet_keys_reaches_every_partition_through_the_gateway() {
    use lockbox_crypto::{BackupKey, OsRng};
    use lockbox_proto::manifest::{FleetPublicKey, Pin, WitnessPublicKey};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let issuer = Arc::new(Issuer::generate().unwrap());
    let (n1, _) = node_config(dir.path(), "n1", "[0]", &issuer);
    let (n2, _) = node_config(dir.path(), "n2", "[1]", &issuer);
    let fleet = dir.path().join("fleet");
    assert_exit(&fleet_init(&fleet, &[&n1, &n2]), 0);
    let mut children = Children(vec![
        vault_node::spawn_listening(vault_node::vault_serve(&n1)).0,
        vault_node::spawn_listening(vault_node::vault_serve(&n2)).0,
    ]);
    let gateway_toml = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway_toml,
        format!(
            "listen = \"127.0.0.1:0\"\nmanifest_log = \"fleet/manifests\"\n{}",
            lockbox_token::AuthConfig::toml_section(&issuer, FLEET)
        ),
    )
    .unwrap();
    let mut serve = lockbox();
    serve
        .args(["gateway", "serve", "--config"])
        .arg(&gateway_toml);
    let (gateway, addr) = vault_node::spawn_listening(serve);
    children.0.push(gateway);
    let gateway_url = format!("http://{addr}");

    let pins: toml::Table =
        toml::from_str(&std::fs::read_to_string(fleet.join("pins.toml")).unwrap()).unwrap();
    let pin = Pin {
        fleet: FleetPublicKey::from_hex(pins["fleet_public_key"].as_str().unwrap()).unwrap(),
        witness: WitnessPublicKey::from_hex(pins["witness_public_key"].as_str().unwrap()).unwrap(),
        fleet_id: FLEET.into(),
    };
    let tokens = Arc::new(lockbox_token::MintingSource::new(
        issuer,
        FLEET,
        std::time::Duration::from_secs(600),
    ));
    vault_node::rt().block_on(async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let verified = lockbox_client::fleet::update(&gateway_url, None, &pin, None, now)
            .await
            .unwrap();
        assert_eq!(verified.high_water().sequence, 1);
        // Up to date: the device re-verifies the manifest at its mark.
        let high = verified.high_water();
        let again = lockbox_client::fleet::update(&gateway_url, None, &pin, Some(&high), now)
            .await
            .unwrap();
        assert_eq!(again.high_water(), high);
        let manifest = verified.manifest();

        // Two accounts the manifest places in different partitions.
        let accounts: Vec<Vec<u8>> = (0..64)
            .map(|i| format!("+1555000{i:04}").into_bytes())
            .collect();
        let in_p0 = accounts.iter().find(|a| manifest.partition_for(a).partition == 0).unwrap();
        let in_p1 = accounts.iter().find(|a| manifest.partition_for(a).partition == 1).unwrap();
        for account in [in_p0, in_p1] {
            let target = lockbox_client::fleet::target(manifest, account, &gateway_url);
            let c = VaultClient::connect(target)
                .await
                .unwrap()
                .with_token_source(tokens.clone());
            let key = BackupKey::generate(&mut OsRng);
            c.enroll(account, b"pw", &key, 5, lockbox_vault_core::KsfParams::INSECURE_TEST_ONLY)
                .await
                .unwrap();
            assert_eq!(c.recover(account, b"pw").await.unwrap(), key);
        }
        // An envelope addressed to the other partition is refused at the gateway.
        let mut wrong = lockbox_client::fleet::target(manifest, in_p1, &gateway_url);
        let p0 = lockbox_client::fleet::target(manifest, in_p0, &gateway_url);
        wrong.partition = p0.partition;
        wrong.hpke_public_key = p0.hpke_public_key;
        let c = VaultClient::connect(wrong)
            .await
            .unwrap()
            .with_token_source(tokens.clone());
        let err = c.status(in_p1).await.unwrap_err();
        assert!(
            matches!(err, lockbox_client::ClientError::Envelope { code: tonic::Code::InvalidArgument, ref message } if message.contains("partition 1")),
            "{err:?}"
        );
        // A device pinned to another witness refuses the gateway's manifest.
        let impostor = Pin {
            witness: lockbox_proto::manifest::WitnessKey::generate().public_key(),
            ..pin.clone()
        };
        let err = lockbox_client::fleet::update(&gateway_url, None, &impostor, None, now)
            .await
            .unwrap_err();
        assert!(matches!(err, lockbox_client::ClientError::Manifest(_)), "{err:?}");
    });
}

/// Server processes, killed when the test ends, however it ends.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
