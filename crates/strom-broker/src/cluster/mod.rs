//! A broker in a replicated cluster: its link to the metadata quorum and the replication
//! runtime around the pure rules of [`crate::replication`].
//!
//! ```text
//!   quorum ──image──▶ apply_image ──▶ local logs (create / grow / configure / delete)
//!                                 ├─▶ partition roles: leader (LeaderState) or follower
//!                                 ├─▶ replica fetchers, one per leader broker (fetcher.rs)
//!                                 └─▶ group coordinator: load / unload __consumer_offsets
//!   broker ──register, heartbeat, AlterPartition, admin changes──▶ active controller
//! ```
//!
//! A broker applies metadata only once it is registered and its image includes its own
//! registration: a restarted broker therefore never acts on a stale leadership (the
//! registration itself moved its leaderships away).

pub mod fetcher;
pub mod peer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use strom_controller::{
    Command, Controller, ControllerConfig, Heartbeat, Image, Outcome, PartitionInfo, QuorumClient,
};
use tokio::sync::{watch, Notify};

use crate::broker::{Broker, Partition, ReplicaState, Role};
use crate::error::{Error, Result};
use crate::group::store;
use crate::replication::LeaderState;

/// How long a broker waits for the quorum on an admin request.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// This broker's membership in a cluster.
pub struct ClusterNode {
    node_id: i32,
    quorum: QuorumClient,
    /// Heartbeats on their own connections: never queued behind proposals.
    hb_quorum: QuorumClient,
    controller: Option<Arc<Controller>>,
    image_tx: watch::Sender<Arc<Image>>,
    /// Registration epoch; 0 until registered.
    epoch: AtomicU64,
    registered: Notify,
    shutting_down: AtomicBool,
    /// The image as applied to this broker's partitions: what it answers clients from.
    applied: watch::Sender<Arc<Image>>,
    fetchers: Mutex<HashMap<i32, Arc<fetcher::Fetcher>>>,
    /// Leaders of `__consumer_offsets` partitions loaded into the group coordinator.
    loaded_groups: Mutex<BTreeMap<i32, i32>>,
    broker: Weak<Broker>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl ClusterNode {
    /// Joins the cluster described by the broker's config: starts the controller (combined
    /// mode), registers, and starts heartbeats, metadata application and ISR upkeep.
    pub async fn start(broker: &Arc<Broker>) -> Result<Arc<ClusterNode>> {
        let config = broker.config().clone();
        let quorum_str = config
            .controller_quorum
            .clone()
            .ok_or_else(|| Error::Config("no controller quorum configured".into()))?;
        let voters = strom_controller::parse_quorum(&quorum_str)?;
        let controller = if config.is_controller() {
            Some(
                Controller::start(ControllerConfig {
                    node_id: config.node_id,
                    voters: voters.clone(),
                    dir: config.data_dir.join("__cluster_metadata"),
                    broker_session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
                    leader_imbalance_interval: Duration::from_millis(
                        config.leader_imbalance_check_interval_ms,
                    ),
                    raft_heartbeat: Duration::from_millis(config.controller_raft_heartbeat_ms),
                })
                .await?,
            )
        } else {
            None
        };
        let (image_tx, _) = watch::channel(Arc::new(Image::default()));
        let node = Arc::new(ClusterNode {
            node_id: config.node_id,
            quorum: QuorumClient::new(&voters),
            hb_quorum: QuorumClient::new(&voters),
            controller,
            image_tx,
            epoch: AtomicU64::new(0),
            registered: Notify::new(),
            shutting_down: AtomicBool::new(false),
            applied: watch::channel(Arc::new(Image::default())).0,
            fetchers: Mutex::new(HashMap::new()),
            loaded_groups: Mutex::new(BTreeMap::new()),
            broker: Arc::downgrade(broker),
        });
        if let Some(c) = &node.controller {
            // The local state machine feeds the image.
            let mut rx = c.subscribe();
            let weak = Arc::downgrade(&node);
            tokio::spawn(async move {
                loop {
                    let img = rx.borrow_and_update().clone();
                    let Some(node) = weak.upgrade() else { return };
                    node.publish_arc(img);
                    drop(node);
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        tokio::spawn(node.clone().heartbeats());
        tokio::spawn(node.clone().applier());
        tokio::spawn(node.clone().isr_upkeep());
        Ok(node)
    }

    /// This node's id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The metadata image as last applied by this broker (empty until it has registered and
    /// caught up: a restarting broker never answers from the metadata it replays).
    pub fn image(&self) -> Arc<Image> {
        self.applied.borrow().clone()
    }

    /// The newest image received, applied or not.
    fn latest(&self) -> Arc<Image> {
        self.image_tx.borrow().clone()
    }

    /// Waits (up to `timeout`) until this broker has applied metadata newer than its own
    /// registration, so its answers are current.
    pub async fn ready(&self, timeout: Duration) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|i| i.version > 0)).await;
    }

    /// The active controller, if known.
    pub fn active_controller(&self) -> Option<i32> {
        self.controller
            .as_ref()
            .and_then(|c| c.active_controller())
            .or_else(|| self.quorum.controller_hint())
    }

    /// The registration epoch (0 before registration).
    pub fn broker_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Proposes a command to the active controller and waits until this broker's image
    /// includes it, so a response to the client reflects the change.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome> {
        let outcome = self.quorum.propose(cmd, ADMIN_TIMEOUT).await?;
        self.catch_up(ADMIN_TIMEOUT).await;
        Ok(outcome)
    }

    /// Waits until the local image is as new as the active controller's (best effort).
    async fn catch_up(&self, timeout: Duration) {
        let Ok(Some(img)) = self
            .quorum
            .fetch_image(self.latest().version, timeout)
            .await
        else {
            return;
        };
        let target = img.version;
        // Forward-only: on a controller node whose own log lags this catches it up too.
        self.publish(img);
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|i| i.version >= target)).await;
    }

    /// Publishes an image unless a newer one is already there (images come from the local
    /// state machine and, on broker-only or lagging nodes, from the active controller).
    fn publish(&self, img: Image) {
        self.publish_arc(Arc::new(img));
    }

    fn publish_arc(&self, img: Arc<Image>) {
        self.image_tx.send_if_modified(|cur| {
            if img.version > cur.version {
                *cur = img;
                true
            } else {
                false
            }
        });
    }

    /// Allocates a block of producer ids.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<i64> {
        match self
            .quorum
            .propose(Command::AllocateProducerIds { count }, ADMIN_TIMEOUT)
            .await?
        {
            Outcome::ProducerIds { start } => Ok(start),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Controlled shutdown: asks the controller to move this broker's leaderships away and
    /// waits (up to `timeout`) until the image shows none left here.
    pub async fn controlled_shutdown(&self, timeout: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        let epoch = self.broker_epoch();
        if epoch == 0 {
            return;
        }
        let id = self.node_id;
        let result = self
            .quorum
            .propose(Command::ControlledShutdown { id, epoch }, timeout)
            .await;
        if let Err(e) = result {
            tracing::warn!("controlled shutdown: {e}; stopping anyway");
            return;
        }
        let mut rx = self.applied.subscribe();
        let leads_nothing = |i: &Arc<Image>| {
            i.topics
                .values()
                .flat_map(|t| &t.partitions)
                .all(|p| p.leader != id)
        };
        if tokio::time::timeout(timeout, rx.wait_for(leads_nothing))
            .await
            .is_err()
        {
            self.catch_up(timeout).await;
        }
        tracing::info!("controlled shutdown: leaderships moved away");
    }

    /// Stops the controller (if any).
    pub async fn shutdown(&self) {
        for f in self.fetchers.lock().drain() {
            f.1.stop();
        }
        if let Some(c) = &self.controller {
            c.shutdown().await;
        }
    }

    async fn register(&self, broker: &Broker) {
        let (host, port) = broker.advertised();
        let cmd = Command::Register {
            id: self.node_id,
            host,
            port,
            rack: broker.config().rack.clone(),
        };
        loop {
            match self
                .quorum
                .propose(cmd.clone(), Duration::from_secs(10))
                .await
            {
                Ok(Outcome::Registered { epoch }) => {
                    tracing::info!(epoch, "registered with the controller");
                    self.epoch.store(epoch, Ordering::Release);
                    self.registered.notify_waiters();
                    return;
                }
                Ok(other) => tracing::warn!("registration refused: {other:?}"),
                Err(e) => tracing::info!("waiting for the controller quorum: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn heartbeats(self: Arc<Self>) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let interval = Duration::from_millis(broker.config().broker_heartbeat_interval_ms);
        drop(broker);
        let mut lagging = 0u32;
        loop {
            let Some(broker) = self.broker.upgrade() else {
                return;
            };
            if self.broker_epoch() == 0 {
                self.register(&broker).await;
            }
            let hb = Heartbeat {
                id: self.node_id,
                epoch: self.broker_epoch(),
                image_version: self.applied.borrow().version,
                shutting_down: self.shutting_down.load(Ordering::Acquire),
            };
            drop(broker);
            match self.hb_quorum.heartbeat(hb, interval * 2).await {
                Ok(r) if r.reregister => {
                    tracing::warn!(
                        "the controller does not know this incarnation: registering again"
                    );
                    self.epoch.store(0, Ordering::Release);
                    continue;
                }
                Ok(r) => {
                    // Broker-only nodes learn metadata this way; a controller node whose own
                    // Raft log stopped advancing (a one-way partition) falls back to it.
                    lagging = if r.image_version > self.latest().version {
                        lagging + 1
                    } else {
                        0
                    };
                    if (self.controller.is_none() && lagging > 0) || lagging >= 3 {
                        if let Ok(Some(img)) = self
                            .hb_quorum
                            .fetch_image(self.latest().version, interval * 2)
                            .await
                        {
                            self.publish(img);
                        }
                    }
                }
                Err(e) => tracing::debug!("heartbeat failed: {e}"),
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn applier(self: Arc<Self>) {
        let mut rx = self.image_tx.subscribe();
        let mut refused_other_cluster = false;
        loop {
            let registered = self.registered.notified();
            let img = rx.borrow_and_update().clone();
            let epoch = self.broker_epoch();
            if epoch > 0 && img.version >= epoch && img.version > self.applied.borrow().version {
                let Some(broker) = self.broker.upgrade() else {
                    return;
                };
                // Metadata of another cluster (a wrong quorum, a wiped metadata log) is never
                // applied to this data directory: it could delete its data.
                match broker.bound_cluster() {
                    Some(bound) if !img.cluster_id.is_empty() && bound != img.cluster_id => {
                        if !refused_other_cluster {
                            tracing::error!(
                                data_dir_cluster = %bound,
                                quorum_cluster = %img.cluster_id,
                                "the data directory belongs to another cluster: not applying this quorum's metadata"
                            );
                            refused_other_cluster = true;
                        }
                    }
                    _ => self.apply(&broker, &img),
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = registered => {}
            }
        }
    }

    /// Makes the broker's partitions match `img`.
    fn apply(&self, broker: &Broker, img: &Arc<Image>) {
        let me = self.node_id;
        let previous = self.applied.borrow().clone();
        // Topics deleted (or deleted and recreated under the same name).
        for (name, old) in &previous.topics {
            if img.topics.get(name).is_none_or(|t| t.id != old.id) {
                broker.remove_local_topic(name);
            }
        }
        if previous.version == 0 && !img.cluster_id.is_empty() {
            // The first image applied is newer than this broker's registration: a local topic
            // it does not know was deleted while this broker was away. Only for a data
            // directory that already belonged to this cluster (a wrong quorum, or a wiped
            // metadata log, must not delete data).
            let strays: Vec<String> = broker
                .logs()
                .topics()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| !img.topics.contains_key(n))
                .collect();
            if broker.bind_cluster(&img.cluster_id) {
                for name in strays {
                    broker.remove_local_topic(&name);
                }
            } else if !strays.is_empty() {
                tracing::warn!(
                    topics = ?strays,
                    cluster = %img.cluster_id,
                    "local topics unknown to this cluster are kept (the data directory was not part of it before)"
                );
            }
        }
        let lag_max = broker.config().replica_lag_time_max_ms;
        let now = crate::group::now_ms();
        let mut follow: BTreeMap<i32, BTreeMap<(String, i32), i32>> = BTreeMap::new();
        for (name, t) in &img.topics {
            let mine: Vec<i32> = (0..t.partitions.len() as i32)
                .filter(|p| t.partitions[*p as usize].replicas.contains(&me))
                .collect();
            if mine.is_empty() {
                continue;
            }
            if let Err(e) = broker.ensure_local_topic(name, t) {
                tracing::error!(topic = %name, "cannot create the local replica: {e}");
                continue;
            }
            for p in mine {
                let info = &t.partitions[p as usize];
                let Some(part) = broker.partition(name, p) else {
                    continue;
                };
                self.set_role(broker, &part, info, now, lag_max);
                if info.leader >= 0 && info.leader != me {
                    follow
                        .entry(info.leader)
                        .or_default()
                        .insert((name.clone(), p), info.leader_epoch);
                }
            }
        }
        self.reconcile_fetchers(broker, img, follow);
        self.reconcile_groups(broker, img);
        self.applied.send_replace(img.clone());
        broker.appended.notify_waiters();
    }

    fn set_role(
        &self,
        broker: &Broker,
        part: &Arc<Partition>,
        info: &PartitionInfo,
        now: u64,
        lag_max: u64,
    ) {
        let me = self.node_id;
        let cur = part.state();
        let role = if info.leader == me {
            Role::Leader
        } else {
            Role::Follower
        };
        let next = ReplicaState {
            role,
            leader: info.leader,
            leader_epoch: info.leader_epoch,
            partition_epoch: info.partition_epoch,
            replicas: info.replicas.clone(),
            isr: info.isr.clone(),
        };
        if role == Role::Leader {
            let isr: BTreeSet<i32> = info.isr.iter().copied().collect();
            if cur.role == Role::Leader && cur.leader_epoch == info.leader_epoch {
                if cur.partition_epoch < info.partition_epoch {
                    part.update_state(|s| *s = next);
                    part.leader_update(|ls| (ls.isr_committed(isr), ()));
                }
                return;
            }
            if let Err(e) = part.log.assign_epoch(info.leader_epoch) {
                tracing::error!("recording leader epoch {}: {e}", info.leader_epoch);
            }
            let ls = LeaderState::new(
                me,
                info.leader_epoch,
                info.replicas.clone(),
                isr,
                part.log.log_end_offset(),
                part.log.high_watermark(),
                now,
                lag_max,
            );
            tracing::info!(
                dir = %part.log.dir().display(),
                epoch = info.leader_epoch,
                "leading"
            );
            part.set_state(next, Some(ls));
            part.update_high_watermark();
        } else if cur != next {
            part.set_state(next, None);
        }
        let _ = broker;
    }

    fn reconcile_fetchers(
        &self,
        broker: &Broker,
        img: &Image,
        follow: BTreeMap<i32, BTreeMap<(String, i32), i32>>,
    ) {
        let mut fetchers = self.fetchers.lock();
        for (leader, f) in fetchers.iter() {
            if !follow.contains_key(leader) {
                f.set_partitions(BTreeMap::new());
            }
        }
        for (leader, parts) in follow {
            let Some(b) = img.brokers.get(&leader) else {
                continue;
            };
            let addr = format!("{}:{}", b.host, b.port);
            let f = fetchers.entry(leader).or_insert_with(|| {
                fetcher::Fetcher::spawn(
                    leader,
                    self.node_id,
                    addr.clone(),
                    self.broker.clone(),
                    Duration::from_millis(broker.config().replica_fetch_wait_max_ms),
                )
            });
            f.set_addr(addr);
            f.set_partitions(parts);
        }
    }

    fn reconcile_groups(&self, broker: &Broker, img: &Image) {
        let Some(t) = img.topics.get(store::TOPIC) else {
            return;
        };
        let count = t.partitions.len() as i32;
        let mut loaded = self.loaded_groups.lock();
        for (p, info) in t.partitions.iter().enumerate() {
            let p = p as i32;
            let leads = info.leader == self.node_id;
            let loaded_in = loaded.get(&p).copied();
            if leads && loaded_in != Some(info.leader_epoch) {
                // Led here in a new epoch (possibly again, after missing the images in between):
                // reload from the log, which is the truth for this epoch.
                if loaded_in.is_some() {
                    broker.groups().unload_partition(p, count);
                    loaded.remove(&p);
                }
                if let Some(part) = broker.partition(store::TOPIC, p) {
                    match broker.groups().load_partition(p, count, part) {
                        Ok(()) => {
                            loaded.insert(p, info.leader_epoch);
                        }
                        Err(e) => tracing::error!(partition = p, "loading groups failed: {e}"),
                    }
                }
            } else if !leads && loaded.remove(&p).is_some() {
                broker.groups().unload_partition(p, count);
            }
        }
    }

    /// Whether `part` is still this broker's replica of `topic`/`partition` (not deleted or
    /// recreated meanwhile).
    fn still_hosts(&self, topic: &str, partition: i32, part: &Arc<Partition>) -> bool {
        self.broker
            .upgrade()
            .and_then(|b| b.partition(topic, partition))
            .is_some_and(|p| Arc::ptr_eq(&p, part))
    }

    /// Whether this broker coordinates `group` now.
    pub fn owns_group(&self, group: &str) -> bool {
        let img = self.applied.borrow().clone();
        let Some(t) = img.topics.get(store::TOPIC) else {
            return false;
        };
        let p = store::partition_for(group, t.partitions.len() as i32);
        self.loaded_groups.lock().contains_key(&p)
            && t.partitions
                .get(p as usize)
                .is_some_and(|i| i.leader == self.node_id)
    }

    /// Leaders shrink their ISR when followers lag (`replica.lag.time.max.ms`).
    async fn isr_upkeep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Some(broker) = self.broker.upgrade() else {
                return;
            };
            let now = crate::group::now_ms();
            for ((topic, p), part) in broker.partitions_snapshot() {
                if part.role_epoch().0 != Role::Leader {
                    continue;
                }
                if let Some(Some(isr)) = part.with_leader_state(|ls| ls.tick(now)) {
                    tracing::info!(%topic, partition = p, ?isr, "shrinking the ISR");
                    self.clone().alter_isr(topic, p, part, isr);
                }
            }
        }
    }

    /// Sends an ISR change to the controller (in the background) and commits it locally
    /// once accepted.
    pub(crate) fn alter_isr(
        self: Arc<Self>,
        topic: String,
        partition: i32,
        part: Arc<Partition>,
        isr: BTreeSet<i32>,
    ) {
        tokio::spawn(async move {
            let st = part.state();
            let cmd = Command::AlterPartition {
                topic: topic.clone(),
                partition,
                leader: self.node_id,
                broker_epoch: self.broker_epoch(),
                leader_epoch: st.leader_epoch,
                partition_epoch: st.partition_epoch,
                isr: isr.iter().copied().collect(),
            };
            let same_leadership = |now: &ReplicaState| {
                now.role == Role::Leader && now.leader_epoch == st.leader_epoch
            };
            loop {
                let result = self
                    .quorum
                    .propose(cmd.clone(), Duration::from_secs(5))
                    .await;
                match result {
                    Ok(Outcome::Partition(Ok(info))) => {
                        // Committed (or already so: the epoch is unchanged when the ISR was).
                        // Applied here unless the image already carried it or something newer;
                        // compared and written in one step against the applier.
                        let mut wrote = false;
                        part.update_state(|s| {
                            if same_leadership(s) && info.partition_epoch >= s.partition_epoch {
                                s.isr = info.isr.clone();
                                s.partition_epoch = info.partition_epoch;
                                wrote = true;
                            }
                        });
                        if wrote {
                            let isr: BTreeSet<i32> = info.isr.iter().copied().collect();
                            part.leader_update(|ls| (ls.isr_committed(isr), ()));
                            if let Some(b) = self.broker.upgrade() {
                                b.appended.notify_waiters();
                            }
                        }
                        return;
                    }
                    Ok(Outcome::Partition(Err(r)))
                        if r.code == strom_controller::image::code::INVALID_UPDATE_VERSION =>
                    {
                        // The partition moved on, perhaps by an earlier copy of this very
                        // proposal: only the metadata tells. The proposed replicas keep
                        // counting for the high watermark (the maximal ISR) until the image
                        // with the newer partition epoch settles the ISR.
                        tracing::debug!(%topic, partition, "ISR change raced another: waiting for the metadata");
                        loop {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let now = part.state();
                            if !same_leadership(&now)
                                || now.partition_epoch > st.partition_epoch
                                || !self.still_hosts(&topic, partition, &part)
                            {
                                return;
                            }
                        }
                    }
                    Ok(other) => {
                        // A definite refusal (a fenced replica, a deposed leader): nothing
                        // changed. Not sooner than a moment later: leaders propose on fetches.
                        tracing::debug!(%topic, partition, "ISR change refused: {other:?}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let now = part.state();
                        if same_leadership(&now) && now.partition_epoch == st.partition_epoch {
                            let isr: BTreeSet<i32> = now.isr.iter().copied().collect();
                            part.leader_update(|ls| (ls.isr_committed(isr), ()));
                            if let Some(b) = self.broker.upgrade() {
                                b.appended.notify_waiters();
                            }
                        }
                        return;
                    }
                    Err(e) => {
                        // Unknown outcome: send the same proposal again (a duplicate is
                        // refused as stale, which the arm above handles).
                        tracing::debug!(%topic, partition, "ISR change not confirmed: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let now = part.state();
                        if !same_leadership(&now)
                            || now.partition_epoch > st.partition_epoch
                            || !self.still_hosts(&topic, partition, &part)
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
}
