//! # strom-client: Strom's Kafka-protocol client
//!
//! Rust programs, the Streams API, SQL, Connect and Mirror will talk to any Kafka-protocol
//! cluster through this crate. It is being built bottom-up; today it holds the partitioners, the
//! part of a producer that must agree bit for bit with Kafka's own clients:
//!
//! ```
//! use strom_client::partitioner::{murmur2, DefaultPartitioner, Partitioner};
//!
//! // The same partition as the Java client (and librdkafka's `murmur2_random`) picks.
//! let p = DefaultPartitioner::default();
//! assert_eq!(p.partition(Some(b"user-42"), 12), (murmur2(b"user-42") & 0x7fff_ffff) as i32 % 12);
//! ```

pub mod partitioner;
