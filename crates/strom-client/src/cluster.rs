//! What the client knows about the cluster: brokers, topics, partition leaders, group
//! coordinators, and a pool with one connection per broker.
//!
//! Metadata is refreshed on demand (an unknown topic, a NOT_LEADER_OR_FOLLOWER answer, a
//! broken connection) and at least every `metadata.max.age.ms`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    metadata_request::MetadataRequestTopic, FindCoordinatorRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::{Mutex, RwLock};

use crate::config::ClientConfig;
use crate::conn::Connection;
use crate::error::{Error, Result};

/// A broker as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub id: i32,
    /// `host:port`.
    pub addr: String,
    /// Rack, if configured.
    pub rack: Option<String>,
}

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader's node id, -1 when there is none.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Offline replica node ids.
    pub offline: Vec<i32>,
    /// Error code for the partition (0 when fine).
    pub error: i16,
}

/// One topic as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Topic id (nil before Kafka 2.8 / metadata v10).
    pub id: uuid::Uuid,
    /// Whether it is an internal topic such as `__consumer_offsets`.
    pub internal: bool,
    /// Partitions in index order.
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Default)]
struct Snapshot {
    brokers: HashMap<i32, BrokerInfo>,
    topics: HashMap<String, Arc<TopicInfo>>,
    controller: i32,
    cluster_id: Option<String>,
    refreshed: Option<Instant>,
}

#[derive(Default)]
struct Slot {
    conn: Option<Arc<Connection>>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Shared cluster state; one per producer, consumer or admin client.
pub struct Cluster {
    pub(crate) config: ClientConfig,
    meta: RwLock<Snapshot>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    refreshing: tokio::sync::Mutex<()>,
    auto_create: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster handle; nothing is connected until first use.
    pub fn new(config: ClientConfig, auto_create: bool) -> Result<Arc<Self>> {
        config.validate()?;
        Ok(Arc::new(Cluster {
            config,
            meta: RwLock::new(Snapshot::default()),
            slots: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
            auto_create,
        }))
    }

    /// A connection to `addr`, reusing a live one; reconnects with exponential backoff.
    pub async fn connect(&self, addr: &str) -> Result<Arc<Connection>> {
        self.connect_slot(addr, addr).await
    }

