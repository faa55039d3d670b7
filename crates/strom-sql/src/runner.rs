//! Running a continuous query: consume, decode, process, write, commit.
//!
//! The loop polls the query's stream topics as a member of the consumer group
//! `_strom_sql_<id>`, turns each poll into one micro-batch per input, runs the [`Pipeline`],
//! and writes its rows. Every commit interval it makes the work durable in this order: output
//! rows and late rows acknowledged, the aggregation's changed groups written to the query's
//! compacted state topic `_strom_sql_<id>_state`, then input offsets committed. A restarted
//! query reads its state topic back and resumes from the committed offsets, so no window loses
//! rows and none is emitted twice unless the server died between two commits
//! (at-least-once).
//!
//! Tables joined by the query are read from their beginning by a second consumer, before the
//! first micro-batch and then between batches, and kept as the latest row per key.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parking_lot::Mutex;
use strom_client::{
    Admin, BatchDelivery, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, OffsetSpec,
    Producer, ProducerRecord, TopicPartition,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::catalog::SourceDef;
use crate::continuous::Pipeline;
use crate::format::{self, Decoder, Format, Rec};
use crate::sink::{ParquetSink, ParquetSpec};
use crate::watermark::Watermarks;
use crate::window::WINDOW_END;
use crate::{Result, SqlError};

/// Counters of a running query.
#[derive(Debug, Default)]
pub struct Stats {
    /// Input records processed.
    pub records_in: AtomicU64,
    /// Rows written.
    pub rows_out: AtomicU64,
    /// Late rows.
    pub late: AtomicU64,
    /// Records that could not be decoded.
    pub bad: AtomicU64,
    failed: Mutex<Option<String>>,
}

impl Stats {
    /// `RUNNING` or `FAILED: why`.
    pub fn state(&self) -> String {
        match &*self.failed.lock() {
            Some(e) => format!("FAILED: {e}"),
            None => "RUNNING".into(),
        }
    }
}

/// What a query runs with.
pub struct QueryCtx {
    /// Its id.
    pub id: String,
    /// The cluster.
    pub bootstrap: String,
    /// Admin client.
    pub admin: Arc<Admin>,
    /// Shared producer.
    pub producer: Arc<Producer>,
    /// Commit interval.
    pub commit_interval: Duration,
    /// Persistent (group, commits, state) or a push query (from the end, nothing kept).
    pub persistent: bool,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Where late rows go.
    pub late_topic: Option<String>,
}

/// Where rows go.
pub enum SinkSpec {
    /// A stream's (or table's) topic.
    Topic(Arc<SourceDef>),
    /// Parquet files.
    Parquet(ParquetSpec),
    /// A client's push query.
    Channel(tokio::sync::mpsc::Sender<Result<RecordBatch>>),
}

/// The consumer group of query `id`.
pub fn group_of(id: &str) -> String {
    format!("_strom_sql_{id}")
}

/// The compacted topic holding query `id`'s state.
pub(crate) fn state_topic(id: &str) -> String {
    format!("_strom_sql_{id}_state")
}

/// Output columns that form the record key: the `GROUP BY` columns (other than the window's)
/// that the output keeps under their names.
pub fn key_columns(p: &Pipeline) -> Vec<usize> {
    let names = p.group_names();
    p.schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            names.iter().any(|n| n == f.name())
                && f.name() != WINDOW_END
                && f.name() != crate::window::WINDOW_START
        })
        .map(|(i, _)| i)
        .collect()
}

/// Runs the query until `stop` says so or it fails (the failure is kept in its stats).
pub async fn run(ctx: QueryCtx, pipeline: Pipeline, sink: SinkSpec, stop: watch::Receiver<bool>) {
    let stats = ctx.stats.clone();
    let id = ctx.id.clone();
    if let Err(e) = run_inner(ctx, pipeline, sink, stop).await {
        tracing::warn!(query = %id, error = %e, "continuous query failed");
        *stats.failed.lock() = Some(e.to_string());
    }
}

struct TableInput {
    idx: usize,
    consumer: Consumer,
    decoder: Decoder,
    key_col: usize,
    batches: Vec<RecordBatch>,
    latest: HashMap<String, (usize, usize)>,
    changed: bool,
    /// Records read while catching up at start.
    read: u64,
}

