//! `strom sql`: Strom SQL from the terminal, over the PostgreSQL protocol of `strom server`'s
//! SQL listener.
//!
//! ```text
//! strom sql                    interactive: line editing, history in ~/.strom_sql_history,
//!                              a statement runs once a line ends it with `;`
//! strom sql -c 'SHOW TOPICS;'  the statements of the argument (sent as one query)
//! strom sql -f setup.sql       the statements of a file, one at a time
//! ... | strom sql              standard input that is not a terminal, as with -f
//! ```
//!
//! Results print as psql's aligned tables; notices and errors go to standard error as one line
//! each. The rows of a push query print batch by batch as they arrive (the table's header is
//! printed when the first rows have waited [`IDLE`], with the column widths seen so far), until
//! Ctrl-C, which sends a cancel request. The shell goes on after an error or a Ctrl-C; `-c`,
//! `-f` and standard input stop at the first error (exit status 1) or at a Ctrl-C (status 0).
//!
//! The client is tokio-postgres on the simple query protocol, so rows stream as they come.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustyline::error::ReadlineError;
use strom_sql::pg::split_statements;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleColumn, SimpleQueryMessage};

use super::Out;

/// What `strom sql` runs.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// `HOST:PORT` of the SQL listener.
    pub server: String,
    /// Run the statements of this file.
    pub file: Option<PathBuf>,
    /// Run these statements.
    pub command: Option<String>,
}

/// How long rows wait for more before the ones received so far are printed: a result still
/// arriving after this is treated as a stream.
pub const IDLE: Duration = Duration::from_millis(150);
/// How long a cancelled query may take to stop before the connection is dropped instead.
const CANCEL_GRACE: Duration = Duration::from_secs(3);
const PROMPT: &str = "strom> ";
const CONTINUATION: &str = "   -> ";
const HISTORY_FILE: &str = ".strom_sql_history";

/// Runs `strom sql`; prints its own errors (`strom sql: ...` or `ERROR: ...`).
pub fn run(o: SqlOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("strom-sql")
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("starting the runtime: {e}")),
    };
    let conn = match runtime.block_on(Conn::open(&o.server)) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let script = match (&o.command, &o.file) {
        (Some(sql), _) => Some(Script::Command(sql.clone())),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(Script::File(path.display().to_string(), text)),
            Err(e) => return fail(&format!("cannot read {}: {e}", path.display())),
        },
        (None, None) if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                return fail(&format!("reading standard input: {e}"));
            }
            Some(Script::File("<stdin>".into(), text))
        }
        (None, None) => None,
    };
    match script {
        Some(script) => run_script(&runtime, conn, script),
        None => shell(&runtime, &o.server, conn),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("strom sql: {message}");
    ExitCode::FAILURE
}

/// Statements given with `-c` (one query, as psql sends it) or read from a file (one query per
/// statement, so that an error can name the statement's line).
enum Script {
    Command(String),
    File(String, String),
}

fn run_script(runtime: &Runtime, mut conn: Conn, script: Script) -> ExitCode {
    let mut out = Out::new();
    let queries: Vec<(String, Option<String>)> = match &script {
        Script::Command(sql) => vec![(sql.clone(), None)],
        Script::File(name, text) => split_statements(text)
            .iter()
            .map(|s| (s.text.to_string(), Some(format!("{name}:{}", s.line))))
            .collect(),
    };
    for (sql, place) in queries {
        match runtime.block_on(conn.run(&sql, &mut out)) {
            Ran::Done => {}
            Ran::Interrupted | Ran::Closed => return ExitCode::SUCCESS,
            Ran::Failed(message) => {
                match place {
                    Some(place) => eprintln!("ERROR: {message} (the statement at {place})"),
                    None => eprintln!("ERROR: {message}"),
                }
                return ExitCode::FAILURE;
            }
            Ran::Lost(e) => return fail(&e),
        }
    }
    ExitCode::SUCCESS
}

