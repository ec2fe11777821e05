//! Request handlers: `(stored record, request, rng, now) -> Outcome`. The core decides; the shell
//! loads, persists and replies, in the order an [`Outcome`] dictates.

use opaque_ke::{
    CredentialFinalization, CredentialRequest, RegistrationRequest, RegistrationUpload,
    ServerLogin, ServerLoginParameters, ServerRegistration,
};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::error::{Field, VaultError};
use crate::guess::{AttemptLimit, GuessEvent, GuessVerdict, guess_step};
use crate::pin::{CatalogKey, CatalogPin};
use crate::record::{
    AccountId, Active, CREDENTIAL_SALT_LEN, CatalogState, Credential, MAX_WRAPPED_KEY_LEN, Record,
    ke1_fingerprint, salted_credential_id,
};
use crate::seal::seal_reply;
use crate::secrets::VaultSecrets;
use crate::session::{Answered, Login, Session, SessionId, Sessions, Step};
use crate::suite::{
    KE1_LEN, KE3_LEN, KsfParams, OPAQUE_CONTEXT, REGISTRATION_REQUEST_LEN, REGISTRATION_UPLOAD_LEN,
    identifiers, parse_exact, take_key,
};

/// Tunables of one vault core.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// OPAQUE server identifier bound into every transcript (e.g. `lockbox-vault/p7`); clients
    /// learn it from the fleet manifest. At most 255 bytes.
    pub server_id: Vec<u8>,
    /// How long a session may wait for its next message. Default 60 s.
    pub session_ttl_ms: u64,
    /// Bound on open sessions (memory). Default 65 536.
    pub max_sessions: usize,
    /// Bound on the open sessions of one account, so that one account cannot fill the table.
    /// Default 16. An honest device holds at most two at once (ChangePassword: the authenticated
    /// session and the new registration); an account keeps at most two registrations (a new one
    /// evicts the oldest) and one authenticated session (a new login's replaces it), so what can
    /// fill the quota is logins waiting for KE3, and each of those spent an attempt. A retry after
    /// a lost reply takes no slot (it is answered from the session it repeats), and the outcome
    /// kept for a failed KE3's retry gives its slot up to any new session. 16 leaves room for a
    /// second device, and filling the 65,536-slot table still takes 4,096 accounts' tokens.
    pub max_sessions_per_account: usize,
    /// The weakest client Argon2id parameters accepted at enrollment.
    pub min_ksf: KsfParams,
}

impl VaultConfig {
    pub fn new(server_id: &[u8]) -> Self {
        Self {
            server_id: server_id.to_vec(),
            session_ttl_ms: 60_000,
            max_sessions: 65_536,
            max_sessions_per_account: 16,
            min_ksf: KsfParams::PRODUCTION_FLOOR,
        }
    }
}

/// A client request as it arrives (protocol payloads still raw bytes from the wire). The shell
/// has already authenticated `account` and loaded that account's record. `Debug` shows only the
/// account, the lengths of the payloads and session ids, and the enrollment parameters.
#[derive(Clone)]
pub enum Request {
    /// Enrollment, step 1: OPAQUE `RegistrationRequest`.
    RegisterStart {
        account: AccountId,
        registration_request: Vec<u8>,
    },
    /// Enrollment (or password change), step 2.
    RegisterFinish {
        account: AccountId,
        session: Vec<u8>,
        upload: Vec<u8>,
        wrapped_key: Vec<u8>,
        attempt_limit: u8,
        ksf: KsfParams,
        /// The key that will verify the account's catalog pins (`None`: the record holds none).
        catalog_key: Option<CatalogKey>,
    },
    /// Recovery, step 1: KE1.
    LoginStart {
        account: AccountId,
        ke1: Vec<u8>,
    },
    /// Recovery, step 2: KE3.
    LoginFinish {
        account: AccountId,
        session: Vec<u8>,
        ke3: Vec<u8>,
    },
    /// After a successful login: start re-registration under the same session.
    ChangePassword {
        account: AccountId,
        session: Vec<u8>,
        registration_request: Vec<u8>,
    },
    /// After a successful login: destroy the record.
    Delete {
        account: AccountId,
        session: Vec<u8>,
    },
    Status {
        account: AccountId,
    },
    /// Moves the record's catalog pin forward to `pin` (an encoded [`CatalogPin`]).
    PinCatalog {
        account: AccountId,
        pin: Vec<u8>,
    },
}

