//! `lockbox fleet init | publish | witness | show | verify-log`: the fleet ceremony and the
//! signed manifest log (docs/fleet-manifest.md).
//!
//! A fleet directory holds `fleet.key` (0600), `pins.toml` (the public keys a device pins),
//! `manifests/NNNNNNNN.manifest` (the countersigned log) and `NNNNNNNN.pending` (published,
//! awaiting the witness). `init` also creates `witness/` (its key and state) for a dev fleet;
//! in production that directory belongs to the independent auditor, on another machine.

use anyhow::{Context, Result, bail, ensure};
use lockbox_crypto::{OsRng, RngCore};
use lockbox_proto::manifest::{
    FleetKey, FleetPublicKey, FleetSigned, Manifest, ManifestDraft, PartitionEntry, Pin,
    SignedManifest, Witness, WitnessKey, WitnessPublicKey, verify_log,
};
use lockbox_vault::VaultConfig;
use lockbox_vault::node::{self, PartitionKeys};
use lockbox_vault_core::partition_server_id;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::keysrc;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// `pins.toml`: what a device pins for this fleet.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    pub fleet_id: String,
    pub fleet_public_key: String,
    pub witness_public_key: String,
}

impl Pins {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("pins.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }

    pub fn pin(&self) -> Result<Pin> {
        Ok(Pin {
            fleet: FleetPublicKey::from_hex(&self.fleet_public_key)?,
            witness: WitnessPublicKey::from_hex(&self.witness_public_key)?,
            fleet_id: self.fleet_id.clone(),
        })
    }
}

pub struct InitArgs<'a> {
    pub dir: &'a Path,
    pub fleet_id: &'a str,
    pub nodes: &'a [PathBuf],
    pub gateways: &'a [String],
    pub valid_days: u64,
}

/// The ceremony: fleet and witness keys, every partition's secrets sealed to each of its
/// replicas' sealers (never written in the clear), and manifest 1, countersigned.
pub fn init(a: &InitArgs<'_>) -> Result<()> {
    let nodes = load_nodes(a.nodes, a.fleet_id)?;
    let token_key = token_key(&nodes)?;
    let placement = placement(&nodes);
    preflight(&nodes)?;
    create_layout(a.dir)?;
    let fleet = FleetKey::generate();
    let witness = WitnessKey::generate();
    write_key(&a.dir.join("fleet.key"), &fleet.seed_bytes()[..])?;
    write_key(
        &a.dir.join("witness/witness.key"),
        &witness.seed_bytes()[..],
    )?;
    let pins = Pins {
        fleet_id: a.fleet_id.to_owned(),
        fleet_public_key: fleet.public_key().to_hex(),
        witness_public_key: witness.public_key().to_hex(),
    };
    std::fs::write(a.dir.join("pins.toml"), toml::to_string(&pins)?)?;
    let partitions = install_secrets(&nodes, &placement)?;
    let now = now_ms();
    let mut routing_key = [0u8; 32];
    OsRng.fill_bytes(&mut routing_key);
    let manifest = Manifest::new(ManifestDraft {
        fleet_id: a.fleet_id.to_owned(),
        sequence: 1,
        issued_at_ms: now,
        expires_at_ms: now + a.valid_days * DAY_MS,
        previous_hash: [0; 32],
        routing_key,
        partitions,
        gateways: a.gateways.to_vec(),
        token_keys: vec![token_key],
    })?;
    let mut state = Witness::new();
    let signed = state.countersign(&witness, &fleet.public_key(), manifest.sign(&fleet), now)?;
    std::fs::write(a.dir.join("witness/state"), state.to_bytes())?;
    write_manifest(a.dir, &signed)?;
    println!("fleet {} initialised in {}", a.fleet_id, a.dir.display());
    println!("fleet public key   {}", pins.fleet_public_key);
    println!("witness public key {}", pins.witness_public_key);
    Ok(())
}

/// The next manifest: the newest one's content with a new validity, fleet-signed, written as
/// `NNNNNNNN.pending` for the witness.
pub fn publish(dir: &Path, valid_days: u64) -> Result<()> {
    let pin = Pins::load(dir)?.pin()?;
    let log = read_log(dir)?;
    // The log, not the clock: an expired head may still be renewed.
    verify_log(&pin, &log)?;
    let head = Manifest::from_body(&log.last().context("empty manifest log")?.body)?;
    let now = now_ms();
    let next = Manifest::new(head.successor(now, now + valid_days * DAY_MS))?;
    let fleet = read_fleet_key(dir)?;
    let sequence = next.sequence();
    let pending = pending_path(dir, sequence);
    std::fs::write(&pending, next.sign(&fleet).to_bytes())
        .with_context(|| format!("cannot write {}", pending.display()))?;
    println!("{}", pending.display());
    Ok(())
}

