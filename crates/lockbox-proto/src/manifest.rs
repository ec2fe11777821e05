//! The signed fleet manifest (DESIGN.md §2 and §4; the byte-exact spec is
//! docs/fleet-manifest.md): which vault partitions a device talks to, their keys and replicas, the
//! gateways and the identity provider's token keys.
//!
//! A [`Manifest`] exists only validated (ranges cover the hash space, every count and string is
//! bounded). Its body is signed by the fleet key ([`Manifest::sign`] → [`FleetSigned`]), then
//! countersigned by an independent [`Witness`] only if it extends the witness's hash chain; a
//! device ([`Pin`]) accepts it only if both pinned keys signed these exact body bytes and it
//! extends the device's [`HighWater`] mark. Signatures are checked before the body is parsed at
//! all, and a body is accepted only in its one canonical encoding.

use crate::envelope::PartitionPublicKey;
use aws_lc_rs::{digest, hmac};
use lockbox_crypto::labels;
use prost::Message as _;

mod chain;
mod keys;

pub use chain::{FleetSigned, HighWater, LogSummary, Pin, VerifiedManifest, Witness, verify_log};
pub use keys::{
    FleetKey, FleetPublicKey, FleetRole, PublicKey, Role, SigningKey, WitnessKey, WitnessPublicKey,
    WitnessRole,
};

/// Generated protobuf code for `lockbox.fleet.v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("lockbox.fleet.v1");
}

/// The files of a manifest log directory (`NNNNNNNN.manifest`, as `lockbox fleet` writes them),
/// in name order, which is sequence order.
pub fn log_files(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "manifest"))
        .collect();
    names.sort();
    Ok(names)
}

/// Most manifests a gateway sends in one answer; a device asks again after the last.
pub const MAX_PER_ANSWER: usize = 16;
/// Largest encoded [`SignedManifest`]; larger input is refused before it is decoded.
pub const MAX_SIGNED_MANIFEST_BYTES: usize = 1 << 20;
/// Longest fleet id, in bytes (printable ASCII).
pub const MAX_FLEET_ID_LEN: usize = 64;
/// Most partitions in one manifest.
pub const MAX_PARTITIONS: usize = 256;
/// Most replicas of one partition.
pub const MAX_REPLICAS: usize = 9;
/// Most gateways in one manifest.
pub const MAX_GATEWAYS: usize = 32;
/// Most identity-provider token keys in one manifest (old and new, during a rotation).
pub const MAX_TOKEN_KEYS: usize = 8;
/// Longest replica or gateway URL, in bytes.
pub const MAX_URL_LEN: usize = 256;
/// Length of the chain hash, the routing key and every public key in a manifest.
pub const HASH_LEN: usize = 32;

/// Why a manifest, a chain of them or a key was refused. Each cause is its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed fleet manifest: {0}")]
    Malformed(&'static str),
    #[error("the fleet manifest body is not in its canonical encoding")]
    NonCanonical,
    #[error("the fleet manifest is not signed by the fleet key")]
    Unsigned,
    #[error("the fleet manifest is not countersigned by the witness")]
    MissingWitness,
    #[error("the fleet manifest is signed by a fleet key this device does not pin")]
    UnknownFleetKey,
    #[error("the fleet signature on the manifest does not verify (tampered body or signature)")]
    BadFleetSignature,
    #[error("the fleet manifest is countersigned by a witness key this device does not pin")]
    UnknownWitnessKey,
    #[error("the witness signature on the manifest does not verify (tampered body or signature)")]
    BadWitnessSignature,
    #[error("the fleet manifest is for fleet {got:?}, not {expected:?}")]
    WrongFleet { expected: String, got: String },
    #[error("the fleet manifest expired at {expires_at_ms} (Unix ms)")]
    Expired { expires_at_ms: u64 },
    #[error("fleet manifest {got} is older than manifest {highest}, already accepted (rollback)")]
    Rollback { highest: u64, got: u64 },
    #[error("fleet manifest {sequence} does not extend the accepted chain (a fork)")]
    ChainBroken { sequence: u64 },
    #[error("fleet manifest {got} does not follow the accepted chain: {expected} is missing")]
    Gap { expected: u64, got: u64 },
    #[error("fleet manifest {sequence} appears twice in the log")]
    Repeated { sequence: u64 },
    #[error("no fleet manifest was given")]
    EmptyChain,
    #[error("the witness refuses manifest {sequence}: it conflicts with the one it countersigned")]
    WitnessRefusesFork { sequence: u64 },
    #[error("the witness refuses manifest {got}: the next one it can countersign is {expected}")]
    WitnessRefusesSequence { expected: u64, got: u64 },
    #[error("the fleet-signed manifest already carries witness fields")]
    AlreadyCountersigned,
    #[error("invalid manifest key: {0}")]
    BadKey(&'static str),
    #[error("unreadable manifest state: {0}")]
    BadState(&'static str),
    #[error("the manifest log breaks at entry {index}: {cause}")]
    LogBroken {
        index: usize,
        #[source]
        cause: Box<ManifestError>,
    },
}

/// One partition: the slice of the routing-hash space it owns and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEntry {
    pub partition: u32,
    /// Inclusive.
    pub range_start: u64,
    /// Inclusive.
    pub range_end: u64,
    /// Vault node URLs (at least one).
    pub replicas: Vec<String>,
    pub hpke_public_key: PartitionPublicKey,
    /// The partition's OPAQUE server public key (ristretto255), as the vault core encodes it.
    pub opaque_server_public_key: [u8; HASH_LEN],
}

impl PartitionEntry {
    pub fn contains(&self, hash: u64) -> bool {
        (self.range_start..=self.range_end).contains(&hash)
    }
}

/// The fields of a manifest, not yet validated: what an operator fills in.
/// [`Manifest::new`] turns it into a [`Manifest`] or says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestDraft {
    pub fleet_id: String,
    pub sequence: u64,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub previous_hash: [u8; HASH_LEN],
    pub routing_key: [u8; HASH_LEN],
    pub partitions: Vec<PartitionEntry>,
    pub gateways: Vec<String>,
    pub token_keys: Vec<[u8; HASH_LEN]>,
}