/// A byte string in `Debug` output: its length, never its content.
struct Redacted<'a>(&'a [u8]);

impl core::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl core::fmt::Debug for Request {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Request::RegisterStart {
                account,
                registration_request,
            } => f
                .debug_struct("RegisterStart")
                .field("account", account)
                .field("registration_request", &Redacted(registration_request))
                .finish(),
            Request::RegisterFinish {
                account,
                session,
                upload,
                wrapped_key,
                attempt_limit,
                ksf,
                catalog_key,
            } => f
                .debug_struct("RegisterFinish")
                .field("account", account)
                .field("session", &Redacted(session))
                .field("upload", &Redacted(upload))
                .field("wrapped_key", &Redacted(wrapped_key))
                .field("attempt_limit", attempt_limit)
                .field("ksf", ksf)
                .field("catalog_key", &catalog_key.is_some())
                .finish(),
            Request::LoginStart { account, ke1 } => f
                .debug_struct("LoginStart")
                .field("account", account)
                .field("ke1", &Redacted(ke1))
                .finish(),
            Request::LoginFinish {
                account,
                session,
                ke3,
            } => f
                .debug_struct("LoginFinish")
                .field("account", account)
                .field("session", &Redacted(session))
                .field("ke3", &Redacted(ke3))
                .finish(),
            Request::ChangePassword {
                account,
                session,
                registration_request,
            } => f
                .debug_struct("ChangePassword")
                .field("account", account)
                .field("session", &Redacted(session))
                .field("registration_request", &Redacted(registration_request))
                .finish(),
            Request::Delete { account, session } => f
                .debug_struct("Delete")
                .field("account", account)
                .field("session", &Redacted(session))
                .finish(),
            Request::Status { account } => {
                f.debug_struct("Status").field("account", account).finish()
            }
            Request::PinCatalog { account, pin } => f
                .debug_struct("PinCatalog")
                .field("account", account)
                .field("pin", &Redacted(pin))
                .finish(),
        }
    }
}

impl Request {
    pub fn account(&self) -> &AccountId {
        match self {
            Request::RegisterStart { account, .. }
            | Request::RegisterFinish { account, .. }
            | Request::LoginStart { account, .. }
            | Request::LoginFinish { account, .. }
            | Request::ChangePassword { account, .. }
            | Request::Delete { account, .. }
            | Request::Status { account }
            | Request::PinCatalog { account, .. } => account,
        }
    }
}

/// What the vault may say back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    RegistrationStarted {
        session: SessionId,
        response: Vec<u8>,
    },
    Enrolled {
        generation: u64,
    },
    /// KE2, with the Argon2id parameters the client must use and the attempts left after this one.
    LoginStarted {
        session: SessionId,
        ke2: Vec<u8>,
        ksf: KsfParams,
        attempts_left: u8,
    },
    /// The wrapped key, sealed under the OPAQUE session key. `session` is now authenticated and
    /// usable once for ChangePassword or Delete.
    Recovered {
        session: SessionId,
        sealed_wrapped_key: Vec<u8>,
        /// The newest catalog pin the record holds; the device verifies it with `K`.
        catalog_pin: Option<CatalogPin>,
    },
    /// The pin the record holds after a [`Request::PinCatalog`]: the one sent, or a newer one.
    Pinned {
        pin: CatalogPin,
    },
    Wrong {
        attempts_left: u8,
    },
    Destroyed,
    Deleted,
    Status(AccountStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Absent,
    Destroyed {
        generation: u64,
    },
    /// `created_at_ms`: when this record was enrolled (vault clock); with `generation` it tells
    /// a device whether its record was replaced. `None` for a legacy (version 1) record.
    Active {
        generation: u64,
        created_at_ms: Option<u64>,
        attempts_left: u8,
        limit: u8,
    },
}

