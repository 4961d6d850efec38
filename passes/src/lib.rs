//! Kiln's graph IR, tensors, and the passes that rewrite graphs.

pub mod infer;
pub mod ir;
pub mod pipeline;
pub mod tensor;
