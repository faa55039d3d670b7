//! Consumer group membership on the classic protocol: JoinGroup, SyncGroup (the leader runs the
//! assignor), a background heartbeat, commits and LeaveGroup.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;

use crate::assignor::{self, Assignor, RebalanceProtocol};
use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::types::TopicPartition;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// Who this member is in the current generation.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub member_id: String,
    pub generation: i32,
    pub instance_id: Option<String>,
}

/// Shared between the consumer, the heartbeat task and async commits.
pub(crate) struct Membership {
    pub group: String,
    pub cluster: Arc<Cluster>,
    pub config: ConsumerConfig,
    pub identity: Mutex<Identity>,
    pub coordinator: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// Set by the heartbeat when the group rebalances or forgets us.
    pub rejoin: AtomicBool,
    pub assignors: Vec<Box<dyn Assignor>>,
    /// Offsets the coordinator acknowledged, per partition.
    pub acked: Mutex<HashMap<TopicPartition, i64>>,
    /// When the application last called poll (ms since the epoch).
    pub last_poll: std::sync::atomic::AtomicI64,
    /// Commits go through one queue so an older commit never lands after a newer one.
    commits: Mutex<Option<tokio::sync::mpsc::UnboundedSender<CommitJob>>>,
}

type CommitJob = (
    BTreeMap<TopicPartition, i64>,
    Option<tokio::sync::oneshot::Sender<Result<()>>>,
);

/// What a finished join + sync produced.
pub(crate) struct Joined {
    pub assignment: Vec<TopicPartition>,
    /// The heartbeat task, started as soon as SyncGroup answered.
    pub heartbeat: tokio::task::AbortHandle,
}

impl Membership {
    pub fn new(group: String, cluster: Arc<Cluster>, config: ConsumerConfig) -> Result<Self> {
        let mut assignors = Vec::new();
        for name in &config.assignors {
            assignors.push(assignor::by_name(name).ok_or_else(|| {
                Error::Config(format!(
                    "partition.assignment.strategy: unknown assignor {name:?} (expected range, roundrobin or cooperative-sticky)"
                ))
            })?);
        }
        if assignors.is_empty() {
            return Err(Error::Config(
                "partition.assignment.strategy is empty".into(),
            ));
        }
        let instance_id = config.group_instance_id.clone();
        Ok(Membership {
            group,
            cluster,
            config,
            identity: Mutex::new(Identity {
                member_id: String::new(),
                generation: -1,
                instance_id,
            }),
            coordinator: tokio::sync::Mutex::new(None),
            rejoin: AtomicBool::new(true),
            assignors,
            acked: Mutex::new(HashMap::new()),
            last_poll: std::sync::atomic::AtomicI64::new(super::now_millis()),
            commits: Mutex::new(None),
        })
    }

    /// The protocol every configured assignor supports (cooperative only if all are).
    pub fn protocol(&self) -> RebalanceProtocol {
        if self
            .assignors
            .iter()
            .all(|a| a.protocol() == RebalanceProtocol::Cooperative)
        {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        }
    }

    pub async fn coordinator(&self) -> Result<Arc<Connection>> {
        let mut c = self.coordinator.lock().await;
        if let Some(conn) = c.as_ref().filter(|c| c.is_alive()) {
            return Ok(conn.clone());
        }
        let conn = self.cluster.coordinator(&self.group).await?;
        *c = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_coordinator(&self) {
        *self.coordinator.lock().await = None;
    }

    /// Handles an error code common to all group requests; `Ok(true)` means "retry".
    async fn retry_on(&self, e: ResponseError) -> bool {
        match e {
            ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
                self.forget_coordinator().await;
                tokio::time::sleep(self.config.client.retry_backoff).await;
                true
            }
            ResponseError::CoordinatorLoadInProgress => {
                tokio::time::sleep(self.config.client.retry_backoff).await;
                true
            }
            _ => false,
        }
    }

