//! The fleet manifest as its attackers meet it: a device offered rolled-back, forked, singly
//! signed, tampered, foreign, expired or re-encoded manifests must refuse each one with exactly
//! its error, and the witness must refuse to countersign a fork.
//!
//! Forged manifests are signed here with aws-lc-rs directly, following docs/fleet-manifest.md
//! (`Ed25519(label ‖ body)`), so the forgeries do not depend on the code under test.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use lockbox_crypto::labels;
use lockbox_proto::envelope::PartitionPublicKey;
use lockbox_proto::manifest::{
    FleetKey, FleetSigned, HighWater, Manifest, ManifestDraft, ManifestError, PartitionEntry, Pin,
    SignedManifest, Witness, WitnessKey, pb, verify_log,
};
use prost::Message as _;

const NOW: u64 = 1_800_000_000_000;
const DAY: u64 = 86_400_000;
const FLEET_SEED: [u8; 32] = [1; 32];
const WITNESS_SEED: [u8; 32] = [2; 32];

fn partition(id: u32, start: u64, end: u64) -> PartitionEntry {
    let tag = id as u8;
    PartitionEntry {
        partition: id,
        range_start: start,
        range_end: end,
        replicas: (0..5)
            .map(|r| format!("https://vault-{id}-{r}.example:7400"))
            .collect(),
        hpke_public_key: PartitionPublicKey::from_bytes(&[0x40 | tag; 32]).unwrap(),
        opaque_server_public_key: [0x80 | tag; 32],
    }
}

fn first_draft() -> ManifestDraft {
    ManifestDraft {
        fleet_id: "fleet-a".into(),
        sequence: 1,
        issued_at_ms: NOW,
        expires_at_ms: NOW + 30 * DAY,
        previous_hash: [0; 32],
        routing_key: [3; 32],
        partitions: vec![
            partition(0, 0, u64::MAX / 2),
            partition(1, u64::MAX / 2 + 1, u64::MAX),
        ],
        gateways: vec!["https://gateway.example".into()],
        token_keys: vec![[5; 32]],
    }
}

/// The fleet operator, the witness (with its state) and the device's pin.
struct Fleet {
    key: FleetKey,
    witness_key: WitnessKey,
    witness: Witness,
    pin: Pin,
}

impl Fleet {
    fn new() -> Self {
        let key = FleetKey::from_seed(&FLEET_SEED).unwrap();
        let witness_key = WitnessKey::from_seed(&WITNESS_SEED).unwrap();
        let pin = Pin {
            fleet: key.public_key(),
            witness: witness_key.public_key(),
            fleet_id: "fleet-a".into(),
        };
        Self {
            key,
            witness_key,
            witness: Witness::new(),
            pin,
        }
    }

    /// Fleet-signs and countersigns `draft`, as the two ceremonies would.
    fn publish(&mut self, draft: ManifestDraft) -> SignedManifest {
        let fleet_signed = Manifest::new(draft).unwrap().sign(&self.key);
        let pub_key = self.key.public_key();
        self.witness
            .countersign(&self.witness_key, &pub_key, fleet_signed, NOW)
            .unwrap()
    }

    /// Manifests 1, 2, 3, each issued a day after the one before.
    fn chain_of_three(&mut self) -> Vec<SignedManifest> {
        let mut chain = vec![self.publish(first_draft())];
        for day in 1..3 {
            let prev = parsed(chain.last().unwrap());
            let next = prev.successor(NOW + day * DAY, NOW + (30 + day) * DAY);
            chain.push(self.publish(next));
        }
        chain
    }
}

/// The manifest inside an honestly signed manifest, read through the device's own check (from a
/// mark just before it).
fn parsed(signed: &SignedManifest) -> Manifest {
    let body = decode(signed);
    let mark = (body.sequence > 1).then(|| HighWater {
        sequence: body.sequence - 1,
        hash: body.previous_hash[..].try_into().unwrap(),
    });
    Fleet::new()
        .pin
        .accept(mark.as_ref(), std::slice::from_ref(signed), NOW)
        .unwrap()
        .into_manifest()
}

fn decode(signed: &SignedManifest) -> pb::ManifestBody {
    pb::ManifestBody::decode(&signed.body[..]).unwrap()
}

fn ed25519(seed: &[u8; 32], label: &[u8], body: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).unwrap();
    let sig = pair.sign(&[label, body].concat());
    (pair.public_key().as_ref().to_vec(), sig.as_ref().to_vec())
}

