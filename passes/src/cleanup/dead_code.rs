//! `dead-code`: removes operators and constants nothing reads, in the graph and its bodies.

use std::collections::HashSet;

use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::ir::{Graph, Model, NodeIndex, NodeKind};
use crate::pipeline::{Changes, Pass, PassError};

/// Removes every node whose outputs reach no graph output (through operands or subgraph
/// captures). Graph inputs, listed initializers and body inputs stay: they are interface.
/// Operators of a custom domain with no outputs stay too (they can only be there for an
/// effect).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        sweep(&mut model.graph, &mut changes);
        Ok(changes)
    }
}

/// Cleans bodies first (what they stop reading may free values here), then this graph.
fn sweep(graph: &mut Graph, changes: &mut Changes) {
    let owners: Vec<NodeIndex> = graph
        .nodes()
        .filter(|(_, n)| n.subgraphs().next().is_some())
        .map(|(i, _)| i)
        .collect();
    for owner in owners {
        if let Some(node) = graph.node_mut(owner) {
            for body in node.subgraphs_mut() {
                sweep(body, changes);
            }
        }
        drop_stale_captures(graph, owner);
    }

    let mut live: HashSet<NodeIndex> = HashSet::new();
    let mut stack: Vec<NodeIndex> = graph.outputs.iter().map(|o| o.value.node).collect();
    stack.extend(graph.nodes().filter(|(_, n)| is_root(n)).map(|(i, _)| i));
    while let Some(i) = stack.pop() {
        if live.insert(i) {
            stack.extend(
                graph
                    .petgraph()
                    .edges_directed(i, Direction::Incoming)
                    .map(|e| e.source()),
            );
        }
    }
    let dead: Vec<NodeIndex> = graph.node_indices().filter(|i| !live.contains(i)).collect();
    for i in dead {
        if let Some(node) = graph.remove_node(i) {
            match node.kind {
                NodeKind::Op { .. } => changes.add("operators", 1),
                NodeKind::Constant { .. } | NodeKind::SparseConstant { .. } => {
                    changes.add("constants", 1)
                }
                NodeKind::Input | NodeKind::Outer => {}
            }
        }
    }
}

/// Nodes kept whatever reads them: the interface, and custom operators with no outputs.
fn is_root(node: &crate::ir::Node) -> bool {
    if node.is_listed_input() || matches!(node.kind, NodeKind::Input) {
        return true;
    }
    match &node.kind {
        NodeKind::Op { domain, .. } => {
            let custom = !(domain.is_empty() || domain == "ai.onnx");
            custom && node.outputs.iter().all(|o| o.name.is_empty())
        }
        _ => false,
    }
}

