//! Nodes and edges of the graph, and how a constant remembers the form it was read in.

use kiln_proto::onnx::{
    NodeDeviceConfigurationProto, SparseTensorProto, StringStringEntryProto, TensorProto,
};

use super::attribute::{AttrValue, Attribute};
use super::value::ValueInfo;
use crate::tensor::{Tensor, TensorData};

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A graph input (in a subgraph: a body input such as a Loop's iteration counter).
    /// Its one output is the value; its name is the output's name.
    Input,
    /// A dense constant: an initializer or an ONNX `Constant` operator.
    Constant {
        /// The tensor.
        value: Tensor,
        /// Where it came from, so saving writes it back in the same form.
        origin: ConstantOrigin,
    },
    /// A `sparse_initializer`, kept verbatim (Kiln does not compute on sparse tensors).
    /// Its one output is named by `values.name`.
    SparseConstant {
        /// The tensor as read (boxed: it is large and rare).
        value: Box<SparseTensorProto>,
        /// It was also listed among the graph inputs.
        listed_as_input: bool,
    },
    /// Any other operator, known or not.
    Op {
        /// Operator type (`Conv`, `MatMul`, …).
        op_type: String,
        /// Operator set domain; empty for the default `ai.onnx`.
        domain: String,
        /// Function overload identifier (IR 10); usually empty.
        overload: String,
    },
    /// Inside a subgraph: a value the body reads from an enclosing scope, named by its one
    /// output. The node owning the subgraph has a [`InputSlot::Captured`] edge from the
    /// value's producer in the enclosing graph.
    Outer,
}

/// Where a [`NodeKind::Constant`] came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstantOrigin {
    /// A graph initializer.
    Initializer {
        /// The initializer was also listed among the graph inputs (IR < 4 exporters, or an
        /// overridable default); saving lists it there again, at the same position.
        listed_as_input: bool,
        /// The tensor as stored in the file.
        source: TensorSource,
    },
    /// An ONNX `Constant` operator.
    ConstantOp {
        /// Which attribute held the value.
        attr: ConstantAttr,
        /// The node's domain as written (`""` or `"ai.onnx"`).
        domain: String,
        /// The attribute's doc_string.
        attr_doc_string: String,
        /// For `value`, the tensor as stored in the file.
        source: TensorSource,
    },
}

/// The attribute of an ONNX `Constant` operator that holds its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstantAttr {
    /// `value` (a tensor).
    Value,
    /// `value_float` (a float32 scalar).
    ValueFloat,
    /// `value_floats` (a 1-D float32 tensor).
    ValueFloats,
    /// `value_int` (an int64 scalar).
    ValueInt,
    /// `value_ints` (a 1-D int64 tensor).
    ValueInts,
    /// `value_string` (a string scalar).
    ValueString,
    /// `value_strings` (a 1-D string tensor).
    ValueStrings,
}

impl ConstantAttr {
    /// The attribute's ONNX name.
    pub fn name(self) -> &'static str {
        match self {
            ConstantAttr::Value => "value",
            ConstantAttr::ValueFloat => "value_float",
            ConstantAttr::ValueFloats => "value_floats",
            ConstantAttr::ValueInt => "value_int",
            ConstantAttr::ValueInts => "value_ints",
            ConstantAttr::ValueString => "value_string",
            ConstantAttr::ValueStrings => "value_strings",
        }
    }

    /// The attribute for an ONNX name (`sparse_value` is not one: it stays an operator).
    pub fn from_name(name: &str) -> Option<ConstantAttr> {
        Some(match name {
            "value" => ConstantAttr::Value,
            "value_float" => ConstantAttr::ValueFloat,
            "value_floats" => ConstantAttr::ValueFloats,
            "value_int" => ConstantAttr::ValueInt,
            "value_ints" => ConstantAttr::ValueInts,
            "value_string" => ConstantAttr::ValueString,
            "value_strings" => ConstantAttr::ValueStrings,
            _ => return None,
        })
    }
}

/// A tensor exactly as the file stored it (field choice, doc_string, metadata, name).
///
/// Saving writes this back when the [`Tensor`] beside it still holds the same data, so an
/// untouched model is reproduced field for field; once a pass replaces the tensor, the
/// tensor's own encoding (`raw_data`) is written instead. `raw_data` is shared, not copied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorSource(Option<Box<TensorProto>>);

impl TensorSource {
    /// No stored form: the tensor is written in Kiln's own encoding.
    pub fn none() -> TensorSource {
        TensorSource(None)
    }

    pub(crate) fn of(p: &TensorProto) -> TensorSource {
        TensorSource(Some(Box::new(p.clone())))
    }

    /// The proto as read, whatever the tensor holds now.
    pub(crate) fn original(&self) -> Option<&TensorProto> {
        self.0.as_deref()
    }

    /// The name the stored proto had (empty if none).
    pub(crate) fn name(&self) -> &str {
        self.0.as_deref().map_or("", |p| p.name.as_str())
    }

    /// The stored proto, if `tensor` is still the tensor it decodes to.
    pub(crate) fn proto_for(&self, tensor: &Tensor) -> Option<&TensorProto> {
        let p = self.0.as_deref()?;
        if p.data_type != tensor.dtype().onnx() || p.dims != tensor.dims() {
            return None;
        }
        // Fast path: the tensor still views the very bytes that were read.
        if let TensorData::Raw(raw) = tensor.data() {
            if !p.raw_data.is_empty()
                && raw.as_ptr() == p.raw_data.as_ptr()
                && raw.len() == p.raw_data.len()
            {
                return Some(p);
            }
        }
        match Tensor::from_proto(p) {
            Ok(t) if &t == tensor => Some(p),
            _ => None,
        }
    }
}

