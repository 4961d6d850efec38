//! Kiln's bridge to ONNX Runtime, tensor files, and (later) profiles and targets.

pub mod value;

pub use value::{NamedValues, Value};