/// Any body bytes, signed by both pinned keys: what a holder of both keys (or a bug in the
/// operator's tooling) could publish.
fn forge(body: Vec<u8>) -> SignedManifest {
    let (fleet_key, fleet_signature) = ed25519(&FLEET_SEED, labels::FLEET_MANIFEST_FLEET, &body);
    let (witness_key, witness_signature) =
        ed25519(&WITNESS_SEED, labels::FLEET_MANIFEST_WITNESS, &body);
    SignedManifest {
        body,
        fleet_key,
        fleet_signature,
        witness_key,
        witness_signature,
    }
}

fn forge_pb(body: &pb::ManifestBody) -> SignedManifest {
    forge(body.encode_to_vec())
}

fn accept_one(pin: &Pin, signed: &SignedManifest) -> Result<u64, ManifestError> {
    pin.accept(None, std::slice::from_ref(signed), NOW)
        .map(|v| v.high_water().sequence)
}

#[test]
fn a_chain_of_three_published_and_witnessed_manifests_is_accepted() {
    let mut fleet = Fleet::new();
    let chain = fleet.chain_of_three();
    let v = fleet.pin.accept(None, &chain, NOW + 2 * DAY).unwrap();
    assert_eq!(v.manifest().sequence(), 3);
    assert_eq!(
        v.high_water(),
        HighWater {
            sequence: 3,
            hash: chain[2].hash()
        }
    );
    assert_eq!(v.signed(), &chain[2]);
    assert_eq!(v.manifest().previous_hash(), &chain[1].hash());

    // A device at manifest 1 gets the suffix; one at 3 may be shown 3 again.
    let at_one = HighWater {
        sequence: 1,
        hash: chain[0].hash(),
    };
    let from_one = fleet.pin.accept(Some(&at_one), &chain[1..], NOW).unwrap();
    assert_eq!(from_one.high_water(), v.high_water());
    let again = fleet
        .pin
        .accept(Some(&v.high_water()), &chain[2..], NOW)
        .unwrap();
    assert_eq!(again.high_water(), v.high_water());
    // The suffix may start with the manifest at the mark itself.
    assert!(fleet.pin.accept(Some(&at_one), &chain, NOW).is_ok());
}

#[test]
fn an_offline_device_needs_every_manifest_since_its_mark() {
    let mut fleet = Fleet::new();
    let chain = fleet.chain_of_three();
    let at_one = HighWater {
        sequence: 1,
        hash: chain[0].hash(),
    };
    assert_eq!(
        fleet
            .pin
            .accept(Some(&at_one), &chain[2..], NOW)
            .unwrap_err(),
        ManifestError::Gap {
            expected: 2,
            got: 3
        }
    );
    // A device that has seen nothing starts at manifest 1 (the factory pin is the empty chain).
    assert_eq!(
        fleet.pin.accept(None, &chain[1..], NOW).unwrap_err(),
        ManifestError::Gap {
            expected: 1,
            got: 2
        }
    );
    assert_eq!(
        fleet.pin.accept(Some(&at_one), &[], NOW).unwrap_err(),
        ManifestError::EmptyChain
    );
}

#[test]
fn rollback_to_an_older_manifest_is_refused() {
    let mut fleet = Fleet::new();
    let chain = fleet.chain_of_three();
    let at_three = fleet.pin.accept(None, &chain, NOW).unwrap().high_water();
    for old in &chain[..2] {
        assert_eq!(
            fleet
                .pin
                .accept(Some(&at_three), std::slice::from_ref(old), NOW)
                .unwrap_err(),
            ManifestError::Rollback {
                highest: 3,
                got: decode(old).sequence
            }
        );
    }
    // Inside one chain too: 1, 2, 3, then 2 again.
    let mut replayed = chain.clone();
    replayed.push(chain[1].clone());
    assert_eq!(
        fleet.pin.accept(None, &replayed, NOW).unwrap_err(),
        ManifestError::Rollback { highest: 3, got: 2 }
    );
}

