//! `strom bench nexmark`: the Nexmark queries as continuous Strom SQL, against DataFusion
//! running the same queries as batch jobs over the same events.
//!
//! ```text
//! strom bench nexmark [--events N] [--queries q0,q1,..] [--batch-size B] [--batch-only]
//!
//!   1. generate N Nexmark events (strom_sql::nexmark) once, in memory, as JSON and as Arrow
//!   2. start an embedded broker in a scratch directory (removed afterwards) and produce the
//!      events into nexmark-person, nexmark-auction and nexmark-bid (one partition each, JSON
//!      values, record timestamp = date_time) (not timed)
//!   3. start a strom_sql::Engine and run sql/nexmark/ddl.sql
//!   4. for each query: CREATE STREAM qN_out WITH (topic='nexmark-qN-out', ..) AS <qN.sql>,
//!      timed from the statement until SHOW QUERIES' records_in reaches the number of records
//!      in the topics the query reads; then TERMINATE it. A query the engine rejects is
//!      reported as "not supported: <its message>".
//!   5. baselines, same events: DataFusion running sql/nexmark/batch/qN.sql over in-memory
//!      Arrow tables, and again decoding the JSON with arrow-json first (decoding timed)
//!   6. print input events/s of each, streaming / batch, and the output rows of both
//! ```
//!
//! Streaming rows are what the query wrote when its input was consumed: windows still open
//! at the end of the input (the watermark trails by 4 s) are not in them, and updating
//! aggregates write one row per change, so the counts differ from the batch ones by design.
//! For those (keyed outputs) the table also shows the distinct keys written: the rows of the
//! table the changelog ends as, which match the batch query's rows.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strom_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, NewTopic, OffsetSpec, Producer, ProducerConfig,
    TopicPartition,
};
use strom_sql::datafusion::arrow::json::ReaderBuilder;
use strom_sql::datafusion::arrow::record_batch::RecordBatch;
use strom_sql::datafusion::datasource::MemTable;
use strom_sql::datafusion::prelude::SessionContext;
use strom_sql::nexmark::{self, EventKind, NexmarkBatches, NexmarkConfig, NexmarkGenerator};
use strom_sql::{Engine, EngineConfig, QueryInfo, SqlError};
use strom_streams::Strom;

/// Options of `strom bench nexmark`.
#[derive(Debug, Clone, clap::Args)]
pub struct NexmarkBench {
    /// Events to generate (people, auctions and bids in the proportions 1:3:46).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Queries to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q0,q1,q2,q3,q4,q5,q6,q7,q8"
    )]
    pub queries: Vec<String>,
    /// Rows per Arrow record batch of the baselines (in memory and decoded from JSON).
    #[arg(long, default_value_t = 8192)]
    pub batch_size: usize,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Events per second of event time (10,000: a 10-second window holds 100,000 events).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Give up on a streaming query after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Run only the DataFusion baselines (no broker, no streaming engine).
    #[arg(long)]
    pub batch_only: bool,
    /// Directory for the scratch log [default: the system's temporary directory].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One Nexmark query: its continuous and batch forms and what it reads.
struct Query {
    name: &'static str,
    streaming: &'static str,
    batch: &'static str,
    reads: &'static [EventKind],
}

const DDL: &str = include_str!("../sql/nexmark/ddl.sql");

