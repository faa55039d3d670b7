//! The consumer's background fetcher: keeps one Fetch in flight per leader broker for the
//! assigned partitions (prefetching while the application processes what it has), resolves
//! positions by `auto.offset.reset` or timestamp with ListOffsets, and hands decoded records to
//! `poll` through a queue of chunks.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::batch::decode_fetched_with;
use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::error::{Error, Result};
use crate::types::{ConsumerRecord, OffsetReset, TopicPartition};

/// How a partition's position is still to be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The group's committed offset (resolved by the consumer, which owns the group).
    Committed,
    /// By `auto.offset.reset` or an explicit seek to the beginning / end.
    Reset(OffsetReset),
    /// The first offset with a timestamp at or after this one (end of log if none).
    Timestamp(i64),
}

#[derive(Debug)]
pub(crate) struct PartState {
    /// Next offset to hand to the application.
    pub position: Option<i64>,
    /// Next offset to fetch.
    pub fetch_offset: i64,
    /// Bumped by every seek so stale fetched data is dropped.
    pub epoch: u64,
    pub paused: bool,
    pub lookup: Option<Lookup>,
    pub in_flight: bool,
    pub buffered: usize,
    pub high_watermark: i64,
    pub retry_at: Option<Instant>,
}

/// A fresh seek epoch, never reused (not even by a partition assigned again later), so a fetch
/// answered after a reassignment can never pass for a current one.
pub(crate) fn next_epoch() -> u64 {
    static EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl PartState {
    pub fn new(lookup: Lookup) -> Self {
        PartState {
            position: None,
            fetch_offset: 0,
            epoch: next_epoch(),
            paused: false,
            lookup: Some(lookup),
            in_flight: false,
            buffered: 0,
            high_watermark: -1,
            retry_at: None,
        }
    }

    pub fn seek(&mut self, offset: i64) {
        self.position = Some(offset);
        self.fetch_offset = offset;
        self.epoch = next_epoch();
        self.lookup = None;
        self.buffered = 0;
    }
}

/// Records fetched for one partition, waiting for `poll`.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub records: VecDeque<ConsumerRecord>,
    pub bytes: usize,
}

#[derive(Default)]
pub(crate) struct FetchState {
    pub parts: HashMap<TopicPartition, PartState>,
    pub chunks: VecDeque<Chunk>,
    /// An error for the application (e.g. out of range with `auto.offset.reset=none`).
    pub error: Option<Error>,
    pub closed: bool,
}

pub(crate) struct Shared {
    pub cluster: Arc<Cluster>,
    pub config: ConsumerConfig,
    pub state: Mutex<FetchState>,
    /// Wakes the fetcher (assignment, seek, resume, data consumed).
    pub wake: Notify,
    /// Wakes `poll` (data arrived, an error, a rebalance).
    pub data: Notify,
}

/// One partition of a fetch response, decoded off the shared lock.
struct Fetched {
    tp: TopicPartition,
    error: i16,
    high_watermark: i64,
    /// Records at or above the fetch offset and the offset after the last whole batch.
    decoded: Result<(Vec<ConsumerRecord>, Option<i64>)>,
    bytes: usize,
}

struct Done {
    broker: i32,
    result: Result<Vec<Fetched>>,
    epochs: HashMap<TopicPartition, (u64, i64)>,
}

