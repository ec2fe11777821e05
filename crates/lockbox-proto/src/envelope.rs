//! HPKE envelopes between a client and one vault partition (DESIGN.md §4).
//!
//! A request is sealed with HPKE base mode (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! AES-256-GCM) to the partition's public key, with `info = ENVELOPE ‖ partition ‖ account`
//! so that a relay cannot move it to another partition or account. The response is sealed with
//! AES-256-GCM under a 32-byte key exported from the same HPKE context (exporter context
//! `RESPONSE`), used exactly once, so only the client that made the request can read the answer
//! and the relay cannot swap answers between requests. Both steps are types consumed by use.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use lockbox_crypto::labels;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

type Kem = X25519HkdfSha256;
type KemPrivate = <Kem as hpke::Kem>::PrivateKey;
type KemPublic = <Kem as hpke::Kem>::PublicKey;
type KemEnc = <Kem as hpke::Kem>::EncappedKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("envelope does not open: wrong partition key, account, partition, or tampered")]
    Open,
    #[error("response does not open: tampered, or not the answer to this request")]
    Response,
}

/// A partition's HPKE public key (32 bytes, X25519).
#[derive(Clone, PartialEq, Eq)]
pub struct PartitionPublicKey(KemPublic);

/// A partition's HPKE private key. Zeroized on drop by `hpke`; redacted in Debug.
pub struct PartitionSecretKey(KemPrivate);

impl PartitionSecretKey {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> (Self, PartitionPublicKey) {
        let (sk, pk) = Kem::gen_keypair(rng);
        (Self(sk), PartitionPublicKey(pk))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        KemPrivate::from_bytes(bytes)
            .map(Self)
            .map_err(|_| EnvelopeError::Malformed("partition secret key"))
    }

    /// The raw secret, for sealing under the HSM. Never store it in the clear.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_bytes().to_vec())
    }

    pub fn public_key(&self) -> PartitionPublicKey {
        PartitionPublicKey(Kem::sk_to_pk(&self.0))
    }
}

impl core::fmt::Debug for PartitionSecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PartitionSecretKey([REDACTED])")
    }
}

impl PartitionPublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        KemPublic::from_bytes(bytes)
            .map(Self)
            .map_err(|_| EnvelopeError::Malformed("partition public key"))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes().into()
    }
}

impl core::fmt::Debug for PartitionPublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PartitionPublicKey({})", hex_prefix(&self.to_bytes()))
    }
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

/// What a sealed request looks like on the wire (besides version, partition and account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub enc: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

fn info(partition: u32, account: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(labels::ENVELOPE.len() + 6 + account.len());
    v.extend_from_slice(labels::ENVELOPE);
    v.extend_from_slice(&partition.to_be_bytes());
    v.extend_from_slice(&(account.len() as u16).to_be_bytes());
    v.extend_from_slice(account);
    v
}

/// The client's half after sealing: it can open exactly one response.
pub struct AwaitingResponse {
    key: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for AwaitingResponse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AwaitingResponse([REDACTED])")
    }
}

/// The vault's half after opening: it can seal exactly one response.
pub struct Responder {
    key: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for Responder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Responder([REDACTED])")
    }
}

/// Client: seals `request` for `partition`, bound to `account`.
pub fn seal_request<R: RngCore + CryptoRng>(
    pk: &PartitionPublicKey,
    partition: u32,
    account: &[u8],
    request: &[u8],
    rng: &mut R,
) -> Result<(Sealed, AwaitingResponse), EnvelopeError> {
    let (enc, mut ctx) = hpke::setup_sender::<AesGcm256, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &pk.0,
        &info(partition, account),
        rng,
    )
    .map_err(|_| EnvelopeError::Malformed("partition public key"))?;
    let ciphertext = ctx
        .seal(request, b"")
        .map_err(|_| EnvelopeError::Malformed("request"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    ctx.export(labels::RESPONSE, key.as_mut())
        .map_err(|_| EnvelopeError::Malformed("export"))?;
    let sealed = Sealed {
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    };
    Ok((sealed, AwaitingResponse { key }))
}

/// Vault: opens a request sealed to `sk` for `partition` and `account`.
pub fn open_request(
    sk: &PartitionSecretKey,
    partition: u32,
    account: &[u8],
    sealed: &Sealed,
) -> Result<(Zeroizing<Vec<u8>>, Responder), EnvelopeError> {
    let enc = KemEnc::from_bytes(&sealed.enc).map_err(|_| EnvelopeError::Malformed("enc"))?;
    let mut ctx = hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(
        &OpModeR::Base,
        &sk.0,
        &enc,
        &info(partition, account),
    )
    .map_err(|_| EnvelopeError::Open)?;
    let plaintext = ctx
        .open(&sealed.ciphertext, b"")
        .map_err(|_| EnvelopeError::Open)?;
    let mut key = Zeroizing::new([0u8; 32]);
    ctx.export(labels::RESPONSE, key.as_mut())
        .map_err(|_| EnvelopeError::Malformed("export"))?;
    Ok((Zeroizing::new(plaintext), Responder { key }))
}

fn response_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key"))
}