/// What the shell must do with a request.
#[derive(Debug)]
#[must_use]
#[allow(clippy::large_enum_variant)] // One short-lived value per request; boxing buys nothing.
pub enum Outcome {
    /// Send this reply; persist nothing.
    Reply(Reply),
    /// Persist `write` durably (fsync'd, committed on a quorum), then exchange
    /// [`Write::committed`] for the reply with [`Vault::release`]. If the write fails or the
    /// process dies first, the reply is lost and must never be sent: that is what makes a KE2
    /// impossible without a durable decrement (DESIGN.md §4 invariant 1).
    WriteThenReply { write: Write, pending: PendingReply },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticket {
    instance: [u8; 16],
    serial: u64,
}

/// A record to persist. Apply it as a compare-and-swap: commit only if the account's stored record
/// is still exactly [`Write::prior`] (`None`: no record stored); otherwise drop the whole outcome
/// and re-run the request on the fresh record. This keeps concurrent requests from spending the
/// same attempt twice.
#[derive(Debug)]
#[must_use]
pub struct Write {
    ticket: Ticket,
    prior: Option<Record>,
    record: Record,
}

impl Write {
    pub fn record(&self) -> &Record {
        &self.record
    }

    pub fn prior(&self) -> Option<&Record> {
        self.prior.as_ref()
    }

    /// The proof that this write is durable. Call it ONLY after the write has committed
    /// (fsync'd locally and acknowledged by a quorum of replicas); calling it earlier breaks
    /// the guess limit under crashes.
    pub fn committed(self) -> Durable {
        Durable {
            ticket: self.ticket,
        }
    }

    /// The proof that this write will never be applied: call it ONLY when storage refused it
    /// because the stored record was no longer [`Write::prior`] (a lost compare-and-swap). An
    /// I/O error or an unknown outcome is not a refusal: drop the write instead.
    pub fn rejected(self) -> Rejected {
        Rejected {
            ticket: self.ticket,
        }
    }
}

/// Proof, built only by [`Write::rejected`], that one particular write lost its
/// compare-and-swap and was not applied.
#[derive(Debug)]
pub struct Rejected {
    ticket: Ticket,
}

/// Proof, built only by [`Write::committed`], that one particular write is durable.
#[derive(Debug)]
pub struct Durable {
    ticket: Ticket,
}

/// A reply held back until its write is durable; opened only by [`Vault::release`].
#[derive(Debug)]
#[must_use]
pub struct PendingReply {
    ticket: Ticket,
    now: u64,
    kind: Pending,
    /// The session this request used up, given back by [`Vault::abandon`] if the write loses
    /// its compare-and-swap: a correct KE3 that raced another request must not be lost.
    consumed: Option<(SessionId, Session)>,
}

#[derive(Debug)]
enum Pending {
    Reply(Reply),
    /// The session starts to exist only once the write is durable.
    WithSession {
        id: SessionId,
        session: Session,
        reply: Reply,
    },
}

/// The vault core for one partition: long-term OPAQUE secrets, configuration, and the in-memory
/// session table. One instance per process; after a crash, build a new one (sessions are lost).
pub struct Vault {
    secrets: VaultSecrets,
    config: VaultConfig,
    sessions: Sessions,
    instance: [u8; 16],
    serial: u64,
}

impl core::fmt::Debug for Vault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vault")
            .field("config", &self.config)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Vault {
    pub fn new<R: RngCore + CryptoRng>(
        secrets: VaultSecrets,
        config: VaultConfig,
        rng: &mut R,
    ) -> Self {
        let mut instance = [0u8; 16];
        rng.fill_bytes(&mut instance);
        Self {
            sessions: Sessions::new(config.max_sessions, config.max_sessions_per_account),
            secrets,
            config,
            instance,
            serial: 0,
        }
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn purge_expired(&mut self, now: u64) {
        self.sessions.purge_expired(now);
    }

    /// Decides one request. `stored` is the account's current record as loaded by the shell.
    /// An `Err` never asks for a write.
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        stored: Option<&Record>,
        request: Request,
        rng: &mut R,
        now: u64,
    ) -> Result<Outcome, VaultError> {
        if stored.is_some_and(|r| r.account() != request.account()) {
            return Err(VaultError::RecordAccountMismatch);
        }
        match request {
            Request::RegisterStart {
                account,
                registration_request,
            } => {
                let request = parse_registration_request(&registration_request)?;
                let generation = stored.map_or(0, Record::generation);
                self.open_registration(account, generation, request, rng, now)
            }
            Request::RegisterFinish {
                account,
                session,
                upload,
                wrapped_key,
                attempt_limit,
                ksf,
                catalog_key,
            } => {
                let mut input =
                    self.parse_enrollment(&session, &upload, wrapped_key, attempt_limit, ksf)?;
                input.catalog_key = catalog_key;
                self.register_finish(stored, account, input, now)
            }
            Request::LoginStart { account, ke1 } => {
                self.login_start(stored, account, &ke1, rng, now)
            }
            Request::LoginFinish {
                account,
                session,
                ke3,
            } => self.login_finish(stored, account, &session, &ke3, now),
            Request::ChangePassword {
                account,
                session,
                registration_request,
            } => {
                let id = SessionId::parse(&session)?;
                let request = parse_registration_request(&registration_request)?;
                self.sessions.reserve(&account, now)?;
                let (record, _) = self.take_authenticated(stored, &id, &account, now)?;
                let generation = record.generation();
                self.open_registration(account, generation, request, rng, now)
            }
            Request::Delete { account, session } => {
                let id = SessionId::parse(&session)?;
                let (record, session) = self.take_authenticated(stored, &id, &account, now)?;
                let tombstone = record.tombstone()?;
                let pending = Pending::Reply(Reply::Deleted);
                Ok(self.write_then(stored, tombstone, now, pending, Some((id, session))))
            }
            Request::Status { .. } => Ok(Outcome::Reply(Reply::Status(status(stored)))),
            Request::PinCatalog { pin, .. } => {
                let pin =
                    CatalogPin::decode(&pin).ok_or(VaultError::Malformed(Field::CatalogPin))?;
                self.pin_catalog(stored, pin, now)
            }
        }
    }

    /// Exchanges a durability proof for the reply it was holding back. Fails (and the reply is
    /// gone) if the proof belongs to another write or to another vault instance.
    pub fn release(&mut self, pending: PendingReply, proof: Durable) -> Result<Reply, VaultError> {
        if pending.ticket != proof.ticket {
            return Err(VaultError::ProofMismatch);
        }
        match pending.kind {
            Pending::Reply(reply) => Ok(reply),
            Pending::WithSession { id, session, reply } => {
                self.sessions.insert_reserved(id, session, pending.now);
                Ok(reply)
            }
        }
    }

    /// Drops an outcome whose write was refused (see [`Write::rejected`]), and gives back the
    /// session the request consumed so that the shell can re-run the request on the fresh
    /// record: a correct KE3 that raced a guesser's KE1 is not lost. Fails (and gives nothing
    /// back) if the proof belongs to another write or another vault instance.
    pub fn abandon(&mut self, pending: PendingReply, proof: Rejected) -> Result<(), VaultError> {
        if pending.ticket != proof.ticket {
            return Err(VaultError::ProofMismatch);
        }
        if let Some((id, session)) = pending.consumed {
            self.sessions.insert_reserved(id, session, pending.now);
        }
        Ok(())
    }

    /// The identifiers bound into the transcript: the account and the vault, never the salted
    /// credential identifier, which only selects the OPRF key and never leaves the vault.
    fn login_parameters<'a>(&'a self, account: &'a AccountId) -> ServerLoginParameters<'a, 'a> {
        ServerLoginParameters {
            context: Some(OPAQUE_CONTEXT),
            identifiers: identifiers(account, &self.config.server_id),
        }
    }

