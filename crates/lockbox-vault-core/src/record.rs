//! Per-account vault records and their strict binary encoding.
//!
//! Layout, version 2 and 3 (integers big-endian):
//! ```text
//! version u8 = 2 | account_len u8 (1..=64) | account | generation u64
//! | ring_len u8 (0..=4) | ring_len × 8-byte KE1 fingerprints (oldest first)
//! | state u8: 1 = Active, 2 = Destroyed
//! Active only: created_at_ms u64 | credential salt (32)
//!              | limit u8 (1..=100) | attempts_left u8 (<= limit) | Argon2id m,t,p (3 × u32)
//!              | OPAQUE ServerRegistration (192) | wrapped_len u8 (1..=96) | wrapped_key
//! Version 3, active only: catalog key (32) | pin u8: 0 = none, 1 = one follows | pin (136)
//! ```
//! Nothing may follow. A tombstone keeps only the account, the generation and the ring. An active
//! record with a catalog key (see [`crate::pin`]) is version 3, one without is version 2, and a
//! tombstone is version 2.
//!
//! Version 1 (no creation time, no salt: the OPRF key was derived from the bare account id) still
//! decodes, as a legacy record, and re-encodes as version 1 until it is replaced; every record the
//! core creates (enrollment, tombstone) is version 2.

use opaque_ke::ServerRegistration;
use sha2::{Digest, Sha256};

use crate::error::{Field, RecordError, VaultError};
use crate::guess::{AttemptLimit, GuessState};
use crate::pin::{CATALOG_KEY_LEN, CATALOG_PIN_LEN, CatalogKey, CatalogPin};
use crate::suite::{KsfParams, REGISTRATION_UPLOAD_LEN, Suite};

/// The version of an active record with a catalog key; [`PLAIN_FORMAT_VERSION`] otherwise.
pub const RECORD_FORMAT_VERSION: u8 = 3;
const PLAIN_FORMAT_VERSION: u8 = 2;
const LEGACY_FORMAT_VERSION: u8 = 1;
/// Length of the random salt in a record's OPAQUE credential identifier.
pub const CREDENTIAL_SALT_LEN: usize = 32;
pub const MAX_ACCOUNT_LEN: usize = 64;
pub const MAX_WRAPPED_KEY_LEN: usize = 96;
/// How many recent KE1 fingerprints a record remembers.
pub const KE1_RING_LEN: usize = 4;
pub const KE1_FINGERPRINT_LEN: usize = 8;
/// The largest encoding a valid record can have.
pub const MAX_ENCODED_RECORD_LEN: usize = 1
    + 1
    + MAX_ACCOUNT_LEN
    + 8
    + 1
    + KE1_RING_LEN * KE1_FINGERPRINT_LEN
    + 1
    + 8
    + CREDENTIAL_SALT_LEN
    + 2
    + KsfParams::ENCODED_LEN
    + REGISTRATION_UPLOAD_LEN
    + 1
    + MAX_WRAPPED_KEY_LEN
    + CATALOG_KEY_LEN
    + 1
    + CATALOG_PIN_LEN;

const STATE_ACTIVE: u8 = 1;
const STATE_DESTROYED: u8 = 2;

/// An account id as the gateway authenticated it: 1..=64 opaque bytes. Not secret.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(Vec<u8>);

