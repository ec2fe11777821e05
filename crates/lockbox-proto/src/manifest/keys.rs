//! The fleet's and the witness's Ed25519 keys. One generic pair of types, instantiated once per
//! role: the role fixes the signature label and the errors, and a fleet key can never stand where
//! a witness key is expected (they are different types).

use super::ManifestError;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use core::marker::PhantomData;
use lockbox_crypto::labels;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// Length of a seed (secret key) and of a public key.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

mod sealed {
    pub trait Sealed {}
}

/// Who signs: the fleet operator, or the independent witness.
pub trait Role: sealed::Sealed + Copy + Eq + core::fmt::Debug {
    #[doc(hidden)]
    const NAME: &'static str;
    #[doc(hidden)]
    const LABEL: &'static [u8];
    #[doc(hidden)]
    fn missing() -> ManifestError;
    #[doc(hidden)]
    fn unknown_key() -> ManifestError;
    #[doc(hidden)]
    fn bad_signature() -> ManifestError;
}

/// The fleet operator's role: signs every manifest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FleetRole {}
/// The witness's role: countersigns a manifest only if it extends the witness's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WitnessRole {}

impl sealed::Sealed for FleetRole {}
impl sealed::Sealed for WitnessRole {}

impl Role for FleetRole {
    const NAME: &'static str = "Fleet";
    const LABEL: &'static [u8] = labels::FLEET_MANIFEST_FLEET;
    fn missing() -> ManifestError {
        ManifestError::Unsigned
    }
    fn unknown_key() -> ManifestError {
        ManifestError::UnknownFleetKey
    }
    fn bad_signature() -> ManifestError {
        ManifestError::BadFleetSignature
    }
}

impl Role for WitnessRole {
    const NAME: &'static str = "Witness";
    const LABEL: &'static [u8] = labels::FLEET_MANIFEST_WITNESS;
    fn missing() -> ManifestError {
        ManifestError::MissingWitness
    }
    fn unknown_key() -> ManifestError {
        ManifestError::UnknownWitnessKey
    }
    fn bad_signature() -> ManifestError {
        ManifestError::BadWitnessSignature
    }
}

/// The fleet operator's signing key.
pub type FleetKey = SigningKey<FleetRole>;
/// The witness's signing key.
pub type WitnessKey = SigningKey<WitnessRole>;
/// The fleet public key a device pins.
pub type FleetPublicKey = PublicKey<FleetRole>;
/// The witness public key a device pins.
pub type WitnessPublicKey = PublicKey<WitnessRole>;

/// An Ed25519 signing key for one role: the 32-byte seed (zeroized on drop, redacted in Debug).
pub struct SigningKey<R: Role> {
    seed: Zeroizing<[u8; KEY_LEN]>,
    public: PublicKey<R>,
}

/// An Ed25519 public key for one role (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey<R: Role> {
    bytes: [u8; KEY_LEN],
    role: PhantomData<R>,
}

impl<R: Role> SigningKey<R> {
    /// A fresh key from the OS RNG.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(seed.as_mut());
        Self::from_seed(seed.as_ref()).expect("a 32-byte seed is a valid Ed25519 key")
    }

    /// From the 32-byte seed of [`Self::seed_bytes`] (a key file).
    pub fn from_seed(seed: &[u8]) -> Result<Self, ManifestError> {
        let seed: [u8; KEY_LEN] = seed
            .try_into()
            .map_err(|_| ManifestError::BadKey("a signing key seed must be 32 bytes"))?;
        let seed = Zeroizing::new(seed);
        let public = PublicKey::from_bytes(keypair(&seed)?.public_key().as_ref())?;
        Ok(Self { seed, public })
    }

    /// The seed, for a 0600 key file. Never log it.
    pub fn seed_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        self.seed.clone()
    }

    pub fn public_key(&self) -> PublicKey<R> {
        self.public
    }

    /// Signs `LABEL ‖ body` for this role.
    pub(crate) fn sign(&self, body: &[u8]) -> [u8; SIGNATURE_LEN] {
        let pair = keypair(&self.seed).expect("the seed was accepted when the key was made");
        let sig = pair.sign(&message::<R>(body));
        sig.as_ref()
            .try_into()
            .expect("an Ed25519 signature is 64 bytes")
    }
}

fn keypair(seed: &[u8; KEY_LEN]) -> Result<Ed25519KeyPair, ManifestError> {
    Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| ManifestError::BadKey("not an Ed25519 seed"))
}

fn message<R: Role>(body: &[u8]) -> Vec<u8> {
    [R::LABEL, body].concat()
}

impl<R: Role> core::fmt::Debug for SigningKey<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{}Key {{ public: {}, seed: [REDACTED] }}",
            R::NAME,
            self.public
        )
    }
}

impl<R: Role> PublicKey<R> {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let bytes = bytes
            .try_into()
            .map_err(|_| ManifestError::BadKey("a public key must be 32 bytes"))?;
        Ok(Self {
            bytes,
            role: PhantomData,
        })
    }

    /// From the hex form an operator writes in a config file or compiles into an app.
    pub fn from_hex(text: &str) -> Result<Self, ManifestError> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| ManifestError::BadKey("a public key must be hex"))?;
        Self::from_bytes(&bytes)
    }

    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.bytes
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// Checks one signature field pair of a signed manifest against this (pinned) key: present,
    /// made by this key, valid over `LABEL ‖ body`. Cheapest check first.
    pub(crate) fn check(
        &self,
        key_field: &[u8],
        signature: &[u8],
        body: &[u8],
    ) -> Result<(), ManifestError> {
        if signature.is_empty() {
            return Err(R::missing());
        }
        if key_field != self.bytes {
            return Err(R::unknown_key());
        }
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(&message::<R>(body), signature)
            .map_err(|_| R::bad_signature())
    }
}

impl<R: Role> core::fmt::Display for PublicKey<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<R: Role> core::fmt::Debug for PublicKey<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}PublicKey({})", R::NAME, self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_round_trip_and_debug_redacts() {
        let key = FleetKey::generate();
        let again = FleetKey::from_seed(key.seed_bytes().as_ref()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let shown = format!("{key:?}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(
            !shown.contains(&hex::encode(key.seed_bytes().as_ref())),
            "{shown}"
        );
        assert_ne!(FleetKey::generate().public_key(), key.public_key());
    }

    #[test]
    fn public_keys_round_trip_through_hex() {
        let public = WitnessKey::generate().public_key();
        assert_eq!(
            WitnessPublicKey::from_hex(&public.to_hex()).unwrap(),
            public
        );
        assert_eq!(
            WitnessPublicKey::from_hex("abcd").unwrap_err(),
            ManifestError::BadKey("a public key must be 32 bytes")
        );
        assert_eq!(
            FleetKey::from_seed(&[0; 31]).unwrap_err(),
            ManifestError::BadKey("a signing key seed must be 32 bytes")
        );
    }

    #[test]
    fn a_fleet_signature_is_not_a_witness_signature() {
        let seed = [9u8; 32];
        let fleet = FleetKey::from_seed(&seed).unwrap();
        let witness = WitnessKey::from_seed(&seed).unwrap();
        let body = b"body";
        let sig = fleet.sign(body);
        let key = fleet.public_key().to_bytes();
        assert_eq!(fleet.public_key().check(&key, &sig, body), Ok(()));
        assert_eq!(
            witness.public_key().check(&key, &sig, body),
            Err(ManifestError::BadWitnessSignature)
        );
    }
}
