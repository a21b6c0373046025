//! Error policy.
//!
//! Every error Lifeboat shows an operator is one line that says what failed and what to do next.
//! Each variant maps to an exit code: 2 for bad usage or bad configuration (nothing was
//! attempted), 1 for an operation that failed (the target and the backup server are left as they
//! were: a failed backup never gets a manifest, a failed restore check never touches the target).
//! Secrets never appear in messages: errors carry file paths, never file contents.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is missing, unreadable, malformed or inconsistent.
    #[error("configuration {file}: {message}")]
    Config { file: PathBuf, message: String },

    /// The command line asked for something this configuration or role cannot do.
    #[error("{0}")]
    Usage(String),

    /// A secret file (key, identity, passphrase, password) could not be read.
    #[error("cannot read {what} file {path}: {reason}; check that the file exists and is readable by this user")]
    SecretFile { what: &'static str, path: PathBuf, reason: String },

    /// The backup server refused or could not be reached.
    #[error("backup server {server}: {message}")]
    Server { server: String, message: String },

    /// A stored file does not match what its manifest says.
    #[error("{0}")]
    Integrity(String),

    /// Decryption failed (wrong key, or not an age file).
    #[error("{0}")]
    Decrypt(String),

    /// A datastore operation failed.
    #[error("{store}: {message}")]
    Store { store: String, message: String },

    /// Counts after a restore differ from the counts recorded at backup time.
    #[error("{store}: restore verification failed: {message}")]
    Verification { store: String, message: String },

    /// There is no complete backup to restore or verify.
    #[error("{0}")]
    NotFound(String),

    /// Writing an encoded stream to the backup server failed; the server's
    /// [`upload_failed`](crate::server::BackupServer::upload_failed) turns it into its own explanation.
    #[error("writing to the backup server: {0}")]
    Upload(#[source] std::io::Error),

    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// `status --max-age`: the newest backup is too old (or missing).
    #[error("{0}")]
    Stale(String),

    /// SIGTERM or SIGINT stopped the job; the message says what was and was not done.
    #[error("{0}")]
    Stopped(String),
}

impl Error {
    /// Exit code for this error: 2 for bad usage or configuration, 1 for a failed operation.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Usage(_) | Error::SecretFile { .. } => 2,
            _ => 1,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    pub fn store(store: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Store { store: store.into(), message: message.into() }
    }
}
