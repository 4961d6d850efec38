//! Shape and type inference for the standard ONNX operators that CNN and transformer
//! exports use.
//!
//! [`InferShapes`] walks each graph in topological order; each operator's rule
//! ([`registry`]) computes its output types from its inputs' types, attributes and constant
//! inputs, and shape arithmetic (`Shape → Gather → Concat → Reshape`) is followed on values
//! ([`symbolic`]) so named dims such as `batch` and `seq` reach the reshaped tensors. What is
//! inferred is merged into what the model declares — the declaration always wins, an unknown
//! declared dim may be refined — and written to each value's `ValueInfo` (graph outputs: to
//! their declared type). Operators without a rule, and other domains, leave their outputs as
//! declared; If, Loop and Scan bodies are inferred with what the owner knows of their inputs.

mod broadcast;
mod control_flow;
mod conv_pool;
mod ctx;
mod dims;
mod driver;
mod elementwise;
mod gather_slice;
mod matmul;
mod normalization;
mod quant;
mod reduce;
pub mod registry;
mod resize;
mod sequence;
mod shape_ops;
mod symbolic;
mod ty;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use crate::ir::Model;
use crate::pipeline::{Changes, Pass, PassError};

pub use ty::{merge, Merged, TensorTy, Ty};

/// Infers element types and shapes of every operator output.
///
/// Changes: `typed` (values that gained an element type), `shaped` (values whose shape
/// became more known), `conflicts` (values whose declared type disagrees with inference;
/// the declaration is kept).
#[derive(Debug, Clone, Copy, Default)]
pub struct InferShapes;

impl Pass for InferShapes {
    fn name(&self) -> &'static str {
        "infer-shapes"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        let opsets = model.opset_import.clone();
        driver::infer_graph(
            &mut model.graph,
            &driver::Opsets {
                imports: &opsets,
                listed_initializers_fixed: model.ir_version < 4,
            },
            &driver::Scope::new(),
            &[],
            &mut changes,
        );
        Ok(changes)
    }
}
