//! The one error type: what stopped krepair from doing its job for a file.
//!
//! Findings about a model (a layer that needs repair, a warning about the
//! saving Keras version) are data in the report, not errors. An `Error`
//! means the tool could not finish: the input is unreadable or malformed, a
//! layer cannot be repaired safely, or the output cannot be written.
//! Every message is one line and names the file it is about.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, with the file it concerns.
#[derive(Debug)]
pub enum Error {
    /// An operating-system call on `path` failed.
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What krepair was doing ("read", "create", "rename", ...).
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The input is not a `.keras` archive krepair can read.
    Format {
        /// The input file or directory (or `archive!member`).
        path: PathBuf,
        /// Which part of the input is malformed.
        kind: Malformed,
        /// One line saying what is wrong and where.
        problem: String,
    },
    /// A layer cannot be repaired (or migrated) safely, so no output is
    /// written.
    Refused {
        /// The input file or directory.
        path: PathBuf,
        /// What krepair refused to do.
        verb: Verb,
        /// The layer's config path.
        layer: String,
        /// Why it cannot be done.
        reason: String,
    },
    /// The output path cannot be used.
    Output {
        /// The output path.
        path: PathBuf,
        /// Why.
        problem: String,
    },
    /// The written output failed its own check; it was not moved into place.
    Verify {
        /// The output path.
        path: PathBuf,
        /// What the check found.
        problem: String,
    },
    /// The worker process handling the archive crashed, hung past its
    /// time limit, ran out of its memory budget, or broke the protocol.
    Worker {
        /// The input file or directory.
        path: PathBuf,
        /// Which of those.
        fault: WorkerFault,
        /// One line: what happened and where.
        problem: String,
    },
    /// A bug in krepair (a panic), caught before it could do harm.
    Internal {
        /// The input file or directory.
        path: PathBuf,
        /// The panic message.
        problem: String,
    },
    /// An error a worker process reported for its archive: its stable code
    /// and its one-line message.
    Reported {
        /// [`Error::code`] of the worker's error.
        code: ErrorCode,
        /// [`Error::kind`] of the worker's error.
        kind: Option<Malformed>,
        /// The worker's message (it names the file).
        message: String,
    },
}

/// What krepair refused to do ([`Error::Refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Repair a layer's state (`krepair IN OUT`).
    Repair,
    /// Migrate the model to Keras 3 (`krepair migrate`).
    Migrate,
}

impl Verb {
    /// The verb as the message says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Repair => "repair",
            Verb::Migrate => "migrate",
        }
    }
}

/// Which part of an input is malformed ([`Error::Format`]): what a caller
/// or a test matches on, and `error.kind` in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Malformed {
    /// Not a `.keras` archive at all: an empty file, a legacy HDF5 model
    /// file, no zip signature, a directory without `config.json`.
    NotAnArchive,
    /// The zip container (or the directory form) is broken or unsafe:
    /// truncated or corrupt records, bad, duplicate or unsafe names,
    /// links, a CRC-32 mismatch, a zip bomb.
    Container,
    /// Something declares more than krepair reads: members, bytes, values.
    Limit,
    /// `config.json` or `model.weights.h5` is missing (or the weights are
    /// stored in a form krepair never loads).
    MissingMember,
    /// `metadata.json` is not what Keras writes.
    Metadata,
    /// `config.json` is not UTF-8 JSON, or not a model config krepair can
    /// walk.
    Config,
    /// `model.weights.h5` is not an HDF5 file, or holds what Keras never
    /// writes where a layer's variables should be.
    Weights,
}

impl Malformed {
    /// Its stable kebab-case name.
    pub fn code(self) -> &'static str {
        match self {
            Malformed::NotAnArchive => "not-an-archive",
            Malformed::Container => "container",
            Malformed::Limit => "limit",
            Malformed::MissingMember => "missing-member",
            Malformed::Metadata => "metadata",
            Malformed::Config => "config",
            Malformed::Weights => "weights",
        }
    }

    /// Every kind, for docs and tests.
    pub const ALL: [Malformed; 7] = [
        Malformed::NotAnArchive,
        Malformed::Container,
        Malformed::Limit,
        Malformed::MissingMember,
        Malformed::Metadata,
        Malformed::Config,
        Malformed::Weights,
    ];
}

