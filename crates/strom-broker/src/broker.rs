//! The broker's state and request dispatch, independent of sockets: tests drive
//! [`Broker::handle`] directly, the server feeds it decoded frames.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use strom_log::{LogManager, PartitionLog};
use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::group::machine::GroupConfig;
use crate::group::{store, GroupCoordinator};
use crate::protocol::Request;
use crate::replication::LeaderState;

/// The role this broker plays for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts produce requests and serves consumers.
    Leader,
    /// Copies the leader's log (the replication layer drives it).
    Follower,
}

/// Who leads a partition and who is in sync, as this broker last learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// Leader or follower.
    pub role: Role,
    /// The leader's node id (-1: none).
    pub leader: i32,
    /// Epoch of the current leadership.
    pub leader_epoch: i32,
    /// Bumped by the controller on every change of the partition.
    pub partition_epoch: i32,
    /// All replicas' node ids.
    pub replicas: Vec<i32>,
    /// In-sync replicas' node ids.
    pub isr: Vec<i32>,
}

/// One partition as the broker sees it: the log plus its replication state. On a single node
/// the broker leads every partition and the in-sync set is the broker itself, so the high
/// watermark follows the log end. In a cluster the leader keeps a [`LeaderState`] (follower
/// log ends, ISR proposals) that decides the high watermark, and a replica without one never
/// moves it.
///
/// Appends hold the replication state's read lock from the role check to the high-watermark
/// update, and role changes take its write lock: an append is either wholly in the old role
/// or refused (Kafka's `leaderIsrUpdateLock`). Lock order: `state`, then `leader_state`.
#[derive(Debug)]
pub struct Partition {
    /// The partition's log.
    pub log: Arc<PartitionLog>,
    clustered: bool,
    state: RwLock<ReplicaState>,
    leader_state: Mutex<Option<LeaderState>>,
}

/// Why an append as leader or follower did not happen.
#[derive(Debug)]
pub enum AppendRefused {
    /// The partition's role or epoch is no longer the one the caller acted on.
    NotInRole,
    /// The log refused the batches.
    Log(strom_log::Error),
}

impl Partition {
    fn single(log: Arc<PartitionLog>, node: i32) -> Self {
        // A data directory that was once part of a cluster keeps its latest epoch.
        let epoch = log.leader_epochs().last().map_or(0, |(e, _)| (*e).max(0));
        Partition {
            log,
            clustered: false,
            state: RwLock::new(ReplicaState {
                role: Role::Leader,
                leader: node,
                leader_epoch: epoch,
                partition_epoch: 0,
                replicas: vec![node],
                isr: vec![node],
            }),
            leader_state: Mutex::new(None),
        }
    }

    /// A replica that leads nothing until the cluster metadata says otherwise.
    pub(crate) fn replica(log: Arc<PartitionLog>) -> Self {
        Partition {
            log,
            clustered: true,
            state: RwLock::new(ReplicaState {
                role: Role::Follower,
                leader: -1,
                leader_epoch: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
            }),
            leader_state: Mutex::new(None),
        }
    }

    /// The replication state.
    pub fn state(&self) -> ReplicaState {
        self.state.read().clone()
    }

    /// Role and leader epoch (the hot paths' check).
    pub fn role_epoch(&self) -> (Role, i32) {
        let s = self.state.read();
        (s.role, s.leader_epoch)
    }

    /// Replaces the role (waits for appends in flight under the old one).
    pub(crate) fn set_state(&self, state: ReplicaState, leader_state: Option<LeaderState>) {
        let mut st = self.state.write();
        *st = state;
        *self.leader_state.lock() = leader_state;
    }

    pub(crate) fn with_leader_state<T>(&self, f: impl FnOnce(&mut LeaderState) -> T) -> Option<T> {
        self.leader_state.lock().as_mut().map(f)
    }

    pub(crate) fn update_state(&self, f: impl FnOnce(&mut ReplicaState)) {
        f(&mut self.state.write());
    }

    /// In-sync replicas the leader counts for `min.insync.replicas`.
    pub fn isr_len(&self) -> usize {
        let st = self.state.read();
        match &*self.leader_state.lock() {
            Some(ls) => ls.isr().len(),
            None => st.isr.len(),
        }
    }

