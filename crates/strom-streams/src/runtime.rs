//! [`Streams`]: a topology running against a Kafka-protocol cluster.
//!
//! ```text
//!  consumer (group = application.id, range assignor)
//!     │ poll ──▶ rebalance events ──▶ close revoked tasks / create + restore assigned tasks
//!     ▼
//!  records by task (sub-topology, partition) ──▶ Task::process ──▶ output records ──▶ producer
//!     │
//!  every commit.interval: commit()  =  store changes ─▶ changelogs
//!                                      producer.flush (every output acknowledged)
//!                                      consumer.commit_offsets (the processed input)
//! ```
//!
//! Processing guarantee: at-least-once. Everything a task wrote before a commit is
//! acknowledged before the input offsets are committed; after a crash (or when a task moves
//! without a commit), the new owner restores the stores from their changelogs as of the last
//! commit and reprocesses from the committed offsets, so results may repeat but are never
//! lost. All of that lives in `Runner::commit`, the one place a transaction will go when
//! exactly-once arrives.
//!
//! Instances with the same `application.id` form one consumer group; the range assignor gives
//! partition `p` of every co-partitioned topic to the same instance, which is what makes each
//! task's inputs (for example both sides of a join) meet in one place.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::Mutex;
use strom_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, DeliveryFuture, NewTopic, Producer,
    ProducerConfig, ProducerRecord, RebalanceListener, TopicPartition,
};
use tokio::sync::watch;

use crate::dsl::{Key, Value};
use crate::error::{Error, Result};
use crate::graph::TaskMetrics;
use crate::store::{ErasedStore, KvStore, StoreKind, WindowStore};
use crate::topology::{changelog_topic, Task, Topology};
use crate::window::Windowed;

/// How long a task waits for an input partition whose position or high watermark is not known
/// yet (nothing fetched) before processing its other inputs. An input known to have data in
/// the log is always waited for, as Kafka Streams does with `max.task.idle.ms=0`.
const MAX_TASK_IDLE: Duration = Duration::from_millis(500);

/// Records queued per input partition in direct mode before its log is read again.
const DIRECT_QUEUE: usize = 20_000;

/// An input record waiting in its task's queue.
struct QRec {
    offset: i64,
    timestamp: i64,
    key: Option<bytes::Bytes>,
    value: Option<bytes::Bytes>,
}

/// Where direct mode reads an input partition.
struct Direct {
    log: Arc<strom_log::PartitionLog>,
    position: i64,
}

/// Settings of a streams application.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group, and the prefix of internal topics.
    pub application_id: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `commit.interval.ms`: how often output is flushed and input offsets committed.
    pub commit_interval: Duration,
    /// `replication.factor` of internal topics (-1: the broker's default).
    pub replication_factor: i16,
    /// How long one poll waits for records.
    pub poll_timeout: Duration,
    /// Extra producer settings (`producer.` prefix stripped).
    pub producer: BTreeMap<String, String>,
    /// Extra consumer settings (`consumer.` prefix stripped).
    pub consumer: BTreeMap<String, String>,
}

impl StreamsConfig {
    /// Settings for application `application_id` on the cluster at `bootstrap_servers`.
    pub fn new(application_id: &str, bootstrap_servers: &str) -> Self {
        StreamsConfig {
            application_id: application_id.to_string(),
            bootstrap_servers: bootstrap_servers.to_string(),
            commit_interval: Duration::from_millis(1000),
            replication_factor: -1,
            poll_timeout: Duration::from_millis(100),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
        }
    }

    /// Sets a property by its Kafka Streams name (`commit.interval.ms`,
    /// `replication.factor`, `producer.*`, `consumer.*`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        let bad = || Error::Config(format!("{key}: {value:?} is not a valid value"));
        match key {
            "commit.interval.ms" => {
                self.commit_interval = Duration::from_millis(value.parse().map_err(|_| bad())?)
            }
            "replication.factor" => self.replication_factor = value.parse().map_err(|_| bad())?,
            "poll.ms" => {
                self.poll_timeout = Duration::from_millis(value.parse().map_err(|_| bad())?)
            }
            "application.id" => self.application_id = value.to_string(),
            "bootstrap.servers" => self.bootstrap_servers = value.to_string(),
            k => {
                if let Some(p) = k.strip_prefix("producer.") {
                    self.producer.insert(p.to_string(), value.to_string());
                } else if let Some(c) = k.strip_prefix("consumer.") {
                    self.consumer.insert(c.to_string(), value.to_string());
                } else {
                    return Err(Error::Config(format!(
                        "unknown streams setting {key:?} (producer and consumer settings take a producer. or consumer. prefix)"
                    )));
                }
            }
        }
        Ok(self)
    }

    /// Sets the commit interval.
    pub fn commit_interval(mut self, d: Duration) -> Self {
        self.commit_interval = d;
        self
    }
}

/// Where an application is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Setting up topics and joining the group.
    Starting,
    /// Owns its tasks and processes records.
    Running,
    /// Stopped after an error (the message says what failed).
    Failed(String),
    /// Closed.
    Stopped,
}

