//! [`Pkcs11Sealer`]: AES-256-GCM inside a PKCS#11 token under non-extractable keys.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::blob::{self, TAG_LEN};
use crate::{KeyId, SealError, Sealer};

/// Environment variable read for the user PIN when the config carries none.
pub const PIN_ENV_VAR: &str = "LOCKBOX_HSM_PIN";
/// Default prefix of the sealing keys' `CKA_LABEL` (the key id follows in decimal).
pub const DEFAULT_KEY_LABEL_PREFIX: &str = "lockbox-seal-";
/// Idle sessions kept for reuse; more may be open while many threads work at once.
const MAX_POOLED_SESSIONS: usize = 16;
const GCM_TAG_BITS: u64 = 128;
const AES_256_KEY_LEN: u64 = 32;

/// A token user PIN. Zeroized on drop; `Debug` prints `[REDACTED]`.
#[derive(Clone)]
pub struct HsmPin(Zeroizing<String>);

impl HsmPin {
    /// Wraps a PIN.
    pub fn new(pin: impl Into<String>) -> Self {
        Self(Zeroizing::new(pin.into()))
    }

    fn auth_pin(&self) -> AuthPin {
        AuthPin::new(self.0.as_str().to_owned())
    }
}

impl fmt::Debug for HsmPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HsmPin([REDACTED])")
    }
}

/// Where the token is and how to log in to it.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module_path: PathBuf,
    /// `CKA_LABEL` of the token (as set by `softhsm2-util --init-token --label`).
    pub token_label: String,
    /// User PIN; when `None`, read from [`PIN_ENV_VAR`] at open.
    pub pin: Option<HsmPin>,
    /// Keys are labelled `key_label_prefix` followed by the decimal key id.
    pub key_label_prefix: String,
}

impl Pkcs11Config {
    /// A config with no PIN (taken from [`PIN_ENV_VAR`]) and [`DEFAULT_KEY_LABEL_PREFIX`].
    pub fn new(module_path: impl Into<PathBuf>, token_label: impl Into<String>) -> Self {
        Self {
            module_path: module_path.into(),
            token_label: token_label.into(),
            pin: None,
            key_label_prefix: DEFAULT_KEY_LABEL_PREFIX.to_owned(),
        }
    }

    /// Sets the user PIN.
    #[must_use]
    pub fn with_pin(mut self, pin: HsmPin) -> Self {
        self.pin = Some(pin);
        self
    }

    pub(crate) fn resolve_pin(&self) -> Result<HsmPin, SealError> {
        match &self.pin {
            Some(pin) => Ok(pin.clone()),
            None => std::env::var(PIN_ENV_VAR)
                .map(HsmPin::new)
                .map_err(|_| SealError::MissingPin { var: PIN_ENV_VAR }),
        }
    }
}

pub(crate) fn ck(context: &'static str) -> impl Fn(CkError) -> SealError {
    move |e| SealError::Pkcs11(format!("{context}: {e}"))
}

/// The process-wide, initialized PKCS#11 context for `module_path`.
///
/// `C_Initialize` runs once per module per process; every sealer (and any test that wants
/// to inspect the token) must go through here, because a second context on the same module
/// would finalize the library for everyone when dropped.
pub fn shared_context(module_path: &Path) -> Result<Pkcs11, SealError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let canonical = std::fs::canonicalize(module_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SealError::ModuleNotFound {
            path: module_path.to_path_buf(),
        },
        _ => SealError::Pkcs11(format!(
            "cannot access module {}: {e}",
            module_path.display()
        )),
    })?;
    let mut contexts = CONTEXTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = contexts.get(&canonical) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&canonical).map_err(|e| {
        SealError::Pkcs11(format!("cannot load module {}: {e}", canonical.display()))
    })?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ck("C_Initialize")(e)),
    }
    contexts.insert(canonical, ctx.clone());
    Ok(ctx)
}

/// Finds the slot holding the token labelled `label`.
pub(crate) fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, SealError> {
    for slot in ctx.get_slots_with_token().map_err(ck("C_GetSlotList"))? {
        let info = ctx.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        if info.label() == label {
            return Ok(slot);
        }
    }
    Err(SealError::TokenNotFound {
        label: label.to_owned(),
    })
}

pub(crate) fn login(session: &Session, pin: &HsmPin) -> Result<(), SealError> {
    match session.login(UserType::User, Some(&pin.auth_pin())) {
        // Login state is per application and token: another sealer in this process is in.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            Err(SealError::WrongPin)
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(SealError::Pkcs11(
            "the token's user PIN is locked".to_owned(),
        )),
        Err(e) => Err(ck("C_Login")(e)),
    }
}

