//! The client's error type. Variants say whose fault a failure is.

use std::time::Duration;

use kafka_protocol::ResponseError;

/// Result with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A setting is missing or invalid (the caller's fault).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The caller asked for something impossible (unknown partition, consumer not subscribed...).
    #[error("{0}")]
    Usage(String),
    /// No broker could be reached at this address.
    #[error("broker unreachable at {address}: {reason}")]
    Unreachable {
        /// The address tried.
        address: String,
        /// What the operating system said.
        reason: String,
    },
    /// A connection broke while a request was outstanding (retriable).
    #[error("connection to {0} lost")]
    Disconnected(String),
    /// The broker answered with an error code.
    #[error("{context}: {code:?}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        /// What was being done ("produce to orders-3").
        context: String,
        /// Kafka's error code.
        code: ResponseError,
        /// The broker's error message, when it sent one.
        message: Option<String>,
    },
    /// A topic does not exist.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// Nothing happened within the allowed time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// The broker sent bytes that do not follow the protocol (the broker's fault).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker does not support an API or version the client needs.
    #[error("the broker does not support {0}")]
    Unsupported(String),
    /// The producer or consumer was closed.
    #[error("the client is closed")]
    Closed,
    /// A bug in the client.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl Error {
    /// A broker error code, with context.
    pub fn broker(
        context: impl Into<String>,
        code: ResponseError,
        message: Option<String>,
    ) -> Self {
        Error::Broker {
            context: context.into(),
            code,
            message,
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Disconnected(_) | Error::Unreachable { .. } | Error::Timeout { .. } => true,
            Error::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// The Kafka error code, when this is a broker error.
    pub fn code(&self) -> Option<ResponseError> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Turns a response error code into `Ok(())` or an [`Error::Broker`].
pub(crate) fn check(code: i16, context: impl FnOnce() -> String) -> Result<()> {
    match ResponseError::try_from_code(code) {
        None if code == 0 => Ok(()),
        Some(e) => Err(Error::broker(context(), e, None)),
        None => Err(Error::Protocol(format!(
            "{}: unknown error code {code}",
            context()
        ))),
    }
}
