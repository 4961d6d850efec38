//! Where AWQ's `1/s` goes so the float model stays the same: the group's weights are scaled
//! row by row by `s` (one row per input channel) and the activation they read is divided by
//! `s` where it is produced, inside a constant of its producer, when the activation is read
//! by the group's nodes only:
//! - an RMSNorm/LayerNorm's gain: the fused `SimplifiedLayerNormalization`,
//!   `RMSNormalization`, `LayerNormalization` (scale and bias), ONNX Runtime's
//!   `SkipSimplifiedLayerNormalization` / `SkipLayerNormalization` (gamma and beta), or the
//!   decomposed form's last `Mul` by a constant (and `Add` of a constant after it: a
//!   LayerNorm's bias);
//! - a gated MLP's up projection: `Mul(a, MatMul(h, W_up))` divided by `s` is
//!   `Mul(a, MatMul(h, W_up · diag(1/s)))`, the output columns of `W_up` (which is then
//!   quantized as scaled).
//!
//! Elsewhere (attention output projections behind the heads' Transpose/Reshape, an activation
//! also read by other nodes) a `Mul` by `1/s` can be inserted in front of the group instead.
//! Every rewrite checks everything before it edits.

use std::collections::BTreeSet;

use crate::ir::{Dim, Graph, InputSlot, NameSet, Node, NodeIndex, NodeKind, ValueRef};
use crate::quant::bodies::label;
use crate::tensor::{DataType, Tensor};

/// A constant input of a node, divided by `s` along its last dim when folding.
pub(super) type Slot = (NodeIndex, usize);

/// The constants `1/s` folds into for the activation `act` (of `k` channels) read by the
/// nodes `group` (at input 0), with a description; or why there are none.
pub(super) fn fold_targets(
    graph: &Graph,
    act: ValueRef,
    k: usize,
    group: &BTreeSet<NodeIndex>,
) -> Result<(Vec<Slot>, String), String> {
    // Up through reshapes that keep the channel dim, each value read by the group (or the
    // reshape below it) only, or by Shape/Size (which see no values).
    let mut act = act;
    let mut readers: BTreeSet<NodeIndex> = group.clone();
    loop {
        if is_output(graph, act) {
            return Err(format!("'{}' is a graph output", graph.value_name(act)));
        }
        for (node, slot) in graph.consumers(act) {
            let n = &graph[node];
            let shape_only =
                matches!(n.op_type(), "Shape" | "Size") && matches!(n.domain(), "" | "ai.onnx");
            if !shape_only && (!readers.contains(&node) || slot != InputSlot::Operand(0)) {
                return Err(format!(
                    "the activation is also read by {} '{}'",
                    n.op_type(),
                    label(graph, node)
                ));
            }
        }
        match keeps_channels(graph, act, k) {
            Some(input) => {
                readers = BTreeSet::from([act.node]);
                act = input;
            }
            None => break,
        }
    }
    let producer = graph
        .node(act.node)
        .ok_or("the activation has no producer")?;
    if !producer.is_operator() {
        return Err("the activation is a graph input".into());
    }
    let op = producer.op_type();
    let named = |slots: Vec<Slot>, what: &str| -> (Vec<Slot>, String) {
        let names: Vec<String> = slots
            .iter()
            .filter_map(|&(n, s)| graph.input(n, s))
            .map(|v| format!("'{}'", graph.value_name(v)))
            .collect();
        (
            slots,
            format!(
                "{what} {} of {op} '{}'",
                names.join(" and "),
                label(graph, act.node)
            ),
        )
    };
    let only = |slots: &[Slot], what: &str| -> Result<(), String> {
        for &(n, s) in slots {
            channel_constant(graph, n, s, k, false)
                .map_err(|e| format!("{op} '{}': {what} {e}", label(graph, act.node)))?;
        }
        Ok(())
    };
    let domain_ok = matches!(producer.domain(), "" | "ai.onnx" | "com.microsoft");
    match op {
        _ if !domain_ok => Err(format!(
            "produced by {op} of domain '{}'",
            producer.domain()
        )),
        "SimplifiedLayerNormalization" | "RMSNormalization" | "LayerNormalization"
            if act.slot == 0 =>
        {
            let mut slots = vec![(act.node, 1)];
            if op == "LayerNormalization" && graph.input(act.node, 2).is_some() {
                slots.push((act.node, 2));
            }
            only(&slots, "scale")?;
            Ok(named(slots, "scale"))
        }
        "SkipSimplifiedLayerNormalization" | "SkipLayerNormalization" if act.slot == 0 => {
            let mut slots = vec![(act.node, 2)];
            if op == "SkipLayerNormalization" && graph.input(act.node, 3).is_some() {
                slots.push((act.node, 3));
            }
            only(&slots, "gamma")?;
            Ok(named(slots, "gamma"))
        }
        "Mul" => {
            if let Some(s) = constant_operand(graph, act.node, k) {
                return Ok(named(vec![(act.node, s)], "gain"));
            }
            // A gated MLP: the operand a MatMul with a constant weight computes.
            for slot in [1, 0] {
                if let Ok(t) = up_projection(graph, act.node, slot, k) {
                    let w = graph.input(t.0, 1).map(|v| graph.value_name(v).to_string());
                    return Ok((
                        vec![t],
                        format!(
                            "output columns of '{}' (MatMul '{}', read by Mul '{}')",
                            w.unwrap_or_default(),
                            label(graph, t.0),
                            label(graph, act.node)
                        ),
                    ));
                }
            }
            Err(format!(
                "produced by Mul '{}' with neither a constant gain of {k} channels nor a MatMul operand read only by it",
                label(graph, act.node)
            ))
        }
        "Add" => {
            // A LayerNorm's tail: Add(Mul(x̂, γ), β).
            let beta = constant_operand(graph, act.node, k).ok_or_else(|| {
                format!(
                    "produced by Add '{}' without a constant bias",
                    label(graph, act.node)
                )
            })?;
            let t = graph
                .input(act.node, 1 - beta)
                .ok_or("the Add has a missing operand")?;
            let mul = graph.node(t.node).filter(|n| n.op_type() == "Mul");
            let gamma = mul.and_then(|_| constant_operand(graph, t.node, k));
            match gamma {
                Some(g) if graph.consumers(t).len() == 1 && !is_output(graph, t) => {
                    Ok(named(vec![(t.node, g), (act.node, beta)], "gain and bias"))
                }
                _ => Err(format!(
                    "produced by Add '{}' whose other operand is not a Mul by a constant read only by it",
                    label(graph, act.node)
                )),
            }
        }
        _ => Err(format!(
            "produced by {op} '{}' (no constant to fold 1/s into)",
            label(graph, act.node)
        )),
    }
}

