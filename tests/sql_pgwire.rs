//! `strom server`'s SQL listener through tokio-postgres, as psql and drivers use it: the simple
//! query protocol (one or several statements), errors that leave the session usable, and the
//! extended protocol (Parse/Describe/Bind/Execute) for a SELECT, with parameters.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::sql::{error_line, produce, producer, rows, Seed, SqlServer};
use strom::client::{Admin, NewTopic};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

/// `f`, or a panic naming `what` after 10 s.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_topics_lists_a_topic_created_through_kafka() {
    let server = SqlServer::start().await;
    let admin = Admin::connect(&server.bootstrap()).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("pg_orders", 3)])
        .await
        .unwrap();
    let client = server.connect().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let topics = within("SHOW TOPICS", rows(&client, "SHOW TOPICS"))
            .await
            .unwrap();
        let row = vec![Some("pg_orders".to_string()), Some("3".to_string())];
        if topics.contains(&row) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pg_orders with 3 partitions in {topics:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The columns are named.
    let messages = within("SHOW TOPICS", client.simple_query("SHOW TOPICS"))
        .await
        .unwrap();
    let Some(SimpleQueryMessage::RowDescription(columns)) = messages.first() else {
        panic!("{messages:?}")
    };
    let names: Vec<_> = columns.iter().map(|c| c.name()).collect();
    assert_eq!(names[..2], ["name", "partitions"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_statement_is_one_error_line_and_the_session_goes_on() {
    let server = SqlServer::start().await;
    let client = server.connect().await;
    let e = within("SELEC 1", client.simple_query("SELEC 1"))
        .await
        .unwrap_err();
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.code(), &SqlState::SYNTAX_ERROR, "{}", db.message());
    assert!(
        !db.message().is_empty() && !db.message().contains('\n'),
        "{db:?}"
    );
    assert_eq!(
        within("SELECT 1 + 1", rows(&client, "SELECT 1 + 1")).await,
        Ok(vec![vec![Some("2".to_string())]])
    );
    // The extended protocol reports the error too, and the session goes on after Sync.
    let e = within(
        "prepare",
        client.prepare("SELECT nosuchcolumn FROM nosuchstream"),
    )
    .await
    .unwrap_err();
    assert!(!error_line(&e).contains('\n'), "{e}");
    assert_eq!(
        within("SELECT 1 + 1", rows(&client, "SELECT 1 + 1")).await,
        Ok(vec![vec![Some("2".to_string())]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extended_protocol_describes_and_runs_a_select() {
    let server = SqlServer::start().await;
    let client = server.connect().await;
    let statement = within("prepare", client.prepare("SELECT 1 + 1 AS two"))
        .await
        .unwrap();
    assert_eq!(statement.columns()[0].name(), "two");
    assert_eq!(statement.columns()[0].type_(), &Type::INT8);
    let two: i64 = within("query", client.query_one(&statement, &[]))
        .await
        .unwrap()
        .get("two");
    assert_eq!(two, 2);

    // A stream over a topic, read ad hoc over the extended protocol.
    within(
        "CREATE STREAM",
        client.batch_execute(
            "CREATE STREAM pg_s (a INT, b VARCHAR) \
             WITH (topic='pg_t', format='json', partitions=1)",
        ),
    )
    .await
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let p = producer(&server.bootstrap()).await;
    let seed = Seed {
        topic: "pg_t".into(),
        partition: None,
        timestamp: now,
        key: None,
        value: Some(br#"{"a": 7, "b": "seven"}"#.to_vec()),
    };
    within("produce", produce(&p, &seed)).await.unwrap();
    let rows = within("SELECT", client.query("SELECT a, b FROM pg_s", &[]))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i32>("a"), 7);
    assert_eq!(rows[0].get::<_, &str>("b"), "seven");

    // Parameters, as drivers bind them (binary, typed by the statement).
    let by_a = within(
        "prepare with parameters",
        client.prepare("SELECT b FROM pg_s WHERE a = $1 AND b <> $2"),
    )
    .await
    .unwrap();
    assert_eq!(by_a.params(), &[Type::INT4, Type::VARCHAR]);
    assert_eq!(by_a.columns()[0].name(), "b");
    let hit = within(
        "query with parameters",
        client.query(&by_a, &[&7i32, &"six"]),
    )
    .await
    .unwrap();
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].get::<_, &str>("b"), "seven");
    let miss = within(
        "query with parameters",
        client.query(&by_a, &[&8i32, &"six"]),
    )
    .await
    .unwrap();
    assert!(miss.is_empty());
    // A parameter whose type the statement leaves open is text.
    let echo: String = within("query_one", client.query_one("SELECT $1 AS v", &[&"x"]))
        .await
        .unwrap()
        .get("v");
    assert_eq!(echo, "x");
    // Parameters anywhere but in a SELECT: one clear error.
    let err = within(
        "INSERT with parameters",
        client.execute(
            "CREATE STREAM p2 WITH (topic='p2') AS SELECT a FROM pg_s WHERE a = $1",
            &[&1i32],
        ),
    )
    .await
    .unwrap_err();
    assert!(
        error_line(&err).contains("work in SELECT statements only"),
        "{}",
        error_line(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_statements_in_one_query_give_two_results() {
    let server = SqlServer::start().await;
    let client = server.connect().await;
    let messages = within(
        "CREATE STREAM; SHOW STREAMS",
        client.simple_query(
            "CREATE STREAM pg_two (a INT) WITH (topic='pg_two', format='json', partitions=1); \
             SHOW STREAMS;",
        ),
    )
    .await
    .unwrap();
    let completes = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 2, "{messages:?}");
    let listed = messages.iter().any(|m| match m {
        SimpleQueryMessage::Row(r) => (0..r.len()).any(|i| r.get(i) == Some("pg_two")),
        _ => false,
    });
    assert!(
        listed,
        "SHOW STREAMS after CREATE STREAM lists pg_two: {messages:?}"
    );
    // The other catalog listings answer too.
    for show in ["SHOW TABLES", "SHOW QUERIES", "DESCRIBE pg_two"] {
        within(show, rows(&client, show))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
