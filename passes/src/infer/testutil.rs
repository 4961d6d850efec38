//! Builders for the unit tests: one-operator models with typed or constant inputs.

use crate::ir::{describe_type, AttrValue, Dim, Model, Node, NodeIndex, ValueInfo, ValueRef};
use crate::pipeline::{Changes, Pass};
use crate::tensor::{DataType, Tensor};

use super::InferShapes;

/// One input of the operator under test.
pub enum In {
    /// A graph input of this type (`"?"` is an unknown dim, digits fixed, else a name).
    Typed(DataType, Vec<String>),
    /// A constant.
    Const(Tensor),
    /// Left absent.
    Absent,
}

/// A float32 graph input.
pub fn f32_in(dims: &[&str]) -> In {
    typed_in(DataType::Float, dims)
}

/// A graph input of any element type.
pub fn typed_in(t: DataType, dims: &[&str]) -> In {
    In::Typed(t, dims.iter().map(|s| s.to_string()).collect())
}

/// An int64 1-D constant.
pub fn ints_in(v: &[i64]) -> In {
    In::Const(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
}

/// An INT attribute.
pub fn int(i: i64) -> AttrValue {
    AttrValue::Int(i)
}

/// An INTS attribute.
pub fn ints(v: &[i64]) -> AttrValue {
    AttrValue::Ints(v.to_vec())
}

/// A STRING attribute.
pub fn string(s: &str) -> AttrValue {
    AttrValue::String(bytes::Bytes::from(s.as_bytes().to_vec()))
}

/// Parses `"?"`, `"3"` or `"batch"` into a dim.
pub fn dim(s: &str) -> Dim {
    match s {
        "?" => Dim::Unknown,
        _ => s
            .parse::<i64>()
            .map_or_else(|_| Dim::Symbolic(s.to_string()), Dim::Known),
    }
}

/// Adds the inputs to `model` and returns their values.
pub fn add_inputs(model: &mut Model, inputs: &[In]) -> Vec<Option<ValueRef>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let name = format!("in{i}");
            let node = match spec {
                In::Typed(t, dims) => {
                    let d: Vec<Dim> = dims.iter().map(|s| dim(s)).collect();
                    Node::input(ValueInfo::tensor(&name, *t, &d))
                }
                In::Const(t) => Node::initializer(&name, t.clone()),
                In::Absent => return None,
            };
            Some(ValueRef::new(model.graph.add_node(node), 0))
        })
        .collect()
}

/// A model at `opset` holding one `op` with these inputs and attributes and `n_out`
/// outputs, after inference; also returns the changes.
pub fn run_one(
    opset: i64,
    op: &str,
    inputs: &[In],
    attrs: &[(&str, AttrValue)],
    n_out: usize,
) -> (Model, Changes) {
    let mut model = Model::new(opset);
    let values = add_inputs(&mut model, inputs);
    let outs: Vec<String> = (0..n_out).map(|i| format!("out{i}")).collect();
    let out_refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let mut node = Node::op(op, "under_test", &out_refs);
    for (name, value) in attrs {
        node = node.with_attr(name, value.clone());
    }
    let idx = model.graph.add_node(node);
    for (slot, v) in values.iter().enumerate() {
        if let Some(v) = v {
            model.graph.connect(*v, idx, slot);
        }
    }
    if let Some(n) = model.graph.node_mut(idx) {
        n.input_arity = inputs.len();
    }
    let changes = InferShapes.run(&mut model).unwrap();
    model.graph.verify().unwrap();
    (model, changes)
}

/// The node called `under_test` (or the first operator).
pub fn op_node(model: &Model) -> NodeIndex {
    model
        .graph
        .nodes()
        .find(|(_, n)| n.name == "under_test")
        .map(|(i, _)| i)
        .unwrap()
}

/// The written type of output `slot` of the operator under test, as `float32[batch,3]`.
pub fn out_type(model: &Model, slot: usize) -> String {
    let n = &model.graph[op_node(model)];
    describe_type(n.outputs[slot].ty.as_ref())
}
