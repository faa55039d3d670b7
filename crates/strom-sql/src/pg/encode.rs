//! Arrow columns as PostgreSQL columns: the type each Arrow type is sent as ([`Kind`]), and
//! values in text format (as PostgreSQL writes them) or binary format (where a client asks).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, SchemaRef,
    TimeUnit,
};
use arrow::temporal_conversions::timestamp_us_to_datetime;
use arrow::util::display::{lexical_to_string, ArrayFormatter, FormatOptions};
use bytes::{BufMut, BytesMut};
use datafusion::common::ScalarValue;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::{DataRow, RowDescription};

use super::internal;

/// The Arrow type a parameter of PostgreSQL type `t` reads as.
pub(crate) fn data_type_of(t: &Type) -> DataType {
    match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 | Type::NUMERIC => DataType::Float64,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Type::BYTEA => DataType::Binary,
        _ => DataType::Utf8,
    }
}

/// A parameter of PostgreSQL type `t` in binary format, if it is one Strom reads.
pub(crate) fn from_binary(raw: &[u8], t: &Type) -> Option<ScalarValue> {
    let int = |n: usize| -> Option<i64> {
        let b = raw.get(..n).filter(|_| raw.len() == n)?;
        Some(match n {
            2 => i64::from(i16::from_be_bytes(b.try_into().ok()?)),
            4 => i64::from(i32::from_be_bytes(b.try_into().ok()?)),
            _ => i64::from_be_bytes(b.try_into().ok()?),
        })
    };
    Some(match *t {
        Type::BOOL => ScalarValue::Boolean(Some(*raw.first().filter(|_| raw.len() == 1)? != 0)),
        Type::INT2 => ScalarValue::Int16(Some(i16::try_from(int(2)?).ok()?)),
        Type::INT4 => ScalarValue::Int32(Some(i32::try_from(int(4)?).ok()?)),
        Type::INT8 => ScalarValue::Int64(Some(int(8)?)),
        Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(raw.try_into().ok()?))),
        Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(raw.try_into().ok()?))),
        Type::DATE => ScalarValue::Date32(Some(
            i32::try_from(int(4)?).ok()?.checked_add(PG_EPOCH_DAYS)?,
        )),
        Type::TIMESTAMP => {
            ScalarValue::TimestampMicrosecond(Some(int(8)?.checked_add(PG_EPOCH_MICROS)?), None)
        }
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            Some(int(8)?.checked_add(PG_EPOCH_MICROS)?),
            Some("+00:00".into()),
        ),
        Type::BYTEA => ScalarValue::Binary(Some(raw.to_vec())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            ScalarValue::Utf8(Some(std::str::from_utf8(raw).ok()?.to_string()))
        }
        _ => return None,
    })
}

/// The PostgreSQL type a column is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// Decimals and `UInt64`: text format as Arrow displays them, binary as PostgreSQL's.
    Numeric,
    Varchar,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    /// Everything else (times, intervals, lists, structs, ...), as Arrow displays it.
    Text,
}

impl Kind {
    pub(crate) fn of(t: &DataType) -> Kind {
        match t {
            DataType::Boolean => Kind::Bool,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => Kind::Int2,
            DataType::Int32 | DataType::UInt16 => Kind::Int4,
            DataType::Int64 | DataType::UInt32 => Kind::Int8,
            DataType::UInt64
            | DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..) => Kind::Numeric,
            DataType::Float16 | DataType::Float32 => Kind::Float4,
            DataType::Float64 => Kind::Float8,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Varchar,
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => Kind::Bytea,
            DataType::Date32 | DataType::Date64 => Kind::Date,
            DataType::Timestamp(_, None) => Kind::Timestamp,
            DataType::Timestamp(_, Some(_)) => Kind::TimestampTz,
            DataType::Dictionary(_, values) => Kind::of(values),
            _ => Kind::Text,
        }
    }

    pub(crate) fn pg_type(self) -> Type {
        match self {
            Kind::Bool => Type::BOOL,
            Kind::Int2 => Type::INT2,
            Kind::Int4 => Type::INT4,
            Kind::Int8 => Type::INT8,
            Kind::Float4 => Type::FLOAT4,
            Kind::Float8 => Type::FLOAT8,
            Kind::Numeric => Type::NUMERIC,
            Kind::Varchar => Type::VARCHAR,
            Kind::Bytea => Type::BYTEA,
            Kind::Date => Type::DATE,
            Kind::Timestamp => Type::TIMESTAMP,
            Kind::TimestampTz => Type::TIMESTAMPTZ,
            Kind::Text => Type::TEXT,
        }
    }

    /// `pg_type.typlen`: bytes of a fixed-size value, -1 for variable size.
    fn size(self) -> i16 {
        match self {
            Kind::Bool => 1,
            Kind::Int2 => 2,
            Kind::Int4 | Kind::Float4 | Kind::Date => 4,
            Kind::Int8 | Kind::Float8 | Kind::Timestamp | Kind::TimestampTz => 8,
            Kind::Numeric | Kind::Varchar | Kind::Bytea | Kind::Text => -1,
        }
    }
}

