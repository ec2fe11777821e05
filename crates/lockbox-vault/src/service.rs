//! The gRPC `Vault` service: open the HPKE envelope, admit the request (account token, freshness,
//! no replay: [`Admission`]), run it through the partition's `lockbox-vault-core` state machine, make any write durable *before* releasing the reply, and
//! seal the answer back to the client.
//!
//! Concurrency: requests for one account may race. Each run loads `(seq, record)`, lets the core
//! decide, and commits with a compare-and-set on `seq`; the loser of a race drops its outcome
//! (including any KE2) and re-runs on the fresh record. So two KE1s never share one decrement.

use lockbox_hsm::{MemorySealer, Sealer};
use lockbox_proto::envelope::{self, PartitionPublicKey, PartitionSecretKey, Sealed};
use lockbox_proto::pb::{self, vault_server::Vault as VaultRpc};
use lockbox_raft::{Forwarded, Host, Role};
use lockbox_vault_core::{
    AccountId, KsfParams, Outcome, Record, Reply, Request, Vault, VaultConfig as CoreConfig,
    VaultError, VaultSecrets,
};
use prost::Message;
use rand_core::OsRng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tonic::{Request as RpcRequest, Response as RpcResponse, Status};
use zeroize::Zeroizing;

use crate::admission::{Admission, Denied};
use crate::metrics as m;
use crate::replay::ENC_LEN;
use crate::request::{self, RequestError};
use crate::storage::{RecordStore, StorageError};

/// How long a follower holds a request while its partition has no reachable leader (an
/// election): well past the default election timeout, well inside the device's call timeout.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(8);
const LEADER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// How often a request re-runs after losing a compare-and-set race before giving up.
const MAX_CAS_RETRIES: usize = 16;

pub struct PartitionState {
    id: u32,
    hpke: PartitionSecretKey,
    hpke_public: PartitionPublicKey,
    opaque_public: [u8; 32],
    core: Mutex<Vault>,
    /// Replicated: records are sealed under a key made from the partition's secrets, which
    /// every replica holds, not under this node's own sealer (the others could not open them).
    record_key: Option<Zeroizing<[u8; 32]>>,
}

impl PartitionState {
    /// A partition served with these secrets; its public keys are derived from them.
    pub fn new(id: u32, hpke: PartitionSecretKey, opaque: VaultSecrets, cfg: CoreConfig) -> Self {
        Self {
            id,
            hpke_public: hpke.public_key(),
            hpke,
            opaque_public: opaque.public_key(),
            core: Mutex::new(Vault::new(opaque, cfg, &mut OsRng)),
            record_key: None,
        }
    }

    /// Seal this partition's records under `key` (the same on every replica).
    pub fn with_record_key(mut self, key: Zeroizing<[u8; 32]>) -> Self {
        self.record_key = Some(key);
        self
    }

    /// The sealer for `account`'s record: a key of its own, derived from the partition's record
    /// key, so that random 96-bit nonces stay far inside their bound however busy the partition.
    fn account_sealer(&self, account: &AccountId) -> Result<Option<MemorySealer>, Failure> {
        let Some(key) = &self.record_key else {
            return Ok(None);
        };
        let mut info = lockbox_crypto::labels::RECORD_KEY.to_vec();
        info.extend_from_slice(account.as_bytes());
        let mut derived = Zeroizing::new([0u8; 32]);
        lockbox_crypto::hkdf_expand(key.as_ref(), None, &info, derived.as_mut());
        Ok(Some(MemorySealer::new(derived)?))
    }

    /// The partition's core. A panic in another request must not take the partition down for
    /// good: the core's in-memory state (sessions, ticket serial) stays consistent at every
    /// step, and everything the guess limit rests on is in storage, not here.
    fn core(&self) -> MutexGuard<'_, Vault> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl core::fmt::Debug for PartitionState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PartitionState")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct VaultService {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    partitions: HashMap<u32, Arc<PartitionState>>,
    store: Arc<dyn RecordStore>,
    sealer: Arc<dyn Sealer>,
    permits: tokio::sync::Semaphore,
    holds: tokio::sync::Semaphore,
    admission: Admission,
    /// Replicated: the node's Raft groups, which say who leads each partition.
    replicas: Option<Arc<Host>>,
}