/// Counters of a running application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamsMetrics {
    /// Counters of the tasks, including those this instance no longer owns.
    pub tasks: TaskMetrics,
    /// Commits completed.
    pub commits: u64,
    /// Changelog records read while restoring stores.
    pub restored: u64,
    /// Records written to output, repartition and changelog topics.
    pub produced: u64,
}

type StoreHandles = crate::graph::StoreMap;

struct Shared {
    stores: Mutex<BTreeMap<(usize, i32), StoreHandles>>,
    metrics: Mutex<StreamsMetrics>,
}

/// A running streams application. Dropping it stops processing without a final commit (as
/// a crash would); [`close`](Streams::close) commits and leaves the group.
pub struct Streams {
    shared: Arc<Shared>,
    store_names: BTreeSet<String>,
    state: watch::Receiver<State>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Streams {
    /// Creates the internal topics, joins the group and starts processing in a tokio task.
    /// Fails at once if a source topic is missing or co-partitioned topics disagree.
    pub async fn start(topology: Topology, config: StreamsConfig) -> Result<Streams> {
        Self::start_inner(topology, config, None).await
    }

    /// Like [`start`](Self::start) against an [`Embedded`](crate::Embedded) broker in this
    /// process, reading input straight from its log instead of fetching it over the Kafka
    /// protocol (the group, commits, output and changelogs go through the protocol as
    /// always). Same topology, same results, less copying.
    pub async fn start_embedded(
        topology: Topology,
        mut config: StreamsConfig,
        embedded: &crate::Embedded,
    ) -> Result<Streams> {
        config.bootstrap_servers = embedded.bootstrap();
        Self::start_inner(topology, config, Some(embedded.broker().clone())).await
    }

    async fn start_inner(
        topology: Topology,
        config: StreamsConfig,
        local: Option<Arc<strom_broker::Broker>>,
    ) -> Result<Streams> {
        let plan = prepare(&topology, &config).await?;
        let store_names = topology
            .subs
            .iter()
            .flat_map(|s| s.stores.iter().map(|d| d.name.clone()))
            .collect();
        let shared = Arc::new(Shared {
            stores: Mutex::new(BTreeMap::new()),
            metrics: Mutex::new(StreamsMetrics::default()),
        });
        let (state_tx, state) = watch::channel(State::Starting);
        let (stop, stop_rx) = watch::channel(false);
        let runner = Runner::new(topology, config, plan, shared.clone(), local).await?;
        let task = tokio::spawn(async move {
            let r = runner.run(stop_rx, &state_tx).await;
            match &r {
                Ok(()) => {
                    let _ = state_tx.send(State::Stopped);
                }
                Err(e) => {
                    tracing::error!(error = %e, "streams application failed");
                    let _ = state_tx.send(State::Failed(e.to_string()));
                }
            }
            r
        });
        Ok(Streams {
            shared,
            store_names,
            state,
            stop,
            task: Some(task),
        })
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Waits until the application runs (owns its tasks, stores restored), or fails.
    pub async fn wait_until_running(&mut self, timeout: Duration) -> Result<()> {
        let r = tokio::time::timeout(timeout, self.state.wait_for(|s| *s != State::Starting)).await;
        match r {
            Err(_) => Err(Error::Timeout(format!(
                "the application is not running after {timeout:?} (still joining its group or restoring state)"
            ))),
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(s)) => match &*s {
                State::Running => Ok(()),
                State::Failed(e) => Err(Error::Failed(e.clone())),
                _ => Err(Error::Closed),
            },
        }
    }

    /// The tasks this instance owns: `(sub-topology, partition)`.
    pub fn tasks(&self) -> Vec<(usize, i32)> {
        self.shared.stores.lock().keys().copied().collect()
    }

    /// Counters so far (task counters are published after every round of processing;
    /// `commits` counts completed commits, after which everything processed is durable).
    pub fn metrics(&self) -> StreamsMetrics {
        *self.shared.metrics.lock()
    }

    fn handles<S: Send + Sync + 'static>(&self, name: &str) -> Result<Vec<Arc<S>>> {
        if !self.store_names.contains(name) {
            let known: Vec<&str> = self.store_names.iter().map(String::as_str).collect();
            return Err(Error::Config(format!(
                "the topology has no store named {name:?} (its stores: {})",
                known.join(", ")
            )));
        }
        let mut out = Vec::new();
        let mut found = false;
        for stores in self.shared.stores.lock().values() {
            if let Some((typed, _)) = stores.get(name) {
                found = true;
                out.push(typed.clone().downcast::<S>().map_err(|_| {
                    Error::Config(format!("store {name:?} holds other key or value types"))
                })?);
            }
        }
        if !found && self.shared.stores.lock().is_empty() {
            return Err(Error::Config(format!(
                "store {name:?} is not available yet: this instance owns no tasks"
            )));
        }
        Ok(out)
    }

    /// Interactive query: the local instance's key-value store `name` (the partitions this
    /// instance owns).
    pub fn kv_store<K: Key, V: Value>(&self, name: &str) -> Result<KvStoreView<K, V>> {
        Ok(KvStoreView {
            parts: self.handles::<Mutex<KvStore<K, V>>>(name)?,
        })
    }

