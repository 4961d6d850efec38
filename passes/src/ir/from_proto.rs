//! ONNX `GraphProto` → [`Graph`].
//!
//! Names are resolved only after every producer of a graph is known, so nodes may come in any
//! order. A name a subgraph reads but does not produce is looked up in the enclosing graphs;
//! the body gets an `Outer` node for it, and each enclosing level down to the producer gets a
//! capture edge into the node owning the subgraph.

use std::collections::HashMap;

use kiln_proto::onnx::attribute_proto::AttributeType;
use kiln_proto::onnx::{AttributeProto, GraphProto, NodeProto, TensorProto};
use petgraph::stable_graph::NodeIndex;

use super::attribute::{AttrSource, AttrValue, Attribute};
use super::error::{node_label, IrError};
use super::graph::{Graph, GraphOutput, ValueInfoEntry};
use super::node::{ConstantAttr, ConstantOrigin, Edge, InputSlot, Node, NodeKind, TensorSource};
use super::to_proto::constant_attr_proto;
use super::value::{ValueInfo, ValueRef};
use crate::tensor::{Tensor, TensorError};

/// Who produced a name first, for duplicate messages.
#[derive(Clone, Copy)]
enum Producer {
    Node(usize),
    Initializer,
    SparseInitializer,
    Input,
}

/// The names a graph produces itself.
type Scope<'a> = HashMap<&'a str, (ValueRef, Producer)>;

/// Converts a main graph (no enclosing scope).
pub(crate) fn graph_from_proto(gp: &GraphProto) -> Result<Graph, IrError> {
    let (graph, captured) = convert(gp, &[])?;
    // With no enclosing scope nothing can be captured; `resolve` reports unknown names.
    debug_assert!(captured.is_empty());
    Ok(graph)
}

/// A graph under construction with its outer-scope bookkeeping.
struct Body<'s, 'a> {
    graph: Graph,
    local: &'s Scope<'a>,
    ancestors: &'s [&'s Scope<'a>],
    /// `Outer` nodes created so far, by name.
    outer: HashMap<String, NodeIndex>,
    /// Names read from enclosing scopes, in first-use order (the owner must capture them).
    captured: Vec<String>,
}

impl Body<'_, '_> {
    /// The value `name` refers to here: local, or an (existing or new) `Outer` node.
    fn resolve(&mut self, name: &str) -> Option<ValueRef> {
        if let Some((v, _)) = self.local.get(name) {
            return Some(*v);
        }
        if let Some(&idx) = self.outer.get(name) {
            return Some(ValueRef::new(idx, 0));
        }
        if name.is_empty() || !self.ancestors.iter().any(|s| s.contains_key(name)) {
            return None;
        }
        let idx = self.graph.push_node(Node::outer(name));
        self.outer.insert(name.to_string(), idx);
        self.captured.push(name.to_string());
        Some(ValueRef::new(idx, 0))
    }
}

fn describe(gp: &GraphProto, p: Producer) -> String {
    match p {
        Producer::Node(i) => gp.node.get(i).map_or_else(
            || format!("node #{i}"),
            |n| format!("node {}", node_label(&n.name, &n.op_type, i)),
        ),
        Producer::Initializer => "an initializer".to_string(),
        Producer::SparseInitializer => "a sparse initializer".to_string(),
        Producer::Input => "a graph input".to_string(),
    }
}

/// Records that `name` is produced by `v`; a second producer is an error naming both.
fn define<'a>(
    gp: &GraphProto,
    scope: &mut Scope<'a>,
    name: &'a str,
    v: ValueRef,
    who: Producer,
) -> Result<(), IrError> {
    if name.is_empty() {
        return Ok(());
    }
    if let Some(&(_, first)) = scope.get(name) {
        return Err(IrError::Duplicate {
            value: name.to_string(),
            first: describe(gp, first),
            second: describe(gp, who),
        });
    }
    scope.insert(name, (v, who));
    Ok(())
}

