//! Strom SQL: streams and tables over topics, queried with SQL.
//!
//! DataFusion parses, plans and evaluates; this crate adds what a batch engine lacks for data
//! that never ends:
//!
//! - a [catalog](catalog) of **streams** (append-only, every record an event) and **tables**
//!   (the latest row per primary key) declared over topics, kept in a compacted topic so that
//!   every restart sees the same one;
//! - **ad-hoc queries** over a topic's stored records, read up to the high watermark as a
//!   bounded table with partition, offset and timestamp filters pushed down to the log
//!   ([`history`]);
//! - **continuous queries** (`CREATE STREAM .. AS SELECT`, `INSERT INTO .. SELECT`) that run
//!   until `TERMINATE` ([`continuous`], [`runner`]): DataFusion evaluates each micro-batch of
//!   records, and Strom's own operators keep the state between batches: windows that close
//!   when the watermark passes them (`TUMBLE`, `HOP`, `SESSION`, see [`window`]), updating
//!   aggregates ([`agg`]), window functions ([`over`]), joins of two streams within a time
//!   bound, and joins against a table's latest rows, with a watermark per input partition
//!   ([`watermark`]);
//! - push queries (`SELECT .. EMIT CHANGES`) that stream rows to the client until it leaves.
//!
//! [`Engine`] is the entry point; `strom server` hosts one and serves it over the PostgreSQL
//! wire protocol.

pub mod agg;
pub mod catalog;
pub mod continuous;
mod engine;
pub mod error;
pub(crate) mod errors;
pub mod format;
pub mod history;
pub mod hosting;
pub mod nexmark;
pub mod over;
pub mod parse;
pub mod pg;
pub mod runner;
pub mod sink;
pub mod slot;
pub mod watermark;
pub mod window;

pub use datafusion;
pub use engine::{sql_type_name, Engine, EngineConfig, Output, QueryInfo};
pub use error::{Result, SqlError};
pub use hosting::HostingConfig;
