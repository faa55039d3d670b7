//! Window table functions: `TUMBLE`, `HOP` and `SESSION`, in the style of Flink SQL.
//!
//! Each adds `window_start` and `window_end` columns to the rows of a stream. `TUMBLE` and `HOP`
//! know a row's windows from its time alone (a `HOP` row is repeated once per window). A
//! `SESSION` row starts as the window `[ts, ts + gap)`; the aggregation merges overlapping ones
//! per key, in a continuous query and in an ad-hoc one alike.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;

use crate::format::ts_type;

/// Name of the added start column.
pub const WINDOW_START: &str = "window_start";
/// Name of the added end column.
pub const WINDOW_END: &str = "window_end";

/// Which windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size` ms.
    Tumble {
        /// Length in ms.
        size: i64,
    },
    /// Windows of `size` ms starting every `slide` ms.
    Hop {
        /// Distance between starts in ms.
        slide: i64,
        /// Length in ms.
        size: i64,
    },
    /// Activity separated by at least `gap` ms of silence, per key.
    Session {
        /// The gap in ms.
        gap: i64,
        /// The `PARTITION BY` columns.
        keys: Vec<String>,
    },
}

/// A window function applied to a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// Which windows.
    pub kind: WindowKind,
    /// The time column (`DESCRIPTOR(col)`).
    pub time_col: String,
}

impl WindowSpec {
    /// `schema` plus the window columns.
    pub fn schema(&self, schema: &Schema) -> DfResult<SchemaRef> {
        for name in [WINDOW_START, WINDOW_END] {
            if schema.field_with_name(name).is_ok() {
                return Err(DataFusionError::Plan(format!(
                    "the stream already has a column `{name}`; a window function cannot add it"
                )));
            }
        }
        let f = schema.field_with_name(&self.time_col).map_err(|_| {
            DataFusionError::Plan(format!(
                "DESCRIPTOR(`{}`): no such column{}",
                self.time_col,
                crate::errors::suggest(
                    &self.time_col,
                    schema.fields().iter().map(|f| f.name().as_str())
                )
            ))
        })?;
        if !matches!(f.data_type(), DataType::Timestamp(..)) {
            return Err(DataFusionError::Plan(format!(
                "DESCRIPTOR(`{}`) must be a TIMESTAMP column, not {}",
                self.time_col,
                f.data_type()
            )));
        }
        if let WindowKind::Session { keys, .. } = &self.kind {
            for k in keys {
                if schema.field_with_name(k).is_err() {
                    return Err(DataFusionError::Plan(format!(
                        "PARTITION BY `{k}`: no such column{}",
                        crate::errors::suggest(
                            k,
                            schema.fields().iter().map(|f| f.name().as_str())
                        )
                    )));
                }
            }
        }
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(WINDOW_START, ts_type(), false));
        fields.push(Field::new(WINDOW_END, ts_type(), false));
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Adds the window columns to `batch` (whose schema is the source's); `out` is
    /// [`Self::schema`] of it. Rows with a null time are dropped.
    pub fn assign(&self, batch: &RecordBatch, out: &SchemaRef) -> DfResult<RecordBatch> {
        let ts = times(batch, &self.time_col)?;
        let mut idx: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut starts = Vec::with_capacity(batch.num_rows());
        let mut ends = Vec::with_capacity(batch.num_rows());
        for i in 0..ts.len() {
            if ts.is_null(i) {
                continue;
            }
            let t = ts.value(i);
            match &self.kind {
                WindowKind::Tumble { size } => {
                    let s = t - t.rem_euclid(*size);
                    idx.push(i as u32);
                    starts.push(s);
                    ends.push(s.saturating_add(*size));
                }
                WindowKind::Hop { slide, size } => {
                    let last = t - t.rem_euclid(*slide);
                    let mut s = last;
                    // Every window [s, s + size) with s <= t < s + size, earliest first.
                    let mut mine = Vec::new();
                    while s > t.saturating_sub(*size) {
                        mine.push(s);
                        s -= slide;
                    }
                    for s in mine.into_iter().rev() {
                        idx.push(i as u32);
                        starts.push(s);
                        ends.push(s.saturating_add(*size));
                    }
                }
                WindowKind::Session { gap, .. } => {
                    idx.push(i as u32);
                    starts.push(t);
                    ends.push(t.saturating_add(*gap));
                }
            }
        }
        let take = UInt32Array::from(idx);
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 2);
        for c in batch.columns() {
            cols.push(arrow::compute::take(c.as_ref(), &take, None)?);
        }
        cols.push(Arc::new(TimestampMillisecondArray::from(starts)));
        cols.push(Arc::new(TimestampMillisecondArray::from(ends)));
        Ok(RecordBatch::try_new(out.clone(), cols)?)
    }
}

