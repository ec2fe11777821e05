//! The device library: what an app embeds, and all that the `lockbox` CLI runs on a device.
//!
//! [`Device`] is the whole user flow on one home directory: enable backups (password or
//! recovery code), back up, restore on a new phone, status, change the password, rotate the key,
//! disable. Underneath, [`backup`] moves directories to and from object storage (walk, archive,
//! encrypt, upload; the swap check; the verified atomic restore), [`catalog`] tells this key's
//! intact backups from everything else in a bucket, and [`VaultClient`] is the device side of
//! the Backup Key Vault (DESIGN.md §4): deposit the backup key `K` under a password
//! ([`VaultClient::enroll`]), get it back ([`VaultClient::recover`]), change the password,
//! delete the record, and read its status.
//!
//! Does: drive `lockbox-vault-core`'s sans-IO client steps (OPAQUE, wrapping `K` under the export
//! key), seal every request in an HPKE envelope to the pinned partition key
//! (`lockbox-proto`), and carry it over gRPC (tonic). Argon2id runs on a blocking thread.
//! Every request carries, inside the envelope, the account token the caller got from the
//! messaging service's login ([`VaultClient::with_token`]) and the time it was sealed.
//! Does not: pick or verify which vault to talk to — the caller hands a [`VaultTarget`] whose
//! keys it pinned (in production, from the signed fleet manifest; [`VaultClient::discover`] is
//! trust-on-first-use, for tests and demos only); obtain account tokens; retry, except a login
//! step whose reply was lost in transit (safe: the vault repeats its first answer).
//! Trusts: the pinned partition HPKE key and OPAQUE identity, the OS RNG, and the crates above.
//! The password and `K` never leave the device; the vault and any relay see only ciphertext.
#![forbid(unsafe_code)]

pub mod backup;
pub mod catalog;
mod device;
mod error;
pub mod fleet;
pub mod home;
mod snapshots;

pub use backup::{Cancel, Fault, Progress, Step};
pub use device::{
    BackupReport, Device, DeviceError, DeviceStatus, Disabled, EnableOptions, Rotated, Secret,
    pinned_client, vault_fault,
};
pub use error::ClientError;
pub use home::{FleetSettings, Protection, Settings};
pub use snapshots::{
    FirstRestore, Restored, SnapshotBackup, SnapshotPrune, VaultPin, holds_backups, restore_first,
};

/// An error and its causes on one line, joined with ": ", without repeating a cause that its
/// parent already spelled out.
pub fn render_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    for cause in std::iter::successors(Some(err), |e| e.source()) {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

use lockbox_crypto::BackupKey;
use lockbox_proto::envelope::{self, AwaitingResponse, PartitionPublicKey};
use lockbox_proto::pb::{self, request::Op, response::Result as Reply};
use lockbox_proto::{MAX_MESSAGE_BYTES, WIRE_VERSION};
pub use lockbox_token::{FixedToken, TokenSource};
use lockbox_vault_core::client::{ClientEnrollment, ClientError as StepError, ClientRecovery};
use lockbox_vault_core::{
    AccountId, AttemptLimit, CATALOG_PIN_BODY_LEN, CatalogKey, CatalogPin, KE3_LEN, KsfParams,
    VaultIdentity,
};
use prost::Message;
use rand_core::{CryptoRng, OsRng, RngCore};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One vault partition, with the keys the device pins for it.
#[derive(Debug, Clone)]
pub struct VaultTarget {
    /// `http://127.0.0.1:PORT` or `https://…`.
    pub endpoint: String,
    pub partition: u32,
    /// Every request is sealed to this key.
    pub hpke_public_key: PartitionPublicKey,
    /// OPAQUE server identity, checked at enrollment and at every login.
    pub identity: VaultIdentity,
}

/// What the vault knows about an account. The generation changes with every enrollment,
/// password change and destruction, so a device that remembers it sees a replaced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Absent,
    Active {
        attempts_left: u8,
        limit: u8,
        generation: u64,
        /// When this record was enrolled (Unix ms; 0 if the vault does not know).
        created_at_ms: u64,
    },
    Destroyed {
        generation: u64,
    },
}