    fn expiry(&self, now: u64) -> u64 {
        now.saturating_add(self.config.session_ttl_ms)
    }

    fn write_then(
        &mut self,
        prior: Option<&Record>,
        record: Record,
        now: u64,
        kind: Pending,
        consumed: Option<(SessionId, Session)>,
    ) -> Outcome {
        self.serial += 1;
        let ticket = Ticket {
            instance: self.instance,
            serial: self.serial,
        };
        Outcome::WriteThenReply {
            write: Write {
                ticket,
                prior: prior.cloned(),
                record,
            },
            pending: PendingReply {
                ticket,
                now,
                kind,
                consumed,
            },
        }
    }

    fn open_registration<R: RngCore + CryptoRng>(
        &mut self,
        account: AccountId,
        generation: u64,
        request: RegistrationRequest<crate::Suite>,
        rng: &mut R,
        now: u64,
    ) -> Result<Outcome, VaultError> {
        self.sessions.reserve_registration(&account, now)?;
        // A fresh OPRF key per registration: evaluating it answers nothing about any record.
        let mut salt = [0u8; CREDENTIAL_SALT_LEN];
        rng.fill_bytes(&mut salt);
        let credential_id = salted_credential_id(&account, &salt);
        let start = ServerRegistration::start(self.secrets.setup(), request, &credential_id)
            .map_err(|_| VaultError::Internal)?;
        let id = self.sessions.fresh_id(rng);
        let session = Session {
            account,
            generation,
            expires_at: self.expiry(now),
            step: Step::Registration { salt },
        };
        self.sessions.insert_reserved(id, session, now);
        Ok(Outcome::Reply(Reply::RegistrationStarted {
            session: id,
            response: start.message.serialize().to_vec(),
        }))
    }