/// The `col` column of `batch` as millisecond timestamps.
pub fn times(batch: &RecordBatch, col: &str) -> DfResult<TimestampMillisecondArray> {
    let i = batch.schema().index_of(col)?;
    millis(batch.column(i))
}

/// An array of times as milliseconds since the epoch.
pub fn millis(a: &arrow::array::ArrayRef) -> DfResult<TimestampMillisecondArray> {
    let c = arrow::compute::cast(a, &ts_type())?;
    Ok(c.as_primitive::<TimestampMillisecondType>().clone())
}

/// Milliseconds of an interval literal.
pub fn interval_ms(e: &Expr) -> DfResult<i64> {
    let v = match e {
        Expr::Literal(v, _) => v,
        other => {
            return Err(DataFusionError::Plan(format!(
                "an INTERVAL literal expected, found `{other}`"
            )))
        }
    };
    let ms = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            i.days as i64 * 86_400_000 + i.nanoseconds / 1_000_000
        }
        ScalarValue::IntervalDayTime(Some(i)) => i.days as i64 * 86_400_000 + i.milliseconds as i64,
        ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(_) => {
            return Err(DataFusionError::Plan(
                "window sizes in months or years have no fixed length: use days".into(),
            ))
        }
        other => {
            return Err(DataFusionError::Plan(format!(
                "an INTERVAL literal expected, found `{other}`"
            )))
        }
    };
    if ms <= 0 {
        return Err(DataFusionError::Plan(
            "a window interval must be positive".into(),
        ));
    }
    Ok(ms)
}

fn string_arg(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Some(s.clone()),
        _ => None,
    }
}

/// Finds the provider for `source` with `spec` applied.
pub type Resolver = dyn Fn(&str, WindowSpec) -> DfResult<Arc<dyn TableProvider>> + Send + Sync;

/// `TUMBLE`, `HOP` or `SESSION` as a DataFusion table function.
pub struct WindowFunction {
    name: &'static str,
    resolve: Arc<Resolver>,
}

impl fmt::Debug for WindowFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WindowFunction({})", self.name)
    }
}

impl WindowFunction {
    /// The three functions, resolving sources with `resolve`.
    pub fn all(resolve: Arc<Resolver>) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
        ["tumble", "hop", "session"]
            .into_iter()
            .map(|name| {
                let f: Arc<dyn TableFunctionImpl> = Arc::new(WindowFunction {
                    name,
                    resolve: resolve.clone(),
                });
                (name, f)
            })
            .collect()
    }

    fn usage(&self) -> DataFusionError {
        DataFusionError::Plan(match self.name {
            "tumble" => "usage: TUMBLE(TABLE stream, DESCRIPTOR(time_column), INTERVAL 'n' unit)",
            "hop" => "usage: HOP(TABLE stream, DESCRIPTOR(time_column), INTERVAL slide, INTERVAL size)",
            _ => "usage: SESSION(TABLE stream PARTITION BY key, DESCRIPTOR(time_column), INTERVAL gap)",
        }
        .into())
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> DfResult<Arc<dyn TableProvider>> {
        let a = args.exprs();
        let source = a.first().and_then(string_arg).ok_or_else(|| self.usage())?;
        let (keys, rest) = match a.get(1).and_then(string_arg) {
            Some(k) if k.starts_with("partition by:") => (
                k["partition by:".len()..]
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
                &a[2..],
            ),
            _ => (Vec::new(), a.get(1..).unwrap_or(&[])),
        };
        let time_col = rest
            .first()
            .and_then(string_arg)
            .ok_or_else(|| self.usage())?;
        let kind = match (self.name, &rest[1..]) {
            ("tumble", [size]) => WindowKind::Tumble {
                size: interval_ms(size)?,
            },
            ("hop", [slide, size]) => {
                let (slide, size) = (interval_ms(slide)?, interval_ms(size)?);
                if size % slide != 0 {
                    return Err(DataFusionError::Plan(
                        "HOP: the size must be a multiple of the slide".into(),
                    ));
                }
                WindowKind::Hop { slide, size }
            }
            ("session", [gap]) => WindowKind::Session {
                gap: interval_ms(gap)?,
                keys: keys.clone(),
            },
            _ => return Err(self.usage()),
        };
        if !matches!(kind, WindowKind::Session { .. }) && !keys.is_empty() {
            return Err(self.usage());
        }
        (self.resolve)(&source, WindowSpec { kind, time_col })
    }
}