    /// Appends client batches as the leader, in `epoch` if given (else the current one), and
    /// moves the high watermark. Returns what was stored and the epoch it was stored in.
    pub fn append_as_leader(
        &self,
        records: &mut [u8],
        epoch: Option<i32>,
    ) -> Result<(strom_log::AppendInfo, i32), AppendRefused> {
        let st = self.state.read();
        if st.role != Role::Leader || epoch.is_some_and(|e| e != st.leader_epoch) {
            return Err(AppendRefused::NotInRole);
        }
        let info = self
            .log
            .append(records, strom_log::AppendOptions::leader(st.leader_epoch))
            .map_err(AppendRefused::Log)?;
        if !info.duplicate {
            self.advance_high_watermark();
        }
        Ok((info, st.leader_epoch))
    }

    /// Appends batches copied from `leader` in `epoch`, if this replica still follows it in
    /// that epoch (`Ok(None)` otherwise: a late answer from a deposed leader is dropped).
    pub(crate) fn append_as_follower(
        &self,
        records: &mut [u8],
        leader: i32,
        epoch: i32,
    ) -> Result<Option<strom_log::AppendInfo>, strom_log::Error> {
        let st = self.state.read();
        if st.role != Role::Follower || st.leader != leader || st.leader_epoch != epoch {
            return Ok(None);
        }
        self.log
            .append(records, strom_log::AppendOptions::replica())
            .map(Some)
    }

    /// Truncates to `offset` if this replica still follows `leader` in `epoch`.
    pub(crate) fn truncate_as_follower(
        &self,
        offset: i64,
        leader: i32,
        epoch: i32,
    ) -> Result<bool, strom_log::Error> {
        let st = self.state.read();
        if st.role != Role::Follower || st.leader != leader || st.leader_epoch != epoch {
            return Ok(false);
        }
        self.log.truncate_to(offset)?;
        Ok(true)
    }

    /// Restarts the log empty at `offset` (the leader's log start, beyond this replica's end)
    /// if this replica still follows `leader` in `epoch`.
    pub(crate) fn restart_as_follower_at(
        &self,
        offset: i64,
        log_start: i64,
        leader: i32,
        epoch: i32,
    ) -> Result<bool, strom_log::Error> {
        let st = self.state.read();
        if st.role != Role::Follower || st.leader != leader || st.leader_epoch != epoch {
            return Ok(false);
        }
        self.log.truncate_fully_and_start_at(offset, log_start)?;
        Ok(true)
    }

    /// Moves the high watermark after an append: on a single node to the log end, in a
    /// cluster (leader only) to the smallest log end among the in-sync replicas. Returns
    /// whether it moved.
    pub fn update_high_watermark(&self) -> bool {
        let _st = self.state.read();
        self.advance_high_watermark()
    }

    /// The body of [`Partition::update_high_watermark`], with the state lock held.
    fn advance_high_watermark(&self) -> bool {
        let leo = self.log.log_end_offset();
        let mut ls = self.leader_state.lock();
        let hw = match &mut *ls {
            Some(ls) => ls.on_append(leo),
            None if !self.clustered => (self.log.high_watermark() < leo).then_some(leo),
            // A replica without leader state never moves the high watermark itself.
            None => None,
        };
        match hw {
            Some(hw) => {
                self.log.advance_high_watermark(hw);
                true
            }
            None => false,
        }
    }

