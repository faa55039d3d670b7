//! Replica fetchers: a follower copies its leaders' logs, one task per leader broker, with
//! Kafka's own Fetch API (`replica_id` set, so the leader serves records up to its log end and
//! counts the fetch offset as this replica's log end).
//!
//! After every leader change a partition is first reconciled (KIP-101 / KIP-279): the follower
//! asks the leader, with OffsetForLeaderEpoch, where its latest epoch ended on the leader and
//! truncates whatever it holds beyond that, repeating with older epochs while the leader
//! answers with an older one, so replicas never keep records the leader does not have.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::peer::KafkaConn;
use crate::broker::{Broker, Role};
use crate::replication::{truncation_step, Truncation};

/// What a follower knows about one partition it copies.
#[derive(Debug, Clone)]
struct Follow {
    /// The leader epoch the follower fetches in.
    epoch: i32,
    /// Set once the log is reconciled with this leader.
    truncated: bool,
    /// The epoch to ask the leader about next (KIP-279 walks back epoch by epoch).
    ask: Option<i32>,
    /// Do not fetch before this (the leader refused: wait for new metadata).
    backoff_until: Option<Instant>,
}

/// One leader's fetcher.
#[derive(Debug)]
pub struct Fetcher {
    leader: i32,
    addr: Mutex<String>,
    parts: Mutex<BTreeMap<(String, i32), Follow>>,
    changed: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Fetcher {
    /// Starts a fetcher for `leader` at `addr`.
    pub fn spawn(
        leader: i32,
        me: i32,
        addr: String,
        broker: Weak<Broker>,
        max_wait: Duration,
    ) -> Arc<Fetcher> {
        let f = Arc::new(Fetcher {
            leader,
            addr: Mutex::new(addr),
            parts: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(f.clone().run(me, broker, max_wait));
        *f.task.lock() = Some(task);
        f
    }

    /// Stops the task.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }

    /// Updates the leader's address.
    pub fn set_addr(&self, addr: String) {
        *self.addr.lock() = addr;
    }

    /// The partitions to copy and their leader epochs; a partition whose epoch changed is
    /// reconciled again.
    pub fn set_partitions(&self, wanted: BTreeMap<(String, i32), i32>) {
        let mut parts = self.parts.lock();
        let before = parts.len();
        parts.retain(|k, _| wanted.contains_key(k));
        let mut changed = parts.len() != before;
        for (k, epoch) in wanted {
            match parts.get_mut(&k) {
                Some(f) if f.epoch == epoch => {}
                Some(f) => {
                    changed = true;
                    *f = Follow {
                        epoch,
                        truncated: false,
                        ask: None,
                        backoff_until: None,
                    }
                }
                None => {
                    changed = true;
                    parts.insert(
                        k,
                        Follow {
                            epoch,
                            truncated: false,
                            ask: None,
                            backoff_until: None,
                        },
                    );
                }
            }
        }
        drop(parts);
        if changed {
            // Wakes the task, or cuts short a fetch parked on the leader for the old set.
            self.changed.notify_one();
        }
    }

    fn update(&self, key: &(String, i32), epoch: i32, f: impl FnOnce(&mut Follow)) {
        if let Some(follow) = self.parts.lock().get_mut(key) {
            if follow.epoch == epoch {
                f(follow);
            }
        }
    }

    async fn run(self: Arc<Self>, me: i32, broker: Weak<Broker>, max_wait: Duration) {
        let mut conn: Option<KafkaConn> = None;
        let client_id = format!("strom-replica-{me}");
        loop {
            let now = Instant::now();
            let parts: Vec<((String, i32), Follow)> = self
                .parts
                .lock()
                .iter()
                .filter(|(_, f)| f.backoff_until.is_none_or(|t| t <= now))
                .map(|(k, f)| (k.clone(), f.clone()))
                .collect();
            if parts.is_empty() {
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), self.changed.notified()).await;
                continue;
            }
            let addr = self.addr.lock().clone();
            if conn.as_ref().is_none_or(|c| c.addr() != addr) {
                match KafkaConn::connect(&addr, client_id.clone(), CONNECT_TIMEOUT).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::debug!(leader = self.leader, "replica fetcher: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let Some(b) = broker.upgrade() else { return };
            let result = if parts.iter().any(|(_, f)| !f.truncated) {
                self.reconcile(&b, c, me, &parts).await.map(|()| true)
            } else {
                self.fetch(&b, c, me, &parts, max_wait).await
            };
            drop(b);
            if let Ok(false) = result {
                // Interrupted: the connection has a response in flight; start afresh at once.
                conn = None;
            }
            if let Err(e) = result {
                tracing::debug!(leader = self.leader, "replica fetcher: {e}");
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// OffsetForLeaderEpoch for every partition not reconciled yet, then truncation.
    async fn reconcile(
        &self,
        broker: &Broker,
        conn: &mut KafkaConn,
        me: i32,
        parts: &[((String, i32), Follow)],
    ) -> crate::Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
        let mut asked: BTreeMap<(String, i32), i32> = BTreeMap::new();
        for ((topic, p), f) in parts.iter().filter(|(_, f)| !f.truncated) {
            let Some(part) = broker.partition(topic, *p) else {
                continue;
            };
            let epochs = part.log.leader_epochs();
            let Some(ask) = f.ask.or(epochs.last().map(|(e, _)| *e)) else {
                // An empty log has nothing to reconcile.
                self.update(&(topic.clone(), *p), f.epoch, |f| f.truncated = true);
                continue;
            };
            asked.insert((topic.clone(), *p), ask);
            by_topic.entry(topic).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(f.epoch)
                    .with_leader_epoch(ask),
            );
        }
        if by_topic.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Ok(());
        }
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(me))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetForLeaderTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = conn.call(&req, 4, Duration::from_secs(10)).await?;
        for t in resp.topics {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let key = (topic.clone(), p.partition);
                let Some(&ask) = asked.get(&key) else {
                    continue;
                };
                let Some(follow) = parts.iter().find(|(k, _)| *k == key).map(|(_, f)| f) else {
                    continue;
                };
                if p.error_code != 0 {
                    tracing::debug!(%topic, partition = p.partition, code = p.error_code, "epoch query refused");
                    self.update(&key, follow.epoch, |f| {
                        f.backoff_until = Some(Instant::now() + Duration::from_millis(300))
                    });
                    continue;
                }
                let Some(part) = broker.partition(&topic, p.partition) else {
                    continue;
                };
                let epochs = part.log.leader_epochs();
                let leo = part.log.log_end_offset();
                match truncation_step(&epochs, leo, ask, (p.leader_epoch, p.end_offset)) {
                    Truncation::To(offset) => {
                        if offset < leo {
                            tracing::info!(%topic, partition = p.partition, from = leo, to = offset, "truncating diverged records");
                        }
                        // Only while this replica still follows this leader in this epoch.
                        if part.truncate_as_follower(offset, self.leader, follow.epoch)? {
                            self.update(&key, follow.epoch, |f| {
                                f.truncated = true;
                                f.ask = None;
                            });
                        }
                    }
                    Truncation::Ask(e) => self.update(&key, follow.epoch, |f| f.ask = Some(e)),
                }
            }
        }
        Ok(())
    }

    /// One Fetch from the leader, appended locally. `Ok(false)`: cut short because the
    /// partition set changed (the connection must be dropped).
    async fn fetch(
        &self,
        broker: &Broker,
        conn: &mut KafkaConn,
        me: i32,
        parts: &[((String, i32), Follow)],
        max_wait: Duration,
    ) -> crate::Result<bool> {
        let mut by_topic: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for ((topic, p), f) in parts {
            let Some(part) = broker.partition(topic, *p) else {
                continue;
            };
            if part.role_epoch().0 == Role::Leader {
                continue;
            }
            by_topic.entry(topic).or_default().push(
                FetchPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(f.epoch)
                    .with_fetch_offset(part.log.log_end_offset())
                    .with_log_start_offset(part.log.log_start_offset())
                    .with_last_fetched_epoch(-1)
                    .with_partition_max_bytes(1024 * 1024),
            );
        }
        if by_topic.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(true);
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(me))
            .with_max_wait_ms(max_wait.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(16 * 1024 * 1024)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        // A partition added meanwhile (a new topic, a leader change) should not wait for the
        // leader's long poll of the old set: give up the request (and its connection).
        let resp = tokio::select! {
            r = conn.call(&req, 12, max_wait + Duration::from_secs(10)) => r?,
            () = self.changed.notified() => return Ok(false),
        };
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let key = (topic.clone(), p.partition_index);
                // The follow set may have changed while the request was out (a new epoch, a
                // new leader, reconciliation pending): act only on what still holds.
                let current = self.parts.lock().get(&key).cloned();
                let Some(follow) = current else { continue };
                let sent = parts.iter().find(|(k, _)| *k == key).map(|(_, f)| f.epoch);
                if sent != Some(follow.epoch) || !follow.truncated {
                    continue;
                }
                let Some(part) = broker.partition(&topic, p.partition_index) else {
                    continue;
                };
                match ResponseError::try_from_code(p.error_code) {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange)
                        if p.log_start_offset > part.log.log_end_offset() =>
                    {
                        // Behind the leader's log start (retention or DeleteRecords there):
                        // nothing to reconcile, copy from the leader's start.
                        tracing::warn!(%topic, partition = p.partition_index, from = p.log_start_offset, "restarting the replica at the leader's log start");
                        if let Err(e) = part.restart_as_follower_at(
                            p.log_start_offset,
                            p.log_start_offset,
                            self.leader,
                            follow.epoch,
                        ) {
                            tracing::warn!(%topic, partition = p.partition_index, "restarting the replica failed: {e}");
                        }
                        continue;
                    }
                    Some(ResponseError::OffsetOutOfRange) => {
                        // Reconcile again (our log may be ahead of the leader's); wait a little
                        // in case it is behind the leader's log start instead.
                        self.update(&key, follow.epoch, |f| {
                            f.truncated = false;
                            f.backoff_until = Some(Instant::now() + Duration::from_millis(500));
                        });
                        continue;
                    }
                    Some(e) => {
                        tracing::debug!(%topic, partition = p.partition_index, "fetch refused: {e:?}");
                        self.update(&key, follow.epoch, |f| {
                            f.backoff_until = Some(Instant::now() + Duration::from_millis(300))
                        });
                        continue;
                    }
                }
                if let Some(records) = p.records.filter(|r| !r.is_empty()) {
                    let mut buf = records.to_vec();
                    // The leader may send a trailing partial batch: keep whole batches only.
                    let whole = strom_log::batch::whole_batches_len(&buf);
                    buf.truncate(whole);
                    // Restarted at the leader's log start, the log may end inside the leader's
                    // first batch (a log start set by DeleteRecords): begin where it begins.
                    let (start, end) = (part.log.log_start_offset(), part.log.log_end_offset());
                    if let Some(h) = strom_log::BatchHeader::parse(&buf) {
                        if start == end && h.base_offset < end && end <= h.last_offset() {
                            if let Err(e) = part.restart_as_follower_at(
                                h.base_offset,
                                start,
                                self.leader,
                                follow.epoch,
                            ) {
                                tracing::warn!(%topic, partition = p.partition_index, "restarting the replica failed: {e}");
                            }
                        }
                    }
                    if !buf.is_empty() {
                        match part.append_as_follower(&mut buf, self.leader, follow.epoch) {
                            Ok(Some(_)) => {}
                            // No longer following this leader in this epoch: drop the answer.
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!(%topic, partition = p.partition_index, "replica append failed: {e}");
                                self.update(&key, follow.epoch, |f| {
                                    f.truncated = false;
                                    f.backoff_until =
                                        Some(Instant::now() + Duration::from_millis(300));
                                });
                                continue;
                            }
                        }
                    }
                }
                if p.log_start_offset > part.log.log_start_offset()
                    && p.log_start_offset <= part.log.log_end_offset()
                {
                    let _ = part.log.delete_records(p.log_start_offset);
                }
                let hw = p.high_watermark.min(part.log.log_end_offset());
                let st = part.state();
                if st.role == Role::Follower
                    && st.leader == self.leader
                    && hw > part.log.high_watermark()
                {
                    part.log.set_high_watermark(hw);
                }
            }
        }
        Ok(true)
    }
}
