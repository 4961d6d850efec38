//! `cancel-transposes`: a Transpose of a Transpose becomes one Transpose, or none.

use crate::ir::{AttrValue, Attribute, Graph, InputSlot, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};

use super::bypass::bypass;
use super::util::{each_graph, is_graph_output, is_onnx_op, shape_of};

/// Composes `Transpose(Transpose(x, p1), p2)` into `Transpose(x, p1∘p2)` when the inner
/// Transpose has no other reader, and drops the result when it is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct CancelTransposes;

impl Pass for CancelTransposes {
    fn name(&self) -> &'static str {
        "cancel-transposes"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        each_graph(&mut model.graph, &mut |g| Ok(cancel_in(g)))
    }
}

fn cancel_in(graph: &mut Graph) -> Changes {
    let mut changes = Changes::none();
    for outer in graph.topo_order() {
        let Some((inner, x, perm)) = composable(graph, outer) else {
            continue;
        };
        graph.connect(x, outer, 0);
        set_perm(graph, outer, &perm);
        graph.remove_node(inner);
        changes.add("merged", 1);
        let identity = perm.iter().enumerate().all(|(i, &p)| p == i as i64);
        if identity && bypass(graph, outer, 0, x) {
            changes.add("cancelled", 1);
        }
    }
    changes
}

/// For an outer Transpose fed only-by-it by an inner one: (inner, x, composed perm).
fn composable(graph: &Graph, outer: NodeIndex) -> Option<(NodeIndex, ValueRef, Vec<i64>)> {
    let node = graph.node(outer)?;
    if !is_onnx_op(node, "Transpose") {
        return None;
    }
    let mid = graph.input(outer, 0)?;
    let inner_node = graph.node(mid.node)?;
    if !is_onnx_op(inner_node, "Transpose") || mid.slot != 0 {
        return None;
    }
    if graph.consumers(mid) != vec![(outer, InputSlot::Operand(0))] || is_graph_output(graph, mid) {
        return None;
    }
    let x = graph.input(mid.node, 0)?;
    let rank = shape_of(graph, x).map(|s| s.len());
    let p1 = perm_of(graph, mid.node, rank)?;
    let p2 = perm_of(graph, outer, Some(p1.len()))?;
    if p1.len() != p2.len() {
        return None;
    }
    // out[i] = mid[p2[i]] = x[p1[p2[i]]]
    let composed = p2.iter().map(|&j| p1[j as usize]).collect();
    Some((mid.node, x, composed))
}

/// A node's permutation, checked to be one; without `perm`, the reversal at `rank`.
fn perm_of(graph: &Graph, node: NodeIndex, rank: Option<usize>) -> Option<Vec<i64>> {
    let perm: Vec<i64> = match graph.node(node)?.attr("perm") {
        Some(a) => a.as_ints()?.to_vec(),
        None => (0..rank? as i64).rev().collect(),
    };
    let mut seen = vec![false; perm.len()];
    for &p in &perm {
        let slot = seen.get_mut(usize::try_from(p).ok()?)?;
        if *slot {
            return None;
        }
        *slot = true;
    }
    Some(perm)
}

fn set_perm(graph: &mut Graph, node: NodeIndex, perm: &[i64]) {
    let Some(node) = graph.node_mut(node) else {
        return;
    };
    node.attributes.retain(|a| a.name != "perm");
    node.attributes
        .push(Attribute::new("perm", AttrValue::Ints(perm.to_vec())));
}