#[test]
fn a_fork_is_refused_by_the_witness_and_by_a_device_that_holds_the_other_branch() {
    let mut fleet = Fleet::new();
    let one = fleet.publish(first_draft());
    let witness_after_one = fleet.witness.to_bytes();
    let m1 = parsed(&one);
    let two = fleet.publish(m1.successor(NOW + DAY, NOW + 31 * DAY));

    // The fleet key signs a second, different manifest 2 (here: another gateway).
    let mut other = m1.successor(NOW + DAY, NOW + 31 * DAY);
    other.gateways = vec!["https://evil-gateway.example".into()];
    let other_signed = Manifest::new(other).unwrap().sign(&fleet.key);
    let fleet_pub = fleet.key.public_key();
    assert_eq!(
        fleet
            .witness
            .countersign(&fleet.witness_key, &fleet_pub, other_signed.clone(), NOW)
            .unwrap_err(),
        ManifestError::WitnessRefusesFork { sequence: 2 }
    );
    assert_eq!(fleet.witness.last().unwrap().hash, two.hash());

    // A witness whose state file was rolled back to before manifest 2 would countersign it; a
    // device that holds the real manifest 2 still refuses it, and everything built on it.
    let mut stale = Witness::from_bytes(&witness_after_one).unwrap();
    let other_two = stale
        .countersign(&fleet.witness_key, &fleet_pub, other_signed, NOW)
        .unwrap();
    let at_two = fleet
        .pin
        .accept(None, &[one.clone(), two.clone()], NOW)
        .unwrap()
        .high_water();
    assert_eq!(
        fleet
            .pin
            .accept(Some(&at_two), std::slice::from_ref(&other_two), NOW)
            .unwrap_err(),
        ManifestError::ChainBroken { sequence: 2 }
    );
    let three_on_other = Manifest::new(parsed(&other_two).successor(NOW + 2 * DAY, NOW + 32 * DAY))
        .unwrap()
        .sign(&fleet.key);
    let three_on_other = stale
        .countersign(&fleet.witness_key, &fleet_pub, three_on_other, NOW)
        .unwrap();
    assert_eq!(
        fleet
            .pin
            .accept(Some(&at_two), std::slice::from_ref(&three_on_other), NOW)
            .unwrap_err(),
        ManifestError::ChainBroken { sequence: 3 }
    );
    // And the honest witness refuses the other branch's 3 as well.
    let three_again = Manifest::new(parsed(&other_two).successor(NOW + 2 * DAY, NOW + 32 * DAY))
        .unwrap()
        .sign(&fleet.key);
    assert_eq!(
        fleet
            .witness
            .countersign(&fleet.witness_key, &fleet_pub, three_again, NOW)
            .unwrap_err(),
        ManifestError::WitnessRefusesFork { sequence: 3 }
    );
}

#[test]
fn a_fleet_signed_manifest_without_the_witness_is_refused() {
    let fleet = Fleet::new();
    let only_fleet = Manifest::new(first_draft()).unwrap().sign(&fleet.key);
    assert_eq!(
        accept_one(&fleet.pin, only_fleet.signed()).unwrap_err(),
        ManifestError::MissingWitness
    );
    // Through its file form too.
    let again = SignedManifest::from_bytes(&only_fleet.to_bytes()).unwrap();
    assert_eq!(
        accept_one(&fleet.pin, &again).unwrap_err(),
        ManifestError::MissingWitness
    );
    let mut unsigned = forge(first_draft_body());
    unsigned.fleet_signature.clear();
    assert_eq!(
        accept_one(&fleet.pin, &unsigned).unwrap_err(),
        ManifestError::Unsigned
    );
}

fn first_draft_body() -> Vec<u8> {
    Manifest::new(first_draft()).unwrap().body_bytes()
}

#[test]
fn a_witness_signature_by_another_key_is_refused() {
    let mut fleet = Fleet::new();
    let impostor = WitnessKey::from_seed(&[6; 32]).unwrap();
    let fleet_pub = fleet.key.public_key();
    let fleet_signed = Manifest::new(first_draft()).unwrap().sign(&fleet.key);
    let by_impostor = Witness::new()
        .countersign(&impostor, &fleet_pub, fleet_signed, NOW)
        .unwrap();
    assert_eq!(
        accept_one(&fleet.pin, &by_impostor).unwrap_err(),
        ManifestError::UnknownWitnessKey
    );
    // The impostor's signature under the pinned witness's key id.
    let mut relabelled = by_impostor.clone();
    relabelled.witness_key = fleet.pin.witness.to_bytes().to_vec();
    assert_eq!(
        accept_one(&fleet.pin, &relabelled).unwrap_err(),
        ManifestError::BadWitnessSignature
    );
    // The fleet's own signature in the witness slot does not count either.
    let mut fleet_twice = fleet.publish(first_draft());
    fleet_twice.witness_signature = fleet_twice.fleet_signature.clone();
    assert_eq!(
        accept_one(&fleet.pin, &fleet_twice).unwrap_err(),
        ManifestError::BadWitnessSignature
    );
}

#[test]
fn a_body_with_one_flipped_byte_is_refused() {
    let mut fleet = Fleet::new();
    let good = fleet.publish(first_draft());
    for i in 0..good.body.len() {
        let mut bad = good.clone();
        bad.body[i] ^= 0x01;
        assert_eq!(
            accept_one(&fleet.pin, &bad).unwrap_err(),
            ManifestError::BadFleetSignature,
            "byte {i}"
        );
    }
    let mut bad = good.clone();
    bad.witness_signature[10] ^= 0x80;
    assert_eq!(
        accept_one(&fleet.pin, &bad).unwrap_err(),
        ManifestError::BadWitnessSignature
    );
    let mut bad = good;
    bad.fleet_signature[63] ^= 0x01;
    assert_eq!(
        accept_one(&fleet.pin, &bad).unwrap_err(),
        ManifestError::BadFleetSignature
    );
}