/// Merges per-key `[start, end)` session windows in a batch already windowed by
/// [`WindowSpec::assign`]: rows are given the bounds of the merged session they belong to. Used
/// for ad-hoc queries, where all the rows are at hand.
pub fn merge_sessions(batch: &RecordBatch, keys: &[String]) -> DfResult<RecordBatch> {
    let schema = batch.schema();
    let (si, ei) = (schema.index_of(WINDOW_START)?, schema.index_of(WINDOW_END)?);
    let key_cols: Vec<ArrayRef> = keys
        .iter()
        .map(|k| schema.index_of(k).map(|i| batch.column(i).clone()))
        .collect::<Result<_, _>>()?;
    let conv = arrow::row::RowConverter::new(
        key_cols
            .iter()
            .map(|c| arrow::row::SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = conv.convert_columns(&key_cols)?;
    let starts = batch.column(si).as_primitive::<TimestampMillisecondType>();
    let ends = batch.column(ei).as_primitive::<TimestampMillisecondType>();
    let mut order: Vec<usize> = (0..batch.num_rows()).collect();
    order.sort_by(|&a, &b| {
        rows.row(a)
            .cmp(&rows.row(b))
            .then(starts.value(a).cmp(&starts.value(b)))
    });
    let mut new_start = vec![0i64; batch.num_rows()];
    let mut new_end = vec![0i64; batch.num_rows()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let (s, mut e) = (starts.value(order[i]), ends.value(order[i]));
        while j + 1 < order.len()
            && rows.row(order[j + 1]) == rows.row(order[i])
            && starts.value(order[j + 1]) < e
        {
            j += 1;
            e = e.max(ends.value(order[j]));
        }
        for &r in &order[i..=j] {
            new_start[r] = s;
            new_end[r] = e;
        }
        i = j + 1;
    }
    let mut cols = batch.columns().to_vec();
    cols[si] = Arc::new(TimestampMillisecondArray::from(new_start));
    cols[ei] = Arc::new(TimestampMillisecondArray::from(new_end));
    Ok(RecordBatch::try_new(schema, cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn batch(ts: &[i64], k: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", ts_type(), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(k.to_vec())),
                Arc::new(TimestampMillisecondArray::from(ts.to_vec())),
            ],
        )
        .unwrap()
    }

    fn bounds(b: &RecordBatch) -> Vec<(i64, i64)> {
        let s = b.column(2).as_primitive::<TimestampMillisecondType>();
        let e = b.column(3).as_primitive::<TimestampMillisecondType>();
        (0..b.num_rows())
            .map(|i| (s.value(i), e.value(i)))
            .collect()
    }

    #[test]
    fn tumble_hop_session() {
        let b = batch(&[0, 999, 1000, -1], &[1, 1, 1, 1]);
        let spec = WindowSpec {
            kind: WindowKind::Tumble { size: 1000 },
            time_col: "ts".into(),
        };
        let out = spec.assign(&b, &spec.schema(&b.schema()).unwrap()).unwrap();
        assert_eq!(
            bounds(&out),
            vec![(0, 1000), (0, 1000), (1000, 2000), (-1000, 0)]
        );
        let spec = WindowSpec {
            kind: WindowKind::Hop {
                slide: 500,
                size: 1000,
            },
            time_col: "ts".into(),
        };
        let out = spec
            .assign(&batch(&[700], &[1]), &spec.schema(&b.schema()).unwrap())
            .unwrap();
        assert_eq!(bounds(&out), vec![(0, 1000), (500, 1500)]);
        let spec = WindowSpec {
            kind: WindowKind::Session {
                gap: 100,
                keys: vec!["k".into()],
            },
            time_col: "ts".into(),
        };
        let b = batch(&[0, 50, 300, 20], &[1, 1, 1, 2]);
        let out = spec.assign(&b, &spec.schema(&b.schema()).unwrap()).unwrap();
        let merged = merge_sessions(&out, &["k".into()]).unwrap();
        assert_eq!(
            bounds(&merged),
            vec![(0, 150), (0, 150), (300, 400), (20, 120)]
        );
    }
}
