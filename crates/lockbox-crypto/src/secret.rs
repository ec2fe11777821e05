use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// 32 bytes of key material: zeroized on drop, redacted in `Debug`, compared in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; 32]);

impl Secret32 {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes. Callers must not copy them into memory that outlives the secret.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Secret32([REDACTED])")
    }
}

impl PartialEq for Secret32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for Secret32 {}

/// HKDF-SHA256 extract-then-expand into `out`. `out` may be at most 255 * 32 bytes, which every
/// caller in lockbox satisfies by construction (all outputs are ≤ 32 bytes).
pub fn hkdf_expand(ikm: &[u8], salt: Option<&[u8]>, info: &[u8], out: &mut [u8]) {
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, out)
        .expect("HKDF output length is at most 32 bytes");
}

/// HKDF-SHA256 into a fresh 32-byte secret.
pub(crate) fn derive32(ikm: &[u8], salt: Option<&[u8]>, info: &[u8]) -> Secret32 {
    let mut out = [0u8; 32];
    hkdf_expand(ikm, salt, info, &mut out);
    let s = Secret32(out);
    out.zeroize();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret32::new([0xAB; 32]);
        let d = format!("{s:?}");
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        assert!(d.contains("REDACTED"));
    }

    #[test]
    fn equality_compares_all_bytes() {
        let a = Secret32::new([1; 32]);
        let mut b = [1; 32];
        b[31] = 2;
        assert_ne!(a, Secret32::new(b));
        assert_eq!(a, Secret32::new([1; 32]));
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let mut okm = [0u8; 42];
        hkdf_expand(&ikm, Some(&salt), &info, &mut okm);
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }
}
