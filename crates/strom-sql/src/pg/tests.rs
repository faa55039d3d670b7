//! The server against a fake engine, through tokio-postgres: both protocols, every kind of
//! output, errors, cancel requests and clients that go away.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, Int8Array, ListArray, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

use super::{has_parameters, returns_rows, serve_with, session_command, Executor};
use crate::{Output, SqlError};

const WAIT: Duration = Duration::from_secs(5);
const PUSH: &str = "SELECT * FROM s EMIT CHANGES";

/// Answers a few fixed statements; push queries hand their sender to the test.
struct Fake {
    executions: AtomicUsize,
    pushes: mpsc::UnboundedSender<mpsc::Sender<crate::Result<RecordBatch>>>,
}

#[async_trait]
impl Executor for Fake {
    async fn prepare(
        &self,
        _sql: &str,
    ) -> crate::Result<Option<(Vec<Option<DataType>>, arrow::datatypes::SchemaRef)>> {
        Ok(None)
    }

    async fn execute_with(
        &self,
        _sql: &str,
        _params: Vec<datafusion::common::ScalarValue>,
    ) -> crate::Result<Output> {
        Err(SqlError::Unsupported("parameters".into()))
    }

    async fn execute(&self, sql: &str) -> crate::Result<Vec<Output>> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        let mut outputs = Vec::new();
        for statement in super::split_statements(sql) {
            outputs.push(match statement.text.to_ascii_uppercase().as_str() {
                "SELECT TYPES" => Output::Rows {
                    schema: typed().schema(),
                    batches: vec![typed()],
                },
                "SELECT 1 + 1" => Output::Rows {
                    schema: two().schema(),
                    batches: vec![two()],
                },
                "SELECT * FROM S EMIT CHANGES" => {
                    let (tx, rx) = mpsc::channel(4);
                    self.pushes.send(tx).unwrap();
                    Output::Stream {
                        schema: numbers(&[]).schema(),
                        rows: rx,
                    }
                }
                "CREATE STREAM S" => Output::Done {
                    tag: "CREATE STREAM".into(),
                    message: Some("Created stream s on topic 't'".into()),
                },
                "SLOW" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    unreachable!()
                }
                "UNSUPPORTED" => return Err(SqlError::Unsupported("windows on tables".into())),
                other => {
                    return Err(SqlError::Statement(format!(
                        "unknown statement `{other}` at line {}, column 1",
                        statement.line
                    )))
                }
            });
        }
        Ok(outputs)
    }
}

/// One row of every kind, and one of NULLs.
fn typed() -> RecordBatch {
    let ts = 1_769_860_800_500_000; // 2026-01-31 12:00:00.5 UTC, in microseconds
    let list =
        ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), Some(2)]), None]);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("b", Arc::new(BooleanArray::from(vec![Some(true), None]))),
        ("i8", Arc::new(Int8Array::from(vec![Some(-8), None]))),
        ("i16", Arc::new(Int16Array::from(vec![Some(16), None]))),
        ("i32", Arc::new(Int32Array::from(vec![Some(-32), None]))),
        ("i64", Arc::new(Int64Array::from(vec![Some(1 << 40), None]))),
        ("f32", Arc::new(Float32Array::from(vec![Some(1.5), None]))),
        (
            "f64",
            Arc::new(Float64Array::from(vec![Some(f64::NAN), None])),
        ),
        ("s", Arc::new(StringArray::from(vec![Some("héllo"), None]))),
        (
            "bin",
            Arc::new(BinaryArray::from(vec![Some(&[1u8, 0xab][..]), None])),
        ),
        ("d", Arc::new(Date32Array::from(vec![Some(20_484), None]))),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![Some(ts), None])),
        ),
        (
            "tstz",
            Arc::new(
                TimestampMillisecondArray::from(vec![Some(ts / 1000), None]).with_timezone("UTC"),
            ),
        ),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![Some(-1250), None])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        ("list", Arc::new(list)),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

fn two() -> RecordBatch {
    RecordBatch::try_from_iter([(
        "Int64(1) + Int64(1)",
        Arc::new(Int64Array::from(vec![2])) as ArrayRef,
    )])
    .unwrap()
}

fn numbers(n: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(n.to_vec()))]).unwrap()
}

struct Server {
    addr: SocketAddr,
    fake: Arc<Fake>,
    pushes: mpsc::UnboundedReceiver<mpsc::Sender<crate::Result<RecordBatch>>>,
    _stop: oneshot::Sender<()>,
}

async fn server() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (pushes_tx, pushes) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        executions: AtomicUsize::new(0),
        pushes: pushes_tx,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with(fake.clone(), listener, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        fake,
        pushes,
        _stop: stop,
    }
}

