//! Strom's statements on top of sqlparser.
//!
//! Standard SQL (`SELECT`, `EXPLAIN`, ..) goes to DataFusion untouched. Strom's own statements
//! (`CREATE STREAM`, `TERMINATE`, `SHOW QUERIES`, ..) are recognised here from their first
//! words, and their pieces (column lists, `WITH` options, the `AS SELECT`) are parsed with
//! sqlparser's own routines so that errors carry the same positions.
//!
//! Windows are Flink-style table functions, `TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL ..)`.
//! sqlparser has no syntax for the `TABLE s` and `DESCRIPTOR(ts)` arguments, so they are
//! rewritten at the token level into string literals (`'s'`, `'ts'`) with the same spans: the
//! query then plans as an ordinary table function call and every position stays right.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{
    ColumnDef, Expr as SqlExpr, Query, SqlOption, TableConstraint,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::{Result, SqlError};

/// Streams or tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourceKind {
    /// Every record is an event.
    Stream,
    /// The latest record per key is the row.
    Table,
}

impl SourceKind {
    /// `STREAM` or `TABLE`.
    pub fn keyword(self) -> &'static str {
        match self {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        }
    }
}

/// What `SHOW` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowWhat {
    /// `SHOW STREAMS`.
    Streams,
    /// `SHOW TABLES`.
    Tables,
    /// `SHOW QUERIES`.
    Queries,
    /// `SHOW TOPICS`: the topics users made, not Strom's or Kafka's internal ones.
    Topics,
    /// `SHOW ALL TOPICS`: every topic, internal ones included.
    AllTopics,
}

/// A parsed query with the text it came from.
#[derive(Debug, Clone)]
pub struct QueryText {
    /// The query, with window functions rewritten.
    pub query: Box<Query>,
    /// `EMIT CHANGES` was given: emit every update, not final window results.
    pub emit_changes: bool,
}

/// One statement.
#[derive(Debug, Clone)]
pub enum Stmt {
    /// `CREATE STREAM|TABLE name [(columns)] WITH (..) [AS SELECT ..]`.
    Create {
        /// Stream or table.
        kind: SourceKind,
        /// Its name (lower-cased unless quoted).
        name: String,
        /// `IF NOT EXISTS` was given.
        if_not_exists: bool,
        /// Declared columns (empty with `AS SELECT`).
        columns: Vec<ColumnDef>,
        /// `PRIMARY KEY (..)` constraints.
        constraints: Vec<TableConstraint>,
        /// `WITH` options, keys lower-cased.
        options: BTreeMap<String, OptionValue>,
        /// The query of `CREATE .. AS SELECT`.
        query: Option<QueryText>,
    },
    /// `INSERT INTO name SELECT ..`.
    Insert {
        /// The target stream.
        target: String,
        /// The query.
        query: QueryText,
    },
    /// `DROP STREAM|TABLE [IF EXISTS] name [DELETE TOPIC]`.
    Drop {
        /// Stream or table.
        kind: SourceKind,
        /// Its name.
        name: String,
        /// `IF EXISTS` was given.
        if_exists: bool,
        /// `DELETE TOPIC` was given.
        delete_topic: bool,
    },
    /// `TERMINATE id` or `TERMINATE ALL`.
    Terminate(Option<String>),
    /// `SHOW ..`.
    Show(ShowWhat),
    /// `DESCRIBE name`.
    Describe(String),
    /// A `SELECT` (or `VALUES`, ..): ad hoc, or a push query with `EMIT CHANGES`.
    Select(QueryText),
    /// Anything else, for DataFusion.
    Other(Box<datafusion::sql::sqlparser::ast::Statement>),
}

/// A `WITH` option's value and where it was written.
#[derive(Debug, Clone)]
pub struct OptionValue {
    /// The value as text (strings unquoted).
    pub value: String,
    /// Where the key was written.
    pub at: Location,
}

/// One statement of a script, with its text.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The statement.
    pub stmt: Stmt,
    /// Its text exactly as written (for the catalog).
    pub text: String,
    /// The identifiers it contains and where, for error positions.
    pub idents: Vec<(String, Location)>,
}