/// The auditor's countersignature: only for the next link of the chain it has seen.
pub fn witness(witness_dir: &Path, fleet_public_key: &str, input: &Path, out: &Path) -> Result<()> {
    let fleet = FleetPublicKey::from_hex(fleet_public_key)?;
    let key = WitnessKey::from_seed(&keysrc::read_secret_hex(&witness_dir.join("witness.key"))?)?;
    let state_path = witness_dir.join("state");
    let state_bytes = std::fs::read(&state_path)
        .with_context(|| format!("cannot read the witness state {}", state_path.display()))?;
    let mut state = Witness::from_bytes(&state_bytes)?;
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let signed = state.countersign(&key, &fleet, FleetSigned::from_bytes(&bytes)?, now_ms())?;
    std::fs::write(out, signed.to_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    // The state advances only once the countersigned manifest is safely written.
    write_atomic(&state_path, &state.to_bytes())?;
    println!("countersigned {}", out.display());
    Ok(())
}

/// What a manifest says (signatures not checked: use `verify-log` for that).
pub fn show(file: &Path, json: bool) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let signed = SignedManifest::from_bytes(&bytes)?;
    let m = Manifest::from_body(&signed.body)?;
    let view = ShowView::of(&m, &signed);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!(
            "fleet {} manifest {} ({})",
            view.fleet_id, view.sequence, view.signatures
        );
        println!(
            "issued {} ms, expires {} ms",
            view.issued_at_ms, view.expires_at_ms
        );
        println!("hash {}, previous {}", view.hash, view.previous_hash);
        for p in &view.partitions {
            println!(
                "partition {} [{:#018x}..={:#018x}] {}",
                p.partition,
                p.range_start,
                p.range_end,
                p.replicas.join(" ")
            );
        }
        println!("gateways {}", view.gateways.join(" "));
    }
    Ok(())
}

/// Replays the whole log from manifest 1 under the pinned keys.
pub fn verify(dir: &Path) -> Result<()> {
    let pin = Pins::load(dir)?.pin()?;
    let log = read_log(dir)?;
    let summary = verify_log(&pin, &log)?;
    println!(
        "ok: {} manifests, head {} ({}), expires {} ms",
        summary.entries,
        summary.head.sequence,
        hex::encode(summary.head.hash),
        summary.newest_expires_at_ms
    );
    Ok(())
}

#[derive(Serialize)]
struct ShowView {
    fleet_id: String,
    sequence: u64,
    signatures: &'static str,
    issued_at_ms: u64,
    expires_at_ms: u64,
    hash: String,
    previous_hash: String,
    partitions: Vec<ShowPartition>,
    gateways: Vec<String>,
    token_keys: Vec<String>,
}

#[derive(Serialize)]
struct ShowPartition {
    partition: u32,
    range_start: u64,
    range_end: u64,
    replicas: Vec<String>,
    hpke_public_key: String,
    opaque_server_public_key: String,
}

impl ShowView {
    fn of(m: &Manifest, s: &SignedManifest) -> Self {
        let signatures = match (s.fleet_signature.is_empty(), s.witness_signature.is_empty()) {
            (false, false) => "fleet-signed and witnessed",
            (false, true) => "fleet-signed, not witnessed",
            _ => "unsigned",
        };
        Self {
            fleet_id: m.fleet_id().to_owned(),
            sequence: m.sequence(),
            signatures,
            issued_at_ms: m.issued_at_ms(),
            expires_at_ms: m.expires_at_ms(),
            hash: hex::encode(m.hash()),
            previous_hash: hex::encode(m.previous_hash()),
            partitions: m
                .partitions()
                .iter()
                .map(|p| ShowPartition {
                    partition: p.partition,
                    range_start: p.range_start,
                    range_end: p.range_end,
                    replicas: p.replicas.clone(),
                    hpke_public_key: hex::encode(p.hpke_public_key.to_bytes()),
                    opaque_server_public_key: hex::encode(p.opaque_server_public_key),
                })
                .collect(),
            gateways: m.gateways().to_vec(),
            token_keys: m.token_keys().iter().map(hex::encode).collect(),
        }
    }
}

fn load_nodes(paths: &[PathBuf], fleet_id: &str) -> Result<Vec<VaultConfig>> {
    ensure!(!paths.is_empty(), "name at least one node with --node");
    let mut nodes = Vec::new();
    for path in paths {
        let cfg = VaultConfig::load(path)?;
        ensure!(
            cfg.auth.audience == fleet_id,
            "node {} accepts tokens for `{}`, not for this fleet `{fleet_id}`",
            path.display(),
            cfg.auth.audience
        );
        nodes.push(cfg);
    }
    Ok(nodes)
}

