//! The crate's one error type.

/// What went wrong, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology is wrong (the user's to fix before it runs).
    #[error("topology: {0}")]
    Topology(String),
    /// A setting is wrong (the user's).
    #[error("config: {0}")]
    Config(String),
    /// Bytes could not be read as the declared type (the data's or the serde's).
    #[error("{0}")]
    Serde(#[from] SerdeError),
    /// The cluster or the client failed (usually retriable by restarting the application).
    #[error("kafka client: {0}")]
    Client(#[from] strom_client::Error),
    /// The embedded broker failed.
    #[error("embedded broker: {0}")]
    Broker(#[from] strom_broker::Error),
    /// Waiting for something took too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The application stopped after an error (the message says which).
    #[error("the streams application failed: {0}")]
    Failed(String),
    /// The application was closed.
    #[error("the streams application is closed")]
    Closed,
    /// An invariant of this crate broke: this is a bug.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

/// Bytes that are not a valid encoding of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct SerdeError {
    /// The type being decoded.
    pub what: &'static str,
    /// Why not.
    pub reason: String,
}

impl SerdeError {
    /// An error decoding `what`.
    pub fn new(what: &'static str, reason: impl Into<String>) -> Self {
        SerdeError {
            what,
            reason: reason.into(),
        }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
