//! Small questions the cleanup passes share.

use crate::ir::{Dim, Graph, Node, NodeKind, ValueRef};
use crate::pipeline::{Changes, PassError};
use crate::tensor::DataType;

/// True for operators of the default ONNX domain.
pub(crate) fn is_onnx_op(node: &Node, op: &str) -> bool {
    matches!(&node.kind, NodeKind::Op { op_type, domain, .. }
        if op_type == op && (domain.is_empty() || domain == "ai.onnx"))
}

/// True when `value` is one of the graph's outputs.
pub(crate) fn is_graph_output(graph: &Graph, value: ValueRef) -> bool {
    graph.outputs.iter().any(|o| o.value == value)
}

/// The shape of `value`: a constant's own shape, else its declared shape.
pub(crate) fn shape_of(graph: &Graph, value: ValueRef) -> Option<Vec<Dim>> {
    if let Some(t) = graph.constant(value) {
        return Some(t.shape().iter().map(|&d| Dim::Known(d as i64)).collect());
    }
    graph.node(value.node)?.outputs.get(value.slot)?.shape()
}

/// The element type of `value`: a constant's own type, else its declared type.
pub(crate) fn elem_type_of(graph: &Graph, value: ValueRef) -> Option<DataType> {
    if let Some(t) = graph.constant(value) {
        return Some(t.dtype());
    }
    graph.node(value.node)?.outputs.get(value.slot)?.elem_type()
}

/// A constant input read as int64 values (any integer constant of rank ≤ 1).
pub(crate) fn const_ints(
    graph: &Graph,
    node: crate::ir::NodeIndex,
    slot: usize,
) -> Option<Vec<i64>> {
    let t = graph.constant_input(node, slot)?;
    if t.shape().len() > 1 {
        return None;
    }
    match t.dtype() {
        DataType::Int64 => t.to_vec::<i64>().ok(),
        DataType::Int32 => t
            .to_vec::<i32>()
            .ok()
            .map(|v| v.into_iter().map(i64::from).collect()),
        _ => None,
    }
}

/// Runs `f` on `graph` and on every subgraph below it, innermost first, merging changes.
pub(crate) fn each_graph(
    graph: &mut Graph,
    f: &mut dyn FnMut(&mut Graph) -> Result<Changes, PassError>,
) -> Result<Changes, PassError> {
    let mut changes = Changes::none();
    graph.try_for_each_graph_mut::<PassError>(&mut |g| {
        changes.merge(&f(g)?);
        Ok(())
    })?;
    Ok(changes)
}
