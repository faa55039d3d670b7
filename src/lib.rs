//! # Strom
//!
//! A Kafka-compatible, replicated, partitioned log and stream-processing engine in one Rust
//! workspace. This facade crate re-exports the layers so that applications depend on one crate:
//!
//! - [`log`]: the storage engine (segments of Kafka v2 record batches, indexes, recovery,
//!   retention, compaction).
//! - [`broker`]: the Kafka-protocol broker behind `strom server`.
//! - [`client`]: the Kafka-protocol client (partitioners so far).
//!
//! The `strom` binary (see `strom --help`) runs the benchmarks today and the broker as it lands.

pub use strom_broker as broker;
pub use strom_client as client;
pub use strom_controller as controller;
pub use strom_log as log;
pub use strom_streams as streams;

pub mod bench;
pub mod bench_client;
pub mod bench_cluster;
pub mod bench_nexmark;
pub mod bench_streams;
pub mod cli;