/// The columns of `schema` as sent in RowDescription, with the formats the client asked for.
pub(crate) fn fields(schema: &SchemaRef, format: &Format) -> Arc<Vec<FieldInfo>> {
    let fields = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let kind = Kind::of(f.data_type());
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                kind.pg_type(),
                format_of(format, i),
            )
            .with_type_size(kind.size())
        })
        .collect();
    Arc::new(fields)
}

/// The format of column `i`; a client that sent fewer codes than columns gets text.
fn format_of(format: &Format, i: usize) -> FieldFormat {
    match format {
        Format::UnifiedText => FieldFormat::Text,
        Format::UnifiedBinary => FieldFormat::Binary,
        Format::Individual(codes) => codes
            .get(i)
            .map_or(FieldFormat::Text, |c| FieldFormat::from(*c)),
    }
}

pub(super) fn row_description(fields: &[FieldInfo]) -> RowDescription {
    RowDescription::new(fields.iter().map(Into::into).collect())
}

/// Seconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch for binary dates and times.
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Dates as PostgreSQL writes them (Arrow writes `Date64` with a time).
const TEXT_FORMAT: FormatOptions<'static> = FormatOptions::new()
    .with_date_format(Some("%Y-%m-%d"))
    .with_datetime_format(Some("%Y-%m-%d"));

/// A timestamp column (or dictionary of them) as microseconds since 1970 in UTC. Read from the
/// raw values rather than cast, which would parse the time zone name.
fn micros(array: &ArrayRef) -> PgWireResult<arrow::array::Int64Array> {
    let array = match array.data_type() {
        DataType::Dictionary(_, values) => {
            arrow::compute::cast(array, values).map_err(arrow_error)?
        }
        _ => array.clone(),
    };
    let DataType::Timestamp(unit, _) = array.data_type() else {
        return Err(internal("a timestamp column without a timestamp type"));
    };
    let per_micro: (i64, i64) = match unit {
        TimeUnit::Second => (1_000_000, 1),
        TimeUnit::Millisecond => (1_000, 1),
        TimeUnit::Microsecond => (1, 1),
        TimeUnit::Nanosecond => (1, 1_000),
    };
    let raw = array
        .to_data()
        .into_builder()
        .data_type(DataType::Int64)
        .build()
        .map_err(arrow_error)?;
    let raw = arrow::array::Int64Array::from(raw);
    Ok(arrow::compute::kernels::arity::unary(&raw, |v| {
        v.saturating_mul(per_micro.0).div_euclid(per_micro.1)
    }))
}

/// One column of a batch, ready to write values of.
struct Column<'a> {
    nulls: Option<NullBuffer>,
    binary: bool,
    values: Values<'a>,
}

