//! Relu and Clip(min = 0) folded into their producer's quantization.
//!
//! With an asymmetric scheme and a range starting at 0, the zero point is `qmin`, so the
//! QuantizeLinear after the producer clamps negatives to exactly 0: the Relu adds nothing but
//! a second rounding. The producer then writes the Relu's output (name and range) directly.

use std::collections::HashMap;

use crate::ir::{AttrValue, Graph, InputSlot, NodeIndex, ValueRef};
use crate::quant::config::QuantConfig;

use super::rules::Rule;

/// A Relu/Clip to remove: its producer's output takes over its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Removal {
    /// The Relu or Clip node.
    pub node: NodeIndex,
    /// The producer's output it reads.
    pub input: ValueRef,
    /// Its output, whose readers move to `input`.
    pub output: ValueRef,
    /// Its output's name, which `input` takes.
    pub output_name: String,
}

/// The real lower bound an activation clamps to, if constant: 0 for Relu, Clip's `min`.
pub(crate) fn clamp_min(g: &Graph, idx: NodeIndex) -> Option<f64> {
    let node = &g[idx];
    match node.op_type() {
        "Relu" => Some(0.0),
        "Clip" => {
            // Opset < 11 keeps the bounds in attributes; later ones in inputs 1 and 2.
            if let Some(m) = node.attr("min").and_then(AttrValue::as_float) {
                return Some(m as f64);
            }
            let t = g.constant_input(idx, 1)?;
            match t.to_f64_vec()?.as_slice() {
                [m] => Some(*m),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether the Relu/Clip `idx` can be removed; `selected` holds the rule of every selected node.
pub(crate) fn removal(
    g: &Graph,
    idx: NodeIndex,
    selected: &HashMap<NodeIndex, Rule>,
    config: &QuantConfig,
) -> Option<Removal> {
    if clamp_min(g, idx) != Some(0.0) {
        return None;
    }
    let input = g.input(idx, 0)?;
    // The producer must give its output a range of its own (not shared, not fixed).
    let own_output = matches!(
        selected.get(&input.node),
        Some(Rule::Weighted | Rule::MatMul | Rule::Elementwise | Rule::OwnOutput | Rule::LayerNorm)
    );
    if !own_output || input.slot != 0 {
        return None;
    }
    if g.consumers(input) != [(idx, InputSlot::Operand(0))]
        || g.outputs.iter().any(|o| o.value == input)
        || config.overrides.contains_key(g.value_name(input))
    {
        return None;
    }
    let output = ValueRef::new(idx, 0);
    let output_name = g.value_name(output).to_string();
    if output_name.is_empty() || config.activation_scheme(&output_name).symmetric {
        return None;
    }
    // A fixed range reaching below 0 would put the zero point above qmin: no clamping.
    if let Some(r) = config.overrides.get(&output_name).and_then(|o| o.range) {
        if r.min < 0.0 {
            return None;
        }
    }
    Some(Removal {
        node: idx,
        input,
        output,
        output_name,
    })
}
