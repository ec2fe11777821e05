//! The Raft transport between vault nodes: one gRPC service per node, every group multiplexed
//! over one HTTP/2 connection per peer, each message tagged with its group.
//!
//! Between real nodes the channel is mutual TLS ([`PeerTls`]): each node presents a certificate
//! from the cluster's node CA and accepts only peers that do, so no stranger who reaches the port
//! can speak Raft to it (an unauthenticated AppendEntries would let anyone rewrite a replica's
//! log). Plain gRPC is for tests on loopback.
//!
//! A simulation test puts a [`Wire`] of its own in gRPC's place: an in-memory network that
//! loses, delays and reorders messages by a seed, ending at each node's [`RaftService`].
//!
//! A payload is the openraft request, or the result of handling it, in postcard. A peer that
//! cannot be reached is `Unreachable` (openraft backs off, 500 ms, then retries); a call that
//! timed out on a slow but live peer, or a reply that does not decode, is a `Network` error
//! (retried without the backoff); an error the remote Raft returned comes back as that error.

use lockbox_proto::raft_pb::RaftMessage;
use lockbox_proto::raft_pb::raft_client::RaftClient;
use lockbox_proto::raft_pb::raft_server::{Raft as RaftRpc, RaftServer};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

use crate::db::NodeDb;
use crate::members::{self, GroupMembers, MemberError, MemberRequest};
use crate::types::{GroupId, NodeId, Raft, TypeConfig};

/// Largest snapshot a node accepts. A snapshot is received into memory, so a chunk at a huge
/// offset from a peer (even one with a node certificate) would otherwise make the node allocate
/// without bound; 1 GiB is about two million records in one partition.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Largest Raft message either side accepts: a snapshot chunk (openraft's default is 3 MiB)
/// with room to spare.
pub const MAX_RAFT_MESSAGE: usize = 16 * 1024 * 1024;

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

/// A node's side of the peer transport's mutual TLS: its certificate and key, and the CA that
/// signs every node's certificate.
#[derive(Clone)]
pub struct PeerTls {
    identity: Identity,
    ca: Certificate,
}

impl core::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PeerTls([REDACTED])")
    }
}

impl PeerTls {
    /// From PEM: the node's certificate chain, its private key, and the node CA certificate.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Self {
        Self {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
        }
    }

    /// The server side: present our certificate, require one from the node CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

/// Which of the transport's Raft calls a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    Append,
    Vote,
    Snapshot,
}

/// A call in flight on a [`Wire`].
pub type WireCall = Pin<Box<dyn Future<Output = Result<RaftMessage, tonic::Status>> + Send>>;

/// Carries one Raft message to the node at `addr` and brings back its answer, or the status a
/// gRPC call would have ended with: `Unavailable` for a peer that cannot be reached,
/// `DeadlineExceeded` once `timeout` has passed. The receiving end hands the message to that
/// node's [`RaftService::dispatch`].
pub trait Wire: Send + Sync + core::fmt::Debug + 'static {
    fn call(&self, addr: &str, rpc: Rpc, msg: RaftMessage, timeout: Duration) -> WireCall;
}

/// One HTTP/2 channel per peer address, shared by every group on this node; or, in a
/// simulation, the [`Wire`] that stands in for them.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<PeerTls>,
    wire: Option<Arc<dyn Wire>>,
}

impl Channels {
    pub fn new(tls: Option<PeerTls>) -> Self {
        Self {
            by_addr: Arc::default(),
            tls,
            wire: None,
        }
    }

    /// Raft messages go on `wire` instead of gRPC.
    pub fn on_wire(wire: Arc<dyn Wire>) -> Self {
        Self {
            wire: Some(wire),
            ..Self::default()
        }
    }

    fn get(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let bad = |e: tonic::transport::Error| TransportError(format!("peer {addr}: {e}"));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(bad)?
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.client_config()).map_err(bad)?;
        }
        let ch = endpoint.connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