/// The HSM sealer. Safe to share between threads: each operation checks a session out of a
/// small pool, so no PKCS#11 session is ever used by two threads at once.
///
/// While a sealer is alive it keeps one session open, which keeps the token logged in and
/// key handles valid. PKCS#11 login state is shared by the whole process: a second sealer on
/// the same token in the same process does not re-check the PIN while the first is open.
pub struct Pkcs11Sealer {
    ctx: Pkcs11,
    slot: Slot,
    module_path: PathBuf,
    token_label: String,
    prefix: String,
    keys: RwLock<KeyHandles>,
    pool: Mutex<Vec<Session>>,
    /// Held only to keep the login alive; also serializes rotations.
    anchor: Mutex<Session>,
}

struct KeyHandles {
    current: KeyId,
    handles: BTreeMap<KeyId, ObjectHandle>,
}

impl KeyHandles {
    fn get(&self, id: KeyId) -> Result<ObjectHandle, SealError> {
        self.handles
            .get(&id)
            .copied()
            .ok_or(SealError::UnknownKey(id))
    }
}

impl Pkcs11Sealer {
    /// Loads the module, finds the token by label, logs in, and loads the sealing keys,
    /// generating key 1 inside the token if none exists yet.
    pub fn open(config: &Pkcs11Config) -> Result<Self, SealError> {
        let pin = config.resolve_pin()?;
        let ctx = shared_context(&config.module_path)?;
        let slot = find_slot(&ctx, &config.token_label)?;
        let anchor = ctx.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
        login(&anchor, &pin)?;
        let mut handles = load_keys(&anchor, &config.key_label_prefix)?;
        if handles.is_empty() {
            let id = KeyId(1);
            handles.insert(id, generate_key(&anchor, &config.key_label_prefix, id)?);
        }
        let current = *handles.keys().next_back().unwrap_or(&KeyId(1));
        Ok(Self {
            ctx,
            slot,
            module_path: config.module_path.clone(),
            token_label: config.token_label.clone(),
            prefix: config.key_label_prefix.clone(),
            keys: RwLock::new(KeyHandles { current, handles }),
            pool: Mutex::new(Vec::new()),
            anchor: Mutex::new(anchor),
        })
    }

    /// The `CKA_LABEL` of key `id` in the token.
    pub fn key_label(&self, id: KeyId) -> String {
        key_label(&self.prefix, id)
    }

    fn keys(&self) -> RwLockReadGuard<'_, KeyHandles> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on a pooled session. A session whose operation failed for a reason other
    /// than bad ciphertext is closed rather than reused.
    fn with_session<T>(
        &self,
        op: impl FnOnce(&Session) -> Result<T, CkError>,
    ) -> Result<T, CkError> {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let session = match pooled {
            Some(s) => s,
            None => self.ctx.open_ro_session(self.slot)?,
        };
        let result = op(&session);
        let reusable = match &result {
            Ok(_) => true,
            Err(e) => is_bad_ciphertext(e),
        };
        if reusable {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < MAX_POOLED_SESSIONS {
                pool.push(session);
            }
        }
        result
    }
}

impl Pkcs11Sealer {
    fn encrypt(
        &self,
        handle: ObjectHandle,
        mut nonce: [u8; blob::NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CkError> {
        self.with_session(|s| {
            let params = GcmParams::new(&mut nonce, aad, GCM_TAG_BITS.into())?;
            s.encrypt(&Mechanism::AesGcm(params), handle, plaintext)
        })
    }

    fn decrypt(
        &self,
        handle: ObjectHandle,
        mut nonce: [u8; blob::NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CkError> {
        self.with_session(|s| {
            let params = GcmParams::new(&mut nonce, aad, GCM_TAG_BITS.into())?;
            s.decrypt(&Mechanism::AesGcm(params), handle, ciphertext)
        })
        .map(Zeroizing::new)
    }

    /// Tokens report a GCM tag mismatch differently: the spec says `CKR_ENCRYPTED_DATA_INVALID`,
    /// SoftHSM 2.6 says `CKR_GENERAL_ERROR`. A general error counts as tampering only if the
    /// same key still seals and unseals a probe, i.e. the token itself is healthy.
    fn classify_decrypt_error(&self, handle: ObjectHandle, e: CkError) -> SealError {
        let general = matches!(e, CkError::Pkcs11(RvError::GeneralError, _));
        if is_bad_ciphertext(&e) || (general && self.key_works(handle)) {
            SealError::Tampered
        } else {
            ck("C_Decrypt")(e)
        }
    }

    fn key_works(&self, handle: ObjectHandle) -> bool {
        const PROBE: &[u8] = b"lockbox/v1/hsm-probe";
        let Ok(nonce) = blob::fresh_nonce() else {
            return false;
        };
        self.encrypt(handle, nonce, PROBE, PROBE)
            .and_then(|ct| self.decrypt(handle, nonce, PROBE, &ct))
            .is_ok_and(|pt| pt.as_slice() == PROBE)
    }
}

fn is_bad_ciphertext(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            _
        )
    )
}

fn key_label(prefix: &str, id: KeyId) -> String {
    format!("{prefix}{}", id.0)
}

/// Parses `prefix` followed by a canonical decimal key id; anything else is not ours.
fn parse_key_label(prefix: &str, label: &[u8]) -> Option<KeyId> {
    let digits = std::str::from_utf8(label).ok()?.strip_prefix(prefix)?;
    let id: u32 = digits.parse().ok()?;
    (digits.bytes().all(|b| b.is_ascii_digit()) && id.to_string() == digits).then_some(KeyId(id))
}

fn aes_key_template() -> [Attribute; 3] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
    ]
}

