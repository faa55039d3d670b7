//! Stream and table definitions, and how they are kept.
//!
//! The catalog lives in a compacted topic, `_strom_sql_catalog`: one record per stream, table
//! and persistent query, keyed `source/<name>` or `query/<id>`, a tombstone when dropped or
//! terminated. Every engine reads it at start, so definitions and queries survive restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{
    ColumnDef, ColumnOption, DataType as SqlType, TableConstraint,
};
use serde::{Deserialize, Serialize};

use crate::format::{Format, OFFSET, PARTITION, TIMESTAMP};
use crate::parse::{OptionValue, SourceKind};
use crate::{Result, SqlError};

/// The catalog topic.
pub const CATALOG_TOPIC: &str = "_strom_sql_catalog";

/// A stream or table over a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceDef {
    /// Its name.
    pub name: String,
    /// Stream or table.
    pub kind: SourceKind,
    /// Column names and Arrow types (as `DataType`'s display form).
    pub columns: Vec<(String, String)>,
    /// The topic.
    pub topic: String,
    /// How values are encoded.
    pub format: String,
    /// The key column (a table's primary key; for a stream, the column written as record key).
    pub key: Option<String>,
    /// The event-time column (else the record timestamp).
    pub timestamp: Option<String>,
    /// How far the watermark trails the largest event time seen, in ms.
    pub watermark_delay_ms: i64,
    /// The statement that made it.
    pub sql: String,
}

impl SourceDef {
    /// The declared columns.
    pub fn schema(&self) -> Result<SchemaRef> {
        let mut fields = Vec::new();
        for (n, t) in &self.columns {
            let dt: DataType = t
                .parse()
                .map_err(|e| SqlError::Internal(format!("catalog type {t}: {e}")))?;
            fields.push(Field::new(n, dt, true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The value format.
    pub fn format(&self) -> Result<Format> {
        Format::parse(&self.format)
    }

    /// The column event time is read from.
    pub fn time_column(&self) -> &str {
        self.timestamp.as_deref().unwrap_or(TIMESTAMP)
    }
}

/// `schema`'s columns as the catalog stores them.
pub fn columns_of(schema: &Schema) -> Vec<(String, String)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect()
}

/// Arrow type of a declared SQL type.
pub fn arrow_type(t: &SqlType) -> Result<DataType> {
    use SqlType as T;
    Ok(match t {
        T::TinyInt(_) => DataType::Int8,
        T::SmallInt(_) | T::Int2(_) => DataType::Int16,
        T::Int(_) | T::Integer(_) | T::Int4(_) => DataType::Int32,
        T::BigInt(_) | T::Int8(_) => DataType::Int64,
        T::Real | T::Float4 | T::Float(_) => DataType::Float32,
        T::Double(_) | T::DoublePrecision | T::Float8 | T::Float64 => DataType::Float64,
        T::Boolean | T::Bool => DataType::Boolean,
        T::Varchar(_) | T::Text | T::String(_) | T::Char(_) | T::CharVarying(_) | T::Character(_) => {
            DataType::Utf8
        }
        T::Bytea | T::Bytes(_) | T::Binary(_) | T::Varbinary(_) | T::Blob(_) => DataType::Binary,
        T::Timestamp(_, _) | T::Datetime(_) => crate::format::ts_type(),
        T::Date => DataType::Date32,
        T::Decimal(info) | T::Numeric(info) => {
            use datafusion::sql::sqlparser::ast::ExactNumberInfo as E;
            let (p, s) = match info {
                E::None => (38, 10),
                E::Precision(p) => (*p as u8, 0),
                E::PrecisionAndScale(p, s) => (*p as u8, *s as i8),
            };
            DataType::Decimal128(p.min(38), s)
        }
        other => {
            return Err(SqlError::Unsupported(format!(
                "column type {other}: use BIGINT, INT, DOUBLE, DECIMAL, BOOLEAN, VARCHAR, BYTES, TIMESTAMP or DATE"
            )))
        }
    })
}

/// The options a `CREATE` accepts.
const OPTIONS: &[&str] = &[
    "topic",
    "format",
    "key",
    "timestamp",
    "watermark",
    "partitions",
    "replicas",
    "late_topic",
    "connector",
    "path",
    "roll_rows",
    "roll_seconds",
];

/// Checks option names, suggesting the closest for a misspelt one.
pub fn check_options(options: &BTreeMap<String, OptionValue>) -> Result<()> {
    for (k, v) in options {
        if !OPTIONS.contains(&k.as_str()) {
            return Err(SqlError::Statement(format!(
                "unknown option `{k}` at line {}, column {}{}",
                v.at.line,
                v.at.column,
                crate::errors::suggest(k, OPTIONS.iter().copied())
            )));
        }
    }
    Ok(())
}

/// Declared columns as an Arrow schema, and the primary key if one was declared.
pub fn declared(
    columns: &[ColumnDef],
    constraints: &[TableConstraint],
) -> Result<(SchemaRef, Option<String>)> {
    let mut fields = Vec::new();
    let mut key = None;
    for c in columns {
        let name = if c.name.quote_style.is_some() {
            c.name.value.clone()
        } else {
            c.name.value.to_ascii_lowercase()
        };
        if [PARTITION, OFFSET, TIMESTAMP].contains(&name.as_str()) {
            return Err(SqlError::Statement(format!(
                "column `{name}` is reserved: every stream has it already"
            )));
        }
        if fields.iter().any(|f: &Field| f.name() == &name) {
            return Err(SqlError::Statement(format!(
                "column `{name}` is declared twice"
            )));
        }
        if c.options
            .iter()
            .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
        {
            key = Some(name.clone());
        }
        fields.push(Field::new(name, arrow_type(&c.data_type)?, true));
    }
    for con in constraints {
        if let TableConstraint::PrimaryKey(pk) = con {
            if pk.columns.len() != 1 {
                return Err(SqlError::Unsupported(
                    "a primary key of more than one column".into(),
                ));
            }
            key = Some(pk.columns[0].column.expr.to_string().to_ascii_lowercase());
        }
    }
    Ok((Arc::new(Schema::new(fields)), key))
}

/// The persisted form of a catalog entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// A stream or table.
    Source(SourceDef),
    /// A persistent query.
    Query {
        /// Its id.
        id: String,
        /// The statement that started it.
        sql: String,
    },
}

impl Entry {
    /// The record key.
    pub fn key(&self) -> String {
        match self {
            Entry::Source(s) => format!("source/{}", s.name),
            Entry::Query { id, .. } => format!("query/{id}"),
        }
    }
}

/// Milliseconds a `watermark` option trails its column: `'ts'` is 0,
/// `'ts - INTERVAL ''5'' SECOND'` is 5000. Returns the column too.
pub fn watermark(expr: &str) -> Result<(String, i64)> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let bad = || {
        SqlError::Statement(format!(
            "watermark '{expr}' must be `column` or `column - INTERVAL 'n' unit`"
        ))
    };
    let e = Parser::new(&GenericDialect {})
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
        .map_err(|_| bad())?;
    match e {
        Expr::Identifier(i) => Ok((i.value.to_ascii_lowercase(), 0)),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } => {
            let Expr::Identifier(i) = *left else {
                return Err(bad());
            };
            let Expr::Interval(iv) = *right else {
                return Err(bad());
            };
            let ms = interval_text_ms(&iv.to_string()).ok_or_else(bad)?;
            Ok((i.value.to_ascii_lowercase(), ms))
        }
        _ => Err(bad()),
    }
}

