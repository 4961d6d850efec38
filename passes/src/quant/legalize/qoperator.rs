//! ONNX Runtime's QOperator form to QDQ: each `QLinear*` / `QGemm` node becomes
//! `DequantizeLinear` on its integer inputs → the float op → `QuantizeLinear` with the node's
//! own output scale. That is the op's definition, so the scales are kept exactly; the QDQ form
//! is what QNN, the TFLite converters and ORT's own QDQ fusions take.

use std::collections::BTreeMap;

use crate::ir::{AttrValue, Attribute, Graph, Model, NameSet, NodeIndex, ValueRef};
use crate::opset::UpgradeOpset;
use crate::pipeline::{Pass, PassError};
use crate::tensor::Tensor;

use super::edit;
use super::Outcome;

/// An input of a QOperator node.
#[derive(Clone, Copy)]
enum Operand {
    /// An integer tensor with its scale and zero-point slots.
    Quantized {
        value: usize,
        scale: usize,
        zp: usize,
    },
    /// An int32 bias quantized with scale = scale(input 0) × scale(input 1), zero point 0.
    Bias(usize),
}

/// How one QOperator op maps to its float op.
struct Spec {
    op: &'static str,
    microsoft: bool,
    float_op: &'static str,
    operands: &'static [Operand],
    /// Output scale and zero-point slots; absent when the op's output is float.
    out: (usize, usize),
    /// Attributes the float op takes (all others are dropped, or refuse the node when set).
    attrs: &'static [&'static str],
}

const fn q(value: usize) -> Operand {
    Operand::Quantized {
        value,
        scale: value + 1,
        zp: value + 2,
    }
}

const CONV_ATTRS: &[&str] = &[
    "auto_pad",
    "dilations",
    "group",
    "kernel_shape",
    "pads",
    "strides",
];
const POOL_ATTRS: &[&str] = &[
    "auto_pad",
    "ceil_mode",
    "count_include_pad",
    "kernel_shape",
    "pads",
    "strides",
];

const SPECS: &[Spec] = &[
    Spec {
        op: "QLinearConv",
        microsoft: false,
        float_op: "Conv",
        operands: &[q(0), q(3), Operand::Bias(8)],
        out: (6, 7),
        attrs: CONV_ATTRS,
    },
    Spec {
        op: "QLinearMatMul",
        microsoft: false,
        float_op: "MatMul",
        operands: &[q(0), q(3)],
        out: (6, 7),
        attrs: &[],
    },
    Spec {
        op: "QGemm",
        microsoft: true,
        float_op: "Gemm",
        operands: &[q(0), q(3), Operand::Bias(6)],
        out: (7, 8),
        attrs: &["alpha", "transA", "transB"],
    },
    Spec {
        op: "QLinearAdd",
        microsoft: true,
        float_op: "Add",
        operands: &[q(0), q(3)],
        out: (6, 7),
        attrs: &[],
    },
    Spec {
        op: "QLinearMul",
        microsoft: true,
        float_op: "Mul",
        operands: &[q(0), q(3)],
        out: (6, 7),
        attrs: &[],
    },
    Spec {
        op: "QLinearSigmoid",
        microsoft: true,
        float_op: "Sigmoid",
        operands: &[q(0)],
        out: (3, 4),
        attrs: &[],
    },
    Spec {
        op: "QLinearLeakyRelu",
        microsoft: true,
        float_op: "LeakyRelu",
        operands: &[q(0)],
        out: (3, 4),
        attrs: &["alpha"],
    },
    Spec {
        op: "QLinearGlobalAveragePool",
        microsoft: true,
        float_op: "GlobalAveragePool",
        operands: &[q(0)],
        out: (3, 4),
        attrs: &[],
    },
    Spec {
        op: "QLinearAveragePool",
        microsoft: true,
        float_op: "AveragePool",
        operands: &[q(0)],
        out: (3, 4),
        attrs: POOL_ATTRS,
    },
    Spec {
        op: "QLinearSoftmax",
        microsoft: true,
        float_op: "Softmax",
        operands: &[q(0)],
        out: (3, 4),
        attrs: &["axis"],
    },
];

/// Whether `n` is a QOperator node this step knows, and its spec.
fn spec_of(g: &Graph, n: NodeIndex) -> Option<&'static Spec> {
    let node = &g[n];
    if !node.is_operator() {
        return None;
    }
    let ms = node.domain() == "com.microsoft";
    if !ms && !node.domain().is_empty() {
        return None;
    }
    SPECS
        .iter()
        .find(|s| s.op == node.op_type() && s.microsoft == ms)
}

/// Whether `n` is `com.microsoft.QLinearConcat`.
fn is_concat(g: &Graph, n: NodeIndex) -> bool {
    g[n].is_operator() && g[n].domain() == "com.microsoft" && g[n].op_type() == "QLinearConcat"
}

