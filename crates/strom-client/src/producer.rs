//! The producer: batching per partition, compression, backpressure, retries and idempotence.
//!
//! ```text
//!  send() ──▶ accumulator (open batch per partition) ──seal──▶ ready queue per partition
//!                                                                   │ sender task: by leader
//!                                                                   ▼
//!                            completions ◀── request tasks (encode, compress, Produce) ──▶ broker
//! ```
//!
//! `send` only appends to a batch and returns a [`DeliveryFuture`]; one sender task decides what
//! goes out (a batch is full, its `linger.ms` passed, or `flush` asked) and hands each broker's
//! batches to a request task, which compresses them off the caller's path. With idempotence (the
//! default) each batch carries the producer id and a per-partition sequence number; a batch that
//! fails with a retriable error goes back to the front of its partition's queue and is sent again
//! with the same sequence, so the broker drops duplicates and never reorders, with up to
//! `max.in.flight.requests.per.connection` (≤ 5) requests in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::batch::{record_size_bound, restamp, OpenBatch, ProducerStamp};
use crate::cluster::Cluster;
use crate::config::{Acks, ProducerConfig};
use crate::error::{Error, Result};
use crate::types::{Header, TopicPartition};

/// A record to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Destination topic.
    pub topic: String,
    /// Destination partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// Key (decides the partition with the default partitioner).
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Timestamp in ms since the epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }
    /// Sets the timestamp.
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset, or -1 with `acks=0`.
    pub offset: i64,
    /// The record's timestamp (the broker's with LogAppendTime topics).
    pub timestamp: i64,
}

/// Resolves when the record is acknowledged (or finally fails).
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Who hears how a record fared.
enum Reply {
    /// The sender of one record's [`DeliveryFuture`].
    One(oneshot::Sender<Result<RecordMetadata>>),
    /// One record of a [`Producer::send_batch`] call.
    Batch(BatchSlot),
}

/// What the records of one [`Producer::send_batch`] call share.
struct BatchShared {
    /// Records not yet acknowledged or failed (plus one while the call is still queueing).
    remaining: std::sync::atomic::AtomicUsize,
    /// The first failure.
    error: Mutex<Option<Error>>,
    done: Notify,
}

/// One record's share of a [`BatchShared`]: completing or dropping it counts the record done
/// (dropped unanswered, as when the producer goes away, it counts as failed).
struct BatchSlot {
    shared: Arc<BatchShared>,
    answered: bool,
}

impl BatchSlot {
    fn new(shared: &Arc<BatchShared>) -> BatchSlot {
        shared
            .remaining
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        BatchSlot {
            shared: shared.clone(),
            answered: false,
        }
    }

    fn complete(mut self, error: Option<&Error>) {
        if let Some(e) = error {
            self.shared.error.lock().get_or_insert_with(|| e.clone());
        }
        self.answered = true;
    }
}

impl Drop for BatchSlot {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.error.lock().get_or_insert(Error::Closed);
        }
        let before = self
            .shared
            .remaining
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if before == 1 {
            self.shared.done.notify_waiters();
        }
    }
}

/// Resolves when every record of a [`Producer::send_batch`] call is acknowledged, or with the
/// first failure once none is outstanding.
pub struct BatchDelivery {
    shared: Arc<BatchShared>,
}

impl std::fmt::Debug for BatchDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchDelivery")
            .field(
                "remaining",
                &self
                    .shared
                    .remaining
                    .load(std::sync::atomic::Ordering::Acquire),
            )
            .finish()
    }
}