    /// A connection to `addr` kept under `key`: the group coordinator gets its own, as in
    /// Kafka's clients, because brokers answer one request per connection at a time and a
    /// JoinGroup may be held for minutes.
    async fn connect_slot(&self, key: &str, addr: &str) -> Result<Arc<Connection>> {
        let slot = self
            .slots
            .lock()
            .entry(key.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = &slot.conn {
            if c.is_alive() {
                return Ok(c.clone());
            }
        }
        if let Some(at) = slot.retry_at {
            tokio::time::sleep_until(at.into()).await;
        }
        match Connection::connect(
            addr,
            &self.config.client_id,
            self.config.connect_timeout,
            self.config.request_timeout,
        )
        .await
        {
            Ok(c) => {
                let c = Arc::new(c);
                slot.conn = Some(c.clone());
                slot.failures = 0;
                slot.retry_at = None;
                Ok(c)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = self
                    .config
                    .reconnect_backoff
                    .saturating_mul(1 << slot.failures.min(16))
                    .min(self.config.reconnect_backoff_max);
                slot.retry_at = Some(Instant::now() + backoff);
                slot.conn = None;
                Err(e)
            }
        }
    }

    /// A connection to broker `id`.
    pub async fn broker(&self, id: i32) -> Result<Arc<Connection>> {
        let addr = self.meta.read().brokers.get(&id).map(|b| b.addr.clone());
        match addr {
            Some(a) => self.connect(&a).await,
            None => {
                self.refresh(None).await?;
                let addr = self.meta.read().brokers.get(&id).map(|b| b.addr.clone());
                // A leader the metadata names but does not list (it is fenced, or the answers
                // came from brokers with different views): retriable, as Kafka's clients do.
                let a = addr.ok_or_else(|| Error::Broker {
                    context: format!("connecting to broker {id}"),
                    code: kafka_protocol::ResponseError::LeaderNotAvailable,
                    message: Some(format!("broker {id} is not in the cluster metadata")),
                })?;
                self.connect(&a).await
            }
        }
    }

    /// A connection to any broker: a known one if possible, else a bootstrap server.
    pub async fn any(&self) -> Result<Arc<Connection>> {
        let mut addrs: Vec<String> = {
            let m = self.meta.read();
            let mut v: Vec<&BrokerInfo> = m.brokers.values().collect();
            v.sort_by_key(|b| b.id);
            v.into_iter().map(|b| b.addr.clone()).collect()
        };
        // Prefer one already connected.
        for a in &addrs {
            let slot = self.slots.lock().get(a).cloned();
            if let Some(slot) = slot {
                if let Ok(s) = slot.try_lock() {
                    if let Some(c) = s.conn.as_ref().filter(|c| c.is_alive()) {
                        return Ok(c.clone());
                    }
                }
            }
        }
        for b in &self.config.bootstrap_servers {
            if !addrs.contains(b) {
                addrs.push(b.clone());
            }
        }
        let mut failures: Vec<(String, String)> = Vec::new();
        let mut last = None;
        for a in &addrs {
            match self.connect(a).await {
                Ok(c) => return Ok(c),
                Err(Error::Unreachable { address, reason }) => failures.push((address, reason)),
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        match failures.len() {
            0 => Err(Error::Config("bootstrap.servers is empty".into())),
            1 => {
                let (address, reason) = failures.remove(0);
                Err(Error::Unreachable { address, reason })
            }
            _ => {
                let address = failures
                    .iter()
                    .map(|(a, _)| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                // One reason when they agree ("Connection refused"), else each with its address.
                let reason = if failures.iter().all(|(_, r)| *r == failures[0].1) {
                    failures[0].1.clone()
                } else {
                    failures
                        .iter()
                        .map(|(a, r)| format!("{a}: {r}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                Err(Error::Unreachable { address, reason })
            }
        }
    }

    /// Refreshes metadata for `topics` (all topics when `None`).
    pub async fn refresh(&self, topics: Option<&[String]>) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let conn = self.any().await?;
        let (version, _) = (conn.version::<MetadataRequest>(1..=12)?, ());
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(version >= 4 && self.auto_create);
        let resp = conn.send_raw(&req, version).await?;
        let mut m = self.meta.write();
        m.brokers = resp
            .brokers
            .iter()
            .map(|b| {
                let id = b.node_id.0;
                (
                    id,
                    BrokerInfo {
                        id,
                        addr: format!("{}:{}", b.host, b.port),
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        m.controller = resp.controller_id.0;
        m.cluster_id = resp.cluster_id.as_ref().map(|s| s.to_string());
        if topics.is_none() {
            m.topics.clear();
        }
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code != 0 {
                m.topics.remove(&name);
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            m.topics.insert(
                name.clone(),
                Arc::new(TopicInfo {
                    name,
                    id: t.topic_id,
                    internal: t.is_internal,
                    partitions,
                }),
            );
        }
        m.refreshed = Some(Instant::now());
        Ok(())
    }

    /// Cached metadata for `topic`, without any request.
    pub fn cached(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        self.meta.read().topics.get(topic).cloned()
    }

    /// Whether the cached metadata is older than `metadata.max.age.ms`.
    pub fn stale(&self) -> bool {
        self.meta
            .read()
            .refreshed
            .is_none_or(|t| t.elapsed() > self.config.metadata_max_age)
    }

    /// Metadata for `topic`, asking the cluster when it is not cached; retries until `deadline`
    /// while the topic is unknown or leaderless (it may be being created).
    pub async fn topic(&self, topic: &str, wait: Duration) -> Result<Arc<TopicInfo>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(t) = self.cached(topic) {
                if t.partitions.iter().all(|p| p.leader >= 0) || Instant::now() >= deadline {
                    return Ok(t);
                }
            }
            match self.refresh(Some(&[topic.to_string()])).await {
                Ok(()) => {}
                Err(e) if Instant::now() >= deadline || !e.is_retriable() => return Err(e),
                Err(_) => {}
            }
            if let Some(t) = self.cached(topic) {
                if t.partitions.iter().all(|p| p.leader >= 0) {
                    return Ok(t);
                }
            }
            if Instant::now() >= deadline {
                return self
                    .cached(topic)
                    .ok_or_else(|| Error::UnknownTopic(topic.to_string()));
            }
            tokio::time::sleep(self.config.retry_backoff).await;
        }
    }

    /// The leader of a partition from the cache, or -1.
    pub fn leader(&self, topic: &str, partition: i32) -> i32 {
        self.cached(topic)
            .and_then(|t| t.partitions.get(partition as usize).map(|p| p.leader))
            .unwrap_or(-1)
    }

    /// Known brokers, by id.
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        let mut v: Vec<BrokerInfo> = self.meta.read().brokers.values().cloned().collect();
        v.sort_by_key(|b| b.id);
        v
    }

    /// The controller's id and the cluster id, from the last refresh.
    pub fn controller(&self) -> (i32, Option<String>) {
        let m = self.meta.read();
        (m.controller, m.cluster_id.clone())
    }

    /// Every cached topic.
    pub fn topics(&self) -> Vec<Arc<TopicInfo>> {
        let mut v: Vec<_> = self.meta.read().topics.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Finds the coordinator of a group (`key_type` 0) and connects to it.
    pub async fn coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        let mut attempt = 0u32;
        loop {
            let conn = self.any().await?;
            let version = conn.version::<FindCoordinatorRequest>(0..=4)?;
            let key = StrBytes::from_string(group.to_string());
            let req = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
            } else {
                FindCoordinatorRequest::default().with_key(key)
            };
            let resp = conn.send_raw(&req, version).await?;
            let (code, host, port) = if version >= 4 {
                match resp.coordinators.first() {
                    Some(c) => (c.error_code, c.host.to_string(), c.port),
                    None => {
                        return Err(Error::Protocol(
                            "FindCoordinator answered no coordinator".into(),
                        ))
                    }
                }
            } else {
                (resp.error_code, resp.host.to_string(), resp.port)
            };
            match ResponseError::try_from_code(code) {
                None => {
                    let addr = format!("{host}:{port}");
                    return self
                        .connect_slot(&format!("coordinator {addr}"), &addr)
                        .await;
                }
                Some(e) if e.is_retriable() && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
                Some(e) => {
                    return Err(Error::broker(
                        format!("find coordinator of group {group}"),
                        e,
                        None,
                    ))
                }
            }
        }
    }
}
