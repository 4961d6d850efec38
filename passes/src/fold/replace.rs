//! Replacing a folded node's outputs with initializers that keep the outputs' names.

use std::collections::HashSet;

use crate::ir::{Graph, Node, NodeIndex, NodeKind, ValueInfo, ValueRef};
use crate::tensor::Tensor;

/// The constants this pass made in one graph: intermediate ones left unused by later
/// folding are removed again.
#[derive(Debug, Default)]
pub(crate) struct Created(HashSet<NodeIndex>);

/// Replaces node `idx` by one initializer per used output. Returns false (and changes
/// nothing) when the results do not cover every used output.
pub(crate) fn replace(
    graph: &mut Graph,
    idx: NodeIndex,
    outs: Vec<Tensor>,
    created: &mut Created,
) -> bool {
    let infos = graph[idx].outputs.clone();
    let used: Vec<usize> = (0..infos.len())
        .filter(|&s| !infos[s].name.is_empty() && graph.is_used(ValueRef::new(idx, s)))
        .collect();
    if used.iter().any(|&s| s >= outs.len()) {
        return false;
    }
    let producers: Vec<NodeIndex> = graph
        .inputs(idx)
        .into_iter()
        .flatten()
        .map(|v| v.node)
        .collect();
    let mut renames = Vec::new();
    for (slot, tensor) in outs.into_iter().enumerate() {
        if !used.contains(&slot) {
            continue;
        }
        let info = &infos[slot];
        let tmp = graph.fresh_name(&format!("{}__folded", info.name));
        let ty = info
            .ty
            .as_ref()
            .map(|_| ValueInfo::tensor("", tensor.dtype(), &dims_of(&tensor)).ty)
            .unwrap_or(None);
        let mut node = Node::initializer(&tmp, tensor);
        node.outputs[0] = ValueInfo {
            name: tmp,
            ty,
            doc_string: info.doc_string.clone(),
            metadata_props: info.metadata_props.clone(),
        };
        let new = graph.add_node(node);
        created.0.insert(new);
        graph.replace_all_uses(ValueRef::new(idx, slot), ValueRef::new(new, 0));
        renames.push((new, info.name.clone()));
    }
    graph.remove_node(idx);
    for (new, name) in renames {
        graph.rename_value(ValueRef::new(new, 0), &name);
    }
    for p in producers {
        remove_if_dead(graph, p, created);
    }
    true
}

fn dims_of(t: &Tensor) -> Vec<crate::ir::Dim> {
    t.shape()
        .iter()
        .map(|&d| crate::ir::Dim::Known(d as i64))
        .collect()
}

/// Removes `idx` if nothing reads it any more and it is a constant this pass made, or a
/// `Shape` / `Size` whose readers were all folded; then its own inputs likewise.
fn remove_if_dead(graph: &mut Graph, idx: NodeIndex, created: &mut Created) {
    let Some(node) = graph.node(idx) else {
        return;
    };
    let removable = created.0.contains(&idx)
        || matches!(&node.kind, NodeKind::Op { op_type, domain, .. }
            if (op_type == "Shape" || op_type == "Size") && domain.is_empty());
    let used = (0..node.outputs.len()).any(|s| graph.is_used(ValueRef::new(idx, s)));
    if !removable || used {
        return;
    }
    let producers: Vec<NodeIndex> = graph
        .inputs(idx)
        .into_iter()
        .flatten()
        .map(|v| v.node)
        .collect();
    graph.remove_node(idx);
    created.0.remove(&idx);
    for p in producers {
        remove_if_dead(graph, p, created);
    }
}