impl Server {
    fn executions(&self) -> usize {
        self.fake.executions.load(Ordering::SeqCst)
    }

    async fn push_sender(&mut self) -> mpsc::Sender<crate::Result<RecordBatch>> {
        tokio::time::timeout(WAIT, self.pushes.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

/// A client; notices arrive on the receiver. Aborting the handle closes the socket.
async fn connect(
    addr: SocketAddr,
) -> (
    Client,
    mpsc::UnboundedReceiver<String>,
    tokio::task::JoinHandle<()>,
) {
    let (client, mut connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(addr.port())
        .user("test")
        .connect(NoTls)
        .await
        .unwrap();
    let (tx, notices) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notice(n) = message {
                let _ = tx.send(n.message().to_string());
            }
        }
    });
    (client, notices, task)
}

fn db_error(e: &tokio_postgres::Error) -> (&SqlState, &str) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code(), db.message())
}

/// The rows of simple-query messages as text values.
fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_query_sends_rows_in_text_format() {
    let s = server().await;
    let (client, _, _) = connect(s.addr).await;
    let messages = client.simple_query("SELECT types").await.unwrap();
    let SimpleQueryMessage::RowDescription(columns) = &messages[0] else {
        panic!("{messages:?}")
    };
    let names: Vec<_> = columns.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "b", "i8", "i16", "i32", "i64", "f32", "f64", "s", "bin", "d", "ts", "tstz", "dec",
            "list"
        ]
    );
    let text: Vec<Option<String>> = [
        "t",
        "-8",
        "16",
        "-32",
        "1099511627776",
        "1.5",
        "NaN",
        "héllo",
        "\\x01ab",
        "2026-01-31",
        "2026-01-31 12:00:00.500",
        "2026-01-31 12:00:00.500+00",
        "-12.50",
        "[1, 2]",
    ]
    .iter()
    .map(|s| Some(s.to_string()))
    .collect();
    assert_eq!(rows(&messages), vec![text, vec![None; 14]]);
    assert!(matches!(
        messages.last(),
        Some(SimpleQueryMessage::CommandComplete(2))
    ));
}

#[tokio::test]
async fn several_statements_give_several_results_with_notices() {
    let s = server().await;
    let (client, mut notices, _) = connect(s.addr).await;
    let messages = client
        .simple_query("SELECT 1 + 1; CREATE STREAM s; SELECT 1 + 1;")
        .await
        .unwrap();
    assert_eq!(s.executions(), 1, "one Query, one call to the engine");
    let completes: Vec<u64> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completes, [1, 0, 1]);
    assert_eq!(rows(&messages).len(), 2);
    let notice = tokio::time::timeout(WAIT, notices.recv()).await.unwrap();
    assert_eq!(notice.as_deref(), Some("Created stream s on topic 't'"));
}

#[tokio::test]
async fn errors_carry_a_sqlstate_and_one_line_and_the_connection_stays_usable() {
    let s = server().await;
    let (client, _, _) = connect(s.addr).await;
    let e = client
        .simple_query("SELECT 1 + 1; SELEC 1")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            &SqlState::SYNTAX_ERROR,
            "unknown statement `SELEC 1` at line 1, column 1"
        )
    );
    let e = client.simple_query("unsupported").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            &SqlState::FEATURE_NOT_SUPPORTED,
            "not supported: windows on tables"
        )
    );
    let e = client.query("nonsense", &[]).await.unwrap_err();
    assert_eq!(db_error(&e).0, &SqlState::SYNTAX_ERROR);
    let rows = client.simple_query("SELECT 1 + 1").await.unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let two: i64 = client.query_one("SELECT 1 + 1", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);
}