/// Splits `sql` into statements and parses each.
pub fn parse_script(sql: &str) -> Result<Vec<Parsed>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| {
            let msg = e
                .to_string()
                .replace(" at Line: ", " at line ")
                .replace(", Column: ", ", column ");
            SqlError::Statement(format!("syntax error: {msg}"))
        })?;
    let index = LineIndex::new(sql);
    let mut out = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    for t in tokens {
        if t.token == Token::SemiColon {
            if current.iter().any(|t| !is_blank(&t.token)) {
                out.push(parse_one(std::mem::take(&mut current), sql, &index)?);
            }
            current.clear();
        } else {
            current.push(t);
        }
    }
    if current.iter().any(|t| !is_blank(&t.token)) {
        out.push(parse_one(current, sql, &index)?);
    }
    Ok(out)
}

fn is_blank(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_) | Token::EOF)
}

/// Maps sqlparser's line/column locations to byte offsets.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(s: &str) -> Self {
        let mut starts = vec![0];
        for (i, b) in s.bytes().enumerate() {
            if b == b'\n' {
                starts.push(i + 1);
            }
        }
        LineIndex { starts }
    }

    fn offset(&self, s: &str, at: Location) -> usize {
        let Some(&start) = self.starts.get((at.line as usize).saturating_sub(1)) else {
            return s.len();
        };
        s[start..]
            .char_indices()
            .nth((at.column as usize).saturating_sub(1))
            .map(|(i, _)| start + i)
            .unwrap_or(s.len())
    }
}

fn word(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn syntax(e: ParserError) -> SqlError {
    let msg = match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
        ParserError::RecursionLimitExceeded => "statement nested too deeply".to_string(),
    };
    let msg = msg
        .replace("sql parser error: ", "")
        .replace(" at Line: ", " at line ")
        .replace(", Column: ", ", column ");
    SqlError::Statement(format!("syntax error: {msg}"))
}

fn at(loc: Location) -> String {
    format!("line {}, column {}", loc.line, loc.column)
}