/// Converts one graph; returns it and the names it reads from enclosing scopes.
fn convert<'a>(
    gp: &'a GraphProto,
    ancestors: &[&Scope<'a>],
) -> Result<(Graph, Vec<String>), IrError> {
    check_depth(ancestors.len())?;
    let mut graph = Graph::new(&gp.name);
    graph.doc_string = gp.doc_string.clone();
    graph.metadata_props = gp.metadata_props.clone();
    graph.quantization_annotation = gp.quantization_annotation.clone();
    let mut local: Scope<'a> = HashMap::new();

    // Operators first, so a loaded graph's node index equals the node's position in the file
    // (error messages and `verify` then point at the right node).
    let mut node_idx = Vec::with_capacity(gp.node.len());
    for (i, np) in gp.node.iter().enumerate() {
        let label = node_label(&np.name, &np.op_type, i);
        let node = match constant_op(np, &label)? {
            Some(c) => c,
            None => op_node(np),
        };
        let idx = graph.push_node(node);
        node_idx.push(idx);
        for (slot, out) in np.output.iter().enumerate() {
            define(
                gp,
                &mut local,
                out,
                ValueRef::new(idx, slot),
                Producer::Node(i),
            )?;
        }
    }

    // The first graph input naming an initializer lists it; its ValueInfo is the input's.
    let mut first_input: HashMap<&str, usize> = HashMap::new();
    for (i, vi) in gp.input.iter().enumerate() {
        first_input.entry(vi.name.as_str()).or_insert(i);
    }
    let listed_info = |name: &str| {
        first_input
            .get(name)
            .and_then(|&i| gp.input.get(i))
            .map(ValueInfo::from_proto)
    };
    for t in &gp.initializer {
        let value = Tensor::from_proto(t)
            .map_err(|e| tensor_error(format!("initializer '{}'", t.name), e))?;
        let info = listed_info(&t.name);
        let node = Node {
            kind: NodeKind::Constant {
                value,
                origin: ConstantOrigin::Initializer {
                    listed_as_input: info.is_some(),
                    source: TensorSource::of(t),
                },
            },
            outputs: vec![info.unwrap_or_else(|| ValueInfo::new(&t.name))],
            ..Node::outer("")
        };
        let idx = graph.push_node(node);
        define(
            gp,
            &mut local,
            &t.name,
            ValueRef::new(idx, 0),
            Producer::Initializer,
        )?;
    }
    for (i, s) in gp.sparse_initializer.iter().enumerate() {
        let name = s.values.as_ref().map(|v| v.name.as_str()).ok_or_else(|| {
            IrError::Malformed(format!("sparse initializer #{i} has no values tensor"))
        })?;
        let info = listed_info(name);
        let node = Node {
            kind: NodeKind::SparseConstant {
                value: Box::new(s.clone()),
                listed_as_input: info.is_some(),
            },
            outputs: vec![info.unwrap_or_else(|| ValueInfo::new(name))],
            ..Node::outer("")
        };
        let idx = graph.push_node(node);
        define(
            gp,
            &mut local,
            name,
            ValueRef::new(idx, 0),
            Producer::SparseInitializer,
        )?;
    }
    for (i, vi) in gp.input.iter().enumerate() {
        let listed_constant = first_input.get(vi.name.as_str()) == Some(&i)
            && local.get(vi.name.as_str()).is_some_and(|(_, p)| {
                matches!(p, Producer::Initializer | Producer::SparseInitializer)
            });
        if listed_constant {
            if let Some((v, _)) = local.get(vi.name.as_str()) {
                graph.graph_inputs.push(v.node);
            }
            continue;
        }
        let idx = graph.push_node(Node::input(ValueInfo::from_proto(vi)));
        graph.graph_inputs.push(idx);
        define(
            gp,
            &mut local,
            &vi.name,
            ValueRef::new(idx, 0),
            Producer::Input,
        )?;
    }

    // Subgraphs of this graph's nodes see this graph's names (and everything enclosing it).
    let mut chain: Vec<&Scope<'a>> = ancestors.to_vec();
    chain.push(&local);
    let mut body = Body {
        graph,
        local: &local,
        ancestors,
        outer: HashMap::new(),
        captured: Vec::new(),
    };

    for (i, np) in gp.node.iter().enumerate() {
        let idx = node_idx[i];
        if matches!(body.graph.g[idx].kind, NodeKind::Constant { .. }) {
            continue;
        }
        let label = node_label(&np.name, &np.op_type, i);
        let mut captured = Vec::new();
        let mut attributes = Vec::with_capacity(np.attribute.len());
        for a in &np.attribute {
            attributes.push(attribute_from_proto(a, &label, &chain, &mut captured)?);
        }
        body.graph.g[idx].attributes = attributes;
        for (slot, name) in np.input.iter().enumerate() {
            if name.is_empty() {
                continue; // an absent optional input: no edge, the arity remembers the slot
            }
            let v = body.resolve(name).ok_or_else(|| IrError::UnknownValue {
                node: label.clone(),
                value: name.clone(),
            })?;
            body.graph.g.add_edge(
                v.node,
                idx,
                Edge {
                    src_slot: v.slot,
                    dst: InputSlot::Operand(slot),
                },
            );
        }
        for name in captured {
            let v = body.resolve(&name).ok_or_else(|| IrError::UnknownValue {
                node: label.clone(),
                value: name.clone(),
            })?;
            body.graph.capture(v, idx);
        }
    }

    for vi in &gp.output {
        let value = body
            .resolve(&vi.name)
            .ok_or_else(|| IrError::UnknownOutput {
                name: vi.name.clone(),
            })?;
        body.graph.outputs.push(GraphOutput {
            value,
            info: ValueInfo::from_proto(vi),
        });
    }

    attach_value_info(gp, &mut body);

    let (_, left) = body.graph.kahn();
    if !left.is_empty() {
        return Err(cycle_error(&body.graph, &left));
    }
    let Body {
        graph, captured, ..
    } = body;
    Ok((graph, captured))
}