impl Status {
    /// `(attempts_left, limit)` of an active record.
    pub fn attempts(&self) -> Option<(u8, u8)> {
        match *self {
            Status::Active {
                attempts_left,
                limit,
                ..
            } => Some((attempts_left, limit)),
            _ => None,
        }
    }

    pub fn is_destroyed(&self) -> bool {
        matches!(self, Status::Destroyed { .. })
    }
}

/// A login between KE2 and KE3. The attempt is already spent; dropping this does not return it.
pub struct PendingLogin {
    account: AccountId,
    session: Vec<u8>,
    ke2: Vec<u8>,
    ksf: KsfParams,
    attempts_left: u8,
    recovery: ClientRecovery,
}

impl PendingLogin {
    /// Attempts left after this one, as the vault reported with KE2.
    pub fn attempts_left(&self) -> u8 {
        self.attempts_left
    }
}

impl core::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("account", &self.account)
            .field("attempts_left", &self.attempts_left)
            .finish_non_exhaustive()
    }
}

/// The most Argon2id work a vault may ask of this device at login, and the most a deposit may
/// choose: near the deposit default (64 MiB, t=3), so that a hostile vault cannot pin a phone
/// with a 1 GiB, t=64 hash.
pub const DEVICE_MAX_KSF: (u32, u32, u32) = (128 * 1024, 6, 4);

/// A connection to one vault partition. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct VaultClient {
    target: VaultTarget,
    rpc: pb::vault_client::VaultClient<Channel>,
    tokens: Option<Arc<dyn TokenSource>>,
}

