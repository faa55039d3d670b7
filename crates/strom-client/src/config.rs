//! Client settings, by Kafka's property names (`bootstrap.servers`, `linger.ms`, ...) or through
//! typed fields and builder methods.
//!
//! ```
//! use strom_client::{ProducerConfig, Acks};
//!
//! let mut cfg = ProducerConfig::new("localhost:9092");
//! cfg.set("linger.ms", "20").unwrap().set("compression.type", "zstd").unwrap();
//! let cfg = cfg.acks(Acks::All);
//! assert_eq!(cfg.linger.as_millis(), 20);
//! ```

use std::sync::Arc;
use std::time::Duration;

use strom_log::Compression;

use crate::error::{Error, Result};
use crate::partitioner::{DefaultPartitioner, Partitioner, RoundRobin};
use crate::types::{IsolationLevel, OffsetReset};

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("{key}={value:?} is not a valid value")))
}

fn ms(key: &str, value: &str) -> Result<Duration> {
    Ok(Duration::from_millis(parse::<u64>(key, value)?))
}

fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::Config(format!(
            "{key}={value:?}: expected true or false"
        ))),
    }
}

/// Settings every client shares.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `bootstrap.servers`: `host:port` of brokers to learn the cluster from.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`: sent with every request, shown in broker logs and group descriptions.
    pub client_id: String,
    /// `request.timeout.ms`: how long to wait for one response.
    pub request_timeout: Duration,
    /// `socket.connection.setup.timeout.ms`.
    pub connect_timeout: Duration,
    /// `reconnect.backoff.ms`: first wait before reconnecting to a broker that failed.
    pub reconnect_backoff: Duration,
    /// `reconnect.backoff.max.ms`: the wait doubles up to this.
    pub reconnect_backoff_max: Duration,
    /// `retry.backoff.ms`: wait before retrying a failed request.
    pub retry_backoff: Duration,
    /// `metadata.max.age.ms`: refresh metadata at least this often.
    pub metadata_max_age: Duration,
}

impl ClientConfig {
    /// Defaults (Kafka's) for a cluster reachable at `bootstrap` (comma-separated).
    pub fn new(bootstrap: &str) -> Self {
        ClientConfig {
            bootstrap_servers: split_list(bootstrap),
            client_id: "strom-client".into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reconnect_backoff: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(100),
            metadata_max_age: Duration::from_secs(300),
        }
    }