impl TableInput {
    fn apply(&mut self, recs: &[ConsumerRecord]) -> Result<()> {
        for r in recs {
            match &r.value {
                None => {
                    if let Some(k) = &r.key {
                        self.changed |= self
                            .latest
                            .remove(String::from_utf8_lossy(k).as_ref())
                            .is_some();
                    }
                }
                Some(v) => {
                    let (b, _) = self.decoder.decode(&[Rec {
                        value: v,
                        partition: r.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                    }])?;
                    if b.num_rows() == 1 {
                        // Keyed by the record key, as compaction is; else by the key column.
                        let key = match &r.key {
                            Some(k) => String::from_utf8_lossy(k).into_owned(),
                            None => arrow::util::display::ArrayFormatter::try_new(
                                b.column(self.key_col).as_ref(),
                                &Default::default(),
                            )?
                            .value(0)
                            .to_string(),
                        };
                        self.batches.push(b);
                        self.latest.insert(key, (self.batches.len() - 1, 0));
                        self.changed = true;
                    }
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        if !self.changed {
            return Ok(None);
        }
        self.changed = false;
        let schema = self.decoder.full_schema().clone();
        if self.latest.is_empty() {
            self.batches.clear();
            return Ok(Some(Vec::new()));
        }
        let mut live: Vec<(usize, usize, String)> =
            self.latest.drain().map(|(k, (b, r))| (b, r, k)).collect();
        live.sort_unstable();
        let idx: Vec<(usize, usize)> = live.iter().map(|(b, r, _)| (*b, *r)).collect();
        let cols: Vec<ArrayRef> = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                arrow::compute::interleave(&arrays, &idx)
            })
            .collect::<Result<_, _>>()?;
        let snap = RecordBatch::try_new(schema, cols)?;
        // Keep only the live rows from now on.
        self.batches = vec![snap.clone()];
        self.latest = live
            .into_iter()
            .enumerate()
            .map(|(i, (_, _, k))| (k, (0, i)))
            .collect();
        Ok(Some(vec![snap]))
    }
}

async fn open_table(
    bootstrap: &str,
    admin: &Admin,
    idx: usize,
    def: &SourceDef,
) -> Result<TableInput> {
    let schema = def.schema()?;
    let decoder = Decoder::new(def.format()?, schema)?;
    let key = def
        .key
        .clone()
        .ok_or_else(|| SqlError::Internal("table without key".into()))?;
    let key_col = decoder.full_schema().index_of(&key)?;
    let mut consumer = Consumer::new(ConsumerConfig::new(bootstrap)).await?;
    let ends = admin
        .list_offsets(std::slice::from_ref(&def.topic), OffsetSpec::Latest)
        .await?;
    let tps: Vec<TopicPartition> = ends.keys().cloned().collect();
    consumer.assign(&tps)?;
    consumer.seek_to_beginning(&tps)?;
    let mut t = TableInput {
        idx,
        consumer,
        decoder,
        key_col,
        batches: Vec::new(),
        latest: HashMap::new(),
        changed: true,
        read: 0,
    };
    // Read what the table holds now before the first stream record is joined.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up = ends
            .iter()
            .all(|(tp, &end)| t.consumer.position(tp).unwrap_or(0) >= end);
        if caught_up || Instant::now() > deadline {
            break;
        }
        let recs = t.consumer.poll(Duration::from_millis(100)).await?;
        t.read += recs.len() as u64;
        t.apply(&recs)?;
    }
    Ok(t)
}