    /// Joins (or rejoins) the group and syncs; returns this member's assignment.
    pub async fn join(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
    ) -> Result<Vec<TopicPartition>> {
        let cfg = &self.config;
        loop {
            let conn = match self.coordinator().await {
                Ok(c) => c,
                Err(e) if e.is_retriable() => {
                    tokio::time::sleep(cfg.client.retry_backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let id = self.identity.lock().clone();
            let mut protocols = Vec::new();
            for a in &self.assignors {
                let owned = if a.protocol() == RebalanceProtocol::Cooperative {
                    owned
                } else {
                    &[]
                };
                let meta = assignor::encode_subscription(
                    topics,
                    owned,
                    id.generation,
                    cfg.client_rack.as_deref(),
                )?;
                protocols.push(
                    JoinGroupRequestProtocol::default()
                        .with_name(s(a.name()))
                        .with_metadata(meta),
                );
            }
            let version = conn.version::<JoinGroupRequest>(0..=7)?;
            if id.instance_id.is_some() && version < 5 {
                return Err(Error::Unsupported(
                    "static membership (group.instance.id needs JoinGroup v5)".into(),
                ));
            }
            let mut req = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_session_timeout_ms(cfg.session_timeout.as_millis() as i32)
                .with_member_id(s(&id.member_id))
                .with_protocol_type(s("consumer"))
                .with_protocols(protocols);
            if version >= 1 {
                req = req.with_rebalance_timeout_ms(
                    cfg.max_poll_interval.as_millis().min(i32::MAX as u128) as i32,
                );
            }
            if version >= 5 {
                req = req.with_group_instance_id(id.instance_id.as_deref().map(s));
            }
            // JoinGroup waits for the whole group: allow the rebalance timeout on top.
            let within = cfg.max_poll_interval + Duration::from_secs(5);
            let resp = match conn.send_raw_within(&req, version, within).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    self.forget_coordinator().await;
                    tokio::time::sleep(cfg.client.retry_backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(e) = ResponseError::try_from_code(resp.error_code) {
                match e {
                    ResponseError::MemberIdRequired => {
                        self.identity.lock().member_id = resp.member_id.to_string();
                        continue;
                    }
                    ResponseError::UnknownMemberId | ResponseError::IllegalGeneration => {
                        let mut i = self.identity.lock();
                        i.member_id.clear();
                        i.generation = -1;
                        continue;
                    }
                    ResponseError::RebalanceInProgress => continue,
                    e if self.retry_on(e).await => continue,
                    e => return Err(Error::broker(format!("join group {}", self.group), e, None)),
                }
            }
            let member_id = resp.member_id.to_string();
            let generation = resp.generation_id;
            {
                let mut i = self.identity.lock();
                i.member_id = member_id.clone();
                i.generation = generation;
            }
            let protocol_name = resp
                .protocol_name
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let chosen = self
                .assignors
                .iter()
                .find(|a| a.name() == protocol_name)
                .or_else(|| self.assignors.first())
                .ok_or_else(|| Error::Internal("no assignor".into()))?;
            let mut assignments = Vec::new();
            if resp.leader.as_str() == member_id && !resp.skip_assignment {
                let mut members = Vec::new();
                for m in &resp.members {
                    members.push(assignor::decode_subscription(
                        m.member_id.as_str(),
                        m.group_instance_id.as_deref(),
                        &m.metadata,
                    )?);
                }
                let mut all_topics: Vec<String> = members
                    .iter()
                    .flat_map(|m| m.topics.iter().cloned())
                    .collect();
                all_topics.sort();
                all_topics.dedup();
                self.cluster.refresh(Some(&all_topics)).await?;
                let partitions: BTreeMap<String, i32> = all_topics
                    .iter()
                    .filter_map(|t| {
                        self.cluster
                            .cached(t)
                            .map(|i| (t.clone(), i.partitions.len() as i32))
                    })
                    .collect();
                let result = chosen.assign(&partitions, &members);
                for (member, parts) in result {
                    assignments.push(
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(&member))
                            .with_assignment(assignor::encode_assignment(&parts)?),
                    );
                }
            }
            let sv = conn.version::<SyncGroupRequest>(0..=5)?;
            let mut sync = SyncGroupRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_generation_id(generation)
                .with_member_id(s(&member_id))
                .with_assignments(assignments);
            if sv >= 3 {
                sync = sync.with_group_instance_id(id.instance_id.as_deref().map(s));
            }
            if sv >= 5 {
                sync = sync
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s(chosen.name())));
            }
            let sresp = match conn.send_raw(&sync, sv).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    self.forget_coordinator().await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(e) = ResponseError::try_from_code(sresp.error_code) {
                match e {
                    ResponseError::RebalanceInProgress => continue,
                    ResponseError::UnknownMemberId | ResponseError::IllegalGeneration => {
                        let mut i = self.identity.lock();
                        i.member_id.clear();
                        i.generation = -1;
                        continue;
                    }
                    e if self.retry_on(e).await => continue,
                    e => return Err(Error::broker(format!("sync group {}", self.group), e, None)),
                }
            }
            self.rejoin.store(false, Ordering::Release);
            return assignor::decode_assignment(&sresp.assignment);
        }
    }

    /// One heartbeat; sets `rejoin` when the group wants us to rejoin.
    pub async fn heartbeat(&self) -> Result<()> {
        let conn = self.coordinator().await?;
        let id = self.identity.lock().clone();
        if id.generation < 0 {
            return Ok(());
        }
        let version = conn.version::<HeartbeatRequest>(0..=4)?;
        let mut req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(id.generation)
            .with_member_id(s(&id.member_id));
        if version >= 3 {
            req = req.with_group_instance_id(id.instance_id.as_deref().map(s));
        }
        let resp = conn.send_raw(&req, version).await?;
        match ResponseError::try_from_code(resp.error_code) {
            None => Ok(()),
            Some(ResponseError::RebalanceInProgress) => {
                self.rejoin.store(true, Ordering::Release);
                Ok(())
            }
            Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration) => {
                {
                    let mut i = self.identity.lock();
                    if i.generation == id.generation {
                        i.generation = -1;
                        if resp.error_code == ResponseError::UnknownMemberId.code() {
                            i.member_id.clear();
                        }
                    }
                }
                self.rejoin.store(true, Ordering::Release);
                Ok(())
            }
            Some(e @ (ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable)) => {
                self.forget_coordinator().await;
                Err(Error::broker("heartbeat", e, None))
            }
            Some(e) => Err(Error::broker(
                format!("heartbeat in group {}", self.group),
                e,
                None,
            )),
        }
    }

