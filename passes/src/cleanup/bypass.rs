//! Removing a node whose output equals one of its inputs, without renaming the interface.

use crate::ir::{Graph, NodeIndex, ValueRef};

/// Removes `node` after making every reader of its output `out_slot` read `input` instead.
///
/// The node's other outputs must be unused (the caller checks). When the output is a graph
/// output, its name is interface: the input's value takes that name, which is only possible
/// when an operator produces it and it is not itself a graph output. Otherwise nothing
/// changes and the result is false.
pub(crate) fn bypass(graph: &mut Graph, node: NodeIndex, out_slot: usize, input: ValueRef) -> bool {
    let out = ValueRef::new(node, out_slot);
    if input.node == node {
        return false;
    }
    let is_output = |g: &Graph, v: ValueRef| g.outputs.iter().any(|o| o.value == v);
    if !is_output(graph, out) {
        graph.replace_all_uses(out, input);
        graph.remove_node(node);
        return true;
    }
    let renamable = graph.node(input.node).is_some_and(|n| n.is_operator());
    if !renamable || is_output(graph, input) {
        return false;
    }
    let name = graph.value_name(out).to_string();
    graph.replace_all_uses(out, input);
    graph.remove_node(node);
    graph.rename_value(input, &name);
    true
}
