//! # strom-client: Strom's Kafka-protocol client
//!
//! Rust programs, the Streams API, SQL, Connect and Mirror talk to any Kafka-protocol cluster
//! (Strom, Apache Kafka, Redpanda) through this crate. It is pure Rust on tokio:
//!
//! - [`Producer`]: `send` returns a [`DeliveryFuture`]; per-partition batching (`batch.size`,
//!   `linger.ms`), compression, bounded `buffer.memory` (backpressure), retries within
//!   `delivery.timeout.ms`, idempotence on by default, Kafka's partitioners ([`partitioner`]).
//! - [`Consumer`]: `assign` or `subscribe` with group membership (range, round-robin and
//!   cooperative-sticky assignors, static membership), prefetching, auto or manual commits,
//!   `seek`, `pause`/`resume`, rebalance callbacks, and records as a `Stream`.
//! - [`Admin`]: topics, partitions, configs, groups, offsets and lag.
//!
//! Settings use Kafka's property names where they exist ([`config`]).
//!
//! ```no_run
//! # async fn demo() -> strom_client::Result<()> {
//! use strom_client::{Producer, ProducerConfig, ProducerRecord};
//!
//! let producer = Producer::new(ProducerConfig::new("localhost:9092")).await?;
//! let delivery = producer.send(ProducerRecord::new("greetings", "hello").key("k")).await?;
//! let meta = delivery.await?;
//! println!("written to {}-{} at offset {}", meta.topic, meta.partition, meta.offset);
//! # Ok(()) }
//! ```
//!
//! The partitioners agree bit for bit with Kafka's own clients:
//!
//! ```
//! use strom_client::partitioner::{murmur2, DefaultPartitioner, Partitioner};
//!
//! // The same partition as the Java client (and librdkafka's `murmur2_random`) picks.
//! let p = DefaultPartitioner::default();
//! assert_eq!(p.partition(Some(b"user-42"), 12), (murmur2(b"user-42") & 0x7fff_ffff) as i32 % 12);
//! ```

pub mod admin;
pub mod assignor;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod partitioner;
pub mod producer;
pub mod types;

pub use admin::{Admin, NewTopic, OffsetSpec};
pub use config::{Acks, ClientConfig, ConsumerConfig, ProducerConfig};
pub use consumer::{Consumer, RebalanceListener};
pub use error::{Error, Result};
pub use producer::{BatchDelivery, DeliveryFuture, Producer, ProducerRecord, RecordMetadata};
pub use strom_log::Compression;
pub use types::{ConsumerRecord, Header, IsolationLevel, OffsetReset, TopicPartition};