enum Values<'a> {
    Bool(arrow::array::BooleanArray),
    Int2(arrow::array::Int16Array),
    Int4(arrow::array::Int32Array),
    Int8(arrow::array::Int64Array),
    Float4(arrow::array::Float32Array),
    Float8(arrow::array::Float64Array),
    Bytea(arrow::array::BinaryArray),
    /// Days since 1970 (binary format only).
    Date(arrow::array::Int32Array),
    /// Microseconds since 1970 in UTC, and whether the column has a time zone.
    Micros(arrow::array::Int64Array, bool),
    /// Arrow's display of the value: text, and numeric in binary format.
    Display(ArrayFormatter<'a>, Kind),
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, format: FieldFormat) -> PgWireResult<Self> {
        let kind = Kind::of(array.data_type());
        let binary = format == FieldFormat::Binary;
        let cast = |t: DataType| arrow::compute::cast(array, &t).map_err(arrow_error);
        let values = match kind {
            Kind::Bool => Values::Bool(cast(DataType::Boolean)?.as_boolean().clone()),
            Kind::Int2 => Values::Int2(cast(DataType::Int16)?.as_primitive::<Int16Type>().clone()),
            Kind::Int4 => Values::Int4(cast(DataType::Int32)?.as_primitive::<Int32Type>().clone()),
            Kind::Int8 => Values::Int8(cast(DataType::Int64)?.as_primitive::<Int64Type>().clone()),
            Kind::Float4 => Values::Float4(
                cast(DataType::Float32)?
                    .as_primitive::<Float32Type>()
                    .clone(),
            ),
            Kind::Float8 => Values::Float8(
                cast(DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            ),
            Kind::Bytea => Values::Bytea(cast(DataType::Binary)?.as_binary::<i32>().clone()),
            Kind::Date if binary => Values::Date(
                cast(DataType::Date32)?
                    .as_primitive::<Date32Type>()
                    .reinterpret_cast::<Int32Type>(),
            ),
            Kind::Timestamp | Kind::TimestampTz => {
                Values::Micros(micros(array)?, kind == Kind::TimestampTz)
            }
            _ => Values::Display(
                ArrayFormatter::try_new(array.as_ref(), &TEXT_FORMAT).map_err(arrow_error)?,
                kind,
            ),
        };
        Ok(Column {
            nulls: array.logical_nulls(),
            binary,
            values,
        })
    }

    /// Appends value `i` (length-prefixed, or -1 for NULL) to a DataRow body.
    fn write(&self, i: usize, buf: &mut BytesMut) -> PgWireResult<()> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            buf.put_i32(-1);
            return Ok(());
        }
        let at = buf.len();
        buf.put_i32(0);
        let b = self.binary;
        match &self.values {
            Values::Bool(a) => match (b, a.value(i)) {
                (true, v) => buf.put_u8(u8::from(v)),
                (false, true) => buf.put_u8(b't'),
                (false, false) => buf.put_u8(b'f'),
            },
            Values::Int2(a) if b => buf.put_i16(a.value(i)),
            Values::Int4(a) if b => buf.put_i32(a.value(i)),
            Values::Int8(a) if b => buf.put_i64(a.value(i)),
            Values::Float4(a) if b => buf.put_f32(a.value(i)),
            Values::Float8(a) if b => buf.put_f64(a.value(i)),
            Values::Int2(a) => text(buf, a.value(i))?,
            Values::Int4(a) => text(buf, a.value(i))?,
            Values::Int8(a) => text(buf, a.value(i))?,
            Values::Float4(a) => {
                float_text(buf, f64::from(a.value(i)), || lexical_to_string(a.value(i)))
            }
            Values::Float8(a) => float_text(buf, a.value(i), || lexical_to_string(a.value(i))),
            Values::Bytea(a) if b => buf.put_slice(a.value(i)),
            Values::Bytea(a) => {
                buf.put_slice(b"\\x");
                for byte in a.value(i) {
                    text(buf, format_args!("{byte:02x}"))?;
                }
            }
            Values::Date(a) => buf.put_i32(a.value(i).saturating_sub(PG_EPOCH_DAYS)),
            Values::Micros(a, _) if b => buf.put_i64(a.value(i).saturating_sub(PG_EPOCH_MICROS)),
            Values::Micros(a, zoned) => {
                let t = timestamp_us_to_datetime(a.value(i))
                    .ok_or_else(|| internal("a timestamp out of range"))?;
                text(buf, t.format("%Y-%m-%d %H:%M:%S%.f"))?;
                if *zoned {
                    // Zoned values are instants; the session's TimeZone is UTC.
                    buf.put_slice(b"+00");
                }
            }
            Values::Display(f, kind) => {
                let mut s = String::new();
                f.value(i).write(&mut s).map_err(arrow_error)?;
                if b && *kind == Kind::Numeric {
                    numeric_binary(&s, buf)?;
                } else {
                    buf.put_slice(s.as_bytes());
                }
            }
        }
        let len =
            i32::try_from(buf.len() - at - 4).map_err(|_| internal("a value longer than 2 GiB"))?;
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

fn text(buf: &mut BytesMut, v: impl std::fmt::Display) -> PgWireResult<()> {
    write!(buf, "{v}").map_err(|_| internal("formatting a value"))
}

/// PostgreSQL's spellings of the special floats; finite values as Arrow displays them.
fn float_text(buf: &mut BytesMut, v: f64, finite: impl FnOnce() -> String) {
    let s = if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "Infinity".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".to_string()
    } else {
        finite()
    };
    buf.put_slice(s.as_bytes());
}

fn arrow_error(e: arrow::error::ArrowError) -> PgWireError {
    internal(&format!("encoding a result: {e}"))
}

/// The rows of `batch` as DataRows, each column in the format of its field.
pub(crate) fn encode_batch(
    batch: &RecordBatch,
    fields: &[FieldInfo],
) -> PgWireResult<Vec<DataRow>> {
    let columns = batch
        .columns()
        .iter()
        .zip(fields)
        .map(|(array, field)| Column::new(array, field.format()))
        .collect::<PgWireResult<Vec<_>>>()?;
    let count = i16::try_from(columns.len()).map_err(|_| internal("more than 32767 columns"))?;
    let mut buf = BytesMut::new();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        for column in &columns {
            column.write(i, &mut buf)?;
        }
        rows.push(DataRow::new(buf.split(), count));
    }
    Ok(rows)
}

