//! Which MatMul/Gemm nodes are the LM head: those whose output reaches a graph output through
//! nothing that computes (reshapes, transposes, casts, identities, or the Add of a constant
//! bias). In a decoder that is the projection to the vocabulary, the layer most sensitive to
//! weight error, which users often keep in float.

use std::collections::BTreeSet;

use crate::ir::{Graph, NodeIndex};

/// Ops that only move or retype values, so a MatMul behind them still produces the output.
const PASS_THROUGH: [&str; 7] = [
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Identity",
    "Cast",
];

/// The MatMul/Gemm nodes of `graph` that produce a graph output (see the module doc).
pub(super) fn lm_heads(graph: &Graph) -> BTreeSet<NodeIndex> {
    let mut heads = BTreeSet::new();
    for out in &graph.outputs {
        let mut v = out.value;
        // Bounded: each step moves to a producer, and the graph is acyclic.
        for _ in 0..=graph.node_count() {
            let Some(node) = graph.node(v.node) else {
                break;
            };
            if !node.is_operator() || !matches!(node.domain(), "" | "ai.onnx") {
                break;
            }
            let op = node.op_type();
            if op == "MatMul" || op == "Gemm" {
                heads.insert(v.node);
                break;
            }
            let next = if PASS_THROUGH.contains(&op) {
                graph.input(v.node, 0)
            } else if op == "Add" {
                // Follow the one computed operand when the other is a constant (a bias).
                match (graph.input(v.node, 0), graph.input(v.node, 1)) {
                    (Some(a), Some(b)) if graph.constant(b).is_some() => Some(a),
                    (Some(a), Some(b)) if graph.constant(a).is_some() => Some(b),
                    _ => None,
                }
            } else {
                None
            };
            match next {
                Some(n) => v = n,
                None => break,
            }
        }
    }
    heads
}
