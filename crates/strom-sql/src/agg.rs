//! The aggregation of a continuous query: DataFusion's accumulators, kept per group between
//! micro-batches.
//!
//! A group is a window (`window_start`, `window_end`, or none) and the values of the other
//! `GROUP BY` expressions. With windows, a group closes when the watermark reaches its end: its
//! final row is emitted then (or, with `EMIT CHANGES`, its row was emitted at every change) and
//! it is forgotten. Rows for a window that has already closed are late: counted, returned to the
//! caller (for a late topic), never added. Without windows every change is emitted (an upsert
//! changelog). Session windows start as `[t, t + gap)` per row and merge with every session of
//! the same key they overlap, their accumulators merged through their states.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;

use crate::format::ts_type;
use crate::window::{WINDOW_END, WINDOW_START};

/// A group: its window and its key row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// The window's end (first, so closing order is key order), 0 without windows.
    pub end: i64,
    /// The window's start, 0 without windows.
    pub start: i64,
    /// The other group-by values, in row format.
    pub row: OwnedRow,
}

/// What the aggregate's input and output look like.
pub struct AggSpec {
    /// Group-by expressions with their names.
    pub group: Vec<(Arc<dyn PhysicalExpr>, String)>,
    /// The aggregate functions.
    pub aggs: Vec<Arc<AggregateFunctionExpr>>,
    /// Their `FILTER (WHERE ..)` clauses.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The output: group columns, then aggregate columns.
    pub out_schema: SchemaRef,
    /// Session windows: merge overlapping windows of a key.
    pub session: bool,
    /// Emit every change rather than final window results.
    pub emit_changes: bool,
}

/// A batch as an aggregation sees it.
struct Inputs {
    /// The group-by expressions' values.
    group_vals: Vec<ArrayRef>,
    /// Each row's group key (without window columns), row-encoded.
    rows: arrow::row::Rows,
    /// Each aggregate's arguments.
    args: Vec<Vec<ArrayRef>>,
    /// Each aggregate's `FILTER`, if any.
    filters: Vec<Option<BooleanArray>>,
}

/// Per-group accumulators and the bookkeeping around them.
pub struct AggState {
    spec: AggSpec,
    start_idx: Option<usize>,
    end_idx: Option<usize>,
    key_idx: Vec<usize>,
    /// With [`AggState::keep_last`]: each group's last emitted row.
    last: Option<HashMap<GroupKey, RecordBatch>>,
    conv: RowConverter,
    groups: HashMap<GroupKey, Vec<Box<dyn Accumulator>>>,
    by_end: BTreeSet<GroupKey>,
    sessions: HashMap<OwnedRow, Vec<(i64, i64)>>,
    dirty: Vec<GroupKey>,
    dirty_set: HashSet<GroupKey>,
    /// Groups changed or removed since the last checkpoint.
    pub changed: HashSet<GroupKey>,
}

fn column_name(e: &Arc<dyn PhysicalExpr>) -> Option<&str> {
    e.downcast_ref::<Column>().map(Column::name)
}

impl AggState {
    /// State for `spec`; `input` is the schema of the rows it aggregates.
    pub fn new(spec: AggSpec, input: &SchemaRef) -> DfResult<AggState> {
        let mut start_idx = None;
        let mut end_idx = None;
        let mut key_idx = Vec::new();
        let mut fields = Vec::new();
        for (i, (e, name)) in spec.group.iter().enumerate() {
            let col = column_name(e).unwrap_or(name.as_str());
            if col == WINDOW_END && end_idx.is_none() {
                end_idx = Some(i);
            } else if col == WINDOW_START && start_idx.is_none() {
                start_idx = Some(i);
            } else {
                key_idx.push(i);
                fields.push(SortField::new(e.data_type(input)?));
            }
        }
        if key_idx.is_empty() {
            // Only window columns (or none): one constant column stands for the key.
            fields.push(SortField::new(arrow::datatypes::DataType::Boolean));
        }
        if start_idx.is_some() && end_idx.is_none() {
            return Err(DataFusionError::Plan(
                "GROUP BY window_start needs window_end too: GROUP BY window_start, window_end, .."
                    .into(),
            ));
        }
        if spec.session && end_idx.is_none() {
            return Err(DataFusionError::Plan(
                "SESSION windows need GROUP BY window_start, window_end".into(),
            ));
        }
        Ok(AggState {
            spec,
            start_idx,
            end_idx,
            key_idx,
            conv: RowConverter::new(fields)?,
            groups: HashMap::new(),
            by_end: BTreeSet::new(),
            sessions: HashMap::new(),
            dirty: Vec::new(),
            dirty_set: HashSet::new(),
            changed: HashSet::new(),
            last: None,
        })
    }

