//! Kiln's bridge to ONNX Runtime: find the library, run models, read any intermediate value.
//!
//! - [`locate_library`] finds `libonnxruntime` of the pinned [`ORT_VERSION`] (`ORT_DYLIB_PATH`,
//!   Kiln's cache, an installed Python `onnxruntime`, or a one-time pip fetch into the cache).
//! - [`environment`] loads it and builds the process-wide ONNX Runtime environment, once.
//! - [`Session`] loads a model (file, bytes or [`ModelProto`](kiln_proto::onnx::ModelProto)),
//!   describes its inputs and outputs ([`IoInfo`]) and runs it on [`Value`](crate::Value)s.
//! - [`expose_outputs`] / [`capture`] make intermediate values graph outputs so they can be read.
//!
//! Values cross the boundary through ONNX Runtime's C API (raw `OrtValue`s), not `ort`'s typed
//! wrappers: that lets every element type ORT knows (float8, int4, int2 …) pass as raw bytes,
//! keeps byte strings that are not UTF-8 intact, and reads absent optional outputs, which `ort`
//! rc.15 cannot wrap without panicking.

mod capture;
mod convert;
mod declared;
mod env;
mod error;
mod ffi;
mod large_model;
mod locate;
mod session;
mod timing;

pub use capture::{capturable_names, capture, expose_outputs};
pub use convert::{data_type_from_ort, data_type_to_ort};
pub use declared::declared_inputs;
pub use env::{environment, library_path};
pub use error::RuntimeError;
pub use locate::{
    cache_dir, library_file_name, locate_library, locate_with, SearchEnv, ORT_VERSION,
};
pub use session::{Dim, IoInfo, IoKind, Optimization, Session, SessionOptions};
pub use timing::{nearest_rank, peak_rss_bytes, LatencyStats};

// Tensor bytes are copied between Kiln's little-endian `raw_data` layout and ORT's native
// buffers without swapping; that is only right on a little-endian machine.
#[cfg(not(target_endian = "little"))]
compile_error!(
    "kiln-backends' ONNX Runtime bridge copies tensor bytes raw and needs a little-endian target"
);

#[cfg(test)]
mod tests;