impl AccountId {
    pub fn new(bytes: &[u8]) -> Result<Self, VaultError> {
        if (1..=MAX_ACCOUNT_LEN).contains(&bytes.len()) {
            Ok(Self(bytes.to_vec()))
        } else {
            Err(VaultError::Malformed(Field::Account))
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for AccountId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AccountId(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

pub(crate) type Fingerprint = [u8; KE1_FINGERPRINT_LEN];
pub(crate) type Salt = [u8; CREDENTIAL_SALT_LEN];

/// The OPAQUE credential identifier (from which opaque-ke derives the OPRF key) of a registration
/// with `salt`: `len(account) u8 ‖ account ‖ salt`. The salt is fresh for every registration, so
/// no request ever evaluates the OPRF key of an existing record except that record's logins. A
/// legacy identifier (the bare account id) is 33 bytes shorter than any salted one of the same
/// account, so no registration evaluates a legacy record's key either.
pub(crate) fn salted_credential_id(account: &AccountId, salt: &Salt) -> Vec<u8> {
    let mut id = Vec::with_capacity(1 + account.0.len() + CREDENTIAL_SALT_LEN);
    push_short(&mut id, account.as_bytes());
    id.extend_from_slice(salt);
    id
}

/// Truncated SHA-256 of a KE1. 64 bits suffice: a collision only makes a client retry.
pub(crate) fn ke1_fingerprint(ke1: &[u8]) -> Fingerprint {
    let digest = Sha256::digest(ke1);
    let mut out = [0u8; KE1_FINGERPRINT_LEN];
    out.copy_from_slice(&digest[..KE1_FINGERPRINT_LEN]);
    out
}

/// One account's vault record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    account: AccountId,
    generation: u64,
    recent_ke1: Vec<Fingerprint>,
    state: State,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum State {
    Active(Active),
    /// `legacy`: decoded from a version-1 tombstone (kept so it re-encodes byte for byte).
    Destroyed {
        legacy: bool,
    },
}

/// Where an active record's OPRF key comes from.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Credential {
    /// Version 1: the bare account id.
    Legacy,
    /// Version 2: [`salted_credential_id`], and when the record was enrolled (vault clock, ms).
    Salted { salt: Salt, created_at_ms: u64 },
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Active {
    pub(crate) credential: Credential,
    pub(crate) limit: AttemptLimit,
    pub(crate) attempts_left: u8,
    pub(crate) ksf: KsfParams,
    /// Parsed once, when decoded or enrolled; zeroized on drop by opaque-ke.
    pub(crate) registration: Box<ServerRegistration<Suite>>,
    pub(crate) wrapped_key: Vec<u8>,
    /// The key that verifies this account's catalog pins, and the newest pin it verified.
    pub(crate) catalog: Option<Box<CatalogState>>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct CatalogState {
    pub(crate) key: CatalogKey,
    pub(crate) pin: Option<CatalogPin>,
}

impl Record {
    /// A fresh enrollment at `generation` with the full attempt limit.
    pub(crate) fn enrolled(
        account: AccountId,
        generation: u64,
        recent_ke1: Vec<Fingerprint>,
        active: Active,
    ) -> Self {
        Self {
            account,
            generation,
            recent_ke1,
            state: State::Active(active),
        }
    }

    /// The tombstone that replaces this record: next generation, nothing secret kept.
    pub(crate) fn tombstone(&self) -> Result<Self, VaultError> {
        Ok(Self {
            account: self.account.clone(),
            generation: self.next_generation()?,
            recent_ke1: self.recent_ke1.clone(),
            state: State::Destroyed { legacy: false },
        })
    }

    pub(crate) fn next_generation(&self) -> Result<u64, VaultError> {
        self.generation
            .checked_add(1)
            .ok_or(VaultError::GenerationExhausted)
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// Starts at 1 for a first enrollment; +1 on every enrollment and destruction, never down.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_destroyed(&self) -> bool {
        matches!(self.state, State::Destroyed { .. })
    }

    /// When an active record was enrolled (the vault's clock, ms); `None` for a tombstone or a
    /// legacy (version 1) record, which did not store it.
    pub fn created_at_ms(&self) -> Option<u64> {
        match self.active().map(|a| &a.credential) {
            Some(Credential::Salted { created_at_ms, .. }) => Some(*created_at_ms),
            _ => None,
        }
    }

    /// The format version [`Self::encode`] writes: 1 only for a legacy record not yet replaced.
    pub fn format_version(&self) -> u8 {
        match &self.state {
            State::Active(Active {
                credential: Credential::Legacy,
                ..
            })
            | State::Destroyed { legacy: true } => LEGACY_FORMAT_VERSION,
            State::Active(Active {
                catalog: Some(_), ..
            }) => RECORD_FORMAT_VERSION,
            _ => PLAIN_FORMAT_VERSION,
        }
    }

    /// The credential identifier this record's logins derive the OPRF key from.
    pub(crate) fn credential_id(&self) -> Option<Vec<u8>> {
        self.active().map(|a| match &a.credential {
            Credential::Legacy => self.account.as_bytes().to_vec(),
            Credential::Salted { salt, .. } => salted_credential_id(&self.account, salt),
        })
    }

    /// `(attempts_left, limit)` of an active record.
    pub fn attempts(&self) -> Option<(u8, u8)> {
        self.active().map(|a| (a.attempts_left, a.limit.get()))
    }

    pub fn ksf(&self) -> Option<KsfParams> {
        self.active().map(|a| a.ksf)
    }

    pub fn wrapped_key(&self) -> Option<&[u8]> {
        self.active().map(|a| a.wrapped_key.as_slice())
    }

    /// The key that verifies this record's catalog pins (an active version-3 record only).
    pub fn catalog_key(&self) -> Option<&CatalogKey> {
        self.active()?.catalog.as_ref().map(|c| &c.key)
    }

    /// The newest catalog pin this record holds.
    pub fn catalog_pin(&self) -> Option<&CatalogPin> {
        self.active()?.catalog.as_ref()?.pin.as_ref()
    }

    /// This active record holding `pin` (already verified against its key) instead.
    pub(crate) fn with_pin(&self, pin: CatalogPin) -> Self {
        let mut next = self.clone();
        if let State::Active(Active {
            catalog: Some(c), ..
        }) = &mut next.state
        {
            c.pin = Some(pin);
        }
        next
    }

    pub fn guess_state(&self) -> GuessState {
        match &self.state {
            State::Active(a) => GuessState::Active {
                attempts_left: a.attempts_left,
                limit: a.limit,
            },
            State::Destroyed { .. } => GuessState::Destroyed,
        }
    }

    pub(crate) fn active(&self) -> Option<&Active> {
        match &self.state {
            State::Active(a) => Some(a),
            State::Destroyed { .. } => None,
        }
    }

    pub(crate) fn recent_ke1(&self) -> &[Fingerprint] {
        &self.recent_ke1
    }

    pub(crate) fn saw_ke1(&self, fp: &Fingerprint) -> bool {
        self.recent_ke1.iter().any(|f| f == fp)
    }

    /// This record with `fp` remembered (the oldest fingerprint falls out).
    pub(crate) fn with_ke1(mut self, fp: Fingerprint) -> Self {
        if self.recent_ke1.len() == KE1_RING_LEN {
            self.recent_ke1.remove(0);
        }
        self.recent_ke1.push(fp);
        self
    }

    /// This record moved to `next`, a state [`crate::guess_step`] returned for it: the counter
    /// updated, or a tombstone (next generation) if `next` is destroyed. A destroyed record has
    /// nowhere to move (its verdict is `Refuse`, which writes nothing).
    pub(crate) fn after_guess(&self, next: GuessState) -> Result<Self, VaultError> {
        match (&self.state, next) {
            (State::Destroyed { .. }, _) => Err(VaultError::Destroyed),
            (State::Active(_), GuessState::Destroyed) => self.tombstone(),
            (State::Active(a), GuessState::Active { attempts_left, .. }) => {
                let mut next = self.clone();
                next.state = State::Active(Active {
                    attempts_left: attempts_left.min(a.limit.get()),
                    ..a.clone()
                });
                Ok(next)
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_ENCODED_RECORD_LEN);
        out.push(self.format_version());
        push_short(&mut out, self.account.as_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.push(self.recent_ke1.len() as u8);
        for fp in &self.recent_ke1 {
            out.extend_from_slice(fp);
        }
        match &self.state {
            State::Destroyed { .. } => out.push(STATE_DESTROYED),
            State::Active(a) => {
                out.push(STATE_ACTIVE);
                if let Credential::Salted {
                    salt,
                    created_at_ms,
                } = &a.credential
                {
                    out.extend_from_slice(&created_at_ms.to_be_bytes());
                    out.extend_from_slice(salt);
                }
                out.push(a.limit.get());
                out.push(a.attempts_left);
                out.extend_from_slice(&a.ksf.to_bytes());
                out.extend_from_slice(&a.registration.serialize());
                push_short(&mut out, &a.wrapped_key);
                if let Some(c) = &a.catalog {
                    out.extend_from_slice(c.key.as_bytes());
                    match &c.pin {
                        None => out.push(0),
                        Some(pin) => {
                            out.push(1);
                            out.extend_from_slice(&pin.encode());
                        }
                    }
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        let legacy = match version {
            RECORD_FORMAT_VERSION | PLAIN_FORMAT_VERSION => false,
            LEGACY_FORMAT_VERSION => true,
            other => return Err(RecordError::UnknownVersion(other)),
        };
        let account = r.short(1..=MAX_ACCOUNT_LEN, RecordError::BadAccount)?;
        let account = AccountId(account.to_vec());
        let generation = u64::from_be_bytes(r.array()?);
        let recent_ke1 = r.ring()?;
        let state = match r.byte()? {
            STATE_ACTIVE => {
                let mut active = r.active(legacy)?;
                if version == RECORD_FORMAT_VERSION {
                    active.catalog = Some(Box::new(r.catalog()?));
                }
                State::Active(active)
            }
            STATE_DESTROYED if version == RECORD_FORMAT_VERSION => {
                return Err(RecordError::BadCatalog);
            }
            STATE_DESTROYED => State::Destroyed { legacy },
            other => return Err(RecordError::UnknownState(other)),
        };
        if !r.0.is_empty() {
            return Err(RecordError::TrailingBytes);
        }
        Ok(Self {
            account,
            generation,
            recent_ke1,
            state,
        })
    }
}

impl core::fmt::Debug for Active {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let created_at_ms = match &self.credential {
            Credential::Legacy => None,
            Credential::Salted { created_at_ms, .. } => Some(*created_at_ms),
        };
        f.debug_struct("Active")
            .field("created_at_ms", &created_at_ms)
            .field("limit", &self.limit.get())
            .field("attempts_left", &self.attempts_left)
            .field("ksf", &self.ksf)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

fn push_short(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers only pass values bounded by MAX_ACCOUNT_LEN / MAX_WRAPPED_KEY_LEN (< 256).
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn short(
        &mut self,
        allowed: core::ops::RangeInclusive<usize>,
        err: RecordError,
    ) -> Result<&'a [u8], RecordError> {
        let len = usize::from(self.byte()?);
        if !allowed.contains(&len) {
            return Err(err);
        }
        self.take(len)
    }

    fn ring(&mut self) -> Result<Vec<Fingerprint>, RecordError> {
        let n = usize::from(self.byte()?);
        if n > KE1_RING_LEN {
            return Err(RecordError::BadRing);
        }
        (0..n).map(|_| self.array()).collect()
    }

    fn active(&mut self, legacy: bool) -> Result<Active, RecordError> {
        let credential = if legacy {
            Credential::Legacy
        } else {
            let created_at_ms = u64::from_be_bytes(self.array()?);
            let salt = self.array()?;
            Credential::Salted {
                salt,
                created_at_ms,
            }
        };
        let limit = AttemptLimit::new(self.byte()?).ok_or(RecordError::BadAttempts)?;
        let attempts_left = self.byte()?;
        if attempts_left > limit.get() {
            return Err(RecordError::BadAttempts);
        }
        let ksf = KsfParams::from_bytes(self.array()?).map_err(|_| RecordError::BadKsf)?;
        let registration = ServerRegistration::deserialize(self.take(REGISTRATION_UPLOAD_LEN)?)
            .map_err(|_| RecordError::BadRegistration)?;
        let wrapped_key = self
            .short(1..=MAX_WRAPPED_KEY_LEN, RecordError::BadWrappedKey)?
            .to_vec();
        Ok(Active {
            credential,
            limit,
            attempts_left,
            ksf,
            registration: Box::new(registration),
            wrapped_key,
            catalog: None,
        })
    }

    fn catalog(&mut self) -> Result<CatalogState, RecordError> {
        let key = CatalogKey::from_bytes(self.array()?);
        let pin = match self.byte()? {
            0 => None,
            1 => Some(
                CatalogPin::decode(self.take(CATALOG_PIN_LEN)?).ok_or(RecordError::BadCatalog)?,
            ),
            _ => return Err(RecordError::BadCatalog),
        };
        Ok(CatalogState { key, pin })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opaque_ke::{ClientRegistration, ClientRegistrationFinishParameters, ServerSetup};
    use proptest::prelude::*;
    use rand_core::OsRng;

    fn sample_registration() -> ServerRegistration<Suite> {
        let setup = ServerSetup::<Suite>::new(&mut OsRng);
        let start = ClientRegistration::<Suite>::start(&mut OsRng, b"pw").unwrap();
        let resp = ServerRegistration::<Suite>::start(&setup, start.message, b"a").unwrap();
        let ksf = KsfParams::INSECURE_TEST_ONLY.argon2();
        let params = ClientRegistrationFinishParameters::new(Default::default(), Some(&ksf));
        let fin = start
            .state
            .finish(&mut OsRng, b"pw", resp.message, params)
            .unwrap();
        ServerRegistration::finish(fin.message)
    }

    const CATALOG_EXTRA: usize = CATALOG_KEY_LEN + 1 + CATALOG_PIN_LEN;

    fn largest_record() -> Record {
        let k = lockbox_crypto::BackupKey::from_bytes([0x33; 32]);
        let pin = CatalogPin::sign(&k, &AccountId::new(&[7; 64]).unwrap(), 42, [0x77; 64]);
        let catalog = CatalogState {
            key: CatalogKey::of(&k),
            pin: Some(pin),
        };
        record_with(salted(), Some(catalog))
    }

    fn salted() -> Credential {
        Credential::Salted {
            salt: [0x5A; CREDENTIAL_SALT_LEN],
            created_at_ms: 1_764_000_000_000,
        }
    }

    fn record_with(credential: Credential, catalog: Option<CatalogState>) -> Record {
        let active = Active {
            credential,
            limit: AttemptLimit::new(100).unwrap(),
            attempts_left: 99,
            ksf: KsfParams::DEFAULT,
            registration: Box::new(sample_registration()),
            wrapped_key: vec![0xA5; MAX_WRAPPED_KEY_LEN],
            catalog: catalog.map(Box::new),
        };
        let mut rec = Record::enrolled(AccountId::new(&[7; 64]).unwrap(), 3, vec![], active);
        for i in 0..KE1_RING_LEN + 2 {
            rec = rec.with_ke1([i as u8; 8]);
        }
        rec
    }

    #[test]
    fn round_trip_and_size_budget() {
        let rec = largest_record();
        let bytes = rec.encode();
        assert_eq!(bytes.len(), MAX_ENCODED_RECORD_LEN);
        // The shell seals records with ~30 bytes of overhead (nonce + tag + header); 1 KiB budget.
        assert!(bytes.len() + 30 <= 1024, "{}", bytes.len());
        assert_eq!(rec.catalog_pin().map(CatalogPin::sequence), Some(42));
        assert_eq!(Record::decode(&bytes).unwrap(), rec);
        assert_eq!(rec.recent_ke1().len(), KE1_RING_LEN);
        assert_eq!(
            rec.recent_ke1()[0],
            [2; 8],
            "oldest fingerprints fall out first"
        );

        let tomb = rec.tombstone().unwrap();
        assert_eq!(tomb.generation(), 4);
        assert!(tomb.is_destroyed());
        assert_eq!(tomb.wrapped_key(), None);
        let tomb_bytes = tomb.encode();
        assert_eq!(Record::decode(&tomb_bytes).unwrap(), tomb);
        assert!(
            !tomb_bytes.windows(8).any(|w| w == [0xA5; 8]),
            "tombstone keeps no secrets"
        );
    }

    #[test]
    fn strict_decoding_errors() {
        let good = largest_record().encode();
        let ring_at = 1 + 1 + 64 + 8;
        let state_at = ring_at + 1 + 32;
        let limit_at = state_at + 1 + 8 + CREDENTIAL_SALT_LEN;
        let mut cases: Vec<(Vec<u8>, RecordError)> = vec![
            (vec![], RecordError::Truncated),
            (good[..good.len() - 1].to_vec(), RecordError::Truncated),
            ([&good[..], &[0]].concat(), RecordError::TrailingBytes),
        ];
        let mut set = |i: usize, v: u8, e: RecordError| {
            let mut b = good.clone();
            b[i] = v;
            cases.push((b, e));
        };
        set(0, 0, RecordError::UnknownVersion(0));
        set(0, 4, RecordError::UnknownVersion(4));
        // A version-2 record ends at the wrapped key.
        set(0, 2, RecordError::TrailingBytes);
        let pin_flag = good.len() - CATALOG_PIN_LEN - 1;
        set(pin_flag, 2, RecordError::BadCatalog);
        set(1, 0, RecordError::BadAccount);
        set(1, 65, RecordError::BadAccount);
        set(ring_at, 5, RecordError::BadRing);
        set(state_at, 9, RecordError::UnknownState(9));
        set(limit_at, 0, RecordError::BadAttempts);
        set(limit_at, 101, RecordError::BadAttempts);
        set(limit_at + 1, 101, RecordError::BadAttempts);
        set(limit_at + 2, 0xFF, RecordError::BadKsf);
        set(limit_at + 14, 0xFF, RecordError::BadRegistration);
        set(
            good.len() - CATALOG_EXTRA - 97,
            0,
            RecordError::BadWrappedKey,
        );
        set(
            good.len() - CATALOG_EXTRA - 97,
            97,
            RecordError::BadWrappedKey,
        );
        let tomb = largest_record().tombstone().unwrap().encode();
        let v3_tomb = [&[RECORD_FORMAT_VERSION][..], &tomb[1..]].concat();
        cases.push((v3_tomb, RecordError::BadCatalog));
        for (bytes, want) in cases {
            assert_eq!(Record::decode(&bytes), Err(want));
        }
    }

    #[test]
    fn version_2_carries_salt_and_creation_time() {
        let rec = record_with(salted(), None);
        assert_eq!(rec.format_version(), 2);
        let bytes = rec.encode();
        assert_eq!(bytes.len(), MAX_ENCODED_RECORD_LEN - CATALOG_EXTRA);
        assert_eq!(Record::decode(&bytes).unwrap(), rec);
        assert_eq!((rec.catalog_key(), rec.catalog_pin()), (None, None));
        assert_eq!(largest_record().format_version(), 3);
        assert_eq!(rec.created_at_ms(), Some(1_764_000_000_000));
        let id = rec.credential_id().unwrap();
        assert_eq!(id.len(), 1 + 64 + CREDENTIAL_SALT_LEN);
        assert_eq!(id[0], 64);
        assert_eq!(&id[1..65], rec.account().as_bytes());
        assert_eq!(&id[65..], &[0x5A; CREDENTIAL_SALT_LEN]);
        let tomb = rec.tombstone().unwrap();
        assert_eq!((tomb.format_version(), tomb.created_at_ms()), (2, None));
        assert_eq!(tomb.credential_id(), None);
    }

    /// A version-1 record decodes as legacy, logs in under the bare account id, re-encodes byte
    /// for byte as version 1, and its tombstone is version 2.
    #[test]
    fn version_1_decodes_as_legacy() {
        let rec = record_with(Credential::Legacy, None);
        let bytes = rec.encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(
            bytes.len(),
            MAX_ENCODED_RECORD_LEN - 8 - CREDENTIAL_SALT_LEN - CATALOG_EXTRA
        );
        let back = Record::decode(&bytes).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.format_version(), 1);
        assert_eq!(back.created_at_ms(), None);
        assert_eq!(back.credential_id().unwrap(), rec.account().as_bytes());
        let spent = back
            .after_guess(GuessState::Active {
                attempts_left: 3,
                limit: AttemptLimit::new(100).unwrap(),
            })
            .unwrap();
        assert_eq!(
            spent.encode()[0],
            1,
            "a counter change keeps the legacy format"
        );
        let tomb = back.tombstone().unwrap();
        assert_eq!(tomb.encode()[0], 2);
        let old_tomb = [&[1u8][..], &tomb.encode()[1..]].concat();
        let decoded = Record::decode(&old_tomb).unwrap();
        assert!(decoded.is_destroyed());
        assert_eq!(decoded.encode(), old_tomb);
    }

    /// Salted identifiers are unambiguous: distinct (account, salt) pairs never collide, and
    /// none equals any bare account id of the same account.
    #[test]
    fn salted_credential_ids_never_collide_with_bare_ids() {
        let a = AccountId::new(b"ab").unwrap();
        let b = AccountId::new(b"a").unwrap();
        let mut salt_b = [0u8; CREDENTIAL_SALT_LEN];
        salt_b[0] = b'b';
        let ids = [
            salted_credential_id(&a, &[0; CREDENTIAL_SALT_LEN]),
            salted_credential_id(&b, &salt_b),
            salted_credential_id(&a, &[1; CREDENTIAL_SALT_LEN]),
        ];
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        for id in &ids {
            assert_ne!(id.as_slice(), a.as_bytes());
            assert_ne!(id.as_slice(), b.as_bytes());
        }
    }

    proptest! {
        /// Arbitrary bytes and arbitrary corruptions of a valid record never panic the decoder,
        /// and whatever decodes re-encodes to the same bytes (one encoding per record).
        #[test]
        fn decoder_is_total_and_canonical(noise in proptest::collection::vec(any::<u8>(), 0..600),
                                          flips in proptest::collection::vec((0usize..MAX_ENCODED_RECORD_LEN, any::<u8>()), 0..4)) {
            if let Ok(rec) = Record::decode(&noise) {
                prop_assert_eq!(rec.encode(), noise);
            }
            for valid in [largest_record(), record_with(salted(), None), record_with(Credential::Legacy, None)] {
                let mut bytes = valid.encode();
                let len = bytes.len();
                for &(i, v) in &flips {
                    bytes[i % len] = v;
                }
                if let Ok(rec) = Record::decode(&bytes) {
                    prop_assert_eq!(rec.encode(), bytes);
                }
            }
        }
    }
}
