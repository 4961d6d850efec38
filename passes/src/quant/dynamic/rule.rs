//! What every rule checks before it touches the graph: the activation input and the
//! constant weight, and the ways a node is left alone.

use crate::ir::{NodeIndex, ValueRef};
use crate::tensor::{DataType, Tensor};

use super::rewrite::Rewriter;

/// Why a node is not rewritten.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Skip {
    /// Left in float for a reason the report gives.
    Reason(String),
    /// Not a quantization candidate at all (a Gather of computed data): not reported.
    NotApplicable,
}

impl From<String> for Skip {
    fn from(s: String) -> Skip {
        Skip::Reason(s)
    }
}

/// The value at input `slot` of `node`, which the rule quantizes at run time: present, not
/// a constant, and float32 when its type is known.
pub(super) fn activation_input(
    rw: &Rewriter,
    node: NodeIndex,
    slot: usize,
    what: &str,
) -> Result<ValueRef, Skip> {
    let v = rw
        .graph
        .input(node, slot)
        .ok_or_else(|| Skip::Reason(format!("input {what} is missing")))?;
    if rw.graph.constant(v).is_some() {
        return Err(Skip::Reason(format!(
            "input {what} is a constant too (fold the node first)"
        )));
    }
    match rw.graph.value_info(v).elem_type() {
        None | Some(DataType::Float) => Ok(v),
        Some(d) => Err(Skip::Reason(format!(
            "input {what} is {}: DynamicQuantizeLinear takes float32 only",
            d.name()
        ))),
    }
}

/// The constant at input `slot` of `node` (an initializer or a `Constant` node) and its
/// tensor (a cheap clone: the bytes are shared).
pub(super) fn constant_weight(
    rw: &Rewriter,
    node: NodeIndex,
    slot: usize,
    what: &str,
) -> Result<(ValueRef, Tensor), Skip> {
    let v = rw
        .graph
        .input(node, slot)
        .ok_or_else(|| Skip::Reason(format!("input {what} is missing")))?;
    match rw.graph.constant(v) {
        Some(t) => Ok((v, t.clone())),
        None => Err(Skip::Reason(not_constant(rw, v, what))),
    }
}

/// Why the value feeding a weight slot is not a constant the rule can quantize.
fn not_constant(rw: &Rewriter, v: ValueRef, what: &str) -> String {
    use crate::ir::NodeKind;
    match rw.graph.node(v.node).map(|n| &n.kind) {
        Some(NodeKind::Constant { .. }) => {
            format!("{what} is an initializer listed as a graph input (a caller may override it)")
        }
        Some(NodeKind::Outer) => format!(
            "{what} is read from an enclosing graph (only weights local to the body are quantized)"
        ),
        Some(NodeKind::Input) => format!("{what} is a graph input, not a constant"),
        _ => format!("{what} is computed, not a constant (only constant weights are quantized)"),
    }
}