    fn parse_enrollment(
        &self,
        session: &[u8],
        upload: &[u8],
        wrapped_key: Vec<u8>,
        attempt_limit: u8,
        ksf: KsfParams,
    ) -> Result<Enrollment, VaultError> {
        let id = SessionId::parse(session)?;
        let upload = parse_exact(
            upload,
            REGISTRATION_UPLOAD_LEN,
            RegistrationUpload::<crate::Suite>::deserialize,
        )
        .ok_or(VaultError::Malformed(Field::RegistrationUpload))?;
        if !(1..=MAX_WRAPPED_KEY_LEN).contains(&wrapped_key.len()) {
            return Err(VaultError::Malformed(Field::WrappedKey));
        }
        let limit = AttemptLimit::new(attempt_limit)
            .ok_or(VaultError::AttemptLimitOutOfRange(attempt_limit.into()))?;
        if !ksf.at_least(&self.config.min_ksf) {
            return Err(VaultError::KsfBelowPolicy);
        }
        Ok(Enrollment {
            id,
            limit,
            ksf,
            registration: Box::new(ServerRegistration::finish(upload)),
            wrapped_key,
            catalog_key: None,
        })
    }

    /// Verifies `pin` against the record's catalog key first (so that nothing unsigned learns
    /// the pin held), then keeps it if it is further along than the one held.
    fn pin_catalog(
        &mut self,
        stored: Option<&Record>,
        pin: CatalogPin,
        now: u64,
    ) -> Result<Outcome, VaultError> {
        let record = stored.ok_or(VaultError::NoRecord)?;
        if record.is_destroyed() {
            return Err(VaultError::Destroyed);
        }
        let key = record.catalog_key().ok_or(VaultError::NoCatalogKey)?;
        if !pin.verify(key, record.account()) {
            return Err(VaultError::BadCatalogPin);
        }
        match record.catalog_pin() {
            Some(held) if held.sequence() >= pin.sequence() => {
                Ok(Outcome::Reply(Reply::Pinned { pin: held.clone() }))
            }
            _ => {
                let next = record.with_pin(pin.clone());
                let pending = Pending::Reply(Reply::Pinned { pin });
                Ok(self.write_then(stored, next, now, pending, None))
            }
        }
    }

    /// Writes the new record at generation + 1, but only if the record is still at the generation
    /// the registration started from: an old enrollment can never overwrite a newer record or
    /// resurrect a tombstone.
    fn register_finish(
        &mut self,
        stored: Option<&Record>,
        account: AccountId,
        input: Enrollment,
        now: u64,
    ) -> Result<Outcome, VaultError> {
        let session = self.sessions.take(&input.id, &account, now, |s| {
            matches!(s, Step::Registration { .. })
        })?;
        let Step::Registration { salt } = session.step else {
            return Err(VaultError::Internal);
        };
        if stored.map_or(0, Record::generation) != session.generation {
            return Err(VaultError::StaleGeneration);
        }
        // A client that sends no catalog key (an old one) must not drop a record's pin.
        if input.catalog_key.is_none() && stored.and_then(Record::catalog_key).is_some() {
            return Err(VaultError::CatalogKeyRequired);
        }
        let generation = stored.map_or(Ok(1), Record::next_generation)?;
        let ring = stored.map(|r| r.recent_ke1().to_vec()).unwrap_or_default();
        // The same K (a password change) keeps its pin; a new K starts without one.
        let catalog = input.catalog_key.map(|key| {
            Box::new(CatalogState {
                key,
                pin: stored
                    .filter(|r| r.catalog_key() == Some(&key))
                    .and_then(Record::catalog_pin)
                    .cloned(),
            })
        });
        let active = Active {
            credential: Credential::Salted {
                salt,
                created_at_ms: now,
            },
            limit: input.limit,
            attempts_left: input.limit.get(),
            ksf: input.ksf,
            registration: input.registration,
            wrapped_key: input.wrapped_key,
            catalog,
        };
        let record = Record::enrolled(account, generation, ring, active);
        let pending = Pending::Reply(Reply::Enrolled { generation });
        Ok(self.write_then(stored, record, now, pending, Some((input.id, session))))
    }