enum Sink {
    Topic {
        def: Arc<SourceDef>,
        format: Format,
        schema: SchemaRef,
        key_cols: Vec<usize>,
        pending: Vec<BatchDelivery>,
    },
    Parquet(Box<ParquetSink>),
    Channel(tokio::sync::mpsc::Sender<Result<RecordBatch>>),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Per-row record timestamps: `window_end - 1` for window results, else the row's own time
/// column if it kept one, else `fallback`.
fn row_times(batch: &RecordBatch, time_cols: &[String], fallback: i64) -> Vec<i64> {
    let schema = batch.schema();
    if schema.index_of(WINDOW_END).is_ok() {
        if let Ok(t) = crate::window::times(batch, WINDOW_END) {
            return t.iter().map(|v| v.map_or(fallback, |v| v - 1)).collect();
        }
    }
    for c in time_cols {
        if schema
            .field_with_name(c)
            .is_ok_and(|f| matches!(f.data_type(), arrow::datatypes::DataType::Timestamp(..)))
        {
            if let Ok(t) = crate::window::times(batch, c) {
                return t.iter().map(|v| v.unwrap_or(fallback)).collect();
            }
        }
    }
    vec![fallback; batch.num_rows()]
}

/// Splits the identity columns that trail `batch`'s rows (named `names`) off as record keys.
fn split_key_tail(
    batch: RecordBatch,
    names: &[String],
) -> Result<(RecordBatch, Option<Vec<Option<Bytes>>>)> {
    if names.is_empty() {
        return Ok((batch, None));
    }
    let width = batch.num_columns();
    let visible = width.saturating_sub(names.len());
    let tail = batch.project(&(visible..width).collect::<Vec<_>>())?;
    // Keys read as the aggregate's group columns, not as the hidden copies.
    let fields: Vec<arrow::datatypes::Field> = tail
        .schema()
        .fields()
        .iter()
        .zip(names)
        .map(|(f, n)| f.as_ref().clone().with_name(n))
        .collect();
    let tail = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        tail.columns().to_vec(),
    )?;
    let keys = row_keys(&tail, &(0..names.len()).collect::<Vec<_>>())?;
    Ok((
        batch.project(&(0..visible).collect::<Vec<_>>())?,
        Some(keys),
    ))
}

/// Record keys: one column's text, or a JSON object of several.
fn row_keys(batch: &RecordBatch, cols: &[usize]) -> Result<Vec<Option<Bytes>>> {
    match cols {
        [] => Ok(vec![None; batch.num_rows()]),
        [c] => {
            let fmt = arrow::util::display::ArrayFormatter::try_new(
                batch.column(*c).as_ref(),
                &Default::default(),
            )?;
            Ok((0..batch.num_rows())
                .map(|i| Some(Bytes::from(fmt.value(i).to_string())))
                .collect())
        }
        many => {
            let proj = batch.project(many)?;
            Ok(format::encode(Format::Json, &proj)?
                .into_iter()
                .map(Some)
                .collect())
        }
    }
}

impl Sink {
    async fn write(
        &mut self,
        producer: &Producer,
        batch: RecordBatch,
        keys: Option<Vec<Option<Bytes>>>,
        time_cols: &[String],
        now: i64,
    ) -> Result<()> {
        match self {
            Sink::Topic {
                def,
                format,
                schema,
                key_cols,
                pending,
            } => {
                // Columns by position, cast to the stream's declared types.
                let cols: Vec<ArrayRef> = batch
                    .columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(c, f)| {
                        if c.data_type() == f.data_type() {
                            Ok(c.clone())
                        } else {
                            arrow::compute::cast(c, f.data_type())
                        }
                    })
                    .collect::<Result<_, _>>()?;
                let batch = RecordBatch::try_new(schema.clone(), cols)?;
                let values = format::encode(*format, &batch)?;
                let keys = match keys {
                    Some(k) => k,
                    None => row_keys(&batch, key_cols)?,
                };
                let times = row_times(&batch, time_cols, now);
                let records = values.into_iter().zip(keys).zip(times).map(|((v, k), t)| {
                    let mut r = ProducerRecord::new(def.topic.clone(), v).timestamp(t);
                    r.key = k;
                    r
                });
                pending.push(producer.send_batch(records).await?);
                // Settle old batches now and then, so that a failure surfaces before the
                // next checkpoint.
                if pending.len() > 64 {
                    for f in pending.drain(..pending.len() - 16) {
                        f.wait().await?;
                    }
                }
                Ok(())
            }
            Sink::Parquet(p) => p.write(&batch),
            Sink::Channel(tx) => tx
                .send(Ok(batch))
                .await
                .map_err(|_| SqlError::Statement("the client went away".into())),
        }
    }

    /// Deletes the rows of `keys` from a topic's table (tombstones). Files and clients only
    /// ever get rows.
    async fn delete(&mut self, producer: &Producer, keys: Vec<Bytes>, now: i64) -> Result<()> {
        let Sink::Topic { def, pending, .. } = self else {
            return Ok(());
        };
        if keys.is_empty() {
            return Ok(());
        }
        let records = keys.into_iter().map(|k| {
            let mut r = ProducerRecord::new(def.topic.clone(), Bytes::new()).timestamp(now);
            r.key = Some(k);
            r.value = None;
            r
        });
        pending.push(producer.send_batch(records).await?);
        Ok(())
    }

    /// Makes everything written so far durable; `false` if the sink cannot yet (an open file).
    async fn checkpoint(&mut self, closing: bool) -> Result<bool> {
        match self {
            Sink::Topic { pending, .. } => {
                for f in pending.drain(..) {
                    f.wait().await?;
                }
                Ok(true)
            }
            Sink::Parquet(p) => p.checkpoint(closing),
            Sink::Channel(_) => Ok(true),
        }
    }
}

