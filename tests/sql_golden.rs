//! Golden tests for continuous queries: every directory `sql/golden/<case>/` is one test, run
//! against one `strom server` shared by all cases (one case at a time, each starting from an
//! empty catalog).
//!
//! A case has:
//!
//! - `setup.sql`: `CREATE STREAM`/`CREATE TABLE` statements and the persistent query
//!   `CREATE STREAM out_<case> WITH (topic='out_<case>') AS SELECT ..`. Comment lines
//!   `-- golden: ordered` (compare the output in order, not as a multiset) and
//!   `-- golden: late N` (the queries counted N late rows) set options.
//! - `input.jsonl`: the records to produce, in order, one JSON object a line:
//!   `{"topic": .., "timestamp": ms or "2024-01-01T00:00:05", "key": optional string,
//!   "value": {..} (null for a tombstone)}`, or `"raw": "text"` instead of `value` for a value
//!   that is not JSON. Lines starting with `#` are comments.
//! - `expected.jsonl`: the records of topic `out_<case>`, `{"key": string or null, "value": {..}}`
//!   a line (numbers compare as numbers: `2` equals `2.0`).
//! - `expected_late.jsonl` (optional): the same for the late topic `late_<case>`.
//!
//! The runner runs the statements of `setup.sql` except the queries, produces the leading
//! records of table topics (so that a query's tables are loaded when it starts), runs the
//! queries, then produces the other records one at a time: after a stream record it waits
//! until the queries have read it (`SHOW QUERIES`, `records_in`), so that every record is a
//! micro-batch of its own and lateness does not depend on timing; after a table record it
//! waits [`TABLE_SETTLE`]. Then it reads `out_<case>` until it has as many records as expected
//! (at most [`OUTPUT_TIMEOUT`]), reads on for [`GRACE`] to catch extra ones, and compares.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::sql::{self, Seed, SqlServer};
use serde_json::Value;
use sqllogictest::harness::{Arguments, Failed, Trial};
use strom::client::{Admin, Consumer, ConsumerConfig, TopicPartition};
use tokio_postgres::Client;

/// How long the runner waits for the queries to read one stream record.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a table record is given to reach the queries' table readers.
const TABLE_SETTLE: Duration = Duration::from_millis(1500);
/// How long the runner waits for the expected number of output records.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it reads on after that, for records that should not be there.
const GRACE: Duration = Duration::from_secs(1);

/// One output record: its key and its value (JSON, or the text if it is not JSON).
#[derive(Debug, Clone, PartialEq)]
struct Out {
    key: Option<String>,
    value: Value,
}

impl Out {
    fn line(&self) -> String {
        serde_json::json!({"key": self.key, "value": self.value}).to_string()
    }
}

/// Numbers as floats, so that `2` and `2.0` compare equal.
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Number(n), Value::Number),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// Non-blank, non-comment lines of a .jsonl file, with their line numbers.
fn json_lines(path: &Path) -> Result<Vec<(usize, Value)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        out.push((i + 1, v));
    }
    Ok(out)
}

fn timestamp_ms(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("timestamp {n}")),
        Value::String(s) => {
            let t = humantime::parse_rfc3339_weak(s).map_err(|e| format!("timestamp {s}: {e}"))?;
            let d = t
                .duration_since(UNIX_EPOCH)
                .map_err(|e| format!("timestamp {s}: {e}"))?;
            Ok(d.as_millis() as i64)
        }
        other => Err(format!(
            "timestamp {other}: a number of ms or an ISO string"
        )),
    }
}

/// `input.jsonl` as records to produce, with their line numbers.
fn inputs(path: &Path) -> Result<Vec<(usize, Seed)>, String> {
    let mut out = Vec::new();
    for (line, v) in json_lines(path)? {
        let at = |e: String| format!("{}:{line}: {e}", path.display());
        let topic = v["topic"]
            .as_str()
            .ok_or_else(|| at("no \"topic\"".into()))?
            .to_string();
        let timestamp = timestamp_ms(&v["timestamp"]).map_err(at)?;
        let value = match (v.get("raw"), v.get("value")) {
            (Some(Value::String(raw)), None) => Some(raw.as_bytes().to_vec()),
            (None, Some(Value::Null)) => None,
            (None, Some(value)) => Some(serde_json::to_vec(value).unwrap()),
            _ => return Err(at("one of \"value\" or \"raw\" (a string) expected".into())),
        };
        let key = match v.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_bytes().to_vec()),
            Some(other) => Some(other.to_string().into_bytes()),
        };
        let partition = v.get("partition").and_then(Value::as_i64).map(|p| p as i32);
        out.push((
            line,
            Seed {
                topic,
                partition,
                timestamp,
                key,
                value,
            },
        ));
    }
    Ok(out)
}

