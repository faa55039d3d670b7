//! Shared test harness: a real broker on a free loopback port, either inside the test process
//! (fast, lets tests reach the broker's state) or as a `strom server` child process (so tests can
//! kill -9 it), plus a minimal raw Kafka-protocol client for request-level tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteRecordsRequest, ProduceRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use strom::broker::{Broker, BrokerConfig, Server};
use strom::log::{BatchBuilder, Compression, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod cluster;
pub mod kafka;
pub mod proxy;
pub mod sql;

/// As in the `strom` binary: hostile element counts must not abort the in-process broker.
#[global_allocator]
static ALLOC: strom::broker::alloc::LazyHugeAlloc = strom::broker::alloc::LazyHugeAlloc;

/// A broker running on the test's tokio runtime.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<strom::broker::Result<()>>>,
}

impl TestBroker {
    /// Starts a broker with data in `dir`; `tweak` may change the config.
    pub async fn start(dir: &Path, tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_path_buf(),
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        let broker = Arc::new(
            tokio::task::spawn_blocking(move || Broker::open(config))
                .await
                .unwrap()
                .unwrap(),
        );
        let server = Server::bind(broker.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestBroker {
            addr,
            broker,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Graceful shutdown: drain connections, flush, mark the logs clean.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// Path of the `strom` binary built for this test run.
pub fn strom_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strom"))
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `strom server` as a child process.
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl BrokerProcess {
    pub fn start(dir: &Path, port: u16) -> Self {
        Self::start_with_args(dir, port, &[])
    }

    /// As [`start`](Self::start), with `strom server` flags added (for example
    /// `["--config", "FILE.toml"]` to lower the group session or rebalance timers). The SQL
    /// listener is off unless `extra` has `--sql-listen`.
    pub fn start_with_args(dir: &Path, port: u16, extra: &[&std::ffi::OsStr]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(strom_bin())
            .args(["server", "--listen", &addr.to_string(), "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("STROM_SQL_LISTEN", "off")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "strom server did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        BrokerProcess { child, addr }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "strom server exited with {status}");
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw Kafka-protocol connection: encode a request with `kafka-protocol`, read the response.
pub struct RawClient {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            next_correlation: 1,
        }
    }

    /// Encodes `req` at `version` into a frame (length prefix included).
    pub fn frame<R: Request>(&mut self, req: &R, version: i16) -> (i32, Bytes) {
        let corr = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str("strom-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version)).unwrap();
        req.encode(&mut buf, version).unwrap();
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        (corr, buf.freeze())
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one response frame body; `None` if the broker closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut len))
            .await
            .expect("response within 10 s")
            .ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(Bytes::from(body))
    }

    /// Sends `req` and decodes the response.
    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        let (corr, frame) = self.frame(req, version);
        self.send_raw(&frame).await;
        let mut body = self
            .read_frame()
            .await
            .expect("broker closed the connection");
        let api = ApiKey::try_from(R::KEY).unwrap();
        let header =
            ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, corr);
        let resp = R::Response::decode(&mut body, version).unwrap();
        assert!(!body.has_remaining(), "trailing bytes in the response");
        resp
    }

    /// Whether the broker has closed the connection (reads EOF within the timeout).
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

// ---- Request shorthands for raw-protocol tests ------------------------------------------------

/// A `StrBytes` holding `s`.
pub fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A `TopicName` holding `s`.
pub fn tn(s: &str) -> TopicName {
    TopicName(sb(s))
}

/// One record batch of `records`, built as a producer would (no producer id).
pub fn build_batch(compression: Compression, records: impl IntoIterator<Item = Record>) -> Vec<u8> {
    let mut b = BatchBuilder::new(compression);
    for r in records {
        b.push(r);
    }
    b.build().unwrap()
}

/// A topic for CreateTopics with `partitions`, replication factor `rf` and config overrides.
pub fn creatable(name: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(tn(name))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(sb(k))
                        .with_value(Some(sb(v)))
                })
                .collect(),
        )
}

/// Creates `name` (replication factor 1) with CreateTopics v5 and a 5 s timeout; panics unless
/// the broker reports success.
pub async fn create_topic(
    c: &mut RawClient,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![creatable(name, partitions, 1, configs)]);
    let r = c.call(&req, 5).await;
    assert_eq!(r.topics[0].error_code, 0, "creating {name}: {r:?}");
}

/// A Produce request for one partition: no transactional id, 5 s timeout.
pub fn produce_req(
    acks: i16,
    topic: &str,
    partition: i32,
    records: impl Into<Bytes>,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(tn(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records.into()))])])
}

/// Produces `records` to one partition with Produce v9 and acks=all; returns the (first)
/// partition response.
pub async fn produce_acks_all(
    c: &mut RawClient,
    topic: &str,
    partition: i32,
    records: impl Into<Bytes>,
) -> PartitionProduceResponse {
    let r = c.call(&produce_req(-1, topic, partition, records), 9).await;
    r.responses[0].partition_responses[0].clone()
}

/// A DeleteRecords request (5 s timeout) deleting records before `before` in one partition.
pub fn delete_records_req(topic: &str, partition: i32, before: i64) -> DeleteRecordsRequest {
    DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(tn(topic))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(before)])])
}
