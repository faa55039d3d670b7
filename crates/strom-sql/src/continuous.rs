//! Continuous queries: planned once by DataFusion, run forever in micro-batches.
//!
//! The query is planned over [slot](crate::slot) tables. The physical plan is then cut at its
//! aggregation, if it has one: the part below (`pre`) runs on each micro-batch of new records,
//! the aggregation itself is Strom's [`AggState`], and the part above (`post`: `HAVING`, the
//! final projection) runs on the rows the aggregation emits. A plan without aggregation runs
//! whole on each micro-batch.
//!
//! A join of two streams runs as a delta join: new left rows against all retained right rows,
//! then retained left rows against new right rows. Rows are retained as long as the join's
//! time bound (the largest interval in its condition, or the window size of a window join)
//! allows them to match. A join with a table runs against the table's current rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures_util::TryStreamExt;

use crate::agg::{AggSpec, AggState};
use crate::catalog::SourceDef;
use crate::slot::{Slot, SlotExec};
use crate::window::{WindowKind, WINDOW_END};
use crate::{Result, SqlError};

/// One input of a running query: a slot and what feeds it.
pub struct Input {
    /// The slot.
    pub slot: Arc<Slot>,
    /// Its source.
    pub def: Arc<SourceDef>,
    /// Rows kept for a stream-stream join.
    pub retained: Vec<RecordBatch>,
}

/// A continuous query, planned.
pub struct Pipeline {
    /// Inputs, in the order the plan scans them.
    pub inputs: Vec<Input>,
    /// The plan below the aggregation (or the whole plan).
    pub pre: Arc<dyn ExecutionPlan>,
    /// The aggregation and the plan above it.
    pub agg: Option<(AggState, Arc<Slot>, Arc<dyn ExecutionPlan>)>,
    /// Output schema.
    pub schema: SchemaRef,
    /// For a stream-stream join: how long rows are retained, in ms.
    pub join_retention: Option<i64>,
    /// DataFusion's context for executing the plans.
    pub task: Arc<TaskContext>,
    /// The aggregate input rows that were late (for a late topic), since the last take.
    pub late_rows: Vec<RecordBatch>,
    /// Count of late rows.
    pub late: u64,
}

fn unsupported(what: &str) -> SqlError {
    SqlError::Unsupported(format!("{what} in a continuous query"))
}

