//! The relay: authenticate the account, apply the limits, forward the envelope unchanged to a
//! replica of its partition, and hand back the vault's sealed answer unchanged.
//!
//! The gateway reads only the envelope's outside (version, partition, account, class, sizes)
//! and the account token the device presents in the `authorization` metadata. It cannot open
//! the envelope, and it forwards nothing else: the device's metadata stays here.

use lockbox_proto::manifest::pb as fleet_pb;
use lockbox_proto::pb::{self, vault_server::Vault};
use lockbox_token::{TokenError, Verifier};
use std::sync::Arc;
use std::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::fleet::ManifestLog;
use crate::limits::{Limited, Limits};
use crate::metrics as m;
use crate::routes::Routes;

/// The metadata key that carries the account token: `authorization: Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";
/// Set on a rate-limit refusal: milliseconds until the same call could pass.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

#[derive(Debug, Clone)]
pub struct GatewayService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    verifier: Verifier,
    limits: Limits,
    routes: Routes,
    log: Option<ManifestLog>,
}

impl GatewayService {
    pub fn new(
        verifier: Verifier,
        limits: Limits,
        routes: Routes,
        log: Option<ManifestLog>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                verifier,
                limits,
                routes,
                log,
            }),
        }
    }

    /// Forgets limit state that no longer limits anybody, and reports the tables' sizes.
    pub fn sweep(&self) {
        let limits = &self.inner.limits;
        limits.sweep(now_ms());
        let (clients, accounts, logins) = limits.tracked();
        metrics::gauge!(m::TRACKED, "table" => "client").set(clients as f64);
        metrics::gauge!(m::TRACKED, "table" => "account").set(accounts as f64);
        metrics::gauge!(m::TRACKED, "table" => "login").set(logins as f64);
    }

    async fn relay(
        &self,
        request: Request<pb::SealedRequest>,
    ) -> Result<pb::SealedResponse, Refusal> {
        let inner = &self.inner;
        let peer = request.remote_addr().map(|a| a.ip());
        inner.limits.check_client(peer)?;
        let token = bearer(request.metadata())?.to_owned();
        let sealed = request.into_inner();
        sealed
            .check_shape()
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let now = now_ms();
        inner
            .verifier
            .verify(&token, &sealed.account, unix(now))
            .map_err(Refusal::Token)?;
        let login_start = sealed.class == pb::RequestClass::LoginStart as i32;
        inner
            .limits
            .check_account(&sealed.account, login_start, now)?;
        let partition = sealed.partition;
        if let Some(log) = &inner.log {
            let owner = log.partition_for(&sealed.account);
            if owner != partition {
                return Err(Refusal::WrongPartition {
                    sent: partition,
                    owner,
                });
            }
        }
        let replicas = inner
            .routes
            .pick(partition)
            .ok_or(Refusal::NoPartition(partition))?;
        let started = Instant::now();
        let mut answer = Err(Status::unavailable("no replica"));
        for mut replica in replicas {
            answer = replica.call(sealed.clone()).await;
            match &answer {
                Err(s) if lockbox_proto::never_delivered(s) => {
                    metrics::counter!(m::REPLICA_REFUSED).increment(1);
                }
                _ => break,
            }
        }
        metrics::histogram!(m::UPSTREAM_SECONDS).record(started.elapsed().as_secs_f64());
        answer
            .map(Response::into_inner)
            .map_err(|s| Refusal::Upstream(partition, s))
    }
}

/// Why the gateway did not relay, or what went wrong upstream.
#[derive(Debug)]
enum Refusal {
    Limited(Limited),
    NoToken(&'static str),
    Token(TokenError),
    Malformed(String),
    NoPartition(u32),
    WrongPartition { sent: u32, owner: u32 },
    Upstream(u32, Status),
}

impl From<Limited> for Refusal {
    fn from(l: Limited) -> Self {
        Self::Limited(l)
    }
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Self::Limited(_) => "limited",
            Self::NoToken(_) | Self::Token(_) => "unauthenticated",
            Self::Malformed(_) => "malformed",
            Self::NoPartition(_) | Self::WrongPartition { .. } => "no_partition",
            Self::Upstream(_, s) if s.code() == tonic::Code::Unavailable => "unavailable",
            Self::Upstream(..) => "upstream_error",
        }
    }

    fn into_status(self) -> Status {
        match self {
            Self::Limited(l) => {
                let ms = l.retry_after.as_millis().max(1);
                let mut s = Status::resource_exhausted(format!(
                    "rate limited ({}): retry in {ms} ms",
                    l.scope.name()
                ));
                if let Ok(v) = ms.to_string().parse() {
                    s.metadata_mut().insert(RETRY_AFTER_MS, v);
                }
                s
            }
            Self::NoToken(why) => Status::unauthenticated(why),
            Self::Token(e @ TokenError::WrongAccount) => Status::permission_denied(e.to_string()),
            Self::Token(e) => Status::unauthenticated(e.to_string()),
            Self::Malformed(why) => Status::invalid_argument(why),
            Self::NoPartition(p) => Status::not_found(format!("this fleet has no partition {p}")),
            Self::WrongPartition { sent, owner } => Status::invalid_argument(format!(
                "the fleet manifest places this account in partition {owner}, not {sent}"
            )),
            Self::Upstream(p, s) if s.code() == tonic::Code::Unavailable => Status::unavailable(
                format!("vault partition {p} is unreachable: {}", s.message()),
            ),
            // The vault's own refusal (e.g. an envelope that does not open) passes through.
            Self::Upstream(_, s) => Status::new(s.code(), s.message()),
        }
    }
}

fn bearer(md: &MetadataMap) -> Result<&str, Refusal> {
    let value = md
        .get(AUTHORIZATION)
        .ok_or(Refusal::NoToken("no account token was presented"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Refusal::NoToken(
            "the authorization metadata must be `Bearer <account token>`",
        ))
}

#[tonic::async_trait]
impl Vault for GatewayService {
    async fn call(
        &self,
        request: Request<pb::SealedRequest>,
    ) -> Result<Response<pb::SealedResponse>, Status> {
        match self.relay(request).await {
            Ok(answer) => {
                metrics::counter!(m::REQUESTS, "result" => "ok").increment(1);
                Ok(Response::new(answer))
            }
            Err(refusal) => {
                metrics::counter!(m::REQUESTS, "result" => refusal.label()).increment(1);
                if let Refusal::Limited(l) = &refusal {
                    metrics::counter!(m::LIMITED, "scope" => l.scope.name()).increment(1);
                }
                Err(refusal.into_status())
            }
        }
    }

    /// The gateway vouches for no key: devices pin partition keys from the signed fleet
    /// manifest, never from whoever answers on the network.
    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        Err(Status::unimplemented(
            "the gateway does not hand out vault keys: devices pin them from the signed fleet manifest",
        ))
    }
}

#[tonic::async_trait]
impl fleet_pb::fleet_server::Fleet for GatewayService {
    async fn manifests(
        &self,
        request: Request<fleet_pb::ManifestsRequest>,
    ) -> Result<Response<fleet_pb::ManifestsResponse>, Status> {
        let log = self
            .inner
            .log
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this gateway serves no fleet manifest"))?;
        let after = request.into_inner().after_sequence;
        let manifests = log.after(after).into_iter().map(Into::into).collect();
        Ok(Response::new(fleet_pb::ManifestsResponse { manifests }))
    }
}

use lockbox_proto::unix_now_ms as now_ms;

fn unix(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms as i64)
}
