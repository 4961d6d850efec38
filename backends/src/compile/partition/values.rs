//! What the partition rules ask of a value: its shape and element type (from inference, a
//! constant, or the graph output's declaration), whether it is a parameter, and which operator
//! produced it once Q/DQ nodes are looked through.

use kiln_passes::ir::{Dim, Graph, NodeIndex, ValueRef};
use kiln_passes::tensor::DataType;

/// QuantizeLinear or DequantizeLinear (either domain): the partition looks through them.
pub(super) fn is_qdq(g: &Graph, n: NodeIndex) -> bool {
    matches!(g[n].op_type(), "QuantizeLinear" | "DequantizeLinear")
}

/// The operator that produces `v`, looking through Q/DQ nodes (`None` for inputs and
/// constants, or a chain too long to be a quantizer's).
pub(super) fn through_qdq(g: &Graph, mut v: ValueRef) -> Option<NodeIndex> {
    for _ in 0..8 {
        if !g[v.node].is_operator() {
            return None;
        }
        if !is_qdq(g, v.node) {
            return Some(v.node);
        }
        v = g.input(v.node, 0)?;
    }
    None
}

/// The declared shape of `v`: a constant's, the inferred one, or the graph output's
/// declaration (inference leaves a graph output's own type there).
pub(super) fn dims(g: &Graph, v: ValueRef) -> Option<Vec<Dim>> {
    if let Some(t) = g.constant(v) {
        return Some(t.shape().iter().map(|&d| Dim::Known(d as i64)).collect());
    }
    g.value_info(v).shape().or_else(|| {
        g.outputs
            .iter()
            .find(|o| o.value == v)
            .and_then(|o| o.info.shape())
    })
}

/// The shape of `v` when every dim is known.
pub(super) fn known_dims(g: &Graph, v: ValueRef) -> Option<Vec<i64>> {
    dims(g, v).and_then(|d| known(&d))
}

/// The shape of a parameter: a constant's, or the constant's behind a DequantizeLinear (whose
/// output inference may not have typed); else whatever [`known_dims`] finds.
pub(super) fn param_dims(g: &Graph, v: ValueRef) -> Option<Vec<i64>> {
    if g[v.node].op_type() == "DequantizeLinear" {
        if let Some(t) = g.input(v.node, 0).and_then(|w| g.constant(w)) {
            return Some(t.dims());
        }
    }
    known_dims(g, v)
}

/// Every dim as a number, or `None` when one is symbolic or unknown.
pub(super) fn known(d: &[Dim]) -> Option<Vec<i64>> {
    d.iter()
        .map(|d| match d {
            Dim::Known(k) => Some(*k),
            _ => None,
        })
        .collect()
}

/// The element type of `v`, from inference or the graph output's declaration.
pub(super) fn elem_type(g: &Graph, v: ValueRef) -> Option<DataType> {
    g.value_info(v).elem_type().or_else(|| {
        g.outputs
            .iter()
            .find(|o| o.value == v)
            .and_then(|o| o.info.elem_type())
    })
}

/// A float element type (the value is not quantized).
pub(super) fn is_float(t: Option<DataType>) -> bool {
    matches!(
        t,
        Some(DataType::Float | DataType::Float16 | DataType::Bfloat16 | DataType::Double)
    )
}

/// The data values a node reads and writes (absent optional inputs skipped).
pub(super) fn tensors(g: &Graph, n: NodeIndex) -> Vec<ValueRef> {
    let mut v: Vec<ValueRef> = g.inputs(n).into_iter().flatten().collect();
    v.extend((0..g[n].outputs.len()).map(|s| ValueRef::new(n, s)));
    v
}

/// A constant, or a constant's `DequantizeLinear` (a quantized weight or bias).
pub(super) fn is_parameter(g: &Graph, v: ValueRef) -> bool {
    g.constant(v).is_some()
        || (g[v.node].op_type() == "DequantizeLinear"
            && g.input(v.node, 0).is_some_and(|w| g.constant(w).is_some()))
}