    fn login_start<R: RngCore + CryptoRng>(
        &mut self,
        stored: Option<&Record>,
        account: AccountId,
        ke1_bytes: &[u8],
        rng: &mut R,
        now: u64,
    ) -> Result<Outcome, VaultError> {
        let ke1 = parse_exact(ke1_bytes, KE1_LEN, CredentialRequest::deserialize)
            .ok_or(VaultError::Malformed(Field::Ke1))?;
        let record = stored.ok_or(VaultError::NoRecord)?;
        let ke1_digest: [u8; 32] = Sha256::digest(ke1_bytes).into();
        if let Some(reply) = self.answered_ke1(record, &account, &ke1_digest, now) {
            return Ok(Outcome::Reply(reply));
        }
        let fingerprint = ke1_fingerprint(ke1_bytes);
        if record.saw_ke1(&fingerprint) && !record.is_destroyed() {
            return Err(VaultError::ReplayedKe1);
        }
        let (next_state, verdict) = guess_step(record.guess_state(), GuessEvent::Ke1);
        if verdict == GuessVerdict::Refuse {
            return Err(VaultError::Destroyed);
        }
        let next = record.after_guess(next_state)?.with_ke1(fingerprint);
        match (verdict, record.active()) {
            (GuessVerdict::ReleaseKe2 { attempts_left }, Some(active)) => {
                self.sessions.reserve(&account, now)?;
                let credential_id = record.credential_id().ok_or(VaultError::Internal)?;
                let start = ServerLogin::start(
                    rng,
                    self.secrets.setup(),
                    Some((*active.registration).clone()),
                    ke1,
                    &credential_id,
                    self.login_parameters(&account),
                )
                .map_err(|_| VaultError::Internal)?;
                let id = self.sessions.fresh_id(rng);
                let reply = Reply::LoginStarted {
                    session: id,
                    ke2: start.message.serialize().to_vec(),
                    ksf: active.ksf,
                    attempts_left,
                };
                let login = Login {
                    state: start.state,
                    ke1: ke1_digest,
                    reply: reply.clone(),
                };
                let session = Session {
                    account,
                    generation: record.generation(),
                    expires_at: self.expiry(now),
                    step: Step::Login(Box::new(login)),
                };
                let pending = Pending::WithSession { id, session, reply };
                Ok(self.write_then(stored, next, now, pending, None))
            }
            (GuessVerdict::Destroy, _) => {
                let pending = Pending::Reply(Reply::Destroyed);
                Ok(self.write_then(stored, next, now, pending, None))
            }
            _ => Err(VaultError::Internal),
        }
    }

    fn login_finish(
        &mut self,
        stored: Option<&Record>,
        account: AccountId,
        session: &[u8],
        ke3_bytes: &[u8],
        now: u64,
    ) -> Result<Outcome, VaultError> {
        let id = SessionId::parse(session)?;
        let ke3 = parse_exact(ke3_bytes, KE3_LEN, CredentialFinalization::deserialize)
            .ok_or(VaultError::Malformed(Field::Ke3))?;
        match &self.sessions.peek(&id, &account, now)?.step {
            Step::Login(_) => {}
            Step::Authenticated(done) | Step::Finished(done) => {
                let reply = done.repeat(ke3_bytes, stored.map(Record::generation))?;
                return Ok(Outcome::Reply(reply));
            }
            Step::Registration { .. } => return Err(VaultError::SessionKindMismatch),
        }
        let session = self
            .sessions
            .take(&id, &account, now, |s| matches!(s, Step::Login(_)))?;
        let record = record_of(stored, &session)?;
        let consumed = Some((id, session.clone()));
        let Step::Login(login) = session.step else {
            return Err(VaultError::Internal);
        };
        let ke3_bytes: [u8; KE3_LEN] = ke3_bytes.try_into().map_err(|_| VaultError::Internal)?;
        let session_key = login
            .state
            .finish(ke3, self.login_parameters(&account))
            .ok()
            .map(|mut r| take_key(&mut r.session_key));
        let event = match session_key {
            Some(_) => GuessEvent::Ke3Ok,
            None => GuessEvent::Ke3Fail,
        };
        let (next_state, verdict) = guess_step(record.guess_state(), event);
        let next = record.after_guess(next_state)?;
        match (verdict, session_key, record.wrapped_key()) {
            (GuessVerdict::Recovered, Some(key), Some(wrapped)) => {
                let sealed_wrapped_key =
                    seal_reply(&key, &account, wrapped).ok_or(VaultError::Internal)?;
                let reply = Reply::Recovered {
                    session: id,
                    sealed_wrapped_key,
                    catalog_pin: record.catalog_pin().cloned(),
                };
                let done = answered(ke3_bytes, &reply, &next);
                let session = self.session(account, record, now, Step::Authenticated(done));
                let pending = Pending::WithSession { id, session, reply };
                Ok(self.write_then(stored, next, now, pending, consumed))
            }
            (GuessVerdict::Wrong { attempts_left }, None, _) => {
                // No write: the outcome is final now, so the retry memo goes in at once, in the
                // slot the login session just left.
                let reply = Reply::Wrong { attempts_left };
                let done = answered(ke3_bytes, &reply, &next);
                let session = self.session(account, record, now, Step::Finished(done));
                self.sessions.insert_reserved(id, session, now);
                Ok(Outcome::Reply(reply))
            }
            (GuessVerdict::Destroy, None, _) => {
                let reply = Reply::Destroyed;
                let done = answered(ke3_bytes, &reply, &next);
                let session = self.session(account, record, now, Step::Finished(done));
                let pending = Pending::WithSession { id, session, reply };
                Ok(self.write_then(stored, next, now, pending, consumed))
            }
            _ => Err(VaultError::Internal),
        }
    }

