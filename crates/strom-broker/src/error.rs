//! The error type of `strom-broker`.
//!
//! Kafka's wire error codes are not errors of this crate: handlers map failures to
//! [`kafka_protocol::ResponseError`] codes at the protocol edge (see `handlers`). This enum is for
//! what stops the broker or one connection.

use std::path::PathBuf;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of the broker itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong (the user's fault).
    #[error("configuration: {0}")]
    Config(String),
    /// The configuration file could not be read or parsed.
    #[error("configuration file {}: {reason}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The storage layer failed.
    #[error(transparent)]
    Log(#[from] strom_log::Error),
    /// Binding or accepting on the listen address failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// A client sent bytes that are not a valid request (the client's fault; the connection is
    /// closed).
    #[error("bad request from client: {0}")]
    BadRequest(String),
    /// Another broker could not be reached, or answered nonsense (replication retries).
    #[error("replication: {0}")]
    Replication(String),
    /// The metadata quorum failed or could not be reached.
    #[error(transparent)]
    Controller(#[from] strom_controller::Error),
    /// An invariant broke. This is a bug in Strom.
    #[error("internal error (this is a bug in strom-broker): {0}")]
    Internal(String),
}
