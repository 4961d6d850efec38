//! `remove-identity`: Identity nodes, and Dropout at inference.

use crate::ir::{Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::DataType;

use super::bypass::bypass;
use super::util::{each_graph, is_onnx_op};

/// Removes Identity, and Dropout whose training mode is off and whose mask nobody reads;
/// readers of the output read the input instead. An output that is a graph output keeps its
/// name (the producer's value is renamed, or the node stays).
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoveIdentity;

impl Pass for RemoveIdentity {
    fn name(&self) -> &'static str {
        "remove-identity"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        // Dropout before opset 7 trains unless `is_test` says otherwise.
        let opset = model.opset("").unwrap_or(1);
        each_graph(&mut model.graph, &mut |g| Ok(remove_in(g, opset)))
    }
}

fn remove_in(graph: &mut Graph, opset: i64) -> Changes {
    let mut changes = Changes::none();
    for idx in graph.topo_order() {
        let Some(node) = graph.node(idx) else {
            continue;
        };
        let what = if is_onnx_op(node, "Identity") {
            "identity"
        } else if is_onnx_op(node, "Dropout") && dropout_is_identity(graph, idx, opset) {
            "dropout"
        } else {
            continue;
        };
        let Some(input) = graph.input(idx, 0) else {
            continue;
        };
        if graph.node(idx).is_some_and(|n| !n.outputs.is_empty()) && bypass(graph, idx, 0, input) {
            changes.add(what, 1);
        }
    }
    changes
}

/// Dropout passes its input through when not training and when its mask is unused.
fn dropout_is_identity(graph: &Graph, idx: NodeIndex, opset: i64) -> bool {
    let Some(node) = graph.node(idx) else {
        return false;
    };
    let mask_used = (1..node.outputs.len()).any(|s| graph.is_used(ValueRef::new(idx, s)));
    if mask_used {
        return false;
    }
    if opset < 7 && node.attr("is_test").and_then(|a| a.as_int()) != Some(1) {
        return false;
    }
    // training_mode (opset 12+): absent, or a constant false.
    match graph.input(idx, 2) {
        None => true,
        Some(v) => graph.constant(v).is_some_and(|t| {
            t.dtype() == DataType::Bool && t.to_vec::<bool>().is_ok_and(|b| b.iter().all(|&x| !x))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::test_util::*;
    use crate::ir::{Node, NodeKind};
    use crate::tensor::Tensor;

    #[test]
    fn identity_between_operators_goes() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let r = op(&mut m.graph, "Relu", &[x], "r");
        let i = op(&mut m.graph, "Identity", &[r], "i");
        let s = op(&mut m.graph, "Sigmoid", &[i], "s");
        output(&mut m.graph, s);
        let c = run(&RemoveIdentity, &mut m);
        assert_eq!(c.get("identity"), 1);
        assert_eq!(op_count(&m.graph, "Identity"), 0);
        assert_eq!(m.graph.input(s.node, 0), Some(r));
    }

    #[test]
    fn identity_feeding_graph_output_renames_its_producer() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let r = op(&mut m.graph, "Relu", &[x], "r");
        let i = op(&mut m.graph, "Identity", &[r], "y");
        output(&mut m.graph, i);
        let c = run(&RemoveIdentity, &mut m);
        assert_eq!(c.get("identity"), 1);
        assert_eq!(output_names(&m), vec!["y"]);
        assert_eq!(m.graph.outputs[0].value, r);
    }

    #[test]
    fn identity_between_interface_values_stays() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let i = op(&mut m.graph, "Identity", &[x], "y");
        output(&mut m.graph, i);
        let r = op(&mut m.graph, "Relu", &[x], "r");
        let j = op(&mut m.graph, "Identity", &[r], "z");
        output(&mut m.graph, r);
        output(&mut m.graph, j);
        let c = run(&RemoveIdentity, &mut m);
        assert!(c.is_empty());
        assert_eq!(output_names(&m), vec!["y", "r", "z"]);
        assert_eq!(op_count(&m.graph, "Identity"), 2);
    }

    #[test]
    fn identity_in_if_branch_reading_outer_value() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let cond = input(&mut m.graph, "cond");
        // then: Identity(x) is the branch output (must stay: x is outer);
        // else: Identity(x) feeds Neg (goes).
        let mut then_g = Graph::new("then");
        let ox = then_g.add_node(Node::outer("x"));
        let ti = op(&mut then_g, "Identity", &[ValueRef::new(ox, 0)], "t_out");
        output(&mut then_g, ti);
        let mut else_g = Graph::new("else");
        let ex = else_g.add_node(Node::outer("x"));
        let ei = op(&mut else_g, "Identity", &[ValueRef::new(ex, 0)], "e_id");
        let en = op(&mut else_g, "Neg", &[ei], "e_out");
        output(&mut else_g, en);
        let iff = if_node(&mut m.graph, cond, then_g, else_g, "y");
        m.graph.capture(x, iff.node);
        output(&mut m.graph, iff);
        let c = run(&RemoveIdentity, &mut m);
        assert_eq!(c.get("identity"), 1);
        let branches: Vec<&Graph> = m.graph[iff.node].subgraphs().collect();
        assert_eq!(op_count(branches[0], "Identity"), 1);
        assert_eq!(op_count(branches[1], "Identity"), 0);
        let neg = branches[1]
            .nodes()
            .find(|(_, n)| n.op_type() == "Neg")
            .map(|(i, _)| i)
            .unwrap();
        let src = branches[1].input(neg, 0).unwrap();
        assert!(matches!(branches[1][src.node].kind, NodeKind::Outer));
    }

    #[test]
    fn dropout_at_inference_goes_but_not_in_training_or_with_mask() {
        let mut m = Model::new(13);
        let x = input(&mut m.graph, "x");
        let d = op(&mut m.graph, "Dropout", &[x], "d");
        let r = op(&mut m.graph, "Relu", &[d], "r");
        // Training mode on: stays.
        let t = m
            .graph
            .add_node(Node::initializer("t", Tensor::scalar(true)));
        let ratio = m
            .graph
            .add_node(Node::initializer("ratio", Tensor::scalar(0.5f32)));
        let d2 = op(
            &mut m.graph,
            "Dropout",
            &[r, ValueRef::new(ratio, 0), ValueRef::new(t, 0)],
            "d2",
        );
        // Mask used: stays.
        let d3 = m.graph.add_node(Node::op("Dropout", "", &["d3", "mask"]));
        m.graph.connect(d2, d3, 0);
        output(&mut m.graph, ValueRef::new(d3, 0));
        output(&mut m.graph, ValueRef::new(d3, 1));
        let c = run(&RemoveIdentity, &mut m);
        assert_eq!(c.get("dropout"), 1);
        assert_eq!(op_count(&m.graph, "Dropout"), 2);
        assert_eq!(m.graph.input(r.node, 0), Some(x));
    }
}