fn parse_one(tokens: Vec<TokenWithSpan>, sql: &str, index: &LineIndex) -> Result<Parsed> {
    let solid: Vec<&TokenWithSpan> = tokens.iter().filter(|t| !is_blank(&t.token)).collect();
    let (first, last) = match (solid.first(), solid.last()) {
        (Some(f), Some(l)) => (f.span.start, l.span.end),
        _ => return Err(SqlError::Internal("empty statement".into())),
    };
    // A span ends just after its token's last character.
    let from = index.offset(sql, first);
    let to = index.offset(sql, last).clamp(from, sql.len());
    let text = sql[from..to].to_string();
    let idents = solid
        .iter()
        .filter_map(|t| match &t.token {
            Token::Word(w) => Some((w.value.clone(), t.span.start)),
            _ => None,
        })
        .collect();
    let words: Vec<String> = solid
        .iter()
        .take(4)
        .map(|t| word(&t.token).unwrap_or_default())
        .collect();
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let stmt = match (w(0), w(1)) {
        ("CREATE", "STREAM") | ("CREATE", "TABLE") => parse_create(tokens)?,
        ("CREATE", "OR") if w(2) == "REPLACE" && matches!(w(3), "STREAM" | "TABLE") => {
            return Err(SqlError::Unsupported(format!(
                "CREATE OR REPLACE (at {}): DROP it, then CREATE it",
                at(first)
            )))
        }
        ("INSERT", "INTO") => parse_insert(tokens)?,
        ("DROP", "STREAM") | ("DROP", "TABLE") => parse_drop(tokens)?,
        ("TERMINATE", _) => {
            let rest: Vec<&TokenWithSpan> = solid[1..].to_vec();
            match rest.as_slice() {
                [t] => match &t.token {
                    Token::Word(w)
                        if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("all") =>
                    {
                        Stmt::Terminate(None)
                    }
                    Token::Word(w) => Stmt::Terminate(Some(w.value.to_ascii_lowercase())),
                    Token::SingleQuotedString(s) => Stmt::Terminate(Some(s.clone())),
                    _ => {
                        return Err(SqlError::Statement(format!(
                            "TERMINATE needs a query id, as `SHOW QUERIES` lists (at {})",
                            at(t.span.start)
                        )))
                    }
                },
                _ => {
                    return Err(SqlError::Statement(format!(
                        "TERMINATE needs one query id (as `SHOW QUERIES` lists) or ALL (at {})",
                        at(first)
                    )))
                }
            }
        }
        ("SHOW", "ALL") if solid.len() == 3 && w(2) == "TOPICS" => Stmt::Show(ShowWhat::AllTopics),
        ("SHOW", what) => match what {
            "STREAMS" if solid.len() == 2 => Stmt::Show(ShowWhat::Streams),
            "TABLES" if solid.len() == 2 => Stmt::Show(ShowWhat::Tables),
            "QUERIES" if solid.len() == 2 => Stmt::Show(ShowWhat::Queries),
            "TOPICS" if solid.len() == 2 => Stmt::Show(ShowWhat::Topics),
            _ => {
                return Err(SqlError::Statement(format!(
                    "SHOW what? STREAMS, TABLES, QUERIES, TOPICS or ALL TOPICS (at {})",
                    at(solid[1].span.start)
                )))
            }
        },
        ("DESCRIBE", _) | ("DESC", _) if solid.len() == 2 => match &solid[1].token {
            Token::Word(w) => Stmt::Describe(ident_name(w)),
            _ => {
                return Err(SqlError::Statement(format!(
                    "DESCRIBE needs a stream or table name (at {})",
                    at(solid[1].span.start)
                )))
            }
        },
        ("SELECT", _) | ("WITH", _) | ("VALUES", _) => Stmt::Select(parse_query_tokens(tokens)?),
        _ => {
            let mut p = Parser::new(&GenericDialect {})
                .with_tokens_with_locations(rewrite_windows(tokens)?);
            let st = p.parse_statement().map_err(syntax)?;
            expect_end(&mut p)?;
            Stmt::Other(Box::new(st))
        }
    };
    Ok(Parsed { stmt, text, idents })
}

fn ident_name(w: &datafusion::sql::sqlparser::tokenizer::Word) -> String {
    if w.quote_style.is_some() {
        w.value.clone()
    } else {
        w.value.to_ascii_lowercase()
    }
}

fn expect_end(p: &mut Parser<'_>) -> Result<()> {
    let t = p.peek_token();
    if t.token == Token::EOF {
        Ok(())
    } else {
        Err(SqlError::Statement(format!(
            "syntax error: unexpected `{}` at {}",
            t.token,
            at(t.span.start)
        )))
    }
}

/// Strips a trailing `EMIT CHANGES` or `EMIT FINAL`, then parses a query.
fn parse_query_tokens(mut tokens: Vec<TokenWithSpan>) -> Result<QueryText> {
    while tokens.last().is_some_and(|t| is_blank(&t.token)) {
        tokens.pop();
    }
    let mut emit_changes = false;
    let n = tokens.len();
    let solid: Vec<usize> = (0..n).filter(|&i| !is_blank(&tokens[i].token)).collect();
    if solid.len() >= 2 {
        let (a, b) = (solid[solid.len() - 2], solid[solid.len() - 1]);
        if word(&tokens[a].token).as_deref() == Some("EMIT") {
            match word(&tokens[b].token).as_deref() {
                Some("CHANGES") => emit_changes = true,
                Some("FINAL") => {}
                _ => {
                    return Err(SqlError::Statement(format!(
                        "syntax error: EMIT CHANGES or EMIT FINAL expected at {}",
                        at(tokens[b].span.start)
                    )))
                }
            }
            tokens.truncate(a);
        }
    }
    let mut p =
        Parser::new(&GenericDialect {}).with_tokens_with_locations(rewrite_windows(tokens)?);
    let query = p.parse_query().map_err(syntax)?;
    expect_end(&mut p)?;
    Ok(QueryText {
        query,
        emit_changes,
    })
}

