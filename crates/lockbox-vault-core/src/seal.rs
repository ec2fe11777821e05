//! The two AEAD layers around `K` (AES-256-GCM, aws-lc-rs):
//! * wrap (device only): `wrapped_key = nonce ‖ AES-GCM(HKDF(export_key, labels::WRAP), nonce,
//!   K, aad = account)`. The vault stores it and can never open it.
//! * login reply (vault → device): the wrapped key sealed again under a key derived from the
//!   OPAQUE session key, so only the party that completed this login can read it.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use lockbox_crypto::{BackupKey, hkdf_expand, labels};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::record::AccountId;

/// HKDF `info` for the login-reply key and nonce, expanded from the OPAQUE session key.
/// Versioned and distinct from every label in `lockbox_crypto::labels`.
pub const LOGIN_REPLY_LABEL: &[u8] = labels::VAULT_LOGIN_REPLY;

/// Length of a wrapped key made by [`wrap`]: nonce ‖ K ‖ tag.
pub const WRAPPED_KEY_LEN: usize = NONCE_LEN + 32 + 16;

fn aead_key(bytes: &[u8]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .ok()
        .map(LessSafeKey::new)
}

fn seal(key: &[u8], nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let key = aead_key(key)?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .ok()?;
    Some(buf)
}

fn open(
    key: &[u8],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let key = aead_key(key)?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// Key and nonce for the login reply. Each OPAQUE session key seals exactly one reply (the
/// session is consumed by its KE3), so a derived nonce is never reused under a key.
fn reply_key(session_key: &[u8]) -> (Zeroizing<[u8; 32]>, [u8; NONCE_LEN]) {
    let mut okm = Zeroizing::new([0u8; 32 + NONCE_LEN]);
    hkdf_expand(session_key, None, LOGIN_REPLY_LABEL, &mut okm[..]);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}

pub(crate) fn seal_reply(
    session_key: &[u8],
    account: &AccountId,
    wrapped: &[u8],
) -> Option<Vec<u8>> {
    let (key, nonce) = reply_key(session_key);
    seal(&key[..], nonce, account.as_bytes(), wrapped)
}

pub(crate) fn open_reply(
    session_key: &[u8],
    account: &AccountId,
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let (key, nonce) = reply_key(session_key);
    open(&key[..], nonce, account.as_bytes(), sealed)
}

fn wrap_key(export_key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    hkdf_expand(export_key, None, labels::WRAP, &mut k[..]);
    k
}

pub(crate) fn wrap<R: RngCore + CryptoRng>(
    export_key: &[u8],
    account: &AccountId,
    key: &BackupKey,
    rng: &mut R,
) -> Option<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let sealed = seal(
        &wrap_key(export_key)[..],
        nonce,
        account.as_bytes(),
        key.expose(),
    )?;
    Some([&nonce[..], &sealed].concat())
}

pub(crate) fn unwrap(export_key: &[u8], account: &AccountId, wrapped: &[u8]) -> Option<BackupKey> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return None;
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let plain = open(&wrap_key(export_key)[..], nonce, account.as_bytes(), sealed)?;
    let k: [u8; 32] = plain.as_slice().try_into().ok()?;
    Some(BackupKey::from_bytes(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn wrap_round_trip_and_binding() {
        let a = AccountId::new(b"alice").unwrap();
        let b = AccountId::new(b"bob").unwrap();
        let k = BackupKey::generate(&mut OsRng);
        let w = wrap(&[1; 64], &a, &k, &mut OsRng).unwrap();
        assert_eq!(w.len(), WRAPPED_KEY_LEN);
        assert_eq!(unwrap(&[1; 64], &a, &w).unwrap(), k);
        assert!(unwrap(&[2; 64], &a, &w).is_none(), "other export key");
        assert!(unwrap(&[1; 64], &b, &w).is_none(), "other account");
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert!(unwrap(&[1; 64], &a, &bad).is_none());
        assert!(unwrap(&[1; 64], &a, &w[1..]).is_none());
    }

    #[test]
    fn reply_round_trip_and_binding() {
        let a = AccountId::new(b"alice").unwrap();
        let b = AccountId::new(b"bob").unwrap();
        let sealed = seal_reply(&[9; 64], &a, b"wrapped").unwrap();
        assert_eq!(
            open_reply(&[9; 64], &a, &sealed).unwrap().as_slice(),
            b"wrapped"
        );
        assert!(open_reply(&[8; 64], &a, &sealed).is_none());
        assert!(open_reply(&[9; 64], &b, &sealed).is_none());
        assert!(open_reply(&[9; 64], &a, &sealed[..sealed.len() - 1]).is_none());
    }
}