/// A validated manifest. Read-only: change a [`ManifestDraft`] and validate again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest(ManifestDraft);

/// A manifest as it travels: the body bytes and the signatures over them, none of it checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedManifest {
    pub body: Vec<u8>,
    pub fleet_key: Vec<u8>,
    pub fleet_signature: Vec<u8>,
    pub witness_key: Vec<u8>,
    pub witness_signature: Vec<u8>,
}

impl SignedManifest {
    /// Decodes the envelope only (size, protobuf); nothing is verified yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_SIGNED_MANIFEST_BYTES {
            return Err(ManifestError::Malformed(
                "signed manifest larger than 1 MiB",
            ));
        }
        let m = pb::SignedManifest::decode(bytes)
            .map_err(|_| ManifestError::Malformed("not a SignedManifest message"))?;
        Ok(Self {
            body: m.body.to_vec(),
            fleet_key: m.fleet_key.to_vec(),
            fleet_signature: m.fleet_signature.to_vec(),
            witness_key: m.witness_key.to_vec(),
            witness_signature: m.witness_signature.to_vec(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        pb::SignedManifest {
            body: self.body.clone().into(),
            fleet_key: self.fleet_key.clone().into(),
            fleet_signature: self.fleet_signature.clone().into(),
            witness_key: self.witness_key.clone().into(),
            witness_signature: self.witness_signature.clone().into(),
        }
        .encode_to_vec()
    }

    /// The chain hash of the body: `SHA-256(FLEET_MANIFEST_HASH ‖ body)`.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        chain_hash(&self.body)
    }
}

