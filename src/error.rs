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
    /// The source could not be reached or the connection to it was lost
    /// (refused, reset, timed out, the server shutting down or starting up).
    /// Not the user's to fix: the worker connects again by itself, with
    /// backoff, whatever synchdb.error_handling_strategy says.
    Transient(String),
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
            WorkerError::Config(s)
            | WorkerError::Source(s)
            | WorkerError::Transient(s)
            | WorkerError::Internal(s) => f.write_str(s),
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

impl WorkerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, WorkerError::Transient(_))
    }
}

impl From<ReplError> for WorkerError {
    fn from(e: ReplError) -> Self {
        if e.is_transient() {
            WorkerError::Transient(e.to_string())
        } else {
            WorkerError::Source(e.to_string())
        }
    }
}

/// SQLSTATEs by which a server says it is unavailable for now rather than that
/// the request is wrong: connection exceptions (08), insufficient resources
/// (53: too many connections, out of memory, disk full), the server shutting
/// down, crashed or starting up (57P01-57P03), an idle session ended (57P05),
/// and a replication slot still held by a walsender of a connection that just
/// broke (55006, until the source notices).
pub fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "57P05" | "55006")
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
