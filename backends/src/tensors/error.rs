//! The one error type of tensor files: every message starts with the file it is about.

use std::io;
use std::path::{Path, PathBuf};

use kiln_passes::tensor::TensorError;
use thiserror::Error;

/// What went wrong reading or writing a tensor file (`.npy`, `.npz`, `.pb`, input folders).
///
/// `file` is what a person needs to find the problem: a path, or `archive.npz: entry 'x'`.
#[derive(Debug, Error)]
pub enum TensorFileError {
    /// The file could not be opened, read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is damaged or is not what its name says (bad magic, header, lengths).
    #[error("{file}: {reason}")]
    Corrupt {
        /// Where.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The file is well formed but holds something Kiln does not read or write.
    #[error("{file}: {reason}")]
    Unsupported {
        /// Where.
        file: String,
        /// What it holds and what to do instead.
        reason: String,
    },
    /// The tensor's declaration or data is invalid.
    #[error("{file}: {source}")]
    Tensor {
        /// Where.
        file: String,
        /// The tensor-level problem.
        #[source]
        source: TensorError,
    },
    /// The names or number of values do not match what the model expects.
    #[error("{file}: {reason}")]
    Mismatch {
        /// Where.
        file: String,
        /// What does not match, with the expected names.
        reason: String,
    },
    /// The zip container of an `.npz` is damaged.
    #[error("{file}: not a readable .npz (zip) archive: {source}")]
    Zip {
        /// Where.
        file: String,
        /// The zip reader's error.
        #[source]
        source: zip::result::ZipError,
    },
    /// A `.pb` file does not decode as the protobuf message it should hold.
    #[error("{file}: does not decode as an ONNX {message}: {source}")]
    Decode {
        /// Where.
        file: String,
        /// The message type that was expected (`TensorProto`, …).
        message: &'static str,
        /// The protobuf decoder's error.
        #[source]
        source: prost::DecodeError,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = TensorFileError> = std::result::Result<T, E>;

impl TensorFileError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: io::Error) -> TensorFileError {
        TensorFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A damaged or malformed file.
    pub fn corrupt(file: impl Into<String>, reason: impl Into<String>) -> TensorFileError {
        TensorFileError::Corrupt {
            file: file.into(),
            reason: reason.into(),
        }
    }

    /// A well-formed file Kiln does not handle.
    pub fn unsupported(file: impl Into<String>, reason: impl Into<String>) -> TensorFileError {
        TensorFileError::Unsupported {
            file: file.into(),
            reason: reason.into(),
        }
    }

    /// Names or counts that do not match the model.
    pub fn mismatch(file: impl Into<String>, reason: impl Into<String>) -> TensorFileError {
        TensorFileError::Mismatch {
            file: file.into(),
            reason: reason.into(),
        }
    }

    /// An invalid tensor in `file`.
    pub fn tensor(file: impl Into<String>, source: TensorError) -> TensorFileError {
        TensorFileError::Tensor {
            file: file.into(),
            source,
        }
    }
}

/// How a path is named in messages.
pub(crate) fn label(path: &Path) -> String {
    path.display().to_string()
}
