//! Strom SQL's behaviour as sqllogictest files: every `sql/slt/*.slt` runs, one file after the
//! other, against one `strom server` over the PostgreSQL protocol (simple queries, values as
//! text, NULL as `NULL`, an empty string as `(empty)`).
//!
//! Before each file the catalog is emptied (queries terminated, streams and tables dropped,
//! their topics deleted), so a file sees only what it creates. Before the first file the
//! harness produces the fixed records of [`ORDERS`] to the topic `slt_orders`, which files
//! declare a stream over: an .slt file cannot produce to Kafka itself.
//!
//! ```sh
//! cargo test --test sql_logic                    # every file
//! cargo test --test sql_logic -- errors          # files whose name contains `errors`
//! STROM_SLT_COMPLETE=1 cargo test --test sql_logic -- adhoc   # rewrite expectations from the engine's output
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::sql::{self, Seed, SqlServer};
use sqllogictest::harness::{Arguments, Failed, Trial};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The seed topic every file may declare a stream over.
const SEED_TOPIC: &str = "slt_orders";

/// The seed records: (partition, record timestamp ms, JSON value). Event times (`ts`) are
/// 2024-01-01T00:00:00Z plus 0, 15, 25, 65, 70, 125, 130 and 185 s, written as epoch
/// milliseconds or ISO strings; each record's timestamp is its event time plus 500 ms.
/// Partition 0 holds ids 1, 3, 5, 7 and partition 1 ids 2, 4, 6, 8, at offsets 0-3.
const ORDERS: &[(i32, i64, &str)] = &[
    (
        0,
        1_704_067_200_500,
        r#"{"id": 1, "user_id": "alice", "amount": 10.5, "status": "paid", "ts": 1704067200000}"#,
    ),
    (
        1,
        1_704_067_215_500,
        r#"{"id": 2, "user_id": "bob", "amount": 20.0, "status": "paid", "ts": "2024-01-01T00:00:15"}"#,
    ),
    (
        0,
        1_704_067_225_500,
        r#"{"id": 3, "user_id": "alice", "amount": 5.25, "status": "open", "ts": 1704067225000}"#,
    ),
    (
        1,
        1_704_067_265_500,
        r#"{"id": 4, "user_id": "carol", "amount": 100.0, "status": "paid", "ts": "2024-01-01T00:01:05Z"}"#,
    ),
    (
        0,
        1_704_067_270_500,
        r#"{"id": 5, "user_id": "bob", "amount": 7.75, "status": "open", "ts": 1704067270000}"#,
    ),
    (
        1,
        1_704_067_325_500,
        r#"{"id": 6, "user_id": "alice", "amount": 12.0, "status": "paid", "ts": "2024-01-01T00:02:05.000"}"#,
    ),
    (
        0,
        1_704_067_330_500,
        r#"{"id": 7, "user_id": "dave", "status": "open", "ts": 1704067330000}"#,
    ),
    (
        1,
        1_704_067_385_500,
        r#"{"id": 8, "user_id": "carol", "amount": 3.0, "status": null, "ts": "2024-01-01T00:03:05Z"}"#,
    ),
];

/// How long one statement may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One SQL session, as sqllogictest sees it.
struct StromDb {
    addr: SocketAddr,
    client: Client,
}

/// An error as the server wrote it (one line), or what went wrong on the client side.
#[derive(Debug)]
struct DbError(String, Option<String>);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError(sql::error_line(&e), e.code().map(|c| c.code().to_string()))
    }
}

impl StromDb {
    async fn connect(addr: SocketAddr) -> Result<StromDb, DbError> {
        Ok(StromDb {
            addr,
            client: sql::connect(addr).await?,
        })
    }
}

#[async_trait]
impl AsyncDB for StromDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let msgs =
            match tokio::time::timeout(STATEMENT_TIMEOUT, self.client.simple_query(sql)).await {
                Ok(r) => r?,
                Err(_) => {
                    // The session is stuck behind the statement: start a new one for the next.
                    self.client = sql::connect(self.addr).await?;
                    return Err(DbError(
                        format!("no answer within {} s", STATEMENT_TIMEOUT.as_secs()),
                        None,
                    ));
                }
            };
        let mut columns = None;
        let mut rows = Vec::new();
        let mut count = 0;
        for m in msgs {
            match m {
                SimpleQueryMessage::RowDescription(c) => columns = Some(c.len()),
                SimpleQueryMessage::Row(r) => {
                    columns.get_or_insert(r.len());
                    rows.push(
                        (0..r.len())
                            .map(|i| match r.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            // The simple protocol carries no column types; the files' type letters go unchecked.
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "strom"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &DbError) -> Option<String> {
        err.1.clone()
    }
}

/// The server and the runtime every file runs on, started by the first file that runs.
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
    let server = rt.block_on(async {
        let server = SqlServer::start().await;
        seed(&server).await;
        server
    });
    let s = Arc::new(Shared { rt, server });
    *g = Some(s.clone());
    s
}

/// Produces [`ORDERS`] to a two-partition `slt_orders`.
async fn seed(server: &SqlServer) {
    let admin = strom::client::Admin::connect(&server.bootstrap())
        .await
        .unwrap();
    admin
        .create_topics(&[strom::client::NewTopic::new(SEED_TOPIC, 2)])
        .await
        .unwrap();
    let p = sql::producer(&server.bootstrap()).await;
    for (partition, timestamp, value) in ORDERS {
        let s = Seed {
            topic: SEED_TOPIC.into(),
            partition: Some(*partition),
            timestamp: *timestamp,
            key: None,
            value: Some(value.as_bytes().to_vec()),
        };
        sql::produce(&p, &s).await.unwrap();
    }
    p.close().await.unwrap();
}

fn run_file(path: &Path) -> Result<(), Failed> {
    let shared = shared();
    let addr = shared.server.sql_addr;
    let bootstrap = shared.server.bootstrap();
    shared.rt.block_on(async {
        let admin = shared.server.connect().await;
        sql::reset(&admin, &bootstrap, |t| t == SEED_TOPIC)
            .await
            .map_err(|e| format!("emptying the catalog before {}: {e}", path.display()))?;
        let mut runner = Runner::new(move || StromDb::connect(addr));
        if std::env::var_os("STROM_SLT_COMPLETE").is_some() {
            runner
                .update_test_file(
                    path,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| Failed::from(format!("completing {}: {e}", path.display())))
        } else {
            runner
                .run_file_async(path)
                .await
                .map_err(|e| Failed::from(e.display(false).to_string()))
        }
    })
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    files
}

fn main() {
    let mut args = Arguments::from_args();
    // One server for all files, and each file starts from an empty catalog: one at a time.
    args.test_threads = Some(1);
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files under sql/slt");
    let trials = files
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Trial::test(name, move || run_file(&path))
        })
        .collect();
    let conclusion = sqllogictest::harness::run(&args, trials);
    // Stop the server (the process is killed when the last handle goes).
    SHARED.lock().unwrap_or_else(|e| e.into_inner()).take();
    conclusion.exit();
}