impl Channels {
    /// Hands `payload` (a client request this node received for `group`) to the node at `addr`,
    /// its leader, and returns that node's answer.
    pub async fn forward(
        &self,
        (target, addr): (NodeId, &str),
        group: GroupId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, tonic::Status> {
        let ch = self
            .get(addr)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = RaftClient::new(ch)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let mut request = tonic::Request::new(RaftMessage {
            group,
            payload: payload.into(),
            target,
        });
        request.set_timeout(timeout);
        Ok(client.forward(request).await?.into_inner().payload.to_vec())
    }
}

/// What a membership request got: the group's members, or why not.
pub type MemberReply = Result<GroupMembers, MemberError>;

/// Sends an operator's membership request for `group` to the node at `addr` (its peer
/// address, under the peer transport's mutual TLS).
pub async fn ask_members(
    addr: &str,
    tls: Option<PeerTls>,
    group: GroupId,
    req: &MemberRequest,
) -> Result<MemberReply, tonic::Status> {
    let ch = Channels::new(tls)
        .get(addr)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let payload =
        postcard::to_stdvec(req).map_err(|e| tonic::Status::internal(format!("encode: {e}")))?;
    let reply = RaftClient::new(ch)
        .members(RaftMessage {
            group,
            payload: payload.into(),
            target: 0,
        })
        .await?
        .into_inner();
    postcard::from_bytes(&reply.payload)
        .map_err(|e| tonic::Status::internal(format!("membership reply: {e}")))
}

/// The answer to a forwarded request, as the handler produces it.
pub type Forwarded = Pin<Box<dyn Future<Output = Result<Vec<u8>, tonic::Status>> + Send>>;

/// What a leader does with a client request a follower forwarded to it: run it here, never
/// forward it again.
pub trait ForwardHandler: Send + Sync + 'static {
    fn handle(&self, group: GroupId, payload: Vec<u8>) -> Forwarded;
}

/// Makes a group's clients to its peers.
#[derive(Debug, Clone)]
pub struct Network {
    group: GroupId,
    channels: Channels,
}

impl Network {
    pub fn new(group: GroupId, channels: Channels) -> Self {
        Self { group, channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let link = match &self.channels.wire {
            Some(wire) => Link::Wire {
                wire: wire.clone(),
                addr: node.addr.clone(),
            },
            None => Link::Grpc(self.channels.get(&node.addr).map(|ch| {
                RaftClient::new(ch)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE)
            })),
        };
        Peer {
            group: self.group,
            target,
            link,
        }
    }
}

/// A group's client to one peer.
#[derive(Debug)]
pub struct Peer {
    group: GroupId,
    target: NodeId,
    link: Link,
}

#[derive(Debug)]
enum Link {
    Grpc(Result<RaftClient<Channel>, TransportError>),
    Wire { wire: Arc<dyn Wire>, addr: String },
}

impl Link {
    async fn send(
        &mut self,
        rpc: Rpc,
        msg: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, tonic::Status> {
        let client = match self {
            Self::Wire { wire, addr } => return wire.call(addr, rpc, msg, timeout).await,
            Self::Grpc(Err(e)) => return Err(tonic::Status::unavailable(e.to_string())),
            Self::Grpc(Ok(client)) => client,
        };
        let mut request = tonic::Request::new(msg);
        request.set_timeout(timeout);
        let reply = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        }?;
        Ok(reply.into_inner())
    }
}

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            postcard::to_stdvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let msg = RaftMessage {
            group: self.group,
            payload: payload.into(),
            target: self.target,
        };
        let reply = self
            .link
            .send(rpc, msg, option.hard_ttl())
            .await
            .map_err(transport_error)?;
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A loaded follower answers an append late (its fsync queue is long), and openraft's append
/// timeout is the heartbeat interval: taking that for unreachability paused replication to it
/// for the whole backoff, which under load cost more than the slow append itself.
fn transport_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, BasicNode, E> {
    match status.code() {
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            RPCError::Network(NetworkError::new(&status))
        }
        _ => RPCError::Unreachable(Unreachable::new(&status)),
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

/// The groups a node hosts, as the transport's server sees them.
#[derive(Clone, Default)]
pub struct Groups {
    map: Arc<RwLock<HashMap<GroupId, Raft>>>,
}

impl core::fmt::Debug for Groups {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let groups: Vec<GroupId> = self.all().into_iter().map(|(g, _)| g).collect();
        f.debug_struct("Groups").field("groups", &groups).finish()
    }
}

impl Groups {
    pub fn insert(&self, group: GroupId, raft: Raft) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, raft);
    }

    pub fn get(&self, group: GroupId) -> Option<Raft> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    pub fn all(&self) -> Vec<(GroupId, Raft)> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map.iter().map(|(g, r)| (*g, r.clone())).collect();
        all.sort_by_key(|(g, _)| *g);
        all
    }
}

/// The gRPC service that hands each message to its group's Raft.
#[derive(Clone)]
pub struct RaftService {
    id: NodeId,
    groups: Groups,
    db: NodeDb,
    forward: Option<Arc<dyn ForwardHandler>>,
}

impl core::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RaftService")
            .field("groups", &self.groups)
            .field("forwarding", &self.forward.is_some())
            .finish()
    }
}

impl RaftService {
    pub fn new(
        id: NodeId,
        groups: Groups,
        db: NodeDb,
        forward: Option<Arc<dyn ForwardHandler>>,
    ) -> Self {
        Self {
            id,
            groups,
            db,
            forward,
        }
    }

    /// The tonic server for this service, with the transport's message limits.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }

