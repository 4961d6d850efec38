//! The one error type of calibration: every message says which sample, file or tensor it is about.

use std::path::PathBuf;

use kiln_passes::tensor::DataType;
use thiserror::Error;

use crate::runtime::RuntimeError;
use crate::tensors::TensorFileError;
use crate::validate::SyntheticError;

/// What went wrong reading calibration data, running the model, or reading statistics.
#[derive(Debug, Error)]
pub enum CalibrationError {
    /// A tensor file could not be read (the message names the file).
    #[error(transparent)]
    Data(#[from] TensorFileError),
    /// The calibration data does not fit the model (names, shapes, element types, layout).
    #[error("{file}: {reason}")]
    Layout {
        /// The file or folder.
        file: String,
        /// What is wrong and what the model expects.
        reason: String,
    },
    /// Synthetic inputs cannot be made for this model.
    #[error(transparent)]
    Synthetic(#[from] SyntheticError),
    /// ONNX Runtime could not load the model with the calibrated tensors exposed.
    #[error("calibration: {0}")]
    Session(#[source] RuntimeError),
    /// ONNX Runtime failed on one sample.
    #[error("calibration sample {sample}: {source}")]
    Run {
        /// The sample (a path, `file[i]`, or `synthetic sample i`).
        sample: String,
        /// ONNX Runtime's error.
        #[source]
        source: RuntimeError,
    },
    /// Tensors asked for that the main graph does not produce.
    #[error("cannot calibrate {}: no node, input or initializer of the main graph produces them (values inside If/Loop/Scan bodies cannot be exposed)", .names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "))]
    NotCapturable {
        /// The tensor names.
        names: Vec<String>,
    },
    /// A calibrated tensor is not a real-valued tensor.
    #[error("cannot calibrate '{name}': it is {got}, not a float tensor")]
    NotFloat {
        /// The tensor name.
        name: String,
        /// What ONNX Runtime returned, described.
        got: String,
    },
    /// The element type of a calibrated tensor has no conversion to float32.
    #[error("cannot calibrate '{name}': element type {dtype} is not supported")]
    UnsupportedType {
        /// The tensor name.
        name: String,
        /// Its element type.
        dtype: DataType,
    },
    /// A statistics file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A statistics file is damaged, of another format or version, or inconsistent.
    #[error("{}: not a usable calibration statistics file: {reason}", path.display())]
    StatsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Two statistics cannot be merged (collected with different settings).
    #[error("cannot merge calibration statistics: {0}")]
    Merge(String),
    /// An option is out of its range (histogram bins not a power of two, …).
    #[error("invalid calibration option: {0}")]
    Option(String),
}

impl CalibrationError {
    /// A layout problem of `file`.
    pub(crate) fn layout(file: impl Into<String>, reason: impl Into<String>) -> CalibrationError {
        CalibrationError::Layout {
            file: file.into(),
            reason: reason.into(),
        }
    }
}
