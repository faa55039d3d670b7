//! The one error type of `strom-log`.
//!
//! Variants say whose fault an error is: the caller's (an invalid batch, an offset out of range, a
//! bad config), the disk's (I/O, corrupt files), or ours (an internal invariant broke: a bug).

use std::path::PathBuf;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller handed over bytes that are not a valid v2 record batch. Nothing was stored.
    #[error("invalid record batch at byte {position} of the request: {reason}")]
    InvalidBatch {
        /// Byte position of the offending batch within the appended buffer.
        position: usize,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// A batch (or a whole append) exceeds the configured `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes = {max}")]
    BatchTooLarge {
        /// Size of the batch in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The requested offset lies outside `[log start offset, log end offset]`.
    #[error("offset {offset} is out of range: the log holds [{log_start}, {log_end})")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// First offset still in the log.
        log_start: i64,
        /// Offset the next appended record will get.
        log_end: i64,
    },
    /// A topic/partition name or a config value the caller supplied is not acceptable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The caller asked for a topic that does not exist.
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    /// The caller tried to create a topic that already exists.
    #[error("topic already exists: {0}")]
    TopicAlreadyExists(String),
    /// Data on disk is damaged in a way recovery could not repair by truncation.
    #[error("corrupt data in {}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system failed an I/O operation on a file of the log.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A compression codec failed or the batch names an unknown codec.
    #[error("compression error ({codec}): {reason}")]
    Compression {
        /// The codec's name.
        codec: &'static str,
        /// What failed.
        reason: String,
    },
    /// A leader append in an epoch older than the log's latest: the appender was deposed.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch {
        /// The epoch the append was made in.
        epoch: i32,
        /// The latest epoch in the log.
        latest: i32,
    },
    /// An idempotent producer skipped or reordered sequence numbers.
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence the log expected.
        expected: i32,
        /// The sequence the batch carried.
        got: i32,
    },
    /// A batch came from an older epoch of a producer that has since been re-initialised.
    #[error("producer {producer_id}: epoch {epoch} is fenced by epoch {current}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The epoch the batch carried.
        epoch: i16,
        /// The producer's current epoch.
        current: i16,
    },
    /// A producer the log has no state for sent a batch that does not start a sequence.
    #[error("unknown producer {producer_id} (sequence {sequence} does not start at 0)")]
    UnknownProducerId {
        /// The producer.
        producer_id: i64,
        /// The sequence the batch carried.
        sequence: i32,
    },
    /// The log was closed; no further operations are accepted.
    #[error("the log at {} is closed", .0.display())]
    Closed(PathBuf),
    /// An internal invariant broke. This is a bug in Strom; please report it.
    #[error("internal error (this is a bug in strom-log): {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(position: usize, reason: impl Into<String>) -> Self {
        Error::InvalidBatch {
            position,
            reason: reason.into(),
        }
    }
}

/// Attaches a path to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