impl core::fmt::Debug for VaultService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VaultService")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

impl VaultService {
    pub fn new(
        node_id: String,
        partitions: Vec<PartitionState>,
        store: Arc<dyn RecordStore>,
        sealer: Arc<dyn Sealer>,
        max_concurrent: usize,
        admission: Admission,
    ) -> Self {
        let partitions = partitions
            .into_iter()
            .map(|p| (p.id, Arc::new(p)))
            .collect();
        let permits = tokio::sync::Semaphore::new(max_concurrent);
        let holds = tokio::sync::Semaphore::new(max_concurrent);
        Self {
            inner: Arc::new(Inner {
                node_id,
                partitions,
                store,
                sealer,
                permits,
                holds,
                admission,
                replicas: None,
            }),
        }
    }

    /// Serve the partitions replicated: requests run on the partition's leader, and a follower
    /// hands what it receives to the leader over the peer transport.
    pub fn replicated(self, host: Arc<Host>) -> Self {
        let Ok(mut inner) = Arc::try_unwrap(self.inner) else {
            panic!("VaultService::replicated is called before the service is shared");
        };
        inner.replicas = Some(host);
        Self {
            inner: Arc::new(inner),
        }
    }

    fn partition(&self, id: u32) -> Result<Arc<PartitionState>, Status> {
        self.inner
            .partitions
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("partition {id} is not served here")))
    }

    /// One of the node's `max_concurrent_requests` slots for running a request here.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        self.inner
            .permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))
    }

    /// One of as many slots for a request this follower holds through an election or hands to
    /// the leader. A pool of its own: were forwards to take running slots, two nodes each
    /// leading some partitions could fill each other's slots with forwards waiting on the other.
    async fn hold(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        self.inner
            .holds
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))
    }

    /// Runs a request on this node (the caller holds a permit): opens it, decides it, commits
    /// what it writes, seals the answer.
    async fn run_here(&self, sealed: pb::SealedRequest) -> Result<pb::SealedResponse, Status> {
        let part = self.partition(sealed.partition)?;
        let envelope = Sealed {
            enc: sealed.enc.to_vec(),
            ciphertext: sealed.ciphertext.to_vec(),
        };
        let (plain, responder) =
            envelope::open_request(&part.hpke, part.id, &sealed.account, &envelope)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let inner = Arc::clone(&self.inner);
        let outer = Outer {
            account: sealed.account.to_vec(),
            class: sealed.class,
            enc: envelope.enc.as_slice().try_into().expect("checked length"),
        };
        let response = tokio::task::spawn_blocking(move || inner.execute(&part, &outer, &plain))
            .await
            .map_err(|_| Status::internal("request task failed"))??;
        let ciphertext = responder.seal(&response.encode_to_vec(), &mut OsRng);
        Ok(pb::SealedResponse {
            ciphertext: ciphertext.into(),
        })
    }

    /// Where a request for `partition` runs: here, or on the leader (its id and peer address).
    fn route(&self, partition: u32) -> Result<Option<(u64, String)>, Status> {
        let Some(host) = &self.inner.replicas else {
            return Ok(None);
        };
        match host.role(partition) {
            None | Some(Role::Leader) => Ok(None),
            Some(Role::Follower {
                leader: Some(leader),
            }) => Ok(Some(leader)),
            Some(Role::Follower { leader: None }) => Err(Status::unavailable(format!(
                "partition {partition} has no leader at the moment; try again"
            ))),
        }
    }

    /// Runs a request a follower forwarded: only while this node leads, and never forwarded on.
    async fn run_forwarded(&self, group: u32, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
        let sealed = pb::SealedRequest::decode(payload.as_slice())
            .map_err(|e| Status::invalid_argument(format!("forwarded request: {e}")))?;
        sealed
            .check_shape()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if sealed.partition != group {
            return Err(Status::invalid_argument(
                "forwarded request names another partition than its group",
            ));
        }
        let _permit = self.permit().await?;
        if self.route(group)?.is_some() {
            return Err(Status::unavailable(format!(
                "leadership of partition {group} moved; try again"
            )));
        }
        Ok(self.run_here(sealed).await?.encode_to_vec())
    }

    /// Drops expired login/registration sessions in every partition.
    pub fn purge_sessions(&self) {
        let now = now_ms();
        for p in self.inner.partitions.values() {
            p.core().purge_expired(now);
        }
    }
}