/// Finds our keys in the token and refuses any that could leave it.
fn load_keys(session: &Session, prefix: &str) -> Result<BTreeMap<KeyId, ObjectHandle>, SealError> {
    let mut found = BTreeMap::new();
    for handle in session
        .find_objects(&aes_key_template())
        .map_err(ck("C_FindObjects"))?
    {
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Label,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                ],
            )
            .map_err(ck("C_GetAttributeValue"))?;
        let Some(id) = attrs.iter().find_map(|a| match a {
            Attribute::Label(l) => parse_key_label(prefix, l),
            _ => None,
        }) else {
            continue;
        };
        let sensitive = attrs.contains(&Attribute::Sensitive(true));
        let extractable = !attrs.contains(&Attribute::Extractable(false));
        if !sensitive || extractable {
            return Err(SealError::InsecureKey {
                label: key_label(prefix, id),
            });
        }
        if found.insert(id, handle).is_some() {
            return Err(SealError::Pkcs11(format!(
                "two keys in the token are labelled {:?}",
                key_label(prefix, id)
            )));
        }
    }
    Ok(found)
}

/// Generates AES-256 key `id` inside the token: persistent, private, sensitive, never
/// extractable, usable only to encrypt and decrypt.
fn generate_key(session: &Session, prefix: &str, id: KeyId) -> Result<ObjectHandle, SealError> {
    let template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::ValueLen(AES_256_KEY_LEN.into()),
        Attribute::Label(key_label(prefix, id).into_bytes()),
        Attribute::Id(id.0.to_be_bytes().to_vec()),
    ];
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(ck("C_GenerateKey"))
}

impl Sealer for Pkcs11Sealer {
    fn current_key_id(&self) -> KeyId {
        self.keys().current
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let (key_id, handle) = {
            let keys = self.keys();
            (keys.current, keys.get(keys.current)?)
        };
        let nonce = blob::fresh_nonce()?;
        let header = blob::header(key_id, &nonce);
        let full_aad = blob::full_aad(key_id, aad);
        let body = self
            .encrypt(handle, nonce, &full_aad, plaintext)
            .map_err(ck("C_Encrypt"))?;
        if body.len() != plaintext.len() + TAG_LEN {
            return Err(SealError::Pkcs11(
                "token returned AES-GCM output of unexpected length".to_owned(),
            ));
        }
        let mut out = Vec::with_capacity(header.len() + body.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let parsed = blob::parse(sealed)?;
        let handle = self.keys().get(parsed.key_id)?;
        let full_aad = blob::full_aad(parsed.key_id, aad);
        self.decrypt(handle, parsed.nonce, &full_aad, parsed.ciphertext)
            .map_err(|e| self.classify_decrypt_error(handle, e))
    }

    fn rotate(&self) -> Result<KeyId, SealError> {
        let anchor = self.anchor.lock().unwrap_or_else(PoisonError::into_inner);
        // Re-read the token so a key made by another process is not generated twice.
        let mut handles = load_keys(&anchor, &self.prefix)?;
        let last = handles.keys().next_back().copied().unwrap_or(KeyId(0));
        let next = last.next()?;
        handles.insert(next, generate_key(&anchor, &self.prefix, next)?);
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = KeyHandles {
            current: next,
            handles,
        };
        Ok(next)
    }
}

impl fmt::Debug for Pkcs11Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Sealer")
            .field("module_path", &self.module_path)
            .field("token_label", &self.token_label)
            .field("slot", &self.slot)
            .field("key_label_prefix", &self.prefix)
            .field("current_key_id", &self.current_key_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_labels_parse_only_canonical_ids_under_our_prefix() {
        let p = DEFAULT_KEY_LABEL_PREFIX;
        assert_eq!(parse_key_label(p, b"lockbox-seal-7"), Some(KeyId(7)));
        assert_eq!(
            parse_key_label(p, key_label(p, KeyId(42)).as_bytes()),
            Some(KeyId(42))
        );
        for bad in [
            "lockbox-seal-",
            "lockbox-seal-07",
            "lockbox-seal-+7",
            "other-7",
            "lockbox-seal-7x",
        ] {
            assert_eq!(parse_key_label(p, bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn pin_debug_is_redacted() {
        let dbg = format!(
            "{:?}",
            Pkcs11Config::new("/m", "t").with_pin(HsmPin::new("123456"))
        );
        assert!(!dbg.contains("123456"), "{dbg}");
        assert!(dbg.contains("REDACTED"));
    }
}