/// The stable kind of an [`Error`]: `error.code` in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// [`Error::Io`].
    Io,
    /// [`Error::Format`].
    MalformedInput,
    /// [`Error::Refused`].
    Refused,
    /// [`Error::Output`].
    Output,
    /// [`Error::Verify`].
    Verify,
    /// [`WorkerFault::Crashed`].
    WorkerCrashed,
    /// [`WorkerFault::TimedOut`].
    Timeout,
    /// [`WorkerFault::OutOfMemory`].
    MemoryLimit,
    /// [`WorkerFault::Protocol`].
    WorkerProtocol,
    /// [`Error::Internal`].
    Internal,
}

impl ErrorCode {
    /// Its stable kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Io => "io",
            ErrorCode::MalformedInput => "malformed-input",
            ErrorCode::Refused => "refused",
            ErrorCode::Output => "output",
            ErrorCode::Verify => "verify",
            ErrorCode::WorkerCrashed => "worker-crashed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::MemoryLimit => "memory-limit",
            ErrorCode::WorkerProtocol => "worker-protocol",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a worker process failed ([`Error::Worker`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerFault {
    /// Killed by a signal or exited without answering.
    Crashed,
    /// Past the per-archive time limit.
    TimedOut,
    /// Past the per-archive memory budget.
    OutOfMemory,
    /// Wrote something that is not the protocol.
    Protocol,
}

impl Error {
    /// The same error, naming `to` where it named a path under `from`
    /// (the archive krepair made from an input names the input).
    pub fn renamed(mut self, from: &std::path::Path, to: &std::path::Path) -> Error {
        match &mut self {
            Error::Io { path, .. }
            | Error::Format { path, .. }
            | Error::Refused { path, .. }
            | Error::Internal { path, .. } => {
                let s = path.to_string_lossy().into_owned();
                let f = from.to_string_lossy().into_owned();
                if let Some(rest) = s.strip_prefix(&f) {
                    let rest = rest.split_once('!').map_or("", |x| x.1);
                    *path = if rest.is_empty() {
                        to.to_path_buf()
                    } else {
                        std::path::PathBuf::from(format!("{}!{rest}", to.display()))
                    };
                }
            }
            _ => {}
        }
        self
    }

    /// An I/O error on `path` while doing `op`.
    pub fn io(path: impl AsRef<Path>, op: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            op,
            source,
        }
    }

    /// A malformed-input error on `path`.
    pub fn format(path: impl AsRef<Path>, kind: Malformed, problem: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            kind,
            problem: problem.into(),
        }
    }

    /// For malformed input, which part (`error.kind` in the report).
    pub fn kind(&self) -> Option<Malformed> {
        match self {
            Error::Format { kind, .. } => Some(*kind),
            Error::Reported { kind, .. } => *kind,
            _ => None,
        }
    }

    /// The stable kind of error (used in reports).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Io { .. } => ErrorCode::Io,
            Error::Format { .. } => ErrorCode::MalformedInput,
            Error::Refused { .. } => ErrorCode::Refused,
            Error::Output { .. } => ErrorCode::Output,
            Error::Verify { .. } => ErrorCode::Verify,
            Error::Worker { fault, .. } => match fault {
                WorkerFault::Crashed => ErrorCode::WorkerCrashed,
                WorkerFault::TimedOut => ErrorCode::Timeout,
                WorkerFault::OutOfMemory => ErrorCode::MemoryLimit,
                WorkerFault::Protocol => ErrorCode::WorkerProtocol,
            },
            Error::Internal { .. } => ErrorCode::Internal,
            Error::Reported { code, .. } => *code,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, op, source } => {
                write!(
                    f,
                    "{}: cannot {op}: {}",
                    path.display(),
                    one_line(&source.to_string())
                )
            }
            Error::Format { path, problem, .. } => {
                write!(f, "{}: {}", path.display(), one_line(problem))
            }
            Error::Refused {
                path,
                verb,
                layer,
                reason,
            } => {
                write!(
                    f,
                    "{}: refusing to {}: layer `{layer}`: {}",
                    path.display(),
                    verb.as_str(),
                    one_line(reason)
                )
            }
            Error::Output { path, problem } => {
                write!(f, "{}: {}", path.display(), one_line(problem))
            }
            Error::Verify { path, problem } => write!(
                f,
                "{}: the written output failed verification and was discarded: {}",
                path.display(),
                one_line(problem)
            ),
            Error::Worker { path, problem, .. } => {
                write!(f, "{}: {}", path.display(), one_line(problem))
            }
            Error::Internal { path, problem } => {
                write!(f, "{}: {}", path.display(), one_line(problem))
            }
            Error::Reported { message, .. } => f.write_str(&one_line(message)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Fold a possibly multi-line message (HDF5 error stacks) onto one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Result with krepair's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
