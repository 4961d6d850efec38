//! Element types of values as pinning sees them, and the Cast nodes it reads and writes.

use kiln_proto::onnx::{type_proto, TypeProto};

use crate::ir::{AttrValue, Graph, Node, NodeIndex, NodeKind, ValueInfo, ValueRef};
use crate::tensor::DataType;

/// True for an operator of the default ONNX domain.
pub(crate) fn is_onnx_op(node: &Node) -> bool {
    matches!(&node.kind, NodeKind::Op { domain, .. } if domain.is_empty() || domain == "ai.onnx")
}

/// The target type of a default-domain `Cast` node, if `node` is one with a known `to`.
pub(crate) fn cast_to(node: &Node) -> Option<DataType> {
    if !is_onnx_op(node) || node.op_type() != "Cast" {
        return None;
    }
    let code = node.attr("to")?.as_int()?;
    DataType::from_onnx(i32::try_from(code).ok()?)
}

/// The element type of `value`: a constant's own type, a Cast's target, else the declared
/// (or inferred) type.
pub(crate) fn elem_type(graph: &Graph, value: ValueRef) -> Option<DataType> {
    if let Some(t) = graph.constant(value) {
        return Some(t.dtype());
    }
    let node = graph.node(value.node)?;
    if value.slot == 0 {
        if let Some(to) = cast_to(node) {
            return Some(to);
        }
    }
    info_of(graph, value)?.elem_type()
}

/// What is known of `value`: its own [`ValueInfo`], or where that declares no type, the type
/// a graph output naming it declares (inference keeps a graph output's type there).
pub(crate) fn info_of(graph: &Graph, value: ValueRef) -> Option<ValueInfo> {
    let mut info = graph.node(value.node)?.outputs.get(value.slot)?.clone();
    if info.ty.is_none() {
        info.ty = graph
            .outputs
            .iter()
            .find(|o| o.value == value && o.info.ty.is_some())
            .and_then(|o| o.info.ty.clone());
    }
    Some(info)
}

/// `info` under another name with element type `dtype` (shape and the rest kept).
pub(crate) fn retyped(info: &ValueInfo, name: &str, dtype: DataType) -> ValueInfo {
    let mut v = ValueInfo {
        name: name.to_string(),
        ty: info.ty.clone(),
        doc_string: String::new(),
        metadata_props: Vec::new(),
    };
    set_elem_type(&mut v, dtype);
    v
}

/// Sets the element type of a tensor value (a value with no type becomes a tensor of
/// unknown shape).
pub(crate) fn set_elem_type(info: &mut ValueInfo, dtype: DataType) {
    if let Some(TypeProto {
        value: Some(type_proto::Value::TensorType(t)),
        ..
    }) = &mut info.ty
    {
        t.elem_type = dtype.onnx();
        return;
    }
    info.ty = Some(TypeProto {
        denotation: String::new(),
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: dtype.onnx(),
            shape: None,
        })),
    });
}

/// Adds a `Cast` to `to` with no input yet, whose output is named `name` and shaped like
/// `like`; the node takes the same name. Returns its output.
pub(crate) fn add_cast(graph: &mut Graph, to: DataType, name: &str, like: &ValueInfo) -> ValueRef {
    let mut node =
        Node::op("Cast", name, &[name]).with_attr("to", AttrValue::Int(i64::from(to.onnx())));
    node.outputs[0] = retyped(like, name, to);
    ValueRef::new(graph.add_node(node), 0)
}

/// Every Cast node reading `value`.
pub(crate) fn cast_readers(graph: &Graph, value: ValueRef) -> Vec<(NodeIndex, DataType)> {
    graph
        .consumers(value)
        .into_iter()
        .filter(|&(_, slot)| slot == crate::ir::InputSlot::Operand(0))
        .filter_map(|(n, _)| Some((n, cast_to(graph.node(n)?)?)))
        .collect()
}
