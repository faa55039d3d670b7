//! Plumbing shared by the Streams examples: embedded or `--brokers HOST:PORT`, topic setup,
//! generated input and reading results back.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use strom::client::partitioner::partition_for_key;
use strom::client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use strom::streams::{Embedded, Serde, Streams, StreamsConfig, Strom, Topology};

pub type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Where the example runs.
pub struct Env {
    pub bootstrap: String,
    /// Suffix making topic names and the application id unique against a shared server.
    suffix: String,
    embedded: Option<Embedded>,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    /// Embedded by default; `--brokers HOST:PORT` runs against a server.
    pub async fn from_args(example: &str) -> AnyResult<Env> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let brokers = match args.as_slice() {
            [] => None,
            [flag, addr] if flag == "--brokers" => Some(addr.clone()),
            [one] if one.starts_with("--brokers=") => Some(one["--brokers=".len()..].to_string()),
            _ => {
                return Err(format!(
                    "usage: cargo run --example {example} [-- --brokers HOST:PORT]"
                )
                .into())
            }
        };
        match brokers {
            Some(b) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                println!("running {example} against {b}");
                Ok(Env {
                    bootstrap: b,
                    suffix: format!("-{secs}"),
                    embedded: None,
                    _dir: None,
                })
            }
            None => {
                let dir = tempfile::tempdir()?;
                let e = Strom::embedded(dir.path()).await?;
                println!(
                    "running {example} embedded (log in {})",
                    dir.path().display()
                );
                Ok(Env {
                    bootstrap: e.bootstrap(),
                    suffix: String::new(),
                    embedded: Some(e),
                    _dir: Some(dir),
                })
            }
        }
    }

    /// A topic or application name, unique per run against a shared server.
    pub fn name(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    pub async fn create_topics(&self, names: &[String], partitions: i32) -> AnyResult<()> {
        let admin = Admin::new(ClientConfig::new(&self.bootstrap)).await?;
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n.clone(), partitions))
            .collect();
        admin.create_topics(&topics).await?;
        Ok(())
    }

    /// Writes `(key, value, timestamp)` records to `topic`.
    pub async fn produce<K: Serde, V: Serde>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (K, V, i64)>,
    ) -> AnyResult<usize> {
        let producer = Producer::new(ProducerConfig::new(&self.bootstrap)).await?;
        let mut n = 0;
        for (k, v, ts) in records {
            producer
                .send(ProducerRecord {
                    topic: topic.to_string(),
                    key: k.to_bytes(),
                    value: v.to_bytes(),
                    timestamp: Some(ts),
                    ..Default::default()
                })
                .await?;
            n += 1;
        }
        producer.flush().await?;
        producer.close().await?;
        Ok(n)
    }

    /// Reads `topic` from the beginning until `done` says the results are complete (or
    /// `timeout` passes), returning `(key, value, timestamp)`.
    pub async fn read_until<K: Serde, V: Serde>(
        &self,
        topic: &str,
        timeout: Duration,
        mut done: impl FnMut(&[(K, Option<V>, i64)]) -> bool,
    ) -> AnyResult<Vec<(K, Option<V>, i64)>> {
        let admin = Admin::new(ClientConfig::new(&self.bootstrap)).await?;
        let parts: Vec<TopicPartition> = admin
            .describe_topic(topic)
            .await?
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition))
            .collect();
        let mut consumer = Consumer::new(ConsumerConfig::new(&self.bootstrap)).await?;
        consumer.assign(&parts)?;
        consumer.seek_to_beginning(&parts)?;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while !done(&out) {
            if Instant::now() > deadline {
                return Err(format!("results on {topic} incomplete after {timeout:?}").into());
            }
            for r in consumer.poll(Duration::from_millis(200)).await? {
                let k = K::from_bytes(r.key.as_deref())?;
                let v = match r.value.as_deref() {
                    Some(b) => Some(V::deserialize(b)?),
                    None => None,
                };
                out.push((k, v, r.timestamp));
            }
        }
        Ok(out)
    }

    /// Starts the application: embedded, reading input straight from the in-process log;
    /// against a server, over the Kafka protocol. The topology is the same either way.
    pub async fn start(&self, topology: Topology, config: StreamsConfig) -> AnyResult<Streams> {
        Ok(match &self.embedded {
            Some(e) => Streams::start_embedded(topology, config, e).await?,
            None => Streams::start(topology, config).await?,
        })
    }

    pub async fn shutdown(self) -> AnyResult<()> {
        if let Some(e) = self.embedded {
            e.shutdown().await?;
        }
        Ok(())
    }
}

/// Ends an example: its error, if any, as one line on stderr and a failing exit code.
pub fn finish(r: AnyResult<()>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Compares an example's results with the direct computation over the same input: an error
/// naming how many results are missing, unexpected or different (and the first of each).
pub fn check_same<K: Ord + std::fmt::Debug, V: PartialEq>(
    what: &str,
    got: &std::collections::BTreeMap<K, V>,
    expected: &std::collections::BTreeMap<K, V>,
) -> AnyResult<()> {
    if got == expected {
        return Ok(());
    }
    let missing: Vec<&K> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&K> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    let differ: Vec<&K> = got
        .iter()
        .filter(|(k, v)| expected.get(*k).is_some_and(|e| e != *v))
        .map(|(k, _)| k)
        .collect();
    Err(format!(
        "{what} differ from the direct computation: {} missing (first {:?}), {} unexpected (first {:?}), {} different (first {:?})",
        missing.len(), missing.first(), extra.len(), extra.first(), differ.len(), differ.first()
    )
    .into())
}

/// A small deterministic generator (xorshift), so runs are repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One key per partition of a topic with `partitions` partitions (`{prefix}-N`, placed as
/// Kafka's default partitioner places them). Windowed operators keep stream time per
/// partition, so a record on each of these keys advances it in every task.
pub fn key_per_partition(prefix: &str, partitions: i32) -> Vec<String> {
    (0..partitions)
        .map(|p| {
            (0u64..)
                .map(|i| format!("{prefix}-{i}"))
                .find(|k| partition_for_key(k.as_bytes(), partitions) == p)
                .expect("some key lands in every partition")
        })
        .collect()
}

/// `ms` as a time of day relative to `origin`: `d1 07:05:09`.
pub fn clock(origin: i64, ms: i64) -> String {
    let s = (ms - origin).div_euclid(1000);
    format!(
        "d{} {:02}:{:02}:{:02}",
        s / 86_400,
        s % 86_400 / 3600,
        s % 3600 / 60,
        s % 60
    )
}