    /// Runs `f` on the leader state and stores the high watermark it returns, under its lock
    /// (so racing updates are applied in order).
    pub(crate) fn leader_update<T>(
        &self,
        f: impl FnOnce(&mut LeaderState) -> (Option<i64>, T),
    ) -> Option<(bool, T)> {
        let mut ls = self.leader_state.lock();
        let ls = ls.as_mut()?;
        let (hw, out) = f(ls);
        if let Some(hw) = hw {
            self.log.advance_high_watermark(hw);
        }
        Some((hw.is_some(), out))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ClusterFile {
    cluster_id: String,
    node_id: i32,
    /// The metadata quorum's cluster id, once this data directory joined one: metadata from
    /// another cluster never deletes its data.
    #[serde(default)]
    quorum_cluster_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProducerIdFile {
    next_block: i64,
}

pub(crate) const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug)]
struct ProducerIds {
    next: i64,
    block_end: i64,
}

/// What to do after handling a request.
#[derive(Debug)]
pub enum Reply {
    /// Send this response.
    Respond(Box<ResponseKind>),
    /// Send nothing (a successful `acks=0` produce).
    Nothing,
    /// Close the connection: the only way to tell an `acks=0` producer that an append failed,
    /// so that it refreshes its metadata (as Kafka does).
    Close,
}

/// A single Kafka-protocol broker.
pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) logs: LogManager,
    pub(crate) cluster_id: String,
    advertised: RwLock<(String, i32)>,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Woken on every append, for fetches waiting on `min_bytes`.
    pub(crate) appended: Notify,
    producer_ids: Mutex<ProducerIds>,
    groups: GroupCoordinator,
    cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterNode>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.config.node_id)
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::ConfigFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(e)),
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
    strom_log::checkpoint::write_atomic(path, &bytes)?;
    Ok(())
}

impl Broker {
    /// Opens the data directory (recovering logs if the last shutdown was not clean).
    pub fn open(config: BrokerConfig) -> Result<Self> {
        config.validate()?;
        let logs = LogManager::open(&config.data_dir, config.log_defaults()?)?;
        let cluster_path = config.data_dir.join("cluster.json");
        let cluster_id = match read_json::<ClusterFile>(&cluster_path)? {
            Some(c) if c.node_id != config.node_id => {
                return Err(Error::Config(format!(
                    "data directory {} belongs to node {}, but this broker is node {}",
                    config.data_dir.display(),
                    c.node_id,
                    config.node_id
                )))
            }
            Some(c) => c.cluster_id,
            None => {
                let id = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
                write_json(
                    &cluster_path,
                    &ClusterFile {
                        cluster_id: id.clone(),
                        node_id: config.node_id,
                        quorum_cluster_id: None,
                    },
                )?;
                id
            }
        };
        let pid_path = config.data_dir.join("producer-ids.json");
        let next_block = read_json::<ProducerIdFile>(&pid_path)?.map_or(0, |p| p.next_block);
        let clustered = config.controller_quorum.is_some();
        let mut partitions = HashMap::new();
        for ((topic, p), log) in logs.logs() {
            let part = if clustered {
                // Leads nothing until the metadata quorum says so.
                Arc::new(Partition::replica(log))
            } else {
                let part = Arc::new(Partition::single(log, config.node_id));
                part.update_high_watermark();
                part
            };
            partitions.insert((topic, p), part);
        }
        // In a cluster, groups are loaded partition by partition as this broker becomes leader.
        let offsets_partitions: Vec<Arc<Partition>> = if clustered {
            Vec::new()
        } else {
            (0..logs.topic(store::TOPIC).map_or(0, |m| m.partitions))
                .filter_map(|p| partitions.get(&(store::TOPIC.to_string(), p)).cloned())
                .collect()
        };
        let groups = GroupCoordinator::open(
            GroupConfig {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                offsets_retention_ms: config.offsets_retention_minutes * 60_000,
            },
            offsets_partitions,
        )?;
        let broker = Broker {
            advertised: RwLock::new(config.advertised_host_port()?),
            logs,
            cluster_id,
            partitions: RwLock::new(partitions),
            appended: Notify::new(),
            producer_ids: Mutex::new(ProducerIds {
                next: next_block,
                block_end: next_block,
            }),
            groups,
            config,
            cluster: std::sync::OnceLock::new(),
        };
        Ok(broker)
    }

