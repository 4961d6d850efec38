//! `fused_activation: false`: an op the device runs only without a fused activation.
//!
//! The decision: such a node stays on the device and the report says its activation is a
//! separate op; it does not fall back. Coral's op table lists AveragePool2d, MaxPool2d and
//! Concatenation as supported with "No fused activation function": the limit is on the fused
//! form, not on the op. A converter that targets the TPU leaves the activation as its own op
//! (Relu, Relu6 and ReluN1To1 are on the same table), which costs one more TPU op, not a CPU
//! segment; failing the pool over to the CPU would report a split the Edge TPU compiler does
//! not make.
//!
//! The fusion is read from the `note-activations` mark (`kiln.fused_activation`), which that
//! pass sets on Conv, ConvTranspose, Gemm and MatMul only: with the built-in profiles (whose
//! limit is on pools and Concat) nothing is reported; a profile that puts the limit on one of
//! those four ops is.

use kiln_passes::fuse::{FUSED_ACTIVATION_KEY, FUSED_ACTIVATION_OUTPUT_KEY};
use kiln_passes::ir::{Graph, NodeIndex};

use super::{label, SeparateActivation};
use crate::profile::OpConstraints;

/// The activation noted on `n` that its op may not fuse on this device, if any.
pub(super) fn separate_activation(
    g: &Graph,
    n: NodeIndex,
    c: &OpConstraints,
) -> Option<SeparateActivation> {
    if c.fused_activation != Some(false) {
        return None;
    }
    let node = &g[n];
    let mark = |key: &str| {
        node.metadata_props
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.clone())
    };
    let activation = mark(FUSED_ACTIVATION_KEY)?;
    let op = node.op_type();
    let act = mark(FUSED_ACTIVATION_OUTPUT_KEY)
        .and_then(|name| g.find_value(&name))
        .filter(|v| g[v.node].is_operator())
        .map(|v| v.node);
    let detail = match act {
        Some(a) => format!(
            "{op} may not fuse {activation} here: it stays a separate op ('{}', {})",
            label(g, a),
            g[a].op_type()
        ),
        None => format!(
            "{op} may not fuse {activation} here; the activation is no longer in the graph (its \
             clamp is the output quantizer's range), so there is no separate op to run"
        ),
    };
    Some(SeparateActivation {
        node: label(g, n),
        op_type: op.to_string(),
        activation,
        detail,
    })
}
