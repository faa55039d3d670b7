//! A controller node: the Raft member (openraft over [`crate::rpc`]), its listener, and, while it
//! is the Raft leader, the active controller's duties:
//!
//! - broker sessions: a broker that has not heartbeated for `broker_session_timeout` is fenced
//!   (its leaderships move to in-sync peers); a registered broker that heartbeats with the
//!   metadata caught up to its registration is unfenced;
//! - proposals from brokers (topic changes, ISR changes, registrations) are appended to the
//!   metadata log and answered with the outcome of applying them;
//! - every `leader_imbalance_interval` preferred replicas that are in sync get leadership back.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::image::{Command, Image, Outcome};
use crate::rpc::{
    read_frame, write_frame, Heartbeat, HeartbeatReply, NotController, Request, Response,
};
use crate::store::{LogStore, RaftNodeId, StateMachine, TypeConfig};
use crate::Error;

/// Settings of a controller node.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node's id (one of `voters`).
    pub node_id: i32,
    /// The voters: node id and controller address.
    pub voters: Vec<(i32, String)>,
    /// Where the metadata log and snapshots live.
    pub dir: PathBuf,
    /// A broker silent for this long is fenced.
    pub broker_session_timeout: Duration,
    /// How often preferred leaders are restored.
    pub leader_imbalance_interval: Duration,
    /// Raft heartbeat interval; elections time out after 4-8 of these.
    pub raft_heartbeat: Duration,
}

/// A running controller node.
pub struct Controller {
    config: ControllerConfig,
    local_addr: std::net::SocketAddr,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    sessions: Mutex<HashMap<i32, Instant>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.config.node_id)
            .finish()
    }
}

fn raft_id(id: i32) -> RaftNodeId {
    id as u32 as u64
}

impl Controller {
    /// Opens the metadata log, binds the controller listener, joins the quorum and starts the
    /// controller's duties.
    pub async fn start(config: ControllerConfig) -> Result<Arc<Controller>, Error> {
        let addr = config
            .voters
            .iter()
            .find(|(id, _)| *id == config.node_id)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| {
                Error::Config(format!(
                    "node {} is not in the controller quorum",
                    config.node_id
                ))
            })?;
        let listener = TcpListener::bind(&addr).await.map_err(|e| {
            Error::Config(format!("cannot listen on {addr} for the controller: {e}"))
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Config(format!("controller listener: {e}")))?;
        let log = LogStore::open(&config.dir)?;
        let sm = StateMachine::open(&config.dir)?;
        let hb = config.raft_heartbeat.as_millis().max(10) as u64;
        let raft_config = openraft::Config {
            cluster_name: "strom".into(),
            heartbeat_interval: hb,
            election_timeout_min: hb * 4,
            election_timeout_max: hb * 8,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
        let raft = Raft::new(
            raft_id(config.node_id),
            Arc::new(raft_config),
            crate::rpc::Network::default(),
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        let members: BTreeMap<RaftNodeId, BasicNode> = config
            .voters
            .iter()
            .map(|(id, a)| (raft_id(*id), BasicNode::new(a.clone())))
            .collect();
        // Every voter initializes with the same members; all but the first find the log
        // non-empty and are refused, which is fine.
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!("metadata quorum already initialized: {e}");
        }
        let (stop, _) = watch::channel(false);
        let c = Arc::new(Controller {
            config,
            local_addr,
            raft,
            sm,
            sessions: Mutex::new(HashMap::new()),
            stop,
        });
        tokio::spawn(c.clone().serve(listener));
        tokio::spawn(c.clone().duties());
        Ok(c)
    }

    /// The address the controller listener is bound to.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Follows the metadata image as it is applied on this node.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Image>> {
        self.sm.subscribe()
    }

    /// The metadata image as applied on this node.
    pub fn image(&self) -> Arc<Image> {
        self.sm.image()
    }

    /// The active controller, if known.
    pub fn active_controller(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .map(|l| l as i32)
    }

    /// Raft leader, and heard from a quorum recently: an isolated ex-leader (openraft does
    /// not step down by itself) stops acting as the controller once its quorum acks age.
    fn is_active(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let fresh = m
            .millis_since_quorum_ack
            .is_some_and(|ms| ms <= self.config.raft_heartbeat.as_millis() as u64 * 8);
        m.current_leader == Some(raft_id(self.config.node_id))
            && (fresh || self.config.voters.len() == 1)
    }