/// The interactive shell.
fn shell(runtime: &Runtime, server: &str, conn: Conn) -> ExitCode {
    let config = rustyline::Config::builder().auto_add_history(false);
    let config = match config.max_history_size(1000) {
        Ok(c) => c.build(),
        Err(e) => return fail(&format!("setting up the line editor: {e}")),
    };
    let mut editor = match rustyline::DefaultEditor::with_config(config) {
        Ok(e) => e,
        Err(e) => return fail(&format!("setting up the line editor: {e}")),
    };
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(HISTORY_FILE));
    if let Some(h) = &history {
        // No history yet is fine.
        let _ = editor.load_history(h);
    }
    let mut conn = Some(conn);
    let mut out = Out::new();
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            PROMPT
        } else {
            CONTINUATION
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            // Ctrl-C drops the statement being typed, as in psql.
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("strom sql: reading the terminal: {e}");
                break;
            }
        };
        if buffer.is_empty() && is_quit(&line) {
            break;
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        match split_statements(&buffer).last() {
            None => {
                buffer.clear();
                continue;
            }
            Some(last) if !last.terminated => continue,
            Some(_) => {}
        }
        let sql = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(sql.split_whitespace().collect::<Vec<_>>().join(" "));
        let c = match conn.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => match runtime.block_on(Conn::open(server)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("strom sql: {e}");
                    continue;
                }
            },
        };
        let mut c = c;
        match runtime.block_on(c.run(&sql, &mut out)) {
            Ran::Done | Ran::Interrupted => conn = Some(c),
            Ran::Failed(message) => {
                eprintln!("ERROR: {message}");
                conn = Some(c);
            }
            // The reader of standard output went away: nothing more can be shown.
            Ran::Closed => break,
            // Reconnect at the next statement.
            Ran::Lost(e) => eprintln!("strom sql: {e}"),
        }
    }
    if let Some(h) = &history {
        if let Err(e) = editor.save_history(h) {
            eprintln!("strom sql: saving the history to {}: {e}", h.display());
        }
    }
    ExitCode::SUCCESS
}

fn is_quit(line: &str) -> bool {
    let line = line.trim().trim_end_matches(';');
    line == "\\q" || line.eq_ignore_ascii_case("quit") || line.eq_ignore_ascii_case("exit")
}

/// How running a query went.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    /// Every statement ran.
    Done,
    /// The server reported this error (one line).
    Failed(String),
    /// Ctrl-C stopped it.
    Interrupted,
    /// Standard output was closed.
    Closed,
    /// The connection broke; the message says how.
    Lost(String),
}

/// A session: the client and the notices its connection receives.
struct Conn {
    client: Client,
    notices: mpsc::UnboundedReceiver<(String, String)>,
}

