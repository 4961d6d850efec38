//! The CLI's error: what went wrong, rendered as one line, and the exit code it maps to.

use std::path::{Path, PathBuf};

use kiln_backends::runtime::RuntimeError;
use kiln_backends::tensors::TensorFileError;
use kiln_passes::ir::IrError;
use kiln_proto::ProtoError;
use thiserror::Error;

/// Everything a command can fail with. Exit code 2 for bad input or usage, 1 for failed checks.
#[derive(Debug, Error)]
pub enum CliError {
    /// The model file could not be read or decoded.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The model decoded but its graph is malformed.
    #[error("{path}: {source}")]
    Graph {
        /// The model file.
        path: PathBuf,
        /// What is wrong with the graph (boxed: graph errors carry names and are large).
        source: Box<IrError>,
    },
    /// The optimization pipeline refused the options or failed on the model.
    #[error("{path}: {source}")]
    Optimize {
        /// The model file.
        path: PathBuf,
        /// What went wrong (boxed: pass errors carry graph errors, which are large).
        source: Box<kiln_passes::optimize::OptimizeError>,
    },
    /// A tensor file could not be read or written.
    #[error(transparent)]
    TensorFile(#[from] TensorFileError),
    /// ONNX Runtime could not be found, or refused the model or inputs.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// ONNX Runtime refused the inputs read from a file, or failed running on them.
    #[error("{path}: {source}")]
    Inputs {
        /// The input file or folder.
        path: PathBuf,
        /// What ONNX Runtime (or the input check before it) said.
        source: RuntimeError,
    },
    /// Validation thresholds could not be read.
    #[error(transparent)]
    Thresholds(#[from] kiln_backends::validate::ThresholdError),
    /// Quantization failed on the model, its data or the options.
    #[error("{}{source}", prefix(path))]
    Quantize {
        /// The model file, when the error is about the model itself.
        path: Option<PathBuf>,
        /// What went wrong.
        source: Box<kiln_backends::quantize::QuantizeError>,
    },
    /// The arguments do not make sense together, or an input cannot be made.
    #[error("{0}")]
    Usage(String),
    /// An output could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// `path: ` or nothing.
fn prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        2
    }

    /// A graph error attributed to the model file it came from.
    pub fn graph(path: &Path, source: IrError) -> CliError {
        CliError::Graph {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    }
}
