//! `cargo bench --bench client`: strom-client's producer and consumer beside librdkafka (the
//! `rdkafka` crate) against the same `strom server`, in the same run, with the same settings.
//!
//! A `strom server` child process (the binary cargo built for this bench, in the same profile)
//! listens on a free loopback port with a temporary data directory. For each codec (none, lz4),
//! every producer writes `STROM_BENCH_RECORDS` values of 1 KiB (random capital letters) to its
//! own 6-partition topic with acks=all, idempotence on, linger.ms=5, batch.size=64 KiB and
//! max.in.flight=5; buffering limits are each client's default. Then every consumer reads one
//! of those topics from the beginning (all partitions assigned, no group). Each measurement is
//! repeated `STROM_BENCH_ROUNDS` times (default 3) with the clients' order rotated; the median
//! round is reported, with each ratio strom/rdkafka (above 1.0: strom-client is faster).
//!
//! Timing starts once a client is connected (one warm-up record acknowledged, for producers)
//! and stops when the last record is acknowledged or consumed. Delivery futures are awaited by a
//! separate task, in order, for strom-client and rdkafka's `FutureProducer` alike.
//!
//! Consumer rates are given twice: from `assign` to the last record (what a job reading the
//! topic sees), and from the first record delivered to the last (`consume*`, start-up excluded).
//! librdkafka 2.12 (the bundled one) delivers its first record ~500 ms after `assign`: it opens
//! a second connection for the partition leader (it no longer reuses the bootstrap connection)
//! and sends its ListOffsets only ~450 ms after that connection is up, apparently a retry timer
//! for "leader not yet available" (seen in the broker's request log; Debian's librdkafka 2.0,
//! which reuses the bootstrap connection, starts fetching at once). Its idempotent producer
//! shows the same delay before InitProducerId; the warm-up record keeps that out of the producer
//! timings.
//!
//! ```text
//! STROM_BENCH_RECORDS=20000 STROM_BENCH_ROUNDS=1 cargo bench --bench client   # a smoke run
//! STROM_BENCH_BROKERS=host:9092 cargo bench --bench client   # against a running cluster
//! ```
#![allow(clippy::unwrap_used)] // a benchmark: any failure is fatal and should say where

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer as _, ProducerContext,
    ThreadedProducer,
};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use strom::client::admin::{Admin, NewTopic, OffsetSpec};
use strom::client::{
    Compression, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};

const RECORD_SIZE: usize = 1024;
const PARTITIONS: i32 = 6;
const LINGER_MS: u64 = 5;
const BATCH_SIZE: usize = 64 * 1024;
const IN_FLIGHT: usize = 5;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// `strom server` as a child process; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let bin = env!("CARGO_BIN_EXE_strom");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(bin)
            .args(["server", "--listen", &addr.to_string(), "--data-dir"])
            .env("STROM_SQL_LISTEN", "off")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "strom server did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("strom server {bin} on {addr}");
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Values: 1 KiB slices of a pool of random capital letters, all different.
#[derive(Clone)]
struct Values(Bytes);

impl Values {
    fn new() -> Self {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut pool = BytesMut::with_capacity((1 << 20) + RECORD_SIZE);
        for _ in 0..pool.capacity() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            pool.put_u8(b'A' + (seed % 26) as u8);
        }
        Values(pool.freeze())
    }

    fn get(&self, i: u64) -> Bytes {
        let span = (self.0.len() - RECORD_SIZE + 1) as u64;
        let at = (i.wrapping_mul(7919) % span) as usize;
        self.0.slice(at..at + RECORD_SIZE)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Strom,
    RdFuture,
    RdThreaded,
    RdBase,
    RdStream,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Strom => "strom-client",
            Client::RdFuture => "rdkafka FutureProducer",
            Client::RdThreaded => "rdkafka ThreadedProducer",
            Client::RdBase => "rdkafka BaseConsumer",
            Client::RdStream => "rdkafka StreamConsumer",
        }
    }
}

fn codec_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

fn rd_config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn rd_producer_config(bootstrap: &str, codec: Compression) -> rdkafka::ClientConfig {
    let mut c = rd_config(bootstrap);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", codec_name(codec))
        .set("linger.ms", LINGER_MS.to_string())
        .set("batch.size", BATCH_SIZE.to_string())
        .set(
            "max.in.flight.requests.per.connection",
            IN_FLIGHT.to_string(),
        );
    c
}