/// What the query loop asks of its sink task.
enum SinkMsg {
    /// Write rows, with their keys if they do not come from their columns (`now` stands in
    /// for a missing row time).
    Write(RecordBatch, Option<Vec<Option<Bytes>>>, i64),
    /// Delete the rows of these keys (tombstones; a topic's only).
    Delete(Vec<Bytes>, i64),
    /// Make everything written so far durable; answers whether it could.
    Checkpoint(bool, oneshot::Sender<Result<bool>>),
}

/// The sink, run on its own task: encoding and sending one micro-batch's rows overlaps reading
/// and processing the next. A failed write fails the next request.
struct SinkTask {
    tx: mpsc::Sender<SinkMsg>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl SinkTask {
    fn start(mut sink: Sink, producer: Arc<Producer>, time_cols: Vec<String>) -> SinkTask {
        // A few batches in flight: enough to overlap, few enough to push back on the reader.
        let (tx, mut rx) = mpsc::channel::<SinkMsg>(4);
        let task = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    SinkMsg::Write(b, keys, now) => {
                        sink.write(&producer, b, keys, &time_cols, now).await?
                    }
                    SinkMsg::Delete(keys, now) => sink.delete(&producer, keys, now).await?,
                    SinkMsg::Checkpoint(closing, reply) => {
                        let r = sink.checkpoint(closing).await;
                        let failed = r.is_err();
                        let _ = reply.send(r);
                        if failed {
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        SinkTask { tx, task }
    }

    /// The sink task's own error, once it has stopped.
    async fn failure(&mut self) -> SqlError {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => SqlError::Internal("the sink stopped".into()),
            Err(e) => SqlError::Internal(format!("the sink task failed: {e}")),
        }
    }

    async fn write(
        &mut self,
        b: RecordBatch,
        keys: Option<Vec<Option<Bytes>>>,
        now: i64,
    ) -> std::result::Result<(), ()> {
        self.tx
            .send(SinkMsg::Write(b, keys, now))
            .await
            .map_err(|_| ())
    }

    async fn delete(&mut self, keys: Vec<Bytes>, now: i64) -> std::result::Result<(), ()> {
        self.tx
            .send(SinkMsg::Delete(keys, now))
            .await
            .map_err(|_| ())
    }

    async fn checkpoint(&mut self, closing: bool) -> std::result::Result<Result<bool>, ()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(SinkMsg::Checkpoint(closing, tx))
            .await
            .map_err(|_| ())?;
        rx.await.map_err(|_| ())
    }
}

async fn run_inner(
    ctx: QueryCtx,
    mut p: Pipeline,
    sink: SinkSpec,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // Decoders per stream input; table inputs get their own consumers.
    let mut decoders: Vec<Option<Decoder>> = Vec::new();
    let mut tables = Vec::new();
    let mut topics: Vec<String> = Vec::new();
    for (i, input) in p.inputs.iter().enumerate() {
        if input.slot.binding.table {
            let t = open_table(&ctx.bootstrap, &ctx.admin, i, &input.def).await?;
            ctx.stats.records_in.fetch_add(t.read, Ordering::Relaxed);
            tables.push(t);
            decoders.push(None);
        } else {
            let schema = input.def.schema()?;
            let mut decoder = Decoder::new(input.def.format()?, schema.clone())?;
            if let Some(used) = &input.used {
                // The event time is read for the watermark and windows whether used or not.
                let mut used = used.clone();
                let times = [
                    Some(input.def.time_column()),
                    input
                        .slot
                        .binding
                        .window
                        .as_ref()
                        .map(|w| w.time_col.as_str()),
                ];
                used.extend(
                    times
                        .into_iter()
                        .flatten()
                        .filter_map(|c| schema.index_of(c).ok()),
                );
                decoder = decoder.only(&used)?;
            }
            decoders.push(Some(decoder));
            if !topics.contains(&input.def.topic) {
                topics.push(input.def.topic.clone());
            }
        }
    }
    let time_cols: Vec<String> = p
        .inputs
        .iter()
        .map(|i| match &i.slot.binding.window {
            Some(w) => w.time_col.clone(),
            None => i.def.time_column().to_string(),
        })
        .collect();
    let sink = match sink {
        SinkSpec::Topic(def) => Sink::Topic {
            format: def.format()?,
            schema: def.schema()?,
            // An updating output is keyed by all of its group columns (a table's primary key
            // names the first of them); anything else by its declared key, if any.
            key_cols: match (&def.key, key_columns(&p)) {
                (_, all) if p.updating() && !all.is_empty() => all,
                (Some(k), _) => def
                    .schema()?
                    .index_of(k)
                    .map(|i| vec![i])
                    .unwrap_or_default(),
                (None, all) => all,
            },
            def,
            pending: Vec::new(),
        },
        SinkSpec::Parquet(spec) => Sink::Parquet(Box::new(ParquetSink::new(spec, &ctx.id))),
        SinkSpec::Channel(tx) => Sink::Channel(tx),
    };
    // A push query stops when its client goes away.
    let client = match &sink {
        Sink::Channel(tx) => Some(tx.clone()),
        _ => None,
    };
    let mut sink = SinkTask::start(sink, ctx.producer.clone(), time_cols.clone());
    let mut config = ConsumerConfig::new(&ctx.bootstrap).auto_commit(false);
    // Micro-batches of a few thousand records amortise each run of the plan.
    config.max_poll_records = 5000;
    if ctx.persistent {
        config = config
            .group_id(group_of(&ctx.id))
            .offset_reset(OffsetReset::Earliest);
    }
    let mut consumer = Consumer::new(config).await?;
    if ctx.persistent {
        consumer.subscribe(&topics)?;
    } else {
        let mut tps = Vec::new();
        for t in &topics {
            for part in ctx.admin.describe_topic(t).await?.partitions.iter() {
                tps.push(TopicPartition::new(t.clone(), part.partition));
            }
        }
        consumer.assign(&tps)?;
        consumer.seek_to_end(&tps)?;
    }
    // Event time per input partition, from the restored watermark on.
    let delays: Vec<Option<i64>> = p
        .inputs
        .iter()
        .map(|i| (!i.slot.binding.table).then_some(i.def.watermark_delay_ms))
        .collect();
    let persist_state =
        ctx.persistent && (p.agg.is_some() || p.stream_over.is_some() || !p.retaining().is_empty());
    let mut wm = Watermarks::new(delays.clone(), i64::MIN);
    if persist_state {
        let (w, replay) = restore(&ctx, &mut p).await?;
        wm = Watermarks::new(delays, w);
        if !replay.is_empty() {
            rebuild_buffers(&ctx, &mut p, &consumer, &decoders, &mut wm, replay).await?;
            p.evict_retained(w)?;
        }
        p.rebuild_windows().await?;
    }
    let mut positions: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut dirty = false;
    loop {
        let recs = tokio::select! {
            _ = stop.changed() => break,
            r = consumer.poll(Duration::from_millis(100)) => r?,
        };
        if client.as_ref().is_some_and(|tx| tx.is_closed()) {
            break;
        }
        for t in tables.iter_mut() {
            let more = t.consumer.poll(Duration::from_millis(0)).await?;
            ctx.stats
                .records_in
                .fetch_add(more.len() as u64, Ordering::Relaxed);
            t.apply(&more)?;
        }
        let mut fresh: Vec<Option<Vec<RecordBatch>>> = vec![None; p.inputs.len()];
        for t in tables.iter_mut() {
            fresh[t.idx] = t.snapshot()?;
        }
        if !recs.is_empty() {
            dirty = true;
            ctx.stats
                .records_in
                .fetch_add(recs.len() as u64, Ordering::Relaxed);
            // Records come in runs per partition: one entry per run.
            for (i, r) in recs.iter().enumerate() {
                let last_of_run = recs
                    .get(i + 1)
                    .is_none_or(|n| n.partition != r.partition || n.topic != r.topic);
                if last_of_run {
                    positions.insert(
                        TopicPartition::new(r.topic.clone(), r.partition),
                        r.offset + 1,
                    );
                }
            }
        }
        let before = wm.current();
        for (i, input) in p.inputs.iter().enumerate() {
            let Some(dec) = &decoders[i] else { continue };
            let Some((b, bad)) = decode_input(input, i, dec, &recs, &mut wm, |_| true)? else {
                continue;
            };
            ctx.stats.bad.fetch_add(bad, Ordering::Relaxed);
            fresh[i] = Some(vec![b]);
        }
        let after = wm.advance(&behind(&consumer, &p));
        if fresh.iter().any(Option::is_some) || after > before {
            let out = p.process(fresh, before, after).await?;
            let now = now_ms();
            for b in out {
                ctx.stats
                    .rows_out
                    .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                let (b, keys) = split_key_tail(b, &p.key_tail)?;
                if sink.write(b, keys, now).await.is_err() {
                    return Err(sink.failure().await);
                }
            }
            for d in std::mem::take(&mut p.deletes) {
                let keys = row_keys(&d, &(0..d.num_columns()).collect::<Vec<_>>())?;
                let keys: Vec<Bytes> = keys.into_iter().flatten().collect();
                if sink.delete(keys, now).await.is_err() {
                    return Err(sink.failure().await);
                }
            }
            if p.late > 0 {
                ctx.stats.late.fetch_add(p.late, Ordering::Relaxed);
                p.late = 0;
                let late = std::mem::take(&mut p.late_rows);
                if let Some(topic) = &ctx.late_topic {
                    for b in late {
                        for v in format::encode(Format::Json, &b)? {
                            ctx.producer
                                .send(ProducerRecord::new(topic.clone(), v))
                                .await?;
                        }
                    }
                }
            }
        }
        if ctx.persistent && dirty && last_commit.elapsed() >= ctx.commit_interval {
            let w = wm.current();
            if commit(&ctx, &mut p, &mut sink, &mut consumer, &positions, w, false).await? {
                dirty = false;
                last_commit = Instant::now();
            }
        }
    }
    if ctx.persistent {
        let w = wm.current();
        commit(&ctx, &mut p, &mut sink, &mut consumer, &positions, w, true).await?;
    }
    let _ = consumer.close().await;
    Ok(())
}

/// Output, then state, then offsets. Returns whether the offsets were committed.
async fn commit(
    ctx: &QueryCtx,
    p: &mut Pipeline,
    sink: &mut SinkTask,
    consumer: &mut Consumer,
    positions: &BTreeMap<TopicPartition, i64>,
    watermark: i64,
    closing: bool,
) -> Result<bool> {
    let ready = match sink.checkpoint(closing).await {
        Ok(r) => r?,
        Err(()) => return Err(sink.failure().await),
    };
    if !ready {
        return Ok(false);
    }
    let retaining = !p.retaining().is_empty();
    if p.agg.is_some() || p.stream_over.is_some() || retaining {
        let topic = state_topic(&ctx.id);
        let mut acks = Vec::new();
        if let Some(so) = p.stream_over.as_mut() {
            for (key, value) in so.checkpoint()? {
                let mut r = ProducerRecord::new(topic.clone(), Vec::new()).key(key);
                r.value = value.map(Into::into);
                acks.push(ctx.producer.send(r).await?);
            }
        }
        let states = p.agg.as_mut().map(|a| a.states_mut()).unwrap_or_default();
        for (i, state) in states.into_iter().enumerate() {
            let changed: Vec<_> = state.changed.drain().collect();
            for k in changed {
                // Keys are the stage's number, then its group key; the empty key holds the
                // watermark.
                let mut key = vec![i as u8];
                key.extend(crate::agg::AggState::encode_key(&k));
                let mut r = ProducerRecord::new(topic.clone(), Vec::new()).key(key);
                r.value = state.encode_state(&k)?.map(Into::into);
                acks.push(ctx.producer.send(r).await?);
            }
        }
        if retaining {
            // Where to read again from to rebuild the join buffers after a restart.
            let from: Vec<(String, i32, i64)> = p
                .retained_from()?
                .into_iter()
                .map(|((t, part), o)| (t, part, o))
                .collect();
            let v = serde_json::to_vec(&from).map_err(|e| SqlError::Internal(e.to_string()))?;
            acks.push(
                ctx.producer
                    .send(ProducerRecord::new(topic.clone(), v).key(REPLAY_KEY.to_vec()))
                    .await?,
            );
        }
        acks.push(
            ctx.producer
                .send(ProducerRecord::new(topic, watermark.to_be_bytes().to_vec()).key(Vec::new()))
                .await?,
        );
        for a in acks {
            a.await?;
        }
    }
    if !positions.is_empty() {
        consumer.commit_offsets(positions).await?;
    }
    Ok(true)
}

/// Where rows are read again from to rebuild join buffers: (topic, partition) → offset.
type Replay = BTreeMap<(String, i32), i64>;

/// The state topic key of the [`Replay`] record (stage keys are longer than 16 bytes, the
/// watermark's is empty).
const REPLAY_KEY: &[u8] = b"replay";

/// Reads the query's state topic back; returns the watermark it had and where to rebuild join
/// buffers from.
async fn restore(ctx: &QueryCtx, p: &mut Pipeline) -> Result<(i64, Replay)> {
    let topic = state_topic(&ctx.id);
    let admin = &ctx.admin;
    if admin.describe_topic(&topic).await.is_err() {
        let t = strom_client::NewTopic::new(topic.clone(), 1).config("cleanup.policy", "compact");
        if let Err(e) = admin.create_topics(&[t]).await {
            if !e.to_string().to_lowercase().contains("already exists") {
                return Err(e.into());
            }
        }
        return Ok((i64::MIN, Replay::new()));
    }
    let ends = admin
        .list_offsets(std::slice::from_ref(&topic), OffsetSpec::Latest)
        .await?;
    let tp = TopicPartition::new(topic, 0);
    let end = ends.get(&tp).copied().unwrap_or(0);
    let mut latest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    if end > 0 {
        let mut c = Consumer::new(ConsumerConfig::new(&ctx.bootstrap)).await?;
        c.assign(std::slice::from_ref(&tp))?;
        c.seek_to_beginning(std::slice::from_ref(&tp))?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut last_progress = Instant::now();
        while c.position(&tp).unwrap_or(0) < end && Instant::now() < deadline {
            let recs = c.poll(Duration::from_millis(200)).await?;
            if !recs.is_empty() {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > Duration::from_secs(10) {
                break;
            }
            for r in recs {
                latest.insert(
                    r.key.map(|k| k.to_vec()).unwrap_or_default(),
                    r.value.map(|v| v.to_vec()),
                );
            }
        }
        let _ = c.close().await;
    }
    let mut watermark = i64::MIN;
    let mut replay = Replay::new();
    for (k, v) in latest {
        let Some(v) = v else { continue };
        if k.is_empty() {
            if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                watermark = i64::from_be_bytes(b);
            }
            continue;
        }
        if k == REPLAY_KEY {
            let from: Vec<(String, i32, i64)> =
                serde_json::from_slice(&v).map_err(|e| SqlError::Internal(e.to_string()))?;
            replay = from
                .into_iter()
                .map(|(t, part, o)| ((t, part), o))
                .collect();
            continue;
        }
        if let Some(so) = p.stream_over.as_mut() {
            if so.restore(&k, &v)? {
                continue;
            }
        }
        let Some(agg) = &mut p.agg else { continue };
        let (i, k) = (usize::from(k[0]), &k[1..]);
        match agg.states_mut().into_iter().nth(i) {
            Some(state) => state.restore(k, &v)?,
            None => tracing::warn!(query = %ctx.id, stage = i, "state of an unknown stage ignored"),
        }
    }
    Ok((watermark, replay))
}

/// Reads each partition of `replay` from its offset up to the query's committed offset and
/// puts the rows back in the input buffers: a join's (without joining them: their matches
/// were written before the restart), or the rows window functions over a stream still need.
async fn rebuild_buffers(
    ctx: &QueryCtx,
    p: &mut Pipeline,
    consumer: &Consumer,
    decoders: &[Option<Decoder>],
    wm: &mut Watermarks,
    replay: Replay,
) -> Result<()> {
    let tps: Vec<TopicPartition> = replay
        .keys()
        .map(|(t, part)| TopicPartition::new(t.clone(), *part))
        .collect();
    let committed = consumer.committed(&tps).await?;
    let mut upto: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut c = Consumer::new(ConsumerConfig::new(&ctx.bootstrap)).await?;
    for ((t, part), from) in &replay {
        let tp = TopicPartition::new(t.clone(), *part);
        if let Some(&to) = committed.get(&tp) {
            if *from < to {
                upto.insert(tp, to);
            }
        }
    }
    if upto.is_empty() {
        return Ok(());
    }
    let parts: Vec<TopicPartition> = upto.keys().cloned().collect();
    c.assign(&parts)?;
    for tp in &parts {
        if let Some(from) = replay.get(&(tp.topic.clone(), tp.partition)) {
            c.seek(tp, *from)?;
        }
    }
    let retaining = p.retaining();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rebuilt = 0u64;
    while upto
        .iter()
        .any(|(tp, to)| c.position(tp).unwrap_or(*to) < *to)
    {
        if Instant::now() > deadline {
            tracing::warn!(query = %ctx.id, "rebuilding input buffers took too long; some earlier rows will be missing");
            break;
        }
        let recs = c.poll(Duration::from_millis(200)).await?;
        for &i in &retaining {
            let Some(dec) = &decoders[i] else { continue };
            let before_commit = |r: &ConsumerRecord| {
                upto.get(&TopicPartition::new(r.topic.clone(), r.partition))
                    .is_some_and(|to| r.offset < *to)
            };
            let decoded = decode_input(&p.inputs[i], i, dec, &recs, wm, before_commit)?;
            if let Some((b, _)) = decoded {
                rebuilt += b.num_rows() as u64;
                p.inputs[i].retained.push(b);
            }
        }
    }
    let _ = c.close().await;
    tracing::info!(query = %ctx.id, rows = rebuilt, "input buffers rebuilt");
    Ok(())
}

/// Decodes the records of `input`'s topic that `keep` accepts, with window columns if the
/// input is windowed, and tells `wm` each partition's event times. `None` without any;
/// else the rows and how many records could not be decoded.
fn decode_input(
    input: &crate::continuous::Input,
    idx: usize,
    dec: &Decoder,
    recs: &[ConsumerRecord],
    wm: &mut Watermarks,
    keep: impl Fn(&ConsumerRecord) -> bool,
) -> Result<Option<(RecordBatch, u64)>> {
    let mine: Vec<Rec<'_>> = recs
        .iter()
        .filter(|r| r.topic == input.def.topic && keep(r))
        .filter_map(|r| {
            r.value.as_ref().map(|v| Rec {
                value: v,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
            })
        })
        .collect();
    if mine.is_empty() {
        return Ok(None);
    }
    let (b, bad) = dec.decode(&mine)?;
    let (b, time_col) = match &input.slot.binding.window {
        Some(w) => (w.assign(&b, &input.slot.schema)?, w.time_col.as_str()),
        None => (b, input.def.time_column()),
    };
    if let (Ok(t), Ok(p)) = (
        crate::window::times(&b, time_col),
        b.schema().index_of(format::PARTITION),
    ) {
        // Records come in runs per partition: one observation per run.
        let parts = b.column(p).as_primitive::<arrow::datatypes::Int32Type>();
        let mut run: Option<(i32, i64)> = None;
        for (part, t) in parts.iter().zip(t.iter()) {
            let (Some(part), Some(t)) = (part, t) else {
                continue;
            };
            run = match run {
                Some((p, m)) if p == part => Some((p, m.max(t))),
                Some((p, m)) => {
                    wm.observe(idx, p, m);
                    Some((part, t))
                }
                None => Some((part, t)),
            };
        }
        if let Some((p, m)) = run {
            wm.observe(idx, p, m);
        }
    }
    Ok(Some((b, bad)))
}

/// Per input, the partitions assigned to `consumer` that still have records to read.
fn behind(consumer: &Consumer, p: &Pipeline) -> Vec<Vec<i32>> {
    let mut out = vec![Vec::new(); p.inputs.len()];
    for tp in consumer.assignment() {
        // Until the first fetch says where a partition ends, it may have records to read.
        if let (Some(pos), Some(end)) = (consumer.position(&tp), consumer.high_watermark(&tp)) {
            if pos >= end {
                continue;
            }
        }
        for (i, input) in p.inputs.iter().enumerate() {
            if !input.slot.binding.table && input.def.topic == tp.topic {
                out[i].push(tp.partition);
            }
        }
    }
    out
}