    /// Whether groups close (there is a `window_end` in the `GROUP BY`).
    pub fn windowed(&self) -> bool {
        self.end_idx.is_some()
    }

    /// Whether the output is an upsert changelog rather than final rows.
    pub fn updating(&self) -> bool {
        !self.windowed() || self.spec.emit_changes
    }

    /// Names of the group-by columns (the last part of qualified names).
    pub fn group_names(&self) -> Vec<String> {
        self.spec
            .group
            .iter()
            .map(|(e, n)| {
                column_name(e)
                    .map(str::to_string)
                    .unwrap_or_else(|| n.rsplit('.').next().unwrap_or(n).to_string())
            })
            .collect()
    }

    /// What the aggregation needs of `batch` (not empty), evaluated once for all its rows.
    fn inputs(&self, batch: &RecordBatch) -> DfResult<Inputs> {
        let n = batch.num_rows();
        let group_vals: Vec<ArrayRef> = self
            .spec
            .group
            .iter()
            .map(|(e, _)| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<DfResult<_>>()?;
        let keys: Vec<ArrayRef> = if self.key_idx.is_empty() {
            // Rows need a column to count them: all groups of a window are one.
            vec![Arc::new(BooleanArray::from(vec![true; n]))]
        } else {
            self.key_idx
                .iter()
                .map(|&i| group_vals[i].clone())
                .collect()
        };
        let rows = self.conv.convert_columns(&keys)?;
        let args: Vec<Vec<ArrayRef>> = self
            .spec
            .aggs
            .iter()
            .map(|a| {
                a.expressions()
                    .iter()
                    .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
                    .collect::<DfResult<Vec<_>>>()
            })
            .collect::<DfResult<_>>()?;
        let filters: Vec<Option<BooleanArray>> = self
            .spec
            .filters
            .iter()
            .map(|f| match f {
                Some(f) => {
                    let v = f.evaluate(batch)?.into_array(n)?;
                    Ok(Some(v.as_boolean().clone()))
                }
                None => Ok(None),
            })
            .collect::<DfResult<_>>()?;
        Ok(Inputs {
            group_vals,
            rows,
            args,
            filters,
        })
    }

    /// Adds `batch`'s rows; rows of windows that ended at or before `watermark` are late and
    /// returned (as the row indices of `batch`) instead.
    pub fn update(&mut self, batch: &RecordBatch, watermark: i64) -> DfResult<Vec<u32>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let Inputs {
            group_vals,
            rows,
            args,
            filters,
        } = self.inputs(batch)?;
        let times = |i: Option<usize>| -> DfResult<Option<TimestampMillisecondArray>> {
            match i {
                Some(i) => {
                    let c = arrow::compute::cast(&group_vals[i], &ts_type())?;
                    Ok(Some(c.as_primitive::<TimestampMillisecondType>().clone()))
                }
                None => Ok(None),
            }
        };
        let starts = times(self.start_idx)?;
        let ends = times(self.end_idx)?;
        let mut late = Vec::new();
        let mut order: Vec<GroupKey> = Vec::new();
        let mut members: HashMap<GroupKey, Vec<u32>> = HashMap::new();
        for i in 0..n {
            let (start, end) = match (&starts, &ends) {
                (_, Some(e)) if e.is_null(i) => continue,
                (s, Some(e)) => (s.as_ref().map_or(0, |s| s.value(i)), e.value(i)),
                (_, None) => (0, 0),
            };
            if ends.is_some() && end <= watermark {
                late.push(i as u32);
                continue;
            }
            let row = rows.row(i).owned();
            let key = if self.spec.session {
                self.session_for(row, start, end)?
            } else {
                GroupKey { end, start, row }
            };
            if self.spec.session {
                // Sessions can merge row by row: add each row now.
                self.add(&key, &args, &filters, &[i as u32])?;
                continue;
            }
            match members.get_mut(&key) {
                Some(v) => v.push(i as u32),
                None => {
                    order.push(key.clone());
                    members.insert(key, vec![i as u32]);
                }
            }
        }
        for key in order {
            let idx = members.remove(&key).unwrap_or_default();
            self.add(&key, &args, &filters, &idx)?;
        }
        Ok(late)
    }