    /// Stops the listener and Raft.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let _ = self.raft.shutdown().await;
    }

    /// Appends `cmd` to the metadata log (on the active controller) and returns its outcome.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, NotController> {
        // A change that would certainly be refused is answered without a log entry (leaders
        // retry ISR changes often while a replica is still fenced). Apply checks again.
        if self.is_active() {
            if let Some(r) = self.image().precheck(&cmd) {
                if let Command::AlterPartition { .. } = cmd {
                    return Ok(Outcome::Partition(Err(r)));
                }
            }
        }
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(NotController {
                leader: f.leader_id.map(|l| l as i32),
            }),
            Err(e) => {
                tracing::warn!("metadata proposal failed: {e}");
                Err(NotController { leader: None })
            }
        }
    }

    async fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatReply, NotController> {
        if !self.is_active() {
            return Err(NotController {
                leader: self.active_controller(),
            });
        }
        let image = self.image();
        let Some(b) = image.brokers.get(&hb.id).filter(|b| b.epoch == hb.epoch) else {
            return Ok(HeartbeatReply {
                reregister: true,
                fenced: true,
                image_version: image.version,
            });
        };
        self.sessions.lock().insert(hb.id, Instant::now());
        let mut fenced = b.fenced;
        if b.fenced && !hb.shutting_down && hb.image_version >= b.epoch {
            match self
                .propose(Command::Unfence {
                    id: hb.id,
                    epoch: hb.epoch,
                })
                .await?
            {
                Outcome::Done => {
                    fenced = false;
                    tracing::info!(broker = hb.id, "broker unfenced");
                }
                other => tracing::debug!(broker = hb.id, "unfence refused: {other:?}"),
            }
        }
        Ok(HeartbeatReply {
            reregister: false,
            fenced,
            image_version: self.image().version,
        })
    }

    async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(self.clone().connection(s));
                    }
                    Err(e) => {
                        tracing::warn!("controller accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }

    async fn connection(self: Arc<Self>, mut s: TcpStream) {
        let mut stop = self.stop.subscribe();
        loop {
            let req: Request = tokio::select! {
                r = read_frame(&mut s) => match r {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!("controller connection closed: {e}");
                        return;
                    }
                },
                // A stopped node closes its connections: peers reconnect to its successor.
                _ = stop.changed() => return,
            };
            let resp = match req {
                Request::AppendEntries(r) => {
                    Response::AppendEntries(self.raft.append_entries(r).await)
                }
                Request::Vote(r) => Response::Vote(self.raft.vote(r).await),
                Request::InstallSnapshot(r) => {
                    Response::InstallSnapshot(self.raft.install_snapshot(r).await)
                }
                Request::Propose(cmd) => Response::Proposed(self.propose(cmd).await),
                Request::Heartbeat(hb) => Response::Heartbeat(self.heartbeat(hb).await),
                Request::FetchImage { have } => {
                    let img = self.image();
                    Response::Image((img.version > have).then(|| Box::new((*img).clone())))
                }
            };
            if let Err(e) = write_frame(&mut s, &resp).await {
                tracing::debug!("controller connection closed: {e}");
                return;
            }
        }
    }

    /// The active controller's periodic work.
    async fn duties(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut every = tokio::time::interval(Duration::from_millis(100));
        let mut active_term: Option<u64> = None;
        let mut last_balance = Instant::now();
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            if !self.is_active() {
                continue;
            }
            let image = self.image();
            let term = self.raft.metrics().borrow().current_term;
            if active_term != Some(term) {
                // A new active controller (a new term) gives every broker a full session to
                // check in; a brief flap of the quorum-ack check within a term does not.
                active_term = Some(term);
                {
                    let now = Instant::now();
                    let mut sessions = self.sessions.lock();
                    sessions.clear();
                    for id in image.brokers.keys() {
                        sessions.insert(*id, now);
                    }
                }
                if image.cluster_id.is_empty() {
                    let id = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
                    let _ = self.propose(Command::InitCluster { cluster_id: id }).await;
                }
                tracing::info!(node = self.config.node_id, "active controller");
            }
            let expired: Vec<(i32, u64)> = {
                let sessions = self.sessions.lock();
                image
                    .brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .filter(|b| {
                        sessions
                            .get(&b.id)
                            .is_none_or(|t| t.elapsed() > self.config.broker_session_timeout)
                    })
                    .map(|b| (b.id, b.epoch))
                    .collect()
            };
            for (id, epoch) in expired {
                tracing::warn!(broker = id, "broker session expired: fencing it");
                let _ = self.propose(Command::Fence { id, epoch }).await;
            }
            if last_balance.elapsed() >= self.config.leader_imbalance_interval {
                last_balance = Instant::now();
                if self.image().preferred_election_needed() {
                    tracing::info!("electing preferred leaders");
                    let _ = self.propose(Command::ElectPreferredLeaders).await;
                }
            }
        }
    }
}