/// Runs until the consumer closes.
pub(crate) async fn run(shared: Arc<Shared>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let mut busy: HashSet<i32> = HashSet::new();
    let mut resetting = false;
    let (reset_tx, mut reset_rx) = mpsc::unbounded_channel::<()>();
    loop {
        let mut next_retry: Option<Instant> = None;
        let mut to_fetch: BTreeMap<i32, Vec<(TopicPartition, i64, u64)>> = BTreeMap::new();
        let mut to_reset: Vec<(TopicPartition, Lookup)> = Vec::new();
        let mut need_metadata = false;
        {
            let mut st = shared.state.lock();
            if st.closed {
                return;
            }
            let now = Instant::now();
            let limit = (shared.config.max_partition_fetch_bytes.max(1) as usize) * 2;
            for (tp, p) in st.parts.iter_mut() {
                if let Some(at) = p.retry_at {
                    if at > now {
                        next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                        continue;
                    }
                    p.retry_at = None;
                }
                match p.lookup {
                    Some(Lookup::Committed) => continue,
                    Some(l) => {
                        to_reset.push((tp.clone(), l));
                        continue;
                    }
                    None => {}
                }
                if p.paused || p.in_flight || p.buffered >= limit {
                    continue;
                }
                let leader = shared.cluster.leader(&tp.topic, tp.partition);
                if leader < 0 {
                    // Look again after a backoff: an election may be under way.
                    need_metadata = true;
                    let at = now + shared.config.client.retry_backoff;
                    p.retry_at = Some(at);
                    next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                    continue;
                }
                if busy.contains(&leader) {
                    continue;
                }
                to_fetch
                    .entry(leader)
                    .or_default()
                    .push((tp.clone(), p.fetch_offset, p.epoch));
            }
            for parts in to_fetch.values() {
                for (tp, _, _) in parts {
                    if let Some(p) = st.parts.get_mut(tp) {
                        p.in_flight = true;
                    }
                }
            }
        }
        if (need_metadata || shared.cluster.stale()) && !resetting {
            let _ = shared.cluster.refresh(None).await;
        }
        if !to_reset.is_empty() && !resetting {
            resetting = true;
            let s = shared.clone();
            let done = reset_tx.clone();
            tokio::spawn(async move {
                resolve_positions(&s, to_reset).await;
                let _ = done.send(());
            });
        }
        for (broker, parts) in to_fetch {
            busy.insert(broker);
            let s = shared.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let epochs: HashMap<TopicPartition, (u64, i64)> = parts
                    .iter()
                    .map(|(tp, off, e)| (tp.clone(), (*e, *off)))
                    .collect();
                // Decompress and decode here, off the lock `poll` needs.
                let result = fetch(&s, broker, &parts).await.map(|r| {
                    decode(
                        r,
                        &epochs,
                        s.config.isolation_level == crate::types::IsolationLevel::ReadCommitted,
                    )
                });
                let _ = tx.send(Done {
                    broker,
                    result,
                    epochs,
                });
            });
        }
        let sleep = next_retry.map(|t| tokio::time::sleep_until(t.into()));
        tokio::select! {
            _ = shared.wake.notified() => {}
            Some(done) = rx.recv() => {
                busy.remove(&done.broker);
                handle(&shared, done);
            }
            Some(()) = reset_rx.recv() => resetting = false,
            _ = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
        }
        while let Ok(done) = rx.try_recv() {
            busy.remove(&done.broker);
            handle(&shared, done);
        }
    }
}