/// Rewrites `TABLE name [PARTITION BY col]` and `DESCRIPTOR(col)` inside `TUMBLE(..)`, `HOP(..)`
/// and `SESSION(..)` into string literals.
fn rewrite_windows(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    // Depth of parentheses inside a window function call, if in one.
    let mut depth: Option<usize> = None;
    let next_solid = |from: usize| (from..tokens.len()).find(|&j| !is_blank(&tokens[j].token));
    while i < tokens.len() {
        let t = &tokens[i];
        if depth.is_none() {
            if let Some(w) = word(&t.token) {
                if matches!(w.as_str(), "TUMBLE" | "HOP" | "SESSION")
                    && next_solid(i + 1).is_some_and(|j| tokens[j].token == Token::LParen)
                {
                    depth = Some(0);
                    // Table functions are looked up by their exact (lower-case) names.
                    let mut t = t.clone();
                    if let Token::Word(word) = &mut t.token {
                        word.value = w.to_ascii_lowercase();
                    }
                    out.push(t);
                    i += 1;
                    continue;
                }
            }
            out.push(t.clone());
            i += 1;
            continue;
        }
        let d = depth.unwrap_or(0);
        match &t.token {
            Token::LParen => {
                depth = Some(d + 1);
                out.push(t.clone());
                i += 1;
            }
            Token::RParen => {
                depth = if d <= 1 { None } else { Some(d - 1) };
                out.push(t.clone());
                i += 1;
            }
            tok if d == 1 && word(tok).as_deref() == Some("TABLE") => {
                let j = next_solid(i + 1).ok_or_else(|| eos(t.span.start))?;
                let Token::Word(name) = &tokens[j].token else {
                    return Err(SqlError::Statement(format!(
                        "syntax error: a stream name expected after TABLE at {}",
                        at(tokens[j].span.start)
                    )));
                };
                out.push(literal(ident_name(name), t.span.start, tokens[j].span.end));
                i = j + 1;
                // SESSION(TABLE s PARTITION BY a, b, ...): the keys become more literals.
                if let Some(k) = next_solid(i) {
                    if word(&tokens[k].token).as_deref() == Some("PARTITION") {
                        let by = next_solid(k + 1).ok_or_else(|| eos(tokens[k].span.start))?;
                        if word(&tokens[by].token).as_deref() != Some("BY") {
                            return Err(SqlError::Statement(format!(
                                "syntax error: BY expected at {}",
                                at(tokens[by].span.start)
                            )));
                        }
                        let mut keys = Vec::new();
                        let mut m = by + 1;
                        loop {
                            let c = next_solid(m).ok_or_else(|| eos(tokens[by].span.start))?;
                            let Token::Word(col) = &tokens[c].token else {
                                return Err(SqlError::Statement(format!(
                                    "syntax error: a column expected at {}",
                                    at(tokens[c].span.start)
                                )));
                            };
                            keys.push(ident_name(col));
                            m = c + 1;
                            match next_solid(m) {
                                Some(n) if tokens[n].token == Token::Comma => {
                                    // A comma then DESCRIPTOR ends the key list.
                                    let after = next_solid(n + 1);
                                    if after.is_some_and(|a| {
                                        word(&tokens[a].token).as_deref() == Some("DESCRIPTOR")
                                    }) {
                                        break;
                                    }
                                    m = n + 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(TokenWithSpan::new(Token::Comma, tokens[k].span));
                        out.push(literal(
                            format!("partition by:{}", keys.join(",")),
                            tokens[k].span.start,
                            tokens[m.saturating_sub(1)].span.end,
                        ));
                        i = m;
                    }
                }
            }
            tok if d == 1 && word(tok).as_deref() == Some("DESCRIPTOR") => {
                let open = next_solid(i + 1).ok_or_else(|| eos(t.span.start))?;
                let col = next_solid(open + 1).ok_or_else(|| eos(t.span.start))?;
                let close = next_solid(col + 1).ok_or_else(|| eos(t.span.start))?;
                match (
                    &tokens[open].token,
                    &tokens[col].token,
                    &tokens[close].token,
                ) {
                    (Token::LParen, Token::Word(c), Token::RParen) => {
                        out.push(literal(ident_name(c), t.span.start, tokens[close].span.end));
                        i = close + 1;
                    }
                    _ => {
                        return Err(SqlError::Statement(format!(
                            "syntax error: DESCRIPTOR(column) expected at {}",
                            at(t.span.start)
                        )))
                    }
                }
            }
            _ => {
                out.push(t.clone());
                i += 1;
            }
        }
    }
    Ok(out)
}

fn eos(loc: Location) -> SqlError {
    SqlError::Statement(format!(
        "syntax error: statement ends too early after {}",
        at(loc)
    ))
}

fn literal(s: String, start: Location, end: Location) -> TokenWithSpan {
    TokenWithSpan::new(Token::SingleQuotedString(s), Span::new(start, end))
}

fn parse_create(tokens: Vec<TokenWithSpan>) -> Result<Stmt> {
    let mut p = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens.clone());
    p.expect_keyword(Keyword::CREATE).map_err(syntax)?;
    let kind = match word(&p.next_token().token).as_deref() {
        Some("STREAM") => SourceKind::Stream,
        _ => SourceKind::Table,
    };
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&mut p)?;
    let (columns, constraints) = if p.peek_token().token == Token::LParen {
        p.parse_columns().map_err(syntax)?
    } else {
        (Vec::new(), Vec::new())
    };
    let options = if p.peek_keyword(Keyword::WITH) {
        options_map(p.parse_options(Keyword::WITH).map_err(syntax)?)?
    } else {
        BTreeMap::new()
    };
    let query = if p.parse_keyword(Keyword::AS) {
        let rest: Vec<TokenWithSpan> = tokens[p.index()..].to_vec();
        Some(parse_query_tokens(rest)?)
    } else {
        expect_end(&mut p)?;
        None
    };
    Ok(Stmt::Create {
        kind,
        name,
        if_not_exists,
        columns,
        constraints,
        options,
        query,
    })
}

fn object_name(p: &mut Parser<'_>) -> Result<String> {
    let t = p.peek_token();
    let ident = p.parse_identifier().map_err(syntax)?;
    if p.peek_token().token == Token::Period {
        return Err(SqlError::Statement(format!(
            "names have one part in Strom SQL (no schemas), at {}",
            at(t.span.start)
        )));
    }
    Ok(if ident.quote_style.is_some() {
        ident.value
    } else {
        ident.value.to_ascii_lowercase()
    })
}

fn options_map(opts: Vec<SqlOption>) -> Result<BTreeMap<String, OptionValue>> {
    let mut out = BTreeMap::new();
    for o in opts {
        match o {
            SqlOption::KeyValue { key, value } => {
                let text = match value {
                    SqlExpr::Value(v) => match v.value {
                        datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s)
                        | datafusion::sql::sqlparser::ast::Value::DoubleQuotedString(s) => s,
                        datafusion::sql::sqlparser::ast::Value::Number(n, _) => n,
                        datafusion::sql::sqlparser::ast::Value::Boolean(b) => b.to_string(),
                        other => other.to_string(),
                    },
                    SqlExpr::Identifier(i) => i.value,
                    other => other.to_string(),
                };
                out.insert(
                    key.value.to_ascii_lowercase(),
                    OptionValue {
                        value: text,
                        at: key.span.start,
                    },
                );
            }
            other => {
                return Err(SqlError::Statement(format!(
                    "WITH options are key = 'value' pairs, not `{other}`"
                )))
            }
        }
    }
    Ok(out)
}

