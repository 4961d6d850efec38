//! Values: how one is addressed ([`ValueRef`]) and what is known about it ([`ValueInfo`]).

use kiln_proto::onnx::{
    tensor_shape_proto::dimension, type_proto, StringStringEntryProto, TypeProto, ValueInfoProto,
};
use petgraph::stable_graph::NodeIndex;

use crate::tensor::DataType;

/// One value of a graph: output `slot` of `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    /// The producing node.
    pub node: NodeIndex,
    /// Which of its outputs.
    pub slot: usize,
}

impl ValueRef {
    /// Output `slot` of `node`.
    pub fn new(node: NodeIndex, slot: usize) -> ValueRef {
        ValueRef { node, slot }
    }
}

/// One axis of a tensor shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Known(i64),
    /// A named size (`batch`, `seq_len`), equal wherever the same name appears.
    Symbolic(String),
    /// Nothing is known.
    Unknown,
}

/// A value's name, type and annotations, as an ONNX `ValueInfoProto` holds them.
///
/// The full `TypeProto` is kept so sequence, map, optional and sparse types survive untouched;
/// [`ValueInfo::elem_type`] and [`ValueInfo::shape`] read the common tensor case.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueInfo {
    /// The value's name; empty for an unused optional output.
    pub name: String,
    /// The declared type, if any.
    pub ty: Option<TypeProto>,
    /// Free-form documentation.
    pub doc_string: String,
    /// Key/value annotations.
    pub metadata_props: Vec<StringStringEntryProto>,
}

impl ValueInfo {
    /// A value with a name and nothing else known.
    pub fn new(name: impl Into<String>) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            ..ValueInfo::default()
        }
    }

    /// A tensor value with element type and shape.
    pub fn tensor(name: impl Into<String>, dtype: DataType, shape: &[Dim]) -> ValueInfo {
        use kiln_proto::onnx::{tensor_shape_proto::Dimension, TensorShapeProto};
        let dim = shape
            .iter()
            .map(|d| Dimension {
                denotation: String::new(),
                value: match d {
                    Dim::Known(n) => Some(dimension::Value::DimValue(*n)),
                    Dim::Symbolic(s) => Some(dimension::Value::DimParam(s.clone())),
                    Dim::Unknown => None,
                },
            })
            .collect();
        ValueInfo {
            name: name.into(),
            ty: Some(TypeProto {
                denotation: String::new(),
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: dtype.onnx(),
                    shape: Some(TensorShapeProto { dim }),
                })),
            }),
            ..ValueInfo::default()
        }
    }

    /// Takes every field of a `ValueInfoProto`.
    pub fn from_proto(p: &ValueInfoProto) -> ValueInfo {
        ValueInfo {
            name: p.name.clone(),
            ty: p.r#type.clone(),
            doc_string: p.doc_string.clone(),
            metadata_props: p.metadata_props.clone(),
        }
    }

    /// The `ValueInfoProto` holding every field, named `name` (the value's current name).
    pub fn to_proto_named(&self, name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: name.to_string(),
            r#type: self.ty.clone(),
            doc_string: self.doc_string.clone(),
            metadata_props: self.metadata_props.clone(),
        }
    }

    /// True when only the name is known (no type, documentation or annotations).
    pub fn is_bare(&self) -> bool {
        self.ty.is_none() && self.doc_string.is_empty() && self.metadata_props.is_empty()
    }

    /// The element type of a tensor or sparse tensor value, if declared and known.
    pub fn elem_type(&self) -> Option<DataType> {
        match self.ty.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => DataType::from_onnx(t.elem_type),
            type_proto::Value::SparseTensorType(t) => DataType::from_onnx(t.elem_type),
            _ => None,
        }
    }

    /// The shape of a tensor or sparse tensor value, if its rank is declared.
    pub fn shape(&self) -> Option<Vec<Dim>> {
        let shape = match self.ty.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => t.shape.as_ref()?,
            type_proto::Value::SparseTensorType(t) => t.shape.as_ref()?,
            _ => return None,
        };
        Some(
            shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(n)) => Dim::Known(*n),
                    Some(dimension::Value::DimParam(s)) => Dim::Symbolic(s.clone()),
                    None => Dim::Unknown,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_read_tensor_types() {
        let v = ValueInfo::tensor(
            "x",
            DataType::Float,
            &[Dim::Symbolic("N".into()), Dim::Known(3), Dim::Unknown],
        );
        assert_eq!(v.elem_type(), Some(DataType::Float));
        assert_eq!(
            v.shape(),
            Some(vec![Dim::Symbolic("N".into()), Dim::Known(3), Dim::Unknown])
        );
        let p = v.to_proto_named("x");
        assert_eq!(ValueInfo::from_proto(&p), v);
        assert_eq!(ValueInfo::new("y").shape(), None);
        assert!(ValueInfo::new("y").is_bare());
    }
}

/// A short, readable form of a value type: `float32[batch,3,224,224]`, `seq(int64[?])`,
/// `optional(float32)`, `map(string, float32)`; `?` where nothing is declared.
pub fn describe_type(ty: Option<&TypeProto>) -> String {
    let Some(value) = ty.and_then(|t| t.value.as_ref()) else {
        return "?".to_string();
    };
    let elem = |code: i32| DataType::from_onnx(code).map_or("?".to_string(), |t| t.to_string());
    let shape = |s: &Option<kiln_proto::onnx::TensorShapeProto>| match s {
        None => String::new(),
        Some(s) => {
            let dims: Vec<String> = s
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(n)) => n.to_string(),
                    Some(dimension::Value::DimParam(p)) => p.clone(),
                    None => "?".to_string(),
                })
                .collect();
            format!("[{}]", dims.join(","))
        }
    };
    match value {
        type_proto::Value::TensorType(t) => format!("{}{}", elem(t.elem_type), shape(&t.shape)),
        type_proto::Value::SparseTensorType(t) => {
            format!("sparse({}){}", elem(t.elem_type), shape(&t.shape))
        }
        type_proto::Value::SequenceType(s) => {
            format!("seq({})", describe_type(s.elem_type.as_deref()))
        }
        type_proto::Value::OptionalType(o) => {
            format!("optional({})", describe_type(o.elem_type.as_deref()))
        }
        type_proto::Value::MapType(m) => format!(
            "map({}, {})",
            elem(m.key_type),
            describe_type(m.value_type.as_deref())
        ),
        type_proto::Value::OpaqueType(o) => format!("opaque({}.{})", o.domain, o.name),
    }
}

#[cfg(test)]
mod describe_tests {
    use super::*;

    #[test]
    fn describes_tensors_and_nested_types() {
        let t = ValueInfo::tensor(
            "x",
            DataType::Float,
            &[Dim::Symbolic("batch".into()), Dim::Known(3), Dim::Unknown],
        );
        assert_eq!(describe_type(t.ty.as_ref()), "float32[batch,3,?]");
        let seq = TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::SequenceType(Box::new(
                type_proto::Sequence {
                    elem_type: t.ty.clone().map(Box::new),
                },
            ))),
        };
        assert_eq!(describe_type(Some(&seq)), "seq(float32[batch,3,?])");
        assert_eq!(describe_type(None), "?");
    }
}