    /// Queues a commit behind earlier ones; the receiver (if wanted) gets its outcome.
    pub fn commit_in_order(
        self: &Arc<Self>,
        offsets: BTreeMap<TopicPartition, i64>,
        wait: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<()>>> {
        let (tx, rx) = if wait {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let mut q = self.commits.lock();
        let sender = q.get_or_insert_with(|| {
            let (qtx, mut qrx) = tokio::sync::mpsc::unbounded_channel::<CommitJob>();
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some((offsets, reply)) = qrx.recv().await {
                    let Some(m) = me.upgrade() else { return };
                    let r = m.commit(&offsets).await;
                    if let Err(e) = &r {
                        tracing::debug!(group = %m.group, error = %e, "commit failed");
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                }
            });
            qtx
        });
        let _ = sender.send((offsets, tx));
        rx
    }

    /// Commits offsets (next offset to read per partition) now.
    pub async fn commit(&self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.coordinator().await?;
            let id = self.identity.lock().clone();
            let version = conn.version::<OffsetCommitRequest>(2..=8)?;
            let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
            for (tp, off) in offsets {
                topics.entry(&tp.topic).or_default().push(
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(tp.partition)
                        .with_committed_offset(*off),
                );
            }
            let mut req = OffsetCommitRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_generation_id_or_member_epoch(id.generation)
                .with_member_id(s(&id.member_id))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetCommitRequestTopic::default()
                                .with_name(TopicName(s(t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            if version >= 7 {
                req = req.with_group_instance_id(id.instance_id.as_deref().map(s));
            }
            let resp = match conn.send_raw(&req, version).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() && attempt < 5 => {
                    self.forget_coordinator().await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut first_error = None;
            for t in &resp.topics {
                for p in &t.partitions {
                    if let Some(e) = ResponseError::try_from_code(p.error_code) {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                None => {
                    self.acked
                        .lock()
                        .extend(offsets.iter().map(|(k, v)| (k.clone(), *v)));
                    return Ok(());
                }
                Some(e) if attempt < 5 && self.retry_on(e).await => continue,
                Some(
                    e @ (ResponseError::RebalanceInProgress
                    | ResponseError::IllegalGeneration
                    | ResponseError::UnknownMemberId),
                ) => {
                    self.rejoin.store(true, Ordering::Release);
                    return Err(Error::broker(
                        format!("commit in group {} (the group rebalanced; the partitions may have moved)", self.group),
                        e,
                        None,
                    ));
                }
                Some(e) => {
                    return Err(Error::broker(
                        format!("commit in group {}", self.group),
                        e,
                        None,
                    ))
                }
            }
        }
    }

    /// Committed offsets of `parts` (-1 where none).
    pub async fn committed(
        &self,
        parts: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        self.committed_of(Some(parts)).await
    }

    /// Every committed offset of the group.
    pub async fn committed_all(&self) -> Result<HashMap<TopicPartition, i64>> {
        self.committed_of(None).await
    }

    async fn committed_of(
        &self,
        parts: Option<&[TopicPartition]>,
    ) -> Result<HashMap<TopicPartition, i64>> {
        loop {
            let conn = self.coordinator().await?;
            let version = conn.version::<OffsetFetchRequest>(1..=8)?;
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in parts.unwrap_or_default() {
                topics.entry(&tp.topic).or_default().push(tp.partition);
            }
            let all = parts.is_none();
            let req = if version >= 8 {
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(&self.group)))
                    .with_topics((!all).then(|| {
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchRequestTopics::default()
                                    .with_name(TopicName(s(t)))
                                    .with_partition_indexes(ps)
                            })
                            .collect()
                    }))])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(&self.group)))
                    .with_topics((!all).then(|| {
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchRequestTopic::default()
                                    .with_name(TopicName(s(t)))
                                    .with_partition_indexes(ps)
                            })
                            .collect()
                    }))
            };
            // Offsets of a transaction still committing are withheld, not stale (KIP-447).
            let req = req.with_require_stable(
                version >= 7
                    && self.config.isolation_level == crate::types::IsolationLevel::ReadCommitted,
            );
            let resp = conn.send_raw(&req, version).await?;
            let mut out = HashMap::new();
            let mut code = resp.error_code;
            let mut partition_error = None;
            if version >= 8 {
                for g in resp.groups {
                    code = g.error_code;
                    for t in g.topics {
                        for p in t.partitions {
                            if p.error_code != 0 {
                                partition_error.get_or_insert(p.error_code);
                            }
                            out.insert(
                                TopicPartition::new(t.name.0.to_string(), p.partition_index),
                                p.committed_offset,
                            );
                        }
                    }
                }
            } else {
                for t in resp.topics {
                    for p in t.partitions {
                        if p.error_code != 0 {
                            partition_error.get_or_insert(p.error_code);
                        }
                        out.insert(
                            TopicPartition::new(t.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        );
                    }
                }
            }
            if code == 0 {
                code = partition_error.unwrap_or(0);
            }
            match ResponseError::try_from_code(code) {
                None => return Ok(out),
                Some(e) if self.retry_on(e).await => continue,
                Some(ResponseError::UnstableOffsetCommit) => {
                    // A transaction is committing offsets: ask again shortly.
                    tokio::time::sleep(self.config.client.retry_backoff).await;
                    continue;
                }
                Some(e) => {
                    return Err(Error::broker(
                        format!("fetch committed offsets of group {}", self.group),
                        e,
                        None,
                    ))
                }
            }
        }
    }

    /// Leaves the group (static members stay, as in Kafka, so a restart does not rebalance).
    pub async fn leave(&self) -> Result<()> {
        let id = self.identity.lock().clone();
        if id.member_id.is_empty() || id.instance_id.is_some() {
            return Ok(());
        }
        let conn = self.coordinator().await?;
        let version = conn.version::<LeaveGroupRequest>(0..=4)?;
        let req = if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(s(&id.member_id))
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_member_id(s(&id.member_id))
        };
        let resp = conn.send_raw(&req, version).await?;
        {
            let mut i = self.identity.lock();
            i.member_id.clear();
            i.generation = -1;
        }
        crate::error::check(resp.error_code, || format!("leave group {}", self.group))
    }
}