fn strom_producer_config(bootstrap: &str, codec: Compression) -> ProducerConfig {
    let mut c = ProducerConfig::new(bootstrap)
        .acks(strom::client::Acks::All)
        .idempotence(true)
        .compression(codec)
        .linger(Duration::from_millis(LINGER_MS))
        .batch_size(BATCH_SIZE);
    c.max_in_flight = IN_FLIGHT;
    c
}

/// Produces `n` records with `client` to `topic`; returns the time from the first send to the
/// last acknowledgement.
async fn produce(
    client: Client,
    bootstrap: &str,
    topic: &str,
    codec: Compression,
    values: &Values,
    n: u64,
) -> Duration {
    match client {
        Client::Strom => {
            let p = Producer::new(strom_producer_config(bootstrap, codec))
                .await
                .unwrap();
            p.send(ProducerRecord::new(topic, values.get(u64::MAX)))
                .await
                .unwrap()
                .await
                .unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let acks = tokio::spawn(async move {
                let mut ok = 0u64;
                while let Some(f) = rx.recv().await {
                    let f: strom::client::DeliveryFuture = f;
                    f.await.unwrap();
                    ok += 1;
                }
                ok
            });
            let start = Instant::now();
            for i in 0..n {
                let f = p
                    .send(ProducerRecord::new(topic, values.get(i)))
                    .await
                    .unwrap();
                tx.send(f).unwrap();
            }
            drop(tx);
            assert_eq!(acks.await.unwrap(), n);
            let elapsed = start.elapsed();
            p.close().await.unwrap();
            elapsed
        }
        Client::RdFuture => {
            let p: FutureProducer = rd_producer_config(bootstrap, codec).create().unwrap();
            let warm = values.get(u64::MAX);
            let rec = FutureRecord::<(), [u8]>::to(topic).payload(&warm[..]);
            p.send(rec, Timeout::Never).await.unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let acks = tokio::spawn(async move {
                let mut ok = 0u64;
                while let Some(f) = rx.recv().await {
                    let f: rdkafka::producer::future_producer::DeliveryFuture = f;
                    f.await.unwrap().unwrap();
                    ok += 1;
                }
                ok
            });
            let start = Instant::now();
            for i in 0..n {
                let v = values.get(i);
                let mut rec = FutureRecord::<(), [u8]>::to(topic).payload(&v[..]);
                loop {
                    match p.send_result(rec) {
                        Ok(f) => {
                            tx.send(f).unwrap();
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            rec = r;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err((e, _)) => panic!("rdkafka send: {e}"),
                    }
                }
            }
            drop(tx);
            assert_eq!(acks.await.unwrap(), n);
            let elapsed = start.elapsed();
            p.flush(Timeout::Never).unwrap();
            elapsed
        }
        Client::RdThreaded => {
            let config = rd_producer_config(bootstrap, codec);
            let topic = topic.to_string();
            let values = values.clone();
            tokio::task::spawn_blocking(move || threaded_produce(&config, &topic, &values, n))
                .await
                .unwrap()
        }
        _ => unreachable!("not a producer"),
    }
}

/// Counts delivery reports on librdkafka's polling thread.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone, Default)]
struct CountingContext(Arc<Deliveries>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn threaded_produce(
    config: &rdkafka::ClientConfig,
    topic: &str,
    values: &Values,
    n: u64,
) -> Duration {
    let ctx = CountingContext::default();
    let p: ThreadedProducer<CountingContext> = config.create_with_context(ctx.clone()).unwrap();
    let send = |v: &[u8]| {
        let mut rec = BaseRecord::<(), [u8]>::to(topic).payload(v);
        loop {
            match p.send(rec) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("rdkafka send: {e}"),
            }
        }
    };
    send(&values.get(u64::MAX));
    p.flush(Timeout::Never).unwrap();
    let start = Instant::now();
    for i in 0..n {
        send(&values.get(i));
    }
    p.flush(Timeout::Never).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        ctx.0.failed.load(Ordering::Relaxed),
        0,
        "rdkafka deliveries failed"
    );
    assert_eq!(ctx.0.ok.load(Ordering::Relaxed), n + 1);
    elapsed
}

fn from_beginning(topic: &str) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    tpl
}

fn rd_consumer_config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rd_config(bootstrap);
    // A group id only because librdkafka wants one; nothing is committed.
    c.set("group.id", "strom-bench-unused")
        .set("enable.auto.commit", "false");
    c
}

/// Timings of one consumer run.
#[derive(Debug, Clone, Copy)]
struct Consumed {
    /// From `assign` to the last record.
    total: Duration,
    /// From `assign` to the first record(s) handed to the application.
    first: Duration,
    /// How many records came with the first.
    first_n: u64,
}