    fn add(
        &mut self,
        key: &GroupKey,
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
        idx: &[u32],
    ) -> DfResult<()> {
        self.apply(key, args, filters, idx, false)
    }

    /// Adds (or, with `retract`, takes back) rows `idx` in group `key`.
    fn apply(
        &mut self,
        key: &GroupKey,
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
        idx: &[u32],
        retract: bool,
    ) -> DfResult<()> {
        if retract && !self.groups.contains_key(key) {
            return Ok(());
        }
        if !self.groups.contains_key(key) {
            let accs = self.new_accumulators()?;
            self.groups.insert(key.clone(), accs);
            if self.end_idx.is_some() {
                self.by_end.insert(key.clone());
            }
        }
        let Some(accs) = self.groups.get_mut(key) else {
            return Err(DataFusionError::Internal("group vanished".into()));
        };
        for (a, acc) in accs.iter_mut().enumerate() {
            let mine: Vec<u32> = match &filters[a] {
                Some(f) => idx
                    .iter()
                    .copied()
                    .filter(|&i| f.is_valid(i as usize) && f.value(i as usize))
                    .collect(),
                None => idx.to_vec(),
            };
            if mine.is_empty() {
                continue;
            }
            let take = UInt32Array::from(mine);
            let vals: Vec<ArrayRef> = args[a]
                .iter()
                .map(|c| arrow::compute::take(c.as_ref(), &take, None))
                .collect::<Result<_, _>>()?;
            if retract {
                acc.retract_batch(&vals)?;
            } else {
                acc.update_batch(&vals)?;
            }
        }
        self.touch(key.clone());
        Ok(())
    }