/// Heartbeats every `heartbeat.interval.ms` until aborted; wakes `poll` when a rejoin is due.
pub(crate) async fn heartbeat_loop(m: Arc<Membership>, shared: Arc<super::fetcher::Shared>) {
    let interval = m.config.heartbeat_interval.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(interval).await;
        // An application that stops polling must not keep its partitions (max.poll.interval.ms):
        // leave so the group can hand them to a live member; the next poll rejoins.
        let idle = Duration::from_millis(
            (super::now_millis() - m.last_poll.load(Ordering::Acquire)).max(0) as u64,
        );
        if idle > m.config.max_poll_interval {
            tracing::warn!(
                group = %m.group,
                "poll() not called for {idle:?} (max.poll.interval.ms); leaving the group"
            );
            if let Err(e) = m.leave().await {
                tracing::debug!(group = %m.group, error = %e, "leaving the group failed");
            }
            {
                let mut i = m.identity.lock();
                i.generation = -1;
            }
            m.rejoin.store(true, Ordering::Release);
            shared.data.notify_waiters();
            return;
        }
        // Keep heartbeating while a rejoin is pending: until poll() starts the JoinGroup, the
        // session must not expire.
        if let Err(e) = m.heartbeat().await {
            tracing::debug!(group = %m.group, error = %e, "heartbeat failed");
        }
        if m.rejoin.load(Ordering::Acquire) {
            shared.data.notify_waiters();
        }
    }
}