pub(crate) use lockbox_proto::unix_now_ms as now_ms;

#[tonic::async_trait]
impl VaultRpc for VaultService {
    async fn call(
        &self,
        request: RpcRequest<pb::SealedRequest>,
    ) -> Result<RpcResponse<pb::SealedResponse>, Status> {
        let sealed = request.into_inner();
        sealed
            .check_shape()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.partition(sealed.partition)?;
        let started = Instant::now();
        // Taken before any hold or forward: a flood of requests (even junk, which only the
        // leader opens) ties up at most this many slots, never unbounded memory and tasks.
        let mut held = None;
        loop {
            let leader = match self.route(sealed.partition) {
                Ok(None) => {
                    let _permit = self.permit().await?;
                    return self.run_here(sealed).await.map(RpcResponse::new);
                }
                Ok(Some(leader)) => Some(leader),
                Err(_) if started.elapsed() < LEADER_WAIT => None,
                Err(status) => return Err(status),
            };
            if held.is_none() {
                held = Some(self.hold().await?);
            }
            let Some(leader) = leader else {
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            };
            let host = self.inner.replicas.as_ref().expect("routed by replicas");
            metrics::counter!(m::FORWARDED).increment(1);
            let answer = host
                .forward(
                    sealed.partition,
                    (leader.0, &leader.1),
                    sealed.encode_to_vec(),
                )
                .await;
            match answer {
                Ok(answer) => {
                    let response = pb::SealedResponse::decode(answer.as_slice())
                        .map_err(|_| Status::internal("the leader's answer does not decode"))?;
                    return Ok(RpcResponse::new(response));
                }
                // The leader this node knew is gone, and nothing reached it: wait for the
                // election, and hand the request to the one elected.
                Err(s) if lockbox_proto::never_delivered(&s) && started.elapsed() < LEADER_WAIT => {
                    tokio::time::sleep(LEADER_POLL).await;
                }
                Err(s) => return Err(s),
            }
        }
    }

