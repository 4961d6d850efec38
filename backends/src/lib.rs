//! Kiln's bridge to ONNX Runtime, tensor files, and (later) profiles and targets.

pub mod calibrate;
pub mod compare;
pub mod compile;
pub mod profile;
pub mod quantize;
pub mod runtime;
pub mod tensors;
pub mod validate;
pub mod value;
pub mod wheel;
pub mod yaml;

pub use value::{NamedValues, Value};
