//! `strom bench streams`: the Streams API end to end, embedded, against a hand-written loop.
//!
//! ```text
//! strom bench streams [--records N] [--keys K] [--partitions P]
//!
//!   1. start an embedded broker in a scratch directory (removed afterwards)
//!   2. generate N records (i64 key in 0..K, i64 value, timestamps 10 per ms) once, in memory
//!   3. (a) windowed count:  baseline = one loop over the in-memory records counting
//!          (key, 1-minute window) in a HashMap;
//!          streams  = the records loaded into a topic (not timed), then
//!          stream -> group_by_key -> tumbling 1 min -> count (final results) -> topic,
//!          timed from Streams::start until every record is processed and committed
//!      (b) stream-stream join: the same records split into a left and a right stream (a
//!          right record 5 ms after each left one); baseline = one loop with a HashMap of
//!          per-key buffers probing the other side within ±50 ms; streams = join within
//!          JoinWindows ±50 ms -> topic, timed the same way
//!   4. print records/s of each and streams / baseline
//! ```
//!
//! Log reads and writes are inside the streams timing (input fetched from the log, results,
//! repartition-free here, and changelogs written to it); loading the input is not.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use strom_client::{Admin, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
use strom_streams::{
    Embedded, Emit, JoinWindows, Serde, Streams, StreamsBuilder, StreamsConfig, Strom, TimeWindows,
};

/// Options of `strom bench streams`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamsBench {
    /// Records per workload.
    #[arg(long, default_value_t = 10_000_000)]
    pub records: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Partitions of the input topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Which workloads: count, join or both.
    #[arg(long, default_value = "both", value_parser = ["count", "join", "both"])]
    pub workload: String,
    /// Directory for the scratch log [default: the system's temporary directory].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const BASE_TS: i64 = 1_700_000_000_000;
const WINDOW_MS: i64 = 60_000;
const JOIN_MS: i64 = 50;

/// One workload's figures.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload name.
    pub name: &'static str,
    /// Baseline records/s.
    pub baseline: f64,
    /// Streams records/s.
    pub streams: f64,
    /// Output records the streams run wrote.
    pub outputs: u64,
}

fn gen(n: u64, keys: u64) -> Vec<(i64, i64, i64)> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (
                (x % keys) as i64,
                (x >> 32) as i64 % 1000,
                BASE_TS + (i / 10) as i64,
            )
        })
        .collect()
}

fn baseline_count(recs: &[(i64, i64, i64)]) -> (Duration, u64) {
    let t = Instant::now();
    let mut counts: HashMap<(i64, i64), i64> = HashMap::new();
    for &(k, _, ts) in recs {
        *counts.entry((k, ts - ts % WINDOW_MS)).or_default() += 1;
    }
    let results = counts.len() as u64;
    std::hint::black_box(&counts);
    (t.elapsed(), results)
}

fn baseline_join(recs: &[(i64, i64, i64)]) -> (Duration, u64) {
    let t = Instant::now();
    let mut left: HashMap<i64, VecDeque<(i64, i64)>> = HashMap::new();
    let mut right: HashMap<i64, VecDeque<(i64, i64)>> = HashMap::new();
    let mut out: u64 = 0;
    for (i, &(k, v, ts)) in recs.iter().enumerate() {
        let (mine, other, ts) = if i % 2 == 0 {
            (&mut left, &mut right, ts)
        } else {
            (&mut right, &mut left, ts + 5)
        };
        if let Some(buf) = other.get_mut(&k) {
            while buf.front().is_some_and(|(t, _)| *t < ts - 2 * JOIN_MS) {
                buf.pop_front();
            }
            for (t, ov) in buf.iter() {
                if (t - ts).abs() <= JOIN_MS {
                    out += 1;
                    std::hint::black_box(v + ov);
                }
            }
        }
        mine.entry(k).or_default().push_back((ts, v));
    }
    (t.elapsed(), out)
}