const QUERIES: [Query; 9] = [
    Query {
        name: "q0",
        streaming: include_str!("../sql/nexmark/q0.sql"),
        batch: include_str!("../sql/nexmark/batch/q0.sql"),
        reads: &[EventKind::Bid],
    },
    Query {
        name: "q1",
        streaming: include_str!("../sql/nexmark/q1.sql"),
        batch: include_str!("../sql/nexmark/batch/q1.sql"),
        reads: &[EventKind::Bid],
    },
    Query {
        name: "q2",
        streaming: include_str!("../sql/nexmark/q2.sql"),
        batch: include_str!("../sql/nexmark/batch/q2.sql"),
        reads: &[EventKind::Bid],
    },
    Query {
        name: "q3",
        streaming: include_str!("../sql/nexmark/q3.sql"),
        batch: include_str!("../sql/nexmark/batch/q3.sql"),
        reads: &[EventKind::Person, EventKind::Auction],
    },
    Query {
        name: "q4",
        streaming: include_str!("../sql/nexmark/q4.sql"),
        batch: include_str!("../sql/nexmark/batch/q4.sql"),
        reads: &[EventKind::Auction, EventKind::Bid],
    },
    Query {
        name: "q5",
        streaming: include_str!("../sql/nexmark/q5.sql"),
        batch: include_str!("../sql/nexmark/batch/q5.sql"),
        reads: &[EventKind::Bid],
    },
    Query {
        name: "q6",
        streaming: include_str!("../sql/nexmark/q6.sql"),
        batch: include_str!("../sql/nexmark/batch/q6.sql"),
        reads: &[EventKind::Auction, EventKind::Bid],
    },
    Query {
        name: "q7",
        streaming: include_str!("../sql/nexmark/q7.sql"),
        batch: include_str!("../sql/nexmark/batch/q7.sql"),
        reads: &[EventKind::Bid],
    },
    Query {
        name: "q8",
        streaming: include_str!("../sql/nexmark/q8.sql"),
        batch: include_str!("../sql/nexmark/batch/q8.sql"),
        reads: &[EventKind::Person, EventKind::Auction],
    },
];

const KINDS: [EventKind; 3] = [EventKind::Person, EventKind::Auction, EventKind::Bid];

fn topic(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Person => "nexmark-person",
        EventKind::Auction => "nexmark-auction",
        EventKind::Bid => "nexmark-bid",
    }
}

fn table(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Person => "person",
        EventKind::Auction => "auction",
        EventKind::Bid => "bid",
    }
}

fn slot(kind: EventKind) -> usize {
    match kind {
        EventKind::Person => 0,
        EventKind::Auction => 1,
        EventKind::Bid => 2,
    }
}

/// The events of one kind as JSON: newline-delimited in `bytes` (what arrow-json decodes),
/// each record's value a slice of it (what is produced).
#[derive(Default)]
struct JsonRecords {
    bytes: Bytes,
    /// Start and end of each record's JSON in `bytes`.
    spans: Vec<(usize, usize)>,
    timestamps: Vec<i64>,
    /// Person and auction ids (the record key); none for bids.
    keys: Vec<Option<i64>>,
}

/// The generated events, in both forms.
struct Data {
    arrow: NexmarkBatches,
    json: [JsonRecords; 3],
    event_time: Duration,
}

impl Data {
    fn count(&self, kind: EventKind) -> u64 {
        self.json[slot(kind)].spans.len() as u64
    }

    fn input_of(&self, q: &Query) -> u64 {
        q.reads.iter().map(|&k| self.count(k)).sum()
    }
}

fn bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} {pos}/{len} {per_sec} ETA {eta} [{wide_bar}]")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_string());
    bar
}

fn spinner(msg: String) -> ProgressBar {
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        spinner.set_style(style);
    }
    spinner.set_message(msg);
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// Generates the events, starting at `base_time_ms`.
fn generate(b: &NexmarkBench, base_time_ms: i64) -> anyhow::Result<Data> {
    let mut generator = NexmarkGenerator::with_config(NexmarkConfig {
        events_per_second: b.rate,
        base_time_ms,
        ..NexmarkConfig::new(b.seed)
    });
    let progress = bar(b.events, "generating");
    let mut arrow = NexmarkBatches::default();
    let mut json: [JsonRecords; 3] = Default::default();
    let mut buffers: [Vec<u8>; 3] = Default::default();
    // Chunks of 50 blocks of batch_size events fill whole batches of every kind.
    let chunk = 50 * b.batch_size.max(1) as u64;
    let mut events = Vec::with_capacity(chunk.min(b.events) as usize);
    let mut left = b.events;
    while left > 0 {
        let n = chunk.min(left);
        left -= n;
        events.clear();
        events.extend((&mut generator).take(n as usize));
        for e in &events {
            let (out, buf) = (&mut json[slot(e.kind())], &mut buffers[slot(e.kind())]);
            let start = buf.len();
            e.write_json(buf);
            out.spans.push((start, buf.len()));
            buf.push(b'\n');
            out.timestamps.push(e.date_time());
            out.keys.push(match e {
                nexmark::Event::Person(p) => Some(p.id),
                nexmark::Event::Auction(a) => Some(a.id),
                nexmark::Event::Bid(_) => None,
            });
        }
        let batches = nexmark::to_record_batches(&events, b.batch_size)?;
        arrow.person.extend(batches.person);
        arrow.auction.extend(batches.auction);
        arrow.bid.extend(batches.bid);
        progress.inc(n);
    }
    progress.finish_and_clear();
    for (out, buf) in json.iter_mut().zip(buffers) {
        out.bytes = Bytes::from(buf);
    }
    let event_time = Duration::from_millis(
        (generator.timestamp(b.events.saturating_sub(1)) - base_time_ms).max(0) as u64,
    );
    Ok(Data {
        arrow,
        json,
        event_time,
    })
}