impl core::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VaultClient")
            .field("target", &self.target)
            .field("tokens", &self.tokens.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl VaultClient {
    /// Connects to `target.endpoint`: plaintext `http://` (loopback, tests) or `https://`. This
    /// workspace builds tonic without bundled root certificates, so for `https://` use
    /// [`Self::connect_with_ca`] with the fleet's CA.
    pub async fn connect(target: VaultTarget) -> Result<Self, ClientError> {
        Self::connect_trusting(target, None).await
    }

    /// Connects over TLS, trusting only the CA certificate(s) in `ca_pem`.
    pub async fn connect_with_ca(target: VaultTarget, ca_pem: &[u8]) -> Result<Self, ClientError> {
        Self::connect_trusting(target, Some(ca_pem)).await
    }

    /// [`Self::connect_with_ca`] when a CA is given, else [`Self::connect`].
    pub async fn connect_trusting(
        target: VaultTarget,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let channel = endpoint(&target.endpoint, ca_pem)?.connect().await?;
        Ok(Self::from_channel(target, channel))
    }

    fn from_channel(target: VaultTarget, channel: Channel) -> Self {
        let max = MAX_MESSAGE_BYTES * 2;
        let rpc = pb::vault_client::VaultClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        Self {
            target,
            rpc,
            tokens: None,
        }
    }

    /// Sends `token` (the account's PASETO from the messaging service's login) inside every
    /// request. The vault refuses requests without a valid token for their account.
    pub fn with_token(self, token: impl Into<String>) -> Self {
        self.with_token_source(Arc::new(FixedToken::new(token)))
    }

    /// Asks `source` for each request's account token.
    pub fn with_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(source);
        self
    }

    /// Asks the node at `endpoint` for partition `partition`'s public keys.
    ///
    /// TRUST ON FIRST USE — for tests and demos only. Whoever answers this call chooses the keys,
    /// so a man in the middle could impersonate the vault. Production clients pin the keys from
    /// the fleet manifest, signed by the fleet key they ship with.
    pub async fn discover(endpoint: &str, partition: u32) -> Result<VaultTarget, ClientError> {
        Self::discover_with_ca(endpoint, partition, None).await
    }

    /// [`Self::discover`] over TLS trusting only `ca_pem` (when given). Same caveat.
    pub async fn discover_with_ca(
        endpoint: &str,
        partition: u32,
        ca_pem: Option<&[u8]>,
    ) -> Result<VaultTarget, ClientError> {
        let channel = self::endpoint(endpoint, ca_pem)?.connect().await?;
        let info = pb::vault_client::VaultClient::new(channel)
            .info(pb::InfoRequest {})
            .await?
            .into_inner();
        let p = info
            .partitions
            .into_iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| ClientError::Envelope {
                code: tonic::Code::NotFound,
                message: format!("partition {partition} is not served at {endpoint}"),
            })?;
        let hpke_public_key =
            PartitionPublicKey::from_bytes(&p.hpke_public_key).map_err(ClientError::protocol)?;
        let public_key = p
            .opaque_server_public_key
            .as_ref()
            .try_into()
            .map_err(|_| ClientError::protocol("OPAQUE server public key is not 32 bytes"))?;
        Ok(VaultTarget {
            endpoint: endpoint.to_owned(),
            partition,
            hpke_public_key,
            identity: VaultIdentity {
                server_id: lockbox_vault_core::partition_server_id(partition),
                public_key,
            },
        })
    }

    pub fn target(&self) -> &VaultTarget {
        &self.target
    }

    /// Deposits `key` under `password`, with `limit` wrong guesses allowed (1..=100) and the
    /// Argon2id cost `ksf`. Replaces any existing record of the account (a new generation).
    pub async fn enroll(
        &self,
        account: &[u8],
        password: &[u8],
        key: &BackupKey,
        limit: u8,
        ksf: KsfParams,
    ) -> Result<(), ClientError> {
        let id = account_id(account)?;
        let limit = attempt_limit(limit)?;
        check_device_ksf(ksf)?;
        let (registration_request, state) =
            ClientEnrollment::start(password, id, self.target.identity.clone(), &mut OsRng)?;
        let op = Op::RegisterStart(pb::RegisterStart {
            registration_request: registration_request.into(),
        });
        let started = self.registration_started(account, op).await?;
        let upload =
            finish_registration(state, started.registration_response, key, limit, ksf).await?;
        self.expect_done(account, register_finish(started.session, upload))
            .await
    }

    /// Recovers `K` with `password`: KE1 → KE2 → KE3 → open. Spends one attempt.
    pub async fn recover(&self, account: &[u8], password: &[u8]) -> Result<BackupKey, ClientError> {
        let pending = self.login_start(account, password).await?;
        self.login_finish(pending).await
    }

    /// Proves `old_password`, then re-registers `new_password` over the same `K`, keeping the
    /// attempt limit. Spends (and, on success, restores) one attempt.
    pub async fn change_password(
        &self,
        account: &[u8],
        old_password: &[u8],
        new_password: &[u8],
        ksf: KsfParams,
    ) -> Result<(), ClientError> {
        let limit = match self.status(account).await? {
            Status::Active { limit, .. } => AttemptLimit::new(limit)
                .ok_or_else(|| ClientError::protocol("vault reported an invalid attempt limit"))?,
            Status::Absent => return Err(ClientError::NoRecord),
            Status::Destroyed { .. } => return Err(ClientError::Destroyed),
        };
        let pending = self.login_start(account, old_password).await?;
        let (key, session, _) = self.authenticate(pending).await?;
        let (registration_request, state) = ClientEnrollment::start(
            new_password,
            account_id(account)?,
            self.target.identity.clone(),
            &mut OsRng,
        )?;
        let op = Op::ChangePasswordStart(pb::ChangePasswordStart {
            session: session.into(),
            registration_request: registration_request.into(),
        });
        let started = self.registration_started(account, op).await?;
        let upload =
            finish_registration(state, started.registration_response, &key, limit, ksf).await?;
        self.expect_done(account, register_finish(started.session, upload))
            .await
    }

    /// Proves `password`, then destroys the record.
    pub async fn delete(&self, account: &[u8], password: &[u8]) -> Result<(), ClientError> {
        let pending = self.login_start(account, password).await?;
        let (_key, session, _) = self.authenticate(pending).await?;
        let op = Op::Delete(pb::Delete {
            session: session.into(),
        });
        self.expect_done(account, op).await
    }

    pub async fn status(&self, account: &[u8]) -> Result<Status, ClientError> {
        account_id(account)?;
        let response = self.call(account, Op::Status(pb::Status {})).await?;
        let reply = expect(response, |r| match r {
            Reply::Status(s) => Some(s),
            _ => None,
        })?;
        use pb::status_reply::State;
        let byte =
            |v: u32| u8::try_from(v).map_err(|_| ClientError::protocol("status out of range"));
        match State::try_from(reply.state) {
            Ok(State::Absent) => Ok(Status::Absent),
            Ok(State::Destroyed) => Ok(Status::Destroyed {
                generation: reply.generation,
            }),
            Ok(State::Active) => Ok(Status::Active {
                attempts_left: byte(reply.attempts_left)?,
                limit: byte(reply.attempt_limit)?,
                generation: reply.generation,
                created_at_ms: reply.created_at_ms,
            }),
            Err(_) => Err(ClientError::protocol("unknown account state")),
        }
    }

    /// Sends KE1 and returns once the vault has spent the attempt and answered with KE2.
    pub async fn login_start(
        &self,
        account: &[u8],
        password: &[u8],
    ) -> Result<PendingLogin, ClientError> {
        let id = account_id(account)?;
        let (ke1, recovery) = ClientRecovery::start(
            password,
            id.clone(),
            self.target.identity.clone(),
            &mut OsRng,
        )?;
        let op = Op::LoginStart(pb::LoginStart { ke1: ke1.into() });
        let started = expect(self.call_login(account, op).await?, |r| match r {
            Reply::LoginStarted(s) => Some(s),
            _ => None,
        })?;
        let ksf = started
            .ksf
            .ok_or_else(|| ClientError::protocol("KE2 without Argon2id parameters"))?;
        let ksf = KsfParams::new(ksf.m_cost_kib, ksf.t_cost, ksf.p_cost)
            .map_err(ClientError::protocol)?;
        check_device_ksf(ksf)?;
        Ok(PendingLogin {
            account: id,
            session: started.session.to_vec(),
            ke2: started.ke2.to_vec(),
            ksf,
            attempts_left: u8::try_from(started.attempts_left)
                .map_err(|_| ClientError::protocol("attempts left out of range"))?,
            recovery,
        })
    }

    /// Processes KE2, sends KE3 and opens the wrapped key.
    pub async fn login_finish(&self, pending: PendingLogin) -> Result<BackupKey, ClientError> {
        self.authenticate(pending).await.map(|(key, _, _)| key)
    }

    /// [`Self::recover`], and the catalog pin the vault holds for the account (checked against
    /// `K`: a pin `K` did not sign is [`ClientError::BadCatalogPin`]).
    pub async fn recover_pinned(
        &self,
        account: &[u8],
        password: &[u8],
    ) -> Result<(BackupKey, Option<CatalogPin>), ClientError> {
        let pending = self.login_start(account, password).await?;
        self.authenticate(pending)
            .await
            .map(|(key, _, pin)| (key, pin))
    }

    /// Signs `sequence` and `body` with `key`'s catalog key and has the vault keep them as the
    /// account's catalog pin. Returns the pin the vault holds afterwards: this one, or a newer
    /// one it already had (it never moves back). Spends no attempt.
    pub async fn pin_catalog(
        &self,
        account: &[u8],
        key: &BackupKey,
        sequence: u64,
        body: [u8; CATALOG_PIN_BODY_LEN],
    ) -> Result<CatalogPin, ClientError> {
        let id = account_id(account)?;
        let pin = CatalogPin::sign(key, &id, sequence, body);
        let op = Op::PinCatalog(pb::PinCatalog {
            pin: pin.encode().to_vec().into(),
        });
        let held = expect(self.call(account, op).await?, |r| match r {
            Reply::Pinned(p) => Some(p),
            _ => None,
        })?;
        CatalogPin::decode(&held.pin)
            .filter(|p| p.verify(&CatalogKey::of(key), &id))
            .ok_or(ClientError::BadCatalogPin)
    }

    /// Seals `request` for `account`, sends it, and opens and decodes the answer.
    pub async fn call_raw(
        &self,
        account: &[u8],
        request: pb::Request,
    ) -> Result<pb::Response, ClientError> {
        let (sealed, awaiting) = self.seal(account, &request, &mut OsRng)?;
        let response = self.send_sealed(sealed).await?;
        open_response(awaiting, &response)
    }

    /// Seals `request` to this target's partition, bound to `account` (for tests that need the
    /// exact bytes, e.g. to replay or tamper with them).
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        account: &[u8],
        request: &pb::Request,
        rng: &mut R,
    ) -> Result<(pb::SealedRequest, AwaitingResponse), ClientError> {
        let plain = zeroize::Zeroizing::new(request.encode_to_vec());
        let (sealed, awaiting) = envelope::seal_request(
            &self.target.hpke_public_key,
            self.target.partition,
            account,
            &plain,
            rng,
        )
        .map_err(ClientError::protocol)?;
        let request = pb::SealedRequest {
            version: WIRE_VERSION,
            partition: self.target.partition,
            account: account.to_vec().into(),
            enc: sealed.enc.into(),
            ciphertext: sealed.ciphertext.into(),
            class: request.class().into(),
        };
        Ok((request, awaiting))
    }

    /// Sends an envelope as is.
    pub async fn send_sealed(
        &self,
        request: pb::SealedRequest,
    ) -> Result<pb::SealedResponse, ClientError> {
        let token = self
            .tokens
            .as_ref()
            .and_then(|t| t.token_for(&request.account));
        let mut call = tonic::Request::new(request);
        call.set_timeout(CALL_TIMEOUT);
        // The gateway checks the token before it relays (the vault checks the copy inside).
        if let Some(value) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
            call.metadata_mut().insert("authorization", value);
        }
        Ok(self.rpc.clone().call(call).await?.into_inner())
    }

    /// The request for `op`, with this client's account token and the time it is sealed.
    pub fn request(&self, account: &[u8], op: Op) -> pb::Request {
        pb::Request {
            account: account.to_vec().into(),
            account_token: self
                .tokens
                .as_ref()
                .and_then(|t| t.token_for(account))
                .unwrap_or_default(),
            sent_at_ms: now_ms(),
            op: Some(op),
        }
    }

    /// One request that spends no attempt. A delivery the gateway held back reached nothing,
    /// so a short hold is waited out and the request sealed and sent anew: giving up mid-way
    /// would throw away a registration or an authenticated session.
    async fn call(&self, account: &[u8], op: Op) -> Result<pb::Response, ClientError> {
        let mut waits = 0;
        loop {
            match self
                .call_raw(account, self.request(account, op.clone()))
                .await
            {
                Err(ClientError::RateLimited { retry_after, .. })
                    if waits < Self::LOGIN_TRIES && retry_after <= Self::LOGIN_RETRY_MAX_WAIT =>
                {
                    waits += 1;
                    tokio::time::sleep(retry_after).await;
                }
                other => return other,
            }
        }
    }

    async fn registration_started(
        &self,
        account: &[u8],
        op: Op,
    ) -> Result<pb::RegisterStarted, ClientError> {
        expect(self.call(account, op).await?, |r| match r {
            Reply::RegisterStarted(s) => Some(s),
            _ => None,
        })
    }

    async fn expect_done(&self, account: &[u8], op: Op) -> Result<(), ClientError> {
        expect(self.call(account, op).await?, |r| match r {
            Reply::Done(_) => Some(()),
            _ => None,
        })
    }

    /// Sends a login step, and when its reply is lost in transit (a transport failure, never a
    /// refusal by the vault) sends the same `op` again, at most [`Self::LOGIN_TRIES`] times in
    /// all, each time in a fresh envelope: the vault refuses a byte-for-byte replay, and answers
    /// the repeated KE1 or KE3 inside with the reply it gave first, spending nothing more
    /// (docs/vault-protocol.md, "Retries"). A retry the gateway holds back (a backoff or rate
    /// limit of at most [`Self::LOGIN_RETRY_MAX_WAIT`]) is sent again after the wait it names.
    async fn call_login(&self, account: &[u8], op: Op) -> Result<pb::Response, ClientError> {
        let (mut tries, mut waits, mut pause) = (1, 0, Self::LOGIN_RETRY_PAUSE);
        // Only a login start spends nothing until it is relayed; a later step follows an attempt
        // already spent, which giving up on a held-back delivery would waste.
        let paid = !matches!(op, Op::LoginStart(_));
        loop {
            let request = self.request(account, op.clone());
            let (sealed, awaiting) = self.seal(account, &request, &mut OsRng)?;
            let wait = match self.send_sealed(sealed).await {
                Ok(response) => return open_response(awaiting, &response),
                Err(ClientError::Unavailable(_)) if tries < Self::LOGIN_TRIES => {
                    tries += 1;
                    let wait = pause;
                    pause *= 2;
                    wait
                }
                // A rate-limited first login start reached nothing: the caller decides. A limited
                // retry follows a delivery the vault may have acted on (an attempt spent), and a
                // limited KE3 follows a spent attempt; the vault keeps the session only for a
                // while: wait, and ask again.
                Err(ClientError::RateLimited { retry_after, .. })
                    if (tries > 1 || paid)
                        && waits < Self::LOGIN_TRIES
                        && retry_after <= Self::LOGIN_RETRY_MAX_WAIT =>
                {
                    waits += 1;
                    retry_after
                }
                Err(e) => return Err(e),
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Deliveries of one login step whose replies are lost, and the pause before the first
    /// retry (doubled after each).
    const LOGIN_TRIES: u32 = 3;
    const LOGIN_RETRY_PAUSE: Duration = Duration::from_millis(100);
    /// The longest gateway wait a retry sits out: well inside the vault's session TTL (60 s by
    /// default), after which the repeated step could no longer be answered from its session.
    const LOGIN_RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

    /// KE2 → KE3 → wrapped key; returns `K` and the now-authenticated session id.
    async fn authenticate(
        &self,
        pending: PendingLogin,
    ) -> Result<(BackupKey, Vec<u8>, Option<CatalogPin>), ClientError> {
        let PendingLogin {
            account,
            session,
            ke2,
            ksf,
            attempts_left,
            recovery,
        } = pending;
        let account = account.as_bytes().to_vec();
        let finished = blocking(move || recovery.finish(&ke2, ksf, &mut OsRng)).await?;
        let (ke3, opening) = match finished {
            Ok(done) => done,
            Err(StepError::WrongPassword) => {
                return Err(self.concede(&account, session, attempts_left).await);
            }
            Err(e) => return Err(e.into()),
        };
        let op = Op::LoginFinish(pb::LoginFinish {
            session: session.into(),
            ke3: ke3.into(),
        });
        let ok = expect(self.call_login(&account, op).await?, |r| match r {
            Reply::LoginOk(ok) => Some(ok),
            _ => None,
        })?;
        let pin = (!ok.catalog_pin.is_empty()).then_some(ok.catalog_pin.as_ref());
        let (key, pin) = opening
            .open_pinned(&ok.sealed_wrapped_key, pin)
            .map_err(ClientError::from)?;
        Ok((key, ok.session.to_vec(), pin))
    }

    /// The device found the password wrong at KE2. The attempt is spent already; a KE3 that
    /// cannot verify closes the vault's session and, when no attempts are left, has the vault
    /// destroy the record now instead of at the next KE1. Whatever happens to that message, the
    /// answer is "wrong password" with the count the vault gave at KE2, or "destroyed".
    async fn concede(&self, account: &[u8], session: Vec<u8>, attempts_left: u8) -> ClientError {
        let mut ke3 = vec![0u8; KE3_LEN];
        OsRng.fill_bytes(&mut ke3);
        let op = Op::LoginFinish(pb::LoginFinish {
            session: session.into(),
            ke3: ke3.into(),
        });
        match self.call_login(account, op).await.map(|r| r.result) {
            Ok(Some(Reply::Error(e))) if ClientError::from_vault(&e).is_destroyed() => {
                ClientError::Destroyed
            }
            Ok(Some(Reply::WrongPassword(w))) => ClientError::WrongPassword {
                attempts_left: u8::try_from(w.attempts_left).unwrap_or(attempts_left),
            },
            _ => ClientError::WrongPassword { attempts_left },
        }
    }
}

/// How an endpoint URL would be reached, decided on the URL as the transport parses it (scheme
/// case-insensitively, host after any userinfo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `https`: the node proves itself with its TLS certificate.
    Tls,
    /// Plain `http` to this machine (`localhost` or a loopback address).
    PlainLocal,
    /// Plain `http` to another machine: nothing authenticates the node.
    PlainRemote,
}

/// The [`Transport`] of a vault endpoint URL.
pub fn transport(url: &str) -> Result<Transport, ClientError> {
    let invalid = ClientError::InvalidInput("vault endpoint is not an http:// or https:// URL");
    let uri: tonic::codegen::http::Uri = url.parse().map_err(|_| invalid.clone())?;
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(invalid);
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Ok(Transport::Tls);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(invalid);
    }
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(if local {
        Transport::PlainLocal
    } else {
        Transport::PlainRemote
    })
}