    async fn info(
        &self,
        _request: RpcRequest<pb::InfoRequest>,
    ) -> Result<RpcResponse<pb::InfoResponse>, Status> {
        // A replicated node that knows no leader for a partition could serve none of its
        // requests: it is not ready, and says so (a dev cluster waits for this).
        for &id in self.inner.partitions.keys() {
            self.route(id)?;
        }
        let mut partitions: Vec<_> = self
            .inner
            .partitions
            .values()
            .map(|p| pb::PartitionInfo {
                partition: p.id,
                hpke_public_key: p.hpke_public.to_bytes().to_vec().into(),
                opaque_server_public_key: p.opaque_public.to_vec().into(),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Ok(RpcResponse::new(pb::InfoResponse {
            node_id: self.inner.node_id.clone(),
            partitions,
        }))
    }
}

/// What the envelope says in the clear, checked against what it carries.
struct Outer {
    account: Vec<u8>,
    class: i32,
    enc: [u8; ENC_LEN],
}

impl lockbox_raft::ForwardHandler for VaultService {
    fn handle(&self, group: u32, payload: Vec<u8>) -> Forwarded {
        let this = self.clone();
        Box::pin(async move { this.run_forwarded(group, payload).await })
    }
}

impl Inner {
    /// Runs one opened request to a response. Blocking: storage, sealing and OPAQUE math. A
    /// partition between leaders is `UNAVAILABLE` in the clear, not a sealed refusal: the
    /// device retries that (docs/vault-protocol.md, "Retries").
    fn execute(
        &self,
        part: &PartitionState,
        outer: &Outer,
        plain: &[u8],
    ) -> Result<pb::Response, Status> {
        let started = Instant::now();
        let (op, result) = match self.admit(outer, plain) {
            Ok(req) => {
                let op = op_name(&req);
                (op, self.run(part, req))
            }
            Err(e @ Failure::Denied(_)) => ("denied", Err(e)),
            Err(e) => ("malformed", Err(e)),
        };
        if let Err(Failure::Storage(e)) = &result
            && e.is_replication()
        {
            metrics::counter!(m::REQUESTS, "op" => op, "result" => "no_leader").increment(1);
            // The detail (members, addresses, who leads) is for the operator's log only.
            tracing::info!(partition = part.id, error = %e, "request not run: no leader here");
            return Err(Status::unavailable(format!(
                "partition {} is between leaders; try again",
                part.id
            )));
        }
        let response = to_response(result);
        let label = result_label(&response);
        metrics::counter!(m::REQUESTS, "op" => op, "result" => label).increment(1);
        metrics::histogram!(m::REQUEST_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
        Ok(response)
    }

    /// Decodes the request and admits it: the account token is checked before anything else
    /// reads the request's payloads.
    fn admit(&self, outer: &Outer, plain: &[u8]) -> Result<Request, Failure> {
        let req = request::decode(&outer.account, outer.class, plain)?;
        self.admission.admit(
            &outer.account,
            &req.account_token,
            &outer.enc,
            req.sent_at_ms,
            now_ms(),
        )?;
        Ok(request::to_core(req)?)
    }

    fn run(&self, part: &PartitionState, request: Request) -> Result<Reply, Failure> {
        let account = request.account().clone();
        for _ in 0..MAX_CAS_RETRIES {
            let (seq, stored) = self.load(part, &account)?;
            let outcome =
                part.core()
                    .handle(stored.as_ref(), request.clone(), &mut OsRng, now_ms())?;
            let (write, pending) = match outcome {
                Outcome::Reply(reply) => return Ok(reply),
                Outcome::WriteThenReply { write, pending } => (write, pending),
            };
            let sealed = self.seal_record(part, seq + 1, &account, &write.record().encode())?;
            match self.store.commit(part.id, account.as_bytes(), seq, &sealed) {
                Ok(_) => {
                    let reply = part.core().release(pending, write.committed())?;
                    count_reply(&request, &reply);
                    return Ok(reply);
                }
                // The reply held back is dropped (nothing was promised) and the request re-runs
                // on the fresh record, with the session it consumed given back.
                Err(StorageError::Conflict { .. }) => {
                    metrics::counter!(m::WRITE_CONFLICTS).increment(1);
                    part.core().abandon(pending, write.rejected())?;
                }
                Err(e) => return Err(Failure::Storage(e)),
            }
        }
        tracing::warn!(
            partition = part.id,
            "gave up on a record after {MAX_CAS_RETRIES} write conflicts"
        );
        Err(Failure::Contended)
    }

    /// Runs `op` with the sealer of `account`'s record: the account's key under the partition
    /// record key when replicated, else the node's own sealer.
    fn with_record_sealer<T>(
        &self,
        part: &PartitionState,
        account: &AccountId,
        op: impl FnOnce(&dyn Sealer) -> Result<T, lockbox_hsm::SealError>,
    ) -> Result<T, Failure> {
        Ok(match part.account_sealer(account)? {
            Some(sealer) => op(&sealer)?,
            None => op(self.sealer.as_ref())?,
        })
    }

    fn seal_record(
        &self,
        part: &PartitionState,
        seq: u64,
        account: &AccountId,
        plain: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let aad = record_aad(part.id, seq, account);
        self.with_record_sealer(part, account, |s| s.seal(&aad, plain))
    }

    fn load(
        &self,
        part: &PartitionState,
        account: &AccountId,
    ) -> Result<(u64, Option<Record>), Failure> {
        let partition = part.id;
        let Some(stored) = self.store.load(partition, account.as_bytes())? else {
            return Ok((0, None));
        };
        let aad = record_aad(partition, stored.seq, account);
        let plain = self.with_record_sealer(part, account, |s| s.unseal(&aad, &stored.sealed))?;
        let record = Record::decode(&plain).map_err(|e| Failure::CorruptRecord(e.to_string()))?;
        Ok((stored.seq, Some(record)))
    }
}

/// AAD that binds a sealed record to its partition, position in history and account.
fn record_aad(partition: u32, seq: u64, account: &AccountId) -> Vec<u8> {
    let mut aad = b"lockbox/v1/record".to_vec();
    aad.extend_from_slice(&partition.to_be_bytes());
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(account.as_bytes());
    aad
}

fn count_reply(request: &Request, reply: &Reply) {
    match (request, reply) {
        (_, Reply::LoginStarted { .. }) => metrics::counter!(m::LOGIN_ATTEMPTS).increment(1),
        (_, Reply::Recovered { .. }) => metrics::counter!(m::LOGIN_SUCCESS).increment(1),
        (Request::LoginFinish { .. }, Reply::Destroyed) => {
            metrics::counter!(m::LOGIN_FAILURE).increment(1);
            metrics::counter!(m::DESTROYED).increment(1);
        }
        // A KE1 that finds no attempts left (the last KE2 was never answered) destroys too.
        (Request::LoginStart { .. }, Reply::Destroyed) => {
            metrics::counter!(m::DESTROYED).increment(1)
        }
        (_, Reply::Enrolled { .. }) => metrics::counter!(m::ENROLLMENTS).increment(1),
        _ => {}
    }
}

/// Why a request produced no reply from the core.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("sealer: {0}")]
    Seal(#[from] lockbox_hsm::SealError),
    #[error("stored record does not decode: {0}")]
    CorruptRecord(String),
    #[error("too many concurrent changes to this record")]
    Contended,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Denied(#[from] Denied),
}

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Malformed(what) => Failure::Malformed(what),
            RequestError::Vault(e) => Failure::Vault(e),
        }
    }
}

fn op_name(r: &Request) -> &'static str {
    match r {
        Request::RegisterStart { .. } => "register_start",
        Request::RegisterFinish { .. } => "register_finish",
        Request::LoginStart { .. } => "login_start",
        Request::LoginFinish { .. } => "login_finish",
        Request::ChangePassword { .. } => "change_password",
        Request::Delete { .. } => "delete",
        Request::Status { .. } => "status",
        Request::PinCatalog { .. } => "pin_catalog",
    }
}