/// Produces every event into its topic and checks that every one arrived.
async fn load(bootstrap: &str, data: &Data) -> anyhow::Result<()> {
    let admin = Admin::new(ClientConfig::new(bootstrap)).await?;
    // Event times may lie in the past: no time-based retention may delete them.
    let topics: Vec<NewTopic> = KINDS
        .iter()
        .map(|&k| NewTopic::new(topic(k), 1).config("retention.ms", "-1"))
        .collect();
    admin.create_topics(&topics).await?;

    let mut pc = ProducerConfig::new(bootstrap);
    pc.set("acks", "1")?.set("enable.idempotence", "false")?;
    pc.set("linger.ms", "20")?.set("batch.size", "1048576")?;
    pc.set("buffer.memory", "268435456")?;
    let producer = Producer::new(pc).await?;
    let total: u64 = KINDS.iter().map(|&k| data.count(k)).sum();
    let progress = bar(total, "producing");
    for kind in KINDS {
        let records = &data.json[slot(kind)];
        for (i, &(start, end)) in records.spans.iter().enumerate() {
            producer
                .send(strom_client::ProducerRecord {
                    topic: topic(kind).to_string(),
                    key: records.keys[i].map(|k| Bytes::from(k.to_string())),
                    value: Some(records.bytes.slice(start..end)),
                    timestamp: Some(records.timestamps[i]),
                    ..Default::default()
                })
                .await?;
            if i % 4096 == 0 {
                progress.inc(4096.min(records.spans.len() - i) as u64);
            }
        }
    }
    producer.flush().await?;
    producer.close().await?;
    progress.finish_and_clear();

    let names: Vec<String> = KINDS.iter().map(|&k| topic(k).to_string()).collect();
    let ends = admin.list_offsets(&names, OffsetSpec::Latest).await?;
    for kind in KINDS {
        let end: i64 = ends
            .iter()
            .filter(|(tp, _)| tp.topic == topic(kind))
            .map(|(_, &o)| o.max(0))
            .sum();
        if end as u64 != data.count(kind) {
            anyhow::bail!(
                "{} holds {end} records after producing {}",
                topic(kind),
                data.count(kind)
            );
        }
    }
    Ok(())
}

/// How a query fared on one side.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It ran: time taken and rows produced.
    Ran {
        /// From the statement to the last input record processed.
        elapsed: Duration,
        /// Rows of the result (streaming: written to the output topic).
        rows: u64,
        /// For an updating (keyed) output: its distinct keys, the rows of the table it ends
        /// as, comparable with the batch query's rows.
        keys: Option<u64>,
    },
    /// It did not run (rejected, failed, timed out, or not attempted); one line.
    Failed(String),
}

impl Outcome {
    fn rate(&self, events: u64) -> Option<f64> {
        match self {
            Outcome::Ran { elapsed, .. } => Some(events as f64 / elapsed.as_secs_f64().max(1e-9)),
            Outcome::Failed(_) => None,
        }
    }

    fn rows(&self) -> Option<u64> {
        match self {
            Outcome::Ran { rows, .. } => Some(*rows),
            Outcome::Failed(_) => None,
        }
    }

    fn keys(&self) -> Option<u64> {
        match self {
            Outcome::Ran { keys, .. } => *keys,
            Outcome::Failed(_) => None,
        }
    }
}

/// One query's figures.
#[derive(Debug, Clone)]
pub struct Row {
    /// `q0` ..
    pub query: &'static str,
    /// Records of the topics (tables) it reads.
    pub input_events: u64,
    /// The continuous query in Strom.
    pub streaming: Outcome,
    /// DataFusion over in-memory Arrow.
    pub batch_arrow: Outcome,
    /// DataFusion decoding the JSON first.
    pub batch_json: Outcome,
}

