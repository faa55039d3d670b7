//! `strom bench produce|consume|e2e`: client throughput and latency against any Kafka-protocol
//! cluster, measured with Strom's own client ([`strom_client`]).
//!
//! - `produce`: `--producers` clients send `--records` values of `--record-size` bytes as fast
//!   as the producer's backpressure (`buffer.memory`) allows. Latency is per record, from the
//!   call to `send` to its acknowledgement, as Kafka's `kafka-producer-perf-test` measures it;
//!   at full speed it is mostly the time a record waits in the producer's buffer (about
//!   `buffer.memory` divided by the byte rate).
//! - `consume`: one consumer reads the topic from the beginning (all partitions assigned,
//!   `auto.offset.reset=earliest`, no group) until `--records` records were read. When the topic
//!   holds fewer, the missing ones are produced first.
//! - `e2e`: a consumer positioned at the end of every partition while producers send; latency
//!   is from the moment a record was handed to `send` to the moment `poll` returned it (a
//!   microsecond timestamp carried in the value's first 8 bytes; the record's millisecond
//!   timestamp when values are shorter).
//!
//! ```text
//!   producer task ──send()──▶ Producer ──▶ broker ──▶ Consumer ──poll()──▶ consumer task (e2e)
//!        │ DeliveryFuture + send instant (bounded channel)
//!        ▼
//!   acknowledgement thread per producer (awaits them in order, records latency, counts)
//! ```
//!
//! Values are random capital letters (as `kafka-producer-perf-test` uses): gzip and zstd shrink
//! them by about a third, lz4 and snappy hardly at all. The topic is created with `--partitions`
//! partitions when it does not exist.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strom_client::admin::{Admin, NewTopic, OffsetSpec};
use strom_client::config::parse_compression;
use strom_client::{
    Acks, Compression, Consumer, ConsumerConfig, DeliveryFuture, Error as ClientError, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};

/// clap subcommands: `strom bench produce|consume|e2e`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientBench {
    /// Producer throughput and per-record send→ack latency.
    Produce(BenchArgs),
    /// Consumer throughput, reading the topic from the beginning (producing records first when
    /// it holds too few).
    Consume(BenchArgs),
    /// End-to-end latency and throughput: a consumer at the end of the topic while producers
    /// send.
    E2e(BenchArgs),
}

/// Settings shared by `strom bench produce|consume|e2e`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Brokers to bootstrap from (HOST:PORT, comma-separated).
    #[arg(long, env = "STROM_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,
    /// Topic to use (created with --partitions partitions when missing).
    #[arg(long, default_value = "strom-bench")]
    pub topic: String,
    /// Records to produce or consume.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Run for this long instead of a record count (e.g. 30s, 2m); consume stops at whichever
    /// of --records and --duration comes first.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<humantime::Duration>,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub record_size: usize,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// acks: 0, 1 or all (idempotence is on only with all).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// compression.type: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_codec)]
    pub compression: Compression,
    /// linger.ms [default: the client's, 5].
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// batch.size in bytes [default: the client's, 16384].
    #[arg(long, value_name = "BYTES")]
    pub batch_size: Option<usize>,
    /// max.in.flight.requests.per.connection [default: 5]; above 5 turns idempotence off.
    #[arg(long, value_name = "N")]
    pub in_flight: Option<usize>,
    /// Concurrent producer clients (each with its own connections).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub producers: usize,
    /// Print a machine-readable summary (JSON) on stdout and no progress bar.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    s.parse().map_err(|e: ClientError| e.to_string())
}

fn parse_codec(s: &str) -> Result<Compression, String> {
    parse_compression(s).map_err(|e| e.to_string())
}

