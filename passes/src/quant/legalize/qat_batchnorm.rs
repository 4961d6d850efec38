//! PyTorch's eager QAT exports a fused Conv+BatchNorm as `Conv(x, fake-quantized W·k)` →
//! `Div(k)` → `BatchNormalization(γ, β, μ, σ²)` with k = γ/√(σ²+ε): the quantized conv already
//! carries the BatchNorm's scale, the `Div` undoes it and the BatchNorm applies it again. When
//! the two cancel (k/c = 1 channel by channel) the pair is the conv plus a bias
//! b' = b·k/c + β − k·μ, which becomes the Conv's bias: int32 with scale = input scale × weight
//! scale when the input and weight are dequantized (as the TFLite converter and QNN take a
//! quantized conv's bias), else float. This is what lets an integer-only device run the conv.

use crate::ir::{AttrValue, Graph, InputSlot, Model, NameSet, NodeIndex, ValueRef};
use crate::pipeline::PassError;
use crate::quant::weights::quantize_bias;
use crate::tensor::Tensor;

use super::edit::{self, params};
use super::Outcome;

/// How closely k must match the `Div`'s constant, per channel.
const CANCEL_TOLERANCE: f64 = 1e-4;

/// Folds every cancelling `Div` → `BatchNormalization` after a quantized-weight Conv.
pub fn fold_qat_batchnorm(model: &mut Model) -> Result<Outcome, PassError> {
    let mut names = NameSet::of(&model.graph);
    let g = &mut model.graph;
    let mut out = Outcome::default();
    let convs: Vec<NodeIndex> = g
        .topo_order()
        .into_iter()
        .filter(|&n| edit::is(g, n, "Conv"))
        .collect();
    for conv in convs {
        let Some(found) = match_pattern(g, conv) else {
            continue;
        };
        let label = g[conv].label(conv.index());
        match fold(g, &mut names, conv, found) {
            Ok(()) => out.changed += 1,
            Err(why) => out
                .kept
                .push(format!("{label}: BatchNormalization kept: {why}")),
        }
    }
    g.verify()?;
    if out.changed > 0 {
        out.notes.push(format!(
            "{} QAT Conv → Div → BatchNormalization folded into the Conv's bias (the \
             BatchNormalization's scale cancels the Div's)",
            out.changed
        ));
    }
    Ok(out)
}

/// The `Div` (or `Mul`) and `BatchNormalization` after `conv`.
#[derive(Clone, Copy)]
struct Found {
    scale_op: NodeIndex,
    bn: NodeIndex,
}

/// The only operand reader of output 0 of `n`, when it is `op` and the value is internal.
fn sole(g: &Graph, n: NodeIndex, op: &str) -> Option<NodeIndex> {
    let v = ValueRef::new(n, 0);
    if g.outputs.iter().any(|o| o.value == v) {
        return None;
    }
    match g.consumers(v).as_slice() {
        [(c, InputSlot::Operand(0))] if edit::is(g, *c, op) => Some(*c),
        _ => None,
    }
}

fn match_pattern(g: &Graph, conv: NodeIndex) -> Option<Found> {
    let w = g.input(conv, 1)?;
    if !edit::is(g, w.node, "DequantizeLinear") || g.constant_input(w.node, 0).is_none() {
        return None;
    }
    let scale_op = sole(g, conv, "Div").or_else(|| sole(g, conv, "Mul"))?;
    let bn = sole(g, scale_op, "BatchNormalization")?;
    Some(Found { scale_op, bn })
}

/// Per-channel values of a constant broadcast against a conv's NC… output: a scalar, or
/// `channels` values on the channel axis (`[1,C,1,1]` or `[C,1,1]`; a bare `[C]` would
/// broadcast along the width instead).
fn per_channel(t: &Tensor, channels: usize) -> Option<Vec<f64>> {
    let v = t.to_f64_vec()?;
    if v.len() == 1 {
        return Some(vec![v[0]; channels]);
    }
    let shape = t.shape();
    let nontrivial: Vec<usize> = shape
        .iter()
        .enumerate()
        .filter(|(_, &d)| d != 1)
        .map(|(i, _)| i)
        .collect();
    let axis_ok = match nontrivial.as_slice() {
        // Broadcast from the right against a rank-4 (or rank-3, ...) output: `[C,1,1]` and
        // `[1,C,1,1]` both put C at the channel axis.
        [i] => shape.len() - i >= 3,
        _ => false,
    };
    (axis_ok && v.len() == channels).then_some(v)
}