/// Any value's bytes as sent, whatever its type.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[tokio::test]
async fn extended_protocol_describes_columns_and_sends_binary_values() {
    let s = server().await;
    let (client, _, _) = connect(s.addr).await;
    let statement = client.prepare("SELECT types").await.unwrap();
    let types: Vec<_> = statement
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    assert_eq!(
        types,
        [
            Type::BOOL,
            Type::INT2,
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::VARCHAR,
            Type::BYTEA,
            Type::DATE,
            Type::TIMESTAMP,
            Type::TIMESTAMPTZ,
            Type::NUMERIC,
            Type::TEXT,
        ]
    );
    let rows = client.query(&statement, &[]).await.unwrap();
    assert_eq!(s.executions(), 1, "run at Describe, not again at Execute");
    let r = &rows[0];
    assert!(r.get::<_, bool>(0));
    assert_eq!(r.get::<_, i16>(1), -8);
    assert_eq!(r.get::<_, i16>(2), 16);
    assert_eq!(r.get::<_, i32>(3), -32);
    assert_eq!(r.get::<_, i64>(4), 1 << 40);
    assert_eq!(r.get::<_, f32>(5), 1.5);
    assert!(r.get::<_, f64>(6).is_nan());
    assert_eq!(r.get::<_, &str>(7), "héllo");
    assert_eq!(r.get::<_, &[u8]>(8), [1, 0xab]);
    // 2026-01-31 is day 9527 after 2000-01-01; the timestamps count microseconds from then.
    assert_eq!(r.get::<_, Raw>(9).0, 9527i32.to_be_bytes());
    let micros = 1_769_860_800_500_000i64 - 946_684_800_000_000;
    assert_eq!(r.get::<_, Raw>(10).0, micros.to_be_bytes());
    assert_eq!(r.get::<_, Raw>(11).0, micros.to_be_bytes());
    // -12.50: 2 digits (12, 5000), weight 0, negative, scale 2.
    assert_eq!(
        r.get::<_, Raw>(12).0,
        [0, 2, 0, 0, 0x40, 0, 0, 2, 0, 12, 0x13, 0x88]
    );
    assert_eq!(r.get::<_, &str>(13), "[1, 2]");
    assert!(rows[1].get::<_, Option<i64>>(4).is_none());

    // The parked result is used once; the next Execute runs the statement again.
    client.query(&statement, &[]).await.unwrap();
    assert_eq!(s.executions(), 2);
    // Statements without rows are not run at Describe.
    assert_eq!(client.execute("CREATE STREAM s", &[]).await.unwrap(), 0);
    assert_eq!(s.executions(), 3);
    let e = client
        .prepare("SELECT 1 + 1; SELECT 1 + 1")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, &SqlState::SYNTAX_ERROR);
    let e = client
        .query("SELECT 1 + 1", &[&1i64 as &(dyn ToSql + Sync)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("parameters"), "{e}");
    assert_eq!(client.query("SELECT 1 + 1", &[]).await.unwrap().len(), 1);
}

/// The next item of `stream`, within 5 s.
async fn next<S: futures_util::Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a message within 5 s")
        .expect("not the end of the stream")
}

#[tokio::test]
async fn push_query_streams_each_batch_until_cancelled() {
    let mut s = server().await;
    let (client, _, _) = connect(s.addr).await;
    let stream = client.simple_query_raw(PUSH).await.unwrap();
    tokio::pin!(stream);
    let tx = s.push_sender().await;
    assert!(matches!(
        next(&mut stream).await.unwrap(),
        SimpleQueryMessage::RowDescription(_)
    ));
    for batch in [&[1, 2][..], &[3]] {
        // Each batch arrives on its own: the server flushes after every one.
        tx.send(Ok(numbers(batch))).await.unwrap();
        for n in batch {
            match next(&mut stream).await.unwrap() {
                SimpleQueryMessage::Row(r) => assert_eq!(r.get(0), Some(n.to_string().as_str())),
                m => panic!("{m:?}"),
            }
        }
    }
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let e = next(&mut stream).await.unwrap_err();
    assert_eq!(db_error(&e).0, &SqlState::QUERY_CANCELED);
    tokio::time::timeout(WAIT, tx.closed()).await.unwrap();
    let two: i64 = client.query_one("SELECT 1 + 1", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);
}

#[tokio::test]
async fn push_query_stops_when_the_client_goes_away() {
    let mut s = server().await;
    let (client, _, connection) = connect(s.addr).await;
    let stream = client.simple_query_raw(PUSH).await.unwrap();
    let tx = s.push_sender().await;
    tx.send(Ok(numbers(&[1]))).await.unwrap();
    let first: Vec<_> = stream.take(2).try_collect().await.unwrap();
    assert!(matches!(first[1], SimpleQueryMessage::Row(_)));
    connection.abort();
    drop(client);
    tokio::time::timeout(WAIT, tx.closed())
        .await
        .expect("the server drops the query once the client is gone");
    // The server goes on serving others.
    let (client, _, _) = connect(s.addr).await;
    assert_eq!(client.simple_query("SELECT 1 + 1").await.unwrap().len(), 3);
}

#[tokio::test]
async fn push_query_over_the_extended_protocol_streams_rows() {
    let mut s = server().await;
    let (client, _, _) = connect(s.addr).await;
    let no_params: &[&(dyn ToSql + Sync)] = &[];
    // The statement runs at Describe (handing over its sender); Execute then streams.
    let (rows, tx) = tokio::join!(
        client.query_raw(PUSH, no_params.iter().copied()),
        s.push_sender()
    );
    let rows = rows.unwrap();
    tokio::pin!(rows);
    tx.send(Ok(numbers(&[7]))).await.unwrap();
    assert_eq!(next(&mut rows).await.unwrap().get::<_, i64>(0), 7);
    tx.send(Ok(numbers(&[8]))).await.unwrap();
    assert_eq!(next(&mut rows).await.unwrap().get::<_, i64>(0), 8);
    drop(tx);
    assert!(tokio::time::timeout(WAIT, rows.next())
        .await
        .unwrap()
        .is_none());
    assert_eq!(rows.rows_affected(), Some(2));
}