/// One node of a [`super::Graph`].
///
/// Build one with [`Node::op`], [`Node::initializer`] or [`Node::input`] and add it with
/// [`super::Graph::add_node`]; the graph stamps it with an insertion sequence number that
/// breaks ties when nodes are ordered for saving.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// The node's name; may be empty (exporters often leave nodes unnamed).
    pub name: String,
    /// Typed attributes, in file order.
    pub attributes: Vec<Attribute>,
    /// The values the node produces, in slot order.
    pub outputs: Vec<ValueInfo>,
    /// How many input slots the node has, absent optional inputs included.
    pub input_arity: usize,
    /// Free-form documentation.
    pub doc_string: String,
    /// Key/value annotations.
    pub metadata_props: Vec<StringStringEntryProto>,
    /// Multi-device placement (IR 11), kept verbatim.
    pub device_configurations: Vec<NodeDeviceConfigurationProto>,
    pub(crate) seq: u64,
}

impl Node {
    fn with_kind(kind: NodeKind, name: String, outputs: Vec<ValueInfo>) -> Node {
        Node {
            kind,
            name,
            attributes: Vec::new(),
            outputs,
            input_arity: 0,
            doc_string: String::new(),
            metadata_props: Vec::new(),
            device_configurations: Vec::new(),
            seq: 0,
        }
    }

    /// An operator in the default domain with named outputs and no inputs yet
    /// ([`super::Graph::connect`] adds them).
    pub fn op(op_type: &str, name: &str, outputs: &[&str]) -> Node {
        Node::with_kind(
            NodeKind::Op {
                op_type: op_type.to_string(),
                domain: String::new(),
                overload: String::new(),
            },
            name.to_string(),
            outputs.iter().map(|&o| ValueInfo::new(o)).collect(),
        )
    }

    /// A new initializer named `name` (not listed as a graph input).
    pub fn initializer(name: &str, value: Tensor) -> Node {
        Node::with_kind(
            NodeKind::Constant {
                value,
                origin: ConstantOrigin::Initializer {
                    listed_as_input: false,
                    source: TensorSource::none(),
                },
            },
            String::new(),
            vec![ValueInfo::new(name)],
        )
    }

    /// A graph input.
    pub fn input(info: ValueInfo) -> Node {
        Node::with_kind(NodeKind::Input, String::new(), vec![info])
    }

    /// A reference to an enclosing scope's value named `name` (inside a subgraph).
    pub fn outer(name: &str) -> Node {
        Node::with_kind(NodeKind::Outer, String::new(), vec![ValueInfo::new(name)])
    }

    /// Builder: sets the operator domain (no effect on other kinds).
    pub fn with_domain(mut self, new_domain: &str) -> Node {
        if let NodeKind::Op { domain, .. } = &mut self.kind {
            *domain = new_domain.to_string();
        }
        self
    }

    /// Builder: appends an attribute.
    pub fn with_attr(mut self, name: &str, value: AttrValue) -> Node {
        self.attributes.push(Attribute::new(name, value));
        self
    }

    /// The operator type: `op_type` for operators, `Constant` (either origin), `Input`,
    /// `SparseConstant` or `Outer` for the others.
    pub fn op_type(&self) -> &str {
        match &self.kind {
            NodeKind::Op { op_type, .. } => op_type,
            NodeKind::Constant { .. } => "Constant",
            NodeKind::Input => "Input",
            NodeKind::SparseConstant { .. } => "SparseConstant",
            NodeKind::Outer => "Outer",
        }
    }

    /// The operator domain (empty for the default domain and for non-operators).
    pub fn domain(&self) -> &str {
        match &self.kind {
            NodeKind::Op { domain, .. } => domain,
            _ => "",
        }
    }

    /// True for `Op` nodes and `Constant` operators: the nodes written to `GraphProto.node`.
    pub fn is_operator(&self) -> bool {
        matches!(
            &self.kind,
            NodeKind::Op { .. }
                | NodeKind::Constant {
                    origin: ConstantOrigin::ConstantOp { .. },
                    ..
                }
        )
    }

    /// True when the node is written to `GraphProto.input` (an input, or a listed initializer).
    pub fn is_listed_input(&self) -> bool {
        matches!(
            &self.kind,
            NodeKind::Input
                | NodeKind::Constant {
                    origin: ConstantOrigin::Initializer {
                        listed_as_input: true,
                        ..
                    },
                    ..
                }
                | NodeKind::SparseConstant {
                    listed_as_input: true,
                    ..
                }
        )
    }

    /// The attribute named `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }

    /// The node's subgraphs (every GRAPH and GRAPHS attribute), in attribute order.
    pub fn subgraphs(&self) -> impl Iterator<Item = &super::Graph> {
        self.attributes.iter().flat_map(|a| a.value.graphs())
    }

    /// Mutable access to the node's subgraphs.
    pub fn subgraphs_mut(&mut self) -> impl Iterator<Item = &mut super::Graph> {
        self.attributes
            .iter_mut()
            .flat_map(|a| a.value.graphs_mut())
    }

    /// How errors and reports name this node (`'name' (OpType)` or `#index OpType`).
    pub fn label(&self, index: usize) -> String {
        super::error::node_label(&self.name, self.op_type(), index)
    }
}

/// Where an edge enters its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputSlot {
    /// An ordinary input, by position.
    Operand(usize),
    /// A value read by one of the consumer's subgraphs from this graph (by name, through an
    /// [`NodeKind::Outer`] node inside the body).
    Captured,
}

/// An edge: output `src_slot` of the source node flows into `dst` of the target node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Edge {
    /// The source node's output slot.
    pub src_slot: usize,
    /// Where it enters the target node.
    pub dst: InputSlot,
}
