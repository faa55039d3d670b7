//! The crate's one error type.

/// What went wrong, and whose fault it is. Every variant displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The statement is not valid SQL, or names something that does not exist (the user's).
    #[error("{0}")]
    Statement(String),
    /// The statement is valid but Strom cannot run it (yet): the message says what is missing.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A record could not be read in the declared format (the data's).
    #[error("bad record: {0}")]
    Format(String),
    /// DataFusion failed while planning or running a query.
    #[error("{0}")]
    DataFusion(String),
    /// The cluster or the client failed.
    #[error("kafka client: {0}")]
    Client(#[from] strom_client::Error),
    /// Writing a sink (a file) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// An invariant of this crate broke: this is a bug.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        crate::errors::from_datafusion(e)
    }
}

impl From<arrow::error::ArrowError> for SqlError {
    fn from(e: arrow::error::ArrowError) -> Self {
        SqlError::DataFusion(crate::errors::one_line(&e.to_string()))
    }
}

/// This crate's result.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;
