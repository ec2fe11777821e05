//! Byte-level helpers shared by every object format: a bounds-checked cursor, AES-256-GCM and
//! HMAC-SHA256. Big-endian integers everywhere.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hmac::{Hmac, Mac};
use lockbox_crypto::Secret32;
use sha2::Sha256;

/// Bytes of an AES-256-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;

/// Reads fields off a byte slice; every read past the end fails.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

/// The input ended before a field.
#[derive(Debug)]
pub(crate) struct Short;

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if self.bytes.len() < n {
            return Err(Short);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn aead(key: &Secret32) -> LessSafeKey {
    let unbound = UnboundKey::new(&AES_256_GCM, key.expose()).expect("32-byte AES-256 key");
    LessSafeKey::new(unbound)
}

/// Appends AES-256-GCM(`key`, `nonce`, `aad`) of `data`, tag included, to `out`. Callers
/// guarantee that (key, nonce) is never used twice: every key here belongs to one object.
pub(crate) fn seal_into(
    key: &Secret32,
    nonce: [u8; 12],
    aad: &[u8],
    data: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(data);
    let tag = aead(key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[start..],
        )
        .expect("AES-GCM seals any length we produce");
    out.extend_from_slice(tag.as_ref());
}

/// Opens what [`seal_into`] made; `None` if it does not authenticate.
pub(crate) fn open(key: &Secret32, nonce: [u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let mut buf = sealed.to_vec();
    let plain = aead(key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .ok()?;
    let len = plain.len();
    buf.truncate(len);
    Some(buf)
}

pub(crate) fn mac(key: &Secret32, parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a MAC over `parts`.
pub(crate) fn verify_mac(key: &Secret32, parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(tag).is_ok()
}

/// A nonce of a kind byte, three zero bytes and a 64-bit counter or offset.
pub(crate) fn nonce(kind: u8, n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[0] = kind;
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}