impl BenchArgs {
    /// Refuses settings that cannot run.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.records == 0 && self.duration.is_none() {
            return Err("--records must be at least 1".into());
        }
        if self.producers == 0 {
            return Err("--producers must be at least 1".into());
        }
        if self.partitions < 1 {
            return Err("--partitions must be at least 1".into());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err("--duration must be longer than 0".into());
        }
        Ok(())
    }

    fn duration(&self) -> Option<Duration> {
        self.duration.map(Into::into)
    }

    /// The producer settings every producer of the run gets.
    pub(crate) fn producer_config(&self) -> ProducerConfig {
        let mut cfg = ProducerConfig::new(&self.brokers)
            .acks(self.acks)
            .compression(self.compression);
        cfg.client.client_id = "strom-bench".into();
        if let Some(ms) = self.linger_ms {
            cfg.linger = Duration::from_millis(ms);
        }
        if let Some(b) = self.batch_size {
            cfg.batch_size = b.max(1);
            cfg.buffer_memory = cfg.buffer_memory.max(cfg.batch_size.saturating_mul(4));
        }
        if let Some(n) = self.in_flight {
            cfg.max_in_flight = n;
        }
        // As Kafka's clients do when idempotence is not asked for explicitly: on where the other
        // settings allow it.
        cfg.idempotence = self.acks == Acks::All && (1..=5).contains(&cfg.max_in_flight);
        cfg.buffer_memory = cfg
            .buffer_memory
            .max(self.record_size.saturating_mul(4) + 4096);
        cfg.max_request_size = cfg.max_request_size.max(self.record_size + 4096);
        cfg
    }

    fn consumer_config(&self) -> ConsumerConfig {
        let mut cfg = ConsumerConfig::new(&self.brokers).offset_reset(OffsetReset::Earliest);
        cfg.client.client_id = "strom-bench".into();
        cfg.max_partition_fetch_bytes = cfg
            .max_partition_fetch_bytes
            .max(i32::try_from(self.record_size + 4096).unwrap_or(i32::MAX));
        cfg
    }

    fn progress_wanted(&self) -> bool {
        !self.json && !self.no_progress && std::io::stderr().is_terminal()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// The result of one benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchSummary {
    /// `produce`, `consume` or `e2e`.
    pub mode: String,
    /// Records produced (acknowledged) or consumed.
    pub records: u64,
    /// Bytes of record values.
    pub bytes: u64,
    /// Wall-clock seconds of the measurement (client start-up excluded).
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_sec: f64,
    /// `bytes / seconds` in MiB.
    pub mib_per_sec: f64,
    /// produce: send→ack; e2e: produce→consumed; consume: none.
    pub latency_ms: Option<Latency>,
}

impl BenchSummary {
    fn new(
        mode: &str,
        records: u64,
        bytes: u64,
        elapsed: Duration,
        hist: Option<&Histogram<u64>>,
    ) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        BenchSummary {
            mode: mode.to_string(),
            records,
            bytes,
            seconds,
            records_per_sec: records as f64 / seconds,
            mib_per_sec: bytes as f64 / (1024.0 * 1024.0) / seconds,
            latency_ms: hist.filter(|h| !h.is_empty()).map(|h| {
                let ms = |us: u64| us as f64 / 1000.0;
                Latency {
                    p50: ms(h.value_at_quantile(0.5)),
                    p99: ms(h.value_at_quantile(0.99)),
                    p999: ms(h.value_at_quantile(0.999)),
                    max: ms(h.max()),
                }
            }),
        }
    }
}

/// `1234567.8` → `1,234,568`.
pub(crate) fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl std::fmt::Display for BenchSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} records in {:.2} s — {} rec/s, {:.1} MiB/s",
            self.mode,
            self.records,
            self.seconds,
            thousands(self.records_per_sec),
            self.mib_per_sec
        )?;
        if let Some(l) = &self.latency_ms {
            write!(
                f,
                "; latency ms p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
                l.p50, l.p99, l.p999, l.max
            )?;
        }
        Ok(())
    }
}

/// Runs one benchmark; prints the summary (or JSON) to stdout. Errors are one line.
pub async fn run(cmd: ClientBench) -> Result<BenchSummary, String> {
    let (mode, args) = match cmd {
        ClientBench::Produce(a) => ("produce", a),
        ClientBench::Consume(a) => ("consume", a),
        ClientBench::E2e(a) => ("e2e", a),
    };
    args.check()?;
    let summary = match mode {
        "produce" => produce(&args, "produce").await?,
        "consume" => consume(&args).await?,
        _ => e2e(&args).await?,
    };
    if args.json {
        let json = serde_json::to_string(&summary)
            .map_err(|e| format!("internal error (this is a bug): summary as JSON: {e}"))?;
        println!("{json}");
    } else {
        println!("{summary}");
    }
    Ok(summary)
}

fn one_line(what: &str, e: impl std::fmt::Display) -> String {
    let s = format!("{what}: {e}");
    s.lines().collect::<Vec<_>>().join(" ")
}

/// A latency histogram in microseconds, from 1 µs to one hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    #[allow(clippy::unwrap_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
}

fn micros_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