async fn fetch(
    shared: &Shared,
    broker: i32,
    parts: &[(TopicPartition, i64, u64)],
) -> Result<FetchResponse> {
    let cfg = &shared.config;
    let conn = shared.cluster.broker(broker).await?;
    let version = conn.version::<FetchRequest>(4..=12)?;
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (tp, offset, _) in parts {
        topics.entry(&tp.topic).or_default().push(
            FetchPartition::default()
                .with_partition(tp.partition)
                .with_fetch_offset(*offset)
                .with_partition_max_bytes(cfg.max_partition_fetch_bytes),
        );
    }
    let mut req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(cfg.fetch_max_wait.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(cfg.fetch_min_bytes)
        .with_max_bytes(cfg.fetch_max_bytes)
        .with_isolation_level(cfg.isolation_level.wire())
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    if version >= 11 {
        if let Some(rack) = &cfg.client_rack {
            req = req.with_rack_id(StrBytes::from_string(rack.clone()));
        }
    }
    conn.send_raw(&req, version).await
}

fn decode(
    resp: FetchResponse,
    epochs: &HashMap<TopicPartition, (u64, i64)>,
    read_committed: bool,
) -> Vec<Fetched> {
    let mut out = Vec::new();
    for t in resp.responses {
        let topic = t.topic.0.to_string();
        for pd in t.partitions {
            let tp = TopicPartition::new(topic.clone(), pd.partition_index);
            let Some(&(_, offset)) = epochs.get(&tp) else {
                continue;
            };
            let data = pd.records.unwrap_or_default();
            let decoded = if pd.error_code == 0 {
                let aborted: Option<Vec<(i64, i64)>> = read_committed.then(|| {
                    pd.aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect()
                });
                decode_fetched_with(&topic, tp.partition, &data, offset, aborted.as_deref())
            } else {
                Ok((Vec::new(), None))
            };
            out.push(Fetched {
                tp,
                error: pd.error_code,
                high_watermark: pd.high_watermark,
                decoded,
                bytes: data.len(),
            });
        }
    }
    out
}

fn handle(shared: &Shared, done: Done) {
    let mut refresh = false;
    let mut st = shared.state.lock();
    let retry_at = Instant::now() + shared.config.client.retry_backoff;
    let resp = match done.result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(broker = done.broker, error = %e, "fetch failed");
            for (tp, (epoch, _)) in &done.epochs {
                if let Some(p) = st.parts.get_mut(tp) {
                    p.in_flight = false;
                    if p.epoch == *epoch {
                        p.retry_at = Some(retry_at);
                    }
                }
            }
            drop(st);
            let s = shared.cluster.clone();
            tokio::spawn(async move {
                let _ = s.refresh(None).await;
            });
            return;
        }
    };
    // Partitions in the request but not in the response are simply fetched again.
    for tp in done.epochs.keys() {
        if let Some(p) = st.parts.get_mut(tp) {
            p.in_flight = false;
        }
    }
    let mut arrived = false;
    let guard = &mut *st;
    for f in resp {
        let tp = f.tp;
        let Some(&(epoch, offset)) = done.epochs.get(&tp) else {
            continue;
        };
        let reset_policy = shared.config.auto_offset_reset;
        let Some(p) = guard.parts.get_mut(&tp) else {
            continue; // no longer assigned
        };
        if p.epoch != epoch {
            continue; // sought elsewhere meanwhile
        }
        match ResponseError::try_from_code(f.error) {
            None => {
                p.high_watermark = f.high_watermark;
                match f.decoded {
                    Ok((records, next)) => {
                        if let Some(next) = next {
                            p.fetch_offset = next.max(p.fetch_offset);
                            if records.is_empty() && p.position == Some(offset) {
                                // Only control batches (transaction markers): move past them.
                                p.position = Some(p.fetch_offset);
                            }
                        } else if f.bytes > 0 {
                            // One batch larger than max.partition.fetch.bytes: Kafka sends it
                            // whole from v3 on, so this is a broken broker.
                            guard.error = Some(Error::Protocol(format!(
                                "{tp}: fetch returned only a partial batch at offset {offset}"
                            )));
                            p.retry_at = Some(retry_at);
                            arrived = true;
                            continue;
                        }
                        if !records.is_empty() {
                            p.buffered += f.bytes;
                            guard.chunks.push_back(Chunk {
                                tp,
                                epoch,
                                records: records.into(),
                                bytes: f.bytes,
                            });
                            arrived = true;
                        }
                    }
                    Err(e) => {
                        guard.error = Some(e);
                        p.retry_at = Some(retry_at);
                        arrived = true;
                    }
                }
            }
            Some(ResponseError::OffsetOutOfRange) => {
                if reset_policy == OffsetReset::None {
                    guard.error = Some(Error::broker(
                        format!("fetch {tp} at offset {offset}"),
                        ResponseError::OffsetOutOfRange,
                        Some("auto.offset.reset=none; seek to a valid offset".into()),
                    ));
                    p.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    arrived = true;
                } else {
                    tracing::info!(partition = %tp, offset, "offset out of range; resetting by auto.offset.reset");
                    p.lookup = Some(Lookup::Reset(reset_policy));
                }
            }
            Some(e) if e.is_retriable() => {
                p.retry_at = Some(retry_at);
                refresh = true;
            }
            Some(e) => {
                guard.error = Some(Error::broker(format!("fetch {tp}"), e, None));
                p.retry_at = Some(Instant::now() + Duration::from_secs(1));
                arrived = true;
            }
        }
    }
    drop(st);
    if arrived {
        shared.data.notify_waiters();
    }
    if refresh {
        let s = shared.cluster.clone();
        tokio::spawn(async move {
            let _ = s.refresh(None).await;
        });
    }
}