pub(crate) fn chain_hash(body: &[u8]) -> [u8; HASH_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(labels::FLEET_MANIFEST_HASH);
    ctx.update(body);
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

impl Manifest {
    /// Validates `draft`: the only way to make a manifest.
    pub fn new(draft: ManifestDraft) -> Result<Self, ManifestError> {
        validate(&draft)?;
        Ok(Self(draft))
    }

    /// Parses a body: canonical encoding, then validation. Checks no signature: for tools that
    /// show a manifest, and for bodies whose signatures [`Pin`] has already verified.
    pub fn from_body(body: &[u8]) -> Result<Self, ManifestError> {
        let parsed = pb::ManifestBody::decode(body)
            .map_err(|_| ManifestError::Malformed("body is not a ManifestBody message"))?;
        if parsed.encode_to_vec() != body {
            return Err(ManifestError::NonCanonical);
        }
        Self::new(draft_from_pb(parsed)?)
    }

    /// The canonical body bytes: what both keys sign and the chain hash covers.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.0.to_pb().encode_to_vec()
    }

    /// The chain hash, which the next manifest carries as its `previous_hash`.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        chain_hash(&self.body_bytes())
    }

    /// Signs the body with the fleet key; the witness countersigns next.
    pub fn sign(self, key: &FleetKey) -> FleetSigned {
        let body = self.body_bytes();
        let fleet_signature = key.sign(&body).to_vec();
        FleetSigned::new(SignedManifest {
            body,
            fleet_key: key.public_key().to_bytes().to_vec(),
            fleet_signature,
            ..SignedManifest::default()
        })
    }

    /// A draft of the next manifest: same contents, sequence + 1, chained to this one.
    pub fn successor(&self, issued_at_ms: u64, expires_at_ms: u64) -> ManifestDraft {
        ManifestDraft {
            sequence: self.0.sequence.saturating_add(1),
            issued_at_ms,
            expires_at_ms,
            previous_hash: self.hash(),
            ..self.0.clone()
        }
    }

    /// The fields, to edit into another draft.
    pub fn draft(&self) -> &ManifestDraft {
        &self.0
    }

    pub fn fleet_id(&self) -> &str {
        &self.0.fleet_id
    }
    pub fn sequence(&self) -> u64 {
        self.0.sequence
    }
    pub fn issued_at_ms(&self) -> u64 {
        self.0.issued_at_ms
    }
    pub fn expires_at_ms(&self) -> u64 {
        self.0.expires_at_ms
    }
    pub fn previous_hash(&self) -> &[u8; HASH_LEN] {
        &self.0.previous_hash
    }
    pub fn routing_key(&self) -> &[u8; HASH_LEN] {
        &self.0.routing_key
    }
    pub fn partitions(&self) -> &[PartitionEntry] {
        &self.0.partitions
    }
    pub fn gateways(&self) -> &[String] {
        &self.0.gateways
    }
    pub fn token_keys(&self) -> &[[u8; HASH_LEN]] {
        &self.0.token_keys
    }

    /// `HMAC-SHA256(routing_key, FLEET_ROUTING ‖ account)`, first 8 bytes big-endian.
    pub fn account_hash(&self, account: &[u8]) -> u64 {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0.routing_key);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(labels::FLEET_ROUTING);
        ctx.update(account);
        let tag = ctx.sign();
        let first: [u8; 8] = tag.as_ref()[..8]
            .try_into()
            .expect("HMAC-SHA256 is 32 bytes");
        u64::from_be_bytes(first)
    }

    /// The partition that owns `account`.
    pub fn partition_for(&self, account: &[u8]) -> &PartitionEntry {
        self.partition_for_hash(self.account_hash(account))
    }

    /// The partition whose range holds `hash`: there is exactly one (validation proved it).
    pub fn partition_for_hash(&self, hash: u64) -> &PartitionEntry {
        let i = self.0.partitions.partition_point(|p| p.range_end < hash);
        &self.0.partitions[i]
    }
}

fn validate(d: &ManifestDraft) -> Result<(), ManifestError> {
    use ManifestError::Malformed;
    if d.fleet_id.is_empty()
        || d.fleet_id.len() > MAX_FLEET_ID_LEN
        || !d.fleet_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Malformed(
            "fleet_id must be 1 to 64 printable ASCII characters",
        ));
    }
    if d.sequence == 0 {
        return Err(Malformed("sequence starts at 1"));
    }
    if d.expires_at_ms <= d.issued_at_ms {
        return Err(Malformed("expires_at_ms must be after issued_at_ms"));
    }
    let zero = d.previous_hash == [0; HASH_LEN];
    if d.sequence == 1 && !zero {
        return Err(Malformed("manifest 1 must have an all-zero previous_hash"));
    }
    if d.sequence > 1 && zero {
        return Err(Malformed("only manifest 1 has an all-zero previous_hash"));
    }
    validate_partitions(&d.partitions)?;
    validate_urls(&d.gateways, MAX_GATEWAYS, "gateways: 1 to 32 distinct URLs")?;
    if d.token_keys.is_empty()
        || d.token_keys.len() > MAX_TOKEN_KEYS
        || has_duplicates(&d.token_keys)
    {
        return Err(Malformed("token_keys: 1 to 8 distinct keys"));
    }
    Ok(())
}

