//! In-memory protocol sessions. A crash loses them all, which is safe: an attempt spent at KE1
//! stays spent (it is in the persisted record), and a lost session can only cost its owner.

use std::collections::BTreeMap;

use opaque_ke::ServerLogin;
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;

use crate::error::{Field, VaultError};
use crate::record::{AccountId, Salt};
use crate::suite::{KE3_LEN, Suite};
use crate::vault::Reply;

pub const SESSION_ID_LEN: usize = 16;
/// Registration sessions one account may hold at once (see [`Sessions::reserve_registration`]):
/// a device runs one enrollment or password change at a time.
pub const MAX_REGISTRATIONS_PER_ACCOUNT: usize = 2;

/// A random 16-byte session id. Bound to one account and one record generation; guessing another
/// account's id gains nothing (the account binding is checked first).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId([u8; SESSION_ID_LEN]);

impl SessionId {
    pub(crate) fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut id = [0u8; SESSION_ID_LEN];
        rng.fill_bytes(&mut id);
        Self(id)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, VaultError> {
        <[u8; SESSION_ID_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| VaultError::Malformed(Field::Session))
    }

    pub fn as_bytes(&self) -> &[u8; SESSION_ID_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SessionId({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

#[derive(Clone)]
pub(crate) enum Step {
    /// Enrollment (or password change) between RegistrationResponse and upload. Holds the salt
    /// of the credential identifier the response was evaluated under, for the record.
    Registration { salt: Salt },
    /// Between KE2 and KE3. Holds the OPAQUE server state (zeroized on drop by opaque-ke), and
    /// the KE1 it answered with the reply it released, for a retry after a lost reply.
    Login(Box<Login>),
    /// After a verified KE3: usable once for ChangePassword or Delete. Remembers the KE3 and its
    /// reply for a retry; answering that retry does not use the session up.
    Authenticated(Box<Answered>),
    /// After a KE3 that did not verify: only the remembered reply, for a retry.
    Finished(Box<Answered>),
}

/// A login session between KE2 and KE3.
#[derive(Clone)]
pub(crate) struct Login {
    pub(crate) state: ServerLogin<Suite>,
    /// SHA-256 of the KE1 this session answered.
    pub(crate) ke1: [u8; 32],
    /// The `LoginStarted` released for it, repeated verbatim to a retry of the same KE1.
    pub(crate) reply: Reply,
}

/// The outcome of a processed KE3, repeated verbatim to a retry of the same KE3.
#[derive(Clone)]
pub(crate) struct Answered {
    pub(crate) ke3: [u8; KE3_LEN],
    pub(crate) reply: Reply,
    /// The record generation the outcome left behind (one more if it destroyed the record):
    /// once the record moves on, the outcome is stale and a retry is refused.
    pub(crate) generation: u64,
}

impl Answered {
    /// The remembered reply, if `ke3` is the KE3 that produced it and `generation` is the
    /// stored record's. A different KE3 on a finished session is refused.
    pub(crate) fn repeat(&self, ke3: &[u8], generation: Option<u64>) -> Result<Reply, VaultError> {
        if !bool::from(self.ke3.as_slice().ct_eq(ke3)) {
            return Err(VaultError::SessionKindMismatch);
        }
        if generation != Some(self.generation) {
            return Err(VaultError::NoSession);
        }
        Ok(self.reply.clone())
    }
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Registration { .. } => "registration",
            Step::Login(_) => "login",
            Step::Authenticated(_) => "authenticated",
            Step::Finished(_) => "finished",
        }
    }
}

#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) account: AccountId,
    /// The record generation the session started at (0: no record existed).
    pub(crate) generation: u64,
    pub(crate) expires_at: u64,
    pub(crate) step: Step,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("account", &self.account)
            .field("generation", &self.generation)
            .field("expires_at", &self.expires_at)
            .field("step", &self.step.name())
            .finish()
    }
}

/// The session table owned by a [`crate::Vault`]. Bounded twice: per account (then
/// [`VaultError::AccountBusy`]), so that one account cannot hold the table, and in total (then
/// [`VaultError::Busy`]). Before refusing, expired sessions are purged.
#[derive(Debug)]
pub struct Sessions {
    map: BTreeMap<SessionId, Session>,
    /// The ids in `map` of each account that has any.
    by_account: BTreeMap<AccountId, Vec<SessionId>>,
    max: usize,
    max_per_account: usize,
}