/// Plans `logical` (optimised) as a continuous query over `used` slots.
pub async fn plan(
    ctx: &SessionContext,
    logical: LogicalPlan,
    used: Arc<parking_lot::Mutex<Vec<Arc<Slot>>>>,
    defs: &BTreeMap<String, Arc<SourceDef>>,
    emit_changes: bool,
) -> Result<Pipeline> {
    let physical = ctx.state().create_physical_plan(&logical).await?;
    // Tables record their slots when scanned, which happens in physical planning.
    let used: Vec<Arc<Slot>> = used.lock().clone();
    if !used.iter().any(|s| !s.binding.table) {
        return Err(SqlError::Statement(
            "a continuous query must read a stream (this one reads only tables, or nothing)".into(),
        ));
    }
    let join_retention = join_retention(&logical, &used, defs)?;
    let schema = physical.schema();
    // Find the aggregations and anything that cannot run per batch.
    let mut aggs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    let mut problem: Option<SqlError> = None;
    physical.apply(|node| {
        let name = node.name();
        if node.is::<AggregateExec>() {
            aggs.push(node.clone());
        } else if name.contains("Sort") && !name.contains("SortPreserving")
            || name == "SortPreservingMergeExec"
        {
            problem.get_or_insert(unsupported("ORDER BY (a stream has no end to sort at)"));
        } else if name.contains("Limit") {
            problem.get_or_insert(unsupported("LIMIT"));
        } else if name.contains("WindowAgg") {
            problem.get_or_insert(unsupported("OVER (..) window functions"));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    // A join above an aggregation would need its inputs' updates retracted: not per batch.
    physical.apply(|node| {
        if node.name().contains("Join") {
            let mut below = false;
            for c in node.children() {
                c.apply(|n| {
                    below |= n.is::<AggregateExec>();
                    Ok(TreeNodeRecursion::Continue)
                })?;
            }
            if below {
                problem.get_or_insert(unsupported(
                    "a join with an aggregate's result (write the aggregate to a topic with its own query, then join that)",
                ));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(p) = problem {
        return Err(p);
    }
    let mut inputs = Vec::new();
    for slot in &used {
        let def = defs
            .get(&slot.binding.source)
            .ok_or_else(|| SqlError::Internal(format!("no source {}", slot.binding.source)))?;
        inputs.push(Input {
            slot: slot.clone(),
            def: def.clone(),
            retained: Vec::new(),
        });
    }
    let streams = inputs.iter().filter(|i| !i.slot.binding.table).count();
    if join_retention.is_some() && streams != 2 {
        return Err(unsupported("a join of more than two streams"));
    }
    let task = ctx.task_ctx();
    if aggs.is_empty() {
        return Ok(Pipeline {
            inputs,
            pre: physical,
            agg: None,
            schema,
            join_retention,
            task,
            late_rows: Vec::new(),
            late: 0,
        });
    }
    // The top aggregation; with two phases, its partial half has the raw input.
    let top = aggs[0].clone();
    let top_agg = top
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| SqlError::Internal("aggregate".into()))?;
    let bottom: Arc<dyn ExecutionPlan> = match top_agg.mode() {
        AggregateMode::Final | AggregateMode::FinalPartitioned => aggs
            .iter()
            .skip(1)
            .find(|a| {
                a.downcast_ref::<AggregateExec>()
                    .is_some_and(|a| *a.mode() == AggregateMode::Partial)
            })
            .cloned()
            .ok_or_else(|| SqlError::Internal("final aggregate without partial".into()))?,
        _ => top.clone(),
    };
    let expected = if Arc::ptr_eq(&bottom, &top) { 1 } else { 2 };
    if aggs.len() > expected {
        return Err(unsupported(
            "an aggregate over another aggregate (or DISTINCT inside a GROUP BY): split it into two queries through a topic",
        ));
    }
    let part = bottom
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| SqlError::Internal("aggregate".into()))?;
    if part.group_expr().has_grouping_set() {
        return Err(unsupported("GROUPING SETS, CUBE and ROLLUP"));
    }
    let pre = part.input().clone();
    let session = used.iter().any(|s| {
        matches!(
            s.binding.window.as_ref().map(|w| &w.kind),
            Some(WindowKind::Session { .. })
        )
    });
    let spec = AggSpec {
        group: part.group_expr().expr().to_vec(),
        aggs: part.aggr_expr().to_vec(),
        filters: part.filter_expr().to_vec(),
        out_schema: top.schema(),
        session,
        emit_changes,
    };
    let state = AggState::new(spec, &pre.schema())?;
    let post_slot = Slot::new(
        top.schema(),
        crate::slot::Binding {
            source: "aggregate".into(),
            table: false,
            window: None,
        },
    );
    let leaf: Arc<dyn ExecutionPlan> = Arc::new(SlotExec::new(post_slot.clone(), None));
    let post = physical
        .transform_down(|node| {
            if Arc::ptr_eq(&node, &top) {
                Ok(Transformed::new(
                    leaf.clone(),
                    true,
                    TreeNodeRecursion::Jump,
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })?
        .data;
    Ok(Pipeline {
        inputs,
        pre,
        agg: Some((state, post_slot, post)),
        schema,
        join_retention,
        task,
        late_rows: Vec::new(),
        late: 0,
    })
}

/// How long a stream-stream join must retain rows, or `None` without such a join.
fn join_retention(
    plan: &LogicalPlan,
    used: &[Arc<Slot>],
    defs: &BTreeMap<String, Arc<SourceDef>>,
) -> Result<Option<i64>> {
    let mut out: Option<i64> = None;
    let mut err = None;
    plan.apply(|node| {
        if let LogicalPlan::Join(j) = node {
            let streams = |p: &LogicalPlan| {
                let mut n = 0;
                let _ = p.apply(|x| {
                    if let LogicalPlan::TableScan(s) = x {
                        let name = s.table_name.table().to_string();
                        let is_stream = defs
                            .get(&name)
                            .is_some_and(|d| d.kind == crate::parse::SourceKind::Stream)
                            || used.iter().any(|u| {
                                u.binding.window.is_some() && !u.binding.table && u.binding.source == name
                            });
                        let windowed = name.starts_with("tumble") || name.starts_with("hop") || name.starts_with("session");
                        if is_stream || windowed {
                            n += 1;
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                });
                n
            };
            if streams(&j.left) > 0 && streams(&j.right) > 0 {
                let mut bound: Option<i64> = None;
                if let Some(f) = &j.filter {
                    let _ = f.apply(|e| {
                        if let Expr::Literal(v, _) = e {
                            if let Some(ms) = interval_ms(v) {
                                bound = Some(bound.map_or(ms, |b| b.max(ms)));
                            }
                        }
                        Ok(TreeNodeRecursion::Continue)
                    });
                }
                // A window join: rows match within their window.
                let win = used
                    .iter()
                    .filter_map(|s| s.binding.window.as_ref())
                    .map(|w| match &w.kind {
                        WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => *size,
                        WindowKind::Session { gap, .. } => *gap,
                    })
                    .max();
                let joined_on_windows = j.on.iter().any(|(l, r)| {
                    l.to_string().contains(WINDOW_END) || r.to_string().contains(WINDOW_END)
                        || l.to_string().contains("window_start")
                });
                match (bound, win) {
                    (Some(b), _) => out = Some(out.map_or(b, |o| o.max(b))),
                    (None, Some(w)) if joined_on_windows => out = Some(out.map_or(w, |o| o.max(w))),
                    _ => {
                        err = Some(SqlError::Unsupported(
                            "a join of two streams needs a time bound, e.g. `ON a.id = b.id AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' HOUR`, or to join on the same window".into(),
                        ));
                    }
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn interval_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => Some(
            i64::from(i.months) * 30 * 86_400_000
                + i64::from(i.days) * 86_400_000
                + i.nanoseconds / 1_000_000,
        ),
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds))
        }
        ScalarValue::DurationMillisecond(Some(m)) => Some(*m),
        ScalarValue::DurationSecond(Some(s)) => Some(s * 1000),
        _ => None,
    }
    .map(i64::abs)
}

async fn run_plan(
    plan: &Arc<dyn ExecutionPlan>,
    task: &Arc<TaskContext>,
) -> DfResult<Vec<RecordBatch>> {
    // Operators keep state from their last execution (a hash join keeps its build side): every
    // micro-batch runs on freshly reset nodes.
    let plan = datafusion::physical_plan::execution_plan::reset_plan_states(plan.clone())?;
    let stream = plan.execute(0, task.clone())?;
    stream.try_collect().await
}

impl Pipeline {
    /// Processes one micro-batch: `fresh[i]` are the new rows of input `i` (tables: their
    /// current rows, or `None` if unchanged). Returns the rows to write.
    pub async fn process(
        &mut self,
        fresh: Vec<Option<Vec<RecordBatch>>>,
        watermark_before: i64,
        watermark_after: i64,
    ) -> Result<Vec<RecordBatch>> {
        let mut rows = Vec::new();
        let stream_inputs: Vec<usize> = (0..self.inputs.len())
            .filter(|&i| !self.inputs[i].slot.binding.table)
            .collect();
        // Tables: replace their rows when they changed.
        let mut news: HashMap<usize, Vec<RecordBatch>> = HashMap::new();
        for (i, f) in fresh.into_iter().enumerate() {
            match f {
                Some(b) if self.inputs[i].slot.binding.table => self.inputs[i].slot.set(b),
                Some(b) => {
                    news.insert(i, b);
                }
                None => {}
            }
        }
        if let (Some(_), [a, b]) = (self.join_retention, stream_inputs.as_slice()) {
            let (a, b) = (*a, *b);
            let new_a = news.remove(&a).unwrap_or_default();
            let new_b = news.remove(&b).unwrap_or_default();
            if !new_a.is_empty() || !new_b.is_empty() {
                // New left against all right.
                let mut all_b = self.inputs[b].retained.clone();
                all_b.extend(new_b.iter().cloned());
                self.inputs[a].slot.set(new_a.clone());
                self.inputs[b].slot.set(all_b);
                rows.extend(run_plan(&self.pre, &self.task).await?);
                // Old left against new right.
                self.inputs[a].slot.set(self.inputs[a].retained.clone());
                self.inputs[b].slot.set(new_b.clone());
                rows.extend(run_plan(&self.pre, &self.task).await?);
                self.inputs[a].retained.extend(new_a);
                self.inputs[b].retained.extend(new_b);
            }
            self.evict(watermark_after)?;
        } else {
            let mut any = false;
            for &i in &stream_inputs {
                let b = news.remove(&i).unwrap_or_default();
                any |= !b.is_empty();
                self.inputs[i].slot.set(b);
            }
            if any {
                rows = run_plan(&self.pre, &self.task).await?;
            }
        }
        for &i in &stream_inputs {
            self.inputs[i].slot.set(Vec::new());
        }
        let Some((state, post_slot, post)) = &mut self.agg else {
            return Ok(rows.into_iter().filter(|b| b.num_rows() > 0).collect());
        };
        for b in &rows {
            let late = state.update(b, watermark_before)?;
            if !late.is_empty() {
                self.late += late.len() as u64;
                let idx = arrow::array::UInt32Array::from(late);
                let cols = b
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
                    .collect::<Result<Vec<_>, _>>()?;
                self.late_rows.push(RecordBatch::try_new(b.schema(), cols)?);
            }
        }
        let mut emitted = Vec::new();
        if let Some(c) = state.take_changes()? {
            emitted.push(c);
        }
        if let Some(c) = state.close(watermark_after)? {
            emitted.push(c);
        }
        if emitted.is_empty() {
            return Ok(Vec::new());
        }
        post_slot.set(emitted);
        let out = run_plan(post, &self.task).await?;
        post_slot.set(Vec::new());
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// Drops retained join rows that can no longer match.
    fn evict(&mut self, watermark: i64) -> Result<()> {
        let Some(keep) = self.join_retention else {
            return Ok(());
        };
        let limit = watermark.saturating_sub(keep);
        for input in &mut self.inputs {
            if input.retained.is_empty() {
                continue;
            }
            let col = match &input.slot.binding.window {
                Some(_) => WINDOW_END.to_string(),
                None => input.def.time_column().to_string(),
            };
            let mut kept = Vec::new();
            for b in input.retained.drain(..) {
                let t = crate::window::times(&b, &col)?;
                let mask: arrow::array::BooleanArray = t
                    .iter()
                    .map(|v| Some(v.is_none_or(|v| v >= limit)))
                    .collect();
                let f = arrow::compute::filter_record_batch(&b, &mask)?;
                if f.num_rows() > 0 {
                    kept.push(f);
                }
            }
            // Fewer, larger batches keep each run cheap.
            if kept.len() > 16 {
                let schema = kept[0].schema();
                kept = vec![arrow::compute::concat_batches(&schema, &kept)?];
            }
            input.retained = kept;
        }
        Ok(())
    }

    /// Whether the output is an upsert changelog.
    pub fn updating(&self) -> bool {
        self.agg.as_ref().is_some_and(|(s, _, _)| s.updating())
    }
}
