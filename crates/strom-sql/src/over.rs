//! Window functions (`OVER (PARTITION BY .. ORDER BY ..)`) over an updating aggregate's rows.
//!
//! Every row below has an identity: its group key in the aggregate. The state keeps each
//! window partition's current rows in window order. A change to a row takes it out of its old
//! place and puts it in its new one; the rows whose frames held it before, or hold it now, get
//! new results. Results are emitted as an upsert changelog keyed by the row's identity: one
//! output row per aggregate row, as in the batch query, kept up to date.
//!
//! In append mode (a stream's own rows, see [`OverState::appending`]) rows come in window
//! order, once the watermark has passed them, and never change: each new row gets its results
//! once, and rows no later frame can hold are evicted.
//!
//! DataFusion evaluates the window functions, over the slice of a partition that the changed
//! rows' frames cover (a `ROWS` frame of an aggregate function), or over the whole partition
//! (any other frame, ranking and value functions).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::window::{
    PlainAggregateWindowExpr, SlidingAggregateWindowExpr, WindowExpr,
};

/// A record for the state topic: its key, and its value (`None` deletes the key).
pub type StateRecord = (Vec<u8>, Option<Vec<u8>>);

/// How far a change reaches: a row's frame is rows `r - before ..= r + after` (`None`:
/// unbounded), or `All` of its partition.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reach {
    Rows {
        before: Option<i64>,
        after: Option<i64>,
    },
    All,
}

impl Reach {
    fn of(e: &Arc<dyn WindowExpr>) -> Reach {
        let any = e.as_any();
        let aggregate =
            any.is::<PlainAggregateWindowExpr>() || any.is::<SlidingAggregateWindowExpr>();
        let frame = e.get_window_frame();
        if !aggregate || frame.units != WindowFrameUnits::Rows {
            return Reach::All;
        }
        // Rows before the current one (negative: after), `None` when unbounded.
        let offset = |b: &WindowFrameBound, preceding_sign: i64| -> Option<i64> {
            let n = |v: &ScalarValue| -> Option<i64> {
                match v {
                    ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok(),
                    ScalarValue::Int64(Some(n)) => Some(*n),
                    _ => None,
                }
            };
            match b {
                WindowFrameBound::CurrentRow => Some(0),
                WindowFrameBound::Preceding(v) => n(v).map(|n| n * preceding_sign),
                WindowFrameBound::Following(v) => n(v).map(|n| -n * preceding_sign),
            }
        };
        Reach::Rows {
            before: offset(&frame.start_bound, 1),
            after: offset(&frame.end_bound, -1),
        }
    }

    /// The reach of several window functions together.
    fn join(self, other: Reach) -> Reach {
        match (self, other) {
            (
                Reach::Rows {
                    before: b1,
                    after: a1,
                },
                Reach::Rows {
                    before: b2,
                    after: a2,
                },
            ) => {
                let max = |x: Option<i64>, y: Option<i64>| Some(x?.max(y?));
                Reach::Rows {
                    before: max(b1, b2),
                    after: max(a1, a2),
                }
            }
            _ => Reach::All,
        }
    }
}

/// One row of a partition.
struct Entry {
    order: OwnedRow,
    id: OwnedRow,
    row: OwnedRow,
    /// Its event time (in append mode; 0 otherwise).
    t: i64,
    /// Its results as last emitted (row format), `None` until then.
    last: Option<OwnedRow>,
}

impl Entry {
    fn cmp_key(&self, order: &OwnedRow, id: &OwnedRow) -> std::cmp::Ordering {
        (self.order.row(), self.id.row()).cmp(&(order.row(), id.row()))
    }
}

/// Rows of a partition that need new results.
#[derive(Default)]
struct Dirty {
    all: bool,
    ids: HashSet<OwnedRow>,
}