/// Looks positions up with ListOffsets (earliest -2, latest -1, or a timestamp).
async fn resolve_positions(shared: &Shared, parts: Vec<(TopicPartition, Lookup)>) {
    let wanted: Vec<(TopicPartition, i64)> = parts
        .iter()
        .filter_map(|(tp, l)| match l {
            Lookup::Reset(OffsetReset::Earliest) => Some((tp.clone(), -2)),
            Lookup::Reset(OffsetReset::Latest) => Some((tp.clone(), -1)),
            Lookup::Timestamp(ts) => Some((tp.clone(), *ts)),
            Lookup::Reset(OffsetReset::None) | Lookup::Committed => None,
        })
        .collect();
    if parts
        .iter()
        .any(|(_, l)| *l == Lookup::Reset(OffsetReset::None))
    {
        let mut st = shared.state.lock();
        for (tp, l) in &parts {
            if *l == Lookup::Reset(OffsetReset::None) {
                st.error = Some(Error::Usage(format!(
                    "{tp} has no committed offset and auto.offset.reset=none"
                )));
                if let Some(p) = st.parts.get_mut(tp) {
                    p.retry_at = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        drop(st);
        shared.data.notify_waiters();
    }
    let results = list_offsets(
        &shared.cluster,
        &wanted,
        shared.config.isolation_level.wire(),
    )
    .await;
    let mut st = shared.state.lock();
    let retry_at = Instant::now() + shared.config.client.retry_backoff;
    for (tp, lookup) in parts {
        let Some(p) = st.parts.get_mut(&tp) else {
            continue;
        };
        if p.lookup != Some(lookup) {
            continue;
        }
        match results.get(&tp) {
            Some(Ok(offset)) => {
                let offset = if *offset < 0 && matches!(lookup, Lookup::Timestamp(_)) {
                    // No record at or after the timestamp: the end of the log.
                    match p.high_watermark {
                        hw if hw >= 0 => hw,
                        _ => {
                            p.lookup = Some(Lookup::Reset(OffsetReset::Latest));
                            continue;
                        }
                    }
                } else {
                    *offset
                };
                p.seek(offset);
            }
            Some(Err(e)) => {
                tracing::debug!(partition = %tp, error = %e, "position lookup failed; retrying");
                p.retry_at = Some(retry_at);
            }
            None => p.retry_at = Some(retry_at),
        }
    }
    drop(st);
    shared.wake.notify_one();
}

/// ListOffsets for many partitions, each sent to its leader. `-1` latest, `-2` earliest,
/// `-3` max timestamp, otherwise a timestamp.
pub(crate) async fn list_offsets(
    cluster: &Cluster,
    wanted: &[(TopicPartition, i64)],
    isolation: i8,
) -> HashMap<TopicPartition, Result<i64>> {
    let mut out = HashMap::new();
    let mut by_leader: BTreeMap<i32, Vec<&(TopicPartition, i64)>> = BTreeMap::new();
    for w in wanted {
        let mut leader = cluster.leader(&w.0.topic, w.0.partition);
        if leader < 0 {
            let _ = cluster.refresh(None).await;
            leader = cluster.leader(&w.0.topic, w.0.partition);
        }
        if leader < 0 {
            out.insert(w.0.clone(), Err(Error::UnknownTopic(w.0.to_string())));
            continue;
        }
        by_leader.entry(leader).or_default().push(w);
    }
    for (leader, items) in by_leader {
        let result = async {
            let conn = cluster.broker(leader).await?;
            let version = conn.version::<ListOffsetsRequest>(1..=7)?;
            let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
            for (tp, ts) in &items.iter().map(|w| (&w.0, w.1)).collect::<Vec<_>>() {
                topics.entry(&tp.topic).or_default().push(
                    ListOffsetsPartition::default()
                        .with_partition_index(tp.partition)
                        .with_timestamp(*ts),
                );
            }
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(if version >= 2 { isolation } else { 0 })
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            conn.send_raw(&req, version).await
        }
        .await;
        match result {
            Ok(resp) => {
                for t in resp.topics {
                    for p in t.partitions {
                        let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                        let r = match ResponseError::try_from_code(p.error_code) {
                            None => Ok(p.offset),
                            Some(e) => Err(Error::broker(format!("list offsets of {tp}"), e, None)),
                        };
                        out.insert(tp, r);
                    }
                }
            }
            Err(e) => {
                for w in items {
                    out.insert(w.0.clone(), Err(e.clone()));
                }
            }
        }
    }
    out
}