    /// The reply already released for this KE1, if its login session is still open and
    /// unfinished at the record's generation: a retry after a lost KE2 gets it again, spending
    /// nothing and evaluating nothing. A live record only: a destroyed one answers `Destroyed`.
    fn answered_ke1(
        &self,
        record: &Record,
        account: &AccountId,
        ke1_digest: &[u8; 32],
        now: u64,
    ) -> Option<Reply> {
        if record.is_destroyed() {
            return None;
        }
        (self.sessions)
            .answered_ke1(account, record.generation(), ke1_digest, now)
            .cloned()
    }

    /// A session of `account` at `record`'s generation, live for the session TTL from `now`.
    fn session(&self, account: AccountId, record: &Record, now: u64, step: Step) -> Session {
        Session {
            account,
            generation: record.generation(),
            expires_at: self.expiry(now),
            step,
        }
    }

    /// Consumes an authenticated session and returns the record it is still valid for.
    fn take_authenticated<'r>(
        &mut self,
        stored: Option<&'r Record>,
        id: &SessionId,
        account: &AccountId,
        now: u64,
    ) -> Result<(&'r Record, Session), VaultError> {
        let session = self
            .sessions
            .take(id, account, now, |s| matches!(s, Step::Authenticated(_)))?;
        let record = record_of(stored, &session)?;
        Ok((record, session))
    }
}

/// The record `session` is still valid for: live, and at the generation the session started at.
fn record_of<'r>(stored: Option<&'r Record>, session: &Session) -> Result<&'r Record, VaultError> {
    stored
        .filter(|r| !r.is_destroyed() && r.generation() == session.generation)
        .ok_or(VaultError::NoSession)
}

/// The memo of a processed KE3: its reply, valid while the record stays as `next` left it.
fn answered(ke3: [u8; KE3_LEN], reply: &Reply, next: &Record) -> Box<Answered> {
    Box::new(Answered {
        ke3,
        reply: reply.clone(),
        generation: next.generation(),
    })
}

struct Enrollment {
    id: SessionId,
    limit: AttemptLimit,
    ksf: KsfParams,
    registration: Box<ServerRegistration<crate::Suite>>,
    wrapped_key: Vec<u8>,
    catalog_key: Option<CatalogKey>,
}

fn parse_registration_request(
    bytes: &[u8],
) -> Result<RegistrationRequest<crate::Suite>, VaultError> {
    parse_exact(
        bytes,
        REGISTRATION_REQUEST_LEN,
        RegistrationRequest::deserialize,
    )
    .ok_or(VaultError::Malformed(Field::RegistrationRequest))
}

fn status(stored: Option<&Record>) -> AccountStatus {
    match stored {
        None => AccountStatus::Absent,
        Some(r) => match r.attempts() {
            None => AccountStatus::Destroyed {
                generation: r.generation(),
            },
            Some((attempts_left, limit)) => AccountStatus::Active {
                generation: r.generation(),
                created_at_ms: r.created_at_ms(),
                attempts_left,
                limit,
            },
        },
    }
}