impl BatchDelivery {
    /// Waits for every record's outcome.
    pub async fn wait(self) -> Result<()> {
        loop {
            let notified = self.shared.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .shared
                .remaining
                .load(std::sync::atomic::Ordering::Acquire)
                == 0
            {
                return match self.shared.error.lock().take() {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
            notified.await;
        }
    }
}

/// A batch that is closed to new records and waits to be sent (or re-sent).
struct Sealed {
    tp: TopicPartition,
    id: u64,
    open: OpenBatch,
    encoded: Option<Bytes>,
    replies: Vec<(Reply, i64)>,
    reserved: usize,
    created: Instant,
    base_sequence: i32,
    retry_at: Option<Instant>,
    /// Failed attempts so far (`retries` bounds them).
    failures: u32,
    /// Whether it ever left for a broker (if so, a failure may hide a write that happened).
    sent: bool,
}

struct Filling {
    id: u64,
    batch: OpenBatch,
    replies: Vec<(Reply, i64)>,
    reserved: usize,
    created: Instant,
}

#[derive(Default)]
struct PartQueue {
    filling: Option<Filling>,
    ready: VecDeque<Sealed>,
    in_flight: usize,
    next_sequence: i32,
    /// Sequence after the last acknowledged batch (where a re-numbering restarts).
    acked_sequence: i32,
    /// A batch failed and will be retried: send nothing newer until everything in flight is back.
    hold: bool,
    /// A batch failed for good: renumber the rest once nothing is in flight.
    renumber: bool,
}

#[derive(Default)]
struct Accumulator {
    parts: HashMap<TopicPartition, PartQueue>,
    next_id: u64,
    live: BTreeSet<u64>,
    flush_upto: u64,
    closed: bool,
}

struct Inner {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    memory: Semaphore,
    acc: Mutex<Accumulator>,
    wake: Notify,
    progress: Notify,
    stamp: Mutex<ProducerStamp>,
}

/// A Kafka producer. Cheap to share: clone the `Arc` or call [`Producer::send`] from many tasks.
pub struct Producer {
    inner: Arc<Inner>,
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// The later of two sequence numbers, allowing for the wrap at `i32::MAX`.
fn sequence_max(a: i32, b: i32) -> i32 {
    let ahead = (b as i64 - a as i64).rem_euclid(i32::MAX as i64 + 1);
    if ahead < (1 << 30) {
        b
    } else {
        a
    }
}

fn sequence_add(seq: i32, n: i32) -> i32 {
    // Kafka's sequences wrap at i32::MAX back to 0.
    ((seq as i64 + n as i64) % (i32::MAX as i64 + 1)) as i32
}

impl Producer {
    /// Connects to the cluster (and, with idempotence, obtains a producer id).
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let cluster = Cluster::new(config.client.clone(), config.allow_auto_create_topics)?;
        let conn = cluster.any().await?;
        let mut stamp = ProducerStamp::NONE;
        if config.idempotence {
            let deadline = Instant::now() + config.max_block;
            loop {
                let (_, r) = conn
                    .send(
                        &InitProducerIdRequest::default()
                            .with_transactional_id(None)
                            .with_transaction_timeout_ms(60_000)
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1),
                        0..=4,
                    )
                    .await?;
                match ResponseError::try_from_code(r.error_code) {
                    None => {
                        stamp = ProducerStamp {
                            id: r.producer_id.0,
                            epoch: r.producer_epoch,
                            base_sequence: 0,
                        };
                        break;
                    }
                    Some(e) if e.is_retriable() && Instant::now() < deadline => {
                        tokio::time::sleep(config.client.retry_backoff).await;
                    }
                    Some(e) => return Err(Error::broker("InitProducerId", e, None)),
                }
            }
        }
        let memory = Semaphore::new(config.buffer_memory.min(Semaphore::MAX_PERMITS));
        let inner = Arc::new(Inner {
            config,
            cluster,
            memory,
            acc: Mutex::new(Accumulator::default()),
            wake: Notify::new(),
            progress: Notify::new(),
            stamp: Mutex::new(stamp),
        });
        let sender = tokio::spawn(Sender::new(inner.clone()).run());
        Ok(Producer {
            inner,
            sender: Some(sender),
        })
    }

    /// The producer id and epoch (-1 without idempotence).
    pub fn producer_id(&self) -> (i64, i16) {
        let s = *self.inner.stamp.lock();
        (s.id, s.epoch)
    }

    /// Queues a record; waits only for metadata and buffer space (backpressure, up to
    /// `max.block.ms`). The returned future resolves when the broker acknowledges it.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(record, Reply::One(tx)).await?;
        Ok(DeliveryFuture { rx })
    }

