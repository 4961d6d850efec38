//! Walks a graph in topological order, asks the rule of each operator for its output types,
//! merges them into what the model declares, writes them back, and recurses into subgraphs.

use std::collections::HashMap;

use kiln_proto::onnx::OperatorSetIdProto;

use crate::ir::{Graph, NodeIndex, NodeKind, ValueRef};
use crate::pipeline::Changes;

use super::control_flow;
use super::ctx::{Ctx, Input, SymValue};
use super::registry;
use super::symbolic;
use super::ty::{knowledge, merge, Ty};

/// What inference knows about one value.
#[derive(Debug, Clone, Default)]
pub struct Fact {
    /// Its type.
    pub ty: Ty,
    /// Its contents as dims, for shape arithmetic.
    pub sym: Option<SymValue>,
}

/// Values of enclosing graphs a body reads, by name.
pub type Scope = HashMap<String, Fact>;

/// What the walk needs of the model around the graph.
pub struct Opsets<'a> {
    /// The model's opset imports.
    pub imports: &'a [OperatorSetIdProto],
    /// Initializers listed as graph inputs are constants too (IR < 4, where every
    /// initializer must be listed and ONNX Runtime does not let a caller override them).
    pub listed_initializers_fixed: bool,
}

impl Opsets<'_> {
    /// The imported version of `domain` (`""` and `"ai.onnx"` are the same).
    pub fn get(&self, domain: &str) -> Option<i64> {
        let canon = |d: &str| if d == "ai.onnx" { "" } else { d }.to_string();
        let want = canon(domain);
        self.imports
            .iter()
            .find(|o| canon(&o.domain) == want)
            .map(|o| o.version)
    }
}

/// The tensor a value always holds (see [`Opsets::listed_initializers_fixed`]).
fn constant<'g>(
    graph: &'g Graph,
    v: ValueRef,
    opsets: &Opsets<'_>,
) -> Option<&'g crate::tensor::Tensor> {
    match &graph.node(v.node)?.kind {
        NodeKind::Constant { value, .. } if opsets.listed_initializers_fixed && v.slot == 0 => {
            Some(value)
        }
        _ => graph.constant(v),
    }
}

/// Infers every value of `graph` (and its subgraphs); returns the types of its outputs.
///
/// `hints` are types for the graph's inputs (by position) that its owner knows, used where
/// an input declares nothing (Loop and Scan bodies).
pub fn infer_graph(
    graph: &mut Graph,
    opsets: &Opsets<'_>,
    outer: &Scope,
    hints: &[Ty],
    changes: &mut Changes,
) -> Vec<Ty> {
    let mut facts: HashMap<ValueRef, Fact> = HashMap::new();
    for idx in graph.topo_order() {
        match &graph[idx].kind {
            NodeKind::Op { .. } => infer_op(graph, idx, opsets, &mut facts, changes),
            _ => {
                let fact = source_fact(graph, idx, opsets, outer, hints);
                facts.insert(ValueRef::new(idx, 0), fact);
            }
        }
    }
    let outputs: Vec<(ValueRef, Option<kiln_proto::onnx::TypeProto>)> = graph
        .outputs
        .iter()
        .map(|o| (o.value, o.info.ty.clone()))
        .collect();
    outputs
        .into_iter()
        .map(|(v, declared)| {
            let inferred = facts.get(&v).map(|f| f.ty.clone()).unwrap_or_default();
            merge(&Ty::from_proto(declared.as_ref()), &inferred).ty
        })
        .collect()
}

/// The type of an input, constant or outer value.
fn source_fact(
    graph: &Graph,
    idx: NodeIndex,
    opsets: &Opsets<'_>,
    outer: &Scope,
    hints: &[Ty],
) -> Fact {
    let node = &graph[idx];
    let Some(info) = node.outputs.first() else {
        return Fact::default();
    };
    let declared = Ty::from_proto(info.ty.as_ref());
    let v = ValueRef::new(idx, 0);
    match &node.kind {
        NodeKind::Input => {
            let hint = graph
                .graph_inputs
                .iter()
                .position(|&i| i == idx)
                .and_then(|p| hints.get(p))
                .cloned()
                .unwrap_or_default();
            Fact {
                ty: merge(&declared, &hint).ty,
                sym: None,
            }
        }
        NodeKind::Constant { value, .. } => {
            let ty = Ty::known(
                value.dtype(),
                value
                    .shape()
                    .iter()
                    .map(|&d| crate::ir::Dim::Known(d as i64))
                    .collect(),
            );
            Fact {
                ty: merge(&declared, &ty).ty,
                // An overridable initializer is only a default: its contents are not known.
                sym: constant(graph, v, opsets).and_then(SymValue::of_tensor),
            }
        }
        NodeKind::Outer => {
            let fact = outer.get(&info.name).cloned().unwrap_or_default();
            Fact {
                ty: merge(&declared, &fact.ty).ty,
                sym: fact.sym,
            }
        }
        _ => Fact {
            ty: declared,
            sym: None,
        },
    }
}