/// Stops recursion into subgraphs before the stack does (a model built in memory never went
/// through the loader's wire scan, which enforces the same limit).
fn check_depth(depth: usize) -> Result<(), IrError> {
    if depth == 0 {
        return Ok(());
    }
    let limit = kiln_proto::Limits::from_env()
        .unwrap_or_default()
        .max_subgraph_depth;
    if depth as u64 <= limit {
        return Ok(());
    }
    Err(IrError::Malformed(format!(
        "a subgraph nesting depth of more than {limit} exceeds the limit of {limit} \
         (raise it with {}={})",
        kiln_proto::limits::ENV_SUBGRAPH_DEPTH,
        limit.saturating_mul(2).max(1)
    )))
}

/// Puts each value_info entry's type on the value it names; keeps the rest as leftovers.
///
/// Graph inputs keep the type the input list gives them; a value_info entry for one (or a
/// second entry for the same value) is a leftover, written back in its place.
fn attach_value_info(gp: &GraphProto, body: &mut Body<'_, '_>) {
    let mut attached = std::collections::HashSet::new();
    for vi in &gp.value_info {
        let name = vi.name.as_str();
        let target = body
            .local
            .get(name)
            .map(|(v, _)| *v)
            .or_else(|| body.outer.get(name).map(|&i| ValueRef::new(i, 0)));
        let slot = target
            .filter(|v| !body.graph.g[v.node].is_listed_input() && !attached.contains(name))
            .and_then(|v| {
                body.graph
                    .g
                    .node_weight_mut(v.node)
                    .and_then(|n| n.outputs.get_mut(v.slot))
            });
        match slot {
            Some(info) => {
                *info = ValueInfo::from_proto(vi);
                attached.insert(name);
                body.graph
                    .value_info_layout
                    .push(ValueInfoEntry::Attached(vi.name.clone()));
            }
            None => body
                .graph
                .value_info_layout
                .push(ValueInfoEntry::Unattached(vi.clone())),
        }
    }
}

/// Names the nodes that lie on cycles among those a topological sort could not place.
pub(crate) fn cycle_error(graph: &Graph, left: &[NodeIndex]) -> IrError {
    let mut on_cycle: Vec<NodeIndex> = petgraph::algo::tarjan_scc(&graph.g)
        .into_iter()
        .filter(|scc| scc.len() > 1 || graph.g.contains_edge(scc[0], scc[0]))
        .flatten()
        .collect();
    if on_cycle.is_empty() {
        on_cycle = left.to_vec();
    }
    on_cycle.sort_unstable();
    let mut names: Vec<String> = on_cycle.iter().take(10).map(|&i| graph.label(i)).collect();
    if on_cycle.len() > 10 {
        names.push(format!("and {} more", on_cycle.len() - 10));
    }
    IrError::Cycle {
        nodes: names.join(", "),
    }
}

