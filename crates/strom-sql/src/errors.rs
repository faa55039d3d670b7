//! Turning DataFusion's errors into one line a user can act on: what is wrong, where, and the
//! closest name when a name is misspelt.

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::tokenizer::Location;

use crate::SqlError;

/// The first line of `s`, trimmed.
pub(crate) fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Edit distance between two short names (case-insensitive).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `"; did you mean `x`?"` for the candidate closest to `name`, or nothing if none is close.
pub(crate) fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .filter(|c| !c.starts_with('_') || name.starts_with('_'))
        .map(|c| (distance(name, c), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= (name.chars().count() / 3).max(2) && d > 0 => {
            format!("; did you mean `{c}`?")
        }
        _ => String::new(),
    }
}

/// A DataFusion error as a [`SqlError`].
pub(crate) fn from_datafusion(e: DataFusionError) -> SqlError {
    describe(e, &[])
}

/// A DataFusion error as a [`SqlError`], suggesting from `tables` for an unknown table.
pub(crate) fn describe(e: DataFusionError, tables: &[String]) -> SqlError {
    match e.find_root() {
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            SchemaError::FieldNotFound {
                field,
                valid_fields,
            } => {
                let names: Vec<&str> = valid_fields.iter().map(|c| c.name.as_str()).collect();
                let shown = match &field.relation {
                    Some(r) => format!("{r}.{}", field.name),
                    None => field.name.clone(),
                };
                SqlError::Statement(format!(
                    "unknown column `{}`{}",
                    shown,
                    suggest(&field.name, names.iter().copied())
                ))
            }
            SchemaError::AmbiguousReference { field } => SqlError::Statement(format!(
                "column `{}` is ambiguous: qualify it with its stream or table",
                field.name
            )),
            other => SqlError::Statement(one_line(&other.to_string())),
        },
        DataFusionError::Plan(m) if m.starts_with("table '") && m.ends_with("' not found") => {
            let full = &m["table '".len()..m.len() - "' not found".len()];
            let name = full.rsplit('.').next().unwrap_or(full);
            SqlError::Statement(format!(
                "unknown stream or table `{name}`{}",
                suggest(name, tables.iter().map(String::as_str))
            ))
        }
        DataFusionError::Plan(m) => SqlError::Statement(one_line(m)),
        DataFusionError::NotImplemented(m) => SqlError::Unsupported(one_line(m)),
        DataFusionError::SQL(e, _) => {
            SqlError::Statement(format!("syntax error: {}", one_line(&e.to_string())))
        }
        other => SqlError::DataFusion(one_line(&other.to_string())),
    }
}

/// Adds where the first back-quoted name of `e`'s message appears in the statement.
pub(crate) fn with_position(e: SqlError, idents: &[(String, Location)]) -> SqlError {
    let SqlError::Statement(msg) = &e else {
        return e;
    };
    if msg.contains(" at line ") {
        return e;
    }
    // The name in question comes before any suggestion.
    let head = msg.split("; did you mean").next().unwrap_or(msg);
    let Some(start) = head.find('`') else {
        return e;
    };
    let Some(len) = head[start + 1..].find('`') else {
        return e;
    };
    let name = &msg[start + 1..start + 1 + len];
    let last = name.rsplit('.').next().unwrap_or(name);
    // A name declared twice is pointed at where it comes again.
    let nth = usize::from(msg.contains("declared twice"));
    let Some((_, at)) = idents
        .iter()
        .filter(|(i, _)| i.eq_ignore_ascii_case(last))
        .nth(nth)
    else {
        return e;
    };
    let end = start + 1 + len + 1;
    SqlError::Statement(format!(
        "{} at line {}, column {}{}",
        &msg[..end],
        at.line,
        at.column,
        &msg[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let cols = ["amount", "user_id", "_offset"];
        assert_eq!(
            suggest("amout", cols.iter().copied()),
            "; did you mean `amount`?"
        );
        assert_eq!(suggest("zzz", cols.iter().copied()), "");
        assert_eq!(suggest("offset", cols.iter().copied()), "");
    }

    #[test]
    fn positions_are_added() {
        let e = SqlError::Statement("unknown column `amout`; did you mean `amount`?".into());
        let idents = vec![
            ("SELECT".to_string(), Location { line: 1, column: 1 }),
            ("amout".to_string(), Location { line: 1, column: 8 }),
        ];
        assert_eq!(
            with_position(e, &idents).to_string(),
            "unknown column `amout` at line 1, column 8; did you mean `amount`?"
        );
    }
}