/// Milliseconds of `INTERVAL 'n' UNIT` or `INTERVAL 'n unit'` text.
pub fn interval_text_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let t = t
        .strip_prefix("INTERVAL")
        .or_else(|| t.strip_prefix("interval"))?
        .trim();
    let (num, unit) = if let Some(rest) = t.strip_prefix('\'') {
        let end = rest.find('\'')?;
        let inside = &rest[..end];
        let after = rest[end + 1..].trim();
        match inside.split_once(' ') {
            Some((n, u)) if after.is_empty() => (n.trim().to_string(), u.trim().to_string()),
            _ => (inside.trim().to_string(), after.to_string()),
        }
    } else {
        let (n, u) = t.split_once(' ')?;
        (n.to_string(), u.trim().to_string())
    };
    let n: f64 = num.parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    let per = match unit.trim_end_matches('s') {
        "millisecond" | "ms" => 1.0,
        "second" | "sec" | "" => 1000.0,
        "minute" | "min" => 60_000.0,
        "hour" => 3_600_000.0,
        "day" => 86_400_000.0,
        _ => return None,
    };
    Some((n * per) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks() {
        assert_eq!(watermark("ts").unwrap(), ("ts".into(), 0));
        assert_eq!(
            watermark("ts - INTERVAL '5' SECOND").unwrap(),
            ("ts".into(), 5000)
        );
        assert_eq!(
            watermark("date_time - INTERVAL '4' SECOND").unwrap().1,
            4000
        );
        assert_eq!(watermark("ts - INTERVAL '2 minutes'").unwrap().1, 120_000);
        assert!(watermark("ts + 1").is_err());
    }

    #[test]
    fn types_round_trip_through_the_catalog() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Decimal128(10, 2), true),
            Field::new("t", crate::format::ts_type(), true),
        ]);
        let def = SourceDef {
            name: "s".into(),
            kind: SourceKind::Stream,
            columns: columns_of(&schema),
            topic: "s".into(),
            format: "json".into(),
            key: None,
            timestamp: None,
            watermark_delay_ms: 0,
            sql: String::new(),
        };
        let back = def.schema().unwrap();
        assert_eq!(back.field(0).data_type(), &DataType::Decimal128(10, 2));
        assert_eq!(back.field(1).data_type(), &crate::format::ts_type());
    }
}