    /// Queues many records, as [`send`](Self::send) each, with one future for them all: cheaper
    /// per record when the caller needs to know only that all of them made it. On an error
    /// the records queued before it are still sent.
    pub async fn send_batch(
        &self,
        records: impl IntoIterator<Item = ProducerRecord>,
    ) -> Result<BatchDelivery> {
        let shared = Arc::new(BatchShared {
            remaining: std::sync::atomic::AtomicUsize::new(0),
            error: Mutex::new(None),
            done: Notify::new(),
        });
        // Held while queueing, so that records acknowledged meanwhile cannot finish the batch.
        let queueing = BatchSlot::new(&shared);
        for r in records {
            self.enqueue(r, Reply::Batch(BatchSlot::new(&shared)))
                .await?;
        }
        queueing.complete(None);
        Ok(BatchDelivery { shared })
    }

    async fn enqueue(&self, record: ProducerRecord, reply: Reply) -> Result<()> {
        let inner = &self.inner;
        let cfg = &inner.config;
        let topic = match inner.cluster.cached(&record.topic) {
            Some(t) => t,
            None => inner.cluster.topic(&record.topic, cfg.max_block).await?,
        };
        let n = topic.partitions.len() as i32;
        if n == 0 {
            return Err(Error::UnknownTopic(record.topic));
        }
        let partition = match record.partition {
            Some(p) if (0..n).contains(&p) => p,
            Some(p) => {
                return Err(Error::Usage(format!(
                    "topic {} has {n} partitions; partition {p} does not exist",
                    record.topic
                )))
            }
            None => cfg.partitioner.partition(record.key.as_deref(), n),
        };
        let size = record_size_bound(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        if size + crate::batch::HEADER_SIZE > cfg.max_request_size || size > cfg.buffer_memory {
            return Err(Error::Usage(format!(
                "record of {size} bytes exceeds max.request.size ({}) or buffer.memory ({})",
                cfg.max_request_size, cfg.buffer_memory
            )));
        }
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        match inner.memory.try_acquire_many(permits) {
            Ok(p) => p.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                match tokio::time::timeout(cfg.max_block, inner.memory.acquire_many(permits)).await
                {
                    Ok(Ok(p)) => p.forget(),
                    Ok(Err(_)) => return Err(Error::Closed),
                    Err(_) => {
                        return Err(Error::Timeout {
                            what: "waiting for buffer.memory".into(),
                            after: cfg.max_block,
                        })
                    }
                }
            }
        }
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let tp = TopicPartition::new(record.topic, partition);
        let mut wake = false;
        {
            let mut acc = inner.acc.lock();
            if acc.closed {
                drop(acc);
                inner.memory.add_permits(permits as usize);
                return Err(Error::Closed);
            }
            let acc = &mut *acc;
            if !acc.parts.contains_key(&tp) {
                acc.parts.insert(tp.clone(), PartQueue::default());
            }
            let Some(q) = acc.parts.get_mut(&tp) else {
                return Err(Error::Internal("partition queue vanished".into()));
            };
            if let Some(f) = &q.filling {
                if f.batch.count() > 0 && f.batch.size() + size > cfg.batch_size {
                    seal(q, &tp, inner.stamp.lock().base_sequence >= 0);
                    cfg.partitioner.batch_full(partition, n);
                    wake = true;
                }
            }
            let f = q.filling.get_or_insert_with(|| {
                acc.next_id += 1;
                acc.live.insert(acc.next_id);
                wake = true;
                Filling {
                    id: acc.next_id,
                    // Sized for a full batch up front (capped, for huge batch.size settings):
                    // growing by doubling copied every batch several times.
                    batch: OpenBatch::new(timestamp, cfg.batch_size.min(256 << 10).max(size)),
                    replies: Vec::with_capacity((cfg.batch_size / size.max(1)).clamp(1, 1024)),
                    reserved: 0,
                    created: Instant::now(),
                }
            });
            f.batch.push(
                timestamp,
                record.key.as_deref(),
                record.value.as_deref(),
                &record.headers,
            );
            f.replies.push((reply, timestamp));
            f.reserved += permits as usize;
            if f.batch.size() >= cfg.batch_size {
                seal(q, &tp, inner.stamp.lock().base_sequence >= 0);
                cfg.partitioner.batch_full(partition, n);
                wake = true;
            }
        }
        if wake {
            inner.wake.notify_one();
        }
        Ok(())
    }

