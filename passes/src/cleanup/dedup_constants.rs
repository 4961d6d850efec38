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
    // Group by type and shape first so only possible twins get their bytes hashed.
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
            let h = hash_tensor(t);
            let twin = kept.get(&h).and_then(|ks| {
                ks.iter()
                    .copied()
                    .find(|&k| graph.constant(ValueRef::new(k, 0)) == Some(t))
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

fn hash_tensor(t: &Tensor) -> u64 {
    let mut h = DefaultHasher::new();
    match t.data() {
        TensorData::Raw(b) => b.as_ref().hash(&mut h),
        TensorData::Strings(s) => s.iter().for_each(|b| b.as_ref().hash(&mut h)),
    }
    h.finish()
}