/// Rewrites every QOperator node of the main graph into QDQ form.
pub fn expand_qoperator(model: &mut Model) -> Result<Outcome, PassError> {
    let todo: Vec<NodeIndex> = model
        .graph
        .topo_order()
        .into_iter()
        .filter(|&n| spec_of(&model.graph, n).is_some() || is_concat(&model.graph, n))
        .collect();
    if todo.is_empty() {
        return Ok(Outcome::default());
    }
    // Per-channel DequantizeLinear (an `axis`) needs opset 13.
    if model.opset("").unwrap_or(0) < 13 {
        UpgradeOpset { target: 13 }.run(model)?;
    }
    let mut names = NameSet::of(&model.graph);
    let g = &mut model.graph;
    let mut out = Outcome::default();
    let mut by_op: BTreeMap<String, usize> = BTreeMap::new();
    let mut shared = Shared::default();
    for n in todo {
        let label = g[n].label(n.index());
        let op = g[n].op_type().to_string();
        let done = match spec_of(g, n) {
            Some(spec) => expand(g, &mut names, &mut shared, n, spec),
            None => expand_concat(g, &mut names, &mut shared, n),
        };
        match done {
            Ok(()) => *by_op.entry(op).or_default() += 1,
            Err(why) => out.kept.push(format!("{label} ({op}) kept: {why}")),
        }
    }
    g.verify()?;
    out.changed = by_op.values().sum();
    if out.changed > 0 {
        out.notes.push(format!(
            "QOperator → QDQ (scales kept): {}",
            by_op
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(out)
}

/// One `DequantizeLinear` per (value, scale, zero point), shared by every reader.
#[derive(Default)]
struct Shared {
    dq: BTreeMap<(ValueRef, ValueRef, Option<ValueRef>), ValueRef>,
}

impl Shared {
    fn dequantize(
        &mut self,
        g: &mut Graph,
        names: &mut NameSet,
        x: ValueRef,
        scale: ValueRef,
        zp: Option<ValueRef>,
        axis: Option<usize>,
    ) -> ValueRef {
        if let Some(&v) = self.dq.get(&(x, scale, zp)) {
            return v;
        }
        let v = edit::dequantize_linear(g, names, x, scale, zp, axis);
        self.dq.insert((x, scale, zp), v);
        v
    }
}

/// The channel axis of a per-channel weight read at `slot` of the QOperator node `n`.
fn weight_axis(g: &Graph, n: NodeIndex, slot: usize) -> Result<usize, String> {
    let rank = g
        .input(n, slot)
        .and_then(|v| g.constant(v).map(|t| t.shape().len()))
        .ok_or("a per-channel scale on a non-constant input")?;
    Ok(match (g[n].op_type(), slot) {
        ("QLinearConv", 3) => 0,
        ("QLinearMatMul", 3) => rank.saturating_sub(1),
        ("QGemm", 3) => {
            if g[n].attr("transB").and_then(AttrValue::as_int) == Some(1) {
                0
            } else {
                1
            }
        }
        _ => return Err("a per-channel scale on an activation".into()),
    })
}

/// Rewrites one node by its spec; on `Err` nothing was changed.
fn expand(
    g: &mut Graph,
    names: &mut NameSet,
    shared: &mut Shared,
    n: NodeIndex,
    spec: &Spec,
) -> Result<(), String> {
    for a in &g[n].attributes {
        let known = spec.attrs.contains(&a.name.as_str());
        let harmless = match a.name.as_str() {
            "channels_last" => a.value.as_int() == Some(0),
            // QLinearSoftmax's `opset`: its axis semantics; 13+ is Softmax-13's.
            "opset" => a.value.as_int().is_some_and(|v| v >= 13),
            _ => false,
        };
        if !known && !harmless {
            return Err(format!(
                "attribute '{}' has no float equivalent here",
                a.name
            ));
        }
    }
    if spec.op == "QLinearSoftmax" && g[n].attr("opset").is_none() {
        return Err("no 'opset' attribute to tell its axis semantics".into());
    }
    // Check everything first: an error must leave the node untouched.
    let mut scales = Vec::new();
    for op in spec.operands {
        match *op {
            Operand::Quantized { value, scale, zp } => {
                g.input(n, value).ok_or("an absent quantized input")?;
                let s = g.constant_input(n, scale).ok_or("a non-constant scale")?;
                scales.push(s.clone());
                if g.input(n, zp).is_some() && g.constant_input(n, zp).is_none() {
                    return Err("a non-constant zero point".into());
                }
                if s.len() > 1 {
                    weight_axis(g, n, value)?;
                }
            }
            Operand::Bias(slot) => {
                if g.input(n, slot).is_some() {
                    let b = g.constant_input(n, slot).ok_or("a non-constant bias")?;
                    if b.dtype() != crate::tensor::DataType::Int32 {
                        return Err("a bias that is not int32".into());
                    }
                }
            }
        }
    }
    let has_out = g.input(n, spec.out.0).is_some();
    if has_out && g.constant_input(n, spec.out.0).is_none() {
        return Err("a non-constant output scale".into());
    }
    let mut inputs = Vec::new();
    for op in spec.operands {
        match *op {
            Operand::Quantized { value, scale, zp } => {
                let x = g.input(n, value).ok_or("an absent input")?;
                let s = g.input(n, scale).ok_or("an absent scale")?;
                let z = g.input(n, zp);
                let per_channel = g.constant(s).is_some_and(|t| t.len() > 1);
                let axis = if per_channel {
                    Some(weight_axis(g, n, value)?)
                } else {
                    None
                };
                inputs.push(shared.dequantize(g, names, x, s, z, axis));
            }
            Operand::Bias(slot) => {
                let Some(b) = g.input(n, slot) else {
                    continue;
                };
                let scale = bias_scale(&scales).ok_or("bias scale shapes do not match")?;
                let per_channel = scale.len() > 1;
                let base = format!("{}_scale", g.value_name(b));
                let s = edit::constant(g, names, &base, scale);
                let axis = per_channel.then_some(0);
                inputs.push(edit::dequantize_linear(g, names, b, s, None, axis));
            }
        }
    }
    let attrs: Vec<Attribute> = g[n]
        .attributes
        .iter()
        .filter(|a| spec.attrs.contains(&a.name.as_str()))
        .cloned()
        .collect();
    let old = g.value_name(ValueRef::new(n, 0)).to_string();
    let float = edit::op(
        g,
        names,
        spec.float_op,
        &format!("{old}_float"),
        &inputs,
        attrs,
    );
    let result = if has_out {
        quantize_output(g, names, n, float, spec.out)?
    } else {
        float
    };
    let feeds = edit::feeds(g, n);
    edit::replace_node(g, n, result);
    edit::drop_unused(g, &feeds);
    Ok(())
}

/// `QuantizeLinear(float, scale, zero point)` with the QOperator node's output slots (the
/// caller checked the scale is there).
fn quantize_output(
    g: &mut Graph,
    names: &mut NameSet,
    n: NodeIndex,
    float: ValueRef,
    (scale, zp): (usize, usize),
) -> Result<ValueRef, String> {
    let mut inputs = vec![float, g.input(n, scale).ok_or("no output scale")?];
    inputs.extend(g.input(n, zp));
    let base = format!("{}_QuantizeLinear_Output", g.value_name(float));
    Ok(edit::op(
        g,
        names,
        "QuantizeLinear",
        &base,
        &inputs,
        Vec::new(),
    ))
}

/// scale(A) × scale(B), elementwise with broadcasting of a scalar.
fn bias_scale(scales: &[Tensor]) -> Option<Tensor> {
    let a = scales.first()?.to_f64_vec()?;
    let b = scales.get(1)?.to_f64_vec()?;
    let n = a.len().max(b.len());
    if (a.len() != 1 && a.len() != n) || (b.len() != 1 && b.len() != n) {
        return None;
    }
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let x = a[if a.len() == 1 { 0 } else { i }] as f32;
            let y = b[if b.len() == 1 { 0 } else { i }] as f32;
            x * y
        })
        .collect();
    Some(crate::quant::weights::params_tensor_f32(n > 1, v))
}

/// `QLinearConcat(Y_scale, Y_zp, (X, X_scale, X_zp)...)` → DQ each → `Concat` → Q.
fn expand_concat(
    g: &mut Graph,
    names: &mut NameSet,
    shared: &mut Shared,
    n: NodeIndex,
) -> Result<(), String> {
    let axis = g[n]
        .attr("axis")
        .and_then(AttrValue::as_int)
        .ok_or("no axis")?;
    let slots = g.inputs(n);
    if slots.len() < 5 || !(slots.len() - 2).is_multiple_of(3) {
        return Err("inputs are not (scale, zero point) then triples".into());
    }
    for (i, slot) in slots.iter().enumerate() {
        let is_value = i >= 2 && (i - 2) % 3 == 0;
        if is_value {
            slot.ok_or("an absent input")?;
        } else if slot.is_some() && g.constant_input(n, i).is_none() {
            return Err("a non-constant scale or zero point".into());
        }
    }
    if g.constant_input(n, 0).is_some_and(|t| t.len() > 1) {
        return Err("a per-channel output scale".into());
    }
    let mut inputs = Vec::new();
    for t in (2..slots.len()).step_by(3) {
        let (Some(x), Some(s)) = (slots[t], slots[t + 1]) else {
            return Err("an absent input scale".into());
        };
        inputs.push(shared.dequantize(g, names, x, s, slots[t + 2], None));
    }
    let old = g.value_name(ValueRef::new(n, 0)).to_string();
    let float = edit::op(
        g,
        names,
        "Concat",
        &format!("{old}_float"),
        &inputs,
        vec![Attribute::new("axis", AttrValue::Int(axis))],
    );
    let result = quantize_output(g, names, n, float, (0, 1))?;
    let feeds = edit::feeds(g, n);
    edit::replace_node(g, n, result);
    edit::drop_unused(g, &feeds);
    Ok(())
}