#[test]
fn a_manifest_signed_by_an_unknown_fleet_key_is_refused() {
    let mut fleet = Fleet::new();
    let other_fleet = FleetKey::from_seed(&[8; 32]).unwrap();
    let other_pub = other_fleet.public_key();
    let signed = Manifest::new(first_draft()).unwrap().sign(&other_fleet);
    // The witness does not know this key either...
    let fleet_pub = fleet.key.public_key();
    assert_eq!(
        fleet
            .witness
            .countersign(&fleet.witness_key, &fleet_pub, signed.clone(), NOW)
            .unwrap_err(),
        ManifestError::UnknownFleetKey
    );
    // ...and a witness that was told to trust it does not convince the device.
    let witnessed = Witness::new()
        .countersign(&fleet.witness_key, &other_pub, signed, NOW)
        .unwrap();
    assert_eq!(
        accept_one(&fleet.pin, &witnessed).unwrap_err(),
        ManifestError::UnknownFleetKey
    );
}

#[test]
fn only_the_newest_manifest_must_be_unexpired() {
    let mut fleet = Fleet::new();
    let chain = fleet.chain_of_three();
    let expires = decode(&chain[2]).expires_at_ms;
    assert_eq!(
        fleet.pin.accept(None, &chain, expires).unwrap_err(),
        ManifestError::Expired {
            expires_at_ms: expires
        }
    );
    assert!(fleet.pin.accept(None, &chain, expires - 1).is_ok());
    // Manifest 1 expired long ago; as history inside the chain it is fine.
    assert!(decode(&chain[0]).expires_at_ms < expires - 1);
    assert_eq!(
        fleet
            .pin
            .accept(None, &chain[..1], expires - 1)
            .unwrap_err(),
        ManifestError::Expired {
            expires_at_ms: NOW + 30 * DAY
        }
    );

    // The witness does not countersign an expired manifest.
    let draft = parsed(&chain[2]).successor(NOW + 3 * DAY, NOW + 4 * DAY);
    let signed = Manifest::new(draft).unwrap().sign(&fleet.key);
    let fleet_pub = fleet.key.public_key();
    assert_eq!(
        fleet
            .witness
            .countersign(&fleet.witness_key, &fleet_pub, signed, NOW + 4 * DAY)
            .unwrap_err(),
        ManifestError::Expired {
            expires_at_ms: NOW + 4 * DAY
        }
    );
}

#[test]
fn a_manifest_for_another_fleet_is_refused() {
    let mut fleet = Fleet::new();
    let mut draft = first_draft();
    draft.fleet_id = "fleet-b".into();
    let other = fleet.publish(draft);
    assert_eq!(
        accept_one(&fleet.pin, &other).unwrap_err(),
        ManifestError::WrongFleet {
            expected: "fleet-a".into(),
            got: "fleet-b".into()
        }
    );
}

#[test]
fn a_body_that_is_not_in_its_canonical_encoding_is_refused() {
    let pin = Fleet::new().pin;
    let body = first_draft_body();
    assert_eq!(accept_one(&pin, &forge(body.clone())), Ok(1));
    let full = pb::ManifestBody::decode(&body[..]).unwrap();

    // Fields re-ordered: the fleet id (tag 1) after everything else.
    let only_id = pb::ManifestBody {
        fleet_id: full.fleet_id.clone(),
        ..Default::default()
    };
    let without_id = pb::ManifestBody {
        fleet_id: String::new(),
        ..full.clone()
    };
    let reordered = [without_id.encode_to_vec(), only_id.encode_to_vec()].concat();
    assert_eq!(pb::ManifestBody::decode(&reordered[..]).unwrap(), full);
    assert_eq!(
        accept_one(&pin, &forge(reordered)),
        Err(ManifestError::NonCanonical)
    );

    // A duplicate field appended (the same sequence number once more).
    let dup = pb::ManifestBody {
        sequence: 1,
        ..Default::default()
    };
    let duplicated = [body.clone(), dup.encode_to_vec()].concat();
    assert_eq!(
        accept_one(&pin, &forge(duplicated)),
        Err(ManifestError::NonCanonical)
    );

    // An unknown field (tag 15, varint 0) and a non-minimal varint for the sequence.
    let unknown = [body.clone(), vec![0x78, 0x00]].concat();
    assert_eq!(
        accept_one(&pin, &forge(unknown)),
        Err(ManifestError::NonCanonical)
    );
    let seq_at = body.iter().position(|&b| b == 0x10).unwrap();
    assert_eq!(body[seq_at + 1], 0x01);
    let padded = [&body[..seq_at + 1], &[0x81, 0x00], &body[seq_at + 2..]].concat();
    assert_eq!(
        accept_one(&pin, &forge(padded)),
        Err(ManifestError::NonCanonical)
    );
}

