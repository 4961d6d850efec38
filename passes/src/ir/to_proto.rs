//! [`Graph`] → ONNX `GraphProto`.
//!
//! Operators are written in [`Graph::topo_order`]; inputs, outputs, initializers and
//! value_info in the order they were read, new ones after. Tensors that were not changed are
//! written exactly as they were read (see [`TensorSource`]).

use std::collections::{HashMap, HashSet};

use kiln_proto::onnx::attribute_proto::AttributeType;
use kiln_proto::onnx::{AttributeProto, GraphProto, NodeProto, TensorProto};
use petgraph::stable_graph::NodeIndex;

use super::attribute::{AttrValue, Attribute};
use super::graph::{Graph, ValueInfoEntry};
use super::node::{ConstantAttr, ConstantOrigin, NodeKind, TensorSource};
use super::value::ValueRef;
use crate::tensor::{DataType, Tensor};

/// Writes `graph` (and its subgraphs) as a `GraphProto`.
pub(crate) fn graph_to_proto(graph: &Graph) -> GraphProto {
    let mut gp = GraphProto {
        name: graph.name.clone(),
        doc_string: graph.doc_string.clone(),
        quantization_annotation: graph.quantization_annotation.clone(),
        metadata_props: graph.metadata_props.clone(),
        ..GraphProto::default()
    };
    let order = graph.topo_order();
    for &idx in &order {
        if let Some(np) = node_to_proto(graph, idx) {
            gp.node.push(np);
        }
    }
    let mut by_seq: Vec<NodeIndex> = graph.node_indices().collect();
    by_seq.sort_unstable_by_key(|&i| graph[i].seq);
    for &idx in &by_seq {
        let node = &graph[idx];
        let name = node.outputs.first().map_or("", |o| o.name.as_str());
        match &node.kind {
            NodeKind::Constant {
                value,
                origin: ConstantOrigin::Initializer { source, .. },
            } => gp.initializer.push(tensor_to_proto(value, source, name)),
            NodeKind::SparseConstant { value, .. } => {
                let mut s = (**value).clone();
                if let Some(v) = s.values.as_mut() {
                    v.name = name.to_string();
                }
                gp.sparse_initializer.push(s);
            }
            _ => {}
        }
    }
    for &idx in &graph.graph_inputs {
        if let Some(info) = graph.node(idx).and_then(|n| n.outputs.first()) {
            gp.input.push(info.to_proto_named(&info.name));
        }
    }
    for o in &graph.outputs {
        gp.output
            .push(o.info.to_proto_named(graph.value_name(o.value)));
    }
    write_value_info(graph, &by_seq, &mut gp);
    gp
}

/// value_info: entries in the order read, then values that gained annotations since.
fn write_value_info(graph: &Graph, by_seq: &[NodeIndex], gp: &mut GraphProto) {
    // Graph inputs carry their type in the input list, never in value_info.
    let mut names: HashMap<&str, ValueRef> = HashMap::new();
    for (idx, node) in graph.nodes() {
        if node.is_listed_input() {
            continue;
        }
        for (slot, o) in node.outputs.iter().enumerate() {
            if !o.name.is_empty() {
                names
                    .entry(o.name.as_str())
                    .or_insert(ValueRef::new(idx, slot));
            }
        }
    }
    let mut written: HashSet<ValueRef> = HashSet::new();
    for entry in &graph.value_info_layout {
        match entry {
            ValueInfoEntry::Unattached(p) => gp.value_info.push(p.clone()),
            ValueInfoEntry::Attached(name) => {
                if let Some(&v) = names.get(name.as_str()) {
                    if written.insert(v) {
                        gp.value_info.push(graph.value_info(v).to_proto_named(name));
                    }
                }
            }
        }
    }
    for &idx in by_seq {
        let node = &graph[idx];
        if node.is_listed_input() {
            continue;
        }
        for (slot, o) in node.outputs.iter().enumerate() {
            let v = ValueRef::new(idx, slot);
            if !o.name.is_empty() && !o.is_bare() && !written.contains(&v) {
                written.insert(v);
                gp.value_info.push(o.to_proto_named(&o.name));
            }
        }
    }
}

/// The `NodeProto` of an operator node (`None` for inputs, initializers and outer values).
fn node_to_proto(graph: &Graph, idx: NodeIndex) -> Option<NodeProto> {
    let node = graph.node(idx)?;
    let mut np = NodeProto {
        output: node.outputs.iter().map(|o| o.name.clone()).collect(),
        name: node.name.clone(),
        doc_string: node.doc_string.clone(),
        metadata_props: node.metadata_props.clone(),
        device_configurations: node.device_configurations.clone(),
        ..NodeProto::default()
    };
    match &node.kind {
        NodeKind::Op {
            op_type,
            domain,
            overload,
        } => {
            np.op_type = op_type.clone();
            np.domain = domain.clone();
            np.overload = overload.clone();
            np.input = graph
                .inputs(idx)
                .into_iter()
                .map(|v| v.map_or_else(String::new, |v| graph.value_name(v).to_string()))
                .collect();
            np.attribute = node.attributes.iter().map(attribute_to_proto).collect();
        }
        NodeKind::Constant {
            value,
            origin:
                ConstantOrigin::ConstantOp {
                    attr,
                    domain,
                    attr_doc_string,
                    source,
                },
        } => {
            np.op_type = "Constant".to_string();
            np.domain = domain.clone();
            np.attribute = vec![constant_attr_proto(value, *attr, attr_doc_string, source)];
        }
        _ => return None,
    }
    Some(np)
}