pub(crate) fn endpoint(url: &str, ca_pem: Option<&[u8]>) -> Result<Endpoint, ClientError> {
    let tls = transport(url)? == Transport::Tls;
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|_| ClientError::InvalidInput("vault endpoint is not a valid URL"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if tls {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(pem) = ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls)?;
    } else if ca_pem.is_some() {
        return Err(ClientError::InvalidInput(
            "a CA certificate needs an https:// endpoint",
        ));
    }
    Ok(ep)
}

fn account_id(account: &[u8]) -> Result<AccountId, ClientError> {
    if account.len() > lockbox_proto::MAX_ACCOUNT_BYTES {
        return Err(ClientError::InvalidInput(
            "account id is longer than 64 bytes",
        ));
    }
    AccountId::new(account)
        .map_err(|_| ClientError::InvalidInput("account id must be 1..=64 bytes"))
}

use lockbox_proto::unix_now_ms as now_ms;

/// Refuses Argon2id costs above [`DEVICE_MAX_KSF`] before any hashing.
fn check_device_ksf(k: KsfParams) -> Result<(), ClientError> {
    let (m, t, p) = DEVICE_MAX_KSF;
    if k.m_cost_kib() > m || k.t_cost() > t || k.p_cost() > p {
        return Err(ClientError::KsfTooCostly {
            m_cost_kib: k.m_cost_kib(),
            t_cost: k.t_cost(),
            p_cost: k.p_cost(),
        });
    }
    Ok(())
}