fn fold(g: &mut Graph, names: &mut NameSet, conv: NodeIndex, f: Found) -> Result<(), String> {
    let bn_consts: Vec<Vec<f64>> = (1..5)
        .map(|s| {
            g.constant_input(f.bn, s)
                .and_then(Tensor::to_f64_vec)
                .ok_or_else(|| "its parameters are not constants".to_string())
        })
        .collect::<Result<_, _>>()?;
    if g[f.bn].attr("training_mode").and_then(AttrValue::as_int) == Some(1) {
        return Err("training mode".into());
    }
    let eps = g[f.bn]
        .attr("epsilon")
        .and_then(AttrValue::as_float)
        .unwrap_or(1e-5) as f64;
    let (gamma, beta, mean, var) = (&bn_consts[0], &bn_consts[1], &bn_consts[2], &bn_consts[3]);
    let channels = gamma.len();
    if [beta, mean, var].iter().any(|v| v.len() != channels) {
        return Err("its parameters disagree on the channel count".into());
    }
    let divisor = {
        let scale_input = if g.input(f.scale_op, 0) == Some(ValueRef::new(conv, 0)) {
            1
        } else {
            0
        };
        let t = g
            .constant_input(f.scale_op, scale_input)
            .ok_or("the Div's divisor is not a constant")?;
        let v = per_channel(t, channels).ok_or("the Div's divisor is not per channel")?;
        if scale_input == 0 && g[f.scale_op].op_type() == "Div" {
            return Err("it divides a constant by the conv".into());
        }
        if g[f.scale_op].op_type() == "Mul" {
            v.iter().map(|x| 1.0 / x).collect::<Vec<_>>()
        } else {
            v
        }
    };
    let k: Vec<f64> = (0..channels)
        .map(|c| gamma[c] / (var[c] + eps).sqrt())
        .collect();
    if let Some(c) = (0..channels)
        .find(|&c| divisor[c] == 0.0 || ((k[c] / divisor[c]) - 1.0).abs() > CANCEL_TOLERANCE)
    {
        return Err(format!(
            "channel {c}: its scale {:.6} does not cancel the Div's {:.6}",
            k[c], divisor[c]
        ));
    }
    let b0 = match g.input(conv, 2) {
        Some(_) => g
            .constant_input(conv, 2)
            .and_then(Tensor::to_f64_vec)
            .filter(|b| b.len() == channels)
            .ok_or("the conv's bias is not a per-channel constant")?,
        None => vec![0.0; channels],
    };
    let bias: Vec<f32> = (0..channels)
        .map(|c| (b0[c] * k[c] / divisor[c] + beta[c] - k[c] * mean[c]) as f32)
        .collect();
    let bias_t = Tensor::from_vec(vec![channels], bias).map_err(|e| e.to_string())?;
    let base = format!("{}_bias", g.value_name(ValueRef::new(conv, 0)));
    let bias_v = match integer_bias(g, conv, &bias_t) {
        Some((values, scales)) => {
            let q = edit::constant(g, names, &format!("{base}_quantized"), values);
            let per = scales.len() > 1;
            let s = edit::constant(
                g,
                names,
                &format!("{base}_scale"),
                crate::quant::weights::params_tensor_f32(per, scales),
            );
            edit::dequantize_linear(g, names, q, s, None, per.then_some(0))
        }
        None => edit::constant(g, names, &base, bias_t),
    };
    let old_bias = g.input(conv, 2);
    g.connect(bias_v, conv, 2);
    let mut feeds = edit::feeds(g, f.scale_op);
    feeds.extend(edit::feeds(g, f.bn));
    feeds.extend(old_bias);
    let conv_out = ValueRef::new(conv, 0);
    g.remove_node(f.scale_op);
    edit::replace_node(g, f.bn, conv_out);
    edit::drop_unused(g, &feeds);
    Ok(())
}

/// The int32 bias and its scales, when the conv's input and weight are dequantized with
/// constant per-tensor input parameters.
fn integer_bias(g: &Graph, conv: NodeIndex, bias: &Tensor) -> Option<(Tensor, Vec<f32>)> {
    let x = g.input(conv, 0)?;
    if !edit::is(g, x.node, "DequantizeLinear") {
        return None;
    }
    let xp = params(g, x.node)?;
    let wp = params(g, g.input(conv, 1)?.node)?;
    if xp.per_channel() {
        return None;
    }
    let (values, scales, saturated) = quantize_bias(bias, xp.scale[0], &wp.scale).ok()?;
    (saturated == 0).then_some((values, scales))
}
