//! An activation's quantized tensor, from its `QuantizeLinear` through the ops that only move
//! integers (`Reshape`, `MaxPool`, … as QOperator models keep them) to every
//! `DequantizeLinear` that reads it. Changing the tensor's integer type (a zero-point shift)
//! must treat all of these together.

use std::collections::BTreeSet;

use crate::ir::{Graph, InputSlot, NodeIndex, ValueRef};

use super::edit;

/// Ops that read integers at input 0 and write the same integers rearranged (or a maximum of
/// them): correct for any integer type, so a shift of the zero point around them keeps their
/// meaning.
const MOVES: &[&str] = &[
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Identity",
    "MaxPool",
    "Slice",
    "Gather",
    "Split",
    "DepthToSpace",
    "SpaceToDepth",
    "Expand",
    "Tile",
];

/// One quantized activation tensor.
#[derive(Debug, Clone)]
pub(super) struct Cluster {
    /// Its `QuantizeLinear`.
    pub q: NodeIndex,
    /// Integer-moving ops between it and the dequantizations, in visit order.
    pub moves: Vec<NodeIndex>,
    /// The `DequantizeLinear` nodes that read it.
    pub dqs: Vec<NodeIndex>,
}

/// Every activation `QuantizeLinear` of the main graph (its input is not a constant) and what
/// reads its integers; a tensor read by anything else comes back as `Err` with why.
pub(super) fn activation_clusters(g: &Graph) -> Vec<Result<Cluster, (NodeIndex, String)>> {
    g.topo_order()
        .into_iter()
        .filter(|&n| edit::is(g, n, "QuantizeLinear"))
        .filter(|&n| g.input(n, 0).is_some_and(|x| g.constant(x).is_none()))
        .map(|q| trace(g, q).map_err(|why| (q, why)))
        .collect()
}

fn trace(g: &Graph, q: NodeIndex) -> Result<Cluster, String> {
    let mut moves = Vec::new();
    let mut dqs = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![ValueRef::new(q, 0)];
    while let Some(v) = todo.pop() {
        if g.outputs.iter().any(|o| o.value == v) {
            return Err(format!("'{}' is a graph output", g.value_name(v)));
        }
        for (c, slot) in g.consumers(v) {
            if !seen.insert(c) {
                continue;
            }
            let op = g[c].op_type();
            match slot {
                InputSlot::Operand(0) if edit::is(g, c, "DequantizeLinear") => dqs.push(c),
                InputSlot::Operand(0) if g[c].domain().is_empty() && MOVES.contains(&op) => {
                    moves.push(c);
                    todo.extend((0..g[c].outputs.len()).map(|s| ValueRef::new(c, s)));
                }
                _ => {
                    return Err(format!(
                        "its integers are read by {} ({op})",
                        g[c].label(c.index())
                    ))
                }
            }
        }
    }
    Ok(Cluster { q, moves, dqs })
}
