//! Typed node attributes.

use bytes::Bytes;
use kiln_proto::onnx::attribute_proto::AttributeType;
use kiln_proto::onnx::{SparseTensorProto, TypeProto};

use super::graph::Graph;
use super::node::TensorSource;
use crate::tensor::Tensor;

/// An attribute's value, one variant per ONNX attribute type.
///
/// Tensors are decoded (weights in attributes are real weights); subgraphs are converted to
/// nested [`Graph`]s; sparse tensors and type protos are kept as the protobuf messages.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// FLOAT.
    Float(f32),
    /// INT.
    Int(i64),
    /// STRING (bytes; usually UTF-8).
    String(Bytes),
    /// TENSOR.
    Tensor(Tensor),
    /// GRAPH (If branches, Loop and Scan bodies).
    Graph(Box<Graph>),
    /// SPARSE_TENSOR.
    SparseTensor(Box<SparseTensorProto>),
    /// TYPE_PROTO.
    TypeProto(TypeProto),
    /// FLOATS.
    Floats(Vec<f32>),
    /// INTS.
    Ints(Vec<i64>),
    /// STRINGS.
    Strings(Vec<Bytes>),
    /// TENSORS.
    Tensors(Vec<Tensor>),
    /// GRAPHS.
    Graphs(Vec<Graph>),
    /// SPARSE_TENSORS.
    SparseTensors(Vec<SparseTensorProto>),
    /// TYPE_PROTOS.
    TypeProtos(Vec<TypeProto>),
}

impl AttrValue {
    /// The ONNX attribute type of this value.
    pub fn attr_type(&self) -> AttributeType {
        match self {
            AttrValue::Float(_) => AttributeType::Float,
            AttrValue::Int(_) => AttributeType::Int,
            AttrValue::String(_) => AttributeType::String,
            AttrValue::Tensor(_) => AttributeType::Tensor,
            AttrValue::Graph(_) => AttributeType::Graph,
            AttrValue::SparseTensor(_) => AttributeType::SparseTensor,
            AttrValue::TypeProto(_) => AttributeType::TypeProto,
            AttrValue::Floats(_) => AttributeType::Floats,
            AttrValue::Ints(_) => AttributeType::Ints,
            AttrValue::Strings(_) => AttributeType::Strings,
            AttrValue::Tensors(_) => AttributeType::Tensors,
            AttrValue::Graphs(_) => AttributeType::Graphs,
            AttrValue::SparseTensors(_) => AttributeType::SparseTensors,
            AttrValue::TypeProtos(_) => AttributeType::TypeProtos,
        }
    }

    /// The subgraphs this value holds (none unless GRAPH or GRAPHS).
    pub fn graphs(&self) -> &[Graph] {
        match self {
            AttrValue::Graph(g) => std::slice::from_ref(&**g),
            AttrValue::Graphs(gs) => gs,
            _ => &[],
        }
    }

    /// Mutable access to the subgraphs this value holds.
    pub fn graphs_mut(&mut self) -> &mut [Graph] {
        match self {
            AttrValue::Graph(g) => std::slice::from_mut(&mut **g),
            AttrValue::Graphs(gs) => gs,
            _ => &mut [],
        }
    }

    /// The integer, if this is INT.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The float, if this is FLOAT.
    pub fn as_float(&self) -> Option<f32> {
        match self {
            AttrValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The integers, if this is INTS.
    pub fn as_ints(&self) -> Option<&[i64]> {
        match self {
            AttrValue::Ints(v) => Some(v),
            _ => None,
        }
    }

    /// The string as UTF-8, if this is STRING and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::String(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }
}

/// How an attribute was written in the file, beyond its value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttrSource {
    /// The `type` field was unset (old exporters) and this type was inferred from the field
    /// set; saving leaves `type` unset again while the value still has that type.
    pub(crate) untyped: Option<AttributeType>,
    /// A FLOAT / INT / STRING attribute whose value field was absent (read as the zero
    /// value); saving leaves it absent again while the value is still zero.
    pub(crate) scalar_absent: bool,
    /// For TENSOR / TENSORS, each tensor as stored.
    pub(crate) tensors: Vec<TensorSource>,
}

/// A named attribute of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// The attribute's name.
    pub name: String,
    /// Its value.
    pub value: AttrValue,
    /// Free-form documentation.
    pub doc_string: String,
    /// In function bodies, the caller's attribute this one refers to (kept as read).
    pub ref_attr_name: String,
    /// How the file wrote it, so an unchanged attribute is saved identically.
    pub source: AttrSource,
}

impl Attribute {
    /// An attribute with a name and value.
    pub fn new(name: &str, value: AttrValue) -> Attribute {
        Attribute {
            name: name.to_string(),
            value,
            doc_string: String::new(),
            ref_attr_name: String::new(),
            source: AttrSource::default(),
        }
    }
}