fn ksf_pb(k: KsfParams) -> pb::KsfParams {
    pb::KsfParams {
        m_cost_kib: k.m_cost_kib(),
        t_cost: k.t_cost(),
        p_cost: k.p_cost(),
    }
}

fn to_response(result: Result<Reply, Failure>) -> pb::Response {
    use pb::response::Result as R;
    let r = match result {
        Ok(Reply::RegistrationStarted { session, response }) => {
            R::RegisterStarted(pb::RegisterStarted {
                session: session.as_bytes().to_vec().into(),
                registration_response: response.into(),
            })
        }
        Ok(Reply::Enrolled { .. } | Reply::Deleted) => R::Done(pb::Done {}),
        Ok(Reply::LoginStarted {
            session,
            ke2,
            ksf,
            attempts_left,
        }) => R::LoginStarted(pb::LoginStarted {
            session: session.as_bytes().to_vec().into(),
            ke2: ke2.into(),
            ksf: Some(ksf_pb(ksf)),
            attempts_left: attempts_left.into(),
        }),
        Ok(Reply::Recovered {
            session,
            sealed_wrapped_key,
            catalog_pin,
        }) => R::LoginOk(pb::LoginOk {
            sealed_wrapped_key: sealed_wrapped_key.into(),
            session: session.as_bytes().to_vec().into(),
            catalog_pin: catalog_pin
                .map(|p| p.encode().to_vec())
                .unwrap_or_default()
                .into(),
        }),
        Ok(Reply::Pinned { pin }) => R::Pinned(pb::Pinned {
            pin: pin.encode().to_vec().into(),
        }),
        Ok(Reply::Wrong { attempts_left }) => R::WrongPassword(pb::WrongPassword {
            attempts_left: attempts_left.into(),
        }),
        Ok(Reply::Destroyed) => R::Error(error(
            pb::error::Code::Destroyed,
            "the record was destroyed after too many wrong passwords",
        )),
        Ok(Reply::Status(s)) => R::Status(status_pb(s)),
        Err(f) => R::Error(failure_pb(&f)),
    };
    pb::Response { result: Some(r) }
}

