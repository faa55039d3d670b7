//! # strom-broker: the Kafka-protocol broker
//!
//! `strom server` runs this crate. It speaks the Kafka wire protocol (codecs from the
//! `kafka-protocol` crate) so existing producers, consumers and tools work unchanged, and stores
//! every partition in a [`strom_log::PartitionLog`].
//!
//! - [`protocol`]: framing and request decoding, no I/O.
//! - [`apis`]: the APIs and versions advertised.
//! - [`broker`]: partitions, roles, high watermarks, producer ids; [`Broker::handle`] answers one
//!   request without sockets.
//! - [`handlers`]: one module per group of APIs (find where an API is handled in its table).
//! - [`group`]: the consumer-group coordinator (a pure state machine plus its runtime).
//! - [`replication`]: Kafka's ISR rules for one partition as pure state machines (high
//!   watermark, ISR proposals, KIP-279 truncation steps).
//! - [`cluster`]: a broker in a replicated cluster: its link to the metadata quorum
//!   (`strom-controller`), applying metadata to local replicas and roles, replica fetchers.
//! - [`server`]: the tokio TCP server: connections, pipelining, graceful shutdown.
//! - [`alloc`]: a global allocator that keeps hostile element counts from aborting the broker.
//!
//! Each partition has a role (leader or follower), a leader epoch and a high watermark distinct
//! from its log end. On a single node (no `controller-quorum`) the broker leads everything and
//! the high watermark follows the log end; in a cluster the metadata quorum decides roles and
//! the high watermark waits for the in-sync replicas.

pub mod alloc;
pub mod apis;
pub mod broker;
pub mod cluster;
pub mod config;
mod error;
pub mod group;
pub mod handlers;
pub mod protocol;
pub mod replication;
pub mod server;

pub use broker::{Broker, Partition, Reply, Role};
pub use config::BrokerConfig;
pub use error::{Error, Result};
pub use server::Server;
