//! The controller listener's wire format and its client side.
//!
//! Frames are a big-endian `u32` length and a JSON body; one request, then its response, on a
//! connection at a time. Raft's own RPCs (append entries, vote, install snapshot) travel here,
//! and so do the brokers' requests to the active controller: proposals (topic changes, ISR
//! changes, registrations), heartbeats and, for broker-only nodes, the metadata image.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::image::{Command, Image, Outcome};
use crate::store::{RaftNodeId, TypeConfig};
use crate::Error;

/// Largest frame accepted (snapshots are sent in chunks well below this).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// A broker's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Node id.
    pub id: i32,
    /// Registration epoch.
    pub epoch: u64,
    /// The metadata version the broker has applied.
    pub image_version: u64,
    /// The broker is shutting down (controlled shutdown in progress).
    pub shutting_down: bool,
}

/// The controller's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The broker is not registered with this epoch: register again.
    pub reregister: bool,
    /// The broker is fenced.
    pub fenced: bool,
    /// The latest metadata version.
    pub image_version: u64,
}

/// Requests to a controller.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft: append entries.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft: vote.
    Vote(VoteRequest<RaftNodeId>),
    /// Raft: a snapshot chunk.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Propose a metadata command (active controller only).
    Propose(Command),
    /// A broker heartbeat (active controller only).
    Heartbeat(Heartbeat),
    /// The metadata image, if newer than `have`.
    FetchImage {
        /// The version the caller has.
        have: u64,
    },
}

/// Why the active controller could not be reached through this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotController {
    /// The active controller, if known.
    pub leader: Option<i32>,
}

/// Responses.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Raft: append entries.
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// Raft: vote.
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// Raft: a snapshot chunk.
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    ),
    /// The outcome of a proposal.
    Proposed(Result<Outcome, NotController>),
    /// A heartbeat answer.
    Heartbeat(Result<HeartbeatReply, NotController>),
    /// The image, when newer than the caller's.
    Image(Option<Box<Image>>),
}

/// Decodes a frame body (without its length prefix): what [`read_frame`] does with the bytes
/// it read. Malformed input is an error, never a panic.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Peer(format!("malformed frame: {e}")))
}

/// Reads one frame (`None` at a clean end of stream).
pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    s: &mut TcpStream,
) -> Result<Option<T>, Error> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::Peer(e.to_string())),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(Error::Peer(format!(
            "frame of {len} bytes exceeds {MAX_FRAME}"
        )));
    }
    // Grown as bytes arrive: a length prefix alone allocates nothing.
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    (&mut *s)
        .take(len as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Error::Peer(e.to_string()))?;
    if buf.len() != len {
        return Err(Error::Peer(format!(
            "frame cut short: {} of {len} bytes",
            buf.len()
        )));
    }
    decode(&buf).map(Some)
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(s: &mut TcpStream, v: &T) -> Result<(), Error> {
    let body = serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    s.write_all(&out)
        .await
        .map_err(|e| Error::Peer(e.to_string()))
}

/// One connection to a controller, reopened on demand.
#[derive(Debug)]
pub struct Peer {
    addr: String,
    stream: tokio::sync::Mutex<Option<TcpStream>>,
}

impl Peer {
    /// A peer at `addr` (not connected yet).
    pub fn new(addr: String) -> Self {
        Peer {
            addr,
            stream: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `req` and waits for the response, within `timeout`.
    pub async fn call(&self, req: &Request, timeout: Duration) -> Result<Response, Error> {
        let start = Instant::now();
        // Waiting for the connection counts against the timeout too.
        let mut guard = tokio::time::timeout(timeout, self.stream.lock())
            .await
            .map_err(|_| Error::Peer(format!("{} is busy for {timeout:?}", self.addr)))?;
        let timeout = timeout.saturating_sub(start.elapsed());
        let attempt = async {
            if guard.is_none() {
                let s = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| Error::Peer(format!("{}: {e}", self.addr)))?;
                let _ = s.set_nodelay(true);
                *guard = Some(s);
            }
            let Some(s) = guard.as_mut() else {
                return Err(Error::Internal("no stream".into()));
            };
            write_frame(s, req).await?;
            read_frame::<Response>(s)
                .await?
                .ok_or_else(|| Error::Peer(format!("{} closed the connection", self.addr)))
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Error::Peer(format!(
                "{} did not answer within {timeout:?}",
                self.addr
            ))),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }
}

/// openraft's network: one [`Peer`] per target.
#[derive(Debug, Default, Clone)]
pub struct Network {
    peers: Arc<parking_lot::Mutex<HashMap<String, Arc<Peer>>>>,
}

/// openraft's client for one target.
#[derive(Debug)]
pub struct NetworkClient {
    target: RaftNodeId,
    peer: Arc<Peer>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> NetworkClient {
        let peer = self
            .peers
            .lock()
            .entry(node.addr.clone())
            .or_insert_with(|| Arc::new(Peer::new(node.addr.clone())))
            .clone();
        NetworkClient { target, peer }
    }
}

fn unreachable<E: std::error::Error>(e: Error) -> RPCError<RaftNodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&e))
}

