//! Envelopes and responses arrive from the network: opening arbitrary bytes as a request (at the
//! vault) or as a response (at the device) must fail cleanly, never panic, and never open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_proto::envelope::{PartitionSecretKey, Sealed, open_request, seal_request};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let (sk, pk) = PartitionSecretKey::generate(&mut rng);
    let split = data.len().min(32);
    let sealed = Sealed {
        enc: data[..split].to_vec(),
        ciphertext: data[split..].to_vec(),
    };
    assert!(
        open_request(&sk, 0, b"a", &sealed).is_err(),
        "random bytes opened as a request"
    );
    let (_, awaiting) = seal_request(&pk, 0, b"a", b"request", &mut rng).unwrap();
    assert!(
        awaiting.open(data).is_err(),
        "random bytes opened as a response"
    );
});
