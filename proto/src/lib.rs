//! ONNX protobuf types and model load/save for Kiln.
//!
//! The message types are generated at build time from `onnx.proto` (field numbers are the
//! ONNX wire format). Bytes fields are `bytes::Bytes`, so decoding from a memory-mapped file
//! and resolving external data never copies tensor payloads.
//!
//! - [`load_model`] maps a model file, decodes it and resolves external data (locations are
//!   confined to the model's folder) into zero-copy slices of mapped files.
//! - [`save_model`] / [`save_loaded`] write atomically, embedded or with an external data file;
//!   `save_loaded` copies unchanged weights file to file in the kernel.
//! - [`walk`] visits every tensor of a model, wherever it sits.
//! - [`release_pages`] gives back the memory of mapped weights a pass has read.

#![warn(missing_docs)]

mod atomic;
mod error;
mod external;
pub mod limits;
mod load;
mod pages;
mod save;
#[cfg(test)]
mod tests;
pub mod walk;

/// Generated ONNX protobuf messages.
#[allow(clippy::all, missing_docs)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use atomic::{remove_if_abandoned, write_file};
pub use error::{ExternalDataError, ProtoError};
pub use external::{check_location, ExternalFile, MappedFiles};
pub use limits::Limits;
pub use load::{decode_model, load_model, LoadedModel};
pub use pages::release_pages;
pub use save::{
    encode_model, save_loaded, save_model, save_model_with_sources, ExternalData, SaveOptions,
    SaveSummary, DEFAULT_SIZE_THRESHOLD, PROTOBUF_LIMIT,
};
pub use walk::{
    for_each_tensor, for_each_tensor_mut, try_for_each_tensor, try_for_each_tensor_mut, TensorSite,
};
