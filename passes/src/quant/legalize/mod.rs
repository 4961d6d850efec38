//! Legalizing models that arrive already quantized (QAT exports with Q/DQ pairs, ONNX
//! Runtime's QDQ and QOperator output, its dynamic integer form) for a target. Their scales
//! are kept: each step changes only what the target cannot take, and says what it changed.
//!
//! The steps, each its own module:
//! - [`expand_qoperator`]: `QLinearConv`, `QLinearMatMul`, `QGemm`, `QLinearAdd`, … become
//!   `DequantizeLinear` → float op → `QuantizeLinear` with the same scales (the QDQ form every
//!   target here takes; the arithmetic is the op's definition).
//! - [`fold_weight_quantize`]: a `QuantizeLinear` of a float constant (how QAT exports store
//!   weights) becomes the integer constant it computes.
//! - [`fold_qat_batchnorm`]: PyTorch's QAT Conv → Div → BatchNormalization, where the two
//!   scales cancel, becomes the Conv with a bias.
//! - [`drop_redundant_relu`]: a Relu/Clip right before a `QuantizeLinear` that clamps to the
//!   same range is dropped.
//! - [`standard_domain`]: `com.microsoft` Q/DQ (16-bit types before opset 21) become standard
//!   ones for the other steps; [`settle_domain`] writes the domain the target asks for at the
//!   end (raising the opset to 21 for standard 16-bit Q/DQ).
//! - [`scalar_params`]: one-element 1-D scales and zero points (PyTorch's export) become
//!   scalars.
//! - [`integer_to_float_ops`]: the dynamic form (`DynamicQuantizeLinear` → `MatMulInteger` /
//!   `ConvInteger` → `Cast` → `Mul`) becomes the float op on a dequantized integer weight.
//! - [`dequantize_weights`]: integer weights behind a `DequantizeLinear` become float constants.
//! - [`shift_activations`]: int8 activations become uint8 (or back) by moving zero points 128.
//! - [`weights_per_tensor`]: per-channel weights become per-tensor for ops the target needs so.
//!
//! Only the main graph is rewritten; If/Loop bodies are left as they are.

mod cluster;
mod domain;
mod edit;
mod fold_quantize;
mod integer_ops;
mod per_tensor;
mod qat_batchnorm;
mod qoperator;
mod redundant_relu;
mod scalar_params;
mod shift;
mod to_float;

#[cfg(test)]
mod tests;

pub use domain::{settle_domain, standard_domain};
pub use fold_quantize::fold_weight_quantize;
pub use integer_ops::integer_to_float_ops;
pub use per_tensor::weights_per_tensor;
pub use qat_batchnorm::fold_qat_batchnorm;
pub use qoperator::expand_qoperator;
pub use redundant_relu::drop_redundant_relu;
pub use scalar_params::scalar_params;
pub use shift::shift_activations;
pub use to_float::dequantize_weights;

/// What one legalization step did: a line per kind of change (for the report) and what it
/// left alone, with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// How many nodes or tensors the step rewrote.
    pub changed: usize,
    /// One line per kind of change.
    pub notes: Vec<String>,
    /// What the step could not rewrite, with why (one line each).
    pub kept: Vec<String>,
}

impl Outcome {
    /// Appends another step's outcome.
    pub fn merge(&mut self, other: Outcome) {
        self.changed += other.changed;
        self.notes.extend(other.notes);
        self.kept.extend(other.kept);
    }
}