#[tokio::test]
async fn a_slow_statement_can_be_cancelled() {
    let s = server().await;
    let (client, _, _) = connect(s.addr).await;
    let token = client.cancel_token();
    let slow = tokio::spawn(async move {
        let e = client.simple_query("SLOW").await.unwrap_err();
        assert_eq!(db_error(&e).0, &SqlState::QUERY_CANCELED);
        client
    });
    while s.executions() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    token.cancel_query(NoTls).await.unwrap();
    let client = tokio::time::timeout(WAIT, slow).await.unwrap().unwrap();
    assert_eq!(client.simple_query("SELECT 1 + 1").await.unwrap().len(), 3);
}

#[tokio::test]
async fn session_settings_and_empty_queries_skip_the_engine() {
    let s = server().await;
    let (client, _, _) = connect(s.addr).await;
    client
        .batch_execute("SET extra_float_digits = 3")
        .await
        .unwrap();
    client
        .batch_execute("set application_name to 'x';")
        .await
        .unwrap();
    // EmptyQueryResponse, which tokio-postgres reports as an empty command.
    let empty = client.simple_query(" ; -- nothing").await.unwrap();
    assert!(
        matches!(empty[..], [SimpleQueryMessage::CommandComplete(0)]),
        "{empty:?}"
    );
    assert_eq!(s.executions(), 0);
}

#[tokio::test]
async fn garbage_ends_only_its_own_connection() {
    let s = server().await;
    let (client, _, _) = connect(s.addr).await;
    let mut junk = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    junk.write_all(&[0xff; 64]).await.unwrap();
    drop(junk);
    assert_eq!(client.simple_query("SELECT 1 + 1").await.unwrap().len(), 3);
    let (other, _, _) = connect(s.addr).await;
    assert_eq!(other.simple_query("SELECT 1 + 1").await.unwrap().len(), 3);
}

#[test]
fn only_plain_session_settings_are_answered_here() {
    for sql in [
        "SET extra_float_digits = 3",
        "set application_name to 'psql';",
        "SET SESSION TIME ZONE 'UTC'",
        "SET datestyle=ISO",
    ] {
        assert_eq!(session_command(sql), Some("SET"), "{sql}");
    }
    assert_eq!(session_command("RESET ALL"), Some("RESET"));
    for sql in [
        "SET datafusion.execution.batch_size = 10",
        "SET 'auto.offset.reset' = 'earliest'",
        "SET x = 1; SELECT 1",
        "SELECT 1",
        "SET",
    ] {
        assert_eq!(session_command(sql), None, "{sql}");
    }
}

#[test]
fn statements_that_return_rows_are_recognised() {
    for sql in [
        "SELECT 1",
        "  show topics;",
        "-- c\nDESCRIBE s",
        "(select 1)",
        "WITH a AS (SELECT 1) SELECT * FROM a",
    ] {
        assert!(returns_rows(sql), "{sql}");
    }
    for sql in [
        "CREATE STREAM s (a INT)",
        "TERMINATE q1",
        "",
        "INSERT INTO t SELECT 1",
    ] {
        assert!(!returns_rows(sql), "{sql}");
    }
}

#[test]
fn placeholders_count_outside_quotes_and_comments() {
    assert!(has_parameters("SELECT a FROM s WHERE a = $1"));
    assert!(!has_parameters("SELECT '$1', \"$2\" FROM s"));
    assert!(!has_parameters("-- $1\nSELECT 1"));
    assert!(!has_parameters("SELECT price * 2 AS $total"));
}

#[test]
fn binary_parameters_read_as_values() {
    use super::encode::from_binary;
    use datafusion::common::ScalarValue;
    assert_eq!(
        from_binary(&7i64.to_be_bytes(), &Type::INT8),
        Some(ScalarValue::Int64(Some(7)))
    );
    // 2000-01-02 00:00:00, one day after PostgreSQL's epoch.
    assert_eq!(
        from_binary(&86_400_000_000i64.to_be_bytes(), &Type::TIMESTAMP),
        Some(ScalarValue::TimestampMicrosecond(
            Some(946_771_200_000_000),
            None
        ))
    );
    assert_eq!(from_binary(&[1, 2, 3], &Type::INT4), None);
    assert_eq!(
        from_binary(b"hi", &Type::TEXT),
        Some(ScalarValue::Utf8(Some("hi".into())))
    );
}
