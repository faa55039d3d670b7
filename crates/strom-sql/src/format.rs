//! Record values to Arrow rows and back: `json` (one object per record), `csv` (one line per
//! record, columns in declared order) and `raw` (the whole value in the one column).

use std::sync::Arc;

use bytes::Bytes;

use arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::{Result, SqlError};

/// How a topic's record values encode rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per record, fields by column name.
    Json,
    /// One CSV line per record, fields in column order.
    Csv,
    /// The value itself, as the single (VARCHAR or BYTES) column.
    Raw,
}

impl Format {
    /// Parses a `format` option.
    pub fn parse(s: &str) -> Result<Format> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" | "delimited" => Ok(Format::Csv),
            "raw" | "kafka" => Ok(Format::Raw),
            "avro" => Err(SqlError::Unsupported(
                "format 'avro' (there is no schema registry yet): use 'json', 'csv' or 'raw'"
                    .into(),
            )),
            other => Err(SqlError::Statement(format!(
                "unknown format '{other}': use 'json', 'csv' or 'raw'"
            ))),
        }
    }

    /// The option's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Raw => "raw",
        }
    }
}

/// Names of the columns every stream and table has besides its declared ones.
pub const PARTITION: &str = "_partition";
/// The record's offset.
pub const OFFSET: &str = "_offset";
/// The record's timestamp.
pub const TIMESTAMP: &str = "_timestamp";

/// The millisecond timestamp type every time column uses.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// `schema` plus the record metadata columns.
pub fn with_meta(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(PARTITION, DataType::Int32, false));
    fields.push(Field::new(OFFSET, DataType::Int64, false));
    fields.push(Field::new(TIMESTAMP, ts_type(), false));
    Arc::new(Schema::new(fields))
}

/// One record to decode: its value and where it came from.
pub struct Rec<'a> {
    /// The value.
    pub value: &'a [u8],
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp.
    pub timestamp: i64,
}

/// Decodes records of one topic into batches with the metadata columns.
pub struct Decoder {
    format: Format,
    schema: SchemaRef,
    full: SchemaRef,
    /// For JSON: the columns decoded (the others are left null), if not all.
    only: Option<(Vec<usize>, SchemaRef)>,
}

impl Decoder {
    /// A decoder for rows of `schema` (without metadata columns).
    pub fn new(format: Format, schema: SchemaRef) -> Result<Decoder> {
        if format == Format::Raw
            && (schema.fields().len() != 1
                || !matches!(
                    schema.field(0).data_type(),
                    DataType::Utf8 | DataType::Binary
                ))
        {
            return Err(SqlError::Statement(
                "format 'raw' needs exactly one VARCHAR or BYTES column".into(),
            ));
        }
        let full = with_meta(&schema);
        Ok(Decoder {
            format,
            schema,
            full,
            only: None,
        })
    }

    /// Decodes only the columns `used` (indices of the declared columns; others are ignored)
    /// of JSON values: the rest come out null, sparing the work of building them. Columns
    /// that cannot be null are decoded anyway.
    pub fn only(mut self, used: &[usize]) -> Result<Decoder> {
        if self.format != Format::Json {
            return Ok(self);
        }
        let cols: Vec<usize> = (0..self.schema.fields().len())
            .filter(|i| used.contains(i) || !self.schema.field(*i).is_nullable())
            .collect();
        if cols.len() < self.schema.fields().len() {
            let projected = Arc::new(self.schema.project(&cols)?);
            self.only = Some((cols, projected));
        }
        Ok(self)
    }

    /// The output schema: columns then metadata.
    pub fn full_schema(&self) -> &SchemaRef {
        &self.full
    }

