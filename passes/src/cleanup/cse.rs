//! `cse`: common subexpression elimination.

use std::collections::HashMap;

use crate::ir::{Attribute, Graph, Model, Node, NodeIndex, NodeKind, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};

use super::util::{each_graph, is_graph_output};

/// Operators whose results differ from run to run.
const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

/// Merges default-domain operators with the same type, attributes and inputs into the
/// earliest one (topological order). Random operators, Dropout and operators with
/// subgraphs are left alone, as are nodes whose outputs are graph outputs (merging would
/// rename an interface value).
#[derive(Debug, Clone, Copy, Default)]
pub struct CommonSubexpressions;

impl Pass for CommonSubexpressions {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        each_graph(&mut model.graph, &mut |g| Ok(cse_in(g)))
    }
}

/// What two nodes must share before their attributes are compared.
type Key = (String, Vec<Option<ValueRef>>, usize, usize);

fn cse_in(graph: &mut Graph) -> Changes {
    let mut changes = Changes::none();
    let mut seen: HashMap<Key, Vec<NodeIndex>> = HashMap::new();
    // Topological order: a merge redirects readers before they are keyed.
    for idx in graph.topo_order() {
        let Some(node) = graph.node(idx) else {
            continue;
        };
        if !eligible(node) {
            continue;
        }
        let key: Key = (
            node.op_type().to_string(),
            graph.inputs(idx),
            node.input_arity,
            node.outputs.len(),
        );
        let twin = seen.get(&key).and_then(|ks| {
            ks.iter()
                .copied()
                .find(|&k| same_attributes(&graph[k], node) && can_merge(graph, k, idx))
        });
        match twin {
            Some(k) => {
                for slot in 0..graph[idx].outputs.len() {
                    graph.replace_all_uses(ValueRef::new(idx, slot), ValueRef::new(k, slot));
                }
                graph.remove_node(idx);
                changes.add("merged", 1);
            }
            None => seen.entry(key).or_default().push(idx),
        }
    }
    changes
}

fn eligible(node: &Node) -> bool {
    match &node.kind {
        NodeKind::Op { op_type, domain, .. } => {
            (domain.is_empty() || domain == "ai.onnx")
                && !NONDETERMINISTIC.contains(&op_type.as_str())
                && !node.outputs.is_empty()
                && node.subgraphs().next().is_none()
        }
        _ => false,
    }
}

/// Same attributes by name and value, whatever their order.
fn same_attributes(a: &Node, b: &Node) -> bool {
    fn sorted(n: &Node) -> Vec<&Attribute> {
        let mut v: Vec<&Attribute> = n.attributes.iter().collect();
        v.sort_by(|x, y| x.name.cmp(&y.name));
        v
    }
    let (sa, sb) = (sorted(a), sorted(b));
    sa.len() == sb.len()
        && sa
            .iter()
            .zip(&sb)
            .all(|(x, y)| x.name == y.name && x.value == y.value)
        && a.domain() == b.domain()
        && matches!((&a.kind, &b.kind), (NodeKind::Op { overload: x, .. }, NodeKind::Op { overload: y, .. }) if x == y)
}

/// The duplicate's outputs can all be read from the kept node instead: none is a graph
/// output, and each one in use has a named counterpart.
fn can_merge(graph: &Graph, keep: NodeIndex, dup: NodeIndex) -> bool {
    (0..graph[dup].outputs.len()).all(|slot| {
        let v = ValueRef::new(dup, slot);
        !is_graph_output(graph, v)
            && (!graph.is_used(v) || !graph[keep].outputs[slot].name.is_empty())
    })
}