    /// Sets one property; `Ok(false)` when the key is not a common client setting.
    fn set_common(&mut self, key: &str, value: &str) -> Result<bool> {
        match key {
            "bootstrap.servers" => self.bootstrap_servers = split_list(value),
            "client.id" => self.client_id = value.to_string(),
            "request.timeout.ms" => self.request_timeout = ms(key, value)?,
            "socket.connection.setup.timeout.ms" => self.connect_timeout = ms(key, value)?,
            "reconnect.backoff.ms" => self.reconnect_backoff = ms(key, value)?,
            "reconnect.backoff.max.ms" => self.reconnect_backoff_max = ms(key, value)?,
            "retry.backoff.ms" => self.retry_backoff = ms(key, value)?,
            "metadata.max.age.ms" => self.metadata_max_age = ms(key, value)?,
            // Accepted for compatibility with existing property files; they change nothing here.
            "client.dns.lookup"
            | "send.buffer.bytes"
            | "receive.buffer.bytes"
            | "security.protocol"
            | "retry.backoff.max.ms"
            | "connections.max.idle.ms" => {
                if key == "security.protocol" && !value.eq_ignore_ascii_case("PLAINTEXT") {
                    return Err(Error::Config(format!(
                        "security.protocol={value}: only PLAINTEXT is supported so far"
                    )));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.is_empty() {
            return Err(Error::Config("bootstrap.servers is empty".into()));
        }
        for b in &self.bootstrap_servers {
            if !b.contains(':') {
                return Err(Error::Config(format!(
                    "bootstrap.servers entry {b:?} has no port (expected HOST:PORT)"
                )));
            }
        }
        Ok(())
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Applies `key=value` properties one by one, stopping at the first bad one.
fn apply<'a>(
    props: impl IntoIterator<Item = (&'a str, &'a str)>,
    mut set: impl FnMut(&str, &str) -> Result<()>,
) -> Result<()> {
    props.into_iter().try_for_each(|(k, v)| set(k, v))
}

fn unknown(key: &str) -> Error {
    Error::Config(format!("unknown property {key:?}"))
}

/// Which acknowledgement a produce request waits for (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: fire and forget; no offsets are known.
    None,
    /// `acks=1`: the leader wrote it.
    Leader,
    /// `acks=all` (`-1`): every in-sync replica wrote it.
    All,
}

impl Acks {
    /// The value sent on the wire.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(Error::Config(format!("acks={s:?}: expected 0, 1 or all"))),
        }
    }
}

/// Parses a codec name as Kafka spells it (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
pub fn parse_compression(s: &str) -> Result<Compression> {
    match s.trim().to_ascii_lowercase().as_str() {
        "none" | "uncompressed" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(Error::Config(format!(
            "compression.type={s:?}: expected none, gzip, snappy, lz4 or zstd"
        ))),
    }
}

/// Producer settings.
#[derive(Clone)]
pub struct ProducerConfig {
    /// Connection settings.
    pub client: ClientConfig,
    /// `acks` (default all).
    pub acks: Acks,
    /// `linger.ms`: how long a batch waits for more records (default 5 ms, as Kafka 4).
    pub linger: Duration,
    /// `batch.size`: bytes per partition batch (default 16 KiB).
    pub batch_size: usize,
    /// `buffer.memory`: bytes of records waiting to be sent; `send` waits when it is used up.
    pub buffer_memory: usize,
    /// `compression.type`.
    pub compression: Compression,
    /// `delivery.timeout.ms`: give up on a record this long after `send`.
    pub delivery_timeout: Duration,
    /// `retries`: how often a failed batch is sent again (within `delivery.timeout.ms`; 0: never).
    pub retries: u32,
    /// `max.in.flight.requests.per.connection` (at most 5 with idempotence).
    pub max_in_flight: usize,
    /// `enable.idempotence` (default true): no duplicates or reordering on retry.
    pub idempotence: bool,
    /// `max.request.size`: largest produce request in bytes.
    pub max_request_size: usize,
    /// `max.block.ms`: how long `send` may wait for metadata or buffer space.
    pub max_block: Duration,
    /// `allow.auto.create.topics`: let metadata requests create missing topics.
    pub allow_auto_create_topics: bool,
    /// `partitioner.class` (`default`, `round-robin`, or any [`Partitioner`]).
    pub partitioner: Arc<dyn Partitioner>,
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("client", &self.client)
            .field("acks", &self.acks)
            .field("linger", &self.linger)
            .field("batch_size", &self.batch_size)
            .field("compression", &self.compression)
            .field("idempotence", &self.idempotence)
            .finish_non_exhaustive()
    }
}

impl ProducerConfig {
    /// Kafka's defaults for a cluster at `bootstrap`.
    pub fn new(bootstrap: &str) -> Self {
        ProducerConfig {
            client: ClientConfig::new(bootstrap),
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            buffer_memory: 32 << 20,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            retries: u32::MAX,
            max_in_flight: 5,
            idempotence: true,
            max_request_size: 1 << 20,
            max_block: Duration::from_secs(60),
            allow_auto_create_topics: true,
            partitioner: Arc::new(DefaultPartitioner::default()),
        }
    }