    /// Sends every record queued so far without waiting for `linger.ms` and waits until each
    /// is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let upto = {
            let mut acc = self.inner.acc.lock();
            acc.flush_upto = acc.next_id;
            acc.next_id
        };
        self.inner.wake.notify_one();
        loop {
            let notified = self.inner.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let acc = self.inner.acc.lock();
                if acc.live.first().is_none_or(|&first| first > upto) {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Flushes, then stops the producer. Records sent afterwards fail with [`Error::Closed`].
    pub async fn close(mut self) -> Result<()> {
        let r = self.flush().await;
        if self.inner.config.acks == Acks::None {
            // acks=0 requests get no answer; one request that does, on each connection, comes
            // back only after the broker read everything sent before it.
            for b in self.inner.cluster.brokers() {
                if let Ok(conn) = self.inner.cluster.broker(b.id).await {
                    let _ = conn
                        .send(
                            &kafka_protocol::messages::ApiVersionsRequest::default(),
                            0..=0,
                        )
                        .await;
                }
            }
        }
        self.inner.acc.lock().closed = true;
        self.inner.wake.notify_one();
        if let Some(h) = self.sender.take() {
            let _ = h.await;
        }
        r
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The sender task finishes what is queued, then exits.
        self.inner.acc.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

fn seal(q: &mut PartQueue, tp: &TopicPartition, idempotent: bool) {
    if let Some(f) = q.filling.take() {
        let base_sequence = if idempotent {
            let s = q.next_sequence;
            q.next_sequence = sequence_add(s, f.batch.count());
            s
        } else {
            -1
        };
        q.ready.push_back(Sealed {
            tp: tp.clone(),
            id: f.id,
            open: f.batch,
            encoded: None,
            replies: f.replies,
            reserved: f.reserved,
            created: f.created,
            base_sequence,
            retry_at: None,
            failures: 0,
            sent: false,
        });
    }
}

/// What a request task reports back.
struct Completion {
    broker: i32,
    batches: Vec<Sealed>,
    result: Result<Option<ProduceResponse>>,
}

struct Sender {
    inner: Arc<Inner>,
    in_flight: HashMap<i32, usize>,
    /// One ordered lane per broker: requests reach each broker in the order they were built.
    lanes: HashMap<i32, mpsc::UnboundedSender<Vec<Sealed>>>,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    refreshing: Arc<std::sync::atomic::AtomicBool>,
    /// The producer epoch must be bumped before anything else is sent.
    bump_needed: bool,
}

impl Sender {
    fn new(inner: Arc<Inner>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Sender {
            inner,
            in_flight: HashMap::new(),
            lanes: HashMap::new(),
            done_tx,
            done_rx,
            refreshing: Arc::default(),
            bump_needed: false,
        }
    }

    async fn run(mut self) {
        loop {
            if self.bump_needed && self.in_flight.values().all(|n| *n == 0) {
                self.bump_epoch().await;
            }
            let (next_deadline, finished) = self.dispatch();
            if finished {
                return;
            }
            let sleep = next_deadline.map(|d| tokio::time::sleep_until(d.into()));
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                Some(done) = self.done_rx.recv() => self.complete(done),
                _ = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
            }
            while let Ok(done) = self.done_rx.try_recv() {
                self.complete(done);
            }
        }
    }

    fn refresh_metadata(&self) {
        if self
            .refreshing
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let cluster = self.inner.cluster.clone();
        let flag = self.refreshing.clone();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let topics: Vec<String> = {
                let acc = inner.acc.lock();
                let set: BTreeSet<&String> = acc.parts.keys().map(|tp| &tp.topic).collect();
                set.into_iter().cloned().collect()
            };
            if let Err(e) = cluster.refresh(Some(&topics)).await {
                tracing::debug!(error = %e, "metadata refresh failed");
                tokio::time::sleep(cluster.config.retry_backoff).await;
            }
            flag.store(false, std::sync::atomic::Ordering::Release);
            inner.wake.notify_one();
        });
    }

    /// Seals what is due, sends what may go, fails what expired. Returns when to look again and
    /// whether the producer is closed and drained.
    fn dispatch(&mut self) -> (Option<Instant>, bool) {
        let inner = self.inner.clone();
        let cfg = &inner.config;
        let now = Instant::now();
        let stamp = *inner.stamp.lock();
        let idempotent = stamp.base_sequence >= 0;
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        // Per broker, the requests to send now; a partition has at most one batch per request.
        let mut by_broker: BTreeMap<i32, Vec<Vec<Sealed>>> = BTreeMap::new();
        let mut free: HashMap<i32, usize> = HashMap::new();
        let mut expired: Vec<Sealed> = Vec::new();
        let mut need_metadata = inner.cluster.stale();
        // While the producer epoch is being bumped nothing is sent (the new epoch restarts
        // every partition's sequences).
        let sending = !self.bump_needed;
        let finished;
        {
            let mut acc = inner.acc.lock();
            let acc = &mut *acc;
            let flush_upto = acc.flush_upto;
            let closing = acc.closed;
            for (tp, q) in acc.parts.iter_mut() {
                if let Some(f) = &q.filling {
                    let due = f.created + cfg.linger;
                    if due <= now || f.id <= flush_upto || closing {
                        seal(q, tp, idempotent);
                    } else {
                        soonest(due);
                    }
                }
                // Expire batches that waited past delivery.timeout.ms (only ones not in flight).
                while q
                    .ready
                    .front()
                    .is_some_and(|b| b.created + cfg.delivery_timeout <= now)
                {
                    if let Some(b) = q.ready.pop_front() {
                        if idempotent {
                            if b.sent {
                                // It may have been written: only a new epoch makes the
                                // sequences after it safe.
                                self.bump_needed = true;
                            } else {
                                q.renumber = true;
                            }
                        }
                        expired.push(b);
                    }
                }
                if let Some(b) = q.ready.front() {
                    soonest(b.created + cfg.delivery_timeout);
                }
                if !sending || ((q.hold || q.renumber) && q.in_flight > 0) {
                    continue;
                }
                if q.renumber {
                    let mut seq = q.acked_sequence;
                    for b in q.ready.iter_mut() {
                        b.base_sequence = seq;
                        if let Some(e) = &b.encoded {
                            b.encoded = Some(restamp(
                                e,
                                ProducerStamp {
                                    base_sequence: seq,
                                    ..stamp
                                },
                            ));
                        }
                        seq = sequence_add(seq, b.open.count());
                    }
                    q.next_sequence = seq;
                    q.renumber = false;
                }
                q.hold = false;
                let leader = inner.cluster.leader(&tp.topic, tp.partition);
                if leader < 0 {
                    if !q.ready.is_empty() {
                        need_metadata = true;
                    }
                    continue;
                }
                let limit = if idempotent {
                    cfg.max_in_flight
                } else {
                    usize::MAX
                };
                let slots = *free.entry(leader).or_insert_with(|| {
                    cfg.max_in_flight
                        .saturating_sub(*self.in_flight.get(&leader).unwrap_or(&0))
                });
                let requests = by_broker.entry(leader).or_default();
                let mut k = 0;
                while q.in_flight < limit && k < slots {
                    let Some(b) = q.ready.front() else { break };
                    if let Some(at) = b.retry_at {
                        if at > now {
                            soonest(at);
                            break;
                        }
                    }
                    if let Some(mut b) = q.ready.pop_front() {
                        b.sent = true;
                        q.in_flight += 1;
                        if requests.len() <= k {
                            requests.push(Vec::new());
                        }
                        requests[k].push(b);
                        k += 1;
                    }
                }
            }
            finished = acc.closed && acc.live.is_empty();
        }
        if need_metadata {
            self.refresh_metadata();
        }
        for b in expired {
            let err = Error::Timeout {
                what: format!("delivery to {}", b.tp),
                after: cfg.delivery_timeout,
            };
            self.finish(b, Err(err));
        }
        for (broker, rounds) in by_broker {
            for batches in rounds {
                // Split into requests of at most max.request.size (estimated before compression).
                let mut request: Vec<Sealed> = Vec::new();
                let mut size = 0usize;
                let mut requests = Vec::new();
                for b in batches {
                    let s = b.open.size();
                    if !request.is_empty() && size + s > cfg.max_request_size {
                        requests.push(std::mem::take(&mut request));
                        size = 0;
                    }
                    size += s;
                    request.push(b);
                }
                if !request.is_empty() {
                    requests.push(request);
                }
                for r in requests {
                    self.send_request(broker, r);
                }
            }
        }
        (next, finished)
    }

    fn send_request(&mut self, broker: i32, r: Vec<Sealed>) {
        *self.in_flight.entry(broker).or_default() += 1;
        let lane = self.lanes.entry(broker).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(lane(self.inner.clone(), broker, rx, self.done_tx.clone()));
            tx
        });
        if let Err(mpsc::error::SendError(r)) = lane.send(r) {
            let _ = self.done_tx.send(Completion {
                broker,
                batches: r,
                result: Err(Error::Closed),
            });
        }
    }

    /// Gets a new epoch for the producer id (KIP-360) once nothing is in flight, and restarts
    /// every partition's sequences at 0 under it. Needed when a batch that may have been written
    /// failed, or the broker lost track of this producer.
    async fn bump_epoch(&mut self) {
        let old = *self.inner.stamp.lock();
        let result = async {
            let conn = self.inner.cluster.any().await?;
            let version = conn.version::<InitProducerIdRequest>(0..=4)?;
            let mut req = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000);
            if version >= 3 {
                req = req
                    .with_producer_id(ProducerId(old.id))
                    .with_producer_epoch(old.epoch);
            }
            let r = conn.send_raw(&req, version).await?;
            crate::error::check(r.error_code, || "InitProducerId (epoch bump)".into())?;
            Ok::<_, Error>((r.producer_id.0, r.producer_epoch))
        }
        .await;
        match result {
            Ok((id, epoch)) => {
                tracing::info!(
                    producer_id = id,
                    epoch,
                    "producer epoch bumped; sequences restart at 0"
                );
                *self.inner.stamp.lock() = ProducerStamp {
                    id,
                    epoch,
                    base_sequence: 0,
                };
                let mut acc = self.inner.acc.lock();
                for q in acc.parts.values_mut() {
                    q.acked_sequence = 0;
                    q.next_sequence = 0;
                    q.renumber = true;
                    q.hold = false;
                }
                self.bump_needed = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "bumping the producer epoch failed; retrying");
                tokio::time::sleep(self.inner.config.client.retry_backoff).await;
            }
        }
    }

    /// Completes (or fails) a batch's records and returns its buffer memory.
    fn finish(&self, b: Sealed, result: Result<(i64, i64)>) {
        let inner = &self.inner;
        for (i, (reply, ts)) in b.replies.into_iter().enumerate() {
            match reply {
                Reply::One(tx) => {
                    let _ = tx.send(match &result {
                        Ok((base, append_time)) => Ok(RecordMetadata {
                            topic: b.tp.topic.clone(),
                            partition: b.tp.partition,
                            offset: if *base >= 0 { base + i as i64 } else { -1 },
                            timestamp: if *append_time >= 0 { *append_time } else { ts },
                        }),
                        Err(e) => Err(e.clone()),
                    });
                }
                Reply::Batch(slot) => slot.complete(result.as_ref().err()),
            }
        }
        inner.memory.add_permits(b.reserved);
        inner.acc.lock().live.remove(&b.id);
        inner.progress.notify_waiters();
    }

    fn complete(&mut self, done: Completion) {
        if let Some(n) = self.in_flight.get_mut(&done.broker) {
            *n = n.saturating_sub(1);
        }
        let cfg = &self.inner.config;
        let mut outcomes: HashMap<TopicPartition, (i16, i64, i64, Option<String>)> = HashMap::new();
        let request_error = match &done.result {
            Ok(Some(resp)) => {
                for t in &resp.responses {
                    for p in &t.partition_responses {
                        outcomes.insert(
                            TopicPartition::new(t.name.0.to_string(), p.index),
                            (
                                p.error_code,
                                p.base_offset,
                                p.log_append_time_ms,
                                p.error_message.as_ref().map(|m| m.to_string()),
                            ),
                        );
                    }
                }
                None
            }
            Ok(None) => None,
            Err(e) => Some(e.clone()),
        };
        let acks0 = matches!(done.result, Ok(None));
        let mut retry_later: Vec<Sealed> = Vec::new();
        let mut refresh = false;
        for b in done.batches {
            let outcome: Result<(i64, i64)> = if acks0 {
                Ok((-1, -1))
            } else if let Some(e) = &request_error {
                Err(e.clone())
            } else {
                match outcomes.get(&b.tp) {
                    None => Err(Error::Protocol(format!(
                        "produce response has no answer for {}",
                        b.tp
                    ))),
                    Some((0, base, at, _)) => Ok((*base, *at)),
                    Some((code, base, at, msg)) => match ResponseError::try_from_code(*code) {
                        Some(ResponseError::DuplicateSequenceNumber) => Ok((*base, *at)),
                        Some(e) => Err(Error::broker(
                            format!("produce to {}", b.tp),
                            e,
                            msg.clone(),
                        )),
                        None => Err(Error::Protocol(format!(
                            "produce to {}: unknown error code {code}",
                            b.tp
                        ))),
                    },
                }
            };
            let mut acc = self.inner.acc.lock();
            let Some(q) = acc.parts.get_mut(&b.tp) else {
                drop(acc);
                self.finish(
                    b,
                    Err(Error::Internal("batch of an unknown partition".into())),
                );
                continue;
            };
            q.in_flight = q.in_flight.saturating_sub(1);
            match outcome {
                Ok(offsets) => {
                    if b.base_sequence >= 0 {
                        q.acked_sequence = sequence_max(
                            q.acked_sequence,
                            sequence_add(b.base_sequence, b.open.count()),
                        );
                    }
                    drop(acc);
                    self.finish(b, Ok(offsets));
                }
                Err(e) => {
                    let idempotent = b.base_sequence >= 0;
                    let code = e.code();
                    let expired = b.created + cfg.delivery_timeout <= Instant::now();
                    // The first unacknowledged batch refused as out of order, or a broker that
                    // no longer knows this producer (topic recreated, state expired): the
                    // broker's sequence state for us is gone, and only a new epoch restarts it.
                    // The batch was not written, so it is sent again under the new epoch.
                    let lost_state = idempotent
                        && (code == Some(ResponseError::UnknownProducerId)
                            || (code == Some(ResponseError::OutOfOrderSequenceNumber)
                                && b.base_sequence == q.acked_sequence));
                    // Out of order behind an earlier batch that failed: it follows that one.
                    let behind =
                        code == Some(ResponseError::OutOfOrderSequenceNumber) && !lost_state;
                    // With idempotence, renumbering after a lost state is part of delivery, not
                    // a retry the application limited.
                    let retriable = (e.is_retriable() || behind || lost_state)
                        && (b.failures < cfg.retries || (idempotent && (behind || lost_state)));
                    let mut b = b;
                    b.failures = b.failures.saturating_add(1);
                    if retriable && !expired {
                        if lost_state {
                            tracing::info!(partition = %b.tp, error = %e, "the broker lost this producer's sequence state; bumping the epoch");
                            self.bump_needed = true;
                        }
                        if matches!(
                            code,
                            Some(
                                ResponseError::NotLeaderOrFollower
                                    | ResponseError::UnknownTopicOrPartition
                                    | ResponseError::LeaderNotAvailable
                                    | ResponseError::FencedLeaderEpoch
                                    | ResponseError::UnknownProducerId
                            )
                        ) || matches!(
                            e,
                            Error::Disconnected(_)
                                | Error::Timeout { .. }
                                | Error::Unreachable { .. }
                        ) {
                            refresh = true;
                        }
                        if idempotent {
                            q.hold = true;
                        }
                        tracing::debug!(partition = %b.tp, error = %e, "retrying batch");
                        drop(acc);
                        retry_later.push(b);
                    } else {
                        if idempotent {
                            // A definite refusal leaves the broker's sequence where it was, and
                            // the batches behind this one are renumbered to close the gap; an
                            // unknown outcome (timed out, connection lost) may hide a write,
                            // which only a new epoch makes safe to renumber past.
                            let unknown =
                                matches!(e, Error::Disconnected(_) | Error::Timeout { .. })
                                    || code.is_some_and(|c| c.is_retriable());
                            if unknown {
                                self.bump_needed = true;
                            } else {
                                q.renumber = true;
                            }
                        }
                        drop(acc);
                        self.finish(b, Err(e));
                    }
                }
            }
        }
        if !retry_later.is_empty() {
            let at = Instant::now() + cfg.client.retry_backoff;
            let mut acc = self.inner.acc.lock();
            for mut b in retry_later {
                b.retry_at = Some(at);
                if let Some(q) = acc.parts.get_mut(&b.tp) {
                    // Keep the queue in sequence (or creation) order.
                    let pos = q
                        .ready
                        .iter()
                        .position(|x| x.id > b.id)
                        .unwrap_or(q.ready.len());
                    q.ready.insert(pos, b);
                }
            }
        }
        if refresh {
            self.refresh_metadata();
        }
    }
}

