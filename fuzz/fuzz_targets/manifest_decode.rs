//! A fleet manifest arrives from the network (through the gateway, or any cache): whatever the
//! bytes, decoding them and handing them to the device's pin, the log auditor and the witness
//! must fail cleanly or accept, never panic. Random bytes never carry valid signatures, so the
//! bytes are also signed as a body by both pinned keys (with aws-lc-rs directly, as the spec
//! says), which takes them through body parsing, the canonical check, validation and routing.
#![no_main]

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use libfuzzer_sys::fuzz_target;
use lockbox_crypto::labels;
use lockbox_proto::manifest::{
    FleetKey, FleetSigned, HighWater, Pin, SignedManifest, Witness, WitnessKey, verify_log,
};
use std::sync::OnceLock;

const FLEET_SEED: [u8; 32] = [1; 32];
const WITNESS_SEED: [u8; 32] = [2; 32];
const NOW: u64 = 1_800_000_000_000;

struct Fixture {
    fleet: Ed25519KeyPair,
    witness: Ed25519KeyPair,
    witness_key: WitnessKey,
    pin: Pin,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let witness_key = WitnessKey::from_seed(&WITNESS_SEED).unwrap();
        let pin = Pin {
            fleet: FleetKey::from_seed(&FLEET_SEED).unwrap().public_key(),
            witness: witness_key.public_key(),
            fleet_id: "fleet-a".into(),
        };
        Fixture {
            fleet: Ed25519KeyPair::from_seed_unchecked(&FLEET_SEED).unwrap(),
            witness: Ed25519KeyPair::from_seed_unchecked(&WITNESS_SEED).unwrap(),
            witness_key,
            pin,
        }
    })
}

fn signed_by_both(f: &Fixture, body: &[u8]) -> SignedManifest {
    let sign =
        |pair: &Ed25519KeyPair, label: &[u8]| pair.sign(&[label, body].concat()).as_ref().to_vec();
    SignedManifest {
        body: body.to_vec(),
        fleet_key: f.fleet.public_key().as_ref().to_vec(),
        fleet_signature: sign(&f.fleet, labels::FLEET_MANIFEST_FLEET),
        witness_key: f.witness.public_key().as_ref().to_vec(),
        witness_signature: sign(&f.witness, labels::FLEET_MANIFEST_WITNESS),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mark = HighWater {
        sequence: 1,
        hash: [7; 32],
    };
    if let Ok(signed) = SignedManifest::from_bytes(data) {
        let chain = [signed];
        let _ = f.pin.accept(None, &chain, NOW);
        let _ = f.pin.accept(Some(&mark), &chain, NOW);
        let _ = verify_log(&f.pin, &chain);
    }
    if let Ok(fleet_signed) = FleetSigned::from_bytes(data) {
        let _ = Witness::new().countersign(&f.witness_key, &f.pin.fleet, fleet_signed, NOW);
    }

    let forged = signed_by_both(f, data);
    let chain = [forged.clone(), forged];
    let _ = f.pin.accept(Some(&mark), &chain, NOW);
    if let Ok(v) = f.pin.accept(None, &chain[..1], NOW) {
        // Accepted means canonical: the body is the one encoding of what was parsed.
        assert_eq!(
            v.manifest().body_bytes(),
            data,
            "a non-canonical body was accepted"
        );
        let owner = v.manifest().partition_for(data);
        assert!(owner.contains(v.manifest().account_hash(data)));
    }
});