fn with_ranges(ranges: &[(u64, u64)]) -> ManifestDraft {
    let mut d = first_draft();
    d.partitions = ranges
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| partition(i as u32, s, e))
        .collect();
    d
}

/// The same invalid draft, refused at signing time and, signed anyway, by the device.
fn refused_everywhere(draft: ManifestDraft, message: &'static str) {
    let expected = ManifestError::Malformed(message);
    assert_eq!(Manifest::new(draft.clone()).unwrap_err(), expected);
    let mut body = pb::ManifestBody::decode(&first_draft_body()[..]).unwrap();
    body.partitions = draft.to_pb().partitions;
    assert_eq!(
        accept_one(&Fleet::new().pin, &forge_pb(&body)),
        Err(expected)
    );
}

#[test]
fn partition_ranges_with_gaps_or_overlaps_are_refused() {
    let half = u64::MAX / 2;
    refused_everywhere(
        with_ranges(&[(0, half), (half + 2, u64::MAX)]),
        "gap in partition ranges",
    );
    refused_everywhere(
        with_ranges(&[(1, half), (half + 1, u64::MAX)]),
        "gap in partition ranges: the first does not start at 0",
    );
    refused_everywhere(
        with_ranges(&[(0, half), (half + 1, u64::MAX - 1)]),
        "gap in partition ranges: the last does not end at 2^64-1",
    );
    refused_everywhere(
        with_ranges(&[(0, half), (half, u64::MAX)]),
        "partition ranges overlap or are out of order",
    );
    refused_everywhere(
        with_ranges(&[(0, u64::MAX), (0, u64::MAX)]),
        "partition ranges overlap or are out of order",
    );
    refused_everywhere(
        with_ranges(&[(half + 1, u64::MAX), (0, half)]),
        "gap in partition ranges: the first does not start at 0",
    );
    refused_everywhere(
        with_ranges(&[(0, 10), (11, 5), (6, u64::MAX)]),
        "a partition range ends before it starts",
    );
    let mut dup = with_ranges(&[(0, half), (half + 1, u64::MAX)]);
    dup.partitions[1].partition = 0;
    refused_everywhere(dup, "duplicate partition id");
    // A single partition that owns everything is fine.
    assert!(Manifest::new(with_ranges(&[(0, u64::MAX)])).is_ok());
}

#[test]
fn every_count_and_string_is_bounded() {
    type Edit = fn(&mut ManifestDraft);
    let cases: Vec<(Edit, &'static str)> = vec![
        (
            |d| d.fleet_id = "f".repeat(65),
            "fleet_id must be 1 to 64 printable ASCII characters",
        ),
        (
            |d| d.fleet_id = "fleet a".into(),
            "fleet_id must be 1 to 64 printable ASCII characters",
        ),
        (
            |d| d.partitions[0].replicas.clear(),
            "replicas: 1 to 9 distinct URLs",
        ),
        (
            |d| d.partitions[0].replicas = (0..10).map(|i| format!("https://r{i}")).collect(),
            "replicas: 1 to 9 distinct URLs",
        ),
        (
            |d| d.partitions[0].replicas[1] = d.partitions[0].replicas[0].clone(),
            "replicas: 1 to 9 distinct URLs",
        ),
        (
            |d| d.gateways = vec![format!("https://{}", "g".repeat(249))],
            "a URL must be http:// or https://, printable ASCII, at most 256 bytes",
        ),
        (
            |d| d.gateways = vec!["ftp://gateway".into()],
            "a URL must be http:// or https://, printable ASCII, at most 256 bytes",
        ),
        (|d| d.gateways.clear(), "gateways: 1 to 32 distinct URLs"),
        (
            |d| d.gateways = (0..33).map(|i| format!("https://g{i}")).collect(),
            "gateways: 1 to 32 distinct URLs",
        ),
        (|d| d.token_keys.clear(), "token_keys: 1 to 8 distinct keys"),
        (
            |d| d.token_keys = (0..9).map(|i| [i; 32]).collect(),
            "token_keys: 1 to 8 distinct keys",
        ),
        (
            |d| d.token_keys = vec![[1; 32], [1; 32]],
            "token_keys: 1 to 8 distinct keys",
        ),
        (|d| d.sequence = 0, "sequence starts at 1"),
        (
            |d| d.expires_at_ms = d.issued_at_ms,
            "expires_at_ms must be after issued_at_ms",
        ),
        (
            |d| d.previous_hash = [1; 32],
            "manifest 1 must have an all-zero previous_hash",
        ),
        (
            |d| d.sequence = 2,
            "only manifest 1 has an all-zero previous_hash",
        ),
    ];
    for (edit, message) in cases {
        let mut d = first_draft();
        edit(&mut d);
        assert_eq!(
            Manifest::new(d).unwrap_err(),
            ManifestError::Malformed(message)
        );
    }
    let mut d = first_draft();
    d.gateways = vec![format!("https://{}", "g".repeat(248))];
    assert!(Manifest::new(d).is_ok(), "a 256-byte URL is allowed");
}