fn tensor_error(what: String, source: TensorError) -> IrError {
    IrError::Tensor { what, source }
}

/// An `Op` node for `np`, with outputs and input arity; attributes and edges come later.
fn op_node(np: &NodeProto) -> Node {
    let mut node = Node::op(&np.op_type, &np.name, &[]);
    node.kind = NodeKind::Op {
        op_type: np.op_type.clone(),
        domain: np.domain.clone(),
        overload: np.overload.clone(),
    };
    node.outputs = np.output.iter().map(ValueInfo::new).collect();
    node.input_arity = np.input.len();
    node.doc_string = np.doc_string.clone();
    node.metadata_props = np.metadata_props.clone();
    node.device_configurations = np.device_configurations.clone();
    node
}

/// A `Constant` node for an ONNX `Constant` operator in one of its plain forms.
///
/// Anything unusual (extra attributes, `sparse_value`, an unset or unexpected attribute type,
/// stray fields) keeps the node an ordinary operator, which round-trips verbatim.
fn constant_op(np: &NodeProto, label: &str) -> Result<Option<Node>, IrError> {
    let plain = np.op_type == "Constant"
        && (np.domain.is_empty() || np.domain == "ai.onnx")
        && np.overload.is_empty()
        && np.input.is_empty()
        && np.output.len() == 1
        && !np.output[0].is_empty()
        && np.attribute.len() == 1;
    if !plain {
        return Ok(None);
    }
    let a = &np.attribute[0];
    let Some(attr) = ConstantAttr::from_name(&a.name) else {
        return Ok(None);
    };
    let expected = match attr {
        ConstantAttr::Value => AttributeType::Tensor,
        ConstantAttr::ValueFloat => AttributeType::Float,
        ConstantAttr::ValueFloats => AttributeType::Floats,
        ConstantAttr::ValueInt => AttributeType::Int,
        ConstantAttr::ValueInts => AttributeType::Ints,
        ConstantAttr::ValueString => AttributeType::String,
        ConstantAttr::ValueStrings => AttributeType::Strings,
    };
    if a.r#type != expected as i32 || !a.ref_attr_name.is_empty() {
        return Ok(None);
    }
    let what = || format!("node {label} attribute '{}'", a.name);
    let err = |e| tensor_error(what(), e);
    let (value, source) = match attr {
        ConstantAttr::Value => match &a.t {
            Some(t) => (Tensor::from_proto(t).map_err(err)?, TensorSource::of(t)),
            None => return Ok(None),
        },
        ConstantAttr::ValueFloat => (Tensor::scalar(a.f.unwrap_or(0.0)), TensorSource::none()),
        ConstantAttr::ValueFloats => (
            Tensor::from_vec(vec![a.floats.len()], a.floats.clone()).map_err(err)?,
            TensorSource::none(),
        ),
        ConstantAttr::ValueInt => (Tensor::scalar(a.i.unwrap_or(0)), TensorSource::none()),
        ConstantAttr::ValueInts => (
            Tensor::from_vec(vec![a.ints.len()], a.ints.clone()).map_err(err)?,
            TensorSource::none(),
        ),
        ConstantAttr::ValueString => (
            Tensor::from_strings(Vec::new(), vec![a.s.clone().unwrap_or_default()]).map_err(err)?,
            TensorSource::none(),
        ),
        ConstantAttr::ValueStrings => (
            Tensor::from_strings(vec![a.strings.len()], a.strings.clone()).map_err(err)?,
            TensorSource::none(),
        ),
    };
    // Only take the node apart if saving will put it back together identically.
    if !same_attr(
        &constant_attr_proto(&value, attr, &a.doc_string, &source),
        a,
    ) {
        return Ok(None);
    }
    let mut node = op_node(np);
    node.kind = NodeKind::Constant {
        value,
        origin: ConstantOrigin::ConstantOp {
            attr,
            domain: np.domain.clone(),
            attr_doc_string: a.doc_string.clone(),
            source,
        },
    };
    Ok(Some(node))
}

