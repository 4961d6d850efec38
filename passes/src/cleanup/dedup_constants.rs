//! `dedup-constants`: identical constants share one producer.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::ir::{Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::{Tensor, TensorData};

use super::util::{each_graph, is_graph_output};

/// Merges constants of equal element type, shape and bytes into the first one (in
/// topological order), whose name stays. Initializers listed as graph inputs are not
/// constants and are never merged; a constant that is a graph output is never dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct DedupConstants;

impl Pass for DedupConstants {
    fn name(&self) -> &'static str {
        "dedup-constants"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        each_graph(&mut model.graph, &mut |g| Ok(dedup_in(g)))
    }
}

fn dedup_in(graph: &mut Graph) -> Changes {
    let mut changes = Changes::none();
    // Group by type and shape first so only possible twins are fingerprinted at all.
    let mut by_shape: HashMap<(i32, Vec<usize>), Vec<NodeIndex>> = HashMap::new();
    let mut order = Vec::new();
    for idx in graph.topo_order() {
        if let Some(t) = graph.constant(ValueRef::new(idx, 0)) {
            let key = (t.dtype().onnx(), t.shape().to_vec());
            let group = by_shape.entry(key.clone()).or_default();
            if group.is_empty() {
                order.push(key);
            }
            group.push(idx);
        }
    }
    for key in order {
        let group = &by_shape[&key];
        if group.len() < 2 {
            continue;
        }
        let mut kept: HashMap<u64, Vec<NodeIndex>> = HashMap::new();
        for &idx in group {
            let v = ValueRef::new(idx, 0);
            let Some(t) = graph.constant(v) else {
                continue;
            };
            let h = fingerprint(t);
            let twin = kept.get(&h).and_then(|ks| {
                ks.iter().copied().find(|&k| {
                    graph
                        .constant(ValueRef::new(k, 0))
                        .is_some_and(|other| same_data(other, t))
                })
            });
            match twin {
                Some(k) if !is_graph_output(graph, v) => {
                    graph.replace_all_uses(v, ValueRef::new(k, 0));
                    graph.remove_node(idx);
                    changes.add("merged", 1);
                }
                _ => kept.entry(h).or_default().push(idx),
            }
        }
    }
    changes
}

/// Bytes sampled at each of the start, middle and end of a tensor for its fingerprint.
const SAMPLE: usize = 4096;

/// A cheap fingerprint: the length and up to three 4 KiB windows of the data.
///
/// Weights of a transformer share shapes layer after layer; hashing every byte of them (and
/// paging in every mapped weight) made this pass the slowest of the pipeline. Distinct
/// weights differ within the sampled windows; equal fingerprints are confirmed byte for byte.
fn fingerprint(t: &Tensor) -> u64 {
    let mut h = DefaultHasher::new();
    match t.data() {
        TensorData::Raw(b) => {
            b.len().hash(&mut h);
            if b.len() <= 3 * SAMPLE {
                b.as_ref().hash(&mut h);
            } else {
                let mid = b.len() / 2 - SAMPLE / 2;
                for start in [0, mid, b.len() - SAMPLE] {
                    b[start..start + SAMPLE].hash(&mut h);
                }
            }
        }
        TensorData::Strings(s) => s.iter().for_each(|b| b.as_ref().hash(&mut h)),
    }
    h.finish()
}