/// `not supported: <the engine's message>`, one line.
fn rejected(e: &SqlError) -> String {
    let msg = match e {
        SqlError::Unsupported(m) => m.clone(),
        other => other.to_string(),
    };
    let line = msg.lines().next().unwrap_or("").trim();
    format!("not supported: {line}")
}

/// The SELECT of a query file: comment lines and the trailing `;` removed.
fn select_of(sql: &str) -> String {
    let body: Vec<&str> = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    body.join("\n")
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_string()
}

/// Runs every query in Strom; one outcome per query, in order.
async fn streaming(
    b: &NexmarkBench,
    bootstrap: &str,
    queries: &[&Query],
    data: &Data,
) -> Vec<Outcome> {
    let limit = Duration::from_secs(b.timeout_secs.max(1));
    let engine =
        match tokio::time::timeout(limit, Engine::start(EngineConfig::new(bootstrap))).await {
            Ok(Ok(engine)) => engine,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("the engine did not start: {e}"),
                    _ => format!("the engine did not start within {limit:?}"),
                };
                return queries
                    .iter()
                    .map(|_| Outcome::Failed(why.clone()))
                    .collect();
            }
        };
    let mut out = Vec::new();
    match execute(&engine, DDL, limit).await {
        Err(e) => {
            let why = format!("ddl.sql: {e}");
            out = queries
                .iter()
                .map(|_| Outcome::Failed(why.clone()))
                .collect();
        }
        Ok(_) => {
            for q in queries {
                let outcome = run_streaming(b, &engine, bootstrap, q, data.input_of(q)).await;
                match &outcome {
                    Outcome::Ran { elapsed, rows, .. } => eprintln!(
                        "{} streaming: {} input records in {elapsed:.2?}, {rows} rows out",
                        q.name,
                        data.input_of(q)
                    ),
                    Outcome::Failed(why) => eprintln!("{} streaming: {why}", q.name),
                }
                out.push(outcome);
            }
        }
    }
    engine.shutdown().await;
    out
}

/// Runs `sql`, giving up after `limit`; errors as [`rejected`] gives them.
async fn execute(engine: &Engine, sql: &str, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, engine.execute(sql)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(rejected(&e)),
        Err(_) => Err(format!("the statement did not return within {limit:?}")),
    }
}

/// The query `CREATE STREAM .. AS` started: the new one writing `sink`, else any new one.
fn started_query(
    queries: Vec<QueryInfo>,
    before: &HashSet<String>,
    sink: &str,
) -> Option<QueryInfo> {
    let mut new: Vec<QueryInfo> = queries
        .into_iter()
        .filter(|q| !before.contains(&q.id))
        .collect();
    match new.iter().position(|q| q.sink.contains(sink)) {
        Some(i) => Some(new.swap_remove(i)),
        None => new.pop(),
    }
}

