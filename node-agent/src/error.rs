//! Errors of the agent: the operation, the object (file, pid, kernel facility) and the source.
//! The gRPC service turns them into a `Status` with the agent's name; the observer shows a
//! facility's error as the reason it records without it.

use std::path::PathBuf;

/// Why the agent could not do something.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file or kernel file could not be used.
    #[error("cannot {op} {}: {source}", path.display())]
    File {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A system call the agent made was refused; `hint` says what to check.
    #[error("{op}: {source}{hint}")]
    Syscall {
        op: String,
        #[source]
        source: std::io::Error,
        hint: String,
    },
    /// A kernel facility is not there (not mounted, not built in, another architecture).
    #[error("{0}")]
    Unavailable(String),
    /// A request or option that cannot be carried out as given.
    #[error("{0}")]
    BadInput(String),
    /// The capture's store refused an operation.
    #[error("{op}: {source}")]
    Store {
        op: &'static str,
        #[source]
        source: heisen_recordings::RecordingsError,
    },
}

impl AgentError {
    /// A file operation's error, for `map_err`.
    pub fn file(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.into();
        move |source| AgentError::File { op, path, source }
    }

    /// A refused system call, for `map_err`.
    pub fn syscall(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
        let op = op.into();
        move |source| AgentError::Syscall { op, source, hint: String::new() }
    }
}
