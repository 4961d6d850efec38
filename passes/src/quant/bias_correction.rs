//! Bias correction for quantized weights (Nagel et al. 2019, "Data-Free Quantization Through
//! Weight Equalization and Bias Correction", in its empirical form; Banner et al. 2019): the
//! rounding error of a layer's weights, `ε = W − Ŵ`, shifts the mean of its output by
//! `E[x]·ε`, the same for every input; adding that shift to the layer's bias removes it.
//!
//! For `Conv` (`y_o(p) = Σ_{i,t} W[o, i, t] x_i(p·s + t·d − pad) + b_o`):
//! `Δb_o = Σ_i Σ_t ε[o, i, t] · m[i, t]` over the input channels of `o`'s group, `m[i, t]` the
//! mean over output positions of what tap `t` reads from channel `i` (zero where it falls in the
//! padding: [`ConvGeometry::tap_sums`]), so borders are exact; for `Gemm`
//! (`alpha·A·B + beta·C`, C of N values): `ΔC_n = alpha/beta · Σ_k E[a_k] ε[k, n]`; for `MatMul`
//! followed by an `Add` of N constants: that constant takes `Σ_k E[a_k] ε[k, n]`.
//!
//! Ŵ is read from a model the weights were quantized in (the `DequantizeLinear` in front of the
//! node of the same name), and `E[x]` per input channel comes from calibration data (the
//! driver runs the float model); the corrected float biases are then quantized as usual.

use std::collections::BTreeMap;

use crate::ir::{Graph, Model, Node, NodeIndex, NodeKind, ValueRef};
use crate::tensor::{DataType, Tensor};

/// Where a layer's input channels are in its input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAxis {
    /// Axis 1 (`[N, C, …]`, Conv).
    Second,
    /// The last axis (`[…, K]`, MatMul and Gemm).
    Last,
}

/// How a Conv reads its input: enough to know what each kernel tap reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Kernel size per spatial dim.
    pub kernel: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// Padding.
    pub pads: ConvPads,
}

/// A Conv's padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvPads {
    /// `pads`: begins, then ends.
    Explicit {
        /// Before each spatial dim.
        begin: Vec<usize>,
        /// After.
        end: Vec<usize>,
    },
    /// `auto_pad = SAME_UPPER` (the odd pixel at the end).
    SameUpper,
    /// `auto_pad = SAME_LOWER` (the odd pixel at the start).
    SameLower,
}

impl ConvGeometry {
    /// Kernel taps (the product of the kernel's sizes).
    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// For `x` of shape `[N, C, spatial…]`: per channel and kernel tap (`[C, taps]`, taps in
    /// row-major kernel order), the sum of the input values that tap reads over every output
    /// position of every sample (a tap in the padding reads 0); and the number of (sample,
    /// output position) pairs, the divisor that makes them means.
    pub fn tap_sums(&self, x: &[f64], shape: &[usize]) -> Result<(Vec<f64>, u64), String> {
        let rank = self.kernel.len();
        if shape.len() != rank + 2 || x.len() != shape.iter().product::<usize>() {
            return Err(format!(
                "input of shape {shape:?} for a Conv with a {rank}-D kernel"
            ));
        }
        let (n, c, dims) = (shape[0], shape[1], &shape[2..]);
        // Per spatial dim and kernel index: the input coordinates that index reads, over the
        // output positions (where it is not padding).
        let mut reads: Vec<Vec<Vec<usize>>> = Vec::with_capacity(rank);
        let mut positions = 1usize;
        for (j, (&d, &k)) in dims.iter().zip(&self.kernel).enumerate() {
            let (d, k) = (d as i64, k as i64);
            let s = *self.strides.get(j).unwrap_or(&1) as i64;
            let dil = *self.dilations.get(j).unwrap_or(&1) as i64;
            let span = dil * (k - 1) + 1;
            let (begin, out) = match &self.pads {
                ConvPads::Explicit { begin, end } => {
                    let (b, e) = (
                        *begin.get(j).unwrap_or(&0) as i64,
                        *end.get(j).unwrap_or(&0) as i64,
                    );
                    (b, (d + b + e - span).div_euclid(s.max(1)) + 1)
                }
                same => {
                    let out = (d + s - 1) / s.max(1);
                    let total = ((out - 1) * s + span - d).max(0);
                    let b = if *same == ConvPads::SameUpper {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    (b, out)
                }
            };
            if out <= 0 || s <= 0 {
                return Err(format!("spatial dim {j} of size {d} gives no output"));
            }
            positions *= out as usize;
            reads.push(
                (0..k)
                    .map(|t| {
                        (0..out)
                            .map(|o| o * s - begin + t * dil)
                            .filter(|&i| (0..d).contains(&i))
                            .map(|i| i as usize)
                            .collect()
                    })
                    .collect(),
            );
        }
        let plane: usize = dims.iter().product();
        // Row-major strides of the spatial dims.
        let mut stride = vec![1usize; rank];
        for j in (0..rank.saturating_sub(1)).rev() {
            stride[j] = stride[j + 1] * dims[j + 1];
        }
        let taps = self.taps();
        let mut sums = vec![0f64; c * taps];
        for t in 0..taps {
            // The tap's index per dim, and the coordinate lists it reads.
            let mut rest = t;
            let mut lists: Vec<&[usize]> = vec![&[]; rank];
            for j in (0..rank).rev() {
                lists[j] = &reads[j][rest % self.kernel[j]];
                rest /= self.kernel[j];
            }
            if lists.iter().any(|l| l.is_empty()) {
                continue;
            }
            // Every spatial offset the tap reads (the product of the lists).
            let mut offsets = vec![0usize];
            for j in 0..rank {
                let step = stride[j];
                offsets = offsets
                    .iter()
                    .flat_map(|&o| lists[j].iter().map(move |&i| o + i * step))
                    .collect();
            }
            for b in 0..n {
                for ch in 0..c {
                    let base = (b * c + ch) * plane;
                    let total: f64 = offsets
                        .iter()
                        .map(|&o| x[base + o])
                        .filter(|v| v.is_finite())
                        .sum();
                    sums[ch * taps + t] += total;
                }
            }
        }
        Ok((sums, (n * positions) as u64))
    }
}

/// How a layer maps weight error to bias shift.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    Conv { groups: usize },
    Gemm { factor: f64, trans_b: bool },
    MatMul,
}