#[test]
fn the_largest_manifest_fits_the_size_limit_and_larger_input_is_refused_early() {
    use lockbox_proto::manifest::*;
    let step = u64::MAX / MAX_PARTITIONS as u64;
    let mut d = first_draft();
    d.fleet_id = "f".repeat(MAX_FLEET_ID_LEN);
    let url = |tag: String| format!("https://{tag}{}", "x".repeat(MAX_URL_LEN - 8 - tag.len()));
    d.partitions = (0..MAX_PARTITIONS as u64)
        .map(|i| {
            let end = if i + 1 == MAX_PARTITIONS as u64 {
                u64::MAX
            } else {
                (i + 1) * step - 1
            };
            let mut p = partition(i as u32, i * step, end);
            p.replicas = (0..MAX_REPLICAS)
                .map(|r| url(format!("{i}-{r}-")))
                .collect();
            p
        })
        .collect();
    d.gateways = (0..MAX_GATEWAYS).map(|g| url(format!("{g}-"))).collect();
    d.token_keys = (0..MAX_TOKEN_KEYS as u8).map(|k| [k; 32]).collect();
    let mut fleet = Fleet::new();
    fleet.pin.fleet_id = d.fleet_id.clone();
    let signed = fleet.publish(d);
    let bytes = signed.to_bytes();
    assert!(bytes.len() <= MAX_SIGNED_MANIFEST_BYTES, "{}", bytes.len());
    let back = SignedManifest::from_bytes(&bytes).unwrap();
    assert_eq!(accept_one(&fleet.pin, &back), Ok(1));

    let oversized = vec![0u8; MAX_SIGNED_MANIFEST_BYTES + 1];
    assert_eq!(
        SignedManifest::from_bytes(&oversized).unwrap_err(),
        ManifestError::Malformed("signed manifest larger than 1 MiB")
    );
    assert_eq!(
        SignedManifest::from_bytes(&[0xff; 3]).unwrap_err(),
        ManifestError::Malformed("not a SignedManifest message")
    );
}

