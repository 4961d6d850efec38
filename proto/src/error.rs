//! Errors of model loading and saving. Every variant names the file it is about, so the
//! binary can print them as they are.

use std::io;
use std::path::PathBuf;

/// Something went wrong reading, decoding, resolving or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// An I/O operation on `path` failed; `action` says which ("cannot open", "cannot write", …).
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or folder the operation was about.
        path: PathBuf,
        /// What Kiln was doing, phrased for people ("cannot open", "cannot rename into place").
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The bytes are not a protobuf message prost can decode as a `ModelProto`.
    #[error("{}: not a valid ONNX protobuf ({source})", path.display())]
    Decode {
        /// The model file (or the origin given to `decode_model`).
        path: PathBuf,
        /// prost's description of where decoding failed.
        #[source]
        source: prost::DecodeError,
    },

    /// The bytes decoded, but what came out has no graph or no IR version.
    #[error("{}: does not look like an ONNX model ({reason})", path.display())]
    NotAModel {
        /// The model file.
        path: PathBuf,
        /// What is missing, e.g. "no graph" or "no IR version".
        reason: String,
    },

    /// A tensor's external data cannot be used.
    #[error("{}: external data for tensor '{tensor}': {problem}", path.display())]
    ExternalData {
        /// The model file that refers to the external data.
        path: PathBuf,
        /// The tensor, as `TensorSite::describe` names it.
        tensor: String,
        /// What is wrong.
        #[source]
        problem: ExternalDataError,
    },

    /// The encoded protobuf would pass the 2 GiB limit protobuf readers enforce.
    #[error(
        "{}: the encoded model would be {size} bytes, over the protobuf limit of {limit} bytes (2 GiB){hint}",
        path.display()
    )]
    TooLarge {
        /// The destination (or `<memory>` for `encode_model`).
        path: PathBuf,
        /// Encoded size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
        /// Advice, starting with "; " when present.
        hint: &'static str,
    },

    /// The model declares more than a resource limit allows; `message` names the limit and
    /// the variable that raises it.
    #[error("{}: {message}", path.display())]
    Limit {
        /// The model file.
        path: PathBuf,
        /// "… exceeds the limit of N (raise it with KILN_MAX_…=M)".
        message: String,
    },

    /// A `KILN_MAX_*` environment variable is not a whole number.
    #[error("environment variable {env} is '{value}', not a whole number")]
    BadLimit {
        /// The variable.
        env: &'static str,
        /// Its value.
        value: String,
    },

    /// The model or the save options ask for something that cannot be written.
    #[error("{}: cannot save: {reason}", path.display())]
    Save {
        /// The destination model file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What is wrong with one tensor's external data reference.
#[derive(Debug, thiserror::Error)]
pub enum ExternalDataError {
    /// No `location` entry, or an empty one.
    #[error("no 'location' entry")]
    NoLocation,
    /// `location` is an absolute path.
    #[error("location '{0}' is an absolute path; it must be relative to the model folder")]
    Absolute(String),
    /// `location` has a `..` component.
    #[error("location '{0}' escapes the model folder")]
    ParentComponent(String),
    /// `location` starts with a Windows drive letter (`C:\`, `C:/`, `C:`).
    #[error("location '{0}' is a Windows drive path; it must be relative to the model folder")]
    WindowsDrive(String),
    /// `location` is a UNC network path (`\\server\share`).
    #[error("location '{0}' is a UNC network path; it must be relative to the model folder")]
    Unc(String),
    /// After resolving symbolic links the file lies outside the model folder.
    #[error("location '{location}' resolves to '{}', outside the model folder '{}'", resolved.display(), folder.display())]
    OutsideFolder {
        /// The location as written in the model.
        location: String,
        /// Where it leads after resolving symbolic links.
        resolved: PathBuf,
        /// The model folder, canonicalized.
        folder: PathBuf,
    },
    /// The file does not exist.
    #[error("file '{}' (location '{location}') does not exist", path.display())]
    Missing {
        /// The location as written in the model.
        location: String,
        /// The path looked at.
        path: PathBuf,
    },
    /// The file exists but cannot be opened, inspected or mapped.
    #[error("cannot read '{}' (location '{location}'): {source}", path.display())]
    Unreadable {
        /// The location as written in the model.
        location: String,
        /// The path looked at.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The location names something that is not a regular file (a folder, a device, …).
    #[error("location '{0}' is not a regular file")]
    NotAFile(String),
    /// `offset` or `length` is not a non-negative decimal integer.
    #[error("'{key}' is '{value}', not a non-negative integer")]
    BadNumber {
        /// `offset` or `length`.
        key: &'static str,
        /// The value as written.
        value: String,
    },
    /// `offset` lies past the end of the file.
    #[error("offset {offset} is past the end of '{location}' ({file_len} bytes)")]
    OffsetPastEnd {
        /// The location as written.
        location: String,
        /// Requested offset.
        offset: u64,
        /// Size of the file.
        file_len: u64,
    },
    /// `offset + length` does not fit in 64 bits.
    #[error("offset {offset} + length {length} overflows")]
    Overflow {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        length: u64,
    },
    /// `offset + length` lies past the end of the file.
    #[error(
        "offset {offset} + length {length} is past the end of '{location}' ({file_len} bytes)"
    )]
    RangePastEnd {
        /// The location as written.
        location: String,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        length: u64,
        /// Size of the file.
        file_len: u64,
    },
    /// The byte count does not match what dims and element type require.
    #[error("{actual} bytes, but dims {dims:?} of data type {data_type} need {expected}")]
    LengthMismatch {
        /// Bytes the reference covers.
        actual: u64,
        /// Bytes dims × element size require.
        expected: u64,
        /// The tensor's dims.
        dims: Vec<i64>,
        /// The tensor's data type (TensorProto.DataType value).
        data_type: i32,
    },
    /// STRING tensors cannot be stored externally (ONNX forbids it).
    #[error("string tensors cannot have external data")]
    StringTensor,
    /// The tensor still refers to external data where resolved data was expected.
    #[error("still refers to external data (location '{0}'); load the model with load_model so it is resolved before saving")]
    Unresolved(String),
}
