//! Catalog pins (DESIGN.md §3): where the vault holds `K` for an account, it also holds the
//! newest position of that account's backup catalog, so that a new phone that recovers `K` with
//! the password also learns how far the catalog must reach, and a storage provider that rolled
//! the repository back is caught there too.
//!
//! A pin is `sequence ‖ body ‖ signature`: the catalog's sequence number, 64 bytes the device
//! defines (the repository id and the MAC of the catalog entry at `sequence`), and an Ed25519
//! signature over both, bound to the account, under a key derived from `K`. The vault keeps the
//! public half (the [`CatalogKey`], given at enrollment) and the newest pin it verified; it never
//! holds anything that signs. So no one without `K` (not the gateway, not a holder of the
//! account token, not the vault itself) can move a pin forward, and a device that reads a pin
//! back checks the signature itself. A pin never moves back: the vault keeps the highest
//! sequence it was shown.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use lockbox_crypto::{BackupKey, labels};

use crate::record::AccountId;

/// Length of a [`CatalogKey`] (an Ed25519 public key).
pub const CATALOG_KEY_LEN: usize = 32;
/// Length of the device-defined part of a pin.
pub const CATALOG_PIN_BODY_LEN: usize = 64;
const SIGNATURE_LEN: usize = 64;
/// Length of an encoded [`CatalogPin`].
pub const CATALOG_PIN_LEN: usize = 8 + CATALOG_PIN_BODY_LEN + SIGNATURE_LEN;

/// The public key that verifies an account's catalog pins, derived from `K`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CatalogKey([u8; CATALOG_KEY_LEN]);

impl CatalogKey {
    /// The catalog key of backups under `key`.
    pub fn of(key: &BackupKey) -> Self {
        let pair = signer(key);
        let mut out = [0u8; CATALOG_KEY_LEN];
        out.copy_from_slice(pair.public_key().as_ref());
        Self(out)
    }

    /// Any 32 bytes: a key that is no Ed25519 point simply verifies nothing.
    pub fn from_bytes(bytes: [u8; CATALOG_KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; CATALOG_KEY_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for CatalogKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Public, but it tests guesses of K offline; K is 256 random bits, still: not in logs.
        f.write_str("CatalogKey(..)")
    }
}

/// A signed catalog position (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct CatalogPin {
    sequence: u64,
    body: [u8; CATALOG_PIN_BODY_LEN],
    signature: [u8; SIGNATURE_LEN],
}

impl core::fmt::Debug for CatalogPin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CatalogPin")
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl CatalogPin {
    /// Signs `sequence` and `body` for `account` with the catalog key of `key`.
    pub fn sign(
        key: &BackupKey,
        account: &AccountId,
        sequence: u64,
        body: [u8; CATALOG_PIN_BODY_LEN],
    ) -> Self {
        let signature = signer(key).sign(&signed_message(account, sequence, &body));
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(signature.as_ref());
        Self {
            sequence,
            body,
            signature: sig,
        }
    }

    /// Whether `key` signed this pin for `account`.
    pub fn verify(&self, key: &CatalogKey, account: &AccountId) -> bool {
        UnparsedPublicKey::new(&ED25519, key.as_bytes())
            .verify(
                &signed_message(account, self.sequence, &self.body),
                &self.signature,
            )
            .is_ok()
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn body(&self) -> &[u8; CATALOG_PIN_BODY_LEN] {
        &self.body
    }

    pub fn encode(&self) -> [u8; CATALOG_PIN_LEN] {
        let mut out = [0u8; CATALOG_PIN_LEN];
        out[..8].copy_from_slice(&self.sequence.to_be_bytes());
        out[8..8 + CATALOG_PIN_BODY_LEN].copy_from_slice(&self.body);
        out[8 + CATALOG_PIN_BODY_LEN..].copy_from_slice(&self.signature);
        out
    }

    /// Exactly [`CATALOG_PIN_LEN`] bytes; the signature is checked by [`Self::verify`].
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != CATALOG_PIN_LEN {
            return None;
        }
        let (seq, rest) = bytes.split_at(8);
        let (body, sig) = rest.split_at(CATALOG_PIN_BODY_LEN);
        Some(Self {
            sequence: u64::from_be_bytes(seq.try_into().ok()?),
            body: body.try_into().ok()?,
            signature: sig.try_into().ok()?,
        })
    }
}

fn signer(key: &BackupKey) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(key.catalog_pin_seed().expose())
        .expect("any 32-byte seed is an Ed25519 key")
}

fn signed_message(account: &AccountId, sequence: u64, body: &[u8]) -> Vec<u8> {
    let account = account.as_bytes();
    let mut m = Vec::with_capacity(labels::VAULT_CATALOG_PIN.len() + 1 + account.len() + 8 + 64);
    m.extend_from_slice(labels::VAULT_CATALOG_PIN);
    m.push(account.len() as u8); // at most MAX_ACCOUNT_LEN (64)
    m.extend_from_slice(account);
    m.extend_from_slice(&sequence.to_be_bytes());
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn a_pin_verifies_only_for_its_key_account_and_content() {
        let k = BackupKey::generate(&mut OsRng);
        let alice = AccountId::new(b"alice").unwrap();
        let pin = CatalogPin::sign(&k, &alice, 7, [3; CATALOG_PIN_BODY_LEN]);
        let key = CatalogKey::of(&k);
        assert!(pin.verify(&key, &alice));
        assert_eq!(CatalogPin::decode(&pin.encode()).unwrap(), pin);

        let other = CatalogKey::of(&BackupKey::generate(&mut OsRng));
        assert!(!pin.verify(&other, &alice), "another K's key");
        assert!(!pin.verify(&key, &AccountId::new(b"alicf").unwrap()));
        for at in [0, 7, 8, 71, 72, CATALOG_PIN_LEN - 1] {
            let mut bytes = pin.encode();
            bytes[at] ^= 1;
            let altered = CatalogPin::decode(&bytes).unwrap();
            assert!(!altered.verify(&key, &alice), "byte {at} altered");
        }
        assert!(CatalogPin::decode(&pin.encode()[1..]).is_none());
        assert!(CatalogPin::decode(&[pin.encode().as_slice(), &[0]].concat()).is_none());
    }

    /// The label and the HKDF derivation are fixed: a device and a vault built apart agree.
    #[test]
    fn the_catalog_key_is_derived_from_k_alone() {
        let k = BackupKey::from_bytes([9; 32]);
        assert_eq!(CatalogKey::of(&k), CatalogKey::of(&k.clone()));
        assert_ne!(
            CatalogKey::of(&k),
            CatalogKey::of(&BackupKey::from_bytes([8; 32]))
        );
    }
}