/// An expected-output file.
fn outputs(path: &Path) -> Result<Vec<Out>, String> {
    json_lines(path)?
        .into_iter()
        .map(|(line, v)| {
            let key = match v.get("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(k)) => Some(k.clone()),
                Some(other) => {
                    return Err(format!(
                        "{}:{line}: key {other}: a string or null",
                        path.display()
                    ))
                }
            };
            let value = v
                .get("value")
                .cloned()
                .ok_or_else(|| format!("{}:{line}: no \"value\"", path.display()))?;
            Ok(Out {
                key,
                value: normalize(value),
            })
        })
        .collect()
}

/// Options from `-- golden: ..` lines.
#[derive(Debug, Default)]
struct Options {
    ordered: bool,
    late: Option<u64>,
}

fn options(setup: &str) -> Result<Options, String> {
    let mut o = Options::default();
    for line in setup.lines() {
        let Some(rest) = line.trim().strip_prefix("-- golden:") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["ordered"] => o.ordered = true,
            ["late", n] => o.late = Some(n.parse().map_err(|_| format!("late {n}"))?),
            _ => return Err(format!("unknown golden option `{}`", rest.trim())),
        }
    }
    Ok(o)
}

/// Whether `stmt` starts a persistent query.
fn is_query(stmt: &str) -> bool {
    let words: Vec<String> = stmt
        .split_whitespace()
        .take(64)
        .map(str::to_ascii_uppercase)
        .collect();
    words.first().is_some_and(|w| w == "INSERT")
        || (words.first().is_some_and(|w| w == "CREATE")
            && words
                .windows(2)
                .any(|w| w[0] == "AS" && (w[1] == "SELECT" || w[1] == "WITH")))
}

/// `SHOW QUERIES` as (id, state, records_in, late).
async fn queries(client: &Client) -> Result<Vec<(String, String, u64, u64)>, String> {
    let num = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(sql::rows(client, "SHOW QUERIES")
        .await?
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
                num(&r[3]),
                num(&r[5]),
            )
        })
        .collect())
}

async fn records_in(client: &Client) -> Result<u64, String> {
    Ok(queries(client).await?.iter().map(|q| q.2).sum())
}

/// Reads `topic` from the beginning until it has `n` records (or [`OUTPUT_TIMEOUT`]), then
/// for [`GRACE`] more.
async fn read_topic(bootstrap: &str, topic: &str, n: usize) -> Result<Vec<Out>, String> {
    let admin = Admin::connect(bootstrap).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    // The query creates its topic as it starts.
    let info = loop {
        match admin.describe_topic(topic).await {
            Ok(t) => break t,
            Err(e) if Instant::now() > deadline => {
                return Err(format!("topic {topic} does not exist: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let tps: Vec<TopicPartition> = info
        .partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect();
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap))
        .await
        .map_err(|e| e.to_string())?;
    c.assign(&tps).map_err(|e| e.to_string())?;
    c.seek_to_beginning(&tps).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut grace_end: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if grace_end.is_none() && (out.len() >= n || now > deadline) {
            grace_end = Some(now + GRACE);
        }
        if grace_end.is_some_and(|g| now > g) {
            break;
        }
        for r in c
            .poll(Duration::from_millis(100))
            .await
            .map_err(|e| e.to_string())?
        {
            let value = match &r.value {
                None => Value::Null,
                Some(v) => serde_json::from_slice(v)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(v).into_owned())),
            };
            out.push(Out {
                key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                value: normalize(value),
            });
        }
    }
    let _ = c.close().await;
    Ok(out)
}

/// Compares `got` with `want`; the report shows both and what differs.
fn compare(what: &str, got: &[Out], want: &[Out], ordered: bool) -> Result<(), String> {
    let same = if ordered {
        got == want
    } else {
        let sorted = |v: &[Out]| {
            let mut l: Vec<String> = v.iter().map(Out::line).collect();
            l.sort();
            l
        };
        sorted(got) == sorted(want)
    };
    if same {
        return Ok(());
    }
    let lines = |v: &[Out]| {
        v.iter()
            .map(|o| format!("  {}", o.line()))
            .collect::<Vec<_>>()
    };
    let mut missing: Vec<String> = lines(want);
    let mut extra = Vec::new();
    for l in lines(got) {
        match missing.iter().position(|m| *m == l) {
            Some(i) => {
                missing.remove(i);
            }
            None => extra.push(l),
        }
    }
    Err(format!(
        "{what} differs{}\nexpected ({}):\n{}\ngot ({}):\n{}\nmissing:\n{}\nunexpected:\n{}",
        if ordered { " (ordered)" } else { "" },
        want.len(),
        lines(want).join("\n"),
        got.len(),
        lines(got).join("\n"),
        missing.join("\n"),
        extra.join("\n"),
    ))
}

