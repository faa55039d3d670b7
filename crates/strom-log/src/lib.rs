//! # strom-log: Strom's storage engine
//!
//! Every partition of every topic is a [`PartitionLog`]: an immutable, ordered sequence of Kafka
//! record batches (format v2) split into segment files on disk. A [`LogManager`] owns a data
//! directory with one sub-directory per partition (`<topic>-<partition>/`), the topic configs,
//! crash recovery, retention and compaction.
//!
//! Batches are stored byte-for-byte as producers send them; the log only writes the base offset
//! and leader epoch into each header, so the broker serves fetches straight from the files.
//! The on-disk format is described in `docs/format.md`.
//!
//! ```
//! use strom_log::{AppendOptions, BatchBuilder, Compression, LogConfig, LogManager, ReadLimit, Record};
//! use std::collections::BTreeMap;
//!
//! # fn main() -> strom_log::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let logs = LogManager::open(dir.path(), LogConfig::default())?;
//! logs.create_topic("clicks", 3, &BTreeMap::new())?;
//! let log = logs.log("clicks", 0).expect("partition 0 exists");
//!
//! let mut batch = BatchBuilder::new(Compression::None);
//! batch.push(Record::new(Some("user-1"), Some("home"), 1_700_000_000_000));
//! let mut bytes = batch.build()?;
//! let info = log.append(&mut bytes, AppendOptions::leader(0))?;
//! assert_eq!(info.first_offset, 0);
//!
//! let read = log.read(0, 1 << 20, ReadLimit::LogEnd)?;
//! assert_eq!(read.bytes()?.len(), bytes.len());
//! logs.close()?;
//! # Ok(()) }
//! ```

pub mod batch;
pub mod checkpoint;
mod cleaner;
pub mod config;
mod error;
mod log;
mod manager;
pub mod producer;
pub mod record;
mod segment;

pub use batch::{BatchHeader, Origin};
pub use cleaner::CleanStats;
pub use config::{FlushPolicy, LogConfig, TimestampType};
pub use error::{Error, Result};
pub use log::{
    end_offset_for_epoch, now_ms, AppendInfo, AppendOptions, LogRead, PartitionLog, ReadLimit,
    RecoveryReport,
};
pub use manager::{validate_topic_name, LogManager, MaintenanceStats, TopicMeta};
pub use record::{visit_records, BatchBuilder, Compression, Header, Record, RecordView};
pub use segment::{FileSlice, ScanOutcome};