fn status_pb(s: lockbox_vault_core::AccountStatus) -> pb::StatusReply {
    use lockbox_vault_core::AccountStatus as S;
    use pb::status_reply::State;
    match s {
        S::Absent => pb::StatusReply {
            state: State::Absent.into(),
            ..Default::default()
        },
        S::Destroyed { generation } => pb::StatusReply {
            state: State::Destroyed.into(),
            generation,
            ..Default::default()
        },
        S::Active {
            generation,
            attempts_left,
            limit,
            created_at_ms,
        } => pb::StatusReply {
            state: State::Active.into(),
            attempts_left: attempts_left.into(),
            attempt_limit: limit.into(),
            generation,
            created_at_ms: created_at_ms.unwrap_or(0),
        },
    }
}

fn error(code: pb::error::Code, message: &str) -> pb::Error {
    pb::Error {
        code: code.into(),
        message: message.to_string(),
    }
}

fn failure_pb(f: &Failure) -> pb::Error {
    use pb::error::Code as C;
    let code = match f {
        Failure::Vault(e) => match e {
            VaultError::Malformed(_) => C::Malformed,
            VaultError::AttemptLimitOutOfRange(_) | VaultError::KsfBelowPolicy => {
                C::InvalidArgument
            }
            VaultError::NoRecord => C::NoRecord,
            VaultError::Destroyed => C::Destroyed,
            VaultError::ReplayedKe1 => C::Replayed,
            VaultError::NoSession
            | VaultError::SessionKindMismatch
            | VaultError::StaleGeneration => C::NoSession,
            VaultError::SessionExpired => C::SessionExpired,
            VaultError::SessionAccountMismatch => C::SessionAccountMismatch,
            VaultError::Busy | VaultError::AccountBusy => C::Busy,
            VaultError::NoCatalogKey => C::NoCatalogKey,
            VaultError::CatalogKeyRequired => C::InvalidArgument,
            VaultError::BadCatalogPin => C::BadCatalogPin,
            _ => C::Unavailable,
        },
        Failure::Malformed(_) => C::Malformed,
        Failure::Denied(Denied::Token(_)) => C::Unauthorized,
        Failure::Denied(Denied::Stale | Denied::BeforeStart) => C::Stale,
        Failure::Denied(Denied::Replayed) => C::Replayed,
        Failure::Denied(Denied::Busy) => C::Busy,
        _ => C::Unavailable,
    };
    match f {
        // Internal faults are for the operator's log, not for whoever sent the request.
        Failure::Storage(_) | Failure::Seal(_) | Failure::CorruptRecord(_) | Failure::Vault(_)
            if code == C::Unavailable =>
        {
            tracing::error!(error = %f, "vault request failed");
            error(
                code,
                "the vault node could not complete the request; try again",
            )
        }
        _ => error(code, &f.to_string()),
    }
}