    /// Decodes `recs`; records that cannot be read are skipped and counted in the second value.
    pub fn decode(&self, recs: &[Rec<'_>]) -> Result<(RecordBatch, u64)> {
        if recs.is_empty() {
            return Ok((RecordBatch::new_empty(self.full.clone()), 0));
        }
        match self.decode_all(recs) {
            Ok(cols) => Ok((self.finish(cols, recs)?, 0)),
            Err(_) => {
                // Find the bad ones one at a time; keep the rest.
                let mut good = Vec::with_capacity(recs.len());
                let mut parts = Vec::new();
                for r in recs {
                    if let Ok(cols) = self.decode_all(std::slice::from_ref(r)) {
                        parts.push(RecordBatch::try_new(self.schema.clone(), cols)?);
                        good.push(Rec { ..*r });
                    }
                }
                let bad = (recs.len() - good.len()) as u64;
                let merged = arrow::compute::concat_batches(&self.schema, &parts)?;
                Ok((self.finish(merged.columns().to_vec(), &good)?, bad))
            }
        }
    }

    fn finish(&self, mut cols: Vec<ArrayRef>, recs: &[Rec<'_>]) -> Result<RecordBatch> {
        cols.push(Arc::new(Int32Array::from_iter_values(
            recs.iter().map(|r| r.partition),
        )));
        cols.push(Arc::new(Int64Array::from_iter_values(
            recs.iter().map(|r| r.offset),
        )));
        cols.push(Arc::new(TimestampMillisecondArray::from_iter_values(
            recs.iter().map(|r| r.timestamp),
        )));
        Ok(RecordBatch::try_new(self.full.clone(), cols)?)
    }

    fn decode_all(&self, recs: &[Rec<'_>]) -> Result<Vec<ArrayRef>> {
        match self.format {
            Format::Json => {
                let schema = match &self.only {
                    Some((_, projected)) => projected.clone(),
                    None => self.schema.clone(),
                };
                let mut d = arrow::json::ReaderBuilder::new(schema)
                    .with_batch_size(recs.len().max(1))
                    .build_decoder()?;
                for r in recs {
                    // A record must hold exactly one object.
                    let before = d.len();
                    let mut buf = r.value;
                    while !buf.is_empty() {
                        let n = d.decode(buf)?;
                        if n == 0 {
                            break;
                        }
                        buf = &buf[n..];
                    }
                    d.decode(b"\n")?;
                    // The decoder stops taking bytes once a batch is full: what it left must
                    // not be a second object.
                    let rest_is_blank = buf.iter().all(u8::is_ascii_whitespace);
                    if d.len() != before + 1 || !rest_is_blank {
                        return Err(SqlError::Format("a record is not one JSON object".into()));
                    }
                }
                let batch = d
                    .flush()?
                    .ok_or_else(|| SqlError::Internal("json decoder had no rows".into()))?;
                let Some((cols, _)) = &self.only else {
                    return Ok(batch.columns().to_vec());
                };
                // The columns left out, as nulls.
                let mut decoded = batch.columns().iter();
                let mut out = Vec::with_capacity(self.schema.fields().len());
                for (i, f) in self.schema.fields().iter().enumerate() {
                    if cols.contains(&i) {
                        let c = decoded
                            .next()
                            .ok_or_else(|| SqlError::Internal("json decoder columns".into()))?;
                        out.push(c.clone());
                    } else {
                        out.push(arrow::array::new_null_array(f.data_type(), recs.len()));
                    }
                }
                Ok(out)
            }
            Format::Csv => {
                let mut d = arrow::csv::ReaderBuilder::new(self.schema.clone())
                    .with_batch_size(recs.len().max(1))
                    .build_decoder();
                for r in recs {
                    if r.value.contains(&b'\n') || r.value.is_empty() {
                        return Err(SqlError::Format("a CSV record must be one line".into()));
                    }
                    let mut line = r.value.to_vec();
                    line.push(b'\n');
                    let mut buf = &line[..];
                    while !buf.is_empty() {
                        let n = d.decode(buf)?;
                        if n == 0 {
                            break;
                        }
                        buf = &buf[n..];
                    }
                }
                let batch = d
                    .flush()?
                    .ok_or_else(|| SqlError::Internal("csv decoder had no rows".into()))?;
                if batch.num_rows() != recs.len() {
                    return Err(SqlError::Format("a CSV record is not one row".into()));
                }
                Ok(batch.columns().to_vec())
            }
            Format::Raw => Ok(vec![match self.schema.field(0).data_type() {
                DataType::Utf8 => {
                    let mut v = Vec::with_capacity(recs.len());
                    for r in recs {
                        v.push(
                            std::str::from_utf8(r.value)
                                .map_err(|_| SqlError::Format("value is not UTF-8".into()))?,
                        );
                    }
                    Arc::new(StringArray::from(v)) as ArrayRef
                }
                _ => Arc::new(BinaryArray::from_iter_values(recs.iter().map(|r| r.value))),
            }]),
        }
    }
}

/// Encodes each row of `batch` as one record value.
pub fn encode(format: Format, batch: &RecordBatch) -> Result<Vec<Bytes>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let lines = match format {
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            w.write(batch)?;
            w.finish()?;
            w.into_inner()
        }
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut buf);
                w.write(batch)?;
            }
            buf
        }
        Format::Raw => {
            let col = batch.column(0);
            let mut out = Vec::with_capacity(batch.num_rows());
            let fmt =
                arrow::util::display::ArrayFormatter::try_new(col.as_ref(), &Default::default())?;
            for i in 0..batch.num_rows() {
                out.push(Bytes::from(fmt.value(i).to_string()));
            }
            return Ok(out);
        }
    };
    // One buffer for the batch; each record's value is a slice of it.
    let lines = Bytes::from(lines);
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut start = 0;
    for (i, &b) in lines.iter().enumerate() {
        if b == b'\n' {
            if i > start {
                out.push(lines.slice(start..i));
            }
            start = i + 1;
        }
    }
    if start < lines.len() {
        out.push(lines.slice(start..));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", ts_type(), true),
        ]))
    }

    fn rec(v: &[u8], offset: i64) -> Rec<'_> {
        Rec {
            value: v,
            partition: 0,
            offset,
            timestamp: 1000 + offset,
        }
    }

    #[test]
    fn json_round_trip_skipping_bad_records() {
        let d = Decoder::new(Format::Json, schema()).unwrap();
        let recs = [
            rec(br#"{"id": 1, "name": "a", "ts": 60000}"#, 0),
            rec(b"not json", 1),
            rec(
                br#"{"id": 2, "name": "b", "ts": "1970-01-01T00:02:00Z"}"#,
                2,
            ),
            rec(br#"{"id": 3}{"id": 4}"#, 3),
        ];
        let (b, bad) = d.decode(&recs).unwrap();
        assert_eq!(bad, 2);
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.num_columns(), 6);
        let offsets = b.column(4).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(offsets.values(), &[0, 2]);
        let out = encode(Format::Json, &b.project(&[0, 1]).unwrap()).unwrap();
        assert_eq!(&out[1][..], br#"{"id":2,"name":"b"}"#);
    }

    #[test]
    fn json_decodes_only_the_columns_used() {
        let d = Decoder::new(Format::Json, schema())
            .unwrap()
            .only(&[0, 2])
            .unwrap();
        let (b, bad) = d
            .decode(&[rec(br#"{"id": 7, "name": "x", "ts": 60000}"#, 0)])
            .unwrap();
        assert_eq!((b.num_rows(), bad, b.num_columns()), (1, 0, 6));
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.value(0), 7);
        assert!(b.column(1).is_null(0));
        assert!(!b.column(2).is_null(0));
    }

    #[test]
    fn csv_and_raw() {
        let d = Decoder::new(Format::Csv, schema()).unwrap();
        let (b, bad) = d
            .decode(&[rec(b"1,x,1970-01-01T00:00:01", 0), rec(b"2,y", 1)])
            .unwrap();
        assert_eq!((b.num_rows(), bad), (1, 1));
        let raw = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]));
        let d = Decoder::new(Format::Raw, raw).unwrap();
        let (b, _) = d.decode(&[rec(b"hello", 0)]).unwrap();
        assert_eq!(
            encode(Format::Raw, &b.project(&[0]).unwrap()).unwrap(),
            vec![Bytes::from_static(b"hello")]
        );
        assert!(Decoder::new(Format::Raw, schema()).is_err());
    }
}