impl Conn {
    async fn open(server: &str) -> Result<Conn, String> {
        let (host, port) = server
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("--server {server:?}: expected HOST:PORT"))?;
        let connected = tokio_postgres::Config::new()
            .host(host)
            .port(port)
            .user("strom")
            .dbname("strom")
            .application_name("strom sql")
            .connect_timeout(Duration::from_secs(5))
            .connect(NoTls)
            .await;
        let (client, mut connection) =
            connected.map_err(|e| format!("cannot connect to {server}: {}", root_cause(&e)))?;
        let (tx, notices) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notice(n) = message {
                    let _ = tx.send((n.severity().to_string(), n.message().to_string()));
                }
            }
        });
        Ok(Conn { client, notices })
    }

    /// Sends `sql` as one query and prints its results as they come.
    async fn run(&mut self, sql: &str, out: &mut Out) -> Ran {
        let ran = self.run_unflushed(sql, out).await;
        match (ran, out.flush()) {
            (Ran::Done | Ran::Interrupted, Ok(false)) => Ran::Closed,
            (Ran::Done | Ran::Interrupted, Err(e)) => Ran::Lost(e),
            (ran, _) => ran,
        }
    }

    async fn run_unflushed(&mut self, sql: &str, out: &mut Out) -> Ran {
        let stream = match self.client.simple_query_raw(sql).await {
            Ok(s) => s,
            Err(e) => return failure(&e, false),
        };
        tokio::pin!(stream);
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        let mut cancelled = false;
        let mut table: Option<Table> = None;
        loop {
            let next = tokio::select! {
                _ = &mut interrupt, if !cancelled => {
                    cancelled = true;
                    let token = self.client.cancel_token();
                    tokio::spawn(async move { token.cancel_query(NoTls).await });
                    continue;
                }
                next = tokio::time::timeout(if cancelled { CANCEL_GRACE } else { IDLE }, stream.next()) => next,
            };
            // Notices come before the messages that follow them on the wire.
            self.print_notices(out);
            let shown = match next {
                Err(_) if cancelled => {
                    return Ran::Lost("the server did not stop the query; disconnected".into())
                }
                // Rows still coming: show what there is.
                Err(_) => table.as_mut().map_or(Ok(true), |t| t.stream(out)),
                Ok(None) => return Ran::Done,
                Ok(Some(Ok(SimpleQueryMessage::RowDescription(columns)))) => {
                    table = Some(Table::new(&columns));
                    Ok(true)
                }
                Ok(Some(Ok(SimpleQueryMessage::Row(row)))) => match table.as_mut() {
                    Some(t) => t.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                        out,
                    ),
                    None => Ok(true),
                },
                Ok(Some(Ok(SimpleQueryMessage::CommandComplete(_)))) => {
                    table.take().map_or(Ok(true), |t| t.finish(out))
                }
                Ok(Some(Ok(_))) => Ok(true),
                Ok(Some(Err(e))) => {
                    let finished = table.take().map_or(Ok(true), |t| t.finish(out));
                    self.print_notices(out);
                    return match finished {
                        Ok(true) => failure(&e, cancelled),
                        Ok(false) => Ran::Closed,
                        Err(e) => Ran::Lost(e),
                    };
                }
            };
            match shown.and_then(|open| Ok(open && out.flush()?)) {
                Ok(true) => {}
                Ok(false) => return Ran::Closed,
                Err(e) => return Ran::Lost(e),
            }
        }
    }

    fn print_notices(&mut self, out: &mut Out) {
        while let Ok((severity, message)) = self.notices.try_recv() {
            let _ = out.flush();
            match severity.as_str() {
                "NOTICE" | "INFO" | "LOG" => eprintln!("{message}"),
                _ => eprintln!("{severity}: {message}"),
            }
        }
    }
}

/// What an error from the client means: the server's one-line message, a cancel we asked for,
/// or a broken connection.
fn failure(e: &tokio_postgres::Error, cancelled: bool) -> Ran {
    match e.as_db_error() {
        Some(db) if cancelled && db.code() == &SqlState::QUERY_CANCELED => Ran::Interrupted,
        Some(db) => Ran::Failed(db.message().lines().next().unwrap_or("").to_string()),
        None => Ran::Lost(format!("connection lost: {}", root_cause(e))),
    }
}

/// The innermost error: tokio-postgres wraps the interesting part (`Connection refused`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

/// One result set being printed as psql's aligned table.
struct Table {
    columns: Vec<String>,
    /// Rows not printed yet.
    rows: Vec<Vec<Option<String>>>,
    /// Set once the header is out (the result streams): widths and right-alignment.
    layout: Option<(Vec<usize>, Vec<bool>)>,
    count: usize,
}

impl Table {
    fn new(columns: &Arc<[SimpleColumn]>) -> Table {
        Table {
            columns: columns.iter().map(|c| c.name().to_string()).collect(),
            rows: Vec::new(),
            layout: None,
            count: 0,
        }
    }

    /// Adds a row; a streaming table prints it at once. `Ok(false)`: standard output closed.
    fn push(&mut self, row: Vec<Option<String>>, out: &mut Out) -> Result<bool, String> {
        self.count += 1;
        match &self.layout {
            Some((widths, right)) => out.write(render_row(&row, widths, right).as_bytes()),
            None => {
                self.rows.push(row);
                Ok(true)
            }
        }
    }

    /// Prints the header and the rows so far; later rows print as they come.
    fn stream(&mut self, out: &mut Out) -> Result<bool, String> {
        if self.layout.is_some() {
            return Ok(true);
        }
        let widths = widths(&self.columns, &self.rows);
        let right = numeric_columns(self.columns.len(), &self.rows);
        let mut text = render_header(&self.columns, &widths);
        for row in self.rows.drain(..) {
            text.push_str(&render_row(&row, &widths, &right));
        }
        self.layout = Some((widths, right));
        out.write(text.as_bytes())
    }

