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
//!
//! Window functions (`OVER (..)`) are Strom's too ([`OverState`]): over an updating
//! aggregation's rows they keep one result row per group up to date; over a stream's own rows
//! (ordered by its event time) each row gets its results once the watermark passes it. When
//! the plan above an updating aggregation leaves a changed row out (`HAVING`, a top-N's
//! filter), the output row is deleted ([`Pipeline::deletes`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::JoinType;
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::window::{
    PlainAggregateWindowExpr, SlidingAggregateWindowExpr, WindowExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures_util::TryStreamExt;

use crate::agg::{AggSpec, AggState};
use crate::catalog::SourceDef;
use crate::over::{OverState, StateRecord};
use crate::slot::{Slot, SlotExec};
use crate::window::{WindowKind, WINDOW_END, WINDOW_START};
use crate::{Result, SqlError};

/// One input of a running query: a slot and what feeds it.
pub struct Input {
    /// The slot.
    pub slot: Arc<Slot>,
    /// Its source.
    pub def: Arc<SourceDef>,
    /// Rows kept for a stream-stream join.
    pub retained: Vec<RecordBatch>,
    /// The slot's columns the query reads, if not all.
    pub used: Option<Vec<usize>>,
}

/// One stateful aggregation of a continuous query.
pub struct Stage {
    /// The plan below it: run on each micro-batch of new input rows.
    pub pre: Arc<dyn ExecutionPlan>,
    /// Its groups' accumulators.
    pub state: AggState,
    /// Where the rows it emits go for the plan above.
    pub slot: Arc<Slot>,
}

/// An aggregation over an updating aggregation's rows (`AVG` of per-key `MAX`es that keep
/// changing): each change below takes its previous row back out and puts the new one in.
pub struct Upper {
    /// The plan from the stage's rows to this aggregation's input (row by row).
    pub mid: Arc<dyn ExecutionPlan>,
    /// Its groups' accumulators (all of which can retract).
    pub state: AggState,
    /// Where its rows go for the plan above.
    pub slot: Arc<Slot>,
}

/// Window functions (`OVER (..)`) over the one updating stage's rows.
pub struct Over {
    /// The plan from the stage's rows to the window functions' input (row by row), each row
    /// followed by its identity: the stage's group key.
    pub mid: Arc<dyn ExecutionPlan>,
    /// The partitions' rows in window order.
    pub state: OverState,
    /// Where its rows (with their identities) go for the plan above.
    pub slot: Arc<Slot>,
}

/// Window functions over a stream's own rows (Flink's `OVER` windows): rows wait until the
/// watermark passes their event time, then go into their partitions in time order and get
/// their results once; each partition keeps only the rows later frames can still hold.
pub struct StreamOver {
    /// The stream input.
    pub input: usize,
    /// The plan from the stream's rows to the window functions' input, each row followed by
    /// its identity (`_partition`, `_offset`).
    pub mid: Arc<dyn ExecutionPlan>,
    /// The kept rows of each partition.
    pub state: OverState,
    /// The window functions' results for the plan above.
    pub slot: Arc<Slot>,
    /// The plan above the window functions.
    pub above: Arc<dyn ExecutionPlan>,
    /// The event time, over the window functions' input.
    pub time: Arc<dyn PhysicalExpr>,
    /// Rows the watermark has not passed yet.
    pub pending: Vec<RecordBatch>,
    /// The earliest time among them (`i64::MAX` without any).
    pub pending_from: i64,
    /// Rows of a partition that `ROWS` frames need: the last ones.
    pub keep_rows: usize,
    /// How far back `RANGE` frames reach, in ms.
    pub keep_ms: Option<i64>,
}

/// The aggregations of a continuous query and the plan above them.
pub struct Aggregation {
    /// The lowest aggregations (those with no aggregation below them), each kept by Strom.
    pub stages: Vec<Stage>,
    /// An aggregation over the one stage's changes, if there is one.
    pub upper: Option<Upper>,
    /// Window functions over the one stage's changes, if there are any.
    pub over: Option<Over>,
    /// The plan above them, over their emitted rows. With more than one stage, or an
    /// aggregation or join above one, every stage is windowed with final results, and what is
    /// above groups and joins by window: a window's rows all close in the same micro-batch, so
    /// the plan above sees each window whole.
    pub post: Arc<dyn ExecutionPlan>,
}

/// A continuous query, planned.
pub struct Pipeline {
    /// Inputs, in the order the plan scans them.
    pub inputs: Vec<Input>,
    /// Without aggregation, the whole plan.
    pub pre: Arc<dyn ExecutionPlan>,
    /// The aggregations and the plan above them.
    pub agg: Option<Aggregation>,
    /// Output schema.
    pub schema: SchemaRef,
    /// For a stream-stream join: how long rows are retained, in ms.
    pub join_retention: Option<i64>,
    /// For a stream-stream join bounded by columns: per source, the column that says until
    /// when a row is kept.
    pub join_deadlines: BTreeMap<String, String>,
    /// Streams read by the plan above the stages (joined with an aggregate's result), and how
    /// long their rows are retained, in ms.
    pub post_streams: Vec<usize>,
    /// How long `post_streams` rows are retained, in ms.
    pub post_retention: i64,
    /// DataFusion's context for executing the plans.
    pub task: Arc<TaskContext>,
    /// The aggregate input rows that were late (for a late topic), since the last take.
    pub late_rows: Vec<RecordBatch>,
    /// Count of late rows.
    pub late: u64,
    /// Names of the identity columns that follow the output's columns in every emitted row
    /// (the record key of an output whose rows have no key among their columns), if any.
    pub key_tail: Vec<String>,
    /// Window functions over a stream's rows.
    pub stream_over: Option<StreamOver>,
    /// Keys of output rows deleted since the last take (rows of an updating output that the
    /// plan above its aggregation now filters out, like `HAVING`), as columns named like the
    /// output's key.
    pub deletes: Vec<RecordBatch>,
    /// Keys (row format) deleted and not written since, so as not to delete them again. Not
    /// kept across restarts: after one, a key may be deleted once more.
    deleted_keys: HashSet<arrow::row::OwnedRow>,
}

/// How the rows given to the plan above an updating aggregation are keyed.
enum Fed {
    /// By identity columns that trail each row ([`Pipeline::key_tail`]).
    Tail,
    /// By the aggregation's group columns, with these names.
    Groups(Vec<String>),
}

type Plan = Arc<dyn ExecutionPlan>;

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
    let JoinBounds {
        streams: join_retention,
        with_aggregate: post_retention,
        deadlines: join_deadlines,
    } = join_retention(&logical, &used, defs)?;
    let schema = physical.schema();
    // Find the aggregations and anything that cannot run per batch.
    let mut aggs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    let mut problem: Option<SqlError> = None;
    // The sorts that order a window function's input are the window state's business.
    let mut window_sorts: Vec<Plan> = Vec::new();
    let mut windowed = false;
    physical.apply(|node| {
        if let Some((_, input)) = window_parts(node) {
            windowed = true;
            // Down the row-by-row chain below the window operator.
            let mut at = Some(input);
            while let Some(n) = at.take() {
                if n.is::<SortExec>() {
                    window_sorts.push(n.clone());
                }
                let row_wise = n.is::<SortExec>() || n.is::<ProjectionExec>() || passes_rows(&n);
                if let (true, [child]) = (row_wise, n.children().as_slice()) {
                    at = Some((*child).clone());
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    physical.apply(|node| {
        let name = node.name();
        if node.is::<AggregateExec>() {
            aggs.push(node.clone());
        } else if window_sorts.iter().any(|s| Arc::ptr_eq(s, node)) {
        } else if name.contains("Sort") && !name.contains("SortPreserving")
            || name == "SortPreservingMergeExec"
        {
            problem.get_or_insert(unsupported("ORDER BY (a stream has no end to sort at)"));
        } else if name.contains("Limit") {
            problem.get_or_insert(unsupported("LIMIT"));
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
        // The columns every scan of the slot reads.
        let mut used: Option<Vec<usize>> = Some(Vec::new());
        physical.apply(|n| {
            if let Some(s) = n.downcast_ref::<SlotExec>() {
                if Arc::ptr_eq(s.slot(), slot) {
                    match (s.projection(), used.as_mut()) {
                        (Some(p), Some(u)) => u.extend(p),
                        _ => used = None,
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        inputs.push(Input {
            slot: slot.clone(),
            def: def.clone(),
            retained: Vec::new(),
            used,
        });
    }
    let streams = inputs.iter().filter(|i| !i.slot.binding.table).count();
    if join_retention.is_some() && streams != 2 {
        return Err(unsupported("a join of more than two streams"));
    }
    let task = ctx.task_ctx();
    let stream_over = if aggs.is_empty() && windowed {
        Some(stream_over(&physical, &inputs)?)
    } else {
        None
    };
    if aggs.is_empty() {
        return Ok(Pipeline {
            inputs,
            pre: physical,
            agg: None,
            schema,
            join_retention,
            join_deadlines: join_deadlines.clone(),
            post_streams: Vec::new(),
            post_retention: 0,
            task,
            late_rows: Vec::new(),
            late: 0,
            key_tail: Vec::new(),
            stream_over,
            deletes: Vec::new(),
            deleted_keys: HashSet::new(),
        });
    }
    // The lowest aggregations become stages; the plan above them runs on what they emit.
    let mut found = Vec::new();
    find_stages(&physical, &mut found)?;
    let session = used.iter().any(|s| {
        matches!(
            s.binding.window.as_ref().map(|w| &w.kind),
            Some(WindowKind::Session { .. })
        )
    });
    let mut stages = Vec::new();
    for (top, bottom) in &found {
        let part = bottom
            .downcast_ref::<AggregateExec>()
            .ok_or_else(|| SqlError::Internal("aggregate".into()))?;
        if part.group_expr().has_grouping_set() {
            return Err(unsupported("GROUPING SETS, CUBE and ROLLUP"));
        }
        let pre = part.input().clone();
        let mut below_window = false;
        pre.apply(|n| {
            below_window |= window_parts(n).is_some();
            Ok(TreeNodeRecursion::Continue)
        })?;
        if below_window {
            return Err(unsupported("an aggregate over OVER (..) results"));
        }
        let spec = AggSpec {
            group: part.group_expr().expr().to_vec(),
            aggs: part.aggr_expr().to_vec(),
            filters: part.filter_expr().to_vec(),
            out_schema: top.schema(),
            session,
            emit_changes,
        };
        let state = AggState::new(spec, &pre.schema())?;
        let slot = inner_slot(top.schema(), "aggregate");
        stages.push(Stage { pre, state, slot });
    }
    let leaves: Vec<Arc<dyn ExecutionPlan>> = stages
        .iter()
        .map(|s| Arc::new(SlotExec::new(s.slot.clone(), None)) as Arc<dyn ExecutionPlan>)
        .collect();
    let post = physical
        .clone()
        .transform_down(
            |node| match found.iter().position(|(top, _)| Arc::ptr_eq(&node, top)) {
                Some(i) => Ok(Transformed::new(
                    leaves[i].clone(),
                    true,
                    TreeNodeRecursion::Jump,
                )),
                None => Ok(Transformed::no(node)),
            },
        )?
        .data;
    let (post, over, key_tail) = match over_stage(&post, &stages)? {
        Some((post, over, keys)) => (post, Some(over), keys),
        None => (post, None, Vec::new()),
    };
    let (post, upper) = match retracting_upper(&post, &mut stages, emit_changes)? {
        _ if over.is_some() => (post, None),
        Some((post, upper)) => (post, Some(upper)),
        None => {
            check_above_stages(
                &post,
                &stages,
                &leaves,
                emit_changes,
                post_retention.is_some(),
            )?;
            (post, None)
        }
    };
    let mut post_streams = Vec::new();
    post.apply(|n| {
        if let Some(s) = n.downcast_ref::<SlotExec>() {
            if let Some(i) = inputs.iter().position(|i| Arc::ptr_eq(&i.slot, s.slot())) {
                if !inputs[i].slot.binding.table && !post_streams.contains(&i) {
                    post_streams.push(i);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(Pipeline {
        inputs,
        pre: physical,
        agg: Some(Aggregation {
            stages,
            upper,
            over,
            post,
        }),
        schema,
        join_retention,
        join_deadlines,
        post_streams,
        post_retention: post_retention.unwrap_or(0),
        task,
        late_rows: Vec::new(),
        late: 0,
        key_tail,
        stream_over: None,
        deletes: Vec::new(),
        deleted_keys: HashSet::new(),
    })
}

/// Plans window functions over a stream's own rows: ordered by its event time, with frames
/// that reach a bounded way back (`ROWS BETWEEN n PRECEDING ..`, `RANGE BETWEEN INTERVAL ..
/// PRECEDING ..`) and not forward.
fn stream_over(physical: &Plan, inputs: &[Input]) -> Result<StreamOver> {
    let (window, exprs, below) =
        the_window(physical)?.ok_or_else(|| SqlError::Internal("no window operator".into()))?;
    let window = &window;
    // Ordered by the stream's event time, ascending.
    let order = exprs[0].order_by();
    let traced = match order {
        [o] if !o.options.descending => o
            .expr
            .downcast_ref::<Column>()
            .and_then(|c| source_column(&below, c.index())),
        _ => None,
    };
    let Some((slot, col)) = traced else {
        return Err(unsupported(
            "OVER (..) over a stream's rows not ordered by the stream's event time alone (ORDER BY ts, ascending)",
        ));
    };
    let input = inputs
        .iter()
        .position(|i| Arc::ptr_eq(&i.slot, &slot))
        .ok_or_else(|| SqlError::Internal("window input".into()))?;
    if inputs
        .iter()
        .enumerate()
        .any(|(i, s)| i != input && !s.slot.binding.table)
    {
        return Err(unsupported(
            "OVER (..) over a stream's rows in a query that reads another stream too",
        ));
    }
    let time_col = inputs[input].def.time_column().to_string();
    if col != time_col {
        return Err(SqlError::Unsupported(format!(
            "OVER (..) over a stream's rows ordered by `{col}`: order by its event time `{time_col}` in a continuous query"
        )));
    }
    // Frames that reach back a bounded way and not forward.
    let mut keep_rows = 0usize;
    let mut keep_ms: Option<i64> = None;
    for e in &exprs {
        let any = e.as_any();
        if !any.is::<PlainAggregateWindowExpr>() && !any.is::<SlidingAggregateWindowExpr>() {
            return Err(unsupported(
                "ranking and value window functions (ROW_NUMBER, RANK, LAG, ..) over a stream's rows (aggregate functions work)",
            ));
        }
        let frame = e.get_window_frame();
        if matches!(frame.end_bound, WindowFrameBound::Following(_)) {
            return Err(unsupported(
                "a window frame reaching FOLLOWING rows over a stream (end it at CURRENT ROW)",
            ));
        }
        let unbounded = || {
            unsupported(
                "an unbounded window frame over a stream (it would keep every row): use ROWS BETWEEN n PRECEDING AND CURRENT ROW or RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW",
            )
        };
        let WindowFrameBound::Preceding(back) = &frame.start_bound else {
            return Err(unbounded());
        };
        if back.is_null() {
            return Err(unbounded());
        }
        match frame.units {
            WindowFrameUnits::Rows => {
                let n = match back {
                    ScalarValue::UInt64(Some(n)) => usize::try_from(*n).ok(),
                    _ => None,
                }
                .ok_or_else(unbounded)?;
                keep_rows = keep_rows.max(n);
            }
            WindowFrameUnits::Range => {
                let months = match back {
                    ScalarValue::IntervalMonthDayNano(Some(i)) => i.months != 0,
                    ScalarValue::IntervalYearMonth(_) => true,
                    _ => false,
                };
                if months {
                    return Err(unsupported(
                        "a RANGE frame in months or years over a stream (they have no fixed length): use days",
                    ));
                }
                let ms = interval_ms(back).ok_or_else(|| {
                    unsupported("a RANGE frame over a stream that is not an INTERVAL")
                })?;
                keep_ms = Some(keep_ms.unwrap_or(0).max(ms));
            }
            WindowFrameUnits::Groups => return Err(unsupported("GROUPS window frames")),
        }
    }
    // Below: the stream's rows, each followed by its partition and offset.
    let full = slot.schema.clone();
    let (part_i, off_i) = (
        full.index_of(crate::format::PARTITION)?,
        full.index_of(crate::format::OFFSET)?,
    );
    let key_fields: Vec<arrow::datatypes::FieldRef> = [part_i, off_i]
        .iter()
        .enumerate()
        .map(|(k, &i)| Arc::new(full.field(i).clone().with_name(format!("__key{k}"))))
        .collect();
    let key_names: Vec<String> = key_fields.iter().map(|f| f.name().clone()).collect();
    let mid = carry_keys(&below, 2, &|n| {
        let s = n.downcast_ref::<SlotExec>()?;
        if !Arc::ptr_eq(s.slot(), &slot) {
            return None;
        }
        let mut cols: Vec<usize> = s
            .projection()
            .map_or_else(|| (0..full.fields().len()).collect(), <[usize]>::to_vec);
        let width = cols.len();
        cols.extend([part_i, off_i]);
        let leaf: Plan = Arc::new(SlotExec::new(slot.clone(), Some(cols)));
        Some(keys_last(&leaf, width, &[width, width + 1], &key_names))
    })?;
    let time = order[0].expr.clone();
    let mut fields: Vec<arrow::datatypes::FieldRef> = window.schema().fields().to_vec();
    fields.extend(key_fields);
    let with_keys = Arc::new(arrow::datatypes::Schema::new(fields));
    let state = OverState::new(exprs, below.schema(), 2, with_keys)?.appending();
    let slot = inner_slot(window.schema(), "window");
    let leaf: Plan = Arc::new(SlotExec::new(slot.clone(), None));
    let above = replace_node(physical, window, &leaf)?;
    Ok(StreamOver {
        input,
        mid,
        state,
        slot,
        above,
        time,
        pending: Vec::new(),
        pending_from: i64::MAX,
        keep_rows,
        keep_ms,
    })
}

/// The slot and column that column `idx` of `node`'s output is, through projections and
/// row-by-row operators.
fn source_column(node: &Plan, idx: usize) -> Option<(Arc<Slot>, String)> {
    if let Some(s) = node.downcast_ref::<SlotExec>() {
        return Some((s.slot().clone(), name_at(node, idx)));
    }
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let c = p.expr().get(idx)?.expr.downcast_ref::<Column>()?.index();
        return source_column(p.input(), c);
    }
    let passes = node.is::<SortExec>() || passes_rows(node);
    match (passes, node.children().as_slice()) {
        (true, [child]) => source_column(child, idx),
        _ => None,
    }
}

/// State topic keys of window functions over a stream: a partition's kept rows (this, then
/// its key), and the rows waiting for the watermark. (Stage keys start with a small stage
/// number.)
const OVER_PARTITION_KEY: &[u8] = b"\xffwindow/";
const OVER_PENDING_KEY: &[u8] = b"\xffpending";

/// A slot for the rows one of Strom's operators hands to the plan above it.
fn inner_slot(schema: SchemaRef, source: &str) -> Arc<Slot> {
    Slot::new(
        schema,
        crate::slot::Binding {
            source: source.into(),
            table: false,
            window: None,
        },
    )
}

/// `plan` with node `target` replaced by `with`.
fn replace_node(plan: &Plan, target: &Plan, with: &Plan) -> Result<Plan> {
    Ok(plan
        .clone()
        .transform_down(|n| {
            if Arc::ptr_eq(&n, target) {
                Ok(Transformed::new(
                    with.clone(),
                    true,
                    TreeNodeRecursion::Jump,
                ))
            } else {
                Ok(Transformed::no(n))
            }
        })?
        .data)
}

/// The plan's one window operator, if it has any: the operator, its functions (all with one
/// PARTITION BY and ORDER BY) and its input. Refused when there are several.
fn the_window(plan: &Plan) -> Result<Option<(Plan, WindowExprs, Plan)>> {
    let mut windows = Vec::new();
    plan.apply(|n| {
        if let Some((exprs, below)) = window_parts(n) {
            windows.push((n.clone(), exprs, below));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mixed = || unsupported("window functions with different PARTITION BY or ORDER BY");
    if windows.len() > 1 {
        return Err(mixed());
    }
    let Some((window, exprs, below)) = windows.pop() else {
        return Ok(None);
    };
    let first = exprs
        .first()
        .ok_or_else(|| SqlError::Internal("a window without functions".into()))?;
    if exprs
        .iter()
        .any(|e| e.partition_by() != first.partition_by() || e.order_by() != first.order_by())
    {
        return Err(mixed());
    }
    Ok(Some((window, exprs, below)))
}

/// A window operator's functions.
type WindowExprs = Vec<Arc<dyn WindowExpr>>;

/// A window operator's functions and input.
fn window_parts(n: &Plan) -> Option<(WindowExprs, Plan)> {
    if let Some(w) = n.downcast_ref::<BoundedWindowAggExec>() {
        return Some((w.window_expr().to_vec(), w.input().clone()));
    }
    n.downcast_ref::<WindowAggExec>()
        .map(|w| (w.window_expr().to_vec(), w.input().clone()))
}

/// With window functions above the stages: they must be over the one updating stage's rows,
/// row by row, with only projections and filters above them. Returns the plan above them,
/// the [`Over`], and the names of the identity columns that trail each output row.
fn over_stage(post: &Plan, stages: &[Stage]) -> Result<Option<(Plan, Over, Vec<String>)>> {
    let Some((window, exprs, below)) = the_window(post)? else {
        return Ok(None);
    };
    let [stage] = stages else {
        return Err(unsupported(
            "OVER (..) over the rows of more than one aggregate",
        ));
    };
    let keys = stage.state.group_names();
    if !stage.state.updating() || stage.state.windowed() || keys.is_empty() {
        return Err(unsupported(
            "OVER (..) over a windowed or global aggregate's rows (it works over a GROUP BY without window)",
        ));
    }
    let g = keys.len();
    let stage_schema = stage.slot.schema.clone();
    let key_fields: Vec<arrow::datatypes::FieldRef> = (0..g)
        .map(|k| {
            Arc::new(
                stage_schema
                    .field(k)
                    .as_ref()
                    .clone()
                    .with_name(format!("__key{k}")),
            )
        })
        .collect();
    // Below: the stage's rows, each followed by a copy of its group key.
    let names: Vec<String> = key_fields.iter().map(|f| f.name().clone()).collect();
    let group: Vec<usize> = (0..g).collect();
    let mid = carry_keys(&below, g, &|n| {
        let s = n.downcast_ref::<SlotExec>()?;
        if !Arc::ptr_eq(s.slot(), &stage.slot) {
            return None;
        }
        Some(keys_last(n, n.schema().fields().len(), &group, &names))
    })?;
    let mut fields: Vec<arrow::datatypes::FieldRef> = window.schema().fields().to_vec();
    fields.extend(key_fields);
    let out_schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let state = OverState::new(exprs, below.schema(), g, out_schema.clone())?;
    let slot = inner_slot(out_schema, "window");
    // Above: the window operator's rows with their identities.
    let leaf: Plan = Arc::new(SlotExec::new(slot.clone(), None));
    let above = carry_keys(post, g, &|n| {
        Arc::ptr_eq(n, &window).then(|| Ok(leaf.clone()))
    })?;
    Ok(Some((above, Over { mid, state, slot }, keys)))
}

/// Whether `node` passes its input's rows on with their columns as they are (some of them,
/// or in other batches).
fn passes_rows(node: &Plan) -> bool {
    node.downcast_ref::<FilterExec>()
        .is_some_and(|f| f.projection().is_none())
        || matches!(
            node.name(),
            "CoalesceBatchesExec" | "RepartitionExec" | "CooperativeExec"
        )
}

/// The first `width` columns of `node`, then its columns `keys` named `names` (identity
/// columns, last).
fn keys_last(node: &Plan, width: usize, keys: &[usize], names: &[String]) -> DfResult<Plan> {
    let exprs = (0..width)
        .map(|i| (i, name_at(node, i)))
        .chain(keys.iter().copied().zip(names.iter().cloned()))
        .map(|(i, alias)| ProjectionExpr {
            expr: Arc::new(Column::new(&name_at(node, i), i)) as Arc<dyn PhysicalExpr>,
            alias,
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(ProjectionExec::try_new(exprs, node.clone())?))
}

fn name_at(n: &Plan, i: usize) -> String {
    n.schema().field(i).name().clone()
}

/// `node` rebuilt so that every row keeps its identity (the last `g` columns): `leaf` says
/// what replaces a leaf (with the identity columns last), projections pass them on, and sorts
/// go (the window state keeps its own order). Anything else is refused.
fn carry_keys(
    node: &Plan,
    g: usize,
    leaf: &dyn Fn(&Plan) -> Option<DfResult<Plan>>,
) -> Result<Plan> {
    if let Some(l) = leaf(node) {
        return Ok(l?);
    }
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let input = carry_keys(p.input(), g, leaf)?;
        let n = input.schema().fields().len();
        let mut exprs: Vec<ProjectionExpr> = p.expr().to_vec();
        for i in n - g..n {
            let name = name_at(&input, i);
            exprs.push(ProjectionExpr {
                expr: Arc::new(Column::new(&name, i)),
                alias: name,
            });
        }
        return Ok(Arc::new(ProjectionExec::try_new(exprs, input)?));
    }
    if node.is::<SortExec>() {
        if let [child] = node.children().as_slice() {
            return carry_keys(child, g, leaf);
        }
    }
    if !passes_rows(node) {
        return Err(unsupported(&format!(
            "OVER (..) with {} between it and the aggregate below, or above it",
            node.name()
        )));
    }
    let kids = node
        .children()
        .into_iter()
        .map(|c| carry_keys(c, g, leaf))
        .collect::<Result<Vec<_>>>()?;
    Ok(
        datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            node.clone(),
            kids,
        )?,
    )
}

/// Finds the lowest aggregations under `node`: (top, the half with the raw input) pairs. A
/// two-phase aggregation is a final half over a partial half.
fn find_stages(node: &Arc<dyn ExecutionPlan>, out: &mut Vec<(Plan, Plan)>) -> Result<()> {
    let Some(agg) = node.downcast_ref::<AggregateExec>() else {
        for c in node.children() {
            find_stages(c, out)?;
        }
        return Ok(());
    };
    let bottom = match agg.mode() {
        AggregateMode::Final | AggregateMode::FinalPartitioned => {
            let mut partial = None;
            agg.input().apply(|n| {
                if n.is::<AggregateExec>() {
                    partial = Some(n.clone());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            partial.ok_or_else(|| SqlError::Internal("final aggregate without partial".into()))?
        }
        _ => node.clone(),
    };
    let below = bottom
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| SqlError::Internal("aggregate".into()))?
        .input()
        .clone();
    let mut nested = false;
    below.apply(|n| {
        nested |= n.is::<AggregateExec>();
        Ok(TreeNodeRecursion::Continue)
    })?;
    if nested {
        find_stages(&below, out)
    } else {
        out.push((node.clone(), bottom));
        Ok(())
    }
}

/// With one updating stage and, above it, one aggregation of row-by-row results whose
/// aggregates can retract: that aggregation as an [`Upper`], and the plan above it.
fn retracting_upper(
    post: &Plan,
    stages: &mut [Stage],
    emit_changes: bool,
) -> Result<Option<(Plan, Upper)>> {
    let [stage] = stages else { return Ok(None) };
    if !stage.state.updating() || stage.state.windowed() {
        return Ok(None);
    }
    let mut found = Vec::new();
    find_stages(post, &mut found)?;
    let [(top, bottom)] = found.as_slice() else {
        return Ok(None);
    };
    let part = bottom
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| SqlError::Internal("aggregate".into()))?;
    let mid = part.input().clone();
    let mut row_wise = true;
    mid.apply(|n| {
        row_wise &= !n.name().contains("Join") && !n.is::<AggregateExec>();
        Ok(TreeNodeRecursion::Continue)
    })?;
    // Above the upper aggregation: nothing stateful either.
    let mut above_ok = true;
    post.apply(|n| {
        if Arc::ptr_eq(n, top) {
            return Ok(TreeNodeRecursion::Jump);
        }
        above_ok &= !n.name().contains("Join") && !n.is::<AggregateExec>();
        Ok(TreeNodeRecursion::Continue)
    })?;
    if !row_wise || !above_ok || part.group_expr().has_grouping_set() {
        return Ok(None);
    }
    let spec = AggSpec {
        group: part.group_expr().expr().to_vec(),
        aggs: part.aggr_expr().to_vec(),
        filters: part.filter_expr().to_vec(),
        out_schema: top.schema(),
        session: false,
        emit_changes,
    };
    let state = AggState::new(spec, &mid.schema())?;
    if state.windowed() {
        return Ok(None);
    }
    if !state.can_retract()? {
        return Err(unsupported(
            "an aggregate over an updating aggregate's rows with MIN, MAX or another aggregate that cannot take a row back (SUM, COUNT and AVG can)",
        ));
    }
    stage.state.keep_last();
    let slot = inner_slot(top.schema(), "aggregate");
    let leaf: Plan = Arc::new(SlotExec::new(slot.clone(), None));
    let above = replace_node(post, top, &leaf)?;
    Ok(Some((above, Upper { mid, state, slot })))
}

/// Refuses what cannot run per micro-batch above the stages: the plan above sees only what
/// the stages emitted in this batch, so an aggregation or join there must group or join by
/// window, over windows that emit once (final results).
fn check_above_stages(
    post: &Arc<dyn ExecutionPlan>,
    stages: &[Stage],
    leaves: &[Arc<dyn ExecutionPlan>],
    emit_changes: bool,
    stream_bounded: bool,
) -> Result<()> {
    let mut stateful_above = stages.len() > 1;
    post.apply(|n| {
        stateful_above |= n.is::<AggregateExec>() || n.name().contains("Join");
        Ok(TreeNodeRecursion::Continue)
    })?;
    if !stateful_above {
        return Ok(());
    }
    let over = "an aggregate over another aggregate, or a join with one,";
    if emit_changes {
        return Err(unsupported(&format!(
            "EMIT CHANGES with {over} (their rows would change after the fact)"
        )));
    }
    if stages.iter().any(|s| !s.state.windowed()) {
        return Err(unsupported(&format!(
            "{over} unless the inner aggregate is windowed (GROUP BY window_start, window_end, ..): split it into two queries through a topic"
        )));
    }
    let mut problem: Option<SqlError> = None;
    post.apply(|n| {
        if let Some(s) = n.downcast_ref::<SlotExec>() {
            let is_stage = leaves.iter().any(|l| Arc::ptr_eq(l, n));
            if !is_stage && !s.slot().binding.table && !stream_bounded {
                problem.get_or_insert(unsupported(
                    "a join of a stream with an aggregate's result (write the aggregate to a topic with its own query, then join that)",
                ));
            }
        } else if let Some(a) = n.downcast_ref::<AggregateExec>() {
            if !matches!(a.mode(), AggregateMode::Final | AggregateMode::FinalPartitioned) {
                let wins = window_columns(a.input(), leaves);
                let by_window = a.group_expr().expr().iter().any(|(e, _)| {
                    e.downcast_ref::<Column>()
                        .is_some_and(|c| wins.contains(&c.index()))
                });
                if !by_window {
                    problem.get_or_insert(unsupported(&format!(
                        "{over} unless the outer one groups by the inner one's window (window_start or window_end)"
                    )));
                }
            }
        } else if let Some(j) = n.downcast_ref::<HashJoinExec>() {
            let (l, r) = (
                window_columns(j.left(), leaves),
                window_columns(j.right(), leaves),
            );
            let col = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().map(Column::index);
            let on_window = j.on().iter().any(|(a, b)| {
                col(a).is_some_and(|a| l.contains(&a)) && col(b).is_some_and(|b| r.contains(&b))
            });
            // A stream's side: its retained rows meet each window's result once, as it closes.
            let with_stream = stream_bounded
                && (!reads_stage(j.left(), leaves) || !reads_stage(j.right(), leaves));
            if !on_window && !with_stream {
                problem.get_or_insert(unsupported(&format!(
                    "{over} unless it joins on the aggregates' window (window_start or window_end)"
                )));
            }
        } else if n.name().contains("Join") {
            problem.get_or_insert(unsupported(&format!(
                "{over} unless it is an equi-join on the aggregates' window"
            )));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match problem {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

/// Whether `node` reads a stage's rows.
fn reads_stage(node: &Arc<dyn ExecutionPlan>, leaves: &[Arc<dyn ExecutionPlan>]) -> bool {
    let mut found = false;
    let _ = node.apply(|n| {
        found |= leaves.iter().any(|l| Arc::ptr_eq(l, n));
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Output columns of `node` that are a stage's `window_start` or `window_end`, passed up
/// unchanged (renamed or not). Unknown operators pass none.
fn window_columns(
    node: &Arc<dyn ExecutionPlan>,
    leaves: &[Arc<dyn ExecutionPlan>],
) -> HashSet<usize> {
    // The positions of `exprs` that pass one of `input`'s window columns up unchanged.
    let passed = |input: &Plan, exprs: Vec<&Arc<dyn PhysicalExpr>>| -> HashSet<usize> {
        let child = window_columns(input, leaves);
        exprs
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.downcast_ref::<Column>()
                    .is_some_and(|c| child.contains(&c.index()))
            })
            .map(|(i, _)| i)
            .collect()
    };
    if leaves.iter().any(|l| Arc::ptr_eq(l, node)) {
        return node
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() == WINDOW_END || f.name() == WINDOW_START)
            .map(|(i, _)| i)
            .collect();
    }
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        return passed(p.input(), p.expr().iter().map(|pe| &pe.expr).collect());
    }
    if let Some(a) = node.downcast_ref::<AggregateExec>() {
        return passed(
            a.input(),
            a.group_expr().expr().iter().map(|(e, _)| e).collect(),
        );
    }
    if let Some(j) = node.downcast_ref::<HashJoinExec>() {
        if *j.join_type() != JoinType::Inner {
            return HashSet::new();
        }
        let l = window_columns(j.left(), leaves);
        let r = window_columns(j.right(), leaves);
        let n_left = j.left().schema().fields().len();
        let joined: Vec<bool> = (0..j.join_schema().fields().len())
            .map(|i| {
                if i < n_left {
                    l.contains(&i)
                } else {
                    r.contains(&(i - n_left))
                }
            })
            .collect();
        return match &j.projection {
            Some(p) => p
                .iter()
                .enumerate()
                .filter(|(_, &i)| joined.get(i).copied().unwrap_or(false))
                .map(|(o, _)| o)
                .collect(),
            None => (0..joined.len()).filter(|&i| joined[i]).collect(),
        };
    }
    // Operators that pass their one input's rows through with the same columns.
    match node.children().as_slice() {
        [child] if child.schema().fields() == node.schema().fields() => {
            window_columns(child, leaves)
        }
        _ => HashSet::new(),
    }
}

/// How long a stream-stream join must retain rows, or `None` without such a join.
/// How long joins must retain stream rows: `.0` for a join of two streams, `.1` for a join of
/// a stream with an aggregate's result (the stream's rows wait for windows to close).
fn join_retention(
    plan: &LogicalPlan,
    used: &[Arc<Slot>],
    defs: &BTreeMap<String, Arc<SourceDef>>,
) -> Result<JoinBounds> {
    let mut out: Option<i64> = None;
    let mut with_agg: Option<i64> = None;
    let mut deadlines: BTreeMap<String, String> = BTreeMap::new();
    let mut err = None;
    let interval_bound = |f: &Option<Expr>| {
        let mut bound: Option<i64> = None;
        if let Some(f) = f {
            let _ = f.apply(|e| {
                if let Expr::Literal(v, _) = e {
                    if let Some(ms) = interval_ms(v) {
                        bound = Some(bound.map_or(ms, |b| b.max(ms)));
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        bound
    };
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
            let aggregated = |p: &LogicalPlan| {
                let mut found = false;
                let _ = p.apply(|x| {
                    found |= matches!(x, LogicalPlan::Aggregate(_));
                    Ok(TreeNodeRecursion::Continue)
                });
                found
            };
            // A join over aggregates' results runs per batch on windows as they close; a
            // stream joined with one keeps its rows as long as the condition's bound says.
            match (aggregated(&j.left), aggregated(&j.right)) {
                (false, false) => {}
                (true, true) => return Ok(TreeNodeRecursion::Continue),
                (true, false) | (false, true) => {
                    let plain = if aggregated(&j.left) { &j.right } else { &j.left };
                    if streams(plain) > 0 {
                        match interval_bound(&j.filter) {
                            Some(b) => with_agg = Some(with_agg.map_or(b, |o| o.max(b))),
                            None => {
                                err = Some(SqlError::Unsupported(
                                    "a join of a stream with an aggregate's result needs a time bound on the stream's rows, e.g. `WHERE s.ts BETWEEN w.window_end - INTERVAL '10' SECOND AND w.window_end`".into(),
                                ));
                            }
                        }
                    }
                    return Ok(TreeNodeRecursion::Continue);
                }
            }
            if streams(&j.left) > 0 && streams(&j.right) > 0 {
                let bound = interval_bound(&j.filter);
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
                    _ if j.filter.is_some() => match row_deadlines(j, defs) {
                        // Bounded by columns (`b.ts BETWEEN a.ts AND a.expires`): each row is
                        // kept until the watermark passes its own deadline.
                        Some(d) => {
                            deadlines.extend(d);
                            out = Some(out.unwrap_or(0));
                        }
                        None => err = Some(SqlError::Unsupported(
                            "a join of two streams needs a time bound: an INTERVAL (`ON a.id = b.id AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' HOUR`), or each side's time bounded by the other's columns (`b.ts BETWEEN a.ts AND a.expires`)".into(),
                        )),
                    },
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
        None => Ok(JoinBounds {
            streams: out,
            with_aggregate: with_agg,
            deadlines,
        }),
    }
}

/// How long joins keep rows.
struct JoinBounds {
    /// A join of two streams: a fixed time, in ms.
    streams: Option<i64>,
    /// A stream joined with an aggregate's result: a fixed time, in ms.
    with_aggregate: Option<i64>,
    /// A join of two streams bounded by columns: per source, the column past which (once the
    /// watermark passes it) a row can match nothing more.
    deadlines: BTreeMap<String, String>,
}

/// Per-row deadlines of a join of two streams bounded by columns: from each condition
/// `x <= y` (or `<`, or `y >= x`) where `x` is its side's event time, rows of `y`'s side
/// cannot meet rows still to come once the watermark passes `y`. Both sides need one.
fn row_deadlines(
    j: &datafusion::logical_expr::Join,
    defs: &BTreeMap<String, Arc<SourceDef>>,
) -> Option<BTreeMap<String, String>> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let source_of = |p: &LogicalPlan| {
        let mut names = Vec::new();
        let _ = p.apply(|x| {
            if let LogicalPlan::TableScan(s) = x {
                names.push(s.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        match names.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    };
    let (left, right) = (source_of(&j.left)?, source_of(&j.right)?);
    if left == right {
        return None;
    }
    // (source, column) of a column of either side.
    let side = |e: &Expr| match e {
        Expr::Column(c) if j.left.schema().has_column(c) => Some((left.clone(), c.name.clone())),
        Expr::Column(c) if j.right.schema().has_column(c) => Some((right.clone(), c.name.clone())),
        _ => None,
    };
    let is_time = |(src, col): &(String, String)| {
        defs.get(src)
            .is_some_and(|d| d.time_column() == col.as_str())
    };
    let mut out = BTreeMap::new();
    for c in datafusion::logical_expr::utils::split_conjunction(j.filter.as_ref()?) {
        let Expr::BinaryExpr(BinaryExpr {
            left: l,
            op,
            right: r,
        }) = c
        else {
            continue;
        };
        // As `lo <= hi`.
        let (lo, hi) = match op {
            Operator::LtEq | Operator::Lt => (side(l), side(r)),
            Operator::GtEq | Operator::Gt => (side(r), side(l)),
            _ => continue,
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        if lo.0 != hi.0 && is_time(&lo) {
            out.insert(hi.0, hi.1);
        }
    }
    (out.contains_key(&left) && out.contains_key(&right)).then_some(out)
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

impl StreamOver {
    fn time_of(&self, b: &RecordBatch) -> Result<arrow::array::TimestampMillisecondArray> {
        Ok(crate::window::millis(
            &self.time.evaluate(b)?.into_array(b.num_rows())?,
        )?)
    }

    /// Adds rows to those waiting for the watermark.
    fn wait(&mut self, b: RecordBatch) -> Result<()> {
        if b.num_rows() == 0 {
            return Ok(());
        }
        let t = self.time_of(&b)?;
        if let Some(m) = arrow::compute::min(&t) {
            self.pending_from = self.pending_from.min(m);
        }
        self.pending.push(b);
        Ok(())
    }

    /// Puts the pending rows the watermark passed in place, in time order.
    fn release(&mut self, watermark: i64) -> Result<()> {
        if self.pending.is_empty() || self.pending_from >= watermark {
            return Ok(());
        }
        let schema = self.pending[0].schema();
        let all = arrow::compute::concat_batches(&schema, &self.pending)?;
        self.pending.clear();
        let t = self.time_of(&all)?;
        let ready: BooleanArray = t
            .iter()
            .map(|v| Some(v.is_some_and(|v| v < watermark)))
            .collect();
        let waiting = filter_record_batch(&all, &arrow::compute::not(&ready)?)?;
        self.pending_from = i64::MAX;
        self.wait(waiting)?;
        let released = filter_record_batch(&all, &ready)?;
        if released.num_rows() == 0 {
            return Ok(());
        }
        let t = self.time_of(&released)?;
        let idx = arrow::compute::sort_to_indices(&t, None, None)?;
        let cols = released
            .columns()
            .iter()
            .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
            .collect::<Result<Vec<_>, _>>()?;
        let sorted = RecordBatch::try_new(schema, cols)?;
        self.state.apply(&[], &[sorted])?;
        Ok(())
    }

    /// What changed since the last call, for the state topic: (key, value or `None` to
    /// delete) pairs, the partitions' kept rows and the rows waiting for the watermark.
    pub fn checkpoint(&mut self) -> Result<Vec<StateRecord>> {
        let mut out: Vec<StateRecord> = self
            .state
            .checkpoint()
            .into_iter()
            .map(|(k, v)| ([OVER_PARTITION_KEY, &k].concat(), v))
            .collect();
        let mut v = Vec::new();
        if !self.pending.is_empty() {
            let conv = self.pending_converter()?;
            for b in &self.pending {
                for row in conv.convert_columns(b.columns())?.iter() {
                    v.extend_from_slice(&(row.as_ref().len() as u32).to_be_bytes());
                    v.extend_from_slice(row.as_ref());
                }
            }
        }
        out.push((OVER_PENDING_KEY.to_vec(), Some(v)));
        Ok(out)
    }

    /// Puts back one record of [`StreamOver::checkpoint`]; `false` if the key is not one.
    pub fn restore(&mut self, key: &[u8], v: &[u8]) -> Result<bool> {
        if let Some(part) = key.strip_prefix(OVER_PARTITION_KEY) {
            self.state.restore(part, v)?;
            return Ok(true);
        }
        if key != OVER_PENDING_KEY {
            return Ok(false);
        }
        let conv = self.pending_converter()?;
        let parser = conv.parser();
        let mut rows = Vec::new();
        let mut rest = v;
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            let (row, tail) = tail
                .split_at_checked(len)
                .ok_or_else(|| SqlError::Internal("a pending row is cut short".into()))?;
            rows.push(parser.parse(row));
            rest = tail;
        }
        if !rows.is_empty() {
            let cols = conv.convert_rows(rows)?;
            self.wait(RecordBatch::try_new(self.mid.schema(), cols)?)?;
        }
        Ok(true)
    }

    fn pending_converter(&self) -> Result<arrow::row::RowConverter> {
        Ok(arrow::row::RowConverter::new(
            self.mid
                .schema()
                .fields()
                .iter()
                .map(|f| arrow::row::SortField::new(f.data_type().clone()))
                .collect(),
        )?)
    }

    /// Forgets the rows no frame of a row still to come can hold.
    fn evict(&mut self, watermark: i64) {
        let since = self
            .keep_ms
            .map_or(i64::MAX, |ms| watermark.saturating_sub(ms));
        self.state.evict(self.keep_rows, since);
    }
}

impl Aggregation {
    /// Every Strom-kept aggregation state: the stages', then the upper one's.
    pub fn states_mut(&mut self) -> Vec<&mut AggState> {
        let mut v: Vec<&mut AggState> = self.stages.iter_mut().map(|s| &mut s.state).collect();
        if let Some(u) = self.upper.as_mut() {
            v.push(&mut u.state);
        }
        v
    }
}

impl Pipeline {
    /// The plans that read the inputs: the stages' lower halves, or the whole plan.
    fn pres(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        match &self.agg {
            Some(a) => a.stages.iter().map(|s| s.pre.clone()).collect(),
            None => vec![self.pre.clone()],
        }
    }

    /// Runs every lower plan on the slots as they are set, adding each one's rows to `rows`.
    async fn run_pres(&self, rows: &mut [Vec<RecordBatch>]) -> Result<()> {
        for (i, pre) in self.pres().iter().enumerate() {
            rows[i].extend(run_plan(pre, &self.task).await?);
        }
        Ok(())
    }

    /// Processes one micro-batch: `fresh[i]` are the new rows of input `i` (tables: their
    /// current rows, or `None` if unchanged). Returns the rows to write.
    pub async fn process(
        &mut self,
        fresh: Vec<Option<Vec<RecordBatch>>>,
        watermark_before: i64,
        watermark_after: i64,
    ) -> Result<Vec<RecordBatch>> {
        let mut rows: Vec<Vec<RecordBatch>> = vec![Vec::new(); self.pres().len()];
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
        if self.stream_over.is_some() {
            return self
                .process_stream_over(news, watermark_before, watermark_after)
                .await;
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
                self.run_pres(&mut rows).await?;
                // Old left against new right.
                self.inputs[a].slot.set(self.inputs[a].retained.clone());
                self.inputs[b].slot.set(new_b.clone());
                self.run_pres(&mut rows).await?;
                self.inputs[a].retained.extend(new_a);
                self.inputs[b].retained.extend(new_b);
            }
            self.evict(watermark_after)?;
        } else {
            let mut any = false;
            for &i in &stream_inputs {
                let b = news.remove(&i).unwrap_or_default();
                any |= !b.is_empty();
                if self.post_streams.contains(&i) {
                    self.inputs[i].retained.extend(b.iter().cloned());
                }
                self.inputs[i].slot.set(b);
            }
            if any {
                self.run_pres(&mut rows).await?;
            }
        }
        for &i in &stream_inputs {
            self.inputs[i].slot.set(Vec::new());
        }
        let Some(agg) = &mut self.agg else {
            let rows = rows.into_iter().flatten();
            return Ok(rows.filter(|b| b.num_rows() > 0).collect());
        };
        let mut any_emitted = false;
        // What the plan above gets from an updating aggregation (or the window functions over
        // one), and how its rows are keyed: rows it filters out are deleted from the output.
        let mut fed: Option<(RecordBatch, Fed)> = None;
        // Rows that left the window state without coming back (filtered out below it): their
        // identity columns.
        let mut removed: Option<Vec<ArrayRef>> = None;
        let single = agg.stages.len() == 1;
        for (stage, rows) in agg.stages.iter_mut().zip(rows) {
            for b in &rows {
                let late = stage.state.update(b, watermark_before)?;
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
            if let Some(over) = agg.over.as_mut() {
                // Each changed row leaves its place in the window state and takes its new one.
                if let Some(changes) = stage.state.take_changes()? {
                    let touched = over.state.identities(&changes)?;
                    stage.slot.set(vec![changes.clone()]);
                    let rows = run_plan(&over.mid, &self.task).await;
                    stage.slot.set(Vec::new());
                    let gone = over.state.apply(&touched, &rows?)?;
                    if !gone.is_empty() {
                        let idx = arrow::array::UInt32Array::from(gone);
                        removed = Some(
                            changes.columns()[..over.state.identity_width()]
                                .iter()
                                .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
                                .collect::<Result<Vec<_>, _>>()?,
                        );
                    }
                }
                match over.state.take_changes()? {
                    Some(c) => {
                        any_emitted = true;
                        fed = Some((c.clone(), Fed::Tail));
                        over.slot.set(vec![c]);
                    }
                    None if removed.is_some() => {
                        fed = Some((RecordBatch::new_empty(over.slot.schema.clone()), Fed::Tail));
                    }
                    None => {}
                }
                continue;
            }
            if let Some(upper) = agg.upper.as_mut() {
                // The upper aggregation takes back what each change replaces, then adds it.
                let (old, new) = stage.state.take_changes_with_old()?;
                if let Some(old) = old {
                    stage.slot.set(vec![old]);
                    for b in run_plan(&upper.mid, &self.task).await? {
                        upper.state.retract(&b)?;
                    }
                }
                if let Some(new) = new {
                    stage.slot.set(vec![new]);
                    for b in run_plan(&upper.mid, &self.task).await? {
                        upper.state.update(&b, i64::MIN)?;
                    }
                }
                stage.slot.set(Vec::new());
                if let Some(c) = upper.state.take_changes()? {
                    any_emitted = true;
                    fed = Some((c.clone(), Fed::Groups(upper.state.group_names())));
                    upper.slot.set(vec![c]);
                }
                continue;
            }
            let mut emitted = Vec::new();
            if let Some(c) = stage.state.take_changes()? {
                if single && !stage.state.windowed() {
                    fed = Some((c.clone(), Fed::Groups(stage.state.group_names())));
                }
                emitted.push(c);
            }
            if let Some(c) = stage.state.close(watermark_after)? {
                emitted.push(c);
            }
            any_emitted |= !emitted.is_empty();
            stage.slot.set(emitted);
        }
        for &i in &self.post_streams {
            self.inputs[i].slot.set(self.inputs[i].retained.clone());
        }
        let out = if any_emitted {
            run_plan(&agg.post, &self.task).await?
        } else {
            Vec::new()
        };
        for stage in &agg.stages {
            stage.slot.set(Vec::new());
        }
        if let Some(upper) = &agg.upper {
            upper.slot.set(Vec::new());
        }
        if let Some(over) = &agg.over {
            over.slot.set(Vec::new());
        }
        for &i in &self.post_streams {
            self.inputs[i].slot.set(Vec::new());
        }
        self.evict_post(watermark_after)?;
        if let Some((batch, keys)) = fed {
            if let Some(d) = self.deleted(&batch, &keys, &out, removed)? {
                self.deletes.push(d);
            }
        }
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// The keys of `fed`'s rows (changed rows of an updating aggregation, or window results
    /// over one) that the plan above left out of `out`, and of the `removed` ones: their
    /// output rows are deleted. Keys already deleted (and not written since) are not deleted
    /// again. `None` when there are none, or the output's key is not made of `fed`'s columns.
    fn deleted(
        &mut self,
        fed: &RecordBatch,
        keys: &Fed,
        out: &[RecordBatch],
        removed: Option<Vec<ArrayRef>>,
    ) -> Result<Option<RecordBatch>> {
        // Key columns: in `fed`, in the output rows, and as the output names them.
        let width = self.schema.fields().len();
        let (fed_cols, out_cols, fields): (Vec<usize>, Vec<usize>, Vec<arrow::datatypes::Field>) =
            match keys {
                Fed::Tail => {
                    let k = self.key_tail.len();
                    let n = fed.num_columns();
                    let fields = (0..k)
                        .map(|j| {
                            fed.schema()
                                .field(n - k + j)
                                .clone()
                                .with_name(self.key_tail[j].clone())
                        })
                        .collect();
                    ((n - k..n).collect(), (width..width + k).collect(), fields)
                }
                Fed::Groups(names) => {
                    let mut f = Vec::new();
                    let mut o = Vec::new();
                    let mut fields = Vec::new();
                    for i in crate::runner::key_columns(self) {
                        let field = self.schema.field(i);
                        let Some(j) = names.iter().position(|n| n == field.name()) else {
                            return Ok(None);
                        };
                        f.push(j);
                        o.push(i);
                        fields.push(field.clone());
                    }
                    if f.len() != names.len() {
                        // Not keyed by the whole group: rows are not told apart.
                        return Ok(None);
                    }
                    (f, o, fields)
                }
            };
        if fed_cols.is_empty() || fed.num_rows() == 0 && removed.is_none() {
            return Ok(None);
        }
        let conv = arrow::row::RowConverter::new(
            fields
                .iter()
                .map(|f| arrow::row::SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let columns = |b: &RecordBatch, cols: &[usize]| -> Result<Vec<ArrayRef>> {
            cols.iter()
                .zip(&fields)
                .map(|(&c, f)| Ok(arrow::compute::cast(b.column(c), f.data_type())?))
                .collect()
        };
        let mut kept = HashSet::new();
        for b in out {
            if out_cols.iter().any(|&c| c >= b.num_columns()) {
                return Ok(None);
            }
            let rows = conv.convert_columns(&columns(b, &out_cols)?)?;
            kept.extend(rows.iter().map(|r| r.owned()));
        }
        for k in &kept {
            self.deleted_keys.remove(k);
        }
        let mut fed_keys = columns(fed, &fed_cols)?;
        if let Some(r) = removed {
            let r = r
                .iter()
                .zip(&fields)
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            fed_keys = fed_keys
                .iter()
                .zip(&r)
                .map(|(a, b)| arrow::compute::concat(&[a.as_ref(), b.as_ref()]))
                .collect::<Result<Vec<_>, _>>()?;
        }
        let n = fed_keys.first().map_or(0, |c| c.len());
        let rows = conv.convert_columns(&fed_keys)?;
        let gone: Vec<u32> = (0..n)
            .filter(|&i| {
                let r = rows.row(i).owned();
                !kept.contains(&r) && self.deleted_keys.insert(r)
            })
            .map(|i| i as u32)
            .collect();
        if gone.is_empty() {
            return Ok(None);
        }
        let idx = arrow::array::UInt32Array::from(gone);
        let cols = fed_keys
            .iter()
            .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
            .collect::<Result<Vec<_>, _>>()?;
        let fields: Vec<arrow::datatypes::Field> =
            fields.into_iter().map(|f| f.with_nullable(true)).collect();
        Ok(Some(RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(fields)),
            cols,
        )?))
    }

    /// [`Pipeline::process`] for window functions over a stream's rows.
    async fn process_stream_over(
        &mut self,
        mut news: HashMap<usize, Vec<RecordBatch>>,
        watermark_before: i64,
        watermark_after: i64,
    ) -> Result<Vec<RecordBatch>> {
        let Some(so) = self.stream_over.as_mut() else {
            return Ok(Vec::new());
        };
        let fresh = news.remove(&so.input).unwrap_or_default();
        if !fresh.is_empty() {
            let slot = &self.inputs[so.input].slot;
            slot.set(fresh);
            let rows = run_plan(&so.mid, &self.task).await;
            slot.set(Vec::new());
            for b in rows? {
                // Rows behind the watermark (or without a time) are late.
                let t = so.time_of(&b)?;
                let late: BooleanArray = t
                    .iter()
                    .map(|v| Some(v.is_none_or(|v| v < watermark_before)))
                    .collect();
                let n_late = late.true_count();
                if n_late > 0 {
                    self.late += n_late as u64;
                    let l = filter_record_batch(&b, &late)?;
                    let width = l.num_columns() - 2;
                    self.late_rows
                        .push(l.project(&(0..width).collect::<Vec<_>>())?);
                    let on_time = arrow::compute::not(&late)?;
                    so.wait(filter_record_batch(&b, &on_time)?)?;
                } else {
                    so.wait(b)?;
                }
            }
        }
        so.release(watermark_after)?;
        let out = match so.state.take_changes()? {
            Some(c) => {
                let width = c.num_columns() - 2;
                so.slot
                    .set(vec![c.project(&(0..width).collect::<Vec<_>>())?]);
                let r = run_plan(&so.above, &self.task).await;
                so.slot.set(Vec::new());
                r?
            }
            None => Vec::new(),
        };
        so.evict(watermark_after);
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// Inputs whose rows are kept between micro-batches (join buffers): both streams of a
    /// stream-stream join, and streams joined with an aggregate's result.
    pub fn retaining(&self) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        if self.join_retention.is_some() {
            v.extend((0..self.inputs.len()).filter(|&i| !self.inputs[i].slot.binding.table));
        }
        for &i in &self.post_streams {
            if !v.contains(&i) {
                v.push(i);
            }
        }
        v
    }

    /// The smallest offset of a retained row per (topic, partition): where a restarted query
    /// reads again from to rebuild its join buffers.
    pub fn retained_from(&self) -> Result<BTreeMap<(String, i32), i64>> {
        let mut out: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for i in self.retaining() {
            let input = &self.inputs[i];
            for b in &input.retained {
                let (Ok(p), Ok(o)) = (
                    b.schema().index_of(crate::format::PARTITION),
                    b.schema().index_of(crate::format::OFFSET),
                ) else {
                    continue;
                };
                let parts = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int32Type>(
                    b.column(p).as_ref(),
                );
                let offs = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                    b.column(o).as_ref(),
                );
                for (part, off) in parts.iter().zip(offs.iter()) {
                    if let (Some(part), Some(off)) = (part, off) {
                        let e = out.entry((input.def.topic.clone(), part)).or_insert(off);
                        *e = (*e).min(off);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Drops retained rows (of joins of either kind) that can no longer match.
    pub fn evict_retained(&mut self, watermark: i64) -> Result<()> {
        self.evict(watermark)?;
        self.evict_post(watermark)
    }

    /// Drops rows of streams joined with an aggregate's result that can meet no window still
    /// to close: those windows end after `watermark`, so rows older than it by more than the
    /// join's bound are done.
    fn evict_post(&mut self, watermark: i64) -> Result<()> {
        for i in self.post_streams.clone() {
            self.evict_input(i, watermark.saturating_sub(self.post_retention))?;
        }
        Ok(())
    }

    /// Drops retained join rows that can no longer match.
    fn evict(&mut self, watermark: i64) -> Result<()> {
        let Some(keep) = self.join_retention else {
            return Ok(());
        };
        let limit = watermark.saturating_sub(keep);
        for i in 0..self.inputs.len() {
            match self.join_deadlines.get(&self.inputs[i].def.name).cloned() {
                Some(col) => self.evict_by(i, &col, watermark)?,
                None => self.evict_input(i, limit)?,
            }
        }
        Ok(())
    }

    /// Drops input `i`'s retained rows older than `limit`.
    fn evict_input(&mut self, i: usize, limit: i64) -> Result<()> {
        let col = match &self.inputs[i].slot.binding.window {
            Some(_) => WINDOW_END.to_string(),
            None => self.inputs[i].def.time_column().to_string(),
        };
        self.evict_by(i, &col, limit)
    }

    /// Drops input `i`'s retained rows whose `col` is before `limit`.
    fn evict_by(&mut self, i: usize, col: &str, limit: i64) -> Result<()> {
        let input = &mut self.inputs[i];
        if input.retained.is_empty() {
            return Ok(());
        }
        let mut kept = Vec::new();
        for b in input.retained.drain(..) {
            let t = crate::window::times(&b, col)?;
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
        Ok(())
    }

    /// Names of the columns the output's rows are grouped by: those of the topmost
    /// aggregation (the last part of qualified names). Empty when stages are joined without
    /// an aggregation above them.
    pub fn group_names(&self) -> Vec<String> {
        let Some(agg) = &self.agg else {
            return Vec::new();
        };
        if agg.over.is_some() {
            // Keyed by the identity columns that trail each row.
            return Vec::new();
        }
        if let Some(upper) = &agg.upper {
            return upper.state.group_names();
        }
        let mut top: Option<Vec<String>> = None;
        let _ = agg.post.apply(|n| {
            if let Some(a) = n.downcast_ref::<AggregateExec>() {
                let names = a.group_expr().expr().iter().flat_map(|(e, name)| {
                    let col = e.downcast_ref::<Column>().map(|c| c.name().to_string());
                    let short = name.rsplit('.').next().unwrap_or(name).to_string();
                    col.into_iter().chain(std::iter::once(short))
                });
                top = Some(names.collect());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        match (top, agg.stages.as_slice()) {
            (Some(names), _) => names,
            (None, [stage]) => stage.state.group_names(),
            (None, _) => Vec::new(),
        }
    }

    /// Rebuilds window state over an updating aggregate after a restart, from the stage's rows
    /// restored from the state topic.
    pub async fn rebuild_windows(&mut self) -> Result<()> {
        let Some(agg) = &mut self.agg else {
            return Ok(());
        };
        let (Some(over), [stage]) = (&mut agg.over, agg.stages.as_mut_slice()) else {
            return Ok(());
        };
        let Some(rows) = stage.state.all_rows()? else {
            return Ok(());
        };
        stage.slot.set(vec![rows]);
        let out = run_plan(&over.mid, &self.task).await;
        stage.slot.set(Vec::new());
        for b in out? {
            over.state.load(&b)?;
        }
        Ok(())
    }

    /// Whether the output is an upsert changelog.
    pub fn updating(&self) -> bool {
        self.agg
            .as_ref()
            .is_some_and(|a| a.upper.is_some() || a.stages.iter().any(|s| s.state.updating()))
    }
}
