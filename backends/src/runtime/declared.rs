//! A model's inputs as ONNX Runtime describes them, read from the protobuf: asking a session
//! would first load every weight (for an LLM, a copy of gigabytes) only to list a few inputs.

use kiln_passes::tensor::DataType;
use kiln_proto::onnx::tensor_shape_proto::dimension;
use kiln_proto::onnx::{type_proto, ModelProto, TypeProto};

use super::session::{Dim, IoInfo, IoKind};

/// The main graph's inputs that are not initializers, in order, as [`Session::inputs`]
/// reports them (element types, fixed and symbolic dims, sequences, optionals, maps).
///
/// [`Session::inputs`]: super::Session::inputs
pub fn declared_inputs(model: &ModelProto) -> Vec<IoInfo> {
    let Some(graph) = &model.graph else {
        return Vec::new();
    };
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(|i| IoInfo {
            name: i.name.clone(),
            kind: i.r#type.as_ref().map_or(IoKind::Unknown, kind),
        })
        .collect()
}

fn kind(t: &TypeProto) -> IoKind {
    let inner = |t: &Option<Box<TypeProto>>| Box::new(t.as_deref().map_or(IoKind::Unknown, kind));
    match &t.value {
        Some(type_proto::Value::TensorType(t)) => IoKind::Tensor {
            dtype: DataType::from_onnx(t.elem_type),
            dims: t.shape.as_ref().map_or_else(Vec::new, |s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(dimension::Value::DimValue(n)) => {
                            usize::try_from(*n).map_or(Dim::Unknown, Dim::Fixed)
                        }
                        Some(dimension::Value::DimParam(p)) if !p.is_empty() => {
                            Dim::Symbolic(p.clone())
                        }
                        _ => Dim::Unknown,
                    })
                    .collect()
            }),
        },
        Some(type_proto::Value::SequenceType(s)) => IoKind::Sequence(inner(&s.elem_type)),
        Some(type_proto::Value::OptionalType(o)) => IoKind::Optional(inner(&o.elem_type)),
        Some(type_proto::Value::MapType(m)) => IoKind::Map {
            key: DataType::from_onnx(m.key_type),
            value: match m.value_type.as_deref().and_then(|v| v.value.as_ref()) {
                Some(type_proto::Value::TensorType(t)) => DataType::from_onnx(t.elem_type),
                _ => None,
            },
        },
        _ => IoKind::Unknown,
    }
}
