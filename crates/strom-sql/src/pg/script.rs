//! Splitting SQL text into statements, for the server (one statement per Parse) and for
//! `strom sql` (when is a statement complete, running a file statement by statement).

/// One statement of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    /// From its first character that is not blank or a comment up to (without) its `;`.
    pub text: &'a str,
    /// The line it starts on, from 1.
    pub line: usize,
    /// Whether a `;` ends it (only the last statement of a script can lack one).
    pub terminated: bool,
}

/// Splits `sql` at the semicolons outside strings (`'..'`), quoted names (`".."`) and comments
/// (`-- ..`, `/* .. */`, nested). Stretches holding only blanks and comments are no statement,
/// so `" ; -- done"` has none. `strom sql` uses this to know when a statement is complete and
/// to run a file statement by statement.
pub fn split_statements(sql: &str) -> Vec<Statement<'_>> {
    #[derive(Clone, Copy)]
    enum In {
        Code,
        Str,
        Quoted,
        LineComment,
        BlockComment(u32),
    }
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut state = In::Code;
    let mut start: Option<(usize, usize)> = None;
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        let mark = |start: &mut Option<(usize, usize)>| {
            start.get_or_insert((i, line));
        };
        match state {
            In::Code => match c {
                b'\'' => {
                    mark(&mut start);
                    state = In::Str;
                }
                b'"' => {
                    mark(&mut start);
                    state = In::Quoted;
                }
                b'-' if next == Some(b'-') => {
                    state = In::LineComment;
                    i += 1;
                }
                b'/' if next == Some(b'*') => {
                    state = In::BlockComment(1);
                    i += 1;
                }
                b';' => {
                    if let Some((s, l)) = start.take() {
                        out.push(Statement {
                            text: sql[s..i].trim_end(),
                            line: l,
                            terminated: true,
                        });
                    }
                }
                c if c.is_ascii_whitespace() => {}
                _ => mark(&mut start),
            },
            // A doubled quote closes and reopens, which comes to the same.
            In::Str if c == b'\'' => state = In::Code,
            In::Quoted if c == b'"' => state = In::Code,
            In::LineComment if c == b'\n' => state = In::Code,
            In::BlockComment(depth) if c == b'*' && next == Some(b'/') => {
                state = if depth == 1 {
                    In::Code
                } else {
                    In::BlockComment(depth - 1)
                };
                i += 1;
            }
            In::BlockComment(depth) if c == b'/' && next == Some(b'*') => {
                state = In::BlockComment(depth + 1);
                i += 1;
            }
            _ => {}
        }
        if c == b'\n' {
            line += 1;
        }
        i += 1;
    }
    if let Some((s, l)) = start {
        out.push(Statement {
            text: sql[s..].trim_end(),
            line: l,
            terminated: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<(&str, usize, bool)> {
        split_statements(sql)
            .iter()
            .map(|s| (s.text, s.line, s.terminated))
            .collect()
    }

    #[test]
    fn semicolons_in_strings_names_and_comments_do_not_split() {
        assert_eq!(
            texts("SELECT 'a;b', \"c;d\" -- e;f\n FROM t; /* g; /* h; */ i; */ SHOW TOPICS;"),
            [
                ("SELECT 'a;b', \"c;d\" -- e;f\n FROM t", 1, true),
                ("SHOW TOPICS", 2, true),
            ]
        );
        assert_eq!(texts("SELECT 'it''s;'"), [("SELECT 'it''s;'", 1, false)]);
    }

    #[test]
    fn statements_start_at_their_first_word_and_line() {
        assert_eq!(
            texts("-- setup\n\nCREATE STREAM s (a INT);\n\n  SELECT a\n  FROM s"),
            [
                ("CREATE STREAM s (a INT)", 3, true),
                ("SELECT a\n  FROM s", 5, false),
            ]
        );
    }

    #[test]
    fn blanks_and_comments_alone_are_no_statement() {
        for sql in ["", " ; ;", "-- only a comment", "/* x */;", "SELECT 1;;"] {
            assert!(
                split_statements(sql).len() <= usize::from(sql.starts_with("SELECT")),
                "{sql}"
            );
        }
        assert_eq!(texts("é; ü"), [("é", 1, true), ("ü", 1, false)]);
    }
}
