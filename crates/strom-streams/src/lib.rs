//! # strom-streams: typed stream processing over topics
//!
//! (crate docs are completed below)

pub mod driver;
mod dsl;
pub mod embedded;
pub mod error;
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