/// Sends one broker's requests in order: encodes (compresses) each, puts it on the connection's
/// wire queue, and lets a task wait for the response so several can be in flight.
async fn lane(
    inner: Arc<Inner>,
    broker: i32,
    mut rx: mpsc::UnboundedReceiver<Vec<Sealed>>,
    done: mpsc::UnboundedSender<Completion>,
) {
    while let Some(mut batches) = rx.recv().await {
        let report = |batches, result| {
            let _ = done.send(Completion {
                broker,
                batches,
                result,
            });
        };
        let req = match build_request(&inner, &mut batches) {
            Ok(r) => r,
            Err(e) => {
                report(batches, Err(e));
                continue;
            }
        };
        let conn = match inner.cluster.broker(broker).await {
            Ok(c) => c,
            Err(e) => {
                report(batches, Err(e));
                continue;
            }
        };
        let version = match conn.version::<ProduceRequest>(3..=9) {
            Ok(v) => v,
            Err(e) => {
                report(batches, Err(e));
                continue;
            }
        };
        if inner.config.acks == Acks::None {
            let r = conn.send_oneway(&req, version).map(|()| None);
            report(batches, r);
            continue;
        }
        match conn.enqueue(&req, version) {
            Ok(response) => {
                let done = done.clone();
                tokio::spawn(async move {
                    let result = response.await.map(Some);
                    let _ = done.send(Completion {
                        broker,
                        batches,
                        result,
                    });
                });
            }
            Err(e) => report(batches, Err(e)),
        }
    }
}