fn unexpected<E: std::error::Error>() -> RPCError<RaftNodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&Error::Peer(
        "unexpected response".into(),
    )))
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>,
    > {
        match self
            .peer
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        match self
            .peer
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::InstallSnapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>>
    {
        match self.peer.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(unreachable(e)),
        }
    }
}

/// A broker's way to the active controller: tries the voters, following "not the controller"
/// hints, until the deadline.
#[derive(Debug)]
pub struct QuorumClient {
    voters: Vec<(i32, Arc<Peer>)>,
    hint: parking_lot::Mutex<Option<i32>>,
}

impl QuorumClient {
    /// A client for the given voters (`(node id, address)`).
    pub fn new(voters: &[(i32, String)]) -> Self {
        QuorumClient {
            voters: voters
                .iter()
                .map(|(id, a)| (*id, Arc::new(Peer::new(a.clone()))))
                .collect(),
            hint: parking_lot::Mutex::new(None),
        }
    }

    /// The active controller as last seen, if known.
    pub fn controller_hint(&self) -> Option<i32> {
        *self.hint.lock()
    }

    /// Sends `req` to the active controller, retrying until `timeout` has passed.
    pub async fn call(&self, req: &Request, timeout: Duration) -> Result<Response, Error> {
        let deadline = Instant::now() + timeout;
        let mut next = 0usize;
        let mut last_error = String::from("no controller answered");
        loop {
            let target = self
                .hint
                .lock()
                .and_then(|h| self.voters.iter().position(|(id, _)| *id == h));
            let idx = target.unwrap_or(next % self.voters.len().max(1));
            next = idx + 1;
            let Some((id, peer)) = self.voters.get(idx) else {
                return Err(Error::Config("no controller quorum configured".into()));
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unavailable(last_error));
            }
            let per_try = left.min(Duration::from_secs(5));
            match peer.call(req, per_try).await {
                Ok(Response::Proposed(Err(nc))) | Ok(Response::Heartbeat(Err(nc))) => {
                    let moved = nc.leader.filter(|l| l != id);
                    *self.hint.lock() = moved;
                    last_error = format!("node {id} is not the active controller");
                    // Two stale nodes may point at each other: never spin.
                    let pause = if moved.is_some() { 10 } else { 50 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Ok(r) => {
                    *self.hint.lock() = Some(*id);
                    return Ok(r);
                }
                Err(e) => {
                    *self.hint.lock() = None;
                    last_error = e.to_string();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Proposes a command to the active controller.
    pub async fn propose(&self, cmd: Command, timeout: Duration) -> Result<Outcome, Error> {
        match self.call(&Request::Propose(cmd), timeout).await? {
            Response::Proposed(Ok(o)) => Ok(o),
            other => Err(Error::Peer(format!("unexpected answer {other:?}"))),
        }
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(
        &self,
        hb: Heartbeat,
        timeout: Duration,
    ) -> Result<HeartbeatReply, Error> {
        match self.call(&Request::Heartbeat(hb), timeout).await? {
            Response::Heartbeat(Ok(r)) => Ok(r),
            other => Err(Error::Peer(format!("unexpected answer {other:?}"))),
        }
    }

    /// Fetches the image if the controller has a newer one than `have`.
    pub async fn fetch_image(&self, have: u64, timeout: Duration) -> Result<Option<Image>, Error> {
        match self.call(&Request::FetchImage { have }, timeout).await? {
            Response::Image(i) => Ok(i.map(|b| *b)),
            other => Err(Error::Peer(format!("unexpected answer {other:?}"))),
        }
    }
}