    /// Takes rows back out of their (non-windowed) groups: rows an updating aggregate below
    /// emitted earlier and has since replaced.
    pub fn retract(&mut self, batch: &RecordBatch) -> DfResult<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        if self.end_idx.is_some() {
            return Err(DataFusionError::Internal(
                "retractions reach only groups without windows".into(),
            ));
        }
        let Inputs {
            rows,
            args,
            filters,
            ..
        } = self.inputs(batch)?;
        let mut order: Vec<GroupKey> = Vec::new();
        let mut members: HashMap<GroupKey, Vec<u32>> = HashMap::new();
        for i in 0..n {
            let key = GroupKey {
                end: 0,
                start: 0,
                row: rows.row(i).owned(),
            };
            members
                .entry(key.clone())
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push(i as u32);
        }
        for key in order {
            let idx = members.remove(&key).unwrap_or_default();
            self.apply(&key, &args, &filters, &idx, true)?;
        }
        Ok(())
    }

    /// Whether every aggregate can take rows back (`SUM`, `COUNT`, `AVG` can; `MAX` cannot).
    pub fn can_retract(&self) -> DfResult<bool> {
        for a in &self.spec.aggs {
            if !a.create_accumulator()?.supports_retract_batch() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Keeps each group's last emitted row, so that [`take_changes_with_old`] can say what a
    /// change replaces.
    ///
    /// [`take_changes_with_old`]: AggState::take_changes_with_old
    pub fn keep_last(&mut self) {
        self.last = Some(HashMap::new());
    }

    /// Like [`take_changes`](AggState::take_changes), with the rows the changes replace (the
    /// groups' previous rows, for those that had one). Needs [`keep_last`](AggState::keep_last).
    pub fn take_changes_with_old(
        &mut self,
    ) -> DfResult<(Option<RecordBatch>, Option<RecordBatch>)> {
        let keys = std::mem::take(&mut self.dirty);
        self.dirty_set.clear();
        if keys.is_empty() {
            return Ok((None, None));
        }
        let new = self.rows(&keys)?;
        let mut old = Vec::new();
        if let Some(last) = self.last.as_mut() {
            for (i, k) in keys.iter().enumerate() {
                if let Some(prev) = last.insert(k.clone(), new.slice(i, 1)) {
                    old.push(prev);
                }
            }
        }
        let old = if old.is_empty() {
            None
        } else {
            Some(arrow::compute::concat_batches(&new.schema(), &old)?)
        };
        Ok((old, Some(new)))
    }

    fn touch(&mut self, key: GroupKey) {
        self.changed.insert(key.clone());
        if self.updating() && self.dirty_set.insert(key.clone()) {
            self.dirty.push(key);
        }
    }

    fn new_accumulators(&self) -> DfResult<Vec<Box<dyn Accumulator>>> {
        self.spec
            .aggs
            .iter()
            .map(|a| a.create_accumulator())
            .collect()
    }

    /// The session `[start, end)` of `row` joins, merging the sessions it bridges.
    fn session_for(&mut self, row: OwnedRow, start: i64, end: i64) -> DfResult<GroupKey> {
        let list = self.sessions.entry(row.clone()).or_default();
        let (mut s, mut e) = (start, end);
        let mut merged = Vec::new();
        list.retain(|&(a, b)| {
            // Windows that overlap or touch are one session (as in Flink and Kafka Streams).
            if a <= end && start <= b {
                merged.push((a, b));
                false
            } else {
                true
            }
        });
        for &(a, b) in &merged {
            s = s.min(a);
            e = e.max(b);
        }
        list.push((s, e));
        let key = GroupKey {
            end: e,
            start: s,
            row: row.clone(),
        };
        let mut target: Option<Vec<Box<dyn Accumulator>>> = None;
        for (a, b) in merged {
            let old = GroupKey {
                end: b,
                start: a,
                row: row.clone(),
            };
            self.by_end.remove(&old);
            let Some(mut accs) = self.groups.remove(&old) else {
                continue;
            };
            self.forget(old);
            match &mut target {
                None => target = Some(accs),
                Some(t) => {
                    for (into, from) in t.iter_mut().zip(accs.iter_mut()) {
                        let states: Vec<ArrayRef> = from
                            .state()?
                            .iter()
                            .map(|v| v.to_array())
                            .collect::<DfResult<_>>()?;
                        into.merge_batch(&states)?;
                    }
                }
            }
        }
        if let Some(accs) = target {
            self.groups.insert(key.clone(), accs);
            self.by_end.insert(key.clone());
        }
        Ok(key)
    }

    /// Marks `key` gone (for the changelog and the pending emissions).
    fn forget(&mut self, key: GroupKey) {
        if self.dirty_set.remove(&key) {
            self.dirty.retain(|k| k != &key);
        }
        self.changed.insert(key);
    }

    /// The current rows of every group, if there are any.
    pub fn all_rows(&mut self) -> DfResult<Option<RecordBatch>> {
        let keys: Vec<GroupKey> = self.groups.keys().cloned().collect();
        if keys.is_empty() {
            return Ok(None);
        }
        self.rows(&keys).map(Some)
    }

    /// Rows of the groups changed since the last call (updating outputs only).
    pub fn take_changes(&mut self) -> DfResult<Option<RecordBatch>> {
        let keys = std::mem::take(&mut self.dirty);
        self.dirty_set.clear();
        if keys.is_empty() {
            return Ok(None);
        }
        self.rows(&keys).map(Some)
    }

    /// Closes the windows that ended at or before `watermark`: their final rows (unless the
    /// output is updating, whose rows went out already).
    pub fn close(&mut self, watermark: i64) -> DfResult<Option<RecordBatch>> {
        if self.end_idx.is_none() {
            return Ok(None);
        }
        let mut closing = Vec::new();
        while let Some(k) = self.by_end.first() {
            // A session stays open while the watermark is at its end: a row there touches it.
            if k.end > watermark || self.spec.session && k.end == watermark {
                break;
            }
            if let Some(k) = self.by_end.pop_first() {
                closing.push(k);
            }
        }
        if closing.is_empty() {
            return Ok(None);
        }
        let out = if self.updating() {
            None
        } else {
            Some(self.rows(&closing)?)
        };
        for k in closing {
            self.groups.remove(&k);
            if self.spec.session {
                if let Some(list) = self.sessions.get_mut(&k.row) {
                    list.retain(|&(a, b)| (a, b) != (k.start, k.end));
                    if list.is_empty() {
                        self.sessions.remove(&k.row);
                    }
                }
            }
            self.forget(k);
        }
        Ok(out)
    }

    /// Output rows for `keys`: group columns in order, then aggregate values.
    fn rows(&mut self, keys: &[GroupKey]) -> DfResult<RecordBatch> {
        let parser = self.conv.parser();
        let key_rows: Vec<_> = keys.iter().map(|k| parser.parse(k.row.as_ref())).collect();
        let key_cols = self.conv.convert_rows(key_rows)?;
        let schema = self.spec.out_schema.clone();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let mut next_key = key_cols.into_iter();
        for i in 0..self.spec.group.len() {
            let col: ArrayRef = if Some(i) == self.start_idx {
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    keys.iter().map(|k| k.start),
                ))
            } else if Some(i) == self.end_idx {
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    keys.iter().map(|k| k.end),
                ))
            } else {
                next_key
                    .next()
                    .ok_or_else(|| DataFusionError::Internal("group columns".into()))?
            };
            cols.push(cast_to(col, schema.field(i).data_type())?);
        }
        for a in 0..self.spec.aggs.len() {
            let mut vals = Vec::with_capacity(keys.len());
            for k in keys {
                let accs = self
                    .groups
                    .get_mut(k)
                    .ok_or_else(|| DataFusionError::Internal("no group to emit".into()))?;
                vals.push(accs[a].evaluate()?);
            }
            let arr = ScalarValue::iter_to_array(vals)?;
            let i = self.spec.group.len() + a;
            cols.push(cast_to(arr, schema.field(i).data_type())?);
        }
        Ok(RecordBatch::try_new(schema, cols)?)
    }

    /// Bytes of a group key, for the state changelog.
    pub fn encode_key(k: &GroupKey) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + k.row.as_ref().len());
        v.extend_from_slice(&k.end.to_be_bytes());
        v.extend_from_slice(&k.start.to_be_bytes());
        v.extend_from_slice(k.row.as_ref());
        v
    }

    /// The state of group `k` as bytes (`None` if it is gone).
    pub fn encode_state(&mut self, k: &GroupKey) -> DfResult<Option<Vec<u8>>> {
        let Some(accs) = self.groups.get_mut(k) else {
            return Ok(None);
        };
        let mut arrays = Vec::new();
        for acc in accs.iter_mut() {
            for v in acc.state()? {
                arrays.push(v.to_array()?);
            }
        }
        if arrays.is_empty() {
            // A grouping without aggregates (the inner half of a COUNT(DISTINCT ..)).
            return Ok(Some(Vec::new()));
        }
        let conv = RowConverter::new(
            arrays
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )?;
        let rows = conv.convert_columns(&arrays)?;
        Ok(Some(rows.row(0).as_ref().to_vec()))
    }

    /// Restores one group from the changelog.
    pub fn restore(&mut self, key: &[u8], state: &[u8]) -> DfResult<()> {
        if key.len() < 16 {
            return Err(DataFusionError::Internal("short state key".into()));
        }
        let end = i64::from_be_bytes(
            key[0..8]
                .try_into()
                .map_err(|_| DataFusionError::Internal("key".into()))?,
        );
        let start = i64::from_be_bytes(
            key[8..16]
                .try_into()
                .map_err(|_| DataFusionError::Internal("key".into()))?,
        );
        let row = self.conv.parser().parse(&key[16..]).owned();
        let mut accs = self.new_accumulators()?;
        let mut fields = Vec::new();
        let mut counts = Vec::new();
        for a in &self.spec.aggs {
            let f = a.state_fields()?;
            counts.push(f.len());
            fields.extend(f.iter().map(|f| SortField::new(f.data_type().clone())));
        }
        if !fields.is_empty() {
            let conv = RowConverter::new(fields)?;
            let arrays = conv.convert_rows([conv.parser().parse(state)])?;
            let mut at = 0;
            for (acc, n) in accs.iter_mut().zip(counts) {
                acc.merge_batch(&arrays[at..at + n])?;
                at += n;
            }
        }
        let k = GroupKey { end, start, row };
        if self.end_idx.is_some() {
            self.by_end.insert(k.clone());
        }
        if self.spec.session {
            self.sessions
                .entry(k.row.clone())
                .or_default()
                .push((start, end));
        }
        self.groups.insert(k.clone(), accs);
        if self.last.is_some() {
            // What was emitted last is what the restored state says.
            let row = self.rows(std::slice::from_ref(&k))?;
            if let Some(last) = self.last.as_mut() {
                last.insert(k, row);
            }
        }
        Ok(())
    }
}

fn cast_to(a: ArrayRef, t: &arrow::datatypes::DataType) -> DfResult<ArrayRef> {
    if a.data_type() == t {
        Ok(a)
    } else {
        Ok(arrow::compute::cast(&a, t)?)
    }
}