impl Consumed {
    /// Records/s over the whole run, start-up (offset lookups, first fetch) included.
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.total.as_secs_f64()
    }

    /// Records/s once records flow: after the first delivery, to the last.
    fn steady_rate(&self, n: u64) -> f64 {
        (n - self.first_n) as f64 / (self.total - self.first).as_secs_f64().max(1e-9)
    }
}

/// Counts records and value bytes, and when the first ones arrived.
struct Tally {
    start: Instant,
    n: u64,
    got: u64,
    bytes: u64,
    first: Option<(Duration, u64)>,
}

impl Tally {
    fn new(n: u64) -> Self {
        Tally {
            start: Instant::now(),
            n,
            got: 0,
            bytes: 0,
            first: None,
        }
    }

    fn add(&mut self, records: u64, bytes: u64, who: &str) {
        if records > 0 && self.first.is_none() {
            self.first = Some((self.start.elapsed(), records));
        }
        self.got += records;
        self.bytes += bytes;
        assert!(
            self.start.elapsed() < Duration::from_secs(60),
            "{who} consumed only {} of {} in 60 s",
            self.got,
            self.n
        );
    }

    fn done(&self) -> bool {
        self.got >= self.n
    }

    fn finish(self) -> Consumed {
        let total = self.start.elapsed();
        assert_eq!(self.got, self.n);
        assert_eq!(self.bytes, self.n * RECORD_SIZE as u64);
        let (first, first_n) = self.first.unwrap_or((total, self.n));
        Consumed {
            total,
            first,
            first_n,
        }
    }
}

/// Reads `n` records of `topic` from the beginning (timing starts at `assign`).
async fn consume(client: Client, bootstrap: &str, topic: &str, n: u64) -> Consumed {
    match client {
        Client::Strom => {
            let mut c =
                Consumer::new(ConsumerConfig::new(bootstrap).offset_reset(OffsetReset::Earliest))
                    .await
                    .unwrap();
            let parts: Vec<TopicPartition> = (0..PARTITIONS)
                .map(|p| TopicPartition::new(topic, p))
                .collect();
            let mut tally = Tally::new(n);
            c.assign(&parts).unwrap();
            while !tally.done() {
                let batch = c.poll(Duration::from_millis(100)).await.unwrap();
                let bytes = batch
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                    .sum();
                tally.add(batch.len() as u64, bytes, client.name());
            }
            tally.finish()
        }
        Client::RdStream => {
            let c: StreamConsumer = rd_consumer_config(bootstrap).create().unwrap();
            let mut tally = Tally::new(n);
            c.assign(&from_beginning(topic)).unwrap();
            while !tally.done() {
                let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
                    .await
                    .expect("rdkafka StreamConsumer stalled")
                    .unwrap();
                tally.add(1, m.payload().map_or(0, |v| v.len() as u64), client.name());
            }
            tally.finish()
        }
        Client::RdBase => {
            let config = rd_consumer_config(bootstrap);
            let topic = topic.to_string();
            tokio::task::spawn_blocking(move || {
                let c: BaseConsumer = config.create().unwrap();
                let mut tally = Tally::new(n);
                c.assign(&from_beginning(&topic)).unwrap();
                while !tally.done() {
                    match c.poll(Duration::from_millis(100)) {
                        Some(m) => {
                            let m = m.unwrap();
                            tally.add(1, m.payload().map_or(0, |v| v.len() as u64), client.name());
                        }
                        None => tally.add(0, 0, client.name()),
                    }
                }
                tally.finish()
            })
            .await
            .unwrap()
        }
        _ => unreachable!("not a consumer"),
    }
}

