//! What can stop a compile before anything is written (exit 2 in the CLI).

use thiserror::Error;

/// A compile that could not produce a model.
#[derive(Debug, Error)]
pub enum CompileError {
    /// The model file could not be read or decoded.
    #[error(transparent)]
    Model(#[from] kiln_proto::ProtoError),
    /// The model decoded but its graph is malformed.
    #[error("{0}")]
    Graph(String),
    /// The profile asks for something this compiler does not do.
    #[error("profile '{profile}': {what}")]
    Unsupported {
        /// The profile's name.
        profile: String,
        /// What is not supported.
        what: String,
    },
    /// The profile says `ops.unsupported: error` and the device cannot run these nodes.
    #[error("profile '{profile}' refuses CPU fallback, but {count} node(s) cannot run on the device: {first}")]
    Fallback {
        /// The profile's name.
        profile: String,
        /// How many nodes.
        count: usize,
        /// The first one and why.
        first: String,
    },
    /// Calibration or check data could not be used.
    #[error("{0}")]
    Data(String),
    /// Quantization failed.
    #[error(transparent)]
    Quantize(#[from] Box<crate::quantize::QuantizeError>),
    /// A rewrite failed.
    #[error(transparent)]
    Pass(#[from] kiln_passes::pipeline::PassError),
    /// ONNX Runtime refused a model or the inputs.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// An output file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}
