//! Kiln's bridge to ONNX Runtime: find the library, run models, read any intermediate value.
//!
//! - [`locate_library`] finds `libonnxruntime` of the pinned [`ORT_VERSION`] (`ORT_DYLIB_PATH`,
//!   Kiln's cache, an installed Python `onnxruntime`, or a one-time pip fetch into the cache).
//! - [`environment`] loads it and builds the process-wide ONNX Runtime environment, once.

mod env;
mod error;
mod locate;

pub use env::{environment, library_path};
pub use error::RuntimeError;
pub use locate::{
    cache_dir, library_file_name, locate_library, locate_with, SearchEnv, ORT_VERSION,
};