impl Responder {
    /// Seals the one response to this request. The key is used once, so a zero nonce is safe.
    pub fn seal(self, response: &[u8]) -> Vec<u8> {
        let mut buf = response.to_vec();
        response_key(&self.key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buf,
            )
            .expect("AES-GCM seal of a bounded message cannot fail");
        buf
    }
}

impl AwaitingResponse {
    /// Opens the response to this request; anything else fails.
    pub fn open(self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let n = response_key(&self.key)
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                buf.as_mut(),
            )
            .map_err(|_| EnvelopeError::Response)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn keys() -> (PartitionSecretKey, PartitionPublicKey) {
        PartitionSecretKey::generate(&mut OsRng)
    }

    #[test]
    fn round_trip_request_and_response() {
        let (sk, pk) = keys();
        let (sealed, waiting) = seal_request(&pk, 7, b"alice", b"hello vault", &mut OsRng).unwrap();
        assert!(!sealed.ciphertext.windows(5).any(|w| w == b"hello"));
        let (req, responder) = open_request(&sk, 7, b"alice", &sealed).unwrap();
        assert_eq!(req.as_slice(), b"hello vault");
        let resp = responder.seal(b"hello client");
        assert_eq!(waiting.open(&resp).unwrap().as_slice(), b"hello client");
    }

    #[test]
    fn bound_to_partition_account_and_key() {
        let (sk, pk) = keys();
        let (other_sk, _) = keys();
        let (sealed, _) = seal_request(&pk, 7, b"alice", b"x", &mut OsRng).unwrap();
        assert_eq!(
            open_request(&sk, 8, b"alice", &sealed).unwrap_err(),
            EnvelopeError::Open
        );
        assert_eq!(
            open_request(&sk, 7, b"mallory", &sealed).unwrap_err(),
            EnvelopeError::Open
        );
        assert_eq!(
            open_request(&other_sk, 7, b"alice", &sealed).unwrap_err(),
            EnvelopeError::Open
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let (sk, pk) = keys();
        let (sealed, _) = seal_request(&pk, 1, b"a", b"request", &mut OsRng).unwrap();
        for i in 0..sealed.ciphertext.len() * 8 {
            let mut s = sealed.clone();
            s.ciphertext[i / 8] ^= 1 << (i % 8);
            assert!(open_request(&sk, 1, b"a", &s).is_err(), "bit {i}");
        }
        for i in 0..sealed.enc.len() * 8 {
            let mut s = sealed.clone();
            s.enc[i / 8] ^= 1 << (i % 8);
            assert!(open_request(&sk, 1, b"a", &s).is_err(), "enc bit {i}");
        }
    }

    #[test]
    fn responses_cannot_be_swapped_between_requests() {
        let (sk, pk) = keys();
        let (s1, w1) = seal_request(&pk, 1, b"a", b"one", &mut OsRng).unwrap();
        let (s2, _w2) = seal_request(&pk, 1, b"a", b"two", &mut OsRng).unwrap();
        let (_, r1) = open_request(&sk, 1, b"a", &s1).unwrap();
        let (_, r2) = open_request(&sk, 1, b"a", &s2).unwrap();
        let _ = r1;
        let answer_to_two = r2.seal(b"for two");
        assert_eq!(
            w1.open(&answer_to_two).unwrap_err(),
            EnvelopeError::Response
        );
    }

    #[test]
    fn keys_serialize() {
        let (sk, pk) = keys();
        let sk2 = PartitionSecretKey::from_bytes(&sk.to_bytes()).unwrap();
        assert_eq!(sk2.public_key(), pk);
        assert_eq!(PartitionPublicKey::from_bytes(&pk.to_bytes()).unwrap(), pk);
        assert!(PartitionPublicKey::from_bytes(&[1, 2, 3]).is_err());
        assert!(format!("{sk:?}").contains("REDACTED"));
    }
}