    /// Runs one Raft message that arrived on a [`Wire`], as the gRPC server would.
    pub async fn dispatch(&self, rpc: Rpc, msg: RaftMessage) -> Result<RaftMessage, tonic::Status> {
        let request = tonic::Request::new(msg);
        let reply = match rpc {
            Rpc::Append => RaftRpc::append_entries(self, request).await,
            Rpc::Vote => RaftRpc::vote(self, request).await,
            Rpc::Snapshot => RaftRpc::install_snapshot(self, request).await,
        }?;
        Ok(reply.into_inner())
    }

    /// A message for another node id is refused before anything reads it.
    fn for_me(&self, msg: &RaftMessage) -> Result<(), tonic::Status> {
        if msg.target == self.id {
            return Ok(());
        }
        Err(tonic::Status::failed_precondition(format!(
            "this is node {}, not node {}",
            self.id, msg.target
        )))
    }

    /// The Raft of the group a message for this node is about.
    fn group(&self, msg: &RaftMessage) -> Result<Raft, tonic::Status> {
        self.for_me(msg)?;
        self.groups
            .get(msg.group)
            .ok_or_else(|| tonic::Status::not_found(format!("no replica of group {}", msg.group)))
    }

    fn open<Req: DeserializeOwned>(&self, msg: &RaftMessage) -> Result<(Raft, Req), tonic::Status> {
        let raft = self.group(msg)?;
        let req = postcard::from_bytes(&msg.payload)
            .map_err(|e| tonic::Status::invalid_argument(format!("raft payload: {e}")))?;
        Ok((raft, req))
    }
}

fn reply<T: Serialize>(group: GroupId, result: &T) -> RpcReply {
    let payload = postcard::to_stdvec(result)
        .map_err(|e| tonic::Status::internal(format!("encode raft reply: {e}")))?;
    Ok(tonic::Response::new(RaftMessage {
        group,
        payload: payload.into(),
        target: 0,
    }))
}

type RpcReply = Result<tonic::Response<RaftMessage>, tonic::Status>;

impl RaftService {
    /// Decodes a message for its group's Raft, lets `handle` answer it, and encodes the result.
    async fn serve<Req, Resp, Fut>(
        &self,
        request: tonic::Request<RaftMessage>,
        handle: impl FnOnce(Raft, Req) -> Fut,
    ) -> RpcReply
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        Fut: std::future::Future<Output = Result<Resp, tonic::Status>>,
    {
        let msg = request.into_inner();
        let (raft, req) = self.open::<Req>(&msg)?;
        reply(msg.group, &handle(raft, req).await?)
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: tonic::Request<RaftMessage>) -> RpcReply {
        self.serve(
            request,
            |raft, req: AppendEntriesRequest<TypeConfig>| async move {
                Ok(raft.append_entries(req).await)
            },
        )
        .await
    }

    async fn vote(&self, request: tonic::Request<RaftMessage>) -> RpcReply {
        self.serve(request, |raft, req: VoteRequest<NodeId>| async move {
            Ok(raft.vote(req).await)
        })
        .await
    }

    async fn install_snapshot(&self, request: tonic::Request<RaftMessage>) -> RpcReply {
        self.serve(
            request,
            |raft, req: InstallSnapshotRequest<TypeConfig>| async move {
                let end = u64::try_from(req.data.len())
                    .ok()
                    .and_then(|len| req.offset.checked_add(len));
                if end.is_none_or(|end| end > MAX_SNAPSHOT_BYTES) {
                    return Err(tonic::Status::invalid_argument(format!(
                        "snapshot chunk ends past the {MAX_SNAPSHOT_BYTES}-byte limit"
                    )));
                }
                Ok(raft.install_snapshot(req).await)
            },
        )
        .await
    }

    async fn members(&self, request: tonic::Request<RaftMessage>) -> RpcReply {
        let mut msg = request.into_inner();
        if msg.target == 0 {
            msg.target = self.id;
        }
        let (raft, req) = self.open::<MemberRequest>(&msg)?;
        let answer: MemberReply = match req {
            MemberRequest::List => Ok(members::list(&raft, &self.db, msg.group)),
            MemberRequest::Add { id, addr } => {
                members::add(&raft, &self.db, msg.group, id, addr).await
            }
            MemberRequest::Remove { id } => members::remove(&raft, &self.db, msg.group, id).await,
        };
        reply(msg.group, &answer)
    }

    async fn forward(&self, request: tonic::Request<RaftMessage>) -> RpcReply {
        let handler = self
            .forward
            .as_ref()
            .ok_or_else(|| tonic::Status::unimplemented("this node runs no forwarded requests"))?;
        let msg = request.into_inner();
        self.group(&msg)?;
        let payload = handler.handle(msg.group, msg.payload.to_vec()).await?;
        Ok(tonic::Response::new(RaftMessage {
            group: msg.group,
            payload: payload.into(),
            target: 0,
        }))
    }
}