async fn run_streaming(
    b: &NexmarkBench,
    engine: &Arc<Engine>,
    bootstrap: &str,
    q: &Query,
    expect: u64,
) -> Outcome {
    const STALL: Duration = Duration::from_secs(60);
    let timeout = Duration::from_secs(b.timeout_secs.max(1));
    let sink = format!("nexmark-{}-out", q.name);
    let sql = format!(
        "CREATE STREAM {}_out WITH (topic='{sink}', format='json') AS {}",
        q.name,
        select_of(q.streaming)
    );
    let before: HashSet<String> = engine.queries().into_iter().map(|i| i.id).collect();
    let progress = bar(expect, &format!("{} streaming", q.name));
    let started = Instant::now();
    if let Err(e) = execute(engine, &sql, timeout).await {
        progress.finish_and_clear();
        return Outcome::Failed(e);
    }
    let mut id = None;
    let mut last = (0u64, Instant::now());
    let outcome = loop {
        let now = Instant::now();
        match started_query(engine.queries(), &before, &sink) {
            None if now - started > Duration::from_secs(10) => {
                break Outcome::Failed(
                    "the engine accepted the statement but lists no new query".into(),
                );
            }
            None => {}
            Some(info) => {
                id = Some(info.id.clone());
                progress.set_position(info.records_in.min(expect));
                if info.state.starts_with("FAILED") {
                    break Outcome::Failed(info.state);
                }
                if info.records_in >= expect {
                    // Done when the rows for all of the input are in the output topic.
                    let written = output_written(bootstrap, &sink, info.rows_out, timeout).await;
                    let elapsed = started.elapsed();
                    if let Err(e) = written {
                        break Outcome::Failed(e);
                    }
                    let rows = settled_rows_out(engine, &info.id, info.rows_out).await;
                    let keys = distinct_keys(bootstrap, &sink).await;
                    break Outcome::Ran {
                        elapsed,
                        rows,
                        keys,
                    };
                }
                if info.records_in != last.0 {
                    last = (info.records_in, now);
                } else if now - last.1 > STALL {
                    break Outcome::Failed(format!(
                        "stalled: {} of {expect} input records after {:.0?}, none for {STALL:?}",
                        info.records_in,
                        now - started
                    ));
                }
                if now - started > timeout {
                    break Outcome::Failed(format!(
                        "timed out: {} of {expect} input records after {timeout:?}",
                        info.records_in
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    progress.finish_and_clear();
    if let Some(id) = id {
        let terminate = format!("TERMINATE {id}");
        if let Err(e) = execute(engine, &terminate, Duration::from_secs(60)).await {
            eprintln!("{}: TERMINATE {id} failed: {e}", q.name);
        }
    }
    outcome
}

/// Waits until topic `sink` holds at least `rows` records.
async fn output_written(
    bootstrap: &str,
    sink: &str,
    rows: u64,
    timeout: Duration,
) -> Result<(), String> {
    let admin = Admin::new(ClientConfig::new(bootstrap))
        .await
        .map_err(|e| format!("admin: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let ends = admin
            .list_offsets(&[sink.to_string()], OffsetSpec::Latest)
            .await
            .map_err(|e| format!("offsets of {sink}: {e}"))?;
        let n: i64 = ends.values().sum();
        if n >= 0 && n as u64 >= rows {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{sink} has {n} of {rows} rows after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The rows of the table that topic `sink` ends as, if its records have keys (an upsert
/// changelog): its keys whose latest record has a value.
async fn distinct_keys(bootstrap: &str, sink: &str) -> Option<u64> {
    let admin = Admin::new(ClientConfig::new(bootstrap)).await.ok()?;
    let ends = admin
        .list_offsets(&[sink.to_string()], OffsetSpec::Latest)
        .await
        .ok()?;
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap)).await.ok()?;
    let tps: Vec<TopicPartition> = ends.keys().cloned().collect();
    c.assign(&tps).ok()?;
    c.seek_to_beginning(&tps).ok()?;
    // Each key's latest record says whether its row is there (a value) or deleted (none).
    let mut keys: HashMap<Bytes, bool> = HashMap::new();
    let mut keyless = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && ends
            .iter()
            .any(|(tp, end)| c.position(tp).unwrap_or(0) < *end)
    {
        for r in c.poll(Duration::from_millis(200)).await.ok()? {
            match r.key {
                Some(k) => {
                    keys.insert(k, r.value.is_some());
                }
                None => keyless = true,
            }
        }
    }
    let _ = c.close().await;
    let rows = keys.values().filter(|&&live| live).count() as u64;
    (!keyless && !keys.is_empty()).then_some(rows)
}

/// `rows_out` once it stops growing (output lags input a little), waiting at most 5 s.
async fn settled_rows_out(engine: &Engine, id: &str, mut rows: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stable_since = Instant::now();
    while Instant::now() < deadline && stable_since.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = engine
            .queries()
            .into_iter()
            .find(|q| q.id == id)
            .map_or(rows, |q| q.rows_out);
        if now != rows {
            rows = now;
            stable_since = Instant::now();
        }
    }
    rows
}

/// Registers `batches` as table `name`, spread over the context's target partitions.
fn register(ctx: &SessionContext, kind: EventKind, batches: &[RecordBatch]) -> anyhow::Result<()> {
    let partitions = ctx.copied_config().target_partitions().max(1);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (i, batch) in batches.iter().enumerate() {
        parts[i % partitions].push(batch.clone());
    }
    let mem = MemTable::try_new(nexmark::schema(kind), parts)?;
    ctx.register_table(table(kind), Arc::new(mem))?;
    Ok(())
}

async fn collect_rows(ctx: &SessionContext, sql: &str) -> anyhow::Result<u64> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(batches.iter().map(|b| b.num_rows() as u64).sum())
}

/// DataFusion over the events already in Arrow (registering the tables is not timed).
async fn batch_arrow(q: &Query, data: &Data) -> anyhow::Result<Outcome> {
    let ctx = SessionContext::new();
    for &kind in q.reads {
        register(&ctx, kind, data.arrow.of(kind))?;
    }
    let t = Instant::now();
    let rows = collect_rows(&ctx, q.batch).await?;
    Ok(Outcome::Ran {
        elapsed: t.elapsed(),
        rows,
        keys: None,
    })
}

/// DataFusion decoding the JSON first (decoding timed).
async fn batch_json(q: &Query, data: &Data, batch_size: usize) -> anyhow::Result<Outcome> {
    let ctx = SessionContext::new();
    let t = Instant::now();
    for &kind in q.reads {
        let reader = ReaderBuilder::new(nexmark::schema(kind))
            .with_batch_size(batch_size.max(1))
            .build(Cursor::new(&data.json[slot(kind)].bytes[..]))?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        register(&ctx, kind, &batches)?;
    }
    let rows = collect_rows(&ctx, q.batch).await?;
    Ok(Outcome::Ran {
        elapsed: t.elapsed(),
        rows,
        keys: None,
    })
}

async fn batch(q: &Query, data: &Data, batch_size: usize) -> (Outcome, Outcome) {
    let progress = spinner(format!("{} batch", q.name));
    let arrow = batch_arrow(q, data)
        .await
        .unwrap_or_else(|e| Outcome::Failed(format!("DataFusion (Arrow): {e}")));
    let json = batch_json(q, data, batch_size)
        .await
        .unwrap_or_else(|e| Outcome::Failed(format!("DataFusion (JSON): {e}")));
    progress.finish_and_clear();
    (arrow, json)
}

fn rate_cell(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), |r| format!("{r:.0}"))
}

fn ratio_cell(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
        _ => "-".to_string(),
    }
}

fn rows_cell(rows: Option<u64>) -> String {
    rows.map_or_else(|| "-".to_string(), |r| r.to_string())
}

/// Runs the benchmark and prints the table.
pub async fn run(b: NexmarkBench) -> anyhow::Result<Vec<Row>> {
    let mut queries = Vec::new();
    for name in &b.queries {
        let name = name.trim();
        match QUERIES.iter().find(|q| q.name.eq_ignore_ascii_case(name)) {
            Some(q) => queries.push(q),
            None => anyhow::bail!("unknown query {name:?}: the queries are q0 to q8"),
        }
    }
    if b.events == 0 {
        anyhow::bail!("--events must be at least 1");
    }

    // Event time starts at the current minute: recent enough for any retention, and a
    // multiple of every window size and slide, so windows hold the same events in every run.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let t = Instant::now();
    let data = generate(&b, now_ms - now_ms % 60_000)?;
    eprintln!(
        "generated {} events ({} people, {} auctions, {} bids; {:.0?} of event time) in {:.1?}",
        b.events,
        data.count(EventKind::Person),
        data.count(EventKind::Auction),
        data.count(EventKind::Bid),
        data.event_time,
        t.elapsed()
    );

    let streamed = if b.batch_only {
        queries
            .iter()
            .map(|_| Outcome::Failed("not run (--batch-only)".into()))
            .collect()
    } else {
        let base = b.dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("strom-bench-nexmark-")
            .tempdir_in(base)?;
        let strom = Strom::embedded(dir.path()).await?;
        let bootstrap = strom.bootstrap();
        let t = Instant::now();
        load(&bootstrap, &data).await?;
        eprintln!("produced {} records in {:.1?}", b.events, t.elapsed());
        let outcomes = streaming(&b, &bootstrap, &queries, &data).await;
        // Stopped before the scratch directory goes, so that nothing writes into it after.
        if let Err(e) = strom.shutdown().await {
            eprintln!("stopping the embedded broker: {e}");
        }
        outcomes
    };

    let mut rows = Vec::new();
    for (q, streaming) in queries.iter().zip(streamed) {
        let (batch_arrow, batch_json) = batch(q, &data, b.batch_size).await;
        let input = data.input_of(q);
        for (what, outcome) in [("Arrow", &batch_arrow), ("JSON", &batch_json)] {
            if let Outcome::Ran { elapsed, rows, .. } = outcome {
                eprintln!(
                    "{} batch ({what}): {input} input records in {elapsed:.2?}, {rows} rows",
                    q.name
                );
            }
        }
        rows.push(Row {
            query: q.name,
            input_events: input,
            streaming,
            batch_arrow,
            batch_json,
        });
    }

    println!(
        "events: {} (seed {}, {} events/s of event time: {:.0?})  batch size: {}",
        b.events, b.seed, b.rate, data.event_time, b.batch_size
    );
    println!(
        "| query | input events | streaming ev/s | batch ev/s (Arrow) | streaming / Arrow \
         | batch ev/s (JSON) | streaming / JSON | rows streaming | rows batch |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        let s = r.streaming.rate(r.input_events);
        let a = r.batch_arrow.rate(r.input_events);
        let j = r.batch_json.rate(r.input_events);
        let batch_rows = match (r.batch_arrow.rows(), r.batch_json.rows()) {
            (Some(a), Some(j)) if a != j => format!("{a} (JSON: {j})"),
            (a, j) => rows_cell(a.or(j)),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.query,
            r.input_events,
            rate_cell(s),
            rate_cell(a),
            ratio_cell(s, a),
            rate_cell(j),
            ratio_cell(s, j),
            match (r.streaming.rows(), r.streaming.keys()) {
                (Some(n), Some(k)) => format!("{n} ({k} keys)"),
                (n, _) => rows_cell(n),
            },
            batch_rows
        );
    }
    let mut failed = 0;
    for r in &rows {
        for (side, outcome) in [
            ("streaming", &r.streaming),
            ("batch (Arrow)", &r.batch_arrow),
            ("batch (JSON)", &r.batch_json),
        ] {
            match outcome {
                Outcome::Failed(_) if b.batch_only && side == "streaming" => {}
                Outcome::Failed(why) => {
                    println!("{} {side}: {why}", r.query);
                    failed += 1;
                }
                Outcome::Ran { .. } => {}
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of the runs above failed");
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_files_hold_one_select_each() {
        for q in &QUERIES {
            let select = select_of(q.streaming);
            assert!(select.starts_with("SELECT"), "{}: {select}", q.name);
            assert!(!select.contains(';'), "{}", q.name);
            assert!(
                q.streaming.starts_with("-- Nexmark"),
                "{} needs its header",
                q.name
            );
            let batch = select_of(q.batch);
            assert!(
                batch.starts_with("SELECT") || batch.starts_with("WITH"),
                "{}",
                q.name
            );
        }
        assert_eq!(DDL.matches("CREATE STREAM").count(), 3);
        assert_eq!(DDL.matches("CREATE TABLE").count(), 1);
    }

    #[test]
    fn rejection_is_one_line_not_supported() {
        let e = SqlError::Unsupported("OVER windows".into());
        assert_eq!(rejected(&e), "not supported: OVER windows");
        let e = SqlError::Statement("no such column: x\nmore".into());
        assert_eq!(rejected(&e), "not supported: no such column: x");
    }

    #[tokio::test]
    async fn batch_queries_run_and_agree_with_json() -> anyhow::Result<()> {
        let b = NexmarkBench {
            events: 60_000,
            queries: Vec::new(),
            batch_size: 1024,
            seed: 1,
            rate: 10_000,
            timeout_secs: 1,
            batch_only: true,
            dir: None,
        };
        let data = generate(&b, 1_767_225_600_000)?;
        assert_eq!(data.count(EventKind::Person), 1_200);
        assert_eq!(data.count(EventKind::Bid), 55_200);
        for q in &QUERIES {
            let (arrow, json) = batch(q, &data, b.batch_size).await;
            let (Some(a), Some(j)) = (arrow.rows(), json.rows()) else {
                anyhow::bail!("{}: {arrow:?} / {json:?}", q.name);
            };
            assert_eq!(a, j, "{}", q.name);
            if ["q0", "q1"].contains(&q.name) {
                assert_eq!(a, 55_200, "{}", q.name);
            }
            assert!(a > 0, "{} has no rows", q.name);
            // At most one row per auction: q3 joins it with its seller, q8 with its seller in
            // the same window (person ids are unique).
            let most = match q.name {
                "q3" | "q8" => data.count(EventKind::Auction),
                _ => u64::MAX,
            };
            assert!(a <= most, "{}: {a} rows", q.name);
        }
        Ok(())
    }
}