/// The attribute type an untyped attribute (old exporters) must have, from the field set.
fn infer_type(a: &AttributeProto) -> Option<AttributeType> {
    Some(if a.g.is_some() {
        AttributeType::Graph
    } else if a.t.is_some() {
        AttributeType::Tensor
    } else if a.sparse_tensor.is_some() {
        AttributeType::SparseTensor
    } else if a.tp.is_some() {
        AttributeType::TypeProto
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else if !a.sparse_tensors.is_empty() {
        AttributeType::SparseTensors
    } else if !a.type_protos.is_empty() {
        AttributeType::TypeProtos
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if a.s.is_some() {
        AttributeType::String
    } else if a.i.is_some() {
        AttributeType::Int
    } else if a.f.is_some() {
        AttributeType::Float
    } else {
        return None;
    })
}

/// Converts one attribute; subgraph conversion appends the names they capture.
fn attribute_from_proto<'a>(
    a: &'a AttributeProto,
    label: &str,
    chain: &[&Scope<'a>],
    captured: &mut Vec<String>,
) -> Result<Attribute, IrError> {
    let mut source = AttrSource::default();
    let ty = if a.r#type == 0 {
        let t = infer_type(a);
        source.untyped = t;
        t
    } else {
        AttributeType::try_from(a.r#type).ok()
    };
    let unknown = || IrError::UnknownAttributeType {
        node: label.to_string(),
        attribute: a.name.clone(),
        ty: a.r#type,
    };
    let ty = ty
        .filter(|t| *t != AttributeType::Undefined)
        .ok_or_else(unknown)?;
    let missing = |what: &str| {
        IrError::Malformed(format!(
            "node {label} attribute '{}' is {what} but holds none",
            a.name
        ))
    };
    let tensor = |t: &kiln_proto::onnx::TensorProto| {
        Tensor::from_proto(t)
            .map_err(|e| tensor_error(format!("node {label} attribute '{}'", a.name), e))
    };
    let mut subgraph = |g: &'a GraphProto| -> Result<Graph, IrError> {
        let (graph, caps) = convert(g, chain).map_err(|e| IrError::InSubgraph {
            owner: label.to_string(),
            attribute: a.name.clone(),
            source: Box::new(e),
        })?;
        for c in caps {
            if !captured.contains(&c) {
                captured.push(c);
            }
        }
        Ok(graph)
    };
    let value = match ty {
        AttributeType::Undefined => return Err(unknown()),
        AttributeType::Float => {
            source.scalar_absent = a.f.is_none();
            AttrValue::Float(a.f.unwrap_or(0.0))
        }
        AttributeType::Int => {
            source.scalar_absent = a.i.is_none();
            AttrValue::Int(a.i.unwrap_or(0))
        }
        AttributeType::String => {
            source.scalar_absent = a.s.is_none();
            AttrValue::String(a.s.clone().unwrap_or_default())
        }
        AttributeType::Tensor => {
            let t = a.t.as_ref().ok_or_else(|| missing("TENSOR"))?;
            source.tensors.push(TensorSource::of(t));
            AttrValue::Tensor(tensor(t)?)
        }
        AttributeType::Graph => {
            let g = a.g.as_ref().ok_or_else(|| missing("GRAPH"))?;
            AttrValue::Graph(Box::new(subgraph(g)?))
        }
        AttributeType::SparseTensor => AttrValue::SparseTensor(Box::new(
            a.sparse_tensor
                .clone()
                .ok_or_else(|| missing("SPARSE_TENSOR"))?,
        )),
        AttributeType::TypeProto => {
            AttrValue::TypeProto(a.tp.clone().ok_or_else(|| missing("TYPE_PROTO"))?)
        }
        AttributeType::Floats => AttrValue::Floats(a.floats.clone()),
        AttributeType::Ints => AttrValue::Ints(a.ints.clone()),
        AttributeType::Strings => AttrValue::Strings(a.strings.clone()),
        AttributeType::Tensors => {
            source.tensors = a.tensors.iter().map(TensorSource::of).collect();
            AttrValue::Tensors(a.tensors.iter().map(tensor).collect::<Result<_, _>>()?)
        }
        AttributeType::Graphs => AttrValue::Graphs(
            a.graphs
                .iter()
                .map(&mut subgraph)
                .collect::<Result<_, _>>()?,
        ),
        AttributeType::SparseTensors => AttrValue::SparseTensors(a.sparse_tensors.clone()),
        AttributeType::TypeProtos => AttrValue::TypeProtos(a.type_protos.clone()),
    };
    Ok(Attribute {
        name: a.name.clone(),
        value,
        doc_string: a.doc_string.clone(),
        ref_attr_name: a.ref_attr_name.clone(),
        source,
    })
}

/// Field-by-field equality with floats compared by bit pattern (a NaN constant is still the
/// same constant, while `PartialEq` on the proto says it is not).
fn same_attr(x: &AttributeProto, y: &AttributeProto) -> bool {
    let tensors_same = match (&x.t, &y.t) {
        (None, None) => true,
        (Some(a), Some(b)) => same_tensor(a, b),
        _ => false,
    };
    x.name == y.name
        && x.ref_attr_name == y.ref_attr_name
        && x.doc_string == y.doc_string
        && x.r#type == y.r#type
        && x.f.map(f32::to_bits) == y.f.map(f32::to_bits)
        && x.i == y.i
        && x.s == y.s
        && tensors_same
        && x.g == y.g
        && x.sparse_tensor == y.sparse_tensor
        && x.tp == y.tp
        && bits_eq(&x.floats, &y.floats, |f| f.to_bits() as u64)
        && x.ints == y.ints
        && x.strings == y.strings
        && x.tensors.len() == y.tensors.len()
        && x.tensors
            .iter()
            .zip(&y.tensors)
            .all(|(a, b)| same_tensor(a, b))
        && x.graphs == y.graphs
        && x.sparse_tensors == y.sparse_tensors
        && x.type_protos == y.type_protos
}

/// [`same_attr`] for tensors.
fn same_tensor(a: &TensorProto, b: &TensorProto) -> bool {
    a.dims == b.dims
        && a.data_type == b.data_type
        && a.segment == b.segment
        && bits_eq(&a.float_data, &b.float_data, |f| f.to_bits() as u64)
        && a.int32_data == b.int32_data
        && a.string_data == b.string_data
        && a.int64_data == b.int64_data
        && a.name == b.name
        && a.doc_string == b.doc_string
        && a.raw_data == b.raw_data
        && a.external_data == b.external_data
        && a.data_location == b.data_location
        && bits_eq(&a.double_data, &b.double_data, |f| f.to_bits())
        && a.uint64_data == b.uint64_data
        && a.metadata_props == b.metadata_props
}

fn bits_eq<T: Copy>(a: &[T], b: &[T], bits: impl Fn(T) -> u64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| bits(x) == bits(y))
}

