//! Which nodes of the main graph are candidates for quantization, and why the others of a
//! quantizable type are left in float.

use crate::ir::{Graph, InputSlot, NodeIndex, NodeKind, ValueRef};
use crate::quant::config::{PinFloat, QuantConfig};
use crate::tensor::DataType;

use super::rules::{rule, Rule, DEFAULT_OP_TYPES};
use super::types::Types;

/// What to do with one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Quantize it by this rule (conditional rules still need a quantized input).
    Quantize(Rule),
    /// Leave it float, and say why in the report.
    Skip(String),
    /// Not asked for: leave it float without a word.
    Ignore,
}

/// How reports name a node: its name, or its first output's name when it has none.
pub(crate) fn node_id(g: &Graph, idx: NodeIndex) -> String {
    let node = &g[idx];
    if !node.name.is_empty() {
        return node.name.clone();
    }
    node.outputs
        .iter()
        .find(|o| !o.name.is_empty())
        .map_or_else(|| format!("#{}", idx.index()), |o| o.name.clone())
}

/// Whether `op_type` is asked for by the configuration (before exclusions and pinning).
pub(crate) fn wanted_type(config: &QuantConfig, op_type: &str) -> bool {
    match &config.op_types {
        Some(set) => set.contains(op_type),
        None => DEFAULT_OP_TYPES.contains(&op_type),
    }
}

/// Decides what to do with operator `idx` of the main graph.
pub(crate) fn select(g: &Graph, idx: NodeIndex, config: &QuantConfig, types: &Types) -> Selection {
    let node = &g[idx];
    let NodeKind::Op {
        op_type, domain, ..
    } = &node.kind
    else {
        return Selection::Ignore;
    };
    if !wanted_type(config, op_type) {
        return Selection::Ignore;
    }
    let id = node_id(g, idx);
    if let Some(only) = &config.only_nodes {
        if !only.contains(&id) {
            return Selection::Ignore;
        }
    }
    let known = if domain.is_empty() || domain == "ai.onnx" {
        rule(op_type)
    } else {
        None
    };
    let Some(rule) = known else {
        return Selection::Skip(format!("no quantization rule for {op_type}"));
    };
    if config.pin_ops.contains(op_type.as_str()) {
        let float = match config.pin_float {
            PinFloat::Float16 => "float16",
            PinFloat::Bfloat16 => "bfloat16",
        };
        return Selection::Skip(format!("pinned to {float} (pin_ops), not quantized"));
    }
    if config.exclude_nodes.contains(&id) {
        return Selection::Skip("excluded by name (exclude_nodes)".into());
    }
    if config.exclude_op_types.contains(op_type.as_str()) {
        return Selection::Skip(format!("{op_type} is excluded (exclude_op_types)"));
    }
    let inputs = g.inputs(idx);
    for slot in rule.data_slots(inputs.len()) {
        let Some(v) = inputs.get(slot).copied().flatten() else {
            continue;
        };
        let name = g.value_name(v);
        match types.get(v) {
            Some(DataType::Float) => {}
            Some(t) => return Selection::Skip(format!("input '{name}' is {t}, not float32")),
            None => return Selection::Skip(format!("element type of input '{name}' is unknown")),
        }
        if is_dequantized(g, v) || feeds_quantize(g, v) {
            return Selection::Skip(format!("already quantized (input '{name}' has Q/DQ)"));
        }
    }
    if (0..node.outputs.len()).any(|s| feeds_quantize(g, ValueRef::new(idx, s))) {
        return Selection::Skip("already quantized (its output has Q/DQ)".into());
    }
    Selection::Quantize(rule)
}

/// Whether `v` is the output of a DequantizeLinear.
pub(crate) fn is_dequantized(g: &Graph, v: ValueRef) -> bool {
    g[v.node].op_type() == "DequantizeLinear"
}

/// Whether a QuantizeLinear reads `v`.
pub(crate) fn feeds_quantize(g: &Graph, v: ValueRef) -> bool {
    g.consumers(v)
        .iter()
        .any(|&(n, s)| matches!(s, InputSlot::Operand(_)) && g[n].op_type() == "QuantizeLinear")
}
