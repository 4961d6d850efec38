//! What the weight rewrites (dynamic, block-wise) share to walk a graph and its If/Loop/Scan
//! bodies: how a summary names a node, each body with the path that scopes its names, and
//! removing the float weights a rewrite let go of.

use std::collections::BTreeSet;

use crate::ir::{Graph, NodeIndex, NodeKind, ValueRef};

/// How a summary names a node: its name, or its first output's when unnamed.
pub(crate) fn label(graph: &Graph, idx: NodeIndex) -> String {
    let n = &graph[idx];
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        n.outputs
            .first()
            .map_or_else(|| format!("#{}", idx.index()), |o| o.name.clone())
    }
}

/// Calls `f` on every body of the nodes in `order` that have them, with its path:
/// `{scope}{owner}/{attribute}/`, or `…/{attribute}[i]/` when the attribute holds several.
pub(crate) fn each_body(
    graph: &mut Graph,
    order: &[NodeIndex],
    scope: &str,
    f: &mut dyn FnMut(&mut Graph, &str),
) {
    for &idx in order {
        let Some(node) = graph.node(idx) else {
            continue;
        };
        if node.subgraphs().next().is_none() {
            continue;
        }
        let owner = label(graph, idx);
        let Some(node) = graph.node_mut(idx) else {
            continue;
        };
        for attr in &mut node.attributes {
            let many = attr.value.graphs().len() > 1;
            for (i, body) in attr.value.graphs_mut().iter_mut().enumerate() {
                let path = if many {
                    format!("{scope}{owner}/{}[{i}]/", attr.name)
                } else {
                    format!("{scope}{owner}/{}/", attr.name)
                };
                f(body, &path);
            }
        }
    }
}

/// Removes the constants among `released` that nothing reads any more; returns how many.
pub(crate) fn remove_dead_constants(graph: &mut Graph, released: BTreeSet<ValueRef>) -> usize {
    let mut removed = 0;
    for v in released {
        let dead = matches!(
            graph.node(v.node).map(|n| &n.kind),
            Some(NodeKind::Constant { .. })
        ) && !graph.is_used(v);
        if dead {
            graph.remove_node(v.node);
            removed += 1;
        }
    }
    removed
}