/// When `v` is made by a `Reshape` or `Identity` that keeps the last dim (`k` on both sides,
/// known), so channel `i` of its input is channel `i` of `v`: that input.
fn keeps_channels(graph: &Graph, v: ValueRef, k: usize) -> Option<ValueRef> {
    let node = graph.node(v.node)?;
    if !(node.is_operator() && matches!(node.domain(), "" | "ai.onnx")) {
        return None;
    }
    let input = graph.input(v.node, 0)?;
    let last = |x: ValueRef| match graph.value_info(x).shape()?.last() {
        Some(Dim::Known(d)) => Some(*d),
        _ => None,
    };
    match node.op_type() {
        "Identity" => Some(input),
        "Reshape" if last(v) == Some(k as i64) && last(input) == Some(k as i64) => Some(input),
        _ => None,
    }
}

fn is_output(graph: &Graph, v: ValueRef) -> bool {
    graph.outputs.iter().any(|o| o.value == v)
}

/// The slot of `node`'s constant operand that scales channel-wise (one value, or `k` along
/// the last dim), if any.
fn constant_operand(graph: &Graph, node: NodeIndex, k: usize) -> Option<usize> {
    (0..2).find(|&s| channel_constant(graph, node, s, k, true).is_ok())
}

/// Checks that input `slot` of `node` is a float32 constant divisible along its last dim:
/// `k` values there and 1 elsewhere, or (when `broadcast`) a single value.
fn channel_constant(
    graph: &Graph,
    node: NodeIndex,
    slot: usize,
    k: usize,
    broadcast: bool,
) -> Result<(), String> {
    let t = graph
        .constant_input(node, slot)
        .ok_or("is not a constant")?;
    if t.dtype() != DataType::Float {
        return Err(format!("is {}, not float32", t.dtype().name()));
    }
    let shape = t.shape();
    let per_channel = shape.last() == Some(&k) && shape.iter().rev().skip(1).all(|&d| d == 1);
    if per_channel || (broadcast && t.len() == 1) {
        Ok(())
    } else {
        Err(format!("has shape {shape:?}, not [{k}]"))
    }
}

/// `Mul`'s operand `slot` as the output of a MatMul with a constant float `[K', k]` weight
/// that only this Mul reads: the weight's slot.
fn up_projection(graph: &Graph, mul: NodeIndex, slot: usize, k: usize) -> Result<Slot, String> {
    let v = graph.input(mul, slot).ok_or("missing operand")?;
    let node = graph.node(v.node).ok_or("no producer")?;
    if !(node.is_operator()
        && node.op_type() == "MatMul"
        && matches!(node.domain(), "" | "ai.onnx"))
    {
        return Err("not a MatMul".into());
    }
    if graph.consumers(v).len() != 1 || is_output(graph, v) {
        return Err("the MatMul's output is read elsewhere too".into());
    }
    let w = graph.input(v.node, 1).ok_or("no weight")?;
    let t = graph.constant(w).ok_or("the weight is not a constant")?;
    if t.dtype() != DataType::Float || t.shape().len() != 2 || t.shape()[1] != k {
        return Err("the weight is not a float32 [K, k] matrix".into());
    }
    if graph.consumers(w).len() != 1 {
        return Err("the weight is read by other nodes".into());
    }
    Ok((v.node, 1))
}