async fn load(
    bootstrap: &str,
    topic: &str,
    recs: impl Iterator<Item = (i64, i64, i64)>,
) -> anyhow::Result<()> {
    let mut pc = ProducerConfig::new(bootstrap);
    pc.set("acks", "1")?.set("enable.idempotence", "false")?;
    pc.set("linger.ms", "20")?.set("batch.size", "1048576")?;
    pc.set("buffer.memory", "268435456")?;
    let p = Producer::new(pc).await?;
    for (k, v, ts) in recs {
        p.send(ProducerRecord {
            topic: topic.to_string(),
            key: k.to_bytes(),
            value: v.to_bytes(),
            timestamp: Some(ts),
            ..Default::default()
        })
        .await?;
    }
    p.flush().await?;
    p.close().await?;
    Ok(())
}

async fn run_app(
    builder: StreamsBuilder,
    app: &str,
    strom: &Embedded,
    expect: u64,
) -> anyhow::Result<Duration> {
    let config =
        StreamsConfig::new(app, &strom.bootstrap()).commit_interval(Duration::from_millis(500));
    let started = Instant::now();
    let mut streams = Streams::start_embedded(builder.build()?, config, strom).await?;
    streams.wait_until_running(Duration::from_secs(60)).await?;
    // Timed from here: the group has assigned the tasks (setting up internal topics and
    // joining the group, reported below, are a one-off cost, not throughput).
    let t = Instant::now();
    let before = streams.metrics().tasks.processed;
    eprintln!("{app}: running after {:.0?}", started.elapsed());
    loop {
        let m = streams.metrics();
        if m.tasks.processed >= expect {
            break;
        }
        if let strom_streams::State::Failed(e) = streams.state() {
            anyhow::bail!("streams failed: {e}");
        }
        if t.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!(
                "streams processed {} of {expect} records in 30 minutes",
                m.tasks.processed
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let m = streams.metrics();
    // Closing commits: every output and changelog record acknowledged, offsets committed.
    streams.close().await?;
    let took = t.elapsed();
    if m.tasks.late_dropped > 0 || m.tasks.skipped > 0 {
        eprintln!(
            "{app}: {} records dropped as late, {} skipped",
            m.tasks.late_dropped, m.tasks.skipped
        );
    }
    // Records processed before the clock started are not counted.
    Ok(took.mul_f64(expect as f64 / (expect - before.min(expect - 1)) as f64))
}

async fn output_count(admin: &Admin, topic: &str) -> anyhow::Result<u64> {
    let ends = admin
        .list_offsets(&[topic.to_string()], strom_client::OffsetSpec::Latest)
        .await?;
    Ok(ends.values().map(|&o| o.max(0) as u64).sum())
}

/// The topology of workload (a).
fn count_topology() -> StreamsBuilder {
    let builder = StreamsBuilder::new();
    builder
        .stream::<i64, i64>("bench-events")
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(
            Duration::from_millis(WINDOW_MS as u64),
            Duration::ZERO,
        ))
        .emit(Emit::OnWindowClose)
        .count()
        .to_stream()
        .to("bench-counts");
    builder
}

/// The topology of workload (b).
fn join_topology() -> StreamsBuilder {
    let builder = StreamsBuilder::new();
    let right = builder.stream::<i64, i64>("bench-right");
    builder
        .stream::<i64, i64>("bench-left")
        .join(
            &right,
            |a, b| a + b,
            JoinWindows::new(Duration::from_millis(JOIN_MS as u64), Duration::ZERO),
        )
        .to("bench-joined");
    builder
}

/// Records/s of the topology alone: encoded records piped through the test driver (no log,
/// no client), for telling processing cost from transport cost.
fn processing_only(
    builder: StreamsBuilder,
    recs: &[(i64, i64, i64)],
    topics: [&str; 2],
) -> anyhow::Result<f64> {
    // At most 2M records: the driver needs each record as owned bytes.
    let recs = &recs[..recs.len().min(2_000_000)];
    let encoded: Vec<(bytes::Bytes, bytes::Bytes, i64)> = recs
        .iter()
        .map(|(k, v, ts)| {
            (
                bytes::Bytes::copy_from_slice(&k.to_be_bytes()),
                bytes::Bytes::copy_from_slice(&v.to_be_bytes()),
                *ts,
            )
        })
        .collect();
    let mut driver = strom_streams::TopologyTestDriver::new(builder.build()?)?;
    let t = Instant::now();
    for (i, (k, v, ts)) in encoded.into_iter().enumerate() {
        let (topic, ts) = if topics[0] == topics[1] || i % 2 == 0 {
            (topics[0], ts)
        } else {
            (topics[1], ts + 5)
        };
        driver.pipe_raw(topic, Some(k), Some(v), ts);
        if i % 4096 == 0 {
            driver.output_topics().iter().for_each(|_| ());
        }
    }
    let took = t.elapsed();
    std::hint::black_box(driver.drain_changelogs().len());
    Ok(recs.len() as f64 / took.as_secs_f64())
}

/// Runs both workloads and prints the table.
pub async fn run(b: StreamsBench) -> anyhow::Result<Vec<Row>> {
    let base = b.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("strom-bench-streams-")
        .tempdir_in(base)?;
    let strom = Strom::embedded(dir.path()).await?;
    let bootstrap = strom.bootstrap();
    let admin = Admin::new(ClientConfig::new(&bootstrap)).await?;
    let recs = gen(b.records, b.keys);
    let mut rows = Vec::new();

    if b.workload != "join" {
        // (a) windowed count.
        let (bt, windows) = baseline_count(&recs);
        admin
            .create_topics(&[
                NewTopic::new("bench-events", b.partitions),
                NewTopic::new("bench-counts", b.partitions),
            ])
            .await?;
        let t = Instant::now();
        load(&bootstrap, "bench-events", recs.iter().copied()).await?;
        eprintln!("loaded {} records in {:.1?}", recs.len(), t.elapsed());
        let only = processing_only(count_topology(), &recs, ["bench-events", "bench-events"])?;
        eprintln!("windowed count, topology alone (test driver, no log): {only:.0} rec/s");
        let st = run_app(count_topology(), "bench-count", &strom, b.records).await?;
        let outputs = output_count(&admin, "bench-counts").await?;
        rows.push(Row {
            name: "windowed count",
            baseline: b.records as f64 / bt.as_secs_f64(),
            streams: b.records as f64 / st.as_secs_f64(),
            outputs,
        });
        eprintln!("windowed count: baseline {windows} windows in {bt:.2?}; streams {st:.2?}, {outputs} final windows written (the still-open last minute is not final)");
    }
    if b.workload != "count" {
        // (b) stream-stream join.
        let (bt, joined) = baseline_join(&recs);
        admin
            .create_topics(&[
                NewTopic::new("bench-left", b.partitions),
                NewTopic::new("bench-right", b.partitions),
                NewTopic::new("bench-joined", b.partitions),
            ])
            .await?;
        let t = Instant::now();
        load(&bootstrap, "bench-left", recs.iter().step_by(2).copied()).await?;
        load(
            &bootstrap,
            "bench-right",
            recs.iter()
                .skip(1)
                .step_by(2)
                .map(|&(k, v, ts)| (k, v, ts + 5)),
        )
        .await?;
        eprintln!("loaded {} records in {:.1?}", recs.len(), t.elapsed());
        let only = processing_only(join_topology(), &recs, ["bench-left", "bench-right"])?;
        eprintln!("join, topology alone (test driver, no log): {only:.0} rec/s");
        let st = run_app(join_topology(), "bench-join", &strom, b.records).await?;
        let outputs = output_count(&admin, "bench-joined").await?;
        rows.push(Row {
            name: "stream-stream join",
            baseline: b.records as f64 / bt.as_secs_f64(),
            streams: b.records as f64 / st.as_secs_f64(),
            outputs,
        });
        eprintln!(
            "join: baseline {joined} pairs in {bt:.2?}; streams {st:.2?}, {outputs} pairs written"
        );
    }
    drop(strom);

    println!(
        "records: {}  keys: {}  partitions: {}",
        b.records, b.keys, b.partitions
    );
    println!("| workload | baseline rec/s | streams rec/s | streams / baseline | outputs |");
    println!("| --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {} |",
            r.name,
            r.baseline,
            r.streams,
            r.streams / r.baseline,
            r.outputs
        );
    }
    Ok(rows)
}
