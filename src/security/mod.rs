//! Who may connect, and what they may publish and receive: Mosquitto's
//! `password_file` and `acl_file`, read as Mosquitto reads them.
//!
//! - [`passwords`]: `username:hash` lines; PBKDF2-SHA512 (`$7$`, Mosquitto 2.0),
//!   salted SHA-512 (`$6$`, Mosquitto 1.x, read only) and argon2id PHC strings
//!   (Mosquitto 2.1). [`set_password`] and [`delete_user`] edit a file in place for
//!   `shardmq passwd`.
//! - [`acl`]: `user` / `topic` / `pattern` lines compiled into tries, so that the
//!   check a PUBLISH or a delivery makes walks the topic's levels once, without
//!   allocating.
//!
//! Sans-IO apart from reading and writing the files themselves: no executor, no
//! clock, no logging. Nothing here prints or formats a password or a hash: errors
//! name the file, the line and the user, never the secret, and `Debug` of a
//! [`PasswordHash`] shows its scheme and cost only.

pub mod acl;
pub mod passwords;

use std::fmt;
use std::path::{Path, PathBuf};

pub use acl::{Access, Acl, SubscribeCheck, Who};
pub use passwords::{delete_user, set_password, PasswordFile, PasswordHash};

/// Why a password or ACL file, or one hash, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A line of a file that does not read as the format says.
    #[error("{at}: {reason}")]
    Syntax {
        /// The file (when read from one) and the line.
        at: Position,
        /// What is wrong with the line; never its secret part.
        reason: String,
    },
    /// A password hash field that is not one of the formats read here.
    #[error("invalid password hash: {0}")]
    Hash(&'static str),
    /// A username that cannot be written to a password file.
    #[error("invalid username: {0}")]
    Username(&'static str),
    /// A file that cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file that cannot be written (or its temporary file, or its directory).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl SecurityError {
    /// The same error, with the file its line comes from.
    fn in_file(self, path: &Path) -> SecurityError {
        match self {
            SecurityError::Syntax { at, reason } => SecurityError::Syntax {
                at: Position { path: Some(path.to_owned()), line: at.line },
                reason,
            },
            other => other,
        }
    }
}

/// Where in a file: `path:line` (the form editors jump to), or `line N` for text that
/// came from no file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The file, when the text was read from one.
    pub path: Option<PathBuf>,
    /// The line, counted from 1.
    pub line: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}:{}", path.display(), self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// A syntax error at `line` (counted from 0, as `enumerate` does) of text from no file
/// yet; `load` adds the file with [`SecurityError::in_file`].
fn syntax(index: usize, reason: impl Into<String>) -> SecurityError {
    SecurityError::Syntax { at: Position { path: None, line: index + 1 }, reason: reason.into() }
}

/// Reads a whole file, naming it in the error.
fn read_file(path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path)
        .map_err(|source| SecurityError::Read { path: path.to_owned(), source })
}