/// The rows under one `OVER (..)` specification and what changed since the last take.
pub struct OverState {
    exprs: Vec<Arc<dyn WindowExpr>>,
    /// The window functions' input (without the identity columns).
    input: SchemaRef,
    /// Input columns, then the functions' results, then the identity columns.
    out_schema: SchemaRef,
    /// Count of identity columns (they trail every input batch).
    ids: usize,
    reach: Reach,
    part_conv: RowConverter,
    order_conv: RowConverter,
    row_conv: RowConverter,
    id_conv: RowConverter,
    /// The window functions' results, to tell which changed.
    result_conv: RowConverter,
    parts: HashMap<OwnedRow, Vec<Entry>>,
    /// Each identity's partition and order key.
    place: HashMap<OwnedRow, (OwnedRow, OwnedRow)>,
    dirty: HashMap<OwnedRow, Dirty>,
    /// Rows come in window order and never change: only new rows get results.
    append: bool,
    /// In append mode: partitions changed since the last checkpoint.
    changed: HashSet<OwnedRow>,
}

impl OverState {
    /// State for `exprs` (one `PARTITION BY` and `ORDER BY` for all) over rows of `input`
    /// followed by `ids` identity columns; `out_schema` is the window operator's output with the
    /// identity columns after it.
    pub fn new(
        exprs: Vec<Arc<dyn WindowExpr>>,
        input: SchemaRef,
        ids: usize,
        out_schema: SchemaRef,
    ) -> DfResult<OverState> {
        let first = exprs
            .first()
            .ok_or_else(|| DataFusionError::Internal("a window without functions".into()))?;
        let with_ids = out_schema.clone();
        let id_fields: Vec<SortField> = with_ids.fields()[with_ids.fields().len() - ids..]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let part_fields: Vec<SortField> = first
            .partition_by()
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&input)?)))
            .collect::<DfResult<_>>()?;
        let order_fields: Vec<SortField> = first
            .order_by()
            .iter()
            .map(|e| {
                Ok(SortField::new_with_options(
                    e.expr.data_type(&input)?,
                    e.options,
                ))
            })
            .collect::<DfResult<_>>()?;
        let row_fields = input
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let result_fields = out_schema.fields()[input.fields().len()..]
            .iter()
            .take(exprs.len())
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let reach = exprs
            .iter()
            .map(Reach::of)
            .reduce(Reach::join)
            .unwrap_or(Reach::All);
        Ok(OverState {
            reach,
            part_conv: RowConverter::new(or_constant_field(part_fields))?,
            order_conv: RowConverter::new(or_constant_field(order_fields))?,
            row_conv: RowConverter::new(row_fields)?,
            id_conv: RowConverter::new(id_fields)?,
            result_conv: RowConverter::new(result_fields)?,
            exprs,
            input,
            out_schema,
            ids,
            parts: HashMap::new(),
            place: HashMap::new(),
            dirty: HashMap::new(),
            append: false,
            changed: HashSet::new(),
        })
    }

    /// Append mode (a stream's rows, released in event-time order by the watermark): rows
    /// never change, and only new rows get results.
    pub fn appending(mut self) -> OverState {
        self.append = true;
        self
    }

    /// Forgets the rows no later row's frame can hold: those before the last `keep_rows` of
    /// their partition that are also older than `since`.
    pub fn evict(&mut self, keep_rows: usize, since: i64) {
        let mut gone = Vec::new();
        let mut touched = Vec::new();
        self.parts.retain(|part, list| {
            let mut n = 0;
            while n < list.len().saturating_sub(keep_rows) && list[n].t < since {
                n += 1;
            }
            if n > 0 {
                touched.push(part.clone());
                gone.extend(list.drain(..n).map(|e| e.id));
            }
            !list.is_empty()
        });
        if self.append {
            self.changed.extend(touched);
        }
        for id in gone {
            self.place.remove(&id);
        }
    }

    /// In append mode, the partitions changed since the last call, each as (its key, its
    /// rows encoded, or `None` if it has none left), for the state topic.
    pub fn checkpoint(&mut self) -> Vec<StateRecord> {
        let mut out = Vec::new();
        for part in std::mem::take(&mut self.changed) {
            let key = part.as_ref().to_vec();
            let Some(list) = self.parts.get(&part) else {
                out.push((key, None));
                continue;
            };
            let mut v = Vec::new();
            for e in list {
                for bytes in [e.order.as_ref(), e.id.as_ref(), e.row.as_ref()] {
                    v.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    v.extend_from_slice(bytes);
                }
                v.extend_from_slice(&e.t.to_be_bytes());
            }
            out.push((key, Some(v)));
        }
        out
    }

    /// Puts back one partition written by [`OverState::checkpoint`].
    pub fn restore(&mut self, key: &[u8], mut v: &[u8]) -> DfResult<()> {
        let bad = || DataFusionError::Internal("a window state record is cut short".into());
        let part = self.part_conv.parser().parse(key).owned();
        let mut list = Vec::new();
        let take = |n: usize, v: &mut &[u8]| -> DfResult<Vec<u8>> {
            let (head, rest) = v.split_at_checked(n).ok_or_else(bad)?;
            *v = rest;
            Ok(head.to_vec())
        };
        while !v.is_empty() {
            let mut parts: Vec<Vec<u8>> = Vec::with_capacity(3);
            for _ in 0..3 {
                let len = take(4, &mut v)?;
                let len = u32::from_be_bytes(len.try_into().map_err(|_| bad())?) as usize;
                parts.push(take(len, &mut v)?);
            }
            let t = i64::from_be_bytes(take(8, &mut v)?.try_into().map_err(|_| bad())?);
            let order = self.order_conv.parser().parse(&parts[0]).owned();
            let id = self.id_conv.parser().parse(&parts[1]).owned();
            let row = self.row_conv.parser().parse(&parts[2]).owned();
            self.place.insert(id.clone(), (part.clone(), order.clone()));
            list.push(Entry {
                order,
                id,
                row,
                t,
                last: None,
            });
        }
        if !list.is_empty() {
            self.parts.insert(part, list);
        }
        Ok(())
    }

    /// The identities of `batch`'s rows: its first `n` columns (an aggregate's group key).
    pub fn identities(&self, batch: &RecordBatch) -> DfResult<Vec<OwnedRow>> {
        let cols: Vec<ArrayRef> = batch.columns()[..self.ids].to_vec();
        let rows = self.id_conv.convert_columns(&cols)?;
        Ok(rows.iter().map(|r| r.owned()).collect())
    }

    /// Applies a change: the rows of `touched` leave their places; the rows of `batches`
    /// (input columns, then identity columns) take theirs.
    /// Returns the positions in `touched` of the rows that left and did not come back.
    pub fn apply(&mut self, touched: &[OwnedRow], batches: &[RecordBatch]) -> DfResult<Vec<u32>> {
        for id in touched {
            self.remove(id);
        }
        for b in batches {
            self.insert(b, true)?;
        }
        Ok((0..touched.len())
            .filter(|&i| !self.place.contains_key(&touched[i]))
            .map(|i| i as u32)
            .collect())
    }

    /// How many identity columns there are.
    pub fn identity_width(&self) -> usize {
        self.ids
    }

    /// Puts `batch`'s rows in place without asking for results (rebuilding after a restart).
    pub fn load(&mut self, batch: &RecordBatch) -> DfResult<()> {
        self.insert(batch, false)
    }

    fn keys(&self, batch: &RecordBatch) -> DfResult<(arrow::row::Rows, arrow::row::Rows)> {
        let n = batch.num_rows();
        let first = &self.exprs[0];
        let parts = first
            .partition_by()
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(n))
            .collect::<DfResult<Vec<_>>>()?;
        let orders = first
            .order_by()
            .iter()
            .map(|e| e.expr.evaluate(batch)?.into_array(n))
            .collect::<DfResult<Vec<_>>>()?;
        Ok((
            self.part_conv.convert_columns(&or_constant(parts, n))?,
            self.order_conv.convert_columns(&or_constant(orders, n))?,
        ))
    }

    fn insert(&mut self, batch: &RecordBatch, mark: bool) -> DfResult<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let width = batch.num_columns();
        if width != self.input.fields().len() + self.ids {
            return Err(DataFusionError::Internal(format!(
                "window input has {width} columns, expected {}",
                self.input.fields().len() + self.ids
            )));
        }
        let (parts, orders) = self.keys(batch)?;
        let rows = self
            .row_conv
            .convert_columns(&batch.columns()[..width - self.ids])?;
        let ids = self
            .id_conv
            .convert_columns(&batch.columns()[width - self.ids..])?;
        let times = match (self.append, self.exprs[0].order_by().first()) {
            (true, Some(o)) => Some(crate::window::millis(
                &o.expr.evaluate(batch)?.into_array(n)?,
            )?),
            _ => None,
        };
        for i in 0..n {
            let id = ids.row(i).owned();
            // The same identity twice in one change: the later row wins.
            self.remove(&id);
            let part = parts.row(i).owned();
            let order = orders.row(i).owned();
            let list = self.parts.entry(part.clone()).or_default();
            let pos = list
                .binary_search_by(|e| e.cmp_key(&order, &id))
                .unwrap_or_else(|p| p);
            list.insert(
                pos,
                Entry {
                    order: order.clone(),
                    id: id.clone(),
                    row: rows.row(i).owned(),
                    t: times
                        .as_ref()
                        .and_then(|t| t.is_valid(i).then(|| t.value(i)))
                        .unwrap_or(i64::MIN),
                    last: None,
                },
            );
            self.place.insert(id.clone(), (part.clone(), order));
            if self.append {
                self.changed.insert(part.clone());
            }
            if mark {
                self.mark(&part, pos, Some(&id));
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: &OwnedRow) {
        let Some((part, order)) = self.place.remove(id) else {
            return;
        };
        let Some(list) = self.parts.get_mut(&part) else {
            return;
        };
        let Ok(pos) = list.binary_search_by(|e| e.cmp_key(&order, id)) else {
            return;
        };
        self.mark(&part, pos, None);
        if let Some(list) = self.parts.get_mut(&part) {
            list.remove(pos);
            if list.is_empty() {
                self.parts.remove(&part);
            }
        }
        if let Some(d) = self.dirty.get_mut(&part) {
            d.ids.remove(id);
        }
    }

    /// Marks the rows whose frames hold position `pos` of `part` (and `new`, a row put there).
    fn mark(&mut self, part: &OwnedRow, pos: usize, new: Option<&OwnedRow>) {
        let Some(list) = self.parts.get(part) else {
            return;
        };
        let dirty = self.dirty.entry(part.clone()).or_default();
        if let Some(id) = new {
            dirty.ids.insert(id.clone());
        }
        if dirty.all || self.append {
            return;
        }
        let Reach::Rows {
            before: Some(before),
            after: Some(after),
        } = self.reach
        else {
            // Unbounded on a side (or not a ROWS frame): the partition, at once.
            dirty.all = true;
            return;
        };
        // Row r's frame is [r - before, r + after]: it holds `pos` for r in
        // [pos - after, pos + before].
        let p = pos as i64;
        let last = list.len() as i64 - 1;
        let lo = p.saturating_sub(after).max(0);
        let hi = p.saturating_add(before).min(last);
        if hi.saturating_sub(lo) >= last {
            dirty.all = true;
            return;
        }
        for r in lo..=hi {
            // `pos` itself is the row put there (marked above) or the one leaving.
            if r != p {
                if let Some(e) = list.get(r as usize) {
                    dirty.ids.insert(e.id.clone());
                }
            }
        }
    }

    /// The new results of every row marked since the last call: input columns, results,
    /// identity columns.
    pub fn take_changes(&mut self) -> DfResult<Option<RecordBatch>> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out = Vec::new();
        for (part, d) in dirty {
            let Some(list) = self.parts.get(&part) else {
                continue;
            };
            let mut positions: Vec<usize> = if d.all {
                (0..list.len()).collect()
            } else {
                d.ids
                    .iter()
                    .filter_map(|id| {
                        let (_, order) = self.place.get(id)?;
                        list.binary_search_by(|e| e.cmp_key(order, id)).ok()
                    })
                    .collect()
            };
            if positions.is_empty() {
                continue;
            }
            positions.sort_unstable();
            let (first, last) = (positions[0], positions[positions.len() - 1]);
            let (from, to) = match self.reach {
                Reach::Rows { before, after } => (
                    before.map_or(0, |b| first.saturating_sub(b.max(0) as usize)),
                    after.map_or(list.len(), |a| {
                        (last + 1 + a.max(0) as usize).min(list.len())
                    }),
                ),
                Reach::All => (0, list.len()),
            };
            let slice = &list[from..to];
            let cols = self
                .row_conv
                .convert_rows(slice.iter().map(|e| e.row.row()))?;
            let batch = RecordBatch::try_new(self.input.clone(), cols)?;
            let idx = UInt32Array::from_iter_values(positions.iter().map(|&p| (p - from) as u32));
            let mut results: Vec<ArrayRef> = Vec::with_capacity(self.exprs.len());
            for (i, e) in self.exprs.iter().enumerate() {
                let r = e.evaluate(&batch)?;
                let r = arrow::compute::take(r.as_ref(), &idx, None)?;
                let want = self
                    .out_schema
                    .field(self.input.fields().len() + i)
                    .data_type();
                results.push(if r.data_type() == want {
                    r
                } else {
                    arrow::compute::cast(&r, want)?
                });
            }
            // Only rows whose results (or own values) changed since they were last emitted.
            let encoded = self.result_conv.convert_columns(&results)?;
            let Some(list) = self.parts.get_mut(&part) else {
                continue;
            };
            let mut changed = Vec::with_capacity(positions.len());
            for (k, &p) in positions.iter().enumerate() {
                let now = encoded.row(k);
                if list[p].last.as_ref().is_some_and(|l| l.row() == now) {
                    continue;
                }
                list[p].last = Some(now.owned());
                changed.push(k as u32);
            }
            if changed.is_empty() {
                continue;
            }
            let keep = UInt32Array::from(changed);
            let take = |a: &ArrayRef| arrow::compute::take(a.as_ref(), &keep, None);
            let at = arrow::compute::take(&idx, &keep, None)?;
            let mut cols: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .map(|c| arrow::compute::take(c.as_ref(), &at, None))
                .collect::<Result<_, _>>()?;
            for r in &results {
                cols.push(take(r)?);
            }
            let ids = self.id_conv.convert_rows(
                keep.values()
                    .iter()
                    .map(|&k| list[positions[k as usize]].id.row()),
            )?;
            cols.extend(ids);
            out.push(RecordBatch::try_new(self.out_schema.clone(), cols)?);
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(arrow::compute::concat_batches(
            &self.out_schema,
            &out,
        )?))
    }
}

/// Without `PARTITION BY` (or `ORDER BY`), one constant column stands for the key.
fn or_constant_field(fields: Vec<SortField>) -> Vec<SortField> {
    if fields.is_empty() {
        vec![SortField::new(arrow::datatypes::DataType::Boolean)]
    } else {
        fields
    }
}

fn or_constant(cols: Vec<ArrayRef>, n: usize) -> Vec<ArrayRef> {
    if cols.is_empty() {
        vec![Arc::new(arrow::array::BooleanArray::from(vec![true; n]))]
    } else {
        cols
    }
}
