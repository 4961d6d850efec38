//! Why `quantize` failed.

use std::path::PathBuf;

use kiln_passes::pipeline::PassError;
use thiserror::Error;

use crate::calibrate::CalibrationError;
use crate::runtime::RuntimeError;

/// Everything quantization can fail with; all are about the input (model, data, files,
/// options), so the CLI maps every one to exit code 2.
#[derive(Debug, Error)]
pub enum QuantizeError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The overrides YAML is malformed or has an unknown key.
    #[error("{file}:{line}:{column}: {message}")]
    Yaml {
        /// The file.
        file: String,
        /// 1-based line (0 when the parser did not say).
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message, which names the key.
        message: String,
    },
    /// An override entry has a value Kiln cannot use.
    #[error("{file}: tensor '{tensor}': {reason}")]
    Override {
        /// The file.
        file: String,
        /// The tensor it names.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// The model already holds quantization (Q/DQ or integer ops).
    #[error("the model is already quantized ({nodes} nodes: {ops}); Kiln does not quantize a model twice")]
    AlreadyQuantized {
        /// How many quantization nodes.
        nodes: usize,
        /// Which op types, comma-separated.
        ops: String,
    },
    /// The optimization pipeline failed.
    #[error(transparent)]
    Optimize(Box<kiln_passes::optimize::OptimizeError>),
    /// A rewrite failed.
    #[error(transparent)]
    Pass(Box<PassError>),
    /// Calibration failed (data, runtime).
    #[error(transparent)]
    Calibration(Box<CalibrationError>),
    /// ONNX Runtime refused a model or input.
    #[error(transparent)]
    Runtime(Box<RuntimeError>),
    /// Saved statistics do not cover a tensor the model needs.
    #[error("{}: no statistics for tensor '{tensor}' (were they computed for another model, or with other options?)", path.display())]
    RangesMissing {
        /// The statistics file (the first, when several were merged).
        path: PathBuf,
        /// The tensor without statistics.
        tensor: String,
    },
    /// The options contradict each other or the model.
    #[error("{0}")]
    Options(String),
}

impl From<PassError> for QuantizeError {
    fn from(e: PassError) -> QuantizeError {
        QuantizeError::Pass(Box::new(e))
    }
}

impl From<CalibrationError> for QuantizeError {
    fn from(e: CalibrationError) -> QuantizeError {
        QuantizeError::Calibration(Box::new(e))
    }
}

impl From<RuntimeError> for QuantizeError {
    fn from(e: RuntimeError) -> QuantizeError {
        QuantizeError::Runtime(Box::new(e))
    }
}