    /// Prints what is left, and the row count.
    fn finish(self, out: &mut Out) -> Result<bool, String> {
        let text = match self.layout {
            Some(_) => String::new(),
            None => render_table(&self.columns, &self.rows),
        };
        out.write(format!("{text}{}\n", footer(self.count)).as_bytes())
    }
}

/// psql's aligned table without the row count.
fn render_table(columns: &[String], rows: &[Vec<Option<String>>]) -> String {
    let widths = widths(columns, rows);
    let right = numeric_columns(columns.len(), rows);
    let mut text = render_header(columns, &widths);
    for row in rows {
        text.push_str(&render_row(row, &widths, &right));
    }
    text
}

fn cell(v: &Option<String>) -> String {
    v.as_deref()
        .unwrap_or("")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn widths(columns: &[String], rows: &[Vec<Option<String>>]) -> Vec<usize> {
    columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|v| width(&cell(v)))
                .fold(width(name), usize::max)
        })
        .collect()
}

/// Columns whose values are all numbers are right-aligned, as psql does for numeric types.
fn numeric_columns(n: usize, rows: &[Vec<Option<String>>]) -> Vec<bool> {
    (0..n)
        .map(|i| {
            let mut values = rows.iter().filter_map(|r| r.get(i)?.as_deref()).peekable();
            values.peek().is_some() && values.all(|v| v.parse::<f64>().is_ok())
        })
        .collect()
}

fn render_header(columns: &[String], widths: &[usize]) -> String {
    let names: Vec<String> = columns
        .iter()
        .zip(widths)
        .map(|(name, w)| {
            let pad = w.saturating_sub(width(name));
            format!(
                " {}{name}{} ",
                " ".repeat(pad / 2),
                " ".repeat(pad - pad / 2)
            )
        })
        .collect();
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    format!("{}\n{}\n", names.join("|").trim_end(), rule.join("+"))
}

fn render_row(row: &[Option<String>], widths: &[usize], right: &[bool]) -> String {
    let cells: Vec<String> = row
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = cell(v);
            let w = widths.get(i).copied().unwrap_or(0);
            if right.get(i).copied().unwrap_or(false) {
                format!(" {v:>w$} ")
            } else {
                format!(" {v:<w$} ")
            }
        })
        .collect();
    format!("{}\n", cells.join("|").trim_end())
}

fn footer(n: usize) -> String {
    match n {
        1 => "(1 row)\n".into(),
        n => format!("({n} rows)\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(String::from)).collect()
    }

    #[test]
    fn tables_look_like_psql() {
        let columns = vec!["name".to_string(), "partitions".to_string()];
        let rows = vec![
            row(&[Some("orders"), Some("12")]),
            row(&[Some("t"), Some("1")]),
            row(&[None, None]),
        ];
        let expected = [
            "  name  | partitions",
            "--------+------------",
            " orders |         12",
            " t      |          1",
            "        |",
        ];
        assert_eq!(render_table(&columns, &rows), expected.join("\n") + "\n");
        assert_eq!(footer(1), "(1 row)\n");
        assert_eq!(footer(0), "(0 rows)\n");
    }

    #[test]
    fn wide_and_multiline_values_keep_the_table_intact() {
        let columns = vec!["a".to_string()];
        let rows = vec![row(&[Some("héllo\nwörld")])];
        assert_eq!(
            render_table(&columns, &rows),
            "      a\n--------------\n héllo\\nwörld\n"
        );
    }

    #[test]
    fn only_all_numeric_columns_align_right() {
        let rows = vec![
            row(&[Some("1.5"), Some("x"), None]),
            row(&[Some("-2"), Some("3"), None]),
        ];
        assert_eq!(numeric_columns(3, &rows), [true, false, false]);
    }

    #[test]
    fn quitting_words() {
        for q in ["\\q", " quit ", "EXIT;"] {
            assert!(is_quit(q), "{q}");
        }
        assert!(!is_quit("SELECT 1;"));
    }
}
