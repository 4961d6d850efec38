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
        NodeKind::Op {
            op_type, domain, ..
        } => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::test_util::*;
    use crate::ir::AttrValue;

    #[test]
    fn equal_nodes_merge_transitively() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let a1 = op(&mut m.graph, "Relu", &[x], "a1");
        let a2 = op(&mut m.graph, "Relu", &[x], "a2");
        let b1 = op(&mut m.graph, "Neg", &[a1], "b1");
        let b2 = op(&mut m.graph, "Neg", &[a2], "b2");
        let s = op(&mut m.graph, "Add", &[b1, b2], "s");
        output(&mut m.graph, s);
        let c = run(&CommonSubexpressions, &mut m);
        assert_eq!(c.get("merged"), 2);
        assert_eq!(m.graph.inputs(s.node), vec![Some(b1), Some(b1)]);
        assert_eq!(op_count(&m.graph, "Relu"), 1);
    }

    #[test]
    fn attributes_order_randomness_and_outputs_matter() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let t = |p: &[i64]| {
            Node::op("Transpose", "", &[]).with_attr("perm", AttrValue::Ints(p.to_vec()))
        };
        let mut n1 = t(&[1, 0]);
        n1.outputs = vec![crate::ir::ValueInfo::new("t1")];
        let mut n2 = t(&[0, 1]);
        n2.outputs = vec![crate::ir::ValueInfo::new("t2")];
        let t1 = op_node(&mut m.graph, n1, &[x]);
        let t2 = op_node(&mut m.graph, n2, &[x]);
        let r1 = op(&mut m.graph, "RandomNormalLike", &[x], "r1");
        let r2 = op(&mut m.graph, "RandomNormalLike", &[x], "r2");
        // Both graph outputs: merging would rename one.
        let o1 = op(&mut m.graph, "Sigmoid", &[x], "o1");
        let o2 = op(&mut m.graph, "Sigmoid", &[x], "o2");
        for v in [t1, t2, r1, r2, o1, o2] {
            output(&mut m.graph, v);
        }
        assert!(run(&CommonSubexpressions, &mut m).is_empty());
        assert_eq!(output_names(&m), vec!["t1", "t2", "r1", "r2", "o1", "o2"]);
    }

    #[test]
    fn kept_node_may_be_an_output() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let o1 = op(&mut m.graph, "Sigmoid", &[x], "o1");
        let o2 = op(&mut m.graph, "Sigmoid", &[x], "o2");
        let n = op(&mut m.graph, "Neg", &[o2], "n");
        output(&mut m.graph, o1);
        output(&mut m.graph, n);
        assert_eq!(run(&CommonSubexpressions, &mut m).get("merged"), 1);
        assert_eq!(m.graph.input(n.node, 0), Some(o1));
        assert_eq!(output_names(&m), vec!["o1", "n"]);
    }
}