    /// The consumer-group coordinator.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    /// The cluster membership, when this broker is part of a replicated cluster.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterNode>> {
        self.cluster.get()
    }

    /// Joins the cluster configured with `controller-quorum` (no-op without one).
    pub async fn join_cluster(self: &Arc<Self>) -> Result<()> {
        if self.config.controller_quorum.is_none() || self.cluster.get().is_some() {
            return Ok(());
        }
        let node = crate::cluster::ClusterNode::start(self).await?;
        let _ = self.cluster.set(node);
        Ok(())
    }

    /// Every partition with its key.
    pub(crate) fn partitions_snapshot(&self) -> Vec<((String, i32), Arc<Partition>)> {
        self.partitions
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Creates, grows or reconfigures the local copy of a topic this broker replicates.
    pub(crate) fn ensure_local_topic(
        &self,
        name: &str,
        t: &strom_controller::TopicInfo,
    ) -> Result<()> {
        let count = t.partitions.len() as i32;
        match self.logs.topic(name) {
            Some(m) if m.topic_id != t.id => {
                self.remove_local_topic(name);
                self.logs
                    .create_topic_with_id(name, &t.id, count, &t.configs)?;
            }
            Some(m) => {
                if m.partitions < count {
                    self.logs.create_partitions(name, count)?;
                }
                if m.configs != t.configs {
                    self.logs.set_topic_configs(name, &t.configs)?;
                }
            }
            None => {
                self.logs
                    .create_topic_with_id(name, &t.id, count, &t.configs)?;
            }
        }
        let mut parts = self.partitions.write();
        for p in 0..count {
            let key = (name.to_string(), p);
            if parts.contains_key(&key) {
                continue;
            }
            if let Some(log) = self.logs.log(name, p) {
                parts.insert(key, Arc::new(Partition::replica(log)));
            }
        }
        Ok(())
    }

    /// The metadata quorum's cluster id this data directory belongs to, if it joined one.
    pub(crate) fn bound_cluster(&self) -> Option<String> {
        read_json::<ClusterFile>(&self.config.data_dir.join("cluster.json"))
            .ok()
            .flatten()
            .and_then(|f| f.quorum_cluster_id)
    }

    /// Binds this data directory to the quorum's cluster `id` on first contact; returns whether
    /// the directory belongs to that cluster (so metadata from it may delete local data).
    pub(crate) fn bind_cluster(&self, id: &str) -> bool {
        let path = self.config.data_dir.join("cluster.json");
        let Ok(Some(mut file)) = read_json::<ClusterFile>(&path) else {
            return false;
        };
        match &file.quorum_cluster_id {
            Some(bound) => bound == id,
            None => {
                file.quorum_cluster_id = Some(id.to_string());
                if let Err(e) = write_json(&path, &file) {
                    tracing::error!("recording the cluster id: {e}");
                }
                false
            }
        }
    }

    /// Deletes the local copy of a topic (deleted in the cluster).
    pub(crate) fn remove_local_topic(&self, name: &str) {
        self.drop_partitions(name);
        match self.logs.delete_topic(name) {
            Ok(()) => tracing::info!(topic = %name, "deleted the local replica"),
            Err(strom_log::Error::UnknownTopicOrPartition(_)) => {}
            Err(e) => tracing::error!(topic = %name, "deleting the local replica failed: {e}"),
        }
    }

    /// Creates `__consumer_offsets` on first use of a group API, as Kafka does.
    pub(crate) fn ensure_offsets_topic(&self) {
        if self.groups.has_store() {
            return;
        }
        let configs = std::collections::BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), (100 * 1024 * 1024).to_string()),
        ]);
        match self
            .logs
            .create_topic(store::TOPIC, self.config.offsets_topic_partitions, &configs)
        {
            Ok(_) | Err(strom_log::Error::TopicAlreadyExists(_)) => {}
            Err(e) => {
                tracing::error!("creating {} failed: {e}", store::TOPIC);
                return;
            }
        }
        self.adopt_partitions(store::TOPIC);
        let n = self.logs.topic(store::TOPIC).map_or(0, |m| m.partitions);
        let parts = (0..n)
            .filter_map(|p| self.partition(store::TOPIC, p))
            .collect();
        self.groups.attach_store(parts);
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The cluster id (generated on first start, kept in the data directory).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The host and port clients are told to connect to.
    pub fn advertised(&self) -> (String, i32) {
        self.advertised.read().clone()
    }

    /// Sets the advertised address once the listener is bound (when none was configured, the
    /// bound address is advertised, so port 0 works).
    pub fn set_advertised(&self, host: String, port: i32) {
        *self.advertised.write() = (host, port);
    }

    /// The log manager.
    pub fn logs(&self) -> &LogManager {
        &self.logs
    }

    /// One partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Registers the partitions of a topic created or grown in the log manager.
    pub(crate) fn adopt_partitions(&self, topic: &str) {
        let Some(meta) = self.logs.topic(topic) else {
            return;
        };
        let mut parts = self.partitions.write();
        for p in 0..meta.partitions {
            let key = (topic.to_string(), p);
            if parts.contains_key(&key) {
                continue;
            }
            if let Some(log) = self.logs.log(topic, p) {
                parts.insert(key, Arc::new(Partition::single(log, self.config.node_id)));
            }
        }
    }

    /// Forgets the partitions of a deleted topic.
    pub(crate) fn drop_partitions(&self, topic: &str) {
        self.partitions.write().retain(|(t, _), _| t != topic);
    }

    /// Allocates a fresh producer id; blocks of ids are reserved on disk so a restart never
    /// hands out an id twice.
    pub(crate) fn allocate_producer_id(&self) -> Result<i64> {
        let mut ids = self.producer_ids.lock();
        if ids.next >= ids.block_end {
            let end = ids.next + PRODUCER_ID_BLOCK;
            write_json(
                &self.config.data_dir.join("producer-ids.json"),
                &ProducerIdFile { next_block: end },
            )?;
            ids.block_end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// The next producer id of the block the controller gave this broker, if any is left.
    pub(crate) fn next_cluster_producer_id(&self) -> Option<i64> {
        let mut ids = self.producer_ids.lock();
        (ids.next < ids.block_end).then(|| {
            ids.next += 1;
            ids.next - 1
        })
    }

    /// Starts handing out the block `[start, start + PRODUCER_ID_BLOCK)`.
    pub(crate) fn refill_producer_ids(&self, start: i64) {
        let mut ids = self.producer_ids.lock();
        if ids.next >= ids.block_end {
            ids.next = start;
            ids.block_end = start + PRODUCER_ID_BLOCK;
        }
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request) -> Reply {
        if let Some(node) = self.cluster() {
            if let Some(reply) = self.handle_clustered(node, &req).await {
                return reply;
            }
        }
        let version = req.header.request_api_version;
        // Only JoinGroup needs the client's id and address; the hot paths do not pay for them.
        let client_id = || {
            req.header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default()
        };
        let host = || req.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default();
        if crate::apis::is_group_api(req.api) && self.cluster().is_none() {
            self.ensure_offsets_topic();
        }
        let response = match req.body {
            RequestKind::FindCoordinator(r) => {
                ResponseKind::FindCoordinator(self.find_coordinator(r, version).await)
            }
            RequestKind::JoinGroup(r) => {
                ResponseKind::JoinGroup(self.join_group(r, version, client_id(), host()).await)
            }
            RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(self.sync_group(r, version).await),
            RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(self.heartbeat(r)),
            RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(self.leave_group(r, version)),
            RequestKind::OffsetCommit(r) => {
                let group = r.group_id.to_string();
                let mut resp = self.offset_commit(r);
                // In a cluster a commit is acknowledged once every in-sync replica of the
                // group's `__consumer_offsets` partition has it (as Kafka: acks=all).
                if self.cluster().is_some() && !self.await_group_replication(&group).await {
                    for p in resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                        if p.error_code == 0 {
                            p.error_code = ResponseError::CoordinatorNotAvailable.code();
                        }
                    }
                }
                ResponseKind::OffsetCommit(resp)
            }
            RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(self.offset_fetch(r, version)),
            RequestKind::ListGroups(r) => ResponseKind::ListGroups(self.list_groups(r, version)),
            RequestKind::DescribeGroups(r) => {
                ResponseKind::DescribeGroups(self.describe_groups(r, version))
            }
            RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(self.delete_groups(r)),
            RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(self.offset_delete(r)),
            RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(self.api_versions(r, version)),
            RequestKind::Metadata(r) => ResponseKind::Metadata(self.metadata(r, version)),
            RequestKind::Produce(r) => return self.produce(r, version).await,
            RequestKind::Fetch(r) => ResponseKind::Fetch(self.fetch(r, version).await),
            RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(self.list_offsets(r, version)),
            RequestKind::OffsetForLeaderEpoch(r) => {
                ResponseKind::OffsetForLeaderEpoch(self.offset_for_leader_epoch(r))
            }
            RequestKind::CreateTopics(r) => {
                ResponseKind::CreateTopics(self.create_topics(r, version))
            }
            RequestKind::DeleteTopics(r) => {
                ResponseKind::DeleteTopics(self.delete_topics(r, version))
            }
            RequestKind::CreatePartitions(r) => {
                ResponseKind::CreatePartitions(self.create_partitions(r, version))
            }
            RequestKind::DescribeConfigs(r) => {
                ResponseKind::DescribeConfigs(self.describe_configs(r, version))
            }
            RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(self.alter_configs(r).await),
            RequestKind::IncrementalAlterConfigs(r) => {
                ResponseKind::IncrementalAlterConfigs(self.incremental_alter_configs(r).await)
            }
            RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(self.delete_records(r)),
            RequestKind::DescribeCluster(r) => {
                ResponseKind::DescribeCluster(self.describe_cluster(r, version))
            }
            RequestKind::InitProducerId(r) => {
                ResponseKind::InitProducerId(self.init_producer_id(r))
            }
            other => {
                // Unreachable: the protocol layer refuses APIs outside `apis::SUPPORTED`.
                tracing::error!(api = ?req.api, "no handler for {other:?}; this is a bug");
                return Reply::Close;
            }
        };
        Reply::Respond(Box::new(response))
    }

    /// Waits until the high watermark of `group`'s `__consumer_offsets` partition reaches its
    /// log end (what the coordinator just wrote), up to 5 s.
    async fn await_group_replication(&self, group: &str) -> bool {
        let count = self.logs.topic(store::TOPIC).map_or(0, |m| m.partitions);
        let Some(part) = self.partition(store::TOPIC, store::partition_for(group, count)) else {
            return false;
        };
        let target = part.log.log_end_offset();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if part.log.high_watermark() >= target {
                return true;
            }
            if part.role_epoch().0 != Role::Leader
                || tokio::time::timeout_at(deadline, notified).await.is_err()
            {
                return part.log.high_watermark() >= target;
            }
        }
    }

    /// Requests a cluster answers differently from a single node; `None`: the common path.
    async fn handle_clustered(
        &self,
        node: &Arc<crate::cluster::ClusterNode>,
        req: &Request,
    ) -> Option<Reply> {
        // Until this broker has caught up with the metadata after (re)starting, answers from
        // it would describe the past: hold requests back a moment (Kafka keeps the listener
        // closed until then).
        node.ready(std::time::Duration::from_secs(10)).await;
        let version = req.header.request_api_version;
        if let Some(group) = crate::handlers::groups::group_of(&req.body, version) {
            if !node.owns_group(&group) {
                return crate::handlers::groups::not_coordinator(&req.body, version)
                    .map(|r| Reply::Respond(Box::new(r)));
            }
            return None;
        }
        let resp = match &req.body {
            RequestKind::Metadata(r) => {
                ResponseKind::Metadata(self.metadata_clustered(node, r.clone(), version).await)
            }
            RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(
                self.create_topics_clustered(node, r.clone(), version).await,
            ),
            RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(
                self.delete_topics_clustered(node, r.clone(), version).await,
            ),
            RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(
                self.create_partitions_clustered(node, r.clone()).await,
            ),
            RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(
                self.describe_cluster_clustered(node, r.clone(), version),
            ),
            RequestKind::InitProducerId(r) => {
                ResponseKind::InitProducerId(self.init_producer_id_clustered(node, r.clone()).await)
            }
            _ => return None,
        };
        Some(Reply::Respond(Box::new(resp)))
    }

    /// Flushes and closes every log, leaving the clean-shutdown marker.
    pub fn shutdown(&self) -> Result<()> {
        self.logs.close()?;
        Ok(())
    }

    /// Starts the log upkeep thread (retention, compaction, timed flushes).
    pub fn start_upkeep(&self) {
        self.logs.start_upkeep(std::time::Duration::from_millis(
            self.config.log_upkeep_interval_ms,
        ));
    }
}

