//! Apple Neural Engine: activations stay float and compute in the profile's `precision.compute`
//! (bfloat16, or float16 for `ane-fp16`), weights are compressed to int8 per-channel with a
//! DequantizeLinear in front (only tensors of at least `weights.min_elements`, Core ML's
//! `weight_threshold`), and pinned ops (LayerNorm, Softmax, RMSNorm: decomposed ones as a unit)
//! compute in `precision.pin_float`.
//! ORT's CPU provider has no bfloat16 kernel for most ops, so the simulated twin is emitted
//! beside the model and validated instead.
//!
//! A profile with per-block weights (`ane-int4`) compresses MatMul/Gemm weights to int4/int8
//! blocks instead, in the QDQ form: an opset-21 DequantizeLinear with `block_size` on an int4
//! initializer. That is what Core ML's per-block weights are: coremltools'
//! `linear_quantize_weights` with `granularity="per_block"` writes
//! `constexpr_blockwise_shift_scale` (data, one scale and optional offset per block, expanded
//! to the compute type before the op; iOS 18 / macOS 15), the same numbers and layout.

use std::collections::BTreeSet;

use kiln_passes::ir::{AttrValue, Model, Node, ValueRef};
use kiln_passes::opset::UpgradeOpset;
use kiln_passes::pipeline::Pass;
use kiln_passes::quant::weights::quantize_weight;
use kiln_passes::quant::{PinFloat, QuantScheme};
use kiln_passes::tensor::DataType;

use super::super::error::CompileError;
use super::super::Context;
use super::pinning::{describe, pin_both, Pin};
use super::{blockwise, Emitted};
use crate::profile::{quant_type, FloatType};

/// Builds the pipeline, compresses weights, pins compute precision, emits model and twin.
pub fn compile(mut model: Model, cx: &Context) -> Result<Emitted, CompileError> {
    let p = &cx.profile;
    if p.quantizes_activations() {
        return Err(CompileError::Unsupported {
            profile: p.name.clone(),
            what:
                "the ane target keeps activations in float; integer activations are not supported"
                    .into(),
        });
    }
    // DequantizeLinear with an axis and Cast to bfloat16 both need opset 13.
    if model.opset("").unwrap_or(0) < 13 {
        UpgradeOpset { target: 13 }.run(&mut model)?;
    }
    let mut legalized = Vec::new();
    let mut quantize = None;
    if let Some(block) = p.blockwise_config() {
        let (report, line) = blockwise::run(&mut model, block, cx)?;
        legalized.push(line);
        quantize = Some(report);
    } else if p.quantizes_weights() {
        let n = compress_weights(&mut model, cx)?;
        legalized.extend((n > 0).then(|| {
            format!(
                "{n} weight(s) compressed to {} {}",
                p.quantization.weights.dtype.name(),
                if p.weight_per_channel("Conv") {
                    "per-channel"
                } else {
                    "per-tensor"
                }
            )
        }));
    }
    let view = model.clone();
    let pinned: BTreeSet<String> = p.precision.pin_ops.iter().cloned().collect();
    let float = |f: FloatType| match f {
        FloatType::Bfloat16 => Some(PinFloat::Bfloat16),
        FloatType::Float16 => Some(PinFloat::Float16),
        FloatType::Float32 => None,
    };
    // Pinned ops first: a decomposed RMSNorm pinned as a unit (pin_ops naming
    // RMSNormalization) marks its nodes, which the compute-type step then leaves alone.
    let mut pins = Vec::new();
    if let Some(pin) = float(p.precision.pin_float) {
        pins.push(Pin {
            ops: pinned.clone(),
            float: pin,
        });
    }
    if let Some(compute) = float(p.precision.compute) {
        // Every float op the device runs computes in the compute type; fallbacks stay float32.
        let ops: BTreeSet<String> = model
            .graph
            .nodes()
            .filter(|(_, n)| n.is_operator() && n.domain().is_empty())
            .map(|(_, n)| n.op_type().to_string())
            .filter(|op| p.supports(op).is_some() && !pinned.contains(op))
            .collect();
        pins.push(Pin {
            ops,
            float: compute,
        });
    }
    let (sim, changes) = pin_both(&mut model, &pins)?;
    legalized.push(format!(
        "compute in {} (pinned {} in {}): {}",
        p.precision.compute.name(),
        p.precision.pin_ops.join(", "),
        p.precision.pin_float.name(),
        describe(&changes)
    ));
    Ok(Emitted {
        model,
        sim,
        validate_instead: None,
        partition_view: Some(view),
        quantize,
        legalized,
        integer_only: false,
        quantized_io: Vec::new(),
    })
}