/// The identity provider's key, which every node must agree on.
fn token_key(nodes: &[VaultConfig]) -> Result<[u8; 32]> {
    let first = &nodes[0].auth.issuer_public_key;
    for n in nodes {
        ensure!(
            &n.auth.issuer_public_key == first,
            "node {} trusts another token issuer than node {}",
            n.node_id,
            nodes[0].node_id
        );
    }
    let bytes = hex::decode(first).context("[auth] issuer_public_key is not hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("[auth] issuer_public_key must be 32 bytes"))
}

/// Before anything is written: every node's sealer opens, its database opens, it holds no
/// partition secrets yet, and it can be reached at a URL. A failed ceremony leaves no node
/// half-enrolled for these reasons.
fn preflight(nodes: &[VaultConfig]) -> Result<()> {
    for cfg in nodes {
        let context = || format!("node {}", cfg.node_id);
        cfg.replica_url().map_err(anyhow::Error::msg)?;
        let store = node::open_store(cfg).with_context(context)?;
        node::open_sealer(cfg).with_context(context)?;
        for &p in &cfg.partitions {
            if node::has_partition(&store, p).with_context(context)? {
                return Err(node::NodeError::SecretsExist(p)).with_context(context);
            }
        }
    }
    Ok(())
}

/// Partition → the nodes (indices) that hold a replica of it.
fn placement(nodes: &[VaultConfig]) -> BTreeMap<u32, Vec<usize>> {
    let mut map: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for &p in &n.partitions {
            map.entry(p).or_default().push(i);
        }
    }
    map
}

/// Makes each partition's secrets once, seals them to every replica's sealer, and returns the
/// manifest's partition entries with the ranges split evenly.
fn install_secrets(
    nodes: &[VaultConfig],
    placement: &BTreeMap<u32, Vec<usize>>,
) -> Result<Vec<PartitionEntry>> {
    let count = placement.len() as u64;
    let width = u64::MAX / count;
    let mut entries = Vec::new();
    for (k, (&partition, holders)) in placement.iter().enumerate() {
        let keys = PartitionKeys::generate();
        let mut replicas = Vec::new();
        for &i in holders {
            let cfg = &nodes[i];
            let store = node::open_store(cfg)?;
            let sealer = node::open_sealer(cfg)?;
            node::install_partition(&store, sealer.as_ref(), partition, &keys)
                .with_context(|| format!("node {}", cfg.node_id))?;
            replicas.push(cfg.replica_url().map_err(anyhow::Error::msg)?);
        }
        let k = k as u64;
        let identity = keys.opaque.identity(&partition_server_id(partition));
        entries.push(PartitionEntry {
            partition,
            range_start: k * width,
            range_end: if k + 1 == count {
                u64::MAX
            } else {
                (k + 1) * width - 1
            },
            replicas,
            hpke_public_key: keys.hpke.public_key(),
            opaque_server_public_key: identity.public_key,
        });
    }
    Ok(entries)
}

fn create_layout(dir: &Path) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty: a fleet is initialised once",
            dir.display()
        );
    }
    for sub in ["manifests", "witness"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    Ok(())
}

fn write_key(path: &Path, seed: &[u8]) -> Result<()> {
    keysrc::write_secret(path, &zeroize::Zeroizing::new(hex::encode(seed)))
}

fn read_fleet_key(dir: &Path) -> Result<FleetKey> {
    Ok(FleetKey::from_seed(&keysrc::read_secret_hex(
        &dir.join("fleet.key"),
    )?)?)
}

fn manifest_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join("manifests")
        .join(format!("{sequence:08}.manifest"))
}

fn pending_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join("manifests").join(format!("{sequence:08}.pending"))
}

fn write_manifest(dir: &Path, signed: &SignedManifest) -> Result<()> {
    let m = Manifest::from_body(&signed.body)?;
    write_atomic(&manifest_path(dir, m.sequence()), &signed.to_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Every countersigned manifest in the directory, in file-name order.
pub fn read_log(dir: &Path) -> Result<Vec<SignedManifest>> {
    let manifests = dir.join("manifests");
    let names = lockbox_proto::manifest::log_files(&manifests)
        .with_context(|| format!("cannot read {}", manifests.display()))?;
    ensure!(!names.is_empty(), "no manifests in {}", manifests.display());
    names
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            SignedManifest::from_bytes(&bytes).with_context(|| p.display().to_string())
        })
        .collect()
}

use lockbox_proto::unix_now_ms as now_ms;