fn validate_partitions(parts: &[PartitionEntry]) -> Result<(), ManifestError> {
    use ManifestError::Malformed;
    if parts.is_empty() || parts.len() > MAX_PARTITIONS {
        return Err(Malformed("partitions: 1 to 256"));
    }
    let ids: Vec<u32> = parts.iter().map(|p| p.partition).collect();
    if has_duplicates(&ids) {
        return Err(Malformed("duplicate partition id"));
    }
    for p in parts {
        if p.range_start > p.range_end {
            return Err(Malformed("a partition range ends before it starts"));
        }
        validate_urls(&p.replicas, MAX_REPLICAS, "replicas: 1 to 9 distinct URLs")?;
    }
    if parts[0].range_start != 0 {
        return Err(Malformed(
            "gap in partition ranges: the first does not start at 0",
        ));
    }
    for pair in parts.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        if prev.range_end == u64::MAX || next.range_start <= prev.range_end {
            return Err(Malformed("partition ranges overlap or are out of order"));
        }
        if next.range_start != prev.range_end + 1 {
            return Err(Malformed("gap in partition ranges"));
        }
    }
    if parts[parts.len() - 1].range_end != u64::MAX {
        return Err(Malformed(
            "gap in partition ranges: the last does not end at 2^64-1",
        ));
    }
    Ok(())
}

fn validate_urls(urls: &[String], max: usize, what: &'static str) -> Result<(), ManifestError> {
    if urls.is_empty() || urls.len() > max || has_duplicates(urls) {
        return Err(ManifestError::Malformed(what));
    }
    if !urls.iter().all(|u| is_url(u)) {
        return Err(ManifestError::Malformed(
            "a URL must be http:// or https://, printable ASCII, at most 256 bytes",
        ));
    }
    Ok(())
}

fn is_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    u.len() <= MAX_URL_LEN
        && rest.is_some_and(|r| !r.is_empty())
        && u.bytes().all(|b| b.is_ascii_graphic())
}

fn has_duplicates<T: Ord>(items: &[T]) -> bool {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

fn fixed(bytes: &[u8], what: &'static str) -> Result<[u8; HASH_LEN], ManifestError> {
    bytes.try_into().map_err(|_| ManifestError::Malformed(what))
}

fn draft_from_pb(b: pb::ManifestBody) -> Result<ManifestDraft, ManifestError> {
    if b.partitions.len() > MAX_PARTITIONS {
        return Err(ManifestError::Malformed("partitions: 1 to 256"));
    }
    let partitions = b
        .partitions
        .into_iter()
        .map(partition_from_pb)
        .collect::<Result<_, _>>()?;
    let token_keys = b
        .token_keys
        .iter()
        .map(|k| fixed(k, "a token key must be 32 bytes"))
        .collect::<Result<_, _>>()?;
    Ok(ManifestDraft {
        fleet_id: b.fleet_id,
        sequence: b.sequence,
        issued_at_ms: b.issued_at_ms,
        expires_at_ms: b.expires_at_ms,
        previous_hash: fixed(&b.previous_hash, "previous_hash must be 32 bytes")?,
        routing_key: fixed(&b.routing_key, "routing_key must be 32 bytes")?,
        partitions,
        gateways: b.gateways,
        token_keys,
    })
}

fn partition_from_pb(p: pb::Partition) -> Result<PartitionEntry, ManifestError> {
    Ok(PartitionEntry {
        partition: p.partition,
        range_start: p.range_start,
        range_end: p.range_end,
        replicas: p.replicas,
        hpke_public_key: PartitionPublicKey::from_bytes(&p.hpke_public_key)
            .map_err(|_| ManifestError::Malformed("hpke_public_key must be 32 bytes"))?,
        opaque_server_public_key: fixed(
            &p.opaque_server_public_key,
            "opaque_server_public_key must be 32 bytes",
        )?,
    })
}

impl ManifestDraft {
    /// The protobuf body of this draft, unvalidated (for tools and tests that forge bodies;
    /// [`Manifest::new`] is the way to a valid manifest).
    pub fn to_pb(&self) -> pb::ManifestBody {
        let d = self;
        pb::ManifestBody {
            fleet_id: d.fleet_id.clone(),
            sequence: d.sequence,
            issued_at_ms: d.issued_at_ms,
            expires_at_ms: d.expires_at_ms,
            previous_hash: d.previous_hash.to_vec().into(),
            routing_key: d.routing_key.to_vec().into(),
            partitions: d
                .partitions
                .iter()
                .map(|p| pb::Partition {
                    partition: p.partition,
                    range_start: p.range_start,
                    range_end: p.range_end,
                    replicas: p.replicas.clone(),
                    hpke_public_key: p.hpke_public_key.to_bytes().to_vec().into(),
                    opaque_server_public_key: p.opaque_server_public_key.to_vec().into(),
                })
                .collect(),
            gateways: d.gateways.clone(),
            token_keys: d.token_keys.iter().map(|k| k.to_vec().into()).collect(),
        }
    }
}