/// Replaces constant float32 weights of Conv, ConvTranspose, Gemm and MatMul by integer ones
/// behind a DequantizeLinear; returns how many.
fn compress_weights(model: &mut Model, cx: &Context) -> Result<usize, CompileError> {
    let p = &cx.profile;
    let w = &p.quantization.weights;
    let scheme = QuantScheme {
        dtype: quant_type(w.dtype),
        symmetric: w.symmetric,
        reduce_range: w.reduce_range,
    };
    let min = w.min_elements.unwrap_or(0) as usize;
    let mrr = p.quantization.min_real_range.map(|m| m as f32);
    let g = &mut model.graph;
    let targets: Vec<_> = g
        .topo_order()
        .into_iter()
        .filter(|&n| {
            g[n].is_operator()
                && g[n].domain().is_empty()
                && matches!(g[n].op_type(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul")
        })
        .collect();
    let mut done = 0;
    for node in targets {
        let Some(v) = g.input(node, 1) else {
            continue;
        };
        let Some(t) = g.constant(v) else {
            continue;
        };
        if t.dtype() != DataType::Float || t.len() < min.max(1) {
            continue;
        }
        let op = g[node].op_type().to_string();
        let rank = t.shape().len();
        let axis = if p.weight_per_channel(&op) {
            match op.as_str() {
                "Conv" => Some(0),
                "ConvTranspose" if rank >= 2 => Some(1),
                "Gemm" => Some(
                    if g[node].attr("transB").and_then(AttrValue::as_int) == Some(1) {
                        0
                    } else {
                        1
                    },
                ),
                "MatMul" if rank == 2 => Some(1),
                _ => None,
            }
        } else {
            None
        };
        let Ok(q) = quantize_weight(t, scheme, axis, mrr) else {
            continue;
        };
        let base = g.value_name(v).to_string();
        let qname = g.fresh_name(&format!("{base}_quantized"));
        let qc = g.add_node(Node::initializer(&qname, q.values.clone()));
        let sname = g.fresh_name(&format!("{base}_scale"));
        let sc = g.add_node(Node::initializer(&sname, q.scale_tensor()));
        let zname = g.fresh_name(&format!("{base}_zero_point"));
        let zc = g.add_node(Node::initializer(&zname, q.zero_point_tensor()));
        let out = g.fresh_name(&format!("{base}_dequantized"));
        let mut dq = Node::op("DequantizeLinear", &format!("{out}_node"), &[&out]);
        if let Some(a) = axis {
            dq = dq.with_attr("axis", AttrValue::Int(a as i64));
        }
        let dq = g.add_node(dq);
        g.connect(ValueRef::new(qc, 0), dq, 0);
        g.connect(ValueRef::new(sc, 0), dq, 1);
        g.connect(ValueRef::new(zc, 0), dq, 2);
        g.disconnect(node, 1);
        g.connect(ValueRef::new(dq, 0), node, 1);
        if g.consumers(v).is_empty() && !g.outputs.iter().any(|o| o.value == v) {
            g.remove_node(v.node);
        }
        done += 1;
    }
    g.verify().map_err(kiln_passes::pipeline::PassError::from)?;
    Ok(done)
}
