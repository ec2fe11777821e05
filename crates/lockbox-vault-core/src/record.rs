//! Per-account vault records and their strict binary encoding.
//!
//! Layout, version 1 (integers big-endian):
//! ```text
//! version u8 = 1 | account_len u8 (1..=64) | account | generation u64
//! | ring_len u8 (0..=4) | ring_len × 8-byte KE1 fingerprints (oldest first)
//! | state u8: 1 = Active, 2 = Destroyed
//! Active only: limit u8 (1..=100) | attempts_left u8 (<= limit) | Argon2id m,t,p (3 × u32)
//!              | OPAQUE ServerRegistration (192) | wrapped_len u8 (1..=96) | wrapped_key
//! ```
//! Nothing may follow. A tombstone keeps only the account, the generation and the ring.

use opaque_ke::ServerRegistration;
use sha2::{Digest, Sha256};

use crate::error::{Field, RecordError, VaultError};
use crate::guess::{AttemptLimit, GuessState};
use crate::suite::{KsfParams, REGISTRATION_UPLOAD_LEN, Suite};

pub const RECORD_FORMAT_VERSION: u8 = 1;
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
    + 2
    + KsfParams::ENCODED_LEN
    + REGISTRATION_UPLOAD_LEN
    + 1
    + MAX_WRAPPED_KEY_LEN;

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
    Destroyed,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Active {
    pub(crate) limit: AttemptLimit,
    pub(crate) attempts_left: u8,
    pub(crate) ksf: KsfParams,
    /// Parsed once, when decoded or enrolled; zeroized on drop by opaque-ke.
    pub(crate) registration: Box<ServerRegistration<Suite>>,
    pub(crate) wrapped_key: Vec<u8>,
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
            state: State::Destroyed,
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
        matches!(self.state, State::Destroyed)
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

    pub fn guess_state(&self) -> GuessState {
        match &self.state {
            State::Active(a) => GuessState::Active {
                attempts_left: a.attempts_left,
                limit: a.limit,
            },
            State::Destroyed => GuessState::Destroyed,
        }
    }

    pub(crate) fn active(&self) -> Option<&Active> {
        match &self.state {
            State::Active(a) => Some(a),
            State::Destroyed => None,
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
            (State::Destroyed, _) => Err(VaultError::Destroyed),
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
        out.push(RECORD_FORMAT_VERSION);
        push_short(&mut out, self.account.as_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.push(self.recent_ke1.len() as u8);
        for fp in &self.recent_ke1 {
            out.extend_from_slice(fp);
        }
        match &self.state {
            State::Destroyed => out.push(STATE_DESTROYED),
            State::Active(a) => {
                out.push(STATE_ACTIVE);
                out.push(a.limit.get());
                out.push(a.attempts_left);
                out.extend_from_slice(&a.ksf.to_bytes());
                out.extend_from_slice(&a.registration.serialize());
                push_short(&mut out, &a.wrapped_key);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        if version != RECORD_FORMAT_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let account = r.short(1..=MAX_ACCOUNT_LEN, RecordError::BadAccount)?;
        let account = AccountId(account.to_vec());
        let generation = u64::from_be_bytes(r.array()?);
        let recent_ke1 = r.ring()?;
        let state = match r.byte()? {
            STATE_ACTIVE => State::Active(r.active()?),
            STATE_DESTROYED => State::Destroyed,
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
        f.debug_struct("Active")
            .field("limit", &self.limit.get())
            .field("attempts_left", &self.attempts_left)
            .field("ksf", &self.ksf)
            .field("wrapped_key_len", &self.wrapped_key.len())
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

    fn active(&mut self) -> Result<Active, RecordError> {
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
            limit,
            attempts_left,
            ksf,
            registration: Box::new(registration),
            wrapped_key,
        })
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

    fn largest_record() -> Record {
        let active = Active {
            limit: AttemptLimit::new(100).unwrap(),
            attempts_left: 99,
            ksf: KsfParams::DEFAULT,
            registration: Box::new(sample_registration()),
            wrapped_key: vec![0xA5; MAX_WRAPPED_KEY_LEN],
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
        // The shell seals records with ~30 bytes of overhead (nonce + tag + header); 512 budget.
        assert!(bytes.len() + 30 <= 512, "{}", bytes.len());
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
        set(0, 2, RecordError::UnknownVersion(2));
        set(1, 0, RecordError::BadAccount);
        set(1, 65, RecordError::BadAccount);
        set(ring_at, 5, RecordError::BadRing);
        set(state_at, 9, RecordError::UnknownState(9));
        set(state_at + 1, 0, RecordError::BadAttempts);
        set(state_at + 1, 101, RecordError::BadAttempts);
        set(state_at + 2, 101, RecordError::BadAttempts);
        set(state_at + 3, 0xFF, RecordError::BadKsf);
        set(state_at + 15, 0xFF, RecordError::BadRegistration);
        set(good.len() - 97, 0, RecordError::BadWrappedKey);
        set(good.len() - 97, 97, RecordError::BadWrappedKey);
        for (bytes, want) in cases {
            assert_eq!(Record::decode(&bytes), Err(want));
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
            let mut bytes = largest_record().encode();
            for (i, v) in flips {
                bytes[i % MAX_ENCODED_RECORD_LEN] = v;
            }
            if let Ok(rec) = Record::decode(&bytes) {
                prop_assert_eq!(rec.encode(), bytes);
            }
        }
    }
}