/// A decimal number written out (`-12.50`) in PostgreSQL's binary NUMERIC format: digit count,
/// weight of the first base-10000 digit, sign, display scale, then the digits (all big-endian
/// 16-bit).
pub(crate) fn numeric_binary(s: &str, buf: &mut BytesMut) -> PgWireResult<()> {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(internal(&format!("{s:?} is not a decimal number")));
    }
    let scale = u16::try_from(frac.len()).map_err(|_| internal("numeric scale too large"))?;
    let mut digits = "0".repeat((4 - int.len() % 4) % 4);
    digits.push_str(int);
    let int_groups = digits.len() / 4;
    digits.push_str(frac);
    digits.push_str(&"0".repeat((4 - frac.len() % 4) % 4));
    let mut groups: Vec<i16> = digits
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = i16::try_from(int_groups).map_err(|_| internal("numeric too large"))? - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= i16::try_from(leading).map_err(|_| internal("numeric too small"))?;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    let count = i16::try_from(groups.len()).map_err(|_| internal("numeric too long"))?;
    buf.put_i16(count);
    buf.put_i16(weight);
    buf.put_u16(sign);
    buf.put_u16(scale);
    for g in groups {
        buf.put_i16(g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(s: &str) -> Vec<u8> {
        let mut buf = BytesMut::new();
        numeric_binary(s, &mut buf).unwrap();
        buf.to_vec()
    }

    /// ndigits, weight, sign, dscale, digits: as PostgreSQL's numeric_send writes them.
    fn expected(weight: i16, sign: u16, scale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(scale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_are_base_10000_digits() {
        assert_eq!(numeric("0"), expected(0, 0, 0, &[]));
        assert_eq!(numeric("-0.00"), expected(0, 0, 2, &[]));
        assert_eq!(numeric("12345.678"), expected(1, 0, 3, &[1, 2345, 6780]));
        assert_eq!(numeric("0.0001"), expected(-1, 0, 4, &[1]));
        assert_eq!(numeric("-12.50"), expected(0, 0x4000, 2, &[12, 5000]));
        assert_eq!(numeric("100000000"), expected(2, 0, 0, &[1]));
        assert_eq!(
            numeric("18446744073709551615"),
            expected(4, 0, 0, &[1844, 6744, 737, 955, 1615])
        );
        let mut buf = BytesMut::new();
        assert!(numeric_binary("1e5", &mut buf).is_err());
        assert!(numeric_binary("", &mut buf).is_err());
    }

    #[test]
    fn arrow_types_map_to_postgres_types() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        for (t, kind) in [
            (DataType::UInt8, Kind::Int2),
            (DataType::UInt32, Kind::Int8),
            (DataType::UInt64, Kind::Numeric),
            (DataType::Decimal128(10, 2), Kind::Numeric),
            (DataType::Utf8View, Kind::Varchar),
            (dict, Kind::Varchar),
            (DataType::FixedSizeBinary(16), Kind::Bytea),
            (DataType::Date64, Kind::Date),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                Kind::Timestamp,
            ),
            (
                DataType::Timestamp(TimeUnit::Second, Some("+02:00".into())),
                Kind::TimestampTz,
            ),
            (DataType::Time64(TimeUnit::Microsecond), Kind::Text),
            (DataType::Null, Kind::Text),
        ] {
            assert_eq!(Kind::of(&t), kind, "{t}");
        }
    }

    #[test]
    fn missing_format_codes_mean_text() {
        let f = Format::Individual(vec![1]);
        assert_eq!(format_of(&f, 0), FieldFormat::Binary);
        assert_eq!(format_of(&f, 1), FieldFormat::Text);
    }

    #[test]
    fn null_columns_and_dictionaries_encode() {
        let batch = RecordBatch::try_from_iter([
            ("n", Arc::new(arrow::array::NullArray::new(1)) as ArrayRef),
            (
                "d",
                Arc::new(
                    vec![Some("x")]
                        .into_iter()
                        .collect::<arrow::array::DictionaryArray<Int32Type>>(),
                ) as ArrayRef,
            ),
            (
                "inf",
                Arc::new(arrow::array::Float64Array::from(vec![f64::NEG_INFINITY])) as ArrayRef,
            ),
        ])
        .unwrap();
        for format in [Format::UnifiedText, Format::UnifiedBinary] {
            let rows = encode_batch(&batch, &fields(&batch.schema(), &format)).unwrap();
            assert_eq!(rows[0].field_count, 3);
            let mut expected = BytesMut::new();
            expected.put_i32(-1);
            expected.put_i32(1);
            expected.put_slice(b"x");
            match format {
                Format::UnifiedText => {
                    expected.put_i32(9);
                    expected.put_slice(b"-Infinity");
                }
                _ => {
                    expected.put_i32(8);
                    expected.put_f64(f64::NEG_INFINITY);
                }
            }
            assert_eq!(rows[0].data, expected);
        }
    }
}
