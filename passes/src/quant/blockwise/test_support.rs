//! For the block-wise tests: seeded values, and every value of a small hand-built graph
//! computed node by node with Kiln's constant evaluator, so a rewrite's float outputs can be
//! compared without ONNX Runtime.

use std::collections::BTreeMap;

use crate::eval::evaluate;
use crate::ir::{Graph, NodeKind};
use crate::tensor::Tensor;

/// Every value of `graph`, by name, with `x` as each graph input (the graphs here have one).
pub fn run(graph: &Graph, x: &Tensor) -> BTreeMap<String, Tensor> {
    let mut vals: BTreeMap<String, Tensor> = BTreeMap::new();
    for idx in graph.topo_order() {
        let node = &graph[idx];
        let out = match &node.kind {
            NodeKind::Input => vec![x.clone()],
            NodeKind::Constant { value, .. } => vec![value.clone()],
            NodeKind::Op { op_type, .. } => {
                let ins: Vec<Option<Tensor>> = graph
                    .inputs(idx)
                    .iter()
                    .map(|v| v.map(|v| vals[graph.value_name(v)].clone()))
                    .collect();
                let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
                evaluate(op_type, "", 17, &node.attributes, &refs)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{op_type} not evaluated"))
            }
            _ => unreachable!(),
        };
        for (info, t) in node.outputs.iter().zip(out) {
            vals.insert(info.name.clone(), t);
        }
    }
    vals
}

/// Seeded values in [-1, 1).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