fn parse_insert(tokens: Vec<TokenWithSpan>) -> Result<Stmt> {
    let mut p = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens.clone());
    p.expect_keywords(&[Keyword::INSERT, Keyword::INTO])
        .map_err(syntax)?;
    let target = object_name(&mut p)?;
    let rest: Vec<TokenWithSpan> = tokens[p.index()..].to_vec();
    Ok(Stmt::Insert {
        target,
        query: parse_query_tokens(rest)?,
    })
}

fn parse_drop(tokens: Vec<TokenWithSpan>) -> Result<Stmt> {
    let mut p = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens);
    p.expect_keyword(Keyword::DROP).map_err(syntax)?;
    let kind = match word(&p.next_token().token).as_deref() {
        Some("STREAM") => SourceKind::Stream,
        _ => SourceKind::Table,
    };
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = object_name(&mut p)?;
    let delete_topic = p.parse_keyword(Keyword::DELETE);
    if delete_topic {
        let t = p.next_token();
        if word(&t.token).as_deref() != Some("TOPIC") {
            return Err(SqlError::Statement(format!(
                "syntax error: DELETE TOPIC expected at {}",
                at(t.span.start)
            )));
        }
    }
    expect_end(&mut p)?;
    Ok(Stmt::Drop {
        kind,
        name,
        if_exists,
        delete_topic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Stmt {
        let mut v = parse_script(sql).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0).stmt
    }

    #[test]
    fn create_stream_with_options() {
        let s = one("CREATE STREAM clicks (user_id BIGINT, url VARCHAR, ts TIMESTAMP) WITH (topic='clicks', format='json', timestamp='ts', partitions=3)");
        let Stmt::Create {
            kind,
            name,
            columns,
            options,
            query,
            ..
        } = s
        else {
            panic!()
        };
        assert_eq!(kind, SourceKind::Stream);
        assert_eq!(name, "clicks");
        assert_eq!(columns.len(), 3);
        assert_eq!(options["topic"].value, "clicks");
        assert_eq!(options["partitions"].value, "3");
        assert!(query.is_none());
    }

    #[test]
    fn windows_are_rewritten_and_emit_changes_stripped() {
        let s = one("CREATE STREAM out AS SELECT window_start, count(*) FROM TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE) GROUP BY window_start, window_end EMIT CHANGES");
        let Stmt::Create { query: Some(q), .. } = s else {
            panic!()
        };
        assert!(q.emit_changes);
        let text = q.query.to_string();
        assert!(
            text.contains("tumble('clicks', 'ts', INTERVAL '1' MINUTE)"),
            "{text}"
        );
        let s = one(
            "SELECT * FROM SESSION(TABLE s PARTITION BY a, b, DESCRIPTOR(ts), INTERVAL '5' SECOND)",
        );
        let Stmt::Select(q) = s else { panic!() };
        assert!(
            q.query
                .to_string()
                .contains("session('s', 'partition by:a,b', 'ts', INTERVAL '5' SECOND)"),
            "{}",
            q.query
        );
    }

    #[test]
    fn show_all_topics_includes_internal_ones() {
        let v = parse_script("SHOW ALL TOPICS; show topics").unwrap();
        assert!(matches!(v[0].stmt, Stmt::Show(ShowWhat::AllTopics)));
        assert!(matches!(v[1].stmt, Stmt::Show(ShowWhat::Topics)));
        assert!(parse_script("SHOW ALL STREAMS").is_err());
    }

    #[test]
    fn script_splits_on_semicolons_outside_strings() {
        let v = parse_script("SHOW TOPICS; SELECT 'a;b'; ;TERMINATE q1").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].text, "SELECT 'a;b'");
        assert!(matches!(v[2].stmt, Stmt::Terminate(Some(ref id)) if id == "q1"));
    }

    #[test]
    fn errors_are_one_line_with_positions() {
        let e = parse_script("SELEC 1").unwrap_err().to_string();
        assert!(e.contains("line 1, column 1"), "{e}");
        assert!(!e.contains('\n'));
        let e = parse_script("SELECT a FROM\n  t WHERE")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("syntax error"), "{e}");
        let e = parse_script("SHOW PIGS").unwrap_err().to_string();
        assert!(e.contains("column 6"), "{e}");
    }
}