/// Whether clients may not write, trim, delete or repartition `topic` directly.
pub(crate) fn is_internal(topic: &str) -> bool {
    topic == store::TOPIC
}

/// `StrBytes` from a `String`.
pub(crate) fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use strom_log::{BatchBuilder, Compression, LogConfig, Record};

    use super::*;

    fn batch() -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(Record::new(
            None::<bytes::Bytes>,
            Some(bytes::Bytes::from_static(b"v")),
            1,
        ));
        b.build().unwrap()
    }

    fn replica(dir: &Path) -> Partition {
        let (log, _) = PartitionLog::open(dir, Arc::new(LogConfig::default()), true).unwrap();
        Partition::replica(Arc::new(log))
    }

    fn lead(p: &Partition, epoch: i32, isr: &[i32]) {
        p.log.assign_epoch(epoch).unwrap();
        let state = ReplicaState {
            role: Role::Leader,
            leader: 1,
            leader_epoch: epoch,
            partition_epoch: epoch,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        };
        let ls = LeaderState::new(
            1,
            epoch,
            vec![1, 2, 3],
            isr.iter().copied().collect::<BTreeSet<i32>>(),
            p.log.log_end_offset(),
            p.log.high_watermark(),
            0,
            30_000,
        );
        p.set_state(state, Some(ls));
    }

    fn follow(p: &Partition, leader: i32, epoch: i32) {
        let state = ReplicaState {
            role: Role::Follower,
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        };
        p.set_state(state, None);
    }

    #[test]
    fn a_deposed_leader_neither_appends_nor_moves_its_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = replica(dir.path());
        lead(&p, 3, &[1, 2, 3]);
        let (info, epoch) = p.append_as_leader(&mut batch(), None).unwrap();
        assert_eq!((info.first_offset, epoch), (0, 3));
        assert_eq!(p.log.high_watermark(), 0, "the followers have nothing yet");
        follow(&p, 2, 4);
        assert!(matches!(
            p.append_as_leader(&mut batch(), None),
            Err(AppendRefused::NotInRole)
        ));
        assert!(
            !p.update_high_watermark(),
            "a follower never moves its own high watermark"
        );
        assert_eq!(p.log.high_watermark(), 0);
        // A write prepared for the old epoch is refused even if the role looked right.
        lead(&p, 5, &[1]);
        assert!(matches!(
            p.append_as_leader(&mut batch(), Some(3)),
            Err(AppendRefused::NotInRole)
        ));
        // Alone in the ISR, the leader's own append commits.
        p.append_as_leader(&mut batch(), Some(5)).unwrap();
        assert_eq!(p.log.high_watermark(), 2);
    }

    #[test]
    fn the_log_refuses_leader_appends_in_an_older_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let p = replica(dir.path());
        p.log.assign_epoch(7).unwrap();
        let e = p
            .log
            .append(&mut batch(), strom_log::AppendOptions::leader(6))
            .unwrap_err();
        assert!(
            matches!(
                e,
                strom_log::Error::StaleLeaderEpoch {
                    epoch: 6,
                    latest: 7
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn follower_appends_only_from_the_leader_it_follows() {
        let dir = tempfile::tempdir().unwrap();
        let leader_dir = tempfile::tempdir().unwrap();
        let leader = replica(leader_dir.path());
        lead(&leader, 2, &[1]);
        leader.append_as_leader(&mut batch(), None).unwrap();
        let copied = leader
            .log
            .read(0, 1 << 20, strom_log::ReadLimit::LogEnd)
            .unwrap()
            .bytes()
            .unwrap();
        let p = replica(dir.path());
        follow(&p, 1, 2);
        // A late answer from another leader, or for another epoch, is dropped.
        assert!(p
            .append_as_follower(&mut copied.to_vec(), 3, 2)
            .unwrap()
            .is_none());
        assert!(p
            .append_as_follower(&mut copied.to_vec(), 1, 1)
            .unwrap()
            .is_none());
        assert_eq!(p.log.log_end_offset(), 0);
        assert!(p
            .append_as_follower(&mut copied.to_vec(), 1, 2)
            .unwrap()
            .is_some());
        assert_eq!(p.log.log_end_offset(), 1);
        assert!(!p.truncate_as_follower(0, 3, 2).unwrap());
        assert_eq!(p.log.log_end_offset(), 1);
    }
}
