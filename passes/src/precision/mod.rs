//! Precision pinning: named op types computed in float16 or bfloat16 instead of being
//! quantized, and the removal of the Cast pairs that pinning leaves between pinned ops.
//!
//! [`PinPrecision`] rewrites each pinned node to `Cast(low) → op → Cast(float32)`; for op
//! types a runtime has no low-float kernel for, it writes the *simulated twin* instead: the
//! op stays in float32 between rounding casts (`float32 → low → float32`), so the numbers
//! are those of a low-float kernel that computes internally in float32. [`CancelCasts`]
//! then removes `Cast(float32) → Cast(low)` pairs between pinned ops, so a chain such as
//! LayerNormalization → Softmax stays in the low float. [`ort_cpu_lacks_kernel`] says which
//! op types need the twin on ONNX Runtime's CPU provider (measured, see [`ort_kernels`]).
//! Naming a fused RMSNorm op (`RMSNormalization`, `SimplifiedLayerNormalization`) also pins
//! every RMSNorm left decomposed, as one unit (see [`units`]).

mod cancel_casts;
mod convert_constants;
pub mod ort_kernels;
mod pin;
mod select;
mod types;
pub mod units;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use crate::infer::InferShapes;
use crate::ir::Model;
use crate::pipeline::{Changes, Pass, PassError};
use crate::quant::PinFloat;
use crate::tensor::DataType;

pub use cancel_casts::CancelCasts;
pub use ort_kernels::ort_cpu_lacks_kernel;
pub use units::{pins_rmsnorm, unit_nodes, RMSNORM_OPS, UNIT_KEY};

/// Computes the named op types in a 16-bit float: Cast in, op in the low-precision float, Cast out.
///
/// Per pinned node: every float32 data input gets a Cast to the low float (one Cast per
/// tensor, shared by every pinned reader), float32 constant inputs are replaced by converted
/// constants (the original stays while other readers use it), float32 tensor attributes are
/// converted, and the output gets a Cast back to float32 that takes over the output's name,
/// so readers, graph outputs and calibration ranges keyed by name are unchanged. Op types in
/// `simulate` get the simulated twin instead (see the module documentation).
///
/// Every read float32 output gets its Cast back (unread ones just change type); outputs ONNX
/// types apart from T stay as they are — LayerNormalization's Mean and InvStdDev are of
/// `stash_type` (float32), which is kept. Nodes inside If/Loop/Scan bodies are pinned too.
/// A node is left alone, with the reason recorded in [`PinReport::skipped`], when its output
/// is not float32 (already low, or not a float), a type it depends on is unknown, a constant
/// or tensor attribute would overflow the low float, or the model's opset cannot express
/// bfloat16 (Cast-13). The pass runs shape inference first, so it works on a freshly loaded
/// model. Run [`CancelCasts`] after it.
///
/// When `ops` names `RMSNormalization` or `SimplifiedLayerNormalization`, every decomposed
/// RMSNorm is pinned as a unit first (input, weight and output rounded to the low float,
/// float32 inside; see [`units`]), and its nodes are then left alone by the op-type pinning.
///
/// Changes: `pinned` (nodes now computed in the low float), `simulated` (twins),
/// `rmsnorm units`, `input casts`, `output casts`, `constants converted`,
/// `attributes converted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPrecision {
    /// Op types (default ONNX domain) to pin.
    pub ops: BTreeSet<String>,
    /// The float type pinned ops compute in.
    pub float: PinFloat,
    /// Op types the runtime has no kernel for in this float type: computed in float32 between
    /// rounding casts (f32 → low → f32 on inputs and outputs), the "simulated twin".
    pub simulate: BTreeSet<String>,
}

impl PinPrecision {
    /// Pins `ops` to `float`, simulating those ONNX Runtime's CPU provider cannot run in it.
    pub fn for_ort_cpu(ops: BTreeSet<String>, float: PinFloat) -> PinPrecision {
        let simulate = ops
            .iter()
            .filter(|op| ort_cpu_lacks_kernel(op, float))
            .cloned()
            .collect();
        PinPrecision {
            ops,
            float,
            simulate,
        }
    }

    /// Pins the model and reports what was pinned and what was left alone, and why.
    pub fn pin(&self, model: &mut Model) -> Result<PinReport, PassError> {
        let mut report = PinReport::default();
        if self.ops.is_empty() {
            return Ok(report);
        }
        // Types decide what is float32; inference fills them where the file left them out.
        InferShapes.run(model)?;
        let blocked = opset_blocks(model, self.float);
        let mut names = crate::ir::NameSet::of(&model.graph);
        pin::pin_all(
            &mut model.graph,
            &pin::OuterTypes::new(),
            self,
            blocked.as_deref(),
            &mut names,
            &mut report,
        )?;
        Ok(report)
    }
}

impl Pass for PinPrecision {
    fn name(&self) -> &'static str {
        "pin-precision"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        Ok(self.pin(model)?.changes)
    }
}

/// What [`PinPrecision`] did to a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PinReport {
    /// The pass's counts (what [`Pass::run`] returns).
    pub changes: Changes,
    /// Nodes now computed in the low float, or simulated.
    pub pinned: Vec<PinnedNode>,
    /// Nodes of a pinned op type left as they were, with the reason.
    pub skipped: Vec<SkippedNode>,
}

/// One pinned node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedNode {
    /// The graph holding it (the main graph's name, or a body's).
    pub graph: String,
    /// The node's name (`#index` when it has none).
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// True for a simulated twin (computed in float32 between rounding casts).
    pub simulated: bool,
}

/// One node of a pinned op type that was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedNode {
    /// The graph holding it.
    pub graph: String,
    /// The node's name (`#index` when it has none).
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// Why it was left alone.
    pub reason: String,
}

/// The element type of a pin float.
pub fn low_dtype(float: PinFloat) -> DataType {
    match float {
        PinFloat::Float16 => DataType::Float16,
        PinFloat::Bfloat16 => DataType::Bfloat16,
    }
}

/// Why no node of this model can be pinned to `float`, if none can: bfloat16 Casts (and
/// bfloat16 in most ops) arrived with opset 13.
fn opset_blocks(model: &Model, float: PinFloat) -> Option<String> {
    let opset = model.opset("").unwrap_or(1);
    (float == PinFloat::Bfloat16 && opset < 13)
        .then(|| format!("bfloat16 needs opset 13 (Cast-13); the model imports opset {opset}"))
}
