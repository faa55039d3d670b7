//! Ad-hoc queries: a topic's stored records as a bounded DataFusion table.
//!
//! A scan reads each partition from its start (or from the offset a pushed-down filter allows)
//! up to the high watermark it saw when the scan began. Filters on `_partition`, `_offset` and
//! `_timestamp` narrow what is read: partitions are skipped, offsets sought, and a lower bound
//! on `_timestamp` becomes a ListOffsets-by-time lookup, so a query over the last minute of a
//! long topic reads about a minute of it. The filters are still applied afterwards (they are
//! `Inexact`), so pushing them down never changes a result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use strom_client::{Admin, Consumer, ConsumerConfig, OffsetSpec, TopicPartition};

use crate::catalog::SourceDef;
use crate::format::{Decoder, Rec, OFFSET, PARTITION, TIMESTAMP};
use crate::parse::SourceKind;
use crate::window::{merge_sessions, WindowKind, WindowSpec};

/// What the pushed-down filters allow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bounds {
    /// Only these partitions (`None`: all).
    pub partitions: Option<Vec<i32>>,
    /// First offset to read.
    pub min_offset: Option<i64>,
    /// Offset to stop before.
    pub end_offset: Option<i64>,
    /// Smallest record timestamp wanted.
    pub min_timestamp: Option<i64>,
}

impl Bounds {
    /// Narrows the bounds with every filter it understands.
    pub fn from_filters(filters: &[Expr]) -> Bounds {
        let mut b = Bounds::default();
        for f in filters {
            b.add(f);
        }
        b
    }

