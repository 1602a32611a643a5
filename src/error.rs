//! Errors of a connector's worker. Each carries enough context to tell the user what
//! failed and what to do; the text goes to the state view's `err` and the server log.

use crate::pg::PgError;
use crate::replconn::ReplError;
use std::fmt;

#[derive(Debug, Clone)]
pub enum WorkerError {
    /// SIGTERM: not an error, the worker stops.
    Stopped,
    /// Bad configuration or input: the user must change something.
    Config(String),
    /// The source refused or failed; the text is the source server's own.
    Source(String),
    /// An operation on the destination failed.
    Dest {
        context: String,
        err: PgError,
    },
    Internal(String),
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::Stopped => f.write_str("stopped"),
            WorkerError::Config(s) | WorkerError::Source(s) | WorkerError::Internal(s) => {
                f.write_str(s)
            }
            WorkerError::Dest { context, err } if context.is_empty() => {
                write!(f, "{}", err.message)
            }
            WorkerError::Dest { context, err } => write!(f, "{context}: {}", err.message),
        }
    }
}

impl std::error::Error for WorkerError {}

impl From<PgError> for WorkerError {
    fn from(err: PgError) -> Self {
        WorkerError::Dest {
            context: String::new(),
            err,
        }
    }
}

impl From<ReplError> for WorkerError {
    fn from(e: ReplError) -> Self {
        WorkerError::Source(e.to_string())
    }
}

/// Adds what we were doing to a destination error.
pub trait DestContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, WorkerError>;
}

impl<T> DestContext<T> for Result<T, PgError> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, WorkerError> {
        self.map_err(|err| WorkerError::Dest {
            context: what(),
            err,
        })
    }
}
