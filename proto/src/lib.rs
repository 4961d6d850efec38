//! ONNX protobuf types and model load/save for Kiln.
//!
//! The message types are generated at build time from `onnx.proto` (field numbers are the
//! ONNX wire format). Bytes fields are `bytes::Bytes`, so decoding from a memory-mapped file
//! and resolving external data never copies tensor payloads.

/// Generated ONNX protobuf messages.
#[allow(clippy::all, missing_docs)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
