//! Builders for the small graphs the cleanup tests (and some quantization tests) use.

use crate::ir::{AttrValue, Dim, Graph, GraphOutput, Model, Node, ValueInfo, ValueRef};
use crate::pipeline::{Changes, Pass};
use crate::tensor::{DataType, Tensor};

/// A float input of shape [2, 3].
pub(crate) fn input(g: &mut Graph, name: &str) -> ValueRef {
    typed_input(g, name, DataType::Float, &[2, 3])
}

/// An input with an element type and a static shape.
pub(crate) fn typed_input(g: &mut Graph, name: &str, dt: DataType, shape: &[i64]) -> ValueRef {
    let dims: Vec<Dim> = shape.iter().map(|&d| Dim::Known(d)).collect();
    ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(name, dt, &dims))),
        0,
    )
}

/// A non-listed initializer.
pub(crate) fn init(g: &mut Graph, name: &str, t: Tensor) -> ValueRef {
    ValueRef::new(g.add_node(Node::initializer(name, t)), 0)
}

/// A default-domain operator with one output.
pub(crate) fn op(g: &mut Graph, op_type: &str, inputs: &[ValueRef], out: &str) -> ValueRef {
    op_node(g, Node::op(op_type, out, &[out]), inputs)
}

/// Adds `node` fed by `inputs`; returns its first output.
pub(crate) fn op_node(g: &mut Graph, node: Node, inputs: &[ValueRef]) -> ValueRef {
    let idx = g.add_node(node);
    for (slot, &v) in inputs.iter().enumerate() {
        g.connect(v, idx, slot);
    }
    ValueRef::new(idx, 0)
}

/// Appends `v` to the graph outputs.
pub(crate) fn output(g: &mut Graph, v: ValueRef) {
    let info = g.value_info(v).clone();
    g.outputs.push(GraphOutput { value: v, info });
}

/// An If node on `cond` with two branches and one output named `out`.
pub(crate) fn if_node(
    g: &mut Graph,
    cond: ValueRef,
    then_g: Graph,
    else_g: Graph,
    out: &str,
) -> ValueRef {
    let node = Node::op("If", out, &[out])
        .with_attr("then_branch", AttrValue::Graph(Box::new(then_g)))
        .with_attr("else_branch", AttrValue::Graph(Box::new(else_g)));
    op_node(g, node, &[cond])
}

/// Runs a pass, checks the graph and that saving and reloading gives a valid model.
pub(crate) fn run(pass: &dyn Pass, m: &mut Model) -> Changes {
    m.graph.verify().expect("valid before");
    let c = pass.run(m).expect("pass runs");
    m.graph.verify().expect("valid after");
    let back = Model::from_proto(&m.to_proto()).expect("reloads");
    back.graph.verify().expect("valid after reload");
    c
}

/// How many operators of `op_type` the graph holds (not counting subgraphs).
pub(crate) fn op_count(g: &Graph, op_type: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op_type() == op_type).count()
}

/// The graph output names as saved.
pub(crate) fn output_names(m: &Model) -> Vec<String> {
    m.to_proto()
        .graph
        .map(|g| g.output.into_iter().map(|o| o.name).collect())
        .unwrap_or_default()
}

/// The graph input names as saved.
pub(crate) fn input_names(m: &Model) -> Vec<String> {
    m.to_proto()
        .graph
        .map(|g| g.input.into_iter().map(|o| o.name).collect())
        .unwrap_or_default()
}