/// Removes capture edges into `owner` for values none of its bodies reads any more.
fn drop_stale_captures(graph: &mut Graph, owner: NodeIndex) {
    let Some(node) = graph.node(owner) else {
        return;
    };
    let read: HashSet<String> = node
        .subgraphs()
        .flat_map(|b| {
            b.nodes()
                .filter(|(_, n)| matches!(n.kind, NodeKind::Outer))
                .filter_map(|(_, n)| n.outputs.first().map(|o| o.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let stale: Vec<_> = graph
        .captures(owner)
        .into_iter()
        .filter(|&v| !read.contains(graph.value_name(v)))
        .collect();
    for v in stale {
        graph.uncapture(v, owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::test_util::*;
    use crate::ir::{AttrValue, ConstantOrigin, Node, TensorSource, ValueRef};
    use crate::tensor::{DataType, Tensor};

    #[test]
    fn unused_chain_and_initializer_go_but_inputs_stay() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let _unused_input = input(&mut m.graph, "unused");
        let w = init(&mut m.graph, "w", Tensor::scalar(2.0f32));
        let _unused_w = init(&mut m.graph, "unused_w", Tensor::scalar(3.0f32));
        let mut listed = Node::initializer("listed", Tensor::scalar(1.0f32));
        if let NodeKind::Constant { origin, .. } = &mut listed.kind {
            *origin = ConstantOrigin::Initializer {
                listed_as_input: true,
                source: TensorSource::none(),
            };
        }
        m.graph.add_node(listed);
        let a = op(&mut m.graph, "Mul", &[x, w], "a");
        let dead1 = op(&mut m.graph, "Neg", &[a], "dead1");
        let _dead2 = op(&mut m.graph, "Exp", &[dead1], "dead2");
        output(&mut m.graph, a);
        let before_inputs = input_names(&m);
        let c = run(&DeadCode, &mut m);
        assert_eq!(c.get("operators"), 2);
        assert_eq!(c.get("constants"), 1);
        assert_eq!(input_names(&m), before_inputs);
        assert_eq!(input_names(&m), vec!["x", "unused", "listed"]);
        assert_eq!(op_count(&m.graph, "Neg") + op_count(&m.graph, "Exp"), 0);
        assert!(m.graph.find_value("w").is_some());
        assert!(m.graph.find_value("unused_w").is_none());
    }

    #[test]
    fn custom_op_without_outputs_stays() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let n = m
            .graph
            .add_node(Node::op("Print", "p", &[]).with_domain("my.domain"));
        m.graph.connect(x, n, 0);
        let std_no_out = m.graph.add_node(Node::op("Relu", "r", &[]));
        m.graph.connect(x, std_no_out, 0);
        output(&mut m.graph, x);
        let c = run(&DeadCode, &mut m);
        assert_eq!(c.get("operators"), 1);
        assert!(m.graph.node(n).is_some());
        assert!(m.graph.node(std_no_out).is_none());
    }

    /// A Loop whose body has a dead node and reads two outer values: one only through the
    /// dead node.
    fn loop_model() -> (Model, ValueRef, ValueRef, ValueRef) {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let trip = init(&mut m.graph, "trip", Tensor::scalar(3i64));
        let c_live = m
            .graph
            .add_node(Node::initializer("c_live", Tensor::scalar(1.0f32)));
        let c_dead = m
            .graph
            .add_node(Node::initializer("c_dead", Tensor::scalar(5.0f32)));
        let mut body = crate::ir::Graph::new("body");
        let _i = typed_input(&mut body, "i", DataType::Int64, &[]);
        let cond_in = typed_input(&mut body, "cond_in", DataType::Bool, &[]);
        let acc = input(&mut body, "acc");
        let ol = ValueRef::new(body.add_node(Node::outer("c_live")), 0);
        let od = ValueRef::new(body.add_node(Node::outer("c_dead")), 0);
        let sum = op(&mut body, "Add", &[acc, ol], "sum");
        let _dead = op(&mut body, "Mul", &[acc, od], "dead_in_body");
        let cond_out = op(&mut body, "Identity", &[cond_in], "cond_out");
        output(&mut body, cond_out);
        output(&mut body, sum);
        let lp =
            Node::op("Loop", "loop", &["y"]).with_attr("body", AttrValue::Graph(Box::new(body)));
        let lp = m.graph.add_node(lp);
        m.graph.connect(trip, lp, 0);
        m.graph.connect(x, lp, 2);
        m.graph.capture(ValueRef::new(c_live, 0), lp);
        m.graph.capture(ValueRef::new(c_dead, 0), lp);
        output(&mut m.graph, ValueRef::new(lp, 0));
        (
            m,
            ValueRef::new(lp, 0),
            ValueRef::new(c_live, 0),
            ValueRef::new(c_dead, 0),
        )
    }

    #[test]
    fn dead_node_in_loop_body_goes_and_frees_its_capture() {
        let (mut m, lp, c_live, c_dead) = loop_model();
        let c = run(&DeadCode, &mut m);
        assert_eq!(c.get("operators"), 1);
        let body = m.graph[lp.node].subgraphs().next().unwrap();
        assert_eq!(op_count(body, "Mul"), 0);
        assert_eq!(op_count(body, "Add"), 1);
        assert_eq!(body.graph_inputs.len(), 3, "body inputs are interface");
        assert_eq!(body.outputs.len(), 2);
        // The constant read only by the body stays; the one read only by the dead node goes.
        assert!(m.graph.node(c_live.node).is_some());
        assert!(m.graph.node(c_dead.node).is_none());
        assert_eq!(m.graph.captures(lp.node), vec![c_live]);
    }

    #[test]
    fn constant_used_only_by_a_subgraph_stays() {
        let (mut m, lp, c_live, _) = loop_model();
        run(&DeadCode, &mut m);
        let again = run(&DeadCode, &mut m);
        assert!(again.is_empty());
        assert!(m.graph.node(c_live.node).is_some());
        assert!(m.graph.node(lp.node).is_some());
    }
}