/// Equal data: two views of the same bytes are equal without reading them.
fn same_data(a: &Tensor, b: &Tensor) -> bool {
    match (a.data(), b.data()) {
        (TensorData::Raw(x), TensorData::Raw(y))
            if x.as_ptr() == y.as_ptr() && x.len() == y.len() =>
        {
            a.dtype() == b.dtype() && a.shape() == b.shape()
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::test_util::*;
    use crate::ir::{ConstantAttr, ConstantOrigin, Node, NodeKind, TensorSource};

    fn constant_op(g: &mut Graph, name: &str, t: Tensor) -> ValueRef {
        let mut n = Node::initializer(name, t);
        if let NodeKind::Constant { origin, .. } = &mut n.kind {
            *origin = ConstantOrigin::ConstantOp {
                attr: ConstantAttr::Value,
                domain: String::new(),
                attr_doc_string: String::new(),
                source: TensorSource::none(),
            };
        }
        ValueRef::new(g.add_node(n), 0)
    }

    #[test]
    fn equal_constants_merge_into_the_first() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let a = init(&mut m.graph, "a", Tensor::scalar(2.0f32));
        let b = constant_op(&mut m.graph, "b", Tensor::scalar(2.0f32));
        let c = init(&mut m.graph, "c", Tensor::scalar(3.0f32));
        let d = init(
            &mut m.graph,
            "d",
            Tensor::from_vec(vec![1], vec![2.0f32]).unwrap(),
        );
        let e = init(&mut m.graph, "e", Tensor::scalar(2.0f64));
        let mut outs = Vec::new();
        for (i, k) in [a, b, c, d, e].into_iter().enumerate() {
            outs.push(op(&mut m.graph, "Mul", &[x, k], &format!("m{i}")));
        }
        for o in outs.clone() {
            output(&mut m.graph, o);
        }
        let ch = run(&DedupConstants, &mut m);
        assert_eq!(ch.get("merged"), 1);
        assert_eq!(m.graph.input(outs[1].node, 1), Some(a));
        assert!(m.graph.node(b.node).is_none());
        assert_eq!(m.graph.input(outs[3].node, 1), Some(d));
        assert_eq!(m.graph.input(outs[4].node, 1), Some(e));
    }

    #[test]
    fn graph_output_constants_are_kept() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let a = init(&mut m.graph, "a", Tensor::scalar(2.0f32));
        let b = init(&mut m.graph, "b", Tensor::scalar(2.0f32));
        let c = init(&mut m.graph, "c", Tensor::scalar(2.0f32));
        let y = op(&mut m.graph, "Mul", &[x, c], "y");
        output(&mut m.graph, b);
        output(&mut m.graph, y);
        output(&mut m.graph, a);
        let ch = run(&DedupConstants, &mut m);
        assert_eq!(ch.get("merged"), 1);
        assert_eq!(output_names(&m), vec!["b", "y", "a"]);
        assert!(m.graph.node(c.node).is_none());
        assert_eq!(m.graph.input(y.node, 1), Some(a));
    }

    #[test]
    fn overridable_initializers_are_not_merged() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let a = init(&mut m.graph, "a", Tensor::scalar(2.0f32));
        let mut listed = Node::initializer("listed", Tensor::scalar(2.0f32));
        if let NodeKind::Constant { origin, .. } = &mut listed.kind {
            *origin = ConstantOrigin::Initializer {
                listed_as_input: true,
                source: TensorSource::none(),
            };
        }
        let l = ValueRef::new(m.graph.add_node(listed), 0);
        let y = op(&mut m.graph, "Mul", &[x, a], "y");
        let z = op(&mut m.graph, "Mul", &[y, l], "z");
        output(&mut m.graph, z);
        assert!(run(&DedupConstants, &mut m).is_empty());
        assert_eq!(m.graph.input(z.node, 1), Some(l));
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    fn big(fill: impl Fn(usize) -> f32) -> Tensor {
        Tensor::from_vec(vec![10_000], (0..10_000).map(fill).collect()).unwrap()
    }

    #[test]
    fn tensors_differing_outside_the_sampled_windows_are_not_merged() {
        let a = big(|i| i as f32);
        // Differs only at element 3000 (byte 12000): outside the three 4 KiB windows.
        let b = big(|i| if i == 3000 { -1.0 } else { i as f32 });
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert!(!same_data(&a, &b));
        assert!(same_data(&a, &big(|i| i as f32)));
        assert!(same_data(&a, &a.clone()));
    }
}
