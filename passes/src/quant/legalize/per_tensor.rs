//! Per-channel weights to per-tensor, for ops whose target kernels take one scale (QNN's HTP
//! takes per-channel weights only on Conv/ConvTranspose). The weight is dequantized with its
//! own scales and quantized again with one scale over all channels in the target's scheme; an
//! int32 bias that was quantized with the per-channel scales is re-quantized with the new
//! input × weight scale. This loses precision on channels with small ranges, and the outcome
//! says by how much (the weight's SQNR after the change).

use crate::ir::{Graph, Model, NameSet, NodeIndex, ValueRef};
use crate::pipeline::PassError;
use crate::quant::weights::{quantize_bias, quantize_weight};
use crate::quant::QuantScheme;
use crate::tensor::Tensor;

use super::edit::{self, params};
use super::Outcome;

/// Makes the weights of every node whose op `per_tensor(op)` says per-tensor, per tensor.
pub fn weights_per_tensor(
    model: &mut Model,
    per_tensor: &dyn Fn(&str) -> bool,
    scheme: QuantScheme,
) -> Result<Outcome, PassError> {
    let mut names = NameSet::of(&model.graph);
    let g = &mut model.graph;
    let mut out = Outcome::default();
    let mut worst = f64::INFINITY;
    let todo: Vec<NodeIndex> = g
        .topo_order()
        .into_iter()
        .filter(|&n| {
            g[n].is_operator()
                && g[n].domain().is_empty()
                && matches!(g[n].op_type(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul")
                && per_tensor(g[n].op_type())
        })
        .collect();
    for n in todo {
        let Some(w) = g.input(n, 1) else {
            continue;
        };
        let dq = w.node;
        if !edit::is(g, dq, "DequantizeLinear") || g.constant_input(dq, 0).is_none() {
            continue;
        }
        let Some(p) = params(g, dq) else {
            continue;
        };
        if !p.per_channel() {
            continue;
        }
        let label = g[n].label(n.index());
        match requantize(g, &mut names, n, dq, scheme) {
            Ok(sqnr) => {
                worst = worst.min(sqnr);
                out.changed += 1;
            }
            Err(why) => out
                .kept
                .push(format!("{label}: per-channel weight kept: {why}")),
        }
    }
    g.verify()?;
    if out.changed > 0 {
        out.notes.push(format!(
            "{} per-channel weight(s) → per-tensor {} (the target's kernels take one scale); \
             worst weight SQNR after the change {:.1} dB",
            out.changed,
            scheme.dtype.name(),
            worst
        ));
    }
    Ok(out)
}

/// The weight's SQNR in dB: how well `b` reproduces `a`.
fn sqnr(a: &[f32], b: &[f32]) -> f64 {
    let (mut s, mut e) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        s += (x as f64).powi(2);
        e += (x as f64 - y as f64).powi(2);
    }
    if e == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (s / e).log10()
    }
}

/// Re-quantizes the weight read by `n` through `dq` per tensor (a new `DequantizeLinear`
/// for `n` alone, so other readers keep theirs), and its bias; returns the weight's SQNR.
fn requantize(
    g: &mut Graph,
    names: &mut NameSet,
    n: NodeIndex,
    dq: NodeIndex,
    scheme: QuantScheme,
) -> Result<f64, String> {
    let q = g.constant_input(dq, 0).ok_or("not a constant")?.clone();
    let p = params(g, dq).ok_or("no constant parameters")?;
    let float = p.dequantize(&q).ok_or("scales do not match the weight")?;
    let shape = q.shape().to_vec();
    let t = Tensor::from_vec(shape, float.clone()).map_err(|e| e.to_string())?;
    let nq = quantize_weight(&t, scheme, None, None).map_err(|e| e.to_string())?;
    let scale = nq.params[0].scale;
    let back: Vec<f32> = nq
        .values
        .to_f64_vec()
        .ok_or("unreadable")?
        .iter()
        .map(|&v| (v as i64 - nq.params[0].zero_point) as f32 * scale)
        .collect();
    let bias = bias_update(g, n, &p.scale, scale)?;
    let base = g.value_name(ValueRef::new(dq, 0)).to_string();
    let qv = edit::constant(g, names, &format!("{base}_per_tensor"), nq.values.clone());
    let sv = edit::constant(
        g,
        names,
        &format!("{base}_per_tensor_scale"),
        nq.scale_tensor(),
    );
    let zv = edit::constant(
        g,
        names,
        &format!("{base}_per_tensor_zero_point"),
        nq.zero_point_tensor(),
    );
    let new_dq = edit::dequantize_linear(g, names, qv, sv, Some(zv), None);
    g.connect(new_dq, n, 1);
    if let Some((slot, old_bias_dq, values, bias_scale)) = bias {
        let base = g.value_name(ValueRef::new(old_bias_dq, 0)).to_string();
        let bq = edit::constant(g, names, &format!("{base}_per_tensor"), values);
        let bs = edit::constant(
            g,
            names,
            &format!("{base}_per_tensor_scale"),
            Tensor::scalar(bias_scale),
        );
        let bdq = edit::dequantize_linear(g, names, bq, bs, None, None);
        g.connect(bdq, n, slot);
        drop_if_unread(g, old_bias_dq);
    }
    drop_if_unread(g, dq);
    Ok(sqnr(&float, &back))
}

/// The new int32 bias of `n` (Conv/Gemm input 2) when it is an int32 constant behind a
/// `DequantizeLinear` with the old per-channel scales: (slot, old DQ, new values, new scale).
#[allow(clippy::type_complexity)]
fn bias_update(
    g: &Graph,
    n: NodeIndex,
    old_scales: &[f32],
    w_scale: f32,
) -> Result<Option<(usize, NodeIndex, Tensor, f32)>, String> {
    let Some(b) = g.input(n, 2) else {
        return Ok(None);
    };
    let bdq = b.node;
    if !edit::is(g, bdq, "DequantizeLinear") {
        return Ok(None);
    }
    let Some(bq) = g.constant_input(bdq, 0) else {
        return Ok(None);
    };
    let bp = params(g, bdq).ok_or("the bias has no constant parameters")?;
    let float = bp.dequantize(bq).ok_or("the bias scales do not match it")?;
    // The input scale: the bias scale over the weight scale, as the quantizer made it.
    let x_scale = match (bp.scale.first(), old_scales.first()) {
        (Some(&bs), Some(&ws)) if ws != 0.0 => bs / ws,
        _ => return Err("cannot recover the input scale from the bias".into()),
    };
    let t = Tensor::from_vec(bq.shape().to_vec(), float).map_err(|e| e.to_string())?;
    let (values, scales, _) = quantize_bias(&t, x_scale, &[w_scale]).map_err(|e| e.to_string())?;
    Ok(Some((
        2,
        bdq,
        values,
        scales.first().copied().unwrap_or(x_scale * w_scale),
    )))
}

/// Removes a `DequantizeLinear` nothing reads any more, with its constants.
fn drop_if_unread(g: &mut Graph, dq: NodeIndex) {
    let v = ValueRef::new(dq, 0);
    if g.consumers(v).is_empty() && !g.outputs.iter().any(|o| o.value == v) {
        let feeds = edit::feeds(g, dq);
        g.remove_node(dq);
        edit::drop_unused(g, &feeds);
    }
}
