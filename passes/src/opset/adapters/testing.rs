//! Small builders for adapter tests: a model at an old opset, upgraded and verified.

use crate::ir::{AttrValue, Dim, Graph, GraphOutput, Model, Node, NodeIndex, ValueInfo, ValueRef};
use crate::opset::UpgradeOpset;
use crate::pipeline::{Changes, Pass};
use crate::tensor::{DataType, Tensor};

/// An empty model at `opset`.
pub(crate) fn model(opset: i64) -> Model {
    Model::new(opset)
}

/// Adds a float graph input of known shape.
pub(crate) fn input(m: &mut Model, name: &str, shape: &[i64]) -> ValueRef {
    let dims: Vec<Dim> = shape.iter().map(|&d| Dim::Known(d)).collect();
    let i = m
        .graph
        .add_node(Node::input(ValueInfo::tensor(name, DataType::Float, &dims)));
    ValueRef::new(i, 0)
}

/// Adds a float graph input of unknown type.
pub(crate) fn untyped_input(m: &mut Model, name: &str) -> ValueRef {
    ValueRef::new(m.graph.add_node(Node::input(ValueInfo::new(name))), 0)
}

/// Adds an initializer.
pub(crate) fn init(m: &mut Model, name: &str, t: Tensor) -> ValueRef {
    ValueRef::new(m.graph.add_node(Node::initializer(name, t)), 0)
}

/// Adds operator `op` named `name` reading `inputs` (None: absent), with `outputs` outputs
/// named `<name>_out<i>` and the given attributes.
pub(crate) fn op(
    g: &mut Graph,
    op: &str,
    name: &str,
    inputs: &[Option<ValueRef>],
    outputs: usize,
    attrs: Vec<(&str, AttrValue)>,
) -> NodeIndex {
    let outs: Vec<String> = (0..outputs).map(|i| format!("{name}_out{i}")).collect();
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let mut node = Node::op(op, name, &refs);
    for (k, v) in attrs {
        node = node.with_attr(k, v);
    }
    node.input_arity = inputs.len();
    let idx = g.add_node(node);
    for (slot, v) in inputs.iter().enumerate() {
        if let Some(v) = v {
            g.connect(*v, idx, slot);
        }
    }
    idx
}

/// Declares `value` a graph output.
pub(crate) fn output(g: &mut Graph, value: ValueRef) {
    let info = ValueInfo::new(g.value_name(value));
    g.outputs.push(GraphOutput { value, info });
}

/// Upgrades to `target`, verifies the graph and returns what changed.
pub(crate) fn upgrade(m: &mut Model, target: i64) -> Changes {
    let changes = UpgradeOpset { target }
        .run(m)
        .unwrap_or_else(|e| panic!("upgrade failed: {e}"));
    m.graph
        .verify()
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    assert_eq!(m.opset(""), Some(target));
    changes
}

/// The error text of an upgrade that must fail.
pub(crate) fn upgrade_err(m: &mut Model, target: i64) -> String {
    match (UpgradeOpset { target }).run(m) {
        Ok(c) => panic!("upgrade should fail but changed: {c}"),
        Err(e) => e.to_string(),
    }
}

/// The int64 constant feeding input `slot` of `node`.
pub(crate) fn const_ints(g: &Graph, node: NodeIndex, slot: usize) -> Vec<i64> {
    g.constant_input(node, slot)
        .unwrap_or_else(|| panic!("input {slot} is not a constant"))
        .to_vec::<i64>()
        .unwrap_or_else(|e| panic!("not int64: {e}"))
}

/// The float constant feeding input `slot` of `node`.
pub(crate) fn const_floats(g: &Graph, node: NodeIndex, slot: usize) -> Vec<f32> {
    g.constant_input(node, slot)
        .unwrap_or_else(|| panic!("input {slot} is not a constant"))
        .to_vec::<f32>()
        .unwrap_or_else(|e| panic!("not float: {e}"))
}

/// The operators of type `op`, in index order.
pub(crate) fn ops(g: &Graph, op: &str) -> Vec<NodeIndex> {
    g.nodes()
        .filter(|(_, n)| n.is_operator() && n.op_type() == op)
        .map(|(i, _)| i)
        .collect()
}

/// An INTS attribute value.
pub(crate) fn ints(v: &[i64]) -> AttrValue {
    AttrValue::Ints(v.to_vec())
}

/// A STRING attribute value.
pub(crate) fn string(s: &str) -> AttrValue {
    AttrValue::String(bytes::Bytes::copy_from_slice(s.as_bytes()))
}

/// Output `slot` of `node`.
pub(crate) fn out(node: NodeIndex, slot: usize) -> ValueRef {
    ValueRef::new(node, slot)
}