fn result_label(r: &pb::Response) -> &'static str {
    use pb::response::Result as R;
    match &r.result {
        Some(R::Error(e)) => {
            match pb::error::Code::try_from(e.code).unwrap_or(pb::error::Code::Unspecified) {
                pb::error::Code::Unavailable => "unavailable",
                pb::error::Code::Destroyed => "destroyed",
                _ => "rejected",
            }
        }
        Some(R::WrongPassword(_)) => "wrong_password",
        _ => "ok",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RedbStore;
    use lockbox_hsm::SoftwareSealer;

    const FLEET: &str = "test-fleet";

    fn service(dir: &std::path::Path, issuer: &lockbox_token::Issuer) -> VaultService {
        let (hpke, _) = PartitionSecretKey::generate(&mut OsRng);
        let secrets = VaultSecrets::generate(&mut OsRng);
        let part = PartitionState::new(0, hpke, secrets, CoreConfig::new(b"p0"));
        let store = RedbStore::open(&dir.join("vault.redb")).unwrap();
        let sealer = SoftwareSealer::create(dir.join("sealer.key")).unwrap();
        let admission = Admission::new(issuer.verifier(FLEET).unwrap(), 300_000, 1024, 64, 0);
        VaultService::new(
            "t".into(),
            vec![part],
            Arc::new(store),
            Arc::new(sealer),
            4,
            admission,
        )
    }

    #[test]
    fn an_attempt_limit_beyond_a_byte_is_reported_as_sent() {
        let request = pb::Request {
            account: b"alice".to_vec().into(),
            op: Some(pb::request::Op::RegisterFinish(pb::RegisterFinish {
                attempt_limit: 1000,
                ksf: Some(pb::KsfParams {
                    m_cost_kib: 65536,
                    t_cost: 3,
                    p_cost: 1,
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let failure = Failure::from(request::to_core(request).unwrap_err());
        let e = failure_pb(&failure);
        assert_eq!(e.code, i32::from(pb::error::Code::InvalidArgument));
        assert_eq!(e.message, "attempt limit 1000 is outside 1..=100");
    }

    #[test]
    fn internal_faults_are_not_described_to_the_caller() {
        let failure = Failure::CorruptRecord("redb page 17 checksum".into());
        let e = failure_pb(&failure);
        assert_eq!(e.code, i32::from(pb::error::Code::Unavailable));
        assert!(!e.message.contains("redb"), "{}", e.message);
        // Contention is the caller's business: retrying is the remedy.
        let e = failure_pb(&Failure::Contended);
        assert!(e.message.contains("concurrent"), "{}", e.message);
    }

    #[test]
    fn a_panic_holding_the_core_lock_does_not_disable_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = lockbox_token::Issuer::generate().unwrap();
        let svc = service(dir.path(), &issuer);
        let part = Arc::clone(&svc.inner.partitions[&0]);
        let poisoner = Arc::clone(&part);
        let panicked = std::thread::spawn(move || {
            let _core = poisoner.core.lock();
            panic!("a request panicked while holding the core");
        })
        .join();
        assert!(panicked.is_err() && part.core.is_poisoned());

        svc.purge_sessions();
        let token = issuer
            .mint(
                b"alice",
                FLEET,
                time::OffsetDateTime::now_utc(),
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        let status = pb::Request {
            account: b"alice".to_vec().into(),
            account_token: token,
            sent_at_ms: now_ms(),
            op: Some(pb::request::Op::Status(pb::Status {})),
        };
        let outer = Outer {
            account: b"alice".to_vec(),
            class: pb::RequestClass::Other.into(),
            enc: [7; ENC_LEN],
        };
        let response = svc
            .inner
            .execute(&part, &outer, &status.encode_to_vec())
            .unwrap();
        assert!(
            matches!(response.result, Some(pb::response::Result::Status(_))),
            "{response:?}"
        );
    }
}