/// A layer whose bias can absorb its weights' mean error.
#[derive(Debug, Clone, PartialEq)]
pub struct BiasTarget {
    /// The node's name.
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// The activation it reads, whose per-channel mean is needed.
    pub activation: String,
    /// Input channels (the length of the mean).
    pub channels: usize,
    /// Where they are.
    pub axis: ChannelAxis,
    /// For a Conv, how it reads its input: the means needed are per channel and kernel tap
    /// (`channels × taps` of them, [`ConvGeometry::tap_sums`]); else one per channel.
    pub geometry: Option<ConvGeometry>,
    weight: ValueRef,
    bias: ValueRef,
    /// The node and input slot reading the bias (the Add's, for a MatMul).
    reader: (NodeIndex, usize),
    layer: Layer,
}

/// A layer left uncorrected, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiasSkipped {
    /// The node (name, or first output's when unnamed).
    pub node: String,
    /// Why.
    pub reason: String,
}

/// A corrected bias.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrectedBias {
    /// The node.
    pub node: String,
    /// The bias constant's name.
    pub bias: String,
    /// Output channels shifted.
    pub channels: usize,
    /// Mean of |shift|.
    pub mean_abs_shift: f64,
    /// Largest |shift|.
    pub max_abs_shift: f64,
}

/// The Conv, Gemm and MatMul (+ Add) nodes of the main graph with a constant float weight and
/// a constant float bias of one value per output channel (a bias shared with other nodes is
/// copied when corrected).
pub fn bias_targets(model: &Model) -> (Vec<BiasTarget>, Vec<BiasSkipped>) {
    let g = &model.graph;
    let (mut targets, mut skipped) = (Vec::new(), Vec::new());
    for idx in g.topo_order() {
        let node = &g[idx];
        if !node.is_operator() || !matches!(node.domain(), "" | "ai.onnx") {
            continue;
        }
        let op = node.op_type();
        if !matches!(op, "Conv" | "Gemm" | "MatMul") {
            continue;
        }
        let Some(weight) = g.input(idx, 1).filter(|&w| is_float_constant(g, w)) else {
            continue;
        };
        let label = if node.name.is_empty() {
            node.outputs
                .first()
                .map_or_else(String::new, |o| o.name.clone())
        } else {
            node.name.clone()
        };
        let mut skip = |reason: &str| {
            skipped.push(BiasSkipped {
                node: label.clone(),
                reason: reason.to_string(),
            })
        };
        if node.name.is_empty() {
            skip("unnamed node (its quantized weights are found by name)");
            continue;
        }
        let Some(act) = g.input(idx, 0).filter(|&a| g.constant(a).is_none()) else {
            continue;
        };
        let shape = g
            .constant(weight)
            .map(|t| t.shape().to_vec())
            .unwrap_or_default();
        let int =
            |name: &str, default: i64| node.attr(name).and_then(|v| v.as_int()).unwrap_or(default);
        let float = |name: &str| node.attr(name).and_then(|v| v.as_float()).unwrap_or(1.0);
        let mut geometry = None;
        let found = match op {
            "Conv" => {
                let groups = int("group", 1).max(1) as usize;
                let ints = |name: &str| -> Vec<usize> {
                    node.attr(name)
                        .and_then(|v| v.as_ints())
                        .map(|v| v.iter().map(|&x| x.max(0) as usize).collect())
                        .unwrap_or_default()
                };
                let spatial = shape.len().saturating_sub(2);
                let ones = |v: Vec<usize>| if v.is_empty() { vec![1; spatial] } else { v };
                let pads = match node
                    .attr("auto_pad")
                    .and_then(|v| v.as_str())
                    .unwrap_or("NOTSET")
                {
                    "SAME_UPPER" => Some(ConvPads::SameUpper),
                    "SAME_LOWER" => Some(ConvPads::SameLower),
                    "VALID" => Some(ConvPads::Explicit {
                        begin: vec![0; spatial],
                        end: vec![0; spatial],
                    }),
                    "NOTSET" | "" => {
                        let p = ints("pads");
                        match p.len() {
                            0 => Some(ConvPads::Explicit {
                                begin: vec![0; spatial],
                                end: vec![0; spatial],
                            }),
                            l if l == 2 * spatial => Some(ConvPads::Explicit {
                                begin: p[..spatial].to_vec(),
                                end: p[spatial..].to_vec(),
                            }),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                geometry = pads.map(|pads| ConvGeometry {
                    kernel: shape.get(2..).map(<[usize]>::to_vec).unwrap_or_default(),
                    strides: ones(ints("strides")),
                    dilations: ones(ints("dilations")),
                    pads,
                });
                match (g.input(idx, 2), shape.as_slice()) {
                    _ if geometry.is_none() => Err("unreadable pads or auto_pad"),
                    (None, _) => Err("no bias"),
                    (Some(b), [oc, icg, ..]) if bias_len(g, b) == Some(*oc) => Ok((
                        b,
                        (idx, 2),
                        Layer::Conv { groups },
                        icg * groups,
                        ChannelAxis::Second,
                    )),
                    _ => Err("bias is not a constant float of one value per output channel"),
                }
            }
            "Gemm" => {
                let trans_b = int("transB", 0) != 0;
                let (alpha, beta) = (float("alpha"), float("beta"));
                match (g.input(idx, 2), shape.as_slice()) {
                    _ if int("transA", 0) != 0 => Err("transA is set"),
                    _ if beta == 0.0 => Err("beta is 0"),
                    (None, _) => Err("no bias"),
                    (Some(b), &[r, c]) => {
                        let (k, n) = if trans_b { (c, r) } else { (r, c) };
                        if bias_len(g, b) == Some(n) {
                            Ok((
                                b,
                                (idx, 2),
                                Layer::Gemm {
                                    factor: f64::from(alpha) / f64::from(beta),
                                    trans_b,
                                },
                                k,
                                ChannelAxis::Last,
                            ))
                        } else {
                            Err("C is not a constant float of N values")
                        }
                    }
                    _ => Err("B is not 2-D"),
                }
            }
            _ => match shape.as_slice() {
                &[k, n] => match following_bias(g, idx, n) {
                    Some((b, reader)) => Ok((b, reader, Layer::MatMul, k, ChannelAxis::Last)),
                    None => Err("not followed by an Add of one constant per output (no bias)"),
                },
                _ => Err("B is not 2-D"),
            },
        };
        match found {
            Ok((bias, reader, layer, channels, axis)) => {
                targets.push(BiasTarget {
                    node: node.name.clone(),
                    op_type: op.to_string(),
                    activation: g.value_name(act).to_string(),
                    channels,
                    axis,
                    geometry,
                    weight,
                    bias,
                    reader,
                    layer,
                });
            }
            Err(reason) => skip(reason),
        }
    }
    (targets, skipped)
}

fn is_float_constant(g: &Graph, v: ValueRef) -> bool {
    g.constant(v).is_some_and(|t| t.dtype() == DataType::Float)
}

/// The length of a constant float32 bias of shape `[n]` or `[1, n]`.
fn bias_len(g: &Graph, b: ValueRef) -> Option<usize> {
    let t = g.constant(b).filter(|t| t.dtype() == DataType::Float)?;
    match *t.shape() {
        [n] | [1, n] => Some(n),
        _ => None,
    }
}

/// The constant of an `Add` that is the only reader of the MatMul's output and adds one float
/// per output column, with the Add and its slot.
fn following_bias(
    g: &Graph,
    matmul: NodeIndex,
    n: usize,
) -> Option<(ValueRef, (NodeIndex, usize))> {
    let out = ValueRef::new(matmul, 0);
    let readers = g.consumers(out);
    let [(add, _)] = readers.as_slice() else {
        return None;
    };
    if g.outputs.iter().any(|o| o.value == out) || g[*add].op_type() != "Add" {
        return None;
    }
    let (other, slot) = match (g.input(*add, 0), g.input(*add, 1)) {
        (Some(a), Some(b)) if a == out => (b, 1),
        (Some(a), Some(b)) if b == out => (a, 0),
        _ => return None,
    };
    (bias_len(g, other) == Some(n)).then_some((other, (*add, slot)))
}

/// Shifts the bias of every target by its weights' mean error: Ŵ from the same-named node of
/// `quantized`, `E[x]` from `means` (by node name: per channel, or per channel and tap for a
/// Conv). Targets whose quantized weight or
/// mean is missing, or does not fit, are left alone and listed.
pub fn correct_biases(
    model: &mut Model,
    quantized: &Model,
    targets: &[BiasTarget],
    means: &BTreeMap<String, Vec<f64>>,
) -> (Vec<CorrectedBias>, Vec<BiasSkipped>) {
    let by_name: BTreeMap<&str, NodeIndex> = quantized
        .graph
        .nodes()
        .filter(|(_, n)| n.is_operator() && !n.name.is_empty())
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    for t in targets {
        let shift = by_name
            .get(t.node.as_str())
            .ok_or_else(|| "not found in the quantized model".to_string())
            .and_then(|&q| dequantized_weight(&quantized.graph, q))
            .and_then(|w_hat| {
                let mean = means
                    .get(&t.node)
                    .ok_or_else(|| format!("no mean of its input '{}'", t.activation))?;
                shift(&model.graph, t, &w_hat, mean)
            });
        let shift = match shift {
            Ok(s) => s,
            Err(reason) => {
                skipped.push(BiasSkipped {
                    node: t.node.clone(),
                    reason,
                });
                continue;
            }
        };
        let name = model.graph.value_name(t.bias).to_string();
        let updated = model.graph.constant(t.bias).and_then(|b| {
            let old: Vec<f32> = b.to_vec().ok()?;
            let new: Vec<f32> = old
                .iter()
                .zip(&shift)
                .map(|(&b, &d)| (f64::from(b) + d) as f32)
                .collect();
            Tensor::from_vec(b.shape().to_vec(), new).ok()
        });
        let Some(updated) = updated else {
            skipped.push(BiasSkipped {
                node: t.node.clone(),
                reason: "bias unreadable".into(),
            });
            continue;
        };
        let g = &mut model.graph;
        let name = if g.consumers(t.bias).len() == 1 {
            if let Some(NodeKind::Constant { value, .. }) =
                g.node_mut(t.bias.node).map(|n| &mut n.kind)
            {
                *value = updated;
            }
            name
        } else {
            // Shared (equal biases are often merged into one constant): this layer gets its own.
            let fresh = g.fresh_name(&format!("{name}_corrected"));
            let own = ValueRef::new(g.add_node(Node::initializer(&fresh, updated)), 0);
            g.connect(own, t.reader.0, t.reader.1);
            fresh
        };
        let abs: Vec<f64> = shift.iter().map(|d| d.abs()).collect();
        done.push(CorrectedBias {
            node: t.node.clone(),
            bias: name,
            channels: shift.len(),
            mean_abs_shift: abs.iter().sum::<f64>() / abs.len().max(1) as f64,
            max_abs_shift: abs.iter().copied().fold(0.0, f64::max),
        });
    }
    (done, skipped)
}

/// The weight of quantized node `q` (input 1) as its `DequantizeLinear` produces it.
fn dequantized_weight(g: &Graph, q: NodeIndex) -> Result<Tensor, String> {
    let not = || "its weight is not behind a DequantizeLinear of constants".to_string();
    let dq = g.input(q, 1).ok_or_else(not)?.node;
    if !g[dq].is_operator() || g[dq].op_type() != "DequantizeLinear" {
        return Err(not());
    }
    if g[dq]
        .attr("block_size")
        .and_then(|v| v.as_int())
        .is_some_and(|b| b != 0)
    {
        return Err("its weight is quantized block-wise".into());
    }
    let x = g.constant_input(dq, 0).ok_or_else(not)?;
    let scale: Vec<f64> = g
        .constant_input(dq, 1)
        .and_then(Tensor::to_f64_vec)
        .ok_or_else(not)?;
    let values = x.to_f64_vec().ok_or_else(not)?;
    let zp: Vec<f64> = match g.input(dq, 2) {
        None => vec![0.0; scale.len()],
        Some(_) => g
            .constant_input(dq, 2)
            .and_then(Tensor::to_f64_vec)
            .ok_or_else(not)?,
    };
    if zp.len() != scale.len() || scale.is_empty() {
        return Err(not());
    }
    let shape = x.shape().to_vec();
    let rank = shape.len() as i64;
    let axis = g[dq].attr("axis").and_then(|v| v.as_int()).unwrap_or(1);
    let axis = if axis < 0 { axis + rank } else { axis };
    // Elements per step along the axis, and the axis' length.
    let (inner, len) = if scale.len() == 1 {
        (values.len().max(1), 1)
    } else if (0..rank).contains(&axis) && shape[axis as usize] == scale.len() {
        (
            shape[axis as usize + 1..].iter().product::<usize>(),
            scale.len(),
        )
    } else {
        return Err(not());
    };
    let deq: Vec<f32> = values
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let c = (i / inner) % len;
            // DequantizeLinear computes (q − zp) · scale in float32.
            ((q - zp[c]) as f32) * scale[c] as f32
        })
        .collect();
    Tensor::from_vec(shape, deq).map_err(|e| e.to_string())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The bias shift of target `t`: `E[x] · (W − Ŵ)` per output channel (see the module doc).
fn shift(g: &Graph, t: &BiasTarget, w_hat: &Tensor, mean: &[f64]) -> Result<Vec<f64>, String> {
    let w = g.constant(t.weight).ok_or("the float weight is gone")?;
    if w.shape() != w_hat.shape() {
        return Err(format!(
            "quantized weight shape {:?} is not the float weight's {:?}",
            w_hat.shape(),
            w.shape()
        ));
    }
    let per_channel = t.geometry.as_ref().map_or(1, ConvGeometry::taps);
    if mean.len() != t.channels * per_channel {
        return Err(format!(
            "{} means of '{}', the weight expects {} channels × {per_channel}",
            mean.len(),
            t.activation,
            t.channels
        ));
    }
    let (w, q): (Vec<f64>, Vec<f64>) = (
        w.to_f64_vec().ok_or("weight unreadable")?,
        w_hat.to_f64_vec().ok_or("weight unreadable")?,
    );
    let err: Vec<f64> = w.iter().zip(&q).map(|(a, b)| a - b).collect();
    let shape = w_hat.shape();
    Ok(match t.layer {
        Layer::Conv { groups } => {
            let (oc, icg) = (shape[0], shape[1]);
            let taps: usize = shape[2..].iter().product();
            if taps != per_channel {
                return Err("the kernel is not the one the means were measured for".into());
            }
            let per_group = (oc / groups).max(1);
            (0..oc)
                .map(|o| {
                    let first = (o / per_group) * icg;
                    (0..icg)
                        .map(|i| {
                            let (at, m) = ((o * icg + i) * taps, (first + i) * taps);
                            dot(&err[at..at + taps], &mean[m..m + taps])
                        })
                        .sum()
                })
                .collect()
        }
        Layer::Gemm { factor, trans_b } => {
            let (k, n) = (t.channels, err.len() / t.channels);
            (0..n)
                .map(|c| {
                    factor
                        * (0..k)
                            .map(|r| {
                                let e = if trans_b {
                                    err[c * k + r]
                                } else {
                                    err[r * n + c]
                                };
                                mean[r] * e
                            })
                            .sum::<f64>()
                })
                .collect()
        }
        Layer::MatMul => {
            let (k, n) = (t.channels, err.len() / t.channels);
            (0..n)
                .map(|c| (0..k).map(|r| mean[r] * err[r * n + c]).sum())
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::test_util::{op_node, output};
    use crate::ir::{AttrValue, Dim, Node, ValueInfo};

    fn input(g: &mut Graph, name: &str, dims: &[i64]) -> ValueRef {
        let d: Vec<Dim> = dims.iter().map(|&n| Dim::Known(n)).collect();
        ValueRef::new(
            g.add_node(Node::input(ValueInfo::tensor(name, DataType::Float, &d))),
            0,
        )
    }

    fn init(g: &mut Graph, name: &str, shape: &[usize], v: Vec<f32>) -> ValueRef {
        ValueRef::new(
            g.add_node(Node::initializer(
                name,
                Tensor::from_vec(shape.to_vec(), v).unwrap(),
            )),
            0,
        )
    }

    fn op(
        g: &mut Graph,
        op_type: &str,
        name: &str,
        inputs: &[ValueRef],
        out: &str,
        attrs: Vec<(&str, AttrValue)>,
    ) -> ValueRef {
        let node = attrs
            .into_iter()
            .fold(Node::op(op_type, name, &[out]), |n, (k, v)| {
                n.with_attr(k, v)
            });
        op_node(g, node, inputs)
    }

    /// `model` with node `node`'s weight read through a DequantizeLinear of `ints` (int8)
    /// with per-`axis` `scales` (zero points 0).
    fn quantized(model: &Model, node: &str, ints: Vec<i8>, scales: Vec<f32>, axis: i64) -> Model {
        let mut q = model.clone();
        let g = &mut q.graph;
        let idx = g.nodes().find(|(_, n)| n.name == node).unwrap().0;
        let shape = g.constant_input(idx, 1).unwrap().shape().to_vec();
        let x = ValueRef::new(
            g.add_node(Node::initializer(
                "w_q",
                Tensor::from_vec(shape, ints).unwrap(),
            )),
            0,
        );
        let n = scales.len();
        let s = init(g, "w_scale", &[n], scales);
        let dq = op(
            g,
            "DequantizeLinear",
            "dq",
            &[x, s],
            "w_dq",
            vec![("axis", AttrValue::Int(axis))],
        );
        g.disconnect(idx, 1);
        g.connect(dq, idx, 1);
        q
    }

    #[test]
    fn matmul_add_bias_takes_the_mean_error() {
        // x[2, 3] → MatMul(W[3, 2]) → Add(b[2]) → y
        let mut m = Model::new(13);
        let g = &mut m.graph;
        let x = input(g, "x", &[2, 3]);
        let w = init(g, "W", &[3, 2], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
        let b = init(g, "b", &[2], vec![1.0, -1.0]);
        let h = op(g, "MatMul", "mm", &[x, w], "h", vec![]);
        let y = op(g, "Add", "add", &[h, b], "y", vec![]);
        output(g, y);
        let (targets, skipped) = bias_targets(&m);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(targets.len(), 1);
        assert_eq!(
            (targets[0].activation.as_str(), targets[0].channels),
            ("x", 3)
        );
        assert_eq!(targets[0].axis, ChannelAxis::Last);
        // Ŵ: per output column (axis 1) scales 0.25 and 0.5.
        let q = quantized(&m, "mm", vec![0, 0, 1, 1, 2, 1], vec![0.25, 0.5], 1);
        // ε = W − Ŵ = [[0.1, 0.2], [0.05, -0.1], [0.0, 0.1]]
        let means = BTreeMap::from([("mm".to_string(), vec![1.0, 2.0, 3.0])]);
        let (done, skipped) = correct_biases(&mut m, &q, &targets, &means);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(done.len(), 1);
        let b: Vec<f32> = m.graph.constant(b).unwrap().to_vec().unwrap();
        // Δ = [1·0.1 + 2·0.05 + 3·0, 1·0.2 − 2·0.1 + 3·0.1] = [0.2, 0.3]
        assert!(
            (b[0] - 1.2).abs() < 1e-6 && (b[1] + 0.7).abs() < 1e-6,
            "{b:?}"
        );
        assert!((done[0].max_abs_shift - 0.3).abs() < 1e-6);
        m.graph.verify().unwrap();
    }

    #[test]
    fn grouped_conv_and_gemm_shifts() {
        // Conv with 2 groups: x[1, 2, 3, 3], W[2, 1, 1, 2] (one input channel per output).
        let mut m = Model::new(13);
        let g = &mut m.graph;
        let x = input(g, "x", &[1, 2, 3, 3]);
        let w = init(g, "W", &[2, 1, 1, 2], vec![0.3, 0.1, -0.2, 0.7]);
        let b = init(g, "b", &[2], vec![0.0, 0.0]);
        let y = op(
            g,
            "Conv",
            "conv",
            &[x, w, b],
            "y",
            vec![("group", AttrValue::Int(2))],
        );
        output(g, y);
        let (targets, _) = bias_targets(&m);
        assert_eq!(targets[0].channels, 2);
        assert_eq!(targets[0].axis, ChannelAxis::Second);
        let geometry = targets[0].geometry.as_ref().unwrap();
        assert_eq!(
            (geometry.kernel.as_slice(), geometry.taps()),
            (&[1, 2][..], 2)
        );
        // Per output channel scales 0.25, 0.5: Ŵ = [[0.25, 0], [0, 0.5]] → ε sums 0.15, 0.
        let q = quantized(&m, "conv", vec![1, 0, 0, 1], vec![0.25, 0.5], 0);
        // Means per channel and tap: channel 0 reads 2 at both taps, channel 1 reads 10 and 4.
        let means = BTreeMap::from([("conv".to_string(), vec![2.0, 2.0, 10.0, 4.0])]);
        let (done, _) = correct_biases(&mut m, &q, &targets, &means);
        assert_eq!(done.len(), 1);
        let b: Vec<f32> = m.graph.constant(b).unwrap().to_vec().unwrap();
        // Output 0 reads channel 0: 2 · 0.05 + 2 · 0.1; output 1 channel 1: 10 · −0.2 + 4 · 0.2.
        assert!(
            (b[0] - 0.3).abs() < 1e-6 && (b[1] + 1.2).abs() < 1e-6,
            "{b:?}"
        );

        // Gemm, transB, alpha 2, beta 0.5: ΔC = 4 · E[a]·ε.
        let mut m = Model::new(13);
        let g = &mut m.graph;
        let a = input(g, "a", &[1, 2]);
        let w = init(g, "B", &[1, 2], vec![0.3, 0.6]); // [N = 1, K = 2]
        let c = init(g, "C", &[1], vec![0.0]);
        let y = op(
            g,
            "Gemm",
            "gemm",
            &[a, w, c],
            "y",
            vec![
                ("transB", AttrValue::Int(1)),
                ("alpha", AttrValue::Float(2.0)),
                ("beta", AttrValue::Float(0.5)),
            ],
        );
        output(g, y);
        let (targets, _) = bias_targets(&m);
        assert_eq!(targets[0].channels, 2);
        let q = quantized(&m, "gemm", vec![1, 2], vec![0.25], 0);
        let means = BTreeMap::from([("gemm".to_string(), vec![1.0, -1.0])]);
        correct_biases(&mut m, &q, &targets, &means);
        let c: Vec<f32> = m.graph.constant(c).unwrap().to_vec().unwrap();
        // ε = [0.05, 0.1]; E[a]·ε = −0.05; × 4 = −0.2
        assert!((c[0] + 0.2).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn tap_sums_count_padding_as_zero() {
        // One 1 × 3 row [1, 2, 3], kernel 1 × 3, pads 1 each side, stride 1: three outputs;
        // the left tap reads [0, 1, 2], the middle [1, 2, 3], the right [2, 3, 0].
        let geometry = ConvGeometry {
            kernel: vec![1, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: ConvPads::Explicit {
                begin: vec![0, 1],
                end: vec![0, 1],
            },
        };
        let (sums, count) = geometry.tap_sums(&[1.0, 2.0, 3.0], &[1, 1, 1, 3]).unwrap();
        assert_eq!((sums, count), (vec![3.0, 6.0, 5.0], 3));
        // Stride 2, no padding, two channels and two samples: one output per row.
        let geometry = ConvGeometry {
            kernel: vec![2],
            strides: vec![2],
            dilations: vec![1],
            pads: ConvPads::Explicit {
                begin: vec![0],
                end: vec![0],
            },
        };
        let x = [
            1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 100.0, 200.0, 300.0, 0.5, 0.5, 0.5,
        ];
        let (sums, count) = geometry.tap_sums(&x, &[2, 2, 3]).unwrap();
        // Output 0 reads [0, 1] (position 2 is never read: (3 − 2) / 2 + 1 = 1 output).
        assert_eq!(count, 2);
        assert_eq!(sums, vec![101.0, 202.0, 10.5, 20.5]);
        // SAME_UPPER, stride 2 on 4: 2 outputs, total pad 1 at the end; dilation 2 on 5.
        let same = ConvGeometry {
            kernel: vec![2],
            strides: vec![2],
            dilations: vec![1],
            pads: ConvPads::SameUpper,
        };
        let (sums, count) = same.tap_sums(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 4]).unwrap();
        assert_eq!((sums, count), (vec![4.0, 6.0], 2));
        let dilated = ConvGeometry {
            kernel: vec![2],
            strides: vec![1],
            dilations: vec![2],
            pads: ConvPads::Explicit {
                begin: vec![0],
                end: vec![0],
            },
        };
        let (sums, count) = dilated
            .tap_sums(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1, 1, 5])
            .unwrap();
        assert_eq!((sums, count), (vec![6.0, 12.0], 3));
        assert!(dilated.tap_sums(&[1.0], &[1, 1]).is_err());
    }

    #[test]
    fn a_shared_bias_is_copied_for_the_layer_it_corrects() {
        // Two Gemms read one (merged) zero bias; only the first is quantized.
        let mut m = Model::new(13);
        let g = &mut m.graph;
        let x = input(g, "x", &[1, 2]);
        let w = init(g, "W", &[2, 2], vec![0.1, 0.2, 0.3, 0.4]);
        let b = init(g, "b", &[2], vec![0.0, 0.0]);
        let y = op(g, "Gemm", "g1", &[x, w, b], "y", vec![]);
        let y2 = op(g, "Gemm", "g2", &[y, w, b], "y2", vec![]);
        output(g, y2);
        let (targets, _) = bias_targets(&m);
        assert_eq!(targets.len(), 2);
        let q = quantized(&m, "g1", vec![1, 2, 3, 4], vec![0.1], 0);
        let means = BTreeMap::from([("g1".to_string(), vec![1.0, 1.0])]);
        let (done, skipped) = correct_biases(&mut m, &q, &targets, &means);
        assert_eq!(done.len(), 1);
        assert_eq!(skipped.len(), 1); // g2's weight is not quantized in q
        m.graph.verify().unwrap();
        let g = &m.graph;
        let g1 = g.nodes().find(|(_, n)| n.name == "g1").unwrap().0;
        let own = g.input(g1, 2).unwrap();
        assert_ne!(own, b);
        assert_eq!(done[0].bias, g.value_name(own));
        assert_eq!(
            g.constant(b).unwrap().to_vec::<f32>().unwrap(),
            vec![0.0, 0.0]
        );
        assert_eq!(g.consumers(b).len(), 1);
    }

    #[test]
    fn what_is_left_alone() {
        let mut m = Model::new(13);
        let g = &mut m.graph;
        let x = input(g, "x", &[1, 2]);
        let w = init(g, "W", &[2, 2], vec![0.1, 0.2, 0.3, 0.4]);
        let b = init(g, "b", &[2], vec![0.0, 0.0]);
        // Unnamed MatMul; a Gemm without C.
        let h = op(g, "MatMul", "", &[x, w], "h", vec![]);
        let y = op(g, "Add", "a1", &[h, b], "y", vec![]);
        let y3 = op(g, "Gemm", "gemm", &[y, w], "y3", vec![]);
        output(g, y3);
        let (targets, skipped) = bias_targets(&m);
        assert!(targets.is_empty(), "{targets:?}");
        let reasons: Vec<&str> = skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("unnamed"));
        assert!(reasons[1].contains("no bias"));

        // A target whose weight was not quantized, or without a mean, is listed.
        let mut m = Model::new(13);
        let g = &mut m.graph;
        let x = input(g, "x", &[1, 2]);
        let w = init(g, "W", &[2, 2], vec![0.1, 0.2, 0.3, 0.4]);
        let b = init(g, "b", &[2], vec![0.0, 0.0]);
        let y = op(g, "Gemm", "gemm", &[x, w, b], "y", vec![]);
        output(g, y);
        let (targets, _) = bias_targets(&m);
        let float = m.clone();
        let (done, skipped) = correct_biases(&mut m, &float, &targets, &BTreeMap::new());
        assert!(done.is_empty());
        assert!(skipped[0].reason.contains("DequantizeLinear"));
        let q = quantized(&float, "gemm", vec![0, 1, 1, 2], vec![0.2, 0.2], 1);
        let (_, skipped) = correct_biases(&mut m, &q, &targets, &BTreeMap::new());
        assert!(skipped[0].reason.contains("no mean"));
        let wrong = BTreeMap::from([("gemm".to_string(), vec![1.0])]);
        let (_, skipped) = correct_biases(&mut m, &q, &targets, &wrong);
        assert!(skipped[0].reason.contains("channels"), "{skipped:?}");
        assert_eq!(
            m.graph.constant(b).unwrap().to_vec::<f32>().unwrap(),
            vec![0.0, 0.0]
        );
    }
}