fn attempt_limit(limit: u8) -> Result<AttemptLimit, ClientError> {
    AttemptLimit::new(limit).ok_or(ClientError::InvalidInput("attempt limit must be 1..=100"))
}

fn ksf_pb(k: KsfParams) -> pb::KsfParams {
    pb::KsfParams {
        m_cost_kib: k.m_cost_kib(),
        t_cost: k.t_cost(),
        p_cost: k.p_cost(),
    }
}

/// Finishes an enrollment or a password change (the session says which).
fn register_finish(
    session: prost::bytes::Bytes,
    upload: lockbox_vault_core::client::EnrollmentUpload,
) -> Op {
    Op::RegisterFinish(pb::RegisterFinish {
        session,
        registration_upload: upload.upload.into(),
        wrapped_key: upload.wrapped_key.into(),
        attempt_limit: upload.attempt_limit.into(),
        ksf: Some(ksf_pb(upload.ksf)),
        catalog_key: upload.catalog_key.as_bytes().to_vec().into(),
    })
}

/// Opens and decodes the answer to the request `awaiting` belongs to.
pub fn open_response(
    awaiting: AwaitingResponse,
    response: &pb::SealedResponse,
) -> Result<pb::Response, ClientError> {
    if response.ciphertext.len() > MAX_MESSAGE_BYTES + envelope::RESPONSE_OVERHEAD {
        return Err(ClientError::protocol("oversized response"));
    }
    let plain = awaiting
        .open(&response.ciphertext)
        .map_err(ClientError::protocol)?;
    pb::Response::decode(plain.as_slice()).map_err(|_| ClientError::protocol("malformed response"))
}