// ---------------------------------------------------------------------------------------------
// Topic set-up

/// Creates the topic when it is missing; returns its partitions.
async fn ensure_topic(admin: &Admin, args: &BenchArgs) -> Result<Vec<TopicPartition>, String> {
    let info = match admin.describe_topic(&args.topic).await {
        Ok(info) => info,
        Err(ClientError::UnknownTopic(_)) => {
            match admin
                .create_topics(&[NewTopic::new(&args.topic, args.partitions)])
                .await
            {
                Ok(()) => {}
                Err(e) if e.code() == Some(kafka_protocol::ResponseError::TopicAlreadyExists) => {}
                Err(e) => return Err(one_line(&format!("creating topic {}", args.topic), e)),
            }
            wait_for_leaders(admin, &args.topic).await?
        }
        Err(e) => return Err(one_line(&format!("describing topic {}", args.topic), e)),
    };
    Ok(info
        .partitions
        .iter()
        .map(|p| TopicPartition::new(&args.topic, p.partition))
        .collect())
}

async fn wait_for_leaders(
    admin: &Admin,
    topic: &str,
) -> Result<Arc<strom_client::cluster::TopicInfo>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.describe_topic(topic).await {
            Ok(info)
                if !info.partitions.is_empty() && info.partitions.iter().all(|p| p.leader >= 0) =>
            {
                return Ok(info)
            }
            Ok(_) | Err(ClientError::UnknownTopic(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) => {
                return Err(format!(
                    "topic {topic} has partitions without a leader after 30 s"
                ))
            }
            Err(e) => return Err(one_line(&format!("describing topic {topic}"), e)),
        }
    }
}

async fn connect_admin(args: &BenchArgs) -> Result<Admin, String> {
    Admin::connect(&args.brokers)
        .await
        .map_err(|e| one_line(&format!("connecting to {}", args.brokers), e))
}

// ---------------------------------------------------------------------------------------------
// Values

/// Record values: slices of a pool of random capital letters (zero-copy), so that every record
/// differs without generating bytes on the hot path.
#[derive(Clone)]
struct Values {
    pool: Bytes,
    size: usize,
}

impl Values {
    fn new(size: usize) -> Self {
        let len = (1 << 20) + size;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut pool = BytesMut::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            pool.put_u8(b'A' + (seed % 26) as u8);
        }
        Values {
            pool: pool.freeze(),
            size,
        }
    }

    fn get(&self, i: u64) -> Bytes {
        let span = (self.pool.len() - self.size + 1) as u64;
        let at = (i.wrapping_mul(7919) % span) as usize;
        self.pool.slice(at..at + self.size)
    }

    /// A value whose first 8 bytes are the current time in µs (when it is that long).
    fn stamped(&self, i: u64) -> Bytes {
        if self.size < 8 {
            return self.get(i);
        }
        let mut v = BytesMut::with_capacity(self.size);
        v.put_u64(micros_since_epoch());
        v.put_slice(&self.get(i)[8..]);
        v.freeze()
    }
}

// ---------------------------------------------------------------------------------------------
// Progress

