//! # strom-streams: typed stream processing over topics
//!
//! Strom's answer to Kafka Streams, in Rust: a typed DSL of composable operators over topics,
//! with fault-tolerant state, event time and windows, scaled out by running more instances of
//! the same application. It runs against any Kafka-protocol cluster, or embedded with Strom's
//! log inside the application process ([`Strom::embedded`]); the topology is the same.
//!
//! - [`StreamsBuilder`] starts a topology: [`KStream`]s from topics, [`KTable`]s from
//!   (compacted) topics.
//! - Stateless: `map`, `map_values`, `filter`, `filter_not`, `flat_map`, `flat_map_values`,
//!   `select_key`, [`split`](KStream::split) / `merge`, `peek`, `for_each`, `repartition`.
//! - Stateful: `group_by_key` / `group_by` (through a repartition topic when keys changed),
//!   then `count`, `reduce`, `aggregate`; windowed by [`TimeWindows`] (tumbling, hopping),
//!   [`SlidingWindows`] or [`SessionWindows`], each with an explicit grace period,
//!   [`Emit::OnUpdate`] or [`Emit::OnWindowClose`], and late records counted or routed to a
//!   topic. Tables: `map_values`, `filter`, `to_stream`.
//! - Joins: stream-stream within [`JoinWindows`] (inner, left, outer), stream-table (inner,
//!   left), table-table (inner, left, outer). Co-partitioning is checked at start.
//! - Keys and values cross topics through [`Serde`] (strings, bytes, integers, `Json<T>`, or
//!   [`json_serde!`] for your own types).
//! - [`Streams`] runs a topology: one task per input partition (group), instances sharing an
//!   `application.id` split the tasks, state lives in [`store`]s backed by changelog topics and
//!   is restored when a task moves; at-least-once commits; interactive queries with
//!   [`Streams::kv_store`] and [`Streams::window_store`].
//! - [`TopologyTestDriver`] runs a topology synchronously for unit tests.
//!
//! ## A complete pipeline
//!
//! ```
//! use std::time::Duration;
//! use strom_client::{Producer, ProducerConfig, ProducerRecord};
//! use strom_streams::{Streams, StreamsBuilder, StreamsConfig, Strom};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Strom's log and broker inside this process.
//! let dir = tempfile::tempdir()?;
//! let strom = Strom::embedded(dir.path()).await?;
//! strom.create_topics(&["clicks", "clicks-per-page"], 2).await?;
//!
//! // Clicks keyed by user, valued by page: count them per page.
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream::<String, String>("clicks")
//!     .group_by(|_user, page| page.clone())
//!     .materialize_as("clicks-by-page")
//!     .count()
//!     .to_stream()
//!     .to("clicks-per-page");
//! let topology = builder.build()?;
//!
//! let config = StreamsConfig::new("click-counter", &strom.bootstrap())
//!     .commit_interval(Duration::from_millis(100));
//! let mut app = Streams::start(topology, config).await?;
//!
//! let producer = Producer::new(ProducerConfig::new(&strom.bootstrap())).await?;
//! for (user, page) in [("ann", "/home"), ("bob", "/home"), ("ann", "/cart")] {
//!     producer.send(ProducerRecord::new("clicks", page).key(user)).await?;
//! }
//! producer.flush().await?;
//! app.wait_until_running(Duration::from_secs(30)).await?;
//!
//! // Interactive query: read the running application's store.
//! let home = "/home".to_string();
//! let deadline = std::time::Instant::now() + Duration::from_secs(30);
//! while app.kv_store::<String, i64>("clicks-by-page")?.get(&home) != Some(2) {
//!     assert!(std::time::Instant::now() < deadline, "no count yet");
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//! }
//! app.close().await?;
//! strom.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod driver;
mod dsl;
pub mod embedded;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod graph;
mod ops;
pub mod runtime;
pub mod serde;
pub mod store;
mod topology;
pub mod window;

pub use driver::{TestRecord, TopologyTestDriver};
pub use dsl::{
    Data, KGroupedStream, KStream, KTable, Key, SessionWindowedKStream, Split, StreamsBuilder,
    Value, WindowedKStream,
};
pub use embedded::{Embedded, Strom};
pub use error::{Error, Result, SerdeError};
pub use graph::{OutRecord, TaskMetrics};
pub use runtime::{KvStoreView, State, Streams, StreamsConfig, StreamsMetrics, WindowStoreView};
pub use serde::{Json, Serde};
pub use store::{KvStore, StoreKind, WindowStore};
pub use topology::Topology;
pub use window::{
    Emit, JoinWindows, SessionWindows, SlidingWindows, TimeWindows, Window, Windowed,
};
