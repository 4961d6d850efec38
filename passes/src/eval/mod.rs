//! Kiln's constant evaluator: computes an ONNX operator on constant tensors with ndarray.
//!
//! [`evaluate`] answers `Ok(None)` for an operator (or element type, or form of an operator)
//! it does not implement — that is not an error, the caller leaves the node alone. Errors
//! are for inputs that break the operator's contract (the model would fail in ONNX Runtime
//! too) and for results over the size cap. Arithmetic runs in the tensor's own type with
//! ONNX Runtime's semantics, so integer and shape arithmetic match it bit for bit.

mod array;
mod cast;
mod context;
mod elementwise;
mod linalg;
mod movement;
mod reduce;
mod scalar;
mod shape_ops;

#[cfg(test)]
mod tests;

use thiserror::Error;

use crate::ir::Attribute;
use crate::tensor::{Tensor, TensorError, MAX_ELEMENTS};

pub(crate) use context::Ctx;
pub use shape_ops::shape_range;

/// Why an operator could not be evaluated on the given constants.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EvalError {
    /// The inputs or attributes break the operator's contract.
    #[error("{0}")]
    Invalid(String),
    /// The result would hold more elements than allowed.
    #[error("result of {elements} elements is over the limit of {limit}")]
    TooLarge {
        /// Elements the result would hold.
        elements: u128,
        /// The limit.
        limit: usize,
    },
    /// A tensor could not be read or built.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Limits and facts about the node beyond its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// Refuse (with [`EvalError::TooLarge`]) any result, or intermediate, over this many elements.
    pub max_elements: usize,
    /// How many outputs the node declares (`Split` without sizes divides by it).
    pub num_outputs: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> EvalOptions {
        EvalOptions {
            max_elements: MAX_ELEMENTS as usize,
            num_outputs: None,
        }
    }
}

/// Evaluates one operator on constant inputs (`None` entries are absent optional inputs).
///
/// `Ok(None)`: the evaluator does not support this operator, domain, form or element type.
pub fn evaluate(
    op_type: &str,
    domain: &str,
    opset: i64,
    attrs: &[Attribute],
    inputs: &[Option<&Tensor>],
) -> Result<Option<Vec<Tensor>>, EvalError> {
    evaluate_with(
        op_type,
        domain,
        opset,
        attrs,
        inputs,
        EvalOptions::default(),
    )
}

/// [`evaluate`] with a size cap and the node's output count.
pub fn evaluate_with(
    op_type: &str,
    domain: &str,
    opset: i64,
    attrs: &[Attribute],
    inputs: &[Option<&Tensor>],
    options: EvalOptions,
) -> Result<Option<Vec<Tensor>>, EvalError> {
    if !(domain.is_empty() || domain == "ai.onnx") {
        return Ok(None);
    }
    let ctx = Ctx {
        op: op_type,
        opset,
        attrs,
        inputs,
        options,
    };
    dispatch(&ctx)
}

/// What a kernel returns.
pub(crate) type Out = Result<Option<Vec<Tensor>>, EvalError>;

/// Every operator [`evaluate`] implements (in some form) in the default domain.
pub fn supported_ops() -> Vec<&'static str> {
    let mut ops: Vec<&'static str> = elementwise::OPS.concat();
    for family in [
        shape_ops::OPS,
        movement::OPS,
        cast::OPS,
        linalg::OPS,
        reduce::OPS,
    ] {
        ops.extend_from_slice(family);
    }
    ops
}

/// True when [`evaluate`] implements `op_type` (in some form) in the default domain.
pub fn is_supported(op_type: &str) -> bool {
    elementwise::supports(op_type)
        || shape_ops::supports(op_type)
        || movement::supports(op_type)
        || cast::supports(op_type)
        || linalg::supports(op_type)
        || reduce::supports(op_type)
}

fn dispatch(ctx: &Ctx) -> Out {
    let op = ctx.op;
    if elementwise::supports(op) {
        elementwise::eval(ctx)
    } else if shape_ops::supports(op) {
        shape_ops::eval(ctx)
    } else if movement::supports(op) {
        movement::eval(ctx)
    } else if cast::supports(op) {
        cast::eval(ctx)
    } else if linalg::supports(op) {
        linalg::eval(ctx)
    } else if reduce::supports(op) {
        reduce::eval(ctx)
    } else {
        Ok(None)
    }
}
