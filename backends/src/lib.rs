//! Kiln's bridge to ONNX Runtime, tensor files, and (later) profiles and targets.

pub mod compare;
pub mod profile;
pub mod runtime;
pub mod tensors;
pub mod validate;
pub mod value;
pub mod wheel;

pub use value::{NamedValues, Value};