async fn create_topic(admin: &Admin, topic: &str) {
    admin
        .create_topics(&[NewTopic::new(topic, PARTITIONS)])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(t) = admin.describe_topic(topic).await {
            if t.partitions.len() == PARTITIONS as usize
                && t.partitions.iter().all(|p| p.leader >= 0)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} has no leaders");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// One line of the report: records/s per round of strom-client and of an rdkafka client.
struct Row {
    codec: Compression,
    what: &'static str,
    other: Client,
    strom: Vec<f64>,
    rdkafka: Vec<f64>,
}

async fn bench(records: u64, rounds: usize) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    // STROM_BENCH_BROKERS: measure against a running cluster (any Kafka) instead.
    let (server, bootstrap) = match std::env::var("STROM_BENCH_BROKERS") {
        Ok(b) if !b.is_empty() => (None, b),
        _ => {
            let s = Server::start(dir.path());
            let b = s.addr.to_string();
            (Some(s), b)
        }
    };
    let admin = Admin::connect(&bootstrap).await.unwrap();
    let values = Values::new();
    let mut rows = Vec::new();
    for codec in [Compression::None, Compression::Lz4] {
        let producers = [Client::Strom, Client::RdFuture, Client::RdThreaded];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); producers.len()];
        // A topic written by strom-client, kept for the consumers.
        let mut kept: Option<String> = None;
        for round in 0..rounds {
            for k in 0..producers.len() {
                let idx = (k + round) % producers.len();
                let client = producers[idx];
                let topic = format!("bench-{}-{idx}-{round}", codec_name(codec));
                create_topic(&admin, &topic).await;
                let t = produce(client, &bootstrap, &topic, codec, &values, records).await;
                let rate = records as f64 / t.as_secs_f64();
                eprintln!(
                    "  {:<5} round {round} produce {:<26} {:>10.0} rec/s",
                    codec_name(codec),
                    client.name(),
                    rate
                );
                rates[idx].push(rate);
                if client == Client::Strom && kept.is_none() {
                    kept = Some(topic);
                } else {
                    admin.delete_topics(&[topic]).await.unwrap();
                }
            }
        }
        for (i, other) in [(1, Client::RdFuture), (2, Client::RdThreaded)] {
            rows.push(Row {
                codec,
                what: "produce",
                other,
                strom: rates[0].clone(),
                rdkafka: rates[i].clone(),
            });
        }

        let topic = kept.unwrap();
        let ends = admin
            .list_offsets(std::slice::from_ref(&topic), OffsetSpec::Latest)
            .await
            .unwrap();
        eprintln!(
            "  {:<5} records per partition of {topic}: {:?}",
            codec_name(codec),
            ends.values().collect::<Vec<_>>()
        );
        // The warm-up record is in the topic too.
        let n = records + 1;
        let consumers = [Client::Strom, Client::RdBase, Client::RdStream];
        let mut whole: Vec<Vec<f64>> = vec![Vec::new(); consumers.len()];
        let mut steady: Vec<Vec<f64>> = vec![Vec::new(); consumers.len()];
        for round in 0..rounds {
            for k in 0..consumers.len() {
                let idx = (k + round) % consumers.len();
                let client = consumers[idx];
                let c = consume(client, &bootstrap, &topic, n).await;
                eprintln!(
                    "  {:<5} round {round} consume {:<26} {:>10.0} rec/s; first {} record(s) after {:.1} ms, then {:.0} rec/s",
                    codec_name(codec),
                    client.name(),
                    c.rate(n),
                    c.first_n,
                    c.first.as_secs_f64() * 1000.0,
                    c.steady_rate(n)
                );
                whole[idx].push(c.rate(n));
                steady[idx].push(c.steady_rate(n));
            }
        }
        for (i, other) in [(1, Client::RdBase), (2, Client::RdStream)] {
            rows.push(Row {
                codec,
                what: "consume",
                other,
                strom: whole[0].clone(),
                rdkafka: whole[i].clone(),
            });
            rows.push(Row {
                codec,
                what: "consume*",
                other,
                strom: steady[0].clone(),
                rdkafka: steady[i].clone(),
            });
        }
        admin.delete_topics(&[topic]).await.unwrap();
    }
    drop(server);
    rows
}

fn main() {
    let records = env_u64("STROM_BENCH_RECORDS", 500_000).max(1);
    let rounds = env_u64("STROM_BENCH_ROUNDS", 3).max(1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!(
        "client bench: {records} records of {RECORD_SIZE} B, {PARTITIONS} partitions, acks=all, idempotence, \
         linger.ms={LINGER_MS}, batch.size={BATCH_SIZE}, max.in.flight={IN_FLIGHT}; {rounds} round(s), median reported"
    );
    let rows = rt.block_on(bench(records, rounds));
    let mib = RECORD_SIZE as f64 / (1024.0 * 1024.0);
    println!(
        "{:<6} {:<8} {:<26} {:>13} {:>10} {:>13} {:>10} {:>7}",
        "codec", "", "rdkafka client", "strom rec/s", "MiB/s", "rdkafka rec/s", "MiB/s", "ratio"
    );
    for r in rows {
        let (s, k) = (median(r.strom), median(r.rdkafka));
        println!(
            "{:<6} {:<8} {:<26} {:>13.0} {:>10.1} {:>13.0} {:>10.1} {:>6.2}x",
            codec_name(r.codec),
            r.what,
            r.other.name(),
            s,
            s * mib,
            k,
            k * mib,
            s / k
        );
    }
    println!(
        "consume: from assign to the last record; consume*: from the first record delivered to the \
         last (start-up excluded)"
    );
}