    /// Interactive query: the local instance's window store `name`.
    pub fn window_store<K: Key, V: Value>(&self, name: &str) -> Result<WindowStoreView<K, V>> {
        Ok(WindowStoreView {
            parts: self.handles::<Mutex<WindowStore<K, V>>>(name)?,
        })
    }

    /// Commits, leaves the group and stops.
    pub async fn close(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(t) => t.await.map_err(|e| Error::Internal(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A read-only view of a key-value store across the partitions this instance owns.
pub struct KvStoreView<K, V> {
    parts: Vec<Arc<Mutex<KvStore<K, V>>>>,
}

impl<K: Key, V: Value> KvStoreView<K, V> {
    /// The value of `key`, if this instance has it.
    pub fn get(&self, key: &K) -> Option<V> {
        self.parts.iter().find_map(|p| p.lock().get(key).cloned())
    }
    /// Entries with keys in `[from, to]`, in key order.
    pub fn range(&self, from: &K, to: &K) -> Vec<(K, V)> {
        let mut out: Vec<(K, V)> = self
            .parts
            .iter()
            .flat_map(|p| {
                p.lock()
                    .range(from.clone()..=to.clone())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
    /// Every entry, in key order.
    pub fn all(&self) -> Vec<(K, V)> {
        let mut out: Vec<(K, V)> = self
            .parts
            .iter()
            .flat_map(|p| {
                p.lock()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// A read-only view of a window store across the partitions this instance owns.
pub struct WindowStoreView<K, V> {
    parts: Vec<Arc<Mutex<WindowStore<K, V>>>>,
}

impl<K: Key, V: Value> WindowStoreView<K, V> {
    /// The windows of `key` starting in `[from, to]`.
    pub fn fetch(&self, key: &K, from: i64, to: i64) -> Vec<(Windowed<K>, V)> {
        self.parts
            .iter()
            .flat_map(|p| {
                p.lock()
                    .fetch(key, from, to)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
    /// Every open window.
    pub fn all(&self) -> Vec<(Windowed<K>, V)> {
        let mut out: Vec<(Windowed<K>, V)> = self
            .parts
            .iter()
            .flat_map(|p| {
                p.lock()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// What setup learned: partitions per sub-topology and which sub-topology reads each topic.
struct Plan {
    topic_sub: HashMap<String, usize>,
}

async fn prepare(topology: &Topology, config: &StreamsConfig) -> Result<Plan> {
    let app = &config.application_id;
    if app.is_empty()
        || !app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(Error::Config(format!(
            "application.id {app:?} must be non-empty ASCII letters, digits, '.', '_' or '-' (it prefixes topic names)"
        )));
    }
    let admin = Admin::new(ClientConfig::new(&config.bootstrap_servers)).await?;
    let subs = topology.sub_topics(app);
    let internal = topology.internal_topics(app);
    // Partition counts of user source topics.
    let mut counts: HashMap<String, i32> = HashMap::new();
    for (sources, _) in &subs {
        for t in sources {
            if internal.contains(t) {
                continue;
            }
            match admin.describe_topic(t).await {
                Ok(info) if !info.partitions.is_empty() => {
                    counts.insert(t.clone(), info.partitions.len() as i32);
                }
                Ok(_) | Err(strom_client::Error::UnknownTopic(_)) => {
                    return Err(Error::Topology(format!(
                        "source topic {t:?} does not exist; create it before starting the application"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    // Co-partitioning: the user topics of one sub-topology must agree.
    let mut sub_parts: Vec<Option<i32>> = vec![None; subs.len()];
    for (i, (sources, _)) in subs.iter().enumerate() {
        let user: Vec<(&String, i32)> = sources
            .iter()
            .filter_map(|t| counts.get(t).map(|c| (t, *c)))
            .collect();
        if let Some((first, n)) = user.first() {
            if let Some((other, m)) = user.iter().find(|(_, m)| m != n) {
                return Err(Error::Topology(format!(
                    "topics {first:?} ({n} partitions) and {other:?} ({m} partitions) are joined but not co-partitioned; \
                     give them the same number of partitions or .repartition() one side"
                )));
            }
            sub_parts[i] = Some(*n);
        }
    }
    // A repartition topic read together with user topics takes their partition count (it is
    // co-partitioned with them: same key, same partition); one read only with other internal
    // topics takes the largest count among the sub-topologies writing into it.
    let fixed: Vec<bool> = sub_parts.iter().map(Option::is_some).collect();
    for _ in 0..subs.len() {
        for (i, (_, sinks)) in subs.iter().enumerate() {
            let Some(n) = sub_parts[i] else { continue };
            for t in sinks.iter().filter(|t| internal.contains(*t)) {
                for (j, (sources, _)) in subs.iter().enumerate() {
                    if !fixed[j] && sources.contains(t) {
                        sub_parts[j] = Some(sub_parts[j].map_or(n, |m| m.max(n)));
                    }
                }
            }
        }
    }
    let mut wanted = Vec::new();
    for (i, s) in topology.subs.iter().enumerate() {
        let n = sub_parts[i]
            .ok_or_else(|| Error::Internal(format!("no partition count for sub-topology {i}")))?;
        for t in subs[i].0.iter().filter(|t| internal.contains(*t)) {
            wanted.push((
                NewTopic::new(t.clone(), n).replication_factor(config.replication_factor),
                n,
            ));
        }
        for st in &s.stores {
            let mut nt = NewTopic::new(changelog_topic(app, &st.name), n)
                .replication_factor(config.replication_factor)
                .config("cleanup.policy", "compact");
            if st.kind != StoreKind::KeyValue {
                nt = nt.config("min.compaction.lag.ms", "0");
            }
            wanted.push((nt, n));
        }
    }
    for (nt, n) in wanted {
        match admin.describe_topic(&nt.name).await {
            Ok(info) if !info.partitions.is_empty() => {
                if info.partitions.len() as i32 != n {
                    return Err(Error::Topology(format!(
                        "internal topic {:?} has {} partitions but the topology needs {n}; delete it or use a new application.id",
                        nt.name,
                        info.partitions.len()
                    )));
                }
            }
            _ => {
                if let Err(e) = admin.create_topics(std::slice::from_ref(&nt)).await {
                    // Another instance may have created it meanwhile.
                    if !e.to_string().contains("already exists") {
                        return Err(e.into());
                    }
                }
            }
        }
    }
    let mut topic_sub = HashMap::new();
    for (i, (sources, _)) in subs.into_iter().enumerate() {
        for t in sources {
            topic_sub.insert(t, i);
        }
    }
    Ok(Plan { topic_sub })
}

#[derive(Default)]
struct Events {
    assigned: Vec<TopicPartition>,
    revoked: Vec<TopicPartition>,
    /// An assignment (possibly empty) has arrived since the last look.
    joined: bool,
}

struct Listener(Arc<Mutex<Events>>);

impl RebalanceListener for Listener {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        let mut e = self.0.lock();
        e.assigned.extend_from_slice(partitions);
        e.joined = true;
    }
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().revoked.extend_from_slice(partitions);
    }
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().revoked.extend_from_slice(partitions);
    }
}

struct Runner {
    topology: Topology,
    config: StreamsConfig,
    plan: Plan,
    shared: Arc<Shared>,
    consumer: Consumer,
    producer: Producer,
    restore: Consumer,
    admin: Admin,
    events: Arc<Mutex<Events>>,
    tasks: BTreeMap<(usize, i32), Task>,
    /// Next offset to commit per input partition (processed, not yet committed).
    offsets: BTreeMap<TopicPartition, i64>,
    deliveries: VecDeque<DeliveryFuture>,
    /// Polled records not yet processed, per task and input partition.
    queues: BTreeMap<(usize, i32), BTreeMap<TopicPartition, VecDeque<QRec>>>,
    /// Since when a task has been waiting for an input partition that has data in the log.
    idle_since: HashMap<(usize, i32), Instant>,
    paused: BTreeSet<TopicPartition>,
    /// Source topics of each sub-topology.
    sub_topics: Vec<Vec<String>>,
    /// The in-process broker, when running embedded: input is read from its log directly.
    local: Option<Arc<strom_broker::Broker>>,
    /// Read positions of owned input partitions in direct mode.
    direct: HashMap<TopicPartition, Direct>,
    last_commit: Instant,
    /// Metrics of tasks already closed.
    closed_metrics: TaskMetrics,
}

impl Runner {
    async fn new(
        topology: Topology,
        config: StreamsConfig,
        plan: Plan,
        shared: Arc<Shared>,
        local: Option<Arc<strom_broker::Broker>>,
    ) -> Result<Self> {
        let app = config.application_id.clone();
        let mut pc = ProducerConfig::new(&config.bootstrap_servers);
        pc.set("client.id", &format!("{app}-producer"))?;
        pc.set("linger.ms", "5")?;
        pc.set("batch.size", "262144")?;
        pc.set("acks", "all")?;
        for (k, v) in &config.producer {
            pc.set(k, v)?;
        }
        let mut cc = ConsumerConfig::new(&config.bootstrap_servers);
        cc.set("client.id", &format!("{app}-consumer"))?;
        cc.set("group.id", &app)?;
        cc.set("enable.auto.commit", "false")?;
        cc.set("auto.offset.reset", "earliest")?;
        cc.set("partition.assignment.strategy", "range")?;
        cc.set("max.poll.records", "10000")?;
        cc.set("fetch.max.wait.ms", "100")?;
        for (k, v) in &config.consumer {
            cc.set(k, v)?;
        }
        let mut rc = ConsumerConfig::new(&config.bootstrap_servers);
        rc.set("client.id", &format!("{app}-restore-consumer"))?;
        rc.set("enable.auto.commit", "false")?;
        rc.set("max.poll.records", "10000")?;
        rc.set("fetch.max.wait.ms", "50")?;
        let events = Arc::new(Mutex::new(Events::default()));
        let mut consumer = Consumer::new(cc).await?;
        consumer.set_rebalance_listener(Listener(events.clone()));
        let topics: Vec<String> = plan.topic_sub.keys().cloned().collect();
        consumer.subscribe(&topics)?;
        let sub_topics = topology
            .sub_topics(&app)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        Ok(Runner {
            producer: Producer::new(pc).await?,
            restore: Consumer::new(rc).await?,
            admin: Admin::new(ClientConfig::new(&config.bootstrap_servers)).await?,
            consumer,
            topology,
            config,
            plan,
            shared,
            events,
            tasks: BTreeMap::new(),
            offsets: BTreeMap::new(),
            deliveries: VecDeque::new(),
            queues: BTreeMap::new(),
            idle_since: HashMap::new(),
            paused: BTreeSet::new(),
            sub_topics,
            local,
            direct: HashMap::new(),
            last_commit: Instant::now(),
            closed_metrics: TaskMetrics::default(),
        })
    }

    async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        state: &watch::Sender<State>,
    ) -> Result<()> {
        loop {
            if *stop.borrow() {
                break;
            }
            // In direct mode the poll only runs the group's duties; input comes from the log.
            let read = self.read_direct()?;
            let wait = match (self.local.is_some(), read) {
                (false, _) => self.config.poll_timeout,
                (true, true) => Duration::ZERO,
                (true, false) => Duration::from_millis(2),
            };
            let records = tokio::select! {
                r = self.consumer.poll(wait) => r?,
                _ = stop.changed() => break,
            };
            // Running once the group has given this instance its share (which may be none).
            if self.rebalance().await? && *state.borrow() == State::Starting {
                let _ = state.send(State::Running);
            }
            self.process(records).await?;
            if self.last_commit.elapsed() >= self.config.commit_interval {
                self.commit().await?;
            }
        }
        self.commit().await?;
        // Leave the group now rather than after a session timeout.
        self.consumer.close().await?;
        Ok(())
    }

    fn task_of(&self, tp: &TopicPartition) -> Option<(usize, i32)> {
        self.plan
            .topic_sub
            .get(&tp.topic)
            .map(|&s| (s, tp.partition))
    }

    /// Applies the rebalance events gathered during the last poll; true once an assignment
    /// (possibly empty) has been applied: tasks created and their stores restored.
    async fn rebalance(&mut self) -> Result<bool> {
        let (assigned, revoked, joined) = {
            let mut e = self.events.lock();
            (
                std::mem::take(&mut e.assigned),
                std::mem::take(&mut e.revoked),
                std::mem::take(&mut e.joined),
            )
        };
        for tp in &revoked {
            // Work since the last commit is abandoned: the next owner restores the stores as
            // of that commit and reprocesses from its offsets (at-least-once).
            self.offsets.remove(tp);
            self.direct.remove(tp);
            if let Some(id) = self.task_of(tp) {
                self.queues.remove(&id);
                self.idle_since.remove(&id);
                self.paused.remove(tp);
                if let Some(t) = self.tasks.remove(&id) {
                    let m = t.metrics();
                    add(&mut self.closed_metrics, m);
                    self.shared.stores.lock().remove(&id);
                    tracing::info!(sub = id.0, partition = id.1, "task closed");
                }
            }
        }
        let app = self.config.application_id.clone();
        let owned: BTreeSet<(usize, i32)> = self
            .consumer
            .assignment()
            .iter()
            .filter_map(|tp| self.task_of(tp))
            .collect();
        for tp in &assigned {
            let Some(id) = self.task_of(tp) else { continue };
            if self.tasks.contains_key(&id) || !owned.contains(&id) {
                continue;
            }
            let task = self.topology.task(id.0, &app, id.1)?;
            self.restore_stores(&task.stores.clone(), id).await?;
            self.shared.stores.lock().insert(id, task.stores.clone());
            tracing::info!(sub = id.0, partition = id.1, "task running");
            self.tasks.insert(id, task);
        }
        if let Some(broker) = self.local.clone() {
            let mine: Vec<TopicPartition> = self
                .consumer
                .assignment()
                .into_iter()
                .filter(|tp| !self.direct.contains_key(tp))
                .collect();
            if !mine.is_empty() {
                self.consumer.pause(&mine)?;
                // The coordinator may be busy with the rebalance that just ended: ask again.
                let mut tries = 0;
                let committed = loop {
                    match self.consumer.committed(&mine).await {
                        Ok(c) => break c,
                        Err(e) if e.is_retriable() && tries < 10 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                for tp in mine {
                    let Some(part) = broker.partition(&tp.topic, tp.partition) else {
                        return Err(Error::Internal(format!(
                            "{tp} is assigned but not in the embedded log"
                        )));
                    };
                    let log = part.log.clone();
                    let position = committed
                        .get(&tp)
                        .copied()
                        .filter(|&o| o >= 0)
                        .unwrap_or_else(|| log.log_start_offset())
                        .max(log.log_start_offset());
                    self.direct.insert(tp, Direct { log, position });
                }
            }
        }
        Ok(joined)
    }

    /// Direct mode: tops up the queue of every owned input partition from the local log (up
    /// to its high watermark). Returns whether anything was read.
    fn read_direct(&mut self) -> Result<bool> {
        let mut read = false;
        for (tp, d) in self.direct.iter_mut() {
            let Some(id) = self
                .plan
                .topic_sub
                .get(&tp.topic)
                .map(|&s| (s, tp.partition))
            else {
                continue;
            };
            if !self.tasks.contains_key(&id) {
                continue;
            }
            let single = self.sub_topics[id.0].len() == 1;
            let q = self
                .queues
                .entry(id)
                .or_default()
                .entry(tp.clone())
                .or_default();
            if q.len() >= DIRECT_QUEUE {
                continue;
            }
            // A task with one input needs no ordering across inputs: its records go from the
            // log buffer straight into the topology, unqueued and uncopied.
            let mut direct_task = if single && q.is_empty() {
                self.tasks
                    .get_mut(&id)
                    .and_then(|t| t.source_index(&tp.topic).map(|i| (t, i)))
            } else {
                None
            };
            let chunk = match d
                .log
                .read(d.position, 1 << 20, strom_log::ReadLimit::HighWatermark)
            {
                Ok(r) => r,
                Err(strom_log::Error::OffsetOutOfRange { log_start, .. })
                    if d.position < log_start =>
                {
                    // Retention removed what we had not read (auto.offset.reset=earliest).
                    d.position = log_start;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Internal(format!(
                        "reading {tp} from the embedded log: {e}"
                    )))
                }
            };
            let bytes = chunk
                .bytes()
                .map_err(|e| Error::Internal(format!("reading {tp} from the embedded log: {e}")))?;
            let mut pos = 0;
            while let Some(h) = bytes.get(pos..).and_then(strom_log::BatchHeader::parse) {
                let end = pos + h.total_size();
                let Some(batch) = bytes.get(pos..end) else {
                    break;
                };
                pos = end;
                if h.last_offset() < d.position {
                    continue;
                }
                if !h.is_control() {
                    let from = d.position;
                    let decoded = match direct_task.as_mut() {
                        Some((task, i)) => {
                            let i = *i;
                            strom_log::visit_records(batch, |r| {
                                if r.offset >= from {
                                    task.process_at(i, r.key, r.value, r.timestamp);
                                }
                            })
                            .map(|_| ())
                        }
                        // Uncompressed: keys and values stay slices of the read buffer.
                        None if h.compression() == 0 => strom_log::visit_records(batch, |r| {
                            if r.offset >= from {
                                q.push_back(QRec {
                                    offset: r.offset,
                                    timestamp: r.timestamp,
                                    key: r.key.map(|k| bytes.slice_ref(k)),
                                    value: r.value.map(|v| bytes.slice_ref(v)),
                                });
                            }
                        })
                        .map(|_| ()),
                        None => strom_log::record::decode_records(batch).map(|(_, records)| {
                            for r in records {
                                if r.offset >= from {
                                    q.push_back(QRec {
                                        offset: r.offset,
                                        timestamp: r.timestamp,
                                        key: r.key,
                                        value: r.value,
                                    });
                                }
                            }
                        }),
                    };
                    decoded.map_err(|e| {
                        Error::Internal(format!("decoding {tp} from the embedded log: {e}"))
                    })?;
                    if direct_task.is_some() {
                        self.offsets.insert(tp.clone(), h.last_offset() + 1);
                    }
                }
                d.position = h.last_offset() + 1;
                read = true;
            }
        }
        Ok(read)
    }

    /// Rebuilds a task's stores from their changelogs.
    async fn restore_stores(
        &mut self,
        stores: &StoreHandles,
        (sub, partition): (usize, i32),
    ) -> Result<()> {
        if stores.is_empty() {
            return Ok(());
        }
        let app = &self.config.application_id;
        let wanted: Vec<(TopicPartition, i64)> = stores
            .keys()
            .map(|s| (TopicPartition::new(changelog_topic(app, s), partition), -1))
            .collect();
        let ends = self.admin.list_partition_offsets(&wanted).await?;
        let by_topic: HashMap<String, &Arc<dyn ErasedStore>> = stores
            .iter()
            .map(|(name, (_, s))| (changelog_topic(app, name), s))
            .collect();
        let todo: Vec<TopicPartition> = ends
            .iter()
            .filter(|(_, &end)| end > 0)
            .map(|(tp, _)| tp.clone())
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        self.restore.assign(&todo)?;
        self.restore.seek_to_beginning(&todo)?;
        let mut restored = 0u64;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let done = todo
                .iter()
                .all(|tp| self.restore.position(tp).is_some_and(|p| p >= ends[tp]));
            if done {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Internal(
                    "restoring state took longer than 5 minutes".into(),
                ));
            }
            for r in self.restore.poll(Duration::from_millis(100)).await? {
                let (Some(store), Some(key)) = (by_topic.get(&r.topic), r.key.as_deref()) else {
                    continue;
                };
                if r.offset >= ends[&TopicPartition::new(r.topic.clone(), r.partition)] {
                    continue;
                }
                store.restore(key, r.value.as_deref())?;
                restored += 1;
            }
        }
        self.restore.unassign();
        self.shared.metrics.lock().restored += restored;
        tracing::info!(sub, partition, restored, "stores restored");
        Ok(())
    }

    /// Queues polled records by task and input partition, then processes every task as far
    /// as timestamp order allows.
    async fn process(&mut self, records: Vec<strom_client::ConsumerRecord>) -> Result<()> {
        if self.local.is_some() {
            // Direct mode reads the local log; the consumer only keeps group membership (its
            // partitions are paused; anything fetched before the pause is read again directly).
            return self.process_queued().await;
        }
        // Records arrive in runs per partition: look the queue up once per run.
        let mut current: Option<(String, i32)> = None;
        let mut lane: Option<&mut VecDeque<QRec>> = None;
        for r in records {
            let same = current
                .as_ref()
                .is_some_and(|(t, p)| *t == r.topic && *p == r.partition);
            if !same {
                let tp = TopicPartition::new(r.topic.clone(), r.partition);
                let id = self
                    .plan
                    .topic_sub
                    .get(&tp.topic)
                    .map(|&s| (s, tp.partition))
                    .filter(|id| self.tasks.contains_key(id));
                lane = match id {
                    Some(id) => Some(self.queues.entry(id).or_default().entry(tp).or_default()),
                    None => None,
                };
                current = Some((r.topic.clone(), r.partition));
            }
            if let Some(q) = lane.as_mut() {
                q.push_back(QRec {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                });
            }
        }
        self.process_queued().await
    }

    /// Processes every task's queued records as far as it can and sends the output.
    async fn process_queued(&mut self) -> Result<()> {
        let ids: Vec<(usize, i32)> = self.queues.keys().copied().collect();
        self.publish_metrics();
        for id in ids {
            let out = self.process_task(id);
            if !out.is_empty() {
                self.send_all(out.into_iter().map(out_record)).await?;
            }
        }
        self.flow_control()?;
        Ok(())
    }

    /// Processes a task's queued records in timestamp order across its input partitions (as
    /// Kafka Streams does): the record with the smallest timestamp goes first, and while an
    /// input partition has nothing queued but the log holds more for it (its position is
    /// behind its high watermark) the task waits for it, for at most `MAX_TASK_IDLE`.
    fn process_task(&mut self, id: (usize, i32)) -> Vec<crate::graph::OutRecord> {
        let (Some(task), Some(queues)) = (self.tasks.get_mut(&id), self.queues.get_mut(&id)) else {
            return Vec::new();
        };
        for t in &self.sub_topics[id.0] {
            queues
                .entry(TopicPartition::new(t.clone(), id.1))
                .or_default();
        }
        // One lane per input partition: its queue and the next offset to commit.
        let mut lanes: Vec<(&TopicPartition, &mut VecDeque<QRec>, Option<i64>)> =
            queues.iter_mut().map(|(tp, q)| (tp, q, None)).collect();
        let src: Vec<Option<usize>> = lanes
            .iter()
            .map(|(tp, _, _)| task.source_index(&tp.topic))
            .collect();
        if lanes.len() == 1 {
            // One input: its records are already in order.
            let (_, q, next) = &mut lanes[0];
            let Some(i) = src[0] else { return Vec::new() };
            for r in q.drain(..) {
                task.process_at(i, r.key.as_deref(), r.value.as_deref(), r.timestamp);
                *next = Some(r.offset + 1);
            }
        } else {
            // Whether an input with nothing queued still has data in the log: Some(true)
            // known behind, Some(false) caught up, None not known yet (asked once per call).
            let mut behind_memo: Vec<Option<Option<bool>>> = vec![None; lanes.len()];
            loop {
                let mut best: Option<(usize, i64)> = None;
                let mut blocked = false;
                let mut unknown = false;
                for (i, (tp, q, _)) in lanes.iter().enumerate() {
                    match q.front() {
                        Some(r) => {
                            if best.is_none_or(|(_, ts)| r.timestamp < ts) {
                                best = Some((i, r.timestamp));
                            }
                        }
                        None => {
                            let consumer = &self.consumer;
                            let direct = &self.direct;
                            let behind =
                                *behind_memo[i].get_or_insert_with(|| match direct.get(*tp) {
                                    Some(d) => Some(d.position < d.log.high_watermark()),
                                    None => {
                                        match (consumer.position(tp), consumer.high_watermark(tp)) {
                                            (Some(p), Some(h)) => Some(p < h),
                                            _ => None,
                                        }
                                    }
                                });
                            match behind {
                                Some(true) => blocked = true,
                                Some(false) => {}
                                None => unknown = true,
                            }
                        }
                    }
                }
                let Some((i, _)) = best else { break };
                if blocked {
                    // The log has older records for an empty input: they are on their way.
                    break;
                }
                if unknown {
                    // An input not fetched yet (its records may well be older): wait a little.
                    let since = *self.idle_since.entry(id).or_insert_with(Instant::now);
                    if since.elapsed() < MAX_TASK_IDLE {
                        break;
                    }
                } else if !self.idle_since.is_empty() {
                    self.idle_since.remove(&id);
                }
                // Take a run from the chosen input: every record not later than the earliest
                // record waiting in the other inputs.
                let limit = lanes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter_map(|(_, (_, q, _))| q.front().map(|r| r.timestamp))
                    .min()
                    .unwrap_or(i64::MAX);
                let (_, q, next) = &mut lanes[i];
                while q.front().is_some_and(|r| r.timestamp <= limit) {
                    let Some(r) = q.pop_front() else { break };
                    if let Some(s) = src[i] {
                        task.process_at(s, r.key.as_deref(), r.value.as_deref(), r.timestamp);
                    }
                    *next = Some(r.offset + 1);
                }
            }
        }
        for (tp, _, next) in lanes {
            if let Some(n) = next {
                self.offsets.insert(tp.clone(), n);
            }
        }
        task.take_output()
    }

    /// Pauses partitions with many records queued, resumes them once drained.
    fn flow_control(&mut self) -> Result<()> {
        if self.local.is_some() {
            // Direct mode bounds its queues when it reads; the consumer stays paused.
            return Ok(());
        }
        let mut pause = Vec::new();
        let mut resume = Vec::new();
        for qs in self.queues.values() {
            for (tp, q) in qs {
                if q.len() > 50_000 && !self.paused.contains(tp) {
                    pause.push(tp.clone());
                } else if q.len() < 10_000 && self.paused.contains(tp) {
                    resume.push(tp.clone());
                }
            }
        }
        if !pause.is_empty() {
            self.consumer.pause(&pause)?;
            self.paused.extend(pause);
        }
        if !resume.is_empty() {
            self.consumer.resume(&resume)?;
            for tp in &resume {
                self.paused.remove(tp);
            }
        }
        Ok(())
    }

    async fn send_all(&mut self, records: impl Iterator<Item = ProducerRecord>) -> Result<()> {
        let mut n = 0u64;
        for r in records {
            self.deliveries.push_back(self.producer.send(r).await?);
            n += 1;
            // Settle acknowledged deliveries as we go (a failure stops the application).
            while let Some(f) = self.deliveries.front_mut() {
                match f.now_or_never() {
                    Some(r) => {
                        r?;
                        self.deliveries.pop_front();
                    }
                    None => break,
                }
            }
        }
        self.shared.metrics.lock().produced += n;
        Ok(())
    }

    /// The commit path: store changes to changelogs, every output acknowledged, then input
    /// offsets. (With transactions this becomes one transaction.)
    async fn commit(&mut self) -> Result<()> {
        self.last_commit = Instant::now();
        // Output not sent yet (records processed straight from the log in direct mode) goes
        // out before the offsets that cover it are committed.
        let pending: Vec<crate::graph::OutRecord> = self
            .tasks
            .values_mut()
            .flat_map(|t| t.take_output())
            .collect();
        if !pending.is_empty() {
            self.send_all(pending.into_iter().map(out_record)).await?;
        }
        let app = self.config.application_id.clone();
        let mut changes = Vec::new();
        for task in self.tasks.values() {
            for (store, key, value) in task.drain_changes() {
                changes.push(ProducerRecord {
                    topic: changelog_topic(&app, &store),
                    partition: Some(task.partition),
                    key: Some(key),
                    value,
                    headers: Vec::new(),
                    timestamp: None,
                });
            }
        }
        self.send_all(changes.into_iter()).await?;
        self.producer.flush().await?;
        while let Some(f) = self.deliveries.pop_front() {
            f.await?;
        }
        let owned: BTreeSet<TopicPartition> = self.consumer.assignment().into_iter().collect();
        let offsets: BTreeMap<TopicPartition, i64> = std::mem::take(&mut self.offsets)
            .into_iter()
            .filter(|(tp, _)| owned.contains(tp))
            .collect();
        if !offsets.is_empty() {
            if let Err(e) = self.consumer.commit_offsets(&offsets).await {
                // Kept for the next commit (unless processing moved past them meanwhile); if a
                // rebalance is under way the tasks close and the next owner redoes the work.
                tracing::warn!(error = %e, "offset commit failed; retrying at the next commit");
                for (tp, o) in offsets {
                    self.offsets.entry(tp).or_insert(o);
                }
            }
        }
        self.publish_metrics();
        self.shared.metrics.lock().commits += 1;
        Ok(())
    }

    /// Makes the task counters visible to [`Streams::metrics`].
    fn publish_metrics(&self) {
        let mut m = self.closed_metrics;
        for t in self.tasks.values() {
            add(&mut m, t.metrics());
        }
        self.shared.metrics.lock().tasks = m;
    }
}

fn out_record(o: crate::graph::OutRecord) -> ProducerRecord {
    ProducerRecord {
        topic: o.topic.to_string(),
        partition: None,
        key: o.key,
        value: o.value,
        headers: Vec::new(),
        timestamp: Some(o.timestamp),
    }
}

fn add(a: &mut TaskMetrics, b: TaskMetrics) {
    a.processed += b.processed;
    a.late_dropped += b.late_dropped;
    a.skipped += b.skipped;
}