/// Encodes the batches not yet encoded and builds the Produce request.
fn build_request(inner: &Inner, batches: &mut [Sealed]) -> Result<ProduceRequest> {
    let cfg = &inner.config;
    let stamp = *inner.stamp.lock();
    for b in batches.iter_mut() {
        if b.encoded.is_none() {
            let s = ProducerStamp {
                base_sequence: b.base_sequence,
                ..if b.base_sequence >= 0 {
                    stamp
                } else {
                    ProducerStamp::NONE
                }
            };
            b.encoded = Some(b.open.encode(cfg.compression, s)?);
        }
    }
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for b in batches.iter() {
        topics.entry(&b.tp.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(b.tp.partition)
                .with_records(b.encoded.clone()),
        );
    }
    Ok(ProduceRequest::default()
        .with_acks(cfg.acks.wire())
        .with_timeout_ms(cfg.client.request_timeout.as_millis().min(i32::MAX as u128) as i32)
        .with_topic_data(
            topics
                .into_iter()
                .map(|(t, parts)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_data(parts)
                })
                .collect(),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(sequence_add(5, 3), 8);
        assert_eq!(sequence_add(i32::MAX, 1), 0);
        assert_eq!(sequence_add(i32::MAX - 1, 5), 3);
        assert_eq!(sequence_max(5, 9), 9);
        assert_eq!(sequence_max(9, 5), 9);
        assert_eq!(sequence_max(i32::MAX - 2, 3), 3, "3 is after the wrap");
        assert_eq!(sequence_max(3, i32::MAX - 2), 3);
    }

    #[test]
    fn invalid_configs_are_refused_with_a_reason() {
        let mut c = ProducerConfig::new("localhost:9092");
        c.set("acks", "1").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("acks=all"), "{e}");
        c.set("enable.idempotence", "false").unwrap();
        c.validate().unwrap();
        assert!(c.set("linger.ms", "soon").is_err());
        assert!(c
            .set("no.such.thing", "1")
            .unwrap_err()
            .to_string()
            .contains("no.such.thing"));
        assert!(ProducerConfig::new("localhost").validate().is_err());
    }
}