/// Counters the workers bump and the progress bar reads.
#[derive(Default)]
struct Meter {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Meter {
    fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A live progress bar on stderr (or nothing).
struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(
        show: bool,
        label: &str,
        records: u64,
        duration: Option<Duration>,
        meter: Arc<Meter>,
    ) -> Self {
        if !show {
            return Progress {
                bar: None,
                ticker: None,
            };
        }
        let (len, template) = match duration {
            Some(d) => (
                d.as_millis() as u64,
                "{prefix} {elapsed}/{duration} {msg} [{wide_bar}]",
            ),
            None => (records, "{prefix} {pos}/{len} {msg} ETA {eta} [{wide_bar}]"),
        };
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            let start = Instant::now();
            // Rates over the last second: (time, records, bytes) every 200 ms.
            let mut window: std::collections::VecDeque<(Instant, u64, u64)> = Default::default();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let now = Instant::now();
                let r = meter.records.load(Ordering::Relaxed);
                let by = meter.bytes.load(Ordering::Relaxed);
                window.push_back((now, r, by));
                while window.len() > 6 {
                    window.pop_front();
                }
                let (t0, r0, b0) = window[0];
                let dt = now.duration_since(t0).as_secs_f64();
                if dt > 0.0 {
                    b.set_message(format!(
                        "{} rec/s, {:.1} MiB/s",
                        thousands((r - r0) as f64 / dt),
                        (by - b0) as f64 / (1024.0 * 1024.0) / dt
                    ));
                }
                match duration {
                    Some(_) => b.set_position(now.duration_since(start).as_millis() as u64),
                    None => b.set_position(r),
                }
            }
        });
        Progress {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Produce

/// What every producer task needs.
struct ProduceJob {
    topic: String,
    values: Values,
    /// Records for this producer, or `None` to run until `deadline`.
    records: Option<u64>,
    deadline: Option<Instant>,
    /// Put a µs timestamp in each value (e2e).
    stamp: bool,
    /// Most records sent but not yet seen acknowledged (bounds the collector's backlog).
    outstanding: usize,
    meter: Arc<Meter>,
    /// Set on the first failure, so every producer stops.
    failed: Arc<AtomicBool>,
    first_error: Arc<Mutex<Option<String>>>,
}

struct ProducerOutcome {
    acked: u64,
    bytes: u64,
    latency: Histogram<u64>,
}

impl Default for ProducerOutcome {
    fn default() -> Self {
        ProducerOutcome {
            acked: 0,
            bytes: 0,
            latency: histogram(),
        }
    }
}

/// A record handed to the producer: its delivery, when `send` was called, its value's size.
type Pending = (DeliveryFuture, Instant, u64);

/// Awaits acknowledgements in send order (they come back nearly in that order: one broker
/// answers for all partitions of a request), which costs far less per record than a
/// `FuturesUnordered`.
async fn collect(
    job: Arc<ProduceJob>,
    mut rx: tokio::sync::mpsc::Receiver<Pending>,
) -> ProducerOutcome {
    let mut out = ProducerOutcome::default();
    let mut incoming = Vec::with_capacity(1024);
    while rx.recv_many(&mut incoming, 1024).await > 0 {
        for (fut, at, len) in incoming.drain(..) {
            match fut.await {
                Ok(_) => {
                    out.acked += 1;
                    out.bytes += len;
                    let us = at.elapsed().as_micros() as u64;
                    out.latency.saturating_record(us.max(1));
                    job.meter.add(1, len);
                }
                Err(e) => job.fail(one_line("producing", e)),
            }
        }
    }
    out
}

impl ProduceJob {
    fn fail(&self, e: String) {
        self.failed.store(true, Ordering::Release);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }

    /// Sends records, while a collector task awaits the acknowledgements.
    async fn run(self: Arc<Self>, producer: Producer) -> ProducerOutcome {
        let (tx, rx) = tokio::sync::mpsc::channel::<Pending>(self.outstanding);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // Acknowledgements are awaited on a thread of their own: on a busy runtime (the send
        // loop, the producer's tasks, and a broker on the same cores) a collector task falls
        // behind, and every latency it records grows by its backlog.
        let job = self.clone();
        let spawned = std::thread::Builder::new()
            .name("strom-bench-acks".into())
            .spawn(move || {
                let out = match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(rt) => rt.block_on(collect(job, rx)),
                    Err(e) => {
                        job.fail(format!("starting the acknowledgement thread: {e}"));
                        ProducerOutcome::default()
                    }
                };
                let _ = done_tx.send(out);
            });
        if let Err(e) = spawned {
            self.fail(format!("starting the acknowledgement thread: {e}"));
            return ProducerOutcome::default();
        }
        let mut i = 0u64;
        loop {
            if self.failed.load(Ordering::Acquire) {
                break;
            }
            match (self.records, self.deadline) {
                (Some(n), _) if i >= n => break,
                (None, Some(d)) if Instant::now() >= d => break,
                _ => {}
            }
            let value = if self.stamp {
                self.values.stamped(i)
            } else {
                self.values.get(i)
            };
            let len = value.len() as u64;
            let at = Instant::now();
            match producer
                .send(ProducerRecord::new(self.topic.clone(), value))
                .await
            {
                Ok(fut) => {
                    if tx.send((fut, at, len)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    self.fail(one_line("producing", e));
                    break;
                }
            }
            i += 1;
        }
        drop(tx);
        if !self.failed.load(Ordering::Acquire) {
            if let Err(e) = producer.flush().await {
                self.fail(one_line("flushing the producer", e));
            }
        }
        let out = done_rx.await.unwrap_or_default();
        if self.failed.load(Ordering::Acquire) {
            drop(producer);
        } else if let Err(e) = producer.close().await {
            self.fail(one_line("closing the producer", e));
        }
        out
    }
}

/// Totals of a produce run.
struct Produced {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// Runs `args.producers` producers; `records` is the total (`None`: until `args.duration`).
async fn run_producers(
    args: &BenchArgs,
    records: Option<u64>,
    stamp: bool,
    meter: Arc<Meter>,
    on_start: impl FnOnce(Instant),
) -> Result<Produced, String> {
    let mut producers = Vec::with_capacity(args.producers);
    for _ in 0..args.producers {
        producers.push(
            Producer::new(args.producer_config())
                .await
                .map_err(|e| one_line(&format!("starting a producer for {}", args.brokers), e))?,
        );
    }
    let values = Values::new(args.record_size);
    let failed = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(Mutex::new(None));
    let start = Instant::now();
    on_start(start);
    let deadline = match records {
        Some(_) => None,
        None => args.duration().map(|d| start + d),
    };
    let n = args.producers as u64;
    // Twice what buffer.memory holds, so that the producer's own backpressure is what limits.
    let outstanding =
        (2 * args.producer_config().buffer_memory / (args.record_size + 64)).clamp(1024, 1 << 18);
    let mut tasks = Vec::with_capacity(args.producers);
    for (i, producer) in producers.into_iter().enumerate() {
        let job = Arc::new(ProduceJob {
            topic: args.topic.clone(),
            values: values.clone(),
            records: records.map(|r| r / n + u64::from((i as u64) < r % n)),
            deadline,
            stamp,
            outstanding,
            meter: meter.clone(),
            failed: failed.clone(),
            first_error: first_error.clone(),
        });
        tasks.push(tokio::spawn(job.run(producer)));
    }
    let mut total = Produced {
        records: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for t in tasks {
        let out = t
            .await
            .map_err(|e| format!("internal error (this is a bug): producer task: {e}"))?;
        total.records += out.acked;
        total.bytes += out.bytes;
        let _ = total.latency.add(&out.latency);
    }
    total.elapsed = start.elapsed();
    if let Some(e) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    Ok(total)
}

fn records_target(args: &BenchArgs) -> Option<u64> {
    match args.duration {
        Some(_) => None,
        None => Some(args.records),
    }
}

/// The produce benchmark with `args`, for commands that compare runs (`strom bench
/// replication`): returns the summary without printing it. `label` prefixes the progress bar.
pub async fn produce_run(args: &BenchArgs, label: &str) -> Result<BenchSummary, String> {
    args.check()?;
    produce(args, label).await
}

async fn produce(args: &BenchArgs, label: &str) -> Result<BenchSummary, String> {
    let admin = connect_admin(args).await?;
    ensure_topic(&admin, args).await?;
    let meter = Arc::new(Meter::default());
    let mut progress = None;
    let result = run_producers(args, records_target(args), false, meter.clone(), |_| {
        progress = Some(Progress::start(
            args.progress_wanted(),
            label,
            args.records,
            args.duration(),
            meter.clone(),
        ));
    })
    .await;
    if let Some(p) = progress {
        p.finish();
    }
    let p = result?;
    Ok(BenchSummary::new(
        "produce",
        p.records,
        p.bytes,
        p.elapsed,
        Some(&p.latency),
    ))
}

// ---------------------------------------------------------------------------------------------
// Consume

async fn offsets(
    admin: &Admin,
    topic: &str,
    spec: OffsetSpec,
) -> Result<BTreeMap<TopicPartition, i64>, String> {
    admin
        .list_offsets(&[topic.to_string()], spec)
        .await
        .map_err(|e| one_line(&format!("listing offsets of {topic}"), e))
}

/// How long a consumer may see nothing before the benchmark gives up.
const STALL: Duration = Duration::from_secs(30);

async fn consume(args: &BenchArgs) -> Result<BenchSummary, String> {
    let admin = connect_admin(args).await?;
    let parts = ensure_topic(&admin, args).await?;
    let earliest = offsets(&admin, &args.topic, OffsetSpec::Earliest).await?;
    let latest = offsets(&admin, &args.topic, OffsetSpec::Latest).await?;
    let available: u64 = latest
        .iter()
        .map(|(tp, end)| (end - earliest.get(tp).copied().unwrap_or(0)).max(0) as u64)
        .sum();
    if available < args.records {
        let missing = args.records - available;
        eprintln!(
            "topic {} holds {available} records, fewer than --records {}; producing {missing} first",
            args.topic, args.records
        );
        let meter = Arc::new(Meter::default());
        let mut progress = None;
        let mut fill = args.clone();
        fill.duration = None;
        let result = run_producers(&fill, Some(missing), false, meter.clone(), |_| {
            progress = Some(Progress::start(
                args.progress_wanted(),
                "fill",
                missing,
                None,
                meter.clone(),
            ));
        })
        .await;
        if let Some(p) = progress {
            p.finish();
        }
        let p = result?;
        eprintln!(
            "{}",
            BenchSummary::new("fill", p.records, p.bytes, p.elapsed, Some(&p.latency))
        );
    }
    let mut consumer = Consumer::new(args.consumer_config())
        .await
        .map_err(|e| one_line(&format!("starting a consumer for {}", args.brokers), e))?;
    consumer
        .assign(&parts)
        .map_err(|e| one_line("assigning partitions", e))?;
    let meter = Arc::new(Meter::default());
    let progress = Progress::start(
        args.progress_wanted(),
        "consume",
        args.records,
        args.duration(),
        meter.clone(),
    );
    let start = Instant::now();
    let deadline = args.duration().map(|d| start + d);
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut last_data = Instant::now();
    let result = loop {
        if records >= args.records || deadline.is_some_and(|d| Instant::now() >= d) {
            break Ok(());
        }
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(batch) if batch.is_empty() => {
                if last_data.elapsed() > STALL {
                    break Err(format!(
                        "consumer stalled: read {records} of {} records of {}, then nothing for {} s",
                        args.records,
                        args.topic,
                        STALL.as_secs()
                    ));
                }
            }
            Ok(batch) => {
                last_data = Instant::now();
                // Count exactly --records, though the last poll may return more.
                let take = batch.len().min((args.records - records) as usize);
                let n = take as u64;
                let b: u64 = batch[..take]
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                    .sum();
                records += n;
                bytes += b;
                meter.add(n, b);
            }
            Err(e) => break Err(one_line("consuming", e)),
        }
    };
    let elapsed = start.elapsed();
    progress.finish();
    result?;
    let _ = consumer.close().await;
    Ok(BenchSummary::new("consume", records, bytes, elapsed, None))
}

// ---------------------------------------------------------------------------------------------
// End to end

async fn e2e(args: &BenchArgs) -> Result<BenchSummary, String> {
    let admin = connect_admin(args).await?;
    let parts = ensure_topic(&admin, args).await?;
    let ends = offsets(&admin, &args.topic, OffsetSpec::Latest).await?;
    let mut consumer = Consumer::new(args.consumer_config())
        .await
        .map_err(|e| one_line(&format!("starting a consumer for {}", args.brokers), e))?;
    consumer
        .assign(&parts)
        .map_err(|e| one_line("assigning partitions", e))?;
    // Explicit positions: records produced before a Latest lookup would resolve must not be
    // skipped.
    for tp in &parts {
        let end = ends.get(tp).copied().unwrap_or(0);
        consumer
            .seek(tp, end)
            .map_err(|e| one_line(&format!("seeking {tp}"), e))?;
    }
    let meter = Arc::new(Meter::default());
    // How many records the consumer waits for; known up front unless --duration.
    let target = Arc::new(AtomicU64::new(records_target(args).unwrap_or(u64::MAX)));
    let stop = Arc::new(AtomicBool::new(false));
    let stamped = args.record_size >= 8;
    let consumer_task = {
        let (meter, target, stop) = (meter.clone(), target.clone(), stop.clone());
        let topic = args.topic.clone();
        tokio::spawn(async move {
            let mut hist = histogram();
            let (mut records, mut bytes) = (0u64, 0u64);
            let mut last_data = Instant::now();
            while records < target.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
                let batch = consumer
                    .poll(Duration::from_millis(100))
                    .await
                    .map_err(|e| one_line("consuming", e))?;
                if batch.is_empty() {
                    if last_data.elapsed() > STALL {
                        return Err(format!(
                            "consumer stalled: read {records} records of {topic}, then nothing for {} s",
                            STALL.as_secs()
                        ));
                    }
                    continue;
                }
                last_data = Instant::now();
                let now_us = micros_since_epoch();
                let mut b = 0u64;
                for r in &batch {
                    let v = r.value.as_deref().unwrap_or_default();
                    b += v.len() as u64;
                    let sent_us = match v.get(..8) {
                        Some(head) if stamped => {
                            u64::from_be_bytes(head.try_into().unwrap_or_default())
                        }
                        _ => (r.timestamp.max(0) as u64) * 1000,
                    };
                    hist.saturating_record(now_us.saturating_sub(sent_us).max(1));
                }
                records += batch.len() as u64;
                bytes += b;
                meter.add(batch.len() as u64, b);
            }
            let _ = consumer.close().await;
            Ok::<_, String>((records, bytes, Instant::now(), hist))
        })
    };
    let mut progress = None;
    let mut started = None;
    let produced = run_producers(
        args,
        records_target(args),
        stamped,
        Arc::new(Meter::default()),
        |at| {
            started = Some(at);
            progress = Some(Progress::start(
                args.progress_wanted(),
                "e2e",
                args.records,
                args.duration(),
                meter.clone(),
            ));
        },
    )
    .await;
    let produced = match produced {
        Ok(p) => p,
        Err(e) => {
            stop.store(true, Ordering::Release);
            if let Some(p) = progress {
                p.finish();
            }
            let _ = consumer_task.await;
            return Err(e);
        }
    };
    target.store(produced.records, Ordering::Release);
    let consumed = consumer_task
        .await
        .map_err(|e| format!("internal error (this is a bug): consumer task: {e}"));
    if let Some(p) = progress {
        p.finish();
    }
    let (records, bytes, end, hist) = consumed??;
    let start = started.unwrap_or(end);
    Ok(BenchSummary::new(
        "e2e",
        records,
        bytes,
        end.duration_since(start),
        Some(&hist),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ClientBench,
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["strom", "produce", "--brokers", "h:1"]).unwrap();
        let ClientBench::Produce(a) = cli.cmd else {
            panic!("expected produce")
        };
        assert_eq!(a.brokers, "h:1");
        assert_eq!(a.topic, "strom-bench");
        assert_eq!(a.records, 1_000_000);
        assert_eq!(a.record_size, 1024);
        assert_eq!(a.partitions, 6);
        assert_eq!(a.acks, Acks::All);
        assert_eq!(a.compression, Compression::None);
        assert!(a.producer_config().idempotence);

        let cli = Cli::try_parse_from([
            "strom",
            "e2e",
            "--acks",
            "1",
            "--compression",
            "zstd",
            "--duration",
            "2s",
            "--linger-ms",
            "0",
            "--batch-size",
            "65536",
            "--in-flight",
            "8",
            "--producers",
            "3",
            "--json",
        ])
        .unwrap();
        let ClientBench::E2e(a) = cli.cmd else {
            panic!("expected e2e")
        };
        assert_eq!(a.duration(), Some(Duration::from_secs(2)));
        let cfg = a.producer_config();
        assert_eq!(cfg.acks, Acks::Leader);
        assert!(!cfg.idempotence);
        assert_eq!(cfg.compression, Compression::Zstd);
        assert_eq!(cfg.batch_size, 65536);
        assert_eq!(cfg.max_in_flight, 8);
        assert_eq!(cfg.linger, Duration::ZERO);
        assert!(a.json);

        assert!(Cli::try_parse_from(["strom", "consume", "--acks", "2"]).is_err());
        assert!(Cli::try_parse_from(["strom", "consume", "--compression", "brotli"]).is_err());
    }

    #[test]
    fn summary_line_reads_like_the_docs() {
        let mut h = histogram();
        h.record(2100).unwrap();
        let s = BenchSummary::new(
            "produce",
            1_000_000,
            1_000_000 * 1024,
            Duration::from_secs_f64(3.21),
            Some(&h),
        );
        let line = s.to_string();
        assert!(line.starts_with("produce: 1000000 records in 3.21 s — 311,526 rec/s, 304.2 MiB/s; latency ms p50 2.1"), "{line}");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(0.0), "0");
    }

    #[test]
    fn values_differ_and_carry_the_send_time() {
        let v = Values::new(100);
        assert_eq!(v.get(0).len(), 100);
        assert_ne!(v.get(0), v.get(1));
        assert!(v.get(5).iter().all(u8::is_ascii_uppercase));
        let s = v.stamped(3);
        let t = u64::from_be_bytes(s[..8].try_into().unwrap());
        assert!(micros_since_epoch() >= t && micros_since_epoch() - t < 10_000_000);
        assert_eq!(Values::new(4).stamped(0).len(), 4);
    }
}