/// A tensor as `TensorProto` named `name`: as read if unchanged, else Kiln's encoding
/// (keeping the original doc_string and metadata).
fn tensor_to_proto(value: &Tensor, source: &TensorSource, name: &str) -> TensorProto {
    match source.proto_for(value) {
        Some(p) => {
            let mut p = p.clone();
            if p.name != name {
                p.name = name.to_string();
            }
            p
        }
        None => {
            let mut p = value.to_proto(name);
            if let Some(orig) = source.original() {
                p.doc_string = orig.doc_string.clone();
                p.metadata_props = orig.metadata_props.clone();
            }
            p
        }
    }
}

/// The attribute an ONNX `Constant` operator holds `value` in: the recorded form while the
/// value still fits it, else `value` (a tensor).
pub(crate) fn constant_attr_proto(
    value: &Tensor,
    attr: ConstantAttr,
    doc_string: &str,
    source: &TensorSource,
) -> AttributeProto {
    let mut a = AttributeProto {
        name: attr.name().to_string(),
        doc_string: doc_string.to_string(),
        ..AttributeProto::default()
    };
    let rank = value.shape().len();
    let dtype = value.dtype();
    match attr {
        ConstantAttr::ValueFloat if dtype == DataType::Float && rank == 0 => {
            if let Some(&f) = value.to_vec::<f32>().ok().as_ref().and_then(|v| v.first()) {
                a.f = Some(f);
                a.r#type = AttributeType::Float as i32;
                return a;
            }
        }
        ConstantAttr::ValueFloats if dtype == DataType::Float && rank == 1 => {
            if let Ok(v) = value.to_vec::<f32>() {
                a.floats = v;
                a.r#type = AttributeType::Floats as i32;
                return a;
            }
        }
        ConstantAttr::ValueInt if dtype == DataType::Int64 && rank == 0 => {
            if let Some(&i) = value.to_vec::<i64>().ok().as_ref().and_then(|v| v.first()) {
                a.i = Some(i);
                a.r#type = AttributeType::Int as i32;
                return a;
            }
        }
        ConstantAttr::ValueInts if dtype == DataType::Int64 && rank == 1 => {
            if let Ok(v) = value.to_vec::<i64>() {
                a.ints = v;
                a.r#type = AttributeType::Ints as i32;
                return a;
            }
        }
        ConstantAttr::ValueString if rank == 0 => {
            if let Some(s) = value.strings().and_then(|s| s.first()) {
                a.s = Some(s.clone());
                a.r#type = AttributeType::String as i32;
                return a;
            }
        }
        ConstantAttr::ValueStrings if rank == 1 => {
            if let Some(s) = value.strings() {
                a.strings = s.to_vec();
                a.r#type = AttributeType::Strings as i32;
                return a;
            }
        }
        _ => {}
    }
    a.name = ConstantAttr::Value.name().to_string();
    a.r#type = AttributeType::Tensor as i32;
    a.t = Some(tensor_to_proto(value, source, source.name()));
    a
}

/// Writes one attribute, leaving `type` unset again where the file left it unset.
pub(crate) fn attribute_to_proto(a: &Attribute) -> AttributeProto {
    let ty = a.value.attr_type();
    let mut p = AttributeProto {
        name: a.name.clone(),
        ref_attr_name: a.ref_attr_name.clone(),
        doc_string: a.doc_string.clone(),
        r#type: if a.source.untyped == Some(ty) {
            0
        } else {
            ty as i32
        },
        ..AttributeProto::default()
    };
    let none = TensorSource::none();
    let src = |i: usize| a.source.tensors.get(i).unwrap_or(&none);
    let absent = a.source.scalar_absent;
    match &a.value {
        AttrValue::Float(f) => p.f = (!(absent && *f == 0.0)).then_some(*f),
        AttrValue::Int(i) => p.i = (!(absent && *i == 0)).then_some(*i),
        AttrValue::String(s) => p.s = (!(absent && s.is_empty())).then(|| s.clone()),
        AttrValue::Tensor(t) => p.t = Some(tensor_to_proto(t, src(0), src(0).name())),
        AttrValue::Graph(g) => p.g = Some(graph_to_proto(g)),
        AttrValue::SparseTensor(s) => p.sparse_tensor = Some((**s).clone()),
        AttrValue::TypeProto(t) => p.tp = Some(t.clone()),
        AttrValue::Floats(v) => p.floats = v.clone(),
        AttrValue::Ints(v) => p.ints = v.clone(),
        AttrValue::Strings(v) => p.strings = v.clone(),
        AttrValue::Tensors(ts) => {
            p.tensors = ts
                .iter()
                .enumerate()
                .map(|(i, t)| tensor_to_proto(t, src(i), src(i).name()))
                .collect();
        }
        AttrValue::Graphs(gs) => p.graphs = gs.iter().map(graph_to_proto).collect(),
        AttrValue::SparseTensors(v) => p.sparse_tensors = v.clone(),
        AttrValue::TypeProtos(v) => p.type_protos = v.clone(),
    }
    p
}
