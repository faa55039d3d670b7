//! The consumer: `assign` or `subscribe`, then `poll` (or `recv`, or [`Consumer::stream`]).
//!
//! ```text
//!   poll() ──▶ group membership (join/sync, callbacks, auto-commit) ──▶ chunks queue ──▶ records
//!                   ▲ heartbeat task sets "rejoin"                       ▲
//!                                                       fetcher task: one Fetch per leader in
//!                                                       flight, ListOffsets for resets/seeks
//! ```
//!
//! Positions live with the fetch state; `poll` hands out records and advances them, commits
//! write them to the group coordinator. A seek bumps the partition's epoch so data already
//! fetched for the old position is dropped.

mod fetcher;
mod group;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, Stream};

use crate::assignor::RebalanceProtocol;
use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::error::{Error, Result};
use crate::types::{ConsumerRecord, OffsetReset, TopicPartition};
use fetcher::{FetchState, Lookup, PartState, Shared};
use group::Membership;

pub(crate) use fetcher::list_offsets;

/// Told about partitions as group membership changes. Called from inside `poll`.
pub trait RebalanceListener: Send + Sync {
    /// The consumer now owns these partitions (positions are not yet known).
    fn on_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// These partitions are being taken away; their offsets are committed right after this
    /// returns when auto-commit is on.
    fn on_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// These partitions were lost (the group moved on without us); they cannot be committed.
    fn on_lost(&mut self, _partitions: &[TopicPartition]) {}
}

enum Subscription {
    None,
    Assigned,
    Topics(Vec<String>),
    Pattern(regex::Regex),
}

