//! HPKE envelopes between a client and one vault partition (DESIGN.md §4).
//!
//! A request is sealed with HPKE base mode (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! AES-256-GCM) to the partition's public key, with `info = ENVELOPE ‖ partition ‖ account`
//! so that a relay cannot move it to another partition or account. The response is sealed with
//! AES-256-GCM under a 32-byte key exported from the same HPKE context (exporter context
//! `RESPONSE`), so only the client that made the request can read the answer and the relay
//! cannot swap answers between requests. The response nonce is drawn at random by the vault for
//! every response and sent in front of the ciphertext: a relay that delivers one request twice
//! gets two responses under the same exported key, and they must never share a nonce (GCM nonce
//! reuse would reveal their XOR and let the relay forge replies). The vault also refuses such
//! replays ([`RESPONSE_NONCE_LEN`] bytes of nonce make accidental reuse negligible regardless).
//! Both steps are types consumed by use.

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

/// Length of the random nonce in front of every sealed response.
pub const RESPONSE_NONCE_LEN: usize = 12;
/// Bytes a sealed response adds to the response: nonce and GCM tag.
pub const RESPONSE_OVERHEAD: usize = RESPONSE_NONCE_LEN + 16;

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
    /// Seals the one response to this request under a fresh random nonce, sent in front of the
    /// ciphertext.
    pub fn seal<R: RngCore + CryptoRng>(self, response: &[u8], rng: &mut R) -> Vec<u8> {
        let mut nonce = [0u8; RESPONSE_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut buf = Vec::with_capacity(response.len() + RESPONSE_OVERHEAD);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(response);
        let tag = response_key(&self.key)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut buf[RESPONSE_NONCE_LEN..],
            )
            .expect("AES-GCM seal of a bounded message cannot fail");
        buf.extend_from_slice(tag.as_ref());
        buf
    }
}

impl AwaitingResponse {
    /// Opens the response to this request; anything else fails.
    pub fn open(self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        if sealed.len() < RESPONSE_OVERHEAD {
            return Err(EnvelopeError::Response);
        }
        let (nonce, ciphertext) = sealed.split_at(RESPONSE_NONCE_LEN);
        let nonce: [u8; RESPONSE_NONCE_LEN] = nonce.try_into().expect("split at nonce length");
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let n = response_key(&self.key)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
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
        let resp = responder.seal(b"hello client", &mut OsRng);
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
        let answer_to_two = r2.seal(b"for two", &mut OsRng);
        assert_eq!(
            w1.open(&answer_to_two).unwrap_err(),
            EnvelopeError::Response
        );
    }

    /// A relay that delivers one request twice gets two responses under one exported key: they
    /// must never share a nonce, or their XOR (and GCM forgeries) would be the relay's.
    #[test]
    fn a_request_opened_twice_never_seals_under_one_nonce() {
        let (sk, pk) = keys();
        let (sealed, waiting) = seal_request(&pk, 1, b"a", b"ke1", &mut OsRng).unwrap();
        let (_, first) = open_request(&sk, 1, b"a", &sealed).unwrap();
        let (_, second) = open_request(&sk, 1, b"a", &sealed).unwrap();
        let r1 = first.seal(b"session 0123456789abcdef", &mut OsRng);
        let r2 = second.seal(b"session fedcba9876543210", &mut OsRng);
        assert_ne!(r1[..RESPONSE_NONCE_LEN], r2[..RESPONSE_NONCE_LEN]);
        let xor: Vec<u8> = r1[RESPONSE_NONCE_LEN..]
            .iter()
            .zip(&r2[RESPONSE_NONCE_LEN..])
            .map(|(a, b)| a ^ b)
            .collect();
        let plain_xor: Vec<u8> = b"session 0123456789abcdef"
            .iter()
            .zip(b"session fedcba9876543210")
            .map(|(a, b)| a ^ b)
            .collect();
        assert_ne!(xor[..plain_xor.len()], plain_xor[..]);
        assert_eq!(
            waiting.open(&r1).unwrap().as_slice(),
            b"session 0123456789abcdef"
        );
    }

    #[test]
    fn short_or_tampered_responses_do_not_open() {
        let (sk, pk) = keys();
        let (sealed, _) = seal_request(&pk, 1, b"a", b"x", &mut OsRng).unwrap();
        let (_, responder) = open_request(&sk, 1, b"a", &sealed).unwrap();
        let resp = responder.seal(b"answer", &mut OsRng);
        for cut in 0..resp.len() {
            let (_, w) = seal_request(&pk, 1, b"a", b"x", &mut OsRng).unwrap();
            assert!(w.open(&resp[..cut]).is_err(), "cut {cut}");
        }
        let (s2, w2) = seal_request(&pk, 1, b"a", b"x", &mut OsRng).unwrap();
        let (_, r2) = open_request(&sk, 1, b"a", &s2).unwrap();
        let mut resp = r2.seal(b"answer", &mut OsRng);
        resp[0] ^= 1; // the nonce is authenticated through the tag
        assert_eq!(w2.open(&resp).unwrap_err(), EnvelopeError::Response);
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
