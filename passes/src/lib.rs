//! Kiln's graph IR, tensors, and the passes that rewrite graphs.

pub mod cleanup;
pub mod eval;
pub mod fold;
pub mod fuse;
pub mod infer;
pub mod ir;
pub mod opset;
pub mod optimize;
pub mod pipeline;
pub mod precision;
pub mod quant;
pub mod tensor;