/// Returns what `pick` finds in the reply; maps error replies to their [`ClientError`].
fn expect<T>(
    response: pb::Response,
    pick: impl FnOnce(Reply) -> Option<T>,
) -> Result<T, ClientError> {
    match response.result {
        Some(Reply::Error(e)) => Err(ClientError::from_vault(&e)),
        Some(Reply::WrongPassword(w)) => Err(ClientError::WrongPassword {
            attempts_left: u8::try_from(w.attempts_left).unwrap_or(0),
        }),
        Some(r) => pick(r).ok_or_else(|| ClientError::protocol("unexpected reply")),
        None => Err(ClientError::protocol("empty reply")),
    }
}

async fn finish_registration(
    state: ClientEnrollment,
    response: prost::bytes::Bytes,
    key: &BackupKey,
    limit: AttemptLimit,
    ksf: KsfParams,
) -> Result<lockbox_vault_core::client::EnrollmentUpload, ClientError> {
    let key = key.clone();
    blocking(move || state.finish(&response, &key, limit, ksf, &mut OsRng))
        .await?
        .map_err(ClientError::from)
}

/// Runs Argon2id-heavy work off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ClientError::protocol("client worker thread failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile vault must not pin the device with an Argon2id cost far above the deposit
    /// default: anything above [`DEVICE_MAX_KSF`] is refused before hashing.
    #[test]
    fn argon2_costs_above_the_device_cap_are_refused() {
        assert!(check_device_ksf(KsfParams::DEFAULT).is_ok());
        let (m, t, p) = DEVICE_MAX_KSF;
        assert!(check_device_ksf(KsfParams::new(m, t, p).unwrap()).is_ok());
        for (m, t, p) in [
            (m + 1, t, p),
            (m, t + 1, p),
            (m, t, p + 1),
            (1 << 20, 64, 16),
        ] {
            let err = check_device_ksf(KsfParams::new(m, t, p).unwrap()).unwrap_err();
            assert!(matches!(err, ClientError::KsfTooCostly { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn requests_carry_the_token_and_the_sealing_time() {
        let target = VaultTarget {
            endpoint: "http://127.0.0.1:1".into(),
            partition: 0,
            hpke_public_key: envelope::PartitionSecretKey::generate(&mut OsRng).1,
            identity: VaultIdentity {
                server_id: b"p0".to_vec(),
                public_key: [0; 32],
            },
        };
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let anonymous = VaultClient::from_channel(target, channel);
        let status = || Op::Status(pb::Status {});
        assert_eq!(anonymous.request(b"alice", status()).account_token, "");
        let c = anonymous.with_token("v4.public.x");
        let r = c.request(b"alice", status());
        assert_eq!(r.account_token, "v4.public.x");
        assert!(r.sent_at_ms.abs_diff(now_ms()) < 60_000);
        assert!(!format!("{c:?}").contains("v4.public"), "token in Debug");
    }
}