/// Infers one operator's outputs and records them.
fn infer_op(
    graph: &mut Graph,
    idx: NodeIndex,
    opsets: &Opsets<'_>,
    facts: &mut HashMap<ValueRef, Fact>,
    changes: &mut Changes,
) {
    let node = &graph[idx];
    let domain = node.domain().to_string();
    let op_type = node.op_type().to_string();
    let opset = opsets.get(&domain).unwrap_or(0);
    let default_domain = domain.is_empty() || domain == "ai.onnx";
    let has_bodies = node.subgraphs().next().is_some();

    let (inferred, sym) = if has_bodies {
        let outs = infer_bodies(
            graph,
            idx,
            &op_type,
            default_domain,
            opset,
            opsets,
            facts,
            changes,
        );
        (outs, None)
    } else {
        let inputs = graph.inputs(idx);
        let ctx = Ctx {
            node: &graph[idx],
            opset,
            inputs: inputs
                .iter()
                .map(|i| {
                    i.map(|v| {
                        let fact = facts.get(&v);
                        Input {
                            ty: fact.map_or(&UNKNOWN_TY, |f| &f.ty),
                            constant: constant(graph, v, opsets),
                            sym: fact.and_then(|f| f.sym.as_ref()),
                        }
                    })
                })
                .collect(),
        };
        match registry::rule(&domain, &op_type) {
            Some(rule) => (
                rule(&ctx).unwrap_or_default(),
                symbolic::propagate(&op_type, &ctx),
            ),
            // Unknown operators and custom domains: outputs keep what they declare.
            None => (Vec::new(), None),
        }
    };
    record_outputs(graph, idx, inferred, sym, facts, changes);
}

static UNKNOWN_TY: Ty = Ty::Unknown;

/// Infers the subgraphs of `idx` and, for If, Loop and Scan, the node's outputs from them.
#[allow(clippy::too_many_arguments)]
fn infer_bodies(
    graph: &mut Graph,
    idx: NodeIndex,
    op_type: &str,
    default_domain: bool,
    opset: i64,
    opsets: &Opsets<'_>,
    facts: &HashMap<ValueRef, Fact>,
    changes: &mut Changes,
) -> Vec<Ty> {
    let input_tys: Vec<Ty> = graph
        .inputs(idx)
        .iter()
        .map(|i| {
            i.and_then(|v| facts.get(&v))
                .map(|f| f.ty.clone())
                .unwrap_or_default()
        })
        .collect();
    let scope: Scope = graph
        .captures(idx)
        .into_iter()
        .map(|v| {
            (
                graph.value_name(v).to_string(),
                facts.get(&v).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let hints = if default_domain {
        control_flow::body_hints(op_type, &graph[idx], opset, &input_tys)
    } else {
        Vec::new()
    };
    let node = &mut graph[idx];
    let mut body_outputs: Vec<(String, Vec<Ty>)> = Vec::new();
    for attr in node.attributes.iter_mut() {
        for body in attr.value.graphs_mut() {
            let outs = infer_graph(body, opsets, &scope, &hints, changes);
            body_outputs.push((attr.name.clone(), outs));
        }
    }
    if !default_domain {
        return Vec::new();
    }
    control_flow::outputs(op_type, &graph[idx], opset, &input_tys, &body_outputs)
}

/// Merges each inferred output into its declarations, writes it back and counts changes.
fn record_outputs(
    graph: &mut Graph,
    idx: NodeIndex,
    inferred: Vec<Ty>,
    sym: Option<SymValue>,
    facts: &mut HashMap<ValueRef, Fact>,
    changes: &mut Changes,
) {
    let n = graph[idx].outputs.len();
    let mut inferred = inferred.into_iter();
    for slot in 0..n {
        let v = ValueRef::new(idx, slot);
        let guess = inferred.next().unwrap_or_default();
        if graph[idx].outputs[slot].name.is_empty() {
            continue;
        }
        let node_declared = Ty::from_proto(graph[idx].outputs[slot].ty.as_ref());
        let out_positions: Vec<usize> = graph
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.value == v)
            .map(|(i, _)| i)
            .collect();
        // Every declaration of the value: its value_info and each graph output naming it.
        let mut declared = node_declared.clone();
        for &p in &out_positions {
            declared = merge(
                &declared,
                &Ty::from_proto(graph.outputs[p].info.ty.as_ref()),
            )
            .ty;
        }
        let m = merge(&declared, &guess);
        if m.conflict {
            changes.add("conflicts", 1);
        }
        let (had_elem, had_shape) = knowledge(&declared);
        let (has_elem, has_shape) = knowledge(&m.ty);
        if has_elem && !had_elem {
            changes.add("typed", 1);
        }
        if has_shape > had_shape {
            changes.add("shaped", 1);
        }
        if let Some(tp) = m.ty.to_proto() {
            for &p in &out_positions {
                let info = &mut graph.outputs[p].info;
                let refined = merge(&Ty::from_proto(info.ty.as_ref()), &m.ty).ty;
                if let Some(new) = refined.to_proto() {
                    if info.ty.as_ref() != Some(&new) {
                        info.ty = Some(new);
                    }
                }
            }
            // A graph output carries its type in the output list; value_info only where the
            // model already had an entry for it.
            let info = &mut graph[idx].outputs[slot];
            if out_positions.is_empty() || info.ty.is_some() {
                let refined = merge(&node_declared, &m.ty).ty;
                let new = refined.to_proto().unwrap_or(tp);
                if info.ty.as_ref() != Some(&new) {
                    info.ty = Some(new);
                }
            }
        }
        let sym = if slot == 0 && !m.conflict {
            sym.clone()
        } else {
            None
        };
        facts.insert(v, Fact { ty: m.ty, sym });
    }
}
