//! [`SoftwareSealer`]: AES-256-GCM in process, keys in a 0600 key file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::blob::{self, TAG_LEN};
use crate::keyfile::{self, KEY_LEN, KeyBytes};
use crate::{KeyId, SealError, Sealer};

/// The embedded sealer: keys live in a key file readable only by its owner.
///
/// One process should own a key file at a time: rotation rewrites the whole file from this
/// process's view of it.
pub struct SoftwareSealer {
    path: PathBuf,
    ring: RwLock<KeyRing>,
    rotation: Mutex<()>,
}

struct KeyRing {
    current: KeyId,
    raw: Vec<(KeyId, KeyBytes)>,
    aead: BTreeMap<KeyId, LessSafeKey>,
}

impl SoftwareSealer {
    /// Creates a new key file at `path` (mode 0600) holding one fresh key, id 1.
    /// Fails if the file already exists.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, SealError> {
        let path = path.as_ref();
        let raw = vec![(KeyId(1), random_key()?)];
        keyfile::write(path, &raw, false)?;
        Self::from_raw(path, raw)
    }

    /// Opens an existing key file; refuses it if group or others have any access to it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SealError> {
        let path = path.as_ref();
        let raw = keyfile::read(path)?;
        Self::from_raw(path, raw)
    }

    /// Path of the key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn from_raw(path: &Path, raw: Vec<(KeyId, KeyBytes)>) -> Result<Self, SealError> {
        Ok(Self {
            path: path.to_path_buf(),
            ring: RwLock::new(KeyRing::new(raw)?),
            rotation: Mutex::new(()),
        })
    }
}

impl KeyRing {
    fn new(raw: Vec<(KeyId, KeyBytes)>) -> Result<Self, SealError> {
        let aead = raw
            .iter()
            .map(|(id, key)| {
                let unbound = UnboundKey::new(&AES_256_GCM, key.as_ref())
                    .map_err(|_| SealError::Crypto("AES-256-GCM key setup failed"))?;
                Ok((*id, LessSafeKey::new(unbound)))
            })
            .collect::<Result<BTreeMap<_, _>, SealError>>()?;
        let current = *aead
            .keys()
            .next_back()
            .ok_or(SealError::Crypto("empty key ring"))?;
        Ok(Self { current, raw, aead })
    }
}

fn random_key() -> Result<KeyBytes, SealError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    blob::fill_random(key.as_mut())?;
    Ok(key)
}

impl Sealer for SoftwareSealer {
    fn current_key_id(&self) -> KeyId {
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        ring.seal(aad, plaintext)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        ring.unseal(aad, sealed)
    }

    fn rotate(&self) -> Result<KeyId, SealError> {
        let _rotating = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let mut raw: Vec<(KeyId, KeyBytes)> = {
            let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
            ring.raw.iter().map(|(id, k)| (*id, k.clone())).collect()
        };
        let last = raw.last().map_or(KeyId(0), |(id, _)| *id);
        let next = last.next()?;
        raw.push((next, random_key()?));
        keyfile::write(&self.path, &raw, true)?;
        let ring = KeyRing::new(raw)?;
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
        Ok(next)
    }
}

impl KeyRing {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let key_id = self.current;
        let key = self
            .aead
            .get(&key_id)
            .ok_or(SealError::UnknownKey(key_id))?;
        let nonce = blob::fresh_nonce()?;
        // Sized up front so the plaintext is never left behind in a reallocated buffer.
        let mut out = Vec::with_capacity(blob::HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&blob::header(key_id, &nonce));
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(blob::full_aad(key_id, aad)),
                &mut out[blob::HEADER_LEN..],
            )
            .map_err(|_| SealError::Crypto("AES-256-GCM seal failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let parsed = blob::parse(sealed)?;
        let key = self
            .aead
            .get(&parsed.key_id)
            .ok_or(SealError::UnknownKey(parsed.key_id))?;
        let mut buf = Zeroizing::new(parsed.ciphertext.to_vec());
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(parsed.nonce),
                Aad::from(blob::full_aad(parsed.key_id, aad)),
                &mut buf,
            )
            .map_err(|_| SealError::Tampered)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// A sealer over one key the caller holds in memory (key id 1, the same blob format): for
/// keys that are not the node's own, such as a replicated partition's record key, which every
/// replica must be able to open. It cannot rotate; a new key is a new `MemorySealer`.
pub struct MemorySealer {
    ring: KeyRing,
}

impl MemorySealer {
    pub fn new(key: Zeroizing<[u8; KEY_LEN]>) -> Result<Self, SealError> {
        Ok(Self {
            ring: KeyRing::new(vec![(KeyId(1), key)])?,
        })
    }
}

impl Sealer for MemorySealer {
    fn current_key_id(&self) -> KeyId {
        self.ring.current
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.ring.seal(aad, plaintext)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.ring.unseal(aad, sealed)
    }

    fn rotate(&self) -> Result<KeyId, SealError> {
        Err(SealError::Crypto("a memory sealer's key is fixed"))
    }
}

impl fmt::Debug for MemorySealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemorySealer([REDACTED])")
    }
}

impl fmt::Debug for SoftwareSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("SoftwareSealer")
            .field("path", &self.path)
            .field("current_key_id", &ring.current)
            .field("keys", &ring.raw.len())
            .finish_non_exhaustive()
    }
}