/// The server and runtime shared by the cases, started by the first case that runs.
struct Shared {
    rt: tokio::runtime::Runtime,
    server: SqlServer,
}

static SHARED: Mutex<Option<Arc<Shared>>> = Mutex::new(None);

fn shared() -> Arc<Shared> {
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = &*g {
        return s.clone();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(SqlServer::start());
    let s = Arc::new(Shared { rt, server });
    *g = Some(s.clone());
    s
}

async fn run_case(server: &SqlServer, dir: &Path, case: &str) -> Result<(), String> {
    let setup_path = dir.join("setup.sql");
    let setup = std::fs::read_to_string(&setup_path)
        .map_err(|e| format!("{}: {e}", setup_path.display()))?;
    let opts = options(&setup)?;
    let input = inputs(&dir.join("input.jsonl"))?;
    let expected = outputs(&dir.join("expected.jsonl"))?;
    let late_path = dir.join("expected_late.jsonl");
    let expected_late = if late_path.exists() {
        Some(outputs(&late_path)?)
    } else {
        None
    };
    let bootstrap = server.bootstrap();
    let client = server.connect().await;
    sql::reset(&client, &bootstrap, |_| false).await?;
    let (query_stmts, ddl): (Vec<String>, Vec<String>) = sql::split_statements(&setup)
        .into_iter()
        .partition(|s| is_query(s));
    if query_stmts.is_empty() {
        return Err("setup.sql starts no persistent query".into());
    }
    for s in &ddl {
        sql::exec(&client, s).await?;
    }
    let table_topics: BTreeSet<String> = sql::rows(&client, "SHOW TABLES")
        .await?
        .into_iter()
        .filter_map(|r| r.get(1).cloned().flatten())
        .collect();
    let producer = sql::producer(&bootstrap).await;
    let mut started = false;
    for (line, rec) in &input {
        let table = table_topics.contains(&rec.topic);
        if !table && !started {
            for s in &query_stmts {
                sql::exec(&client, s).await?;
            }
            started = true;
        }
        if table {
            sql::produce(&producer, rec).await?;
            if started {
                tokio::time::sleep(TABLE_SETTLE).await;
            }
            continue;
        }
        let before = records_in(&client).await?;
        sql::produce(&producer, rec).await?;
        let deadline = Instant::now() + READ_TIMEOUT;
        while records_in(&client).await? <= before {
            if Instant::now() > deadline {
                return Err(format!(
                    "input.jsonl:{line}: the queries did not read the record within {} s; SHOW QUERIES: {:?}",
                    READ_TIMEOUT.as_secs(),
                    queries(&client).await?
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if !started {
        for s in &query_stmts {
            sql::exec(&client, s).await?;
        }
    }
    let _ = producer.close().await;
    let mut problems = Vec::new();
    let got = read_topic(&bootstrap, &format!("out_{case}"), expected.len()).await?;
    if let Err(e) = compare(&format!("out_{case}"), &got, &expected, opts.ordered) {
        problems.push(e);
    }
    if let Some(want) = &expected_late {
        let got = read_topic(&bootstrap, &format!("late_{case}"), want.len()).await?;
        if let Err(e) = compare(&format!("late_{case}"), &got, want, false) {
            problems.push(e);
        }
    }
    let qs = queries(&client).await?;
    for (id, state, _, _) in &qs {
        if state != "RUNNING" {
            problems.push(format!("query {id} is {state}"));
        }
    }
    if let Some(n) = opts.late {
        let late: u64 = qs.iter().map(|q| q.3).sum();
        if late != n {
            problems.push(format!(
                "the queries counted {late} late rows, expected {n}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("setup.sql").exists())
        .collect();
    cases.sort();
    cases
}

fn main() {
    let mut args = Arguments::from_args();
    // One server for all cases, each starting from an empty catalog: one at a time.
    args.test_threads = Some(1);
    let cases = cases();
    assert!(!cases.is_empty(), "no cases under sql/golden");
    let trials = cases
        .into_iter()
        .map(|dir| {
            let case = dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Trial::test(case.clone(), move || {
                let shared = shared();
                shared
                    .rt
                    .block_on(run_case(&shared.server, &dir, &case))
                    .map_err(Failed::from)
            })
        })
        .collect();
    let conclusion = sqllogictest::harness::run(&args, trials);
    SHARED.lock().unwrap_or_else(|e| e.into_inner()).take();
    conclusion.exit();
}