/// Divides the constants at `slots` by `scales` along their last dim (a single value becomes
/// `k` of them); a constant read elsewhere too gets a copy of its own for that slot.
pub(super) fn divide(
    graph: &mut Graph,
    names: &mut NameSet,
    slots: &[Slot],
    scales: &[f32],
) -> Result<(), String> {
    let k = scales.len();
    let mut updated = Vec::with_capacity(slots.len());
    for &(node, slot) in slots {
        let v = graph.input(node, slot).ok_or("missing input")?;
        let t = graph.constant(v).ok_or("not a constant")?;
        let old: Vec<f32> = t.to_vec().map_err(|e| e.to_string())?;
        let (shape, new) = if old.len() == 1 && k != 1 {
            (vec![k], scales.iter().map(|&s| old[0] / s).collect())
        } else {
            let new: Vec<f32> = old
                .iter()
                .enumerate()
                .map(|(i, &x)| x / scales[i % k])
                .collect();
            (t.shape().to_vec(), new)
        };
        let t = Tensor::from_vec(shape, new).map_err(|e| e.to_string())?;
        updated.push((node, slot, v, t));
    }
    for (node, slot, v, t) in updated {
        replace_constant(graph, names, v, (node, slot), t, "awq");
    }
    Ok(())
}

/// Multiplies the constant weight `w` by `scales` along its axis `k_axis` (rows of a `[K, N]`
/// MatMul weight, columns of a `transB` Gemm's `[N, K]`); only the group reads it.
pub(super) fn scale_weight(
    graph: &mut Graph,
    w: ValueRef,
    k_axis: usize,
    scales: &[f32],
) -> Result<(), String> {
    let t = graph.constant(w).ok_or("the weight is not a constant")?;
    let &[rows, cols] = t.shape() else {
        return Err("the weight is not 2-D".into());
    };
    let k = if k_axis == 0 { rows } else { cols };
    if k != scales.len() {
        return Err(format!("{} scales for a K of {k}", scales.len()));
    }
    let mut v: Vec<f32> = t.to_vec().map_err(|e| e.to_string())?;
    for (i, x) in v.iter_mut().enumerate() {
        let channel = if k_axis == 0 { i / cols } else { i % cols };
        *x *= scales[channel];
    }
    let t = Tensor::from_vec(vec![rows, cols], v).map_err(|e| e.to_string())?;
    if let Some(NodeKind::Constant { value, .. }) = graph.node_mut(w.node).map(|n| &mut n.kind) {
        *value = t;
    }
    Ok(())
}

/// Inserts `Mul(act, 1/s)` and makes the nodes `readers` (at input 0) read it; the new node's
/// name.
pub(super) fn insert_mul(
    graph: &mut Graph,
    names: &mut NameSet,
    act: ValueRef,
    readers: &[NodeIndex],
    scales: &[f32],
) -> Result<String, String> {
    let base = graph.value_name(act).to_string();
    let inv: Vec<f32> = scales.iter().map(|&s| 1.0 / s).collect();
    let t = Tensor::from_vec(vec![scales.len()], inv).map_err(|e| e.to_string())?;
    let c = names.fresh(&format!("{base}_awq_inverse_scale"));
    let c = ValueRef::new(graph.add_node(Node::initializer(&c, t)), 0);
    let out = names.fresh(&format!("{base}_awq_scaled"));
    let name = names.fresh_node(&format!("{base}_awq_Mul"));
    let mul = graph.add_node(Node::op("Mul", &name, &[out.as_str()]));
    graph.connect(act, mul, 0);
    graph.connect(c, mul, 1);
    // Same type and shape as the activation.
    let mut info = graph.value_info(act).clone();
    info.name = out;
    *graph.value_info_mut(ValueRef::new(mul, 0)) = info;
    for &r in readers {
        graph.connect(ValueRef::new(mul, 0), r, 0);
    }
    Ok(name)
}

/// Puts `t` in place of the constant `v` read at `reader`: in the constant itself when only
/// `reader` reads it, else in a new initializer for `reader` alone.
fn replace_constant(
    graph: &mut Graph,
    names: &mut NameSet,
    v: ValueRef,
    reader: Slot,
    t: Tensor,
    suffix: &str,
) {
    if graph.consumers(v).len() == 1 && !is_output(graph, v) {
        if let Some(NodeKind::Constant { value, .. }) = graph.node_mut(v.node).map(|n| &mut n.kind)
        {
            *value = t;
        }
    } else {
        let name = names.fresh(&format!("{}_{suffix}", graph.value_name(v)));
        let own = ValueRef::new(graph.add_node(Node::initializer(&name, t)), 0);
        graph.connect(own, reader.0, reader.1);
    }
}