#[cfg(test)]
mod depth_tests {
    use kiln_proto::onnx::attribute_proto::AttributeType;
    use kiln_proto::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto};

    use crate::ir::Model;

    /// `depth` If nodes, each the then_branch of the one above.
    fn nested(depth: usize) -> ModelProto {
        let mut g = GraphProto::default();
        for _ in 0..depth {
            g = GraphProto {
                node: vec![NodeProto {
                    op_type: "If".into(),
                    attribute: vec![AttributeProto {
                        name: "then_branch".into(),
                        r#type: AttributeType::Graph as i32,
                        g: Some(g),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
        }
        ModelProto {
            ir_version: 8,
            graph: Some(g),
            ..Default::default()
        }
    }

    #[test]
    fn a_model_built_in_memory_meets_the_depth_limit() {
        // The default (16) unless KILN_MAX_SUBGRAPH_DEPTH is set where the tests run.
        let limit = kiln_proto::Limits::from_env().unwrap().max_subgraph_depth as usize;
        assert!(Model::from_proto(&nested(limit)).is_ok());
        let err = Model::from_proto(&nested(limit + 1))
            .unwrap_err()
            .to_string();
        let expect = format!(
            "exceeds the limit of {limit} (raise it with KILN_MAX_SUBGRAPH_DEPTH={})",
            2 * limit
        );
        assert!(err.contains(&expect), "{err}");
    }
}