    /// Builds a config from `key=value` properties (must include `bootstrap.servers`).
    pub fn from_properties<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        let mut cfg = ProducerConfig::new("");
        apply(props, |k, v| cfg.set(k, v).map(drop))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets one property by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        if self.client.set_common(key, value)? {
            return Ok(self);
        }
        match key {
            "acks" => self.acks = value.parse()?,
            "linger.ms" => self.linger = ms(key, value)?,
            "batch.size" => self.batch_size = parse(key, value)?,
            "buffer.memory" => self.buffer_memory = parse(key, value)?,
            "compression.type" => self.compression = parse_compression(value)?,
            "delivery.timeout.ms" => self.delivery_timeout = ms(key, value)?,
            "max.in.flight.requests.per.connection" => self.max_in_flight = parse(key, value)?,
            "enable.idempotence" => self.idempotence = boolean(key, value)?,
            "max.request.size" => self.max_request_size = parse(key, value)?,
            "max.block.ms" => self.max_block = ms(key, value)?,
            "allow.auto.create.topics" => self.allow_auto_create_topics = boolean(key, value)?,
            // Also bounded by delivery.timeout.ms, as in Kafka.
            "retries" => self.retries = parse::<u64>(key, value)?.min(u32::MAX as u64) as u32,
            "partitioner.class" => {
                self.partitioner = match value.trim() {
                    "default" | "" => Arc::new(DefaultPartitioner::default()),
                    "round-robin" | "roundrobin"
                    | "org.apache.kafka.clients.producer.RoundRobinPartitioner" => {
                        Arc::new(RoundRobin::default())
                    }
                    other => {
                        return Err(Error::Config(format!(
                            "partitioner.class={other:?}: expected default or round-robin (or set a Partitioner in code)"
                        )))
                    }
                }
            }
            "key.serializer" | "value.serializer" | "compression.level" | "metadata.max.idle.ms"
            | "partitioner.ignore.keys" | "partitioner.adaptive.partitioning.enable" => {}
            _ => return Err(unknown(key)),
        }
        Ok(self)
    }

    /// Sets `acks`.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }
    /// Sets `linger.ms`.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
    /// Sets `batch.size`.
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }
    /// Sets `compression.type`.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    /// Sets `enable.idempotence`.
    pub fn idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self
    }
    /// Sets the partitioner.
    pub fn partitioner(mut self, p: Arc<dyn Partitioner>) -> Self {
        self.partitioner = p;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.client.validate()?;
        if self.idempotence && self.acks != Acks::All {
            return Err(Error::Config(
                "enable.idempotence=true requires acks=all (set enable.idempotence=false for acks 0 or 1)".into(),
            ));
        }
        if self.idempotence && self.retries == 0 {
            return Err(Error::Config(
                "enable.idempotence=true requires retries > 0 (set enable.idempotence=false to turn retries off)".into(),
            ));
        }
        if self.idempotence && !(1..=5).contains(&self.max_in_flight) {
            return Err(Error::Config(
                "enable.idempotence=true requires max.in.flight.requests.per.connection between 1 and 5".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config(
                "max.in.flight.requests.per.connection must be at least 1".into(),
            ));
        }
        if self.batch_size > self.buffer_memory {
            return Err(Error::Config(
                "batch.size must not exceed buffer.memory".into(),
            ));
        }
        Ok(())
    }
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Connection settings.
    pub client: ClientConfig,
    /// `group.id`: needed for `subscribe` and committed offsets.
    pub group_id: Option<String>,
    /// `group.instance.id`: static membership.
    pub group_instance_id: Option<String>,
    /// `auto.offset.reset` (default latest).
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit` (default true with a group).
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms` (also the rebalance timeout).
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`: assignor names in preference order.
    pub assignors: Vec<String>,
    /// `isolation.level`.
    pub isolation_level: IsolationLevel,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: i32,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait: Duration,
    /// `max.poll.records`.
    pub max_poll_records: usize,
    /// `client.rack`.
    pub client_rack: Option<String>,
    /// `allow.auto.create.topics` on subscribe (default false, unlike the producer).
    pub allow_auto_create_topics: bool,
}

impl ConsumerConfig {
    /// Kafka's defaults for a cluster at `bootstrap`.
    pub fn new(bootstrap: &str) -> Self {
        ConsumerConfig {
            client: ClientConfig::new(bootstrap),
            group_id: None,
            group_instance_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            assignors: vec!["range".into(), "cooperative-sticky".into()],
            isolation_level: IsolationLevel::ReadUncommitted,
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 << 20,
            max_partition_fetch_bytes: 1 << 20,
            fetch_max_wait: Duration::from_millis(500),
            max_poll_records: 500,
            client_rack: None,
            allow_auto_create_topics: false,
        }
    }

    /// Builds a config from `key=value` properties (must include `bootstrap.servers`).
    pub fn from_properties<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        let mut cfg = ConsumerConfig::new("");
        apply(props, |k, v| cfg.set(k, v).map(drop))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets one property by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        if self.client.set_common(key, value)? {
            return Ok(self);
        }
        match key {
            "group.id" => self.group_id = Some(value.to_string()).filter(|s| !s.is_empty()),
            "group.instance.id" => {
                self.group_instance_id = Some(value.to_string()).filter(|s| !s.is_empty())
            }
            "auto.offset.reset" => {
                self.auto_offset_reset = match value.trim() {
                    "earliest" | "smallest" | "beginning" => OffsetReset::Earliest,
                    "latest" | "largest" | "end" => OffsetReset::Latest,
                    "none" | "error" => OffsetReset::None,
                    _ => {
                        return Err(Error::Config(format!(
                            "auto.offset.reset={value:?}: expected earliest, latest or none"
                        )))
                    }
                }
            }
            "enable.auto.commit" => self.enable_auto_commit = boolean(key, value)?,
            "auto.commit.interval.ms" => self.auto_commit_interval = ms(key, value)?,
            "session.timeout.ms" => self.session_timeout = ms(key, value)?,
            "heartbeat.interval.ms" => self.heartbeat_interval = ms(key, value)?,
            "max.poll.interval.ms" => self.max_poll_interval = ms(key, value)?,
            "partition.assignment.strategy" => self.assignors = split_list(value),
            "isolation.level" => {
                self.isolation_level = match value.trim() {
                    "read_uncommitted" => IsolationLevel::ReadUncommitted,
                    "read_committed" => IsolationLevel::ReadCommitted,
                    _ => {
                        return Err(Error::Config(format!(
                            "isolation.level={value:?}: expected read_uncommitted or read_committed"
                        )))
                    }
                }
            }
            "fetch.min.bytes" => self.fetch_min_bytes = parse(key, value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = parse(key, value)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = parse(key, value)?,
            "fetch.max.wait.ms" => self.fetch_max_wait = ms(key, value)?,
            "max.poll.records" => self.max_poll_records = parse(key, value)?,
            "client.rack" => self.client_rack = Some(value.to_string()).filter(|s| !s.is_empty()),
            "allow.auto.create.topics" => self.allow_auto_create_topics = boolean(key, value)?,
            "key.deserializer"
            | "value.deserializer"
            | "check.crcs"
            | "exclude.internal.topics"
            | "group.protocol" => {}
            _ => return Err(unknown(key)),
        }
        Ok(self)
    }

    /// Sets `group.id`.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }
    /// Sets `auto.offset.reset`.
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }
    /// Sets `enable.auto.commit`.
    pub fn auto_commit(mut self, on: bool) -> Self {
        self.enable_auto_commit = on;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.client.validate()?;
        if self.heartbeat_interval >= self.session_timeout {
            return Err(Error::Config(
                "heartbeat.interval.ms must be lower than session.timeout.ms".into(),
            ));
        }
        if self.max_poll_records == 0 {
            return Err(Error::Config("max.poll.records must be at least 1".into()));
        }
        Ok(())
    }
}

/// Admin client settings: just the connection settings.
pub type AdminConfig = ClientConfig;

impl ClientConfig {
    /// Sets one property by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        if self.set_common(key, value)? {
            Ok(self)
        } else {
            Err(unknown(key))
        }
    }
}
