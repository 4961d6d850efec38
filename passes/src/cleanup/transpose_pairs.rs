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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::test_util::*;
    use crate::ir::{Node, ValueInfo};
    use crate::tensor::DataType;

    fn transpose(g: &mut Graph, x: ValueRef, perm: Option<&[i64]>, out: &str) -> ValueRef {
        let mut n = Node::op("Transpose", out, &[out]);
        if let Some(p) = perm {
            n = n.with_attr("perm", AttrValue::Ints(p.to_vec()));
        }
        op_node(g, n, &[x])
    }

    #[test]
    fn inverse_pair_cancels() {
        let mut m = Model::new(17);
        let x = typed_input(&mut m.graph, "x", DataType::Float, &[1, 2, 3, 4]);
        let a = transpose(&mut m.graph, x, Some(&[0, 2, 3, 1]), "a");
        let b = transpose(&mut m.graph, a, Some(&[0, 3, 1, 2]), "b");
        let r = op(&mut m.graph, "Relu", &[b], "r");
        output(&mut m.graph, r);
        let c = run(&CancelTransposes, &mut m);
        assert_eq!((c.get("merged"), c.get("cancelled")), (1, 1));
        assert_eq!(op_count(&m.graph, "Transpose"), 0);
        assert_eq!(m.graph.input(r.node, 0), Some(x));
    }

    #[test]
    fn chain_composes_into_one() {
        let mut m = Model::new(17);
        let x = typed_input(&mut m.graph, "x", DataType::Float, &[2, 3, 4]);
        let a = transpose(&mut m.graph, x, Some(&[1, 0, 2]), "a");
        let b = transpose(&mut m.graph, a, Some(&[0, 2, 1]), "b");
        // No perm: reversal, rank from the declared shape of the chain's input.
        let c = transpose(&mut m.graph, b, None, "c");
        output(&mut m.graph, c);
        let ch = run(&CancelTransposes, &mut m);
        assert_eq!(ch.get("merged"), 2);
        assert_eq!(op_count(&m.graph, "Transpose"), 1);
        // x[2,3,4] -[1,0,2]-> [3,2,4] -[0,2,1]-> [3,4,2] -rev-> [2,4,3] = x perm [0,2,1]
        let perm = m.graph[c.node]
            .attr("perm")
            .and_then(|a| a.as_ints())
            .map(<[i64]>::to_vec);
        assert_eq!(perm, Some(vec![0, 2, 1]));
        assert_eq!(m.graph.input(c.node, 0), Some(x));
        assert_eq!(output_names(&m), vec!["c"]);
    }

    #[test]
    fn shared_inner_transpose_stays_and_unknown_rank_is_skipped() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let a = transpose(&mut m.graph, x, Some(&[1, 0]), "a");
        let b = transpose(&mut m.graph, a, Some(&[1, 0]), "b");
        let n = op(&mut m.graph, "Neg", &[a], "n");
        output(&mut m.graph, b);
        output(&mut m.graph, n);
        assert!(run(&CancelTransposes, &mut m).is_empty());

        let mut m = Model::new(17);
        // Rank unknown: the default perm cannot be resolved.
        let y = input(&mut m.graph, "y");
        *m.graph.value_info_mut(y) = ValueInfo::new("y");
        let a = transpose(&mut m.graph, y, None, "a");
        let b = transpose(&mut m.graph, a, Some(&[1, 0]), "b");
        output(&mut m.graph, b);
        assert!(run(&CancelTransposes, &mut m).is_empty());
    }

    #[test]
    fn identity_result_feeding_output_from_input_keeps_one_transpose() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let a = transpose(&mut m.graph, x, Some(&[1, 0]), "a");
        let b = transpose(&mut m.graph, a, Some(&[1, 0]), "y");
        output(&mut m.graph, b);
        let c = run(&CancelTransposes, &mut m);
        assert_eq!((c.get("merged"), c.get("cancelled")), (1, 0));
        assert_eq!(op_count(&m.graph, "Transpose"), 1);
        assert_eq!(output_names(&m), vec!["y"]);
    }
}