impl Sessions {
    pub(crate) fn new(max: usize, max_per_account: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            by_account: BTreeMap::new(),
            max,
            max_per_account,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sessions open for `account` (expired ones included until they are purged).
    pub fn open_for(&self, account: &AccountId) -> usize {
        self.by_account.get(account).map_or(0, Vec::len)
    }

    /// Drops every session whose deadline has passed.
    pub fn purge_expired(&mut self, now: u64) {
        let expired: Vec<SessionId> = (self.map.iter())
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }

    fn purge_expired_of(&mut self, account: &AccountId, now: u64) {
        let ids = self.by_account.get(account).cloned().unwrap_or_default();
        for id in ids {
            if self.map.get(&id).is_some_and(|s| s.expires_at <= now) {
                self.remove(&id);
            }
        }
    }

    /// Fails with `AccountBusy` unless `account` may open one more session, and with `Busy`
    /// unless one more fits in the table. Costs O(per-account quota) unless the table is full.
    /// [`Self::reserve`] for a registration: an account keeps at most
    /// [`MAX_REGISTRATIONS_PER_ACCOUNT`] registration sessions, and a new one evicts its oldest,
    /// so registrations (which cost no attempt) can never crowd the account's logins out of its
    /// quota. The evicted registration's finish fails with `NoSession`; its device starts over.
    pub(crate) fn reserve_registration(
        &mut self,
        account: &AccountId,
        now: u64,
    ) -> Result<(), VaultError> {
        let mut registrations = self.at_step(account, |s| matches!(s, Step::Registration { .. }));
        if registrations.len() >= MAX_REGISTRATIONS_PER_ACCOUNT {
            registrations.sort();
            self.remove(&registrations[0].1);
        }
        self.reserve(account, now)
    }

    /// `(expires_at, id)` of the account's sessions at a step `want` accepts.
    fn at_step(&self, account: &AccountId, want: fn(&Step) -> bool) -> Vec<(u64, SessionId)> {
        (self.by_account.get(account).into_iter().flatten())
            .filter_map(|id| self.map.get(id).map(|s| (s, id)))
            .filter(|(s, _)| want(&s.step))
            .map(|(s, id)| (s.expires_at, *id))
            .collect()
    }

    pub(crate) fn reserve(&mut self, account: &AccountId, now: u64) -> Result<(), VaultError> {
        if self.open_for(account) >= self.max_per_account {
            self.purge_expired_of(account, now);
        }
        if self.open_for(account) >= self.max_per_account {
            // A remembered failed outcome only serves retries: it never crowds a new session out.
            let finished = self.at_step(account, |s| matches!(s, Step::Finished(_)));
            if let Some((_, oldest)) = finished.into_iter().min() {
                self.remove(&oldest);
            }
        }
        if self.open_for(account) >= self.max_per_account {
            return Err(VaultError::AccountBusy);
        }
        if self.map.len() >= self.max {
            self.purge_expired(now);
        }
        if self.map.len() >= self.max {
            return Err(VaultError::Busy);
        }
        Ok(())
    }

    fn remove(&mut self, id: &SessionId) -> Option<Session> {
        let session = self.map.remove(id)?;
        if let Some(ids) = self.by_account.get_mut(&session.account) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_account.remove(&session.account);
            }
        }
        Some(session)
    }

    pub(crate) fn fresh_id<R: RngCore + CryptoRng>(&self, rng: &mut R) -> SessionId {
        loop {
            let id = SessionId::random(rng);
            if !self.map.contains_key(&id) {
                return id;
            }
        }
    }

    /// Inserts a session whose room [`Self::reserve`] already checked when its request was
    /// handled. It may overshoot the bounds by the number of writes in flight (per account: one
    /// per compare-and-swap that can still win, since a loser is re-run and checked again);
    /// refusing here would spend an attempt without ever releasing its KE2.
    /// Inserts a session whose slot [`Self::reserve`] granted. A new authenticated session
    /// replaces the account's previous ones: every successful login leaves one behind for the
    /// TTL, and without this a user who recovers a few times in a minute would fill the
    /// account's quota with sessions nobody will use.
    pub(crate) fn insert_reserved(&mut self, id: SessionId, session: Session, now: u64) {
        if self.map.len() >= self.max {
            self.purge_expired(now);
        }
        if matches!(session.step, Step::Authenticated(_)) {
            for (_, old) in self.at_step(&session.account, |s| matches!(s, Step::Authenticated(_)))
            {
                self.remove(&old);
            }
        }
        self.remove(&id);
        self.by_account
            .entry(session.account.clone())
            .or_default()
            .push(id);
        self.map.insert(id, session);
    }

    /// The reply released for the KE1 whose SHA-256 is `ke1`, if its login session is still
    /// open (live, unfinished) for `account` at record generation `generation`. O(per-account
    /// quota).
    pub(crate) fn answered_ke1(
        &self,
        account: &AccountId,
        generation: u64,
        ke1: &[u8; 32],
        now: u64,
    ) -> Option<&Reply> {
        (self.by_account.get(account).into_iter().flatten())
            .filter_map(|id| self.map.get(id))
            .filter(|s| s.generation == generation && s.expires_at > now)
            .find_map(|s| match &s.step {
                Step::Login(login) if bool::from(login.ke1.ct_eq(ke1)) => Some(&login.reply),
                _ => None,
            })
    }

    /// The session if it exists, is live and belongs to `account`, left in place; an expired
    /// one is dropped.
    pub(crate) fn peek(
        &mut self,
        id: &SessionId,
        account: &AccountId,
        now: u64,
    ) -> Result<&Session, VaultError> {
        let session = self.map.get(id).ok_or(VaultError::NoSession)?;
        if session.expires_at <= now {
            self.remove(id);
            return Err(VaultError::SessionExpired);
        }
        if &session.account != account {
            return Err(VaultError::SessionAccountMismatch);
        }
        self.map.get(id).ok_or(VaultError::NoSession)
    }

    /// Removes and returns the session if it exists, is live, belongs to `account` and is at the
    /// step `want` accepts. A session of another account or at another step is left untouched,
    /// so a misrouted message cannot cancel someone's session; an expired one is dropped.
    pub(crate) fn take(
        &mut self,
        id: &SessionId,
        account: &AccountId,
        now: u64,
        want: fn(&Step) -> bool,
    ) -> Result<Session, VaultError> {
        let session = self.peek(id, account, now)?;
        if !want(&session.step) {
            return Err(VaultError::SessionKindMismatch);
        }
        self.remove(id).ok_or(VaultError::NoSession)
    }
}