#[test]
fn the_witness_starts_at_manifest_one_and_keeps_its_chain_across_restarts() {
    let mut fleet = Fleet::new();
    let fleet_pub = fleet.key.public_key();
    let mut second = first_draft();
    second.sequence = 2;
    second.previous_hash = [9; 32];
    let signed = Manifest::new(second).unwrap().sign(&fleet.key);
    assert_eq!(
        fleet
            .witness
            .countersign(&fleet.witness_key, &fleet_pub, signed, NOW)
            .unwrap_err(),
        ManifestError::WitnessRefusesSequence {
            expected: 1,
            got: 2
        }
    );
    assert_eq!(
        Witness::from_bytes(&fleet.witness.to_bytes()),
        Ok(Witness::new())
    );

    let one = fleet.publish(first_draft());
    let state = fleet.witness.to_bytes();
    let mut restarted = Witness::from_bytes(&state).unwrap();
    assert_eq!(restarted, fleet.witness);
    let m1 = parsed(&one);
    // Countersigning manifest 1 again is idempotent; skipping 2 is refused.
    let again = Manifest::new(first_draft()).unwrap().sign(&fleet.key);
    assert_eq!(
        restarted
            .countersign(&fleet.witness_key, &fleet_pub, again, NOW)
            .unwrap(),
        one
    );
    let mut three = m1.successor(NOW, NOW + DAY);
    three.sequence = 3;
    let three = Manifest::new(three).unwrap().sign(&fleet.key);
    assert_eq!(
        restarted
            .countersign(&fleet.witness_key, &fleet_pub, three, NOW)
            .unwrap_err(),
        ManifestError::WitnessRefusesSequence {
            expected: 2,
            got: 3
        }
    );
    let two = Manifest::new(m1.successor(NOW, NOW + DAY))
        .unwrap()
        .sign(&fleet.key);
    let two = restarted
        .countersign(&fleet.witness_key, &fleet_pub, two, NOW)
        .unwrap();
    assert_eq!(restarted.last().unwrap().sequence, 2);
    assert_eq!(restarted.last().unwrap().hash, two.hash());
    // A manifest 1 offered after 2: refused.
    let old = Manifest::new(first_draft()).unwrap().sign(&fleet.key);
    assert_eq!(
        restarted
            .countersign(&fleet.witness_key, &fleet_pub, old, NOW)
            .unwrap_err(),
        ManifestError::WitnessRefusesSequence {
            expected: 3,
            got: 1
        }
    );

    for bad in [&b""[..], b"LBWS\0", b"LBHW", &[0u8; 44]] {
        assert!(
            matches!(Witness::from_bytes(bad), Err(ManifestError::BadState(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn a_fleet_signed_file_is_checked_by_the_witness() {
    let mut fleet = Fleet::new();
    let fleet_pub = fleet.key.public_key();
    let signed = Manifest::new(first_draft()).unwrap().sign(&fleet.key);
    let mut bytes = signed.signed().clone();
    bytes.body[3] ^= 1;
    let tampered = FleetSigned::from_bytes(&bytes.to_bytes()).unwrap();
    assert_eq!(
        fleet
            .witness
            .countersign(&fleet.witness_key, &fleet_pub, tampered, NOW)
            .unwrap_err(),
        ManifestError::BadFleetSignature
    );
    let witnessed = fleet.publish(first_draft());
    assert_eq!(
        FleetSigned::from_bytes(&witnessed.to_bytes()).unwrap_err(),
        ManifestError::AlreadyCountersigned
    );
    let mut unsigned = signed.signed().clone();
    unsigned.fleet_signature.clear();
    assert_eq!(
        FleetSigned::from_bytes(&unsigned.to_bytes()).unwrap_err(),
        ManifestError::Unsigned
    );
    assert_eq!(FleetSigned::from_bytes(&signed.to_bytes()), Ok(signed));
}

#[test]
fn high_water_marks_round_trip_and_bad_ones_are_refused() {
    let mark = HighWater {
        sequence: 7,
        hash: [0xab; 32],
    };
    assert_eq!(HighWater::from_bytes(&mark.to_bytes()), Ok(mark));
    let mut zero = mark.to_bytes();
    zero[4..12].copy_from_slice(&0u64.to_be_bytes());
    for bad in [&mark.to_bytes()[..43], &zero[..], b"LBWS"] {
        assert!(matches!(
            HighWater::from_bytes(bad),
            Err(ManifestError::BadState(_))
        ));
    }
}

#[test]
fn verify_log_checks_every_link_from_manifest_one_and_says_where_it_breaks() {
    let mut fleet = Fleet::new();
    let log = fleet.chain_of_three();
    let summary = verify_log(&fleet.pin, &log).unwrap();
    assert_eq!(summary.entries, 3);
    assert_eq!(summary.head.sequence, 3);
    assert_eq!(summary.head.hash, log[2].hash());
    assert_eq!(summary.newest_expires_at_ms, NOW + 32 * DAY);

    let broken = |log: &[SignedManifest]| verify_log(&fleet.pin, log).unwrap_err();
    let at = |index, cause| ManifestError::LogBroken {
        index,
        cause: Box::new(cause),
    };
    assert_eq!(
        broken(&[log[0].clone(), log[2].clone()]),
        at(
            1,
            ManifestError::Gap {
                expected: 2,
                got: 3
            }
        )
    );
    assert_eq!(
        broken(&log[1..]),
        at(
            0,
            ManifestError::Gap {
                expected: 1,
                got: 2
            }
        )
    );
    assert_eq!(
        broken(&[log[0].clone(), log[1].clone(), log[1].clone()]),
        at(2, ManifestError::Repeated { sequence: 2 })
    );
    let mut tampered = log.clone();
    tampered[1].witness_signature[0] ^= 1;
    assert_eq!(broken(&tampered), at(1, ManifestError::BadWitnessSignature));
    assert_eq!(broken(&[]), ManifestError::EmptyChain);
    // Expiry is not enforced for history: the device's clock is not an input here.
    assert_eq!(
        fleet.pin.accept(None, &log, NOW + 40 * DAY).unwrap_err(),
        ManifestError::Expired {
            expires_at_ms: NOW + 32 * DAY
        }
    );
    assert_eq!(verify_log(&fleet.pin, &log), Ok(summary));
}

mod routing {
    use super::*;
    use proptest::prelude::*;

    fn manifest_with_cuts(mut cuts: Vec<u64>) -> Manifest {
        cuts.sort_unstable();
        cuts.dedup();
        cuts.retain(|&c| c != 0);
        let starts: Vec<u64> = std::iter::once(0).chain(cuts.iter().copied()).collect();
        let ranges: Vec<(u64, u64)> = starts
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, starts.get(i + 1).map_or(u64::MAX, |n| n - 1)))
            .collect();
        Manifest::new(with_ranges(&ranges)).unwrap()
    }

    proptest! {
        #[test]
        fn every_hash_has_exactly_its_one_partition(
            cuts in proptest::collection::vec(any::<u64>(), 0..40),
            hashes in proptest::collection::vec(any::<u64>(), 1..50),
        ) {
            let m = manifest_with_cuts(cuts);
            let edges = m.partitions().iter().flat_map(|p| [p.range_start, p.range_end]);
            for h in hashes.into_iter().chain(edges).chain([0, u64::MAX]) {
                let owner = m.partition_for_hash(h);
                prop_assert!(owner.contains(h));
                prop_assert_eq!(m.partitions().iter().filter(|p| p.contains(h)).count(), 1);
            }
        }

        #[test]
        fn an_account_always_routes_to_the_same_partition(
            cuts in proptest::collection::vec(any::<u64>(), 0..40),
            account in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let m = manifest_with_cuts(cuts);
            let h = m.account_hash(&account);
            let owner = m.partition_for(&account);
            prop_assert!(owner.contains(h));
            // The same answer from a manifest that went through signing and the device.
            let mut fleet = Fleet::new();
            let signed = fleet.publish(m.draft().clone());
            let again = fleet.pin.accept(None, &[signed], NOW).unwrap();
            prop_assert_eq!(again.manifest().partition_for(&account), owner);
        }
    }

    #[test]
    fn the_account_hash_is_hmac_sha256_of_the_label_and_account() {
        use aws_lc_rs::hmac;
        let m = Manifest::new(first_draft()).unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[3; 32]);
        let tag = hmac::sign(&key, b"lockbox/v1/fleet-routingalice");
        let want = u64::from_be_bytes(tag.as_ref()[..8].try_into().unwrap());
        assert_eq!(m.account_hash(b"alice"), want);
        let mut other_key = first_draft();
        other_key.routing_key = [4; 32];
        assert_ne!(
            Manifest::new(other_key).unwrap().account_hash(b"alice"),
            want
        );
    }
}

/// Fixed seeds and fields give fixed bytes: any change to the encoding, the labels or the
/// signature scheme changes these and fails here (docs/fleet-manifest.md quotes them).
#[test]
fn golden_vector() {
    let mut draft = first_draft();
    draft.partitions = vec![PartitionEntry {
        replicas: vec!["https://v.example".into()],
        ..partition(7, 0, u64::MAX)
    }];
    draft.gateways = vec!["https://g.example".into()];
    let mut fleet = Fleet::new();
    let signed = fleet.publish(draft);
    let m = parsed(&signed);
    assert_eq!(
        hex::encode(&signed.body),
        concat!(
            "0a07666c6565742d6110011880a0f1c2b1342080b0ec96bb342a200000000000",
            "0000000000000000000000000000000000000000000000000000003220030303",
            "03030303030303030303030303030303030303030303030303030303033a6408",
            "0718ffffffffffffffffff01221168747470733a2f2f762e6578616d706c652a",
            "2047474747474747474747474747474747474747474747474747474747474747",
            "4732208787878787878787878787878787878787878787878787878787878787",
            "878787421168747470733a2f2f672e6578616d706c654a200505050505050505",
            "050505050505050505050505050505050505050505050505",
        )
    );
    assert_eq!(
        hex::encode(&signed.fleet_key),
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
    );
    assert_eq!(
        hex::encode(&signed.fleet_signature),
        concat!(
            "03c35443a9c96c174c87175ebbf5d249f104506da5dc3120e1c8f1ab51aff7bb",
            "ab323ed6e978ba1292fa3642f0c73ba8e1e501b54a720838ede7c73a1543a207",
        )
    );
    assert_eq!(
        hex::encode(&signed.witness_key),
        "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
    );
    assert_eq!(
        hex::encode(&signed.witness_signature),
        concat!(
            "6adee3c5dc02f50e8faaafab57b323e411325ef23d0f196ce9eaaaf9c8950372",
            "1c54150b02b5a36072b99fc8d9a33703f8a2e1f5e4c28cf2480af4687baca30a",
        )
    );
    assert_eq!(
        hex::encode(signed.hash()),
        "45f26e1fdef8896842b962f54cf7bed5cb6976eaca6bee0ad74c0429cc37c916"
    );
    assert_eq!(m.account_hash(b"alice"), 0x8512_4be1_899b_629e);
    // The library signs exactly what the spec says (checked with aws-lc-rs directly).
    assert_eq!(forge(signed.body.clone()), signed);
}