    fn add(&mut self, f: &Expr) {
        match f {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::And => {
                self.add(left);
                self.add(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (col, op, v) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) => (c.name.as_str(), *op, v),
                    (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                        Some(op) => (c.name.as_str(), op, v),
                        None => return,
                    },
                    _ => return,
                };
                let Some(n) = as_i64(v) else { return };
                match (col, op) {
                    (PARTITION, Operator::Eq) => {
                        let keep: Vec<i32> = match &self.partitions {
                            Some(p) => p.iter().copied().filter(|&p| i64::from(p) == n).collect(),
                            None => vec![n as i32],
                        };
                        self.partitions = Some(keep);
                    }
                    (OFFSET, Operator::Gt) => self.raise_offset(n + 1),
                    (OFFSET, Operator::GtEq) => self.raise_offset(n),
                    (OFFSET, Operator::Eq) => {
                        self.raise_offset(n);
                        self.lower_end(n + 1);
                    }
                    (OFFSET, Operator::Lt) => self.lower_end(n),
                    (OFFSET, Operator::LtEq) => self.lower_end(n + 1),
                    (TIMESTAMP, Operator::Gt) => self.raise_ts(n + 1),
                    (TIMESTAMP, Operator::GtEq | Operator::Eq) => self.raise_ts(n),
                    _ => {}
                }
            }
            Expr::InList(l) if !l.negated => {
                if let Expr::Column(c) = l.expr.as_ref() {
                    if c.name == PARTITION {
                        let vals: Option<Vec<i32>> = l
                            .list
                            .iter()
                            .map(|e| match e {
                                Expr::Literal(v, _) => as_i64(v).map(|n| n as i32),
                                _ => None,
                            })
                            .collect();
                        if let Some(vals) = vals {
                            self.partitions = Some(match &self.partitions {
                                Some(p) => p.iter().copied().filter(|x| vals.contains(x)).collect(),
                                None => vals,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn raise_offset(&mut self, n: i64) {
        self.min_offset = Some(self.min_offset.map_or(n, |m| m.max(n)));
    }

    fn lower_end(&mut self, n: i64) {
        self.end_offset = Some(self.end_offset.map_or(n, |m| m.min(n)));
    }

    fn raise_ts(&mut self, n: i64) {
        self.min_timestamp = Some(self.min_timestamp.map_or(n, |m| m.max(n)));
    }

    fn understands(f: &Expr) -> bool {
        let b = Bounds::from_filters(std::slice::from_ref(f));
        b != Bounds::default()
    }
}

fn as_i64(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int8(Some(n)) => Some(i64::from(*n)),
        ScalarValue::Int16(Some(n)) => Some(i64::from(*n)),
        ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
        ScalarValue::Int64(Some(n)) => Some(*n),
        ScalarValue::UInt8(Some(n)) => Some(i64::from(*n)),
        ScalarValue::UInt16(Some(n)) => Some(i64::from(*n)),
        ScalarValue::UInt32(Some(n)) => Some(i64::from(*n)),
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
        ScalarValue::TimestampMillisecond(Some(n), _) => Some(*n),
        ScalarValue::TimestampSecond(Some(n), _) => Some(n * 1000),
        ScalarValue::TimestampMicrosecond(Some(n), _) => Some(n.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(n.div_euclid(1_000_000)),
        _ => None,
    }
}

/// Reads the records of `def`'s topic within `bounds`, decoded, with metadata columns.
/// Returns the batches and how many records could not be decoded.
pub async fn read(
    admin: &Admin,
    bootstrap: &str,
    def: &SourceDef,
    decoder: &Decoder,
    bounds: &Bounds,
) -> crate::Result<Read> {
    let topics = vec![def.topic.clone()];
    let ends = admin.list_offsets(&topics, OffsetSpec::Latest).await?;
    let starts = admin.list_offsets(&topics, OffsetSpec::Earliest).await?;
    let mut want: BTreeMap<TopicPartition, (i64, i64)> = BTreeMap::new();
    let by_time = match bounds.min_timestamp {
        Some(t) => {
            let asks: Vec<(TopicPartition, i64)> = ends.keys().map(|tp| (tp.clone(), t)).collect();
            Some(admin.list_partition_offsets(&asks).await?)
        }
        None => None,
    };
    for (tp, &end) in &ends {
        if bounds
            .partitions
            .as_ref()
            .is_some_and(|p| !p.contains(&tp.partition))
        {
            continue;
        }
        let mut from = starts.get(tp).copied().unwrap_or(0);
        if let Some(m) = bounds.min_offset {
            from = from.max(m);
        }
        if let Some(found) = by_time.as_ref().and_then(|m| m.get(tp)) {
            // -1: no record that late.
            from = if *found < 0 { end } else { from.max(*found) };
        }
        let to = bounds.end_offset.map_or(end, |e| e.min(end));
        if from < to {
            want.insert(tp.clone(), (from, to));
        }
    }
    if want.is_empty() {
        return Ok(Read {
            batches: Vec::new(),
            bad: 0,
            tombstones: Vec::new(),
            keys: HashMap::new(),
        });
    }
    let mut consumer = Consumer::new(ConsumerConfig::new(bootstrap)).await?;
    let tps: Vec<TopicPartition> = want.keys().cloned().collect();
    consumer.assign(&tps)?;
    for (tp, (from, _)) in &want {
        consumer.seek(tp, *from)?;
    }
    let mut batches = Vec::new();
    let mut bad = 0;
    let mut tombstones = Vec::new();
    let mut keys = HashMap::new();
    let mut open: HashMap<i32, i64> = want
        .iter()
        .map(|(tp, (_, to))| (tp.partition, *to))
        .collect();
    // A partition with nothing readable left (compacted away, say) must not wait forever.
    let mut idle = 0;
    while !open.is_empty() {
        let recs = consumer.poll(Duration::from_millis(200)).await?;
        if recs.is_empty() {
            idle += 1;
            let positions: Vec<(i32, i64)> = open
                .keys()
                .map(|&p| {
                    let tp = TopicPartition::new(def.topic.clone(), p);
                    (p, consumer.position(&tp).unwrap_or(0))
                })
                .collect();
            for (p, pos) in positions {
                if open.get(&p).is_some_and(|&to| pos >= to) {
                    open.remove(&p);
                }
            }
            if idle > 50 {
                break;
            }
            continue;
        }
        idle = 0;
        let mut take = Vec::with_capacity(recs.len());
        for r in &recs {
            let Some(&to) = open.get(&r.partition) else {
                continue;
            };
            if r.offset >= to {
                continue;
            }
            if r.offset + 1 >= to {
                open.remove(&r.partition);
            }
            if let (Some(k), Some(_), SourceKind::Table) = (&r.key, &r.value, def.kind) {
                keys.insert(
                    (r.partition, r.offset),
                    String::from_utf8_lossy(k).into_owned(),
                );
            }
            if let Some(v) = &r.value {
                take.push(Rec {
                    value: v,
                    partition: r.partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                });
            }
        }
        let (b, n) = decoder.decode(&take)?;
        bad += n;
        if b.num_rows() > 0 {
            batches.push(b);
        }
        if def.kind == SourceKind::Table {
            // A tombstone deletes its key's row: remember the key and where it was.
            for r in recs.iter().filter(|r| r.value.is_none()) {
                if let Some(k) = &r.key {
                    tombstones.push((
                        String::from_utf8_lossy(k).into_owned(),
                        r.partition,
                        r.offset,
                    ));
                }
            }
        }
    }
    let _ = consumer.close().await;
    Ok(Read {
        batches,
        bad,
        tombstones,
        keys,
    })
}

/// What [`read`] found.
pub struct Read {
    /// Decoded records.
    pub batches: Vec<RecordBatch>,
    /// Records that could not be decoded.
    pub bad: u64,
    /// Tombstones: record key as text, partition, offset.
    pub tombstones: Vec<(String, i32, i64)>,
    /// A table's record keys as text, by (partition, offset), for the records that have one.
    pub keys: HashMap<(i32, i64), String>,
}

/// The latest row per key of a table's records, in offset order, without the keys a later
/// tombstone deleted. A row's key is its record key (`keys`, by partition and offset) if it
/// had one, as in Kafka's compaction, else its `key` column.
pub fn latest_per_key(
    batch: &RecordBatch,
    key: &str,
    keys: &HashMap<(i32, i64), String>,
    tombstones: &[(String, i32, i64)],
) -> DfResult<RecordBatch> {
    let schema = batch.schema();
    let i = schema.index_of(key)?;
    let fmt = arrow::util::display::ArrayFormatter::try_new(
        batch.column(i).as_ref(),
        &Default::default(),
    )?;
    let parts = batch.column(schema.index_of(PARTITION)?).clone();
    let offs = batch.column(schema.index_of(OFFSET)?).clone();
    let (Some(parts), Some(offs)) = (
        parts.as_any().downcast_ref::<arrow::array::Int32Array>(),
        offs.as_any().downcast_ref::<arrow::array::Int64Array>(),
    ) else {
        return Err(DataFusionError::Internal(
            "partition and offset columns".into(),
        ));
    };
    let key_of = |r: usize| -> String {
        keys.get(&(parts.value(r), offs.value(r)))
            .cloned()
            .unwrap_or_else(|| fmt.value(r).to_string())
    };
    let mut last: HashMap<String, u32> = HashMap::new();
    for r in 0..batch.num_rows() {
        last.insert(key_of(r), r as u32);
    }
    let dead: HashMap<&str, (i32, i64)> = tombstones
        .iter()
        .map(|(k, p, o)| (k.as_str(), (*p, *o)))
        .collect();
    let mut keep: Vec<u32> = last
        .into_iter()
        .filter(|(k, r)| {
            let r = *r as usize;
            !dead
                .get(k.as_str())
                .is_some_and(|&(p, o)| p == parts.value(r) && o > offs.value(r))
        })
        .map(|(_, r)| r)
        .collect();
    keep.sort_unstable();
    let idx = arrow::array::UInt32Array::from(keep);
    let cols = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

/// A stream or table's stored records as a table.
#[derive(Debug)]
pub struct TopicTable {
    def: Arc<SourceDef>,
    admin: Arc<Admin>,
    bootstrap: String,
    source_schema: SchemaRef,
    window: Option<(WindowSpec, SchemaRef)>,
}

impl TopicTable {
    /// `def` read through `admin` (and consumers of `bootstrap`), with `window` applied.
    pub fn new(
        def: Arc<SourceDef>,
        admin: Arc<Admin>,
        bootstrap: String,
        window: Option<WindowSpec>,
    ) -> DfResult<TopicTable> {
        let schema = def
            .schema()
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let source_schema = crate::format::with_meta(&schema);
        let window = match window {
            Some(w) => {
                let s = w.schema(&source_schema)?;
                Some((w, s))
            }
            None => None,
        };
        Ok(TopicTable {
            def,
            admin,
            bootstrap,
            source_schema,
            window,
        })
    }
}

#[async_trait::async_trait]
impl TableProvider for TopicTable {
    fn schema(&self) -> SchemaRef {
        match &self.window {
            Some((_, s)) => s.clone(),
            None => self.source_schema.clone(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                // A window repeats or regroups rows: only plain scans narrow the read.
                if self.window.is_none()
                    && self.def.kind == SourceKind::Stream
                    && Bounds::understands(f)
                {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let fail = |e: crate::SqlError| DataFusionError::Execution(e.to_string());
        let schema = self.def.schema().map_err(fail)?;
        let decoder = Decoder::new(self.def.format().map_err(fail)?, schema).map_err(fail)?;
        let bounds = Bounds::from_filters(filters);
        let got = read(&self.admin, &self.bootstrap, &self.def, &decoder, &bounds)
            .await
            .map_err(fail)?;
        let mut all = arrow::compute::concat_batches(&self.source_schema, &got.batches)?;
        if self.def.kind == SourceKind::Table {
            if let Some(k) = &self.def.key {
                all = latest_per_key(&all, k, &got.keys, &got.tombstones)?;
            }
        }
        let (out, schema) = match &self.window {
            Some((w, s)) => {
                let mut b = w.assign(&all, s)?;
                if let WindowKind::Session { keys, .. } = &w.kind {
                    b = merge_sessions(&b, keys)?;
                }
                (b, s.clone())
            }
            None => (all, self.source_schema.clone()),
        };
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![out]],
            schema,
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn filters_become_bounds() {
        let b = Bounds::from_filters(&[
            col(PARTITION).eq(lit(2i32)),
            col(OFFSET)
                .gt_eq(lit(10i64))
                .and(col(OFFSET).lt(lit(20i64))),
            lit(ScalarValue::TimestampMillisecond(Some(5000), None)).lt_eq(col(TIMESTAMP)),
            col("other").eq(lit(1)),
        ]);
        assert_eq!(
            b,
            Bounds {
                partitions: Some(vec![2]),
                min_offset: Some(10),
                end_offset: Some(20),
                min_timestamp: Some(5000),
            }
        );
        assert!(!Bounds::understands(&col("x").gt(lit(1))));
    }
}