/// A Kafka consumer.
pub struct Consumer {
    shared: Arc<Shared>,
    fetcher: tokio::task::JoinHandle<()>,
    group: Option<Arc<Membership>>,
    heartbeat: Option<tokio::task::AbortHandle>,
    subscription: Subscription,
    /// Topics the subscription matched at the last join.
    subscribed: Vec<String>,
    /// Partition counts of subscribed topics at the last join (a change triggers a rebalance).
    partition_counts: BTreeMap<String, usize>,
    owned: Vec<TopicPartition>,
    listener: Option<Box<dyn RebalanceListener>>,
    ready: VecDeque<ConsumerRecord>,
    last_commit: Instant,
    last_metadata_check: Instant,
    /// A JoinGroup/SyncGroup round in the background (it waits for the whole group, longer
    /// than one `poll` may block).
    joining: Option<tokio::task::JoinHandle<Result<group::Joined>>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.shared.config.group_id)
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer; it connects when it first needs the cluster.
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        let cluster = Cluster::new(config.client.clone(), config.allow_auto_create_topics)?;
        // Fail early, with the address, when nothing is reachable.
        cluster.any().await?;
        let group = match &config.group_id {
            Some(g) => Some(Arc::new(Membership::new(
                g.clone(),
                cluster.clone(),
                config.clone(),
            )?)),
            None => None,
        };
        let shared = Arc::new(Shared {
            cluster,
            config,
            state: parking_lot::Mutex::new(FetchState::default()),
            wake: tokio::sync::Notify::new(),
            data: tokio::sync::Notify::new(),
        });
        let fetcher = tokio::spawn(fetcher::run(shared.clone()));
        Ok(Consumer {
            shared,
            fetcher,
            group,
            heartbeat: None,
            subscription: Subscription::None,
            subscribed: Vec::new(),
            partition_counts: BTreeMap::new(),
            owned: Vec::new(),
            listener: None,
            ready: VecDeque::new(),
            last_commit: Instant::now(),
            last_metadata_check: Instant::now(),
            joining: None,
        })
    }

    /// Sets the rebalance callbacks.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(Box::new(listener));
    }

    fn group(&self) -> Result<&Arc<Membership>> {
        self.group
            .as_ref()
            .ok_or_else(|| Error::Usage("this needs a consumer group: set group.id".into()))
    }

    /// Subscribes to topics with group management (partitions are assigned by the group).
    pub fn subscribe<S: AsRef<str>>(&mut self, topics: &[S]) -> Result<()> {
        self.group()?;
        self.check_not_assigned()?;
        self.subscription =
            Subscription::Topics(topics.iter().map(|t| t.as_ref().to_string()).collect());
        self.request_rejoin();
        Ok(())
    }

    /// Subscribes to every topic whose whole name matches `pattern` (new ones are picked up at
    /// metadata refreshes, every `metadata.max.age.ms`).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        self.group()?;
        self.check_not_assigned()?;
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| Error::Usage(format!("bad topic pattern {pattern:?}: {e}")))?;
        self.subscription = Subscription::Pattern(re);
        self.request_rejoin();
        Ok(())
    }

    fn check_not_assigned(&self) -> Result<()> {
        if matches!(self.subscription, Subscription::Assigned) {
            return Err(Error::Usage(
                "the consumer uses assign(); call unassign() before subscribe()".into(),
            ));
        }
        Ok(())
    }

    fn request_rejoin(&self) {
        if let Some(g) = &self.group {
            g.rejoin.store(true, Ordering::Release);
        }
    }

    /// Assigns partitions by hand, without group membership. Positions come from committed
    /// offsets when a `group.id` is set, else from `auto.offset.reset`.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if matches!(
            self.subscription,
            Subscription::Topics(_) | Subscription::Pattern(_)
        ) {
            return Err(Error::Usage(
                "the consumer is subscribed; call unsubscribe() before assign()".into(),
            ));
        }
        self.subscription = Subscription::Assigned;
        self.set_assignment(partitions);
        Ok(())
    }

    /// Drops every manually assigned partition.
    pub fn unassign(&mut self) {
        self.set_assignment(&[]);
        self.subscription = Subscription::None;
    }

    /// Leaves the group and drops the subscription.
    pub async fn unsubscribe(&mut self) -> Result<()> {
        if matches!(
            self.subscription,
            Subscription::Topics(_) | Subscription::Pattern(_)
        ) {
            let owned = self.owned.clone();
            self.revoke(&owned).await;
            self.stop_heartbeat();
            if let Some(g) = &self.group {
                g.leave().await?;
            }
        }
        self.set_assignment(&[]);
        self.subscription = Subscription::None;
        Ok(())
    }

    fn set_assignment(&mut self, partitions: &[TopicPartition]) {
        let initial = if self.group.is_some() {
            Lookup::Committed
        } else {
            Lookup::Reset(self.shared.config.auto_offset_reset)
        };
        let keep: BTreeSet<&TopicPartition> = partitions.iter().collect();
        {
            let mut st = self.shared.state.lock();
            st.parts.retain(|tp, _| keep.contains(tp));
            for tp in partitions {
                st.parts
                    .entry(tp.clone())
                    .or_insert_with(|| PartState::new(initial));
            }
            st.chunks.retain(|c| keep.contains(&c.tp));
        }
        self.ready
            .retain(|r| keep.contains(&TopicPartition::new(r.topic.clone(), r.partition)));
        self.owned = partitions.to_vec();
        self.owned.sort();
        self.shared.wake.notify_one();
    }

    /// The partitions this consumer owns now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.clone()
    }

    /// Moves a partition's position to `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        self.with_part(tp, |p| {
            p.seek(offset);
            true
        })
    }

    /// Moves to the oldest stored record of each partition.
    pub fn seek_to_beginning(&mut self, parts: &[TopicPartition]) -> Result<()> {
        for tp in parts {
            self.with_part(tp, |p| relookup(p, Lookup::Reset(OffsetReset::Earliest)))?;
        }
        Ok(())
    }

    /// Moves to the end of each partition.
    pub fn seek_to_end(&mut self, parts: &[TopicPartition]) -> Result<()> {
        for tp in parts {
            self.with_part(tp, |p| relookup(p, Lookup::Reset(OffsetReset::Latest)))?;
        }
        Ok(())
    }

    /// Moves each partition to its first record with a timestamp at or after `ms` (the end if
    /// there is none).
    pub fn seek_to_timestamp(&mut self, parts: &[TopicPartition], ms: i64) -> Result<()> {
        for tp in parts {
            self.with_part(tp, |p| relookup(p, Lookup::Timestamp(ms)))?;
        }
        Ok(())
    }

    /// Changes one partition's fetch state; `f` returns whether data already fetched for it must
    /// be dropped (every seek does; a pause or resume keeps it).
    fn with_part(
        &mut self,
        tp: &TopicPartition,
        f: impl FnOnce(&mut PartState) -> bool,
    ) -> Result<()> {
        let dropped = {
            let mut st = self.shared.state.lock();
            let p = st
                .parts
                .get_mut(tp)
                .ok_or_else(|| Error::Usage(format!("{tp} is not assigned to this consumer")))?;
            let drop_buffered = f(p);
            if drop_buffered {
                st.chunks.retain(|c| &c.tp != tp);
            }
            drop_buffered
        };
        if dropped {
            self.ready
                .retain(|r| !(r.topic == tp.topic && r.partition == tp.partition));
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// The next offset `poll` will return for `tp` (once known).
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        if let Some(r) = self
            .ready
            .iter()
            .find(|r| r.topic == tp.topic && r.partition == tp.partition)
        {
            return Some(r.offset);
        }
        self.shared
            .state
            .lock()
            .parts
            .get(tp)
            .and_then(|p| p.position)
    }

    /// The high watermark last seen for `tp` (lag = high watermark - position).
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        self.shared
            .state
            .lock()
            .parts
            .get(tp)
            .map(|p| p.high_watermark)
            .filter(|h| *h >= 0)
    }

    /// Stops fetching from these partitions until [`Consumer::resume`]; `poll` returns none of
    /// their records meanwhile (what was prefetched is kept for later).
    pub fn pause(&mut self, parts: &[TopicPartition]) -> Result<()> {
        for tp in parts {
            // Records already handed to the `recv` buffer go back: seek to the first of them.
            let first = self
                .ready
                .iter()
                .find(|r| r.topic == tp.topic && r.partition == tp.partition)
                .map(|r| r.offset);
            self.with_part(tp, |p| {
                p.paused = true;
                if let Some(off) = first {
                    p.seek(off);
                }
                first.is_some()
            })?;
        }
        Ok(())
    }

    /// Fetches from these partitions again (partitions that are not paused are left alone).
    pub fn resume(&mut self, parts: &[TopicPartition]) -> Result<()> {
        for tp in parts {
            self.with_part(tp, |p| {
                p.paused = false;
                false
            })?;
        }
        Ok(())
    }

    /// Paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        let mut v: Vec<_> = self
            .shared
            .state
            .lock()
            .parts
            .iter()
            .filter(|(_, p)| p.paused)
            .map(|(tp, _)| tp.clone())
            .collect();
        v.sort();
        v
    }

    /// Waits up to `timeout` for records and returns at most `max.poll.records` of them (from
    /// any assigned partitions and topics). Runs group duties first: joining, rebalance
    /// callbacks, auto-commit.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            // Waiting inside poll counts as polling (max.poll.interval.ms is about the time the
            // application spends between polls).
            if let Some(g) = &self.group {
                g.last_poll.store(now_millis(), Ordering::Release);
            }
            self.group_duties().await?;
            self.drain_chunks();
            if !self.ready.is_empty() {
                let n = self.ready.len().min(self.shared.config.max_poll_records);
                return Ok(self.ready.drain(..n).collect());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let notified = self.shared.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.shared.state.lock().error.take() {
                return Err(e);
            }
            if self.has_data() || self.rejoin_due() {
                continue;
            }
            let mut wait = deadline - now;
            if self.group.is_some() {
                // Wake for auto-commit and subscription checks even when idle.
                wait = wait.min(Duration::from_millis(500));
            }
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// The next record, waiting as long as it takes.
    pub async fn recv(&mut self) -> Result<ConsumerRecord> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(r);
            }
            let batch = self.poll(Duration::from_secs(3600)).await?;
            self.ready.extend(batch);
        }
    }

    /// Records as an endless async stream (errors are items; the stream goes on after them).
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumerRecord>> + '_ {
        stream::unfold(self, |c| async move {
            let r = c.recv().await;
            Some((r, c))
        })
    }

    /// Whether a chunk `poll` could return is queued (paused partitions' chunks wait).
    fn has_data(&self) -> bool {
        let st = self.shared.state.lock();
        st.chunks.iter().any(|c| {
            st.parts
                .get(&c.tp)
                .is_some_and(|p| !p.paused && p.epoch == c.epoch)
        })
    }

    fn rejoin_due(&self) -> bool {
        if let Some(j) = &self.joining {
            return j.is_finished();
        }
        matches!(
            self.subscription,
            Subscription::Topics(_) | Subscription::Pattern(_)
        ) && self
            .group
            .as_ref()
            .is_some_and(|g| g.rejoin.load(Ordering::Acquire))
    }

    fn drain_chunks(&mut self) {
        let max = self.shared.config.max_poll_records;
        let mut st = self.shared.state.lock();
        let st = &mut *st;
        let mut consumed = false;
        // Chunks of paused partitions stay queued, in order, for after `resume`.
        let mut held = Vec::new();
        while self.ready.len() < max {
            let Some(mut chunk) = st.chunks.pop_front() else {
                break;
            };
            let Some(p) = st.parts.get_mut(&chunk.tp) else {
                continue;
            };
            if p.epoch != chunk.epoch {
                continue;
            }
            if p.paused {
                held.push(chunk);
                continue;
            }
            let pos = p.position.unwrap_or(0);
            while chunk.records.front().is_some_and(|r| r.offset < pos) {
                chunk.records.pop_front();
            }
            let take = (max - self.ready.len()).min(chunk.records.len());
            self.ready.extend(chunk.records.drain(..take));
            if let Some(last) = self.ready.back() {
                if last.topic == chunk.tp.topic && last.partition == chunk.tp.partition {
                    p.position = Some(last.offset + 1);
                }
            }
            if chunk.records.is_empty() {
                p.buffered = p.buffered.saturating_sub(chunk.bytes);
                consumed = true;
            } else {
                st.chunks.push_front(chunk);
                break;
            }
        }
        for chunk in held.into_iter().rev() {
            st.chunks.push_front(chunk);
        }
        if consumed {
            self.shared.wake.notify_one();
        }
    }

    /// Joins when needed, resolves committed positions, auto-commits.
    async fn group_duties(&mut self) -> Result<()> {
        let Some(g) = self.group.clone() else {
            return Ok(());
        };
        if matches!(
            self.subscription,
            Subscription::Topics(_) | Subscription::Pattern(_)
        ) {
            if self.last_metadata_check.elapsed()
                >= g.config
                    .client
                    .metadata_max_age
                    .min(Duration::from_secs(30))
            {
                self.last_metadata_check = Instant::now();
                if self.subscription_changed().await? {
                    g.rejoin.store(true, Ordering::Release);
                }
            }
            if let Some(j) = self.joining.take_if(|j| j.is_finished()) {
                let joined = j
                    .await
                    .map_err(|e| Error::Internal(format!("join task: {e}")))??;
                self.joined(&g, joined).await;
            }
            if self.joining.is_none() && g.rejoin.load(Ordering::Acquire) {
                self.start_rejoin(&g).await?;
            }
        }
        self.resolve_committed(&g).await?;
        if g.config.enable_auto_commit
            && self.last_commit.elapsed() >= g.config.auto_commit_interval
        {
            self.last_commit = Instant::now();
            let offsets = self.positions_to_commit();
            if !offsets.is_empty() {
                // Asynchronous, as Kafka's auto-commit: a failure is retried at the next interval.
                g.commit_in_order(offsets, false);
            }
        }
        Ok(())
    }

    async fn matched_topics(&self) -> Result<Vec<String>> {
        match &self.subscription {
            Subscription::Topics(t) => Ok(t.clone()),
            Subscription::Pattern(re) => {
                self.shared.cluster.refresh(None).await?;
                Ok(self
                    .shared
                    .cluster
                    .topics()
                    .iter()
                    .filter(|t| !t.internal && re.is_match(&t.name))
                    .map(|t| t.name.clone())
                    .collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn subscription_changed(&mut self) -> Result<bool> {
        let topics = self.matched_topics().await?;
        if topics != self.subscribed {
            return Ok(true);
        }
        if let Subscription::Topics(t) = &self.subscription {
            let _ = self.shared.cluster.refresh(Some(t)).await;
        }
        let counts = self.partition_counts_of(&topics);
        Ok(counts != self.partition_counts)
    }

    fn partition_counts_of(&self, topics: &[String]) -> BTreeMap<String, usize> {
        topics
            .iter()
            .filter_map(|t| {
                self.shared
                    .cluster
                    .cached(t)
                    .map(|i| (t.clone(), i.partitions.len()))
            })
            .collect()
    }

    async fn start_rejoin(&mut self, g: &Arc<Membership>) -> Result<()> {
        let protocol = g.protocol();
        let lost = g.identity.lock().generation < 0
            && !self.owned.is_empty()
            && !self.subscribed.is_empty();
        if lost {
            let owned = std::mem::take(&mut self.owned);
            if let Some(l) = self.listener.as_mut() {
                l.on_lost(&owned);
            }
            self.set_assignment(&[]);
        } else if protocol == RebalanceProtocol::Eager && !self.owned.is_empty() {
            let owned = self.owned.clone();
            self.revoke(&owned).await;
            self.set_assignment(&[]);
        }
        self.stop_heartbeat();
        let mut topics = self.matched_topics().await?;
        topics.sort();
        let _ = self.shared.cluster.refresh(Some(&topics)).await;
        self.subscribed = topics.clone();
        self.partition_counts = self.partition_counts_of(&topics);
        let owned = self.owned.clone();
        let g2 = g.clone();
        let shared = self.shared.clone();
        self.joining = Some(tokio::spawn(async move {
            let r = g2.join(&topics, &owned).await;
            let r = r.map(|assignment| group::Joined {
                assignment,
                heartbeat: tokio::spawn(group::heartbeat_loop(g2.clone(), shared.clone()))
                    .abort_handle(),
            });
            shared.data.notify_waiters();
            r
        }));
        Ok(())
    }

    async fn joined(&mut self, g: &Arc<Membership>, joined: group::Joined) {
        let new: BTreeSet<TopicPartition> = joined.assignment.iter().cloned().collect();
        let old: BTreeSet<TopicPartition> = self.owned.iter().cloned().collect();
        let revoked: Vec<TopicPartition> = old.difference(&new).cloned().collect();
        let added: Vec<TopicPartition> = new.difference(&old).cloned().collect();
        self.stop_heartbeat();
        self.heartbeat = Some(joined.heartbeat);
        if !revoked.is_empty() {
            self.revoke(&revoked).await;
            // Cooperative: give them up now and rejoin so the group can hand them on.
            g.rejoin.store(true, Ordering::Release);
        }
        let assignment: Vec<TopicPartition> = new.into_iter().collect();
        self.set_assignment(&assignment);
        if let Some(l) = self.listener.as_mut() {
            l.on_assigned(&added);
        }
    }

    /// Calls `on_revoked` and, with auto-commit, commits the revoked partitions' positions.
    async fn revoke(&mut self, parts: &[TopicPartition]) {
        if parts.is_empty() {
            return;
        }
        if let Some(l) = self.listener.as_mut() {
            l.on_revoked(parts);
        }
        if let Some(g) = self.group.clone() {
            if g.config.enable_auto_commit {
                let all = self.positions_to_commit();
                let offsets: BTreeMap<TopicPartition, i64> = all
                    .into_iter()
                    .filter(|(tp, _)| parts.contains(tp))
                    .collect();
                if let Err(e) = Self::commit_via(&g, offsets).await {
                    tracing::warn!(error = %e, "committing revoked partitions failed");
                }
            }
        }
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    async fn resolve_committed(&mut self, g: &Arc<Membership>) -> Result<()> {
        let pending: Vec<TopicPartition> = {
            let st = self.shared.state.lock();
            st.parts
                .iter()
                .filter(|(_, p)| p.lookup == Some(Lookup::Committed))
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let committed = g.committed(&pending).await?;
        let reset = self.shared.config.auto_offset_reset;
        {
            let mut st = self.shared.state.lock();
            for tp in &pending {
                if let Some(p) = st.parts.get_mut(tp) {
                    if p.lookup != Some(Lookup::Committed) {
                        continue;
                    }
                    match committed.get(tp) {
                        Some(&off) if off >= 0 => {
                            p.seek(off);
                            g.acked.lock().insert(tp.clone(), off);
                        }
                        _ => p.lookup = Some(Lookup::Reset(reset)),
                    }
                }
            }
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Current positions that differ from what was last committed.
    fn positions_to_commit(&self) -> BTreeMap<TopicPartition, i64> {
        let mut out = BTreeMap::new();
        let acked = self
            .group
            .as_ref()
            .map(|g| g.acked.lock().clone())
            .unwrap_or_default();
        for tp in &self.owned {
            if let Some(pos) = self.position(tp) {
                if acked.get(tp) != Some(&pos) {
                    out.insert(tp.clone(), pos);
                }
            }
        }
        out
    }

    async fn commit_via(g: &Arc<Membership>, offsets: BTreeMap<TopicPartition, i64>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        match g.commit_in_order(offsets, true) {
            Some(rx) => rx.await.unwrap_or(Err(Error::Closed)),
            None => Ok(()),
        }
    }

    /// Commits the current positions of every owned partition and waits for the answer.
    pub async fn commit(&mut self) -> Result<()> {
        let g = self.group()?.clone();
        let offsets = self.positions_to_commit();
        Self::commit_via(&g, offsets).await
    }

    /// Commits explicit offsets (the next offset to read, per partition) and waits.
    pub async fn commit_offsets(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        let g = self.group()?.clone();
        Self::commit_via(&g, offsets.clone()).await
    }

    /// Commits current positions in the background, after any earlier commit; the handle tells
    /// how it went.
    pub fn commit_async(&mut self) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let g = self.group()?.clone();
        let offsets = self.positions_to_commit();
        let rx = g.commit_in_order(offsets, true);
        Ok(tokio::spawn(async move {
            match rx {
                Some(rx) => rx.await.unwrap_or(Err(Error::Closed)),
                None => Ok(()),
            }
        }))
    }

    /// The group's committed offsets for `parts` (-1 where none).
    pub async fn committed(
        &self,
        parts: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        self.group()?.committed(parts).await
    }

    /// Member id and generation in the group (empty / -1 when not a member).
    pub fn member(&self) -> Option<(String, i32)> {
        self.group.as_ref().map(|g| {
            let i = g.identity.lock();
            (i.member_id.clone(), i.generation)
        })
    }

    /// Commits (with auto-commit), leaves the group and stops.
    pub async fn close(mut self) -> Result<()> {
        if let Some(j) = self.joining.take() {
            j.abort();
        }
        let mut result = Ok(());
        if let Some(g) = self.group.clone() {
            if matches!(
                self.subscription,
                Subscription::Topics(_) | Subscription::Pattern(_)
            ) {
                if g.config.enable_auto_commit {
                    let offsets = self.positions_to_commit();
                    result = Self::commit_via(&g, offsets).await;
                }
                let owned = std::mem::take(&mut self.owned);
                if let Some(l) = self.listener.as_mut() {
                    l.on_revoked(&owned);
                }
                self.stop_heartbeat();
                let left = g.leave().await;
                result = result.and(left);
            } else if g.config.enable_auto_commit
                && matches!(self.subscription, Subscription::Assigned)
            {
                let offsets = self.positions_to_commit();
                result = Self::commit_via(&g, offsets).await;
            }
        }
        result
    }
}

pub(crate) fn now_millis() -> i64 {
    crate::producer::now_ms()
}

fn relookup(p: &mut PartState, lookup: Lookup) -> bool {
    p.position = None;
    p.epoch = fetcher::next_epoch();
    p.buffered = 0;
    p.lookup = Some(lookup);
    true
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_one();
        self.fetcher.abort();
        self.stop_heartbeat();
        if let Some(j) = self.joining.take() {
            j.abort();
        }
    }
}

/// Group offset operations without membership (used by the admin client).
pub(crate) struct GroupHandle {
    m: Membership,
}

impl GroupHandle {
    pub fn new(group: &str, cluster: Arc<Cluster>, config: ConsumerConfig) -> Result<Self> {
        Ok(GroupHandle {
            m: Membership::new(group.to_string(), cluster, config)?,
        })
    }

    pub async fn committed_all(&self) -> Result<HashMap<TopicPartition, i64>> {
        self.m.committed_all().await
    }

    pub async fn commit(&self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        self.m.commit(offsets).await
    }
}
