//! Errors of the ONNX Runtime bridge.

use std::path::PathBuf;

use kiln_passes::tensor::DataType;
use thiserror::Error;

/// What went wrong finding, loading or running ONNX Runtime; each message says what to do.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RuntimeError {
    /// `ORT_DYLIB_PATH` names a file that does not exist.
    #[error("ORT_DYLIB_PATH is set to {path:?}, which does not exist; point it at libonnxruntime {version} or unset it to let Kiln find or fetch the library")]
    DylibPathMissing {
        /// The value of the variable.
        path: PathBuf,
        /// The pinned ONNX Runtime version.
        version: &'static str,
    },
    /// No library was found and fetching it failed or was not allowed.
    #[error("could not find ONNX Runtime {version}; tried:\n{}\nfix: set ORT_DYLIB_PATH to a libonnxruntime {version}, or run `python3 -m pip install onnxruntime=={version}`", .tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n"))]
    NotFound {
        /// The pinned ONNX Runtime version.
        version: &'static str,
        /// One line per place or method tried, with why it did not work.
        tried: Vec<String>,
    },
    /// The library was found but could not be loaded or initialised.
    #[error("could not load ONNX Runtime from {path}: {message}; set ORT_DYLIB_PATH to a working libonnxruntime {version}")]
    Load {
        /// The library file.
        path: PathBuf,
        /// ONNX Runtime's or the loader's message.
        message: String,
        /// The pinned ONNX Runtime version.
        version: &'static str,
    },
    /// ONNX Runtime refused the model.
    #[error("ONNX Runtime could not load model {model}: {message}")]
    Model {
        /// Where the model came from (a path, or `<memory>`).
        model: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// A model in memory refers to external data, which only loading from its file can resolve.
    #[error("model {model} keeps tensor data in external files ({example}); save it and load it with Session::from_path so the data can be found next to it")]
    ExternalData {
        /// Where the model came from.
        model: String,
        /// One external location, for the message.
        example: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// An input name that the model does not have.
    #[error("the model has no input named {name:?}; its inputs are: {}", .expected.join(", "))]
    UnknownInput {
        /// The name given.
        name: String,
        /// The model's input names.
        expected: Vec<String>,
    },
    /// The same input was given twice.
    #[error("input {name:?} is given more than once")]
    DuplicateInput {
        /// The input name.
        name: String,
    },
    /// A required input was not given.
    #[error("input {name:?} ({expected}) is required but was not given")]
    MissingInput {
        /// The input name.
        name: String,
        /// What the model expects, for the message.
        expected: String,
    },
    /// An input of the wrong kind (tensor, sequence, optional) or element type.
    #[error("input {name:?} must be {expected}, got {got}")]
    InputType {
        /// The input name.
        name: String,
        /// What the model expects.
        expected: String,
        /// What was given.
        got: String,
    },
    /// An input tensor of the wrong rank or with a wrong fixed dimension.
    #[error("input {name:?} must have shape [{expected}], got [{got}]")]
    InputShape {
        /// The input name.
        name: String,
        /// The model's dims (symbolic names for free axes).
        expected: String,
        /// The given dims.
        got: String,
    },
    /// A value that cannot be handed to ONNX Runtime as given.
    #[error("{name}: {message}")]
    InputValue {
        /// The input name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// Something ONNX Runtime or this bridge cannot express (maps, empty sequence inputs …).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An element type ONNX Runtime's C API has no code for.
    #[error("element type {0} has no ONNX Runtime equivalent")]
    UnsupportedType(DataType),
    /// ONNX Runtime failed while running the model.
    #[error("ONNX Runtime failed to run the model: {0}")]
    Run(String),
    /// An output could not be read back.
    #[error("output {name:?}: {message}")]
    Output {
        /// The output name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A value asked to be captured is not produced in the model's main graph.
    #[error("cannot capture {name:?}: no node, input or initializer of the main graph produces it (values inside If/Loop/Scan bodies cannot be exposed)")]
    NotCapturable {
        /// The value name.
        name: String,
    },
}
