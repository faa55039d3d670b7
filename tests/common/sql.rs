//! Strom SQL for the SQL behaviour tests (`sql_logic`, `sql_golden`): one `strom server` child
//! process with its PostgreSQL port open, a tokio-postgres client on it (simple query protocol,
//! values as text), and helpers to split scripts and seed topics.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strom::client::{Admin, Producer, ProducerConfig, ProducerRecord};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::{free_port, BrokerProcess};

/// A `strom server` with `--sql-listen`, data in a temporary directory.
pub struct SqlServer {
    /// The process (killed on drop).
    pub broker: BrokerProcess,
    /// The PostgreSQL port.
    pub sql_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl SqlServer {
    /// Starts the server and waits until its SQL port accepts a session (the engine connects to
    /// the cluster and loads its catalog first).
    pub async fn start() -> SqlServer {
        let dir = tempfile::tempdir().unwrap();
        let sql_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = sql_addr.to_string();
        let broker = BrokerProcess::start_with_args(
            dir.path(),
            free_port(),
            &[OsStr::new("--sql-listen"), OsStr::new(&listen)],
        );
        let server = SqlServer {
            broker,
            sql_addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match server.try_connect().await {
                Ok(c) => match c.simple_query("SHOW STREAMS").await {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        panic!("the SQL engine at {sql_addr} does not answer: {e}")
                    }
                    Err(_) => {}
                },
                Err(e) if Instant::now() > deadline => {
                    panic!("strom server did not open its SQL port {sql_addr}: {e}")
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// `host:port` of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        self.broker.addr.to_string()
    }

    /// A new SQL session.
    pub async fn connect(&self) -> Client {
        self.try_connect().await.unwrap()
    }

    /// A new SQL session, or why not.
    pub async fn try_connect(&self) -> Result<Client, tokio_postgres::Error> {
        connect(self.sql_addr).await
    }
}

/// A session on the SQL port at `addr`; its connection runs on a task of its own.
pub async fn connect(addr: SocketAddr) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("strom")
        .dbname("strom")
        .connect_timeout(Duration::from_secs(5))
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// An error as one line: the server's message for errors it sent, the client's otherwise.
pub fn error_line(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Rows of the last statement in `sql` that returned rows (values as text, `None` for NULL).
pub async fn rows(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let msgs = tokio::time::timeout(Duration::from_secs(30), client.simple_query(sql))
        .await
        .map_err(|_| format!("`{sql}` took longer than 30 s"))?
        .map_err(|e| format!("`{sql}`: {}", error_line(&e)))?;
    let mut out = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(_) => out.clear(),
            SimpleQueryMessage::Row(r) => {
                out.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Runs `sql`, failing with the server's message.
pub async fn exec(client: &Client, sql: &str) -> Result<(), String> {
    rows(client, sql).await.map(|_| ())
}

/// Splits a script into statements at `;` outside quotes and `--` comments; comment-only and
/// blank statements are dropped.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => out.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            },
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Drops every stream and table and terminates every query, so that the next user of the
/// server starts from an empty catalog; then deletes the topics `keep` does not keep (Strom's
/// own `_` topics always stay).
pub async fn reset(
    client: &Client,
    bootstrap: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<(), String> {
    exec(client, "TERMINATE ALL").await?;
    for (kind, show) in [("STREAM", "SHOW STREAMS"), ("TABLE", "SHOW TABLES")] {
        for row in rows(client, show).await? {
            if let Some(Some(name)) = row.first() {
                exec(client, &format!("DROP {kind} \"{name}\"")).await?;
            }
        }
    }
    let admin = Admin::connect(bootstrap).await.map_err(|e| e.to_string())?;
    let doomed: Vec<String> = admin
        .list_topics()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|t| t.name.clone())
        .filter(|n| !n.starts_with('_') && !keep(n))
        .collect();
    if !doomed.is_empty() {
        admin
            .delete_topics(&doomed)
            .await
            .map_err(|e| format!("deleting {doomed:?}: {e}"))?;
    }
    Ok(())
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Seed {
    /// Topic.
    pub topic: String,
    /// Partition, or the partitioner's choice.
    pub partition: Option<i32>,
    /// Record timestamp (ms).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Seed {
    /// As a producer record.
    pub fn record(&self) -> ProducerRecord {
        let mut r = ProducerRecord::new(self.topic.clone(), Vec::new()).timestamp(self.timestamp);
        r.value = self.value.clone().map(Into::into);
        r.key = self.key.clone().map(Into::into);
        r.partition = self.partition;
        r
    }
}

/// A producer with acks=all and no linger.
pub async fn producer(bootstrap: &str) -> Producer {
    Producer::new(ProducerConfig::new(bootstrap).linger(Duration::from_millis(0)))
        .await
        .unwrap()
}

/// Produces `seed` and waits for its acknowledgement.
pub async fn produce(p: &Producer, seed: &Seed) -> Result<(), String> {
    let f = p
        .send(seed.record())
        .await
        .map_err(|e| format!("producing to {}: {e}", seed.topic))?;
    f.await
        .map(|_| ())
        .map_err(|e| format!("producing to {}: {e}", seed.topic))
}
