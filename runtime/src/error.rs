//! The runtime's error type.
//!
//! Every variant says whether retrying the failed operation can help (see [`Error::is_retryable`]),
//! in the style of Arroyo's `arroyo-rpc` errors: a storage or IO hiccup may go away, a record that does
//! not decode or a misconfigured job will not.

use std::io;

/// Errors raised while running a dataflow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a source, sink or file failed. Retrying may help.
    #[error("io error in {context}: {source}")]
    Io {
        /// What the runtime was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A record could not be parsed or serialized (a bad JSON line, a state value that does not decode).
    /// Retrying cannot help.
    #[error("codec error in {context}: {message}")]
    Codec {
        /// What was being encoded or decoded.
        context: String,
        /// The codec's message.
        message: String,
    },
    /// The state backend failed. Retrying may help (a later backend may have transient failures).
    #[error("state backend error: {0}")]
    State(String),
    /// The job is wired or configured wrongly (for example a window of size 0). Retrying cannot help.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A worker thread panicked or hung up. Retrying the job may help.
    #[error("worker {worker} failed: {message}")]
    Worker {
        /// Index of the worker thread.
        worker: usize,
        /// What went wrong.
        message: String,
    },
    /// A user function reported an error. Retrying cannot help unless the user says so.
    #[error("user function failed: {0}")]
    User(String),
}

impl Error {
    /// Whether retrying the failed operation (or restarting the job from its last snapshot) can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::State(_) | Error::Worker { .. } => true,
            Error::Codec { .. } | Error::Config(_) | Error::User(_) => false,
        }
    }

    /// An IO error with what the runtime was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A codec error with what was being encoded or decoded.
    pub fn codec(context: impl Into<String>, message: impl ToString) -> Self {
        Error::Codec {
            context: context.into(),
            message: message.to_string(),
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_is_by_kind() {
        let io = Error::io("reading events.jsonl", io::Error::other("disk"));
        assert!(io.is_retryable());
        assert!(io.to_string().contains("events.jsonl"));
        assert!(!Error::codec("line 3", "expected value").is_retryable());
        assert!(!Error::Config("window size 0".into()).is_retryable());
        assert!(Error::State("busy".into()).is_retryable());
    }
}
