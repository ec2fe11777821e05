//! The contract every `Sealer` must meet; each implementation's test file runs all of it.

use std::sync::Barrier;

use lockbox_hsm::{HEADER_LEN, KeyId, SealError, Sealer};

pub const AAD: &[u8] = b"partition-7|account-42|v3";
pub const PLAINTEXT: &[u8] = b"OPAQUE record + wrapped K: 0123456789abcdef-fedcba9876543210";

pub fn round_trip(s: &impl Sealer) {
    for pt in [&b""[..], b"x", PLAINTEXT, &[0xA5; 4096]] {
        let blob = s.seal(AAD, pt).unwrap();
        assert_eq!(blob.len(), HEADER_LEN + pt.len() + 16);
        assert_eq!(blob[0], 1, "version byte");
        assert_eq!(&blob[1..5], &s.current_key_id().0.to_be_bytes(), "key id");
        assert_eq!(s.unseal(AAD, &blob).unwrap().as_slice(), pt);
    }
    let a = s.seal(AAD, PLAINTEXT).unwrap();
    let b = s.seal(AAD, PLAINTEXT).unwrap();
    assert_ne!(a[5..17], b[5..17], "nonces must differ between seals");
}

pub fn wrong_aad_fails(s: &impl Sealer) {
    let blob = s.seal(AAD, PLAINTEXT).unwrap();
    for aad in [
        &b""[..],
        b"partition-7|account-43|v3",
        &AAD[..AAD.len() - 1],
    ] {
        let got = s.unseal(aad, &blob).map(|_| ());
        assert!(matches!(got, Err(SealError::Tampered)), "{got:?}");
    }
}

pub fn every_bit_flip_fails(s: &impl Sealer) {
    let blob = s.seal(AAD, b"short secret").unwrap();
    for byte in 0..blob.len() {
        for bit in 0..8 {
            let mut bad = blob.clone();
            bad[byte] ^= 1 << bit;
            let err = s.unseal(AAD, &bad).expect_err("flipped blob unsealed");
            match byte {
                0 => assert!(matches!(err, SealError::Malformed { .. }), "{err}"),
                1..5 => assert!(
                    matches!(err, SealError::UnknownKey(_) | SealError::Tampered),
                    "{err}"
                ),
                _ => assert!(matches!(err, SealError::Tampered), "byte {byte}: {err}"),
            }
        }
    }
    for len in 0..blob.len() {
        assert!(s.unseal(AAD, &blob[..len]).is_err(), "truncated to {len}");
    }
}

fn with_key_id(blob: &[u8], id: KeyId) -> Vec<u8> {
    let mut out = blob.to_vec();
    out[1..5].copy_from_slice(&id.0.to_be_bytes());
    out
}

/// Rotates once, then checks old and new blobs, key id swaps and unknown ids.
pub fn rotation_and_key_ids(s: &impl Sealer) {
    let old_id = s.current_key_id();
    let old = s.seal(AAD, PLAINTEXT).unwrap();
    let new_id = s.rotate().unwrap();
    assert_eq!(new_id, KeyId(old_id.0 + 1));
    assert_eq!(s.current_key_id(), new_id);
    let new = s.seal(AAD, PLAINTEXT).unwrap();
    assert_eq!(&new[1..5], &new_id.0.to_be_bytes());
    assert_eq!(s.unseal(AAD, &old).unwrap().as_slice(), PLAINTEXT);
    assert_eq!(s.unseal(AAD, &new).unwrap().as_slice(), PLAINTEXT);

    // Both keys exist, so a swapped id reaches GCM and fails authentication there.
    assert!(matches!(
        s.unseal(AAD, &with_key_id(&old, new_id)),
        Err(SealError::Tampered)
    ));
    assert!(matches!(
        s.unseal(AAD, &with_key_id(&new, old_id)),
        Err(SealError::Tampered)
    ));
    let unknown = KeyId(999);
    assert!(matches!(
        s.unseal(AAD, &with_key_id(&new, unknown)),
        Err(SealError::UnknownKey(id)) if id == unknown
    ));
}

pub fn never_contains_plaintext(s: &impl Sealer) {
    let blob = s.seal(AAD, PLAINTEXT).unwrap();
    for window in PLAINTEXT.windows(8) {
        assert!(!blob.windows(8).any(|w| w == window), "plaintext leaked");
    }
    assert!(
        !blob.windows(AAD.len()).any(|w| w == AAD),
        "AAD is not stored in the blob"
    );
}

/// 8 threads seal and unseal at once while one of them rotates the key.
pub fn concurrent_use(s: &impl Sealer) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 25;
    let start = Barrier::new(THREADS);
    let blobs: Vec<Vec<(Vec<u8>, Vec<u8>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    (0..ROUNDS)
                        .map(|r| {
                            if t == 0 && r == ROUNDS / 2 {
                                s.rotate().unwrap();
                            }
                            let aad = format!("thread-{t}|round-{r}").into_bytes();
                            let pt = format!("secret {t}/{r}").into_bytes();
                            let blob = s.seal(&aad, &pt).unwrap();
                            assert_eq!(s.unseal(&aad, &blob).unwrap().as_slice(), pt);
                            (aad, blob)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, per_thread) in blobs.iter().enumerate() {
        for (r, (aad, blob)) in per_thread.iter().enumerate() {
            let pt = s.unseal(aad, blob).unwrap();
            assert_eq!(pt.as_slice(), format!("secret {t}/{r}").as_bytes());
        }
    }
}

/// The whole contract, in an order that leaves the sealer rotated twice.
pub fn full_contract(s: &impl Sealer) {
    round_trip(s);
    wrong_aad_fails(s);
    every_bit_flip_fails(s);
    never_contains_plaintext(s);
    rotation_and_key_ids(s);
    concurrent_use(s);
}
