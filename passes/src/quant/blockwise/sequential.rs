//! Sequential (stage-wise) statistics for GPTQ and AWQ's quantizer: the weights are quantized
//! in stages in topological order, and each stage's statistics are collected on the model
//! with every earlier stage already quantized, so a weight compensates for the error of the
//! weights before it (as GPTQ's reference implementation does layer by layer).
//!
//! A stage ([`stages`]) is the set of selected MatMul/Gemm weights at the same depth: the
//! depth of a node is the largest number of selected linear nodes on a path from the graph's
//! inputs to its activation, so q/k/v (which read one activation) share a stage, the output
//! projection is the next, gate/up the one after, down the next, then the next layer's q/k/v,
//! whatever the names. A weight read by several nodes belongs to its deepest reader's stage.
//!
//! The driver (in `kiln-backends`, which runs the model) loops over the stages: it collects
//! the stage's Hessians on its statistics model, builds the quantizer with them, and calls
//! [`quantize_stage`], which chooses the stage's integers, keeps them in a [`Precomputed`]
//! and writes their dequantized values back into the statistics model (float, so any runtime
//! runs it) for the next stage's run. [`Precomputed`] is then the [`BlockQuantizer`] the
//! model is written with; only one stage's Hessians are ever held.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use super::config::BlockwiseConfig;
use super::rtn::{quantize_rtn, BlockParams, BlockQuantized, BlockQuantizer};
use super::weight::matrix;
use super::{linear_nodes, FallbackLog, GptqFallback, LinearInput};
use crate::ir::{Graph, Model, NodeIndex, NodeKind};
use crate::tensor::Tensor;

/// The selected MatMul/Gemm inputs of the main graph grouped into stages, in the order they
/// are quantized (see the module doc). Every input of a weight is in that weight's stage.
pub fn stages(model: &Model, config: &BlockwiseConfig) -> Vec<Vec<LinearInput>> {
    let graph = &model.graph;
    let linear = linear_nodes(model, config);
    let is_linear: HashMap<NodeIndex, usize> = linear
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (*n, i))
        .collect();
    // Selected linear nodes on the longest path to each node's outputs.
    let mut level: HashMap<NodeIndex, usize> = HashMap::new();
    let mut depth = vec![0usize; linear.len()];
    for idx in graph.topo_order() {
        let reach = graph
            .inputs(idx)
            .into_iter()
            .flatten()
            .chain(graph.captures(idx))
            .map(|v| level.get(&v.node).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let out = match is_linear.get(&idx) {
            Some(&i) => {
                depth[i] = reach;
                reach + 1
            }
            None => reach,
        };
        level.insert(idx, out);
    }
    let mut weight_stage: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (_, li)) in linear.iter().enumerate() {
        let s = weight_stage.entry(li.weight.as_str()).or_insert(depth[i]);
        *s = (*s).max(depth[i]);
    }
    let mut by_stage: BTreeMap<usize, Vec<LinearInput>> = BTreeMap::new();
    for (_, li) in &linear {
        let s = weight_stage[li.weight.as_str()];
        by_stage.entry(s).or_default().push(li.clone());
    }
    by_stage.into_values().collect()
}

/// One weight's integers chosen in its stage, with a fingerprint of the float values they
/// were chosen for.
#[derive(Debug, Clone)]
struct Chosen {
    fingerprint: u64,
    quantized: BlockQuantized,
}

/// The integers chosen stage by stage, as a [`BlockQuantizer`]: a weight met with other
/// values than it was chosen for (a Gemm's `alpha` folded in, say), or never chosen
/// (embeddings, weights without statistics), is rounded to nearest; the first case is listed
/// in [`Precomputed::fallbacks`].
#[derive(Debug, Default)]
pub struct Precomputed {
    chosen: BTreeMap<String, Chosen>,
    fallbacks: FallbackLog,
}

impl Precomputed {
    /// No weight chosen yet.
    pub fn new() -> Precomputed {
        Precomputed::default()
    }

    /// Weights chosen so far.
    pub fn len(&self) -> usize {
        self.chosen.len()
    }

    /// Whether no weight has been chosen.
    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty()
    }

    /// The integers chosen for `weight`, if any.
    pub fn get(&self, weight: &str) -> Option<&BlockQuantized> {
        self.chosen.get(weight).map(|c| &c.quantized)
    }

    /// The weights rounded to nearest because they were met with other values.
    pub fn fallbacks(&self) -> Vec<GptqFallback> {
        self.fallbacks.list()
    }
}

impl BlockQuantizer for Precomputed {
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        k: usize,
        n: usize,
        params: BlockParams,
    ) -> Result<BlockQuantized, String> {
        let Some(c) = self.chosen.get(name) else {
            return quantize_rtn(w, k, n, params);
        };
        let q = &c.quantized;
        if (q.k, q.n, q.params) == (k, n, params) && c.fingerprint == fingerprint(w) {
            return Ok(q.clone());
        }
        self.fallbacks.note(
            name,
            "met with other values or another shape than its stage quantized",
        );
        quantize_rtn(w, k, n, params)
    }
}

/// FNV-1a over the bits of `w`.
fn fingerprint(w: &[f32]) -> u64 {
    w.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A weight of the stage that could not be quantized, and why (the block-wise pass meets it
/// again and reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSkip {
    /// The weight.
    pub weight: String,
    /// Why.
    pub reason: String,
}

/// Chooses the integers of the weights of `stage` with `quantizer` (in parallel), keeps them
/// in `out`, and replaces each weight in `model` (the statistics model) by its dequantized
/// values, so later stages' statistics see it quantized.
pub fn quantize_stage(
    model: &mut Model,
    stage: &[LinearInput],
    params: BlockParams,
    quantizer: &(dyn BlockQuantizer + Sync),
    out: &mut Precomputed,
) -> Vec<StageSkip> {
    quantize_stage_towards(model, stage, params, quantizer, &|_, _, _, _| None, out)
}

/// The weight a stage quantizes instead of `w` (`[k, n]`, named by the first argument), if
/// any: see [`corrected_weight`].
pub type Target<'a> = dyn Fn(&str, &[f32], usize, usize) -> Option<Vec<f32>> + Sync + 'a;

/// [`quantize_stage`], each weight's integers chosen for the values `target` gives (when it
/// gives some) rather than its own; they are still kept for, and met with, its own values.
pub fn quantize_stage_towards(
    model: &mut Model,
    stage: &[LinearInput],
    params: BlockParams,
    quantizer: &(dyn BlockQuantizer + Sync),
    target: &Target,
    out: &mut Precomputed,
) -> Vec<StageSkip> {
    let mut weights: Vec<(&str, usize)> = Vec::new();
    for li in stage {
        if !weights.iter().any(|(w, _)| *w == li.weight) {
            weights.push((li.weight.as_str(), li.k_axis));
        }
    }
    let graph = &model.graph;
    let done: Vec<(String, Result<Choice, String>)> = weights
        .par_iter()
        .map(|&(name, k_axis)| {
            let r = choose(graph, name, k_axis, params, quantizer, target);
            (name.to_string(), r)
        })
        .collect();
    let mut skipped = Vec::new();
    for (name, r) in done {
        match r {
            Ok((chosen, dequantized)) => {
                let node = model.graph.find_value(&name).map(|v| v.node);
                if let Some(NodeKind::Constant { value, .. }) = node
                    .and_then(|n| model.graph.node_mut(n))
                    .map(|n| &mut n.kind)
                {
                    *value = dequantized;
                }
                out.chosen.insert(name, chosen);
            }
            Err(reason) => skipped.push(StageSkip {
                weight: name,
                reason,
            }),
        }
    }
    skipped
}

/// A weight's integers and its dequantized values in the weight's own layout.
type Choice = (Chosen, Tensor);

/// Quantizes the weight `name` of `graph` (K on its axis `k_axis`) with `quantizer`.
fn choose(
    graph: &Graph,
    name: &str,
    k_axis: usize,
    params: BlockParams,
    quantizer: &(dyn BlockQuantizer + Sync),
    target: &Target,
) -> Result<Choice, String> {
    let v = graph
        .find_value(name)
        .ok_or_else(|| "not found in the graph".to_string())?;
    let t = graph
        .constant(v)
        .ok_or_else(|| "not a constant".to_string())?;
    let m = matrix(t, k_axis, 1.0)?;
    let q = match target(name, &m.data, m.k, m.n) {
        Some(t) => quantizer.quantize(name, &t, m.k, m.n, params)?,
        None => quantizer.quantize(name, &m.data, m.k, m.n, params)?,
    };
    let deq = q.dequantized();
    let back = if k_axis == 0 {
        deq
    } else {
        transpose(&deq, q.k, q.n)
    };
    let t = Tensor::from_vec(t.shape().to_vec(), back).map_err(|e| e.to_string())?;
    let chosen = Chosen {
        fingerprint: fingerprint(&m.data),
        quantized: q,
    };
    Ok((chosen, t))
}

/// `X_qᵀ X_f` of a MatMul input over calibration data: its rows in the partially quantized
/// model (`X_q`) against the same rows in the float model (`X_f`), row-major `K × K`, f64.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossMoment {
    k: usize,
    m: Vec<f64>,
    rows: u64,
}

impl CrossMoment {
    /// Empty, for inputs of `k` features.
    pub fn new(k: usize) -> CrossMoment {
        CrossMoment {
            k,
            m: vec![0.0; k * k],
            rows: 0,
        }
    }

    /// Rows folded in.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Folds in the rows of `xq` and `xf` (the same rows, `[rows, K]` each); a pair with a
    /// non-finite value is left out, as [`Hessian`](super::Hessian) leaves the row out.
    pub fn add_pairs(&mut self, xq: &[f32], xf: &[f32]) -> Result<(), String> {
        let k = self.k;
        if k == 0 || xq.len() != xf.len() || !xq.len().is_multiple_of(k) {
            return Err(format!(
                "{} and {} values are not the same rows of {k} features",
                xq.len(),
                xf.len()
            ));
        }
        for (q, f) in xq.chunks_exact(k).zip(xf.chunks_exact(k)) {
            if !q.iter().all(|v| v.is_finite()) {
                continue;
            }
            for (i, &qi) in q.iter().enumerate() {
                if qi == 0.0 {
                    continue;
                }
                let row = &mut self.m[i * k..(i + 1) * k];
                for (r, &fj) in row.iter_mut().zip(f) {
                    *r += f64::from(qi) * f64::from(fj);
                }
            }
            self.rows += 1;
        }
        Ok(())
    }
}

/// The weight whose GPTQ on the partially quantized model's inputs minimizes the distance to
/// the *float* model's output, `‖X_f W − X_q Ŵ‖²` (the asymmetric objective of GPTAQ, Li et al.
/// 2025; the GPTQ paper's error-correcting target): `W' = W + (H + λI)⁻¹ X_qᵀ(X_f − X_q) W`
/// with `H = X_qᵀX_q` and GPTQ's dampening `λ = damp · mean(diag H)`; then
/// `‖X_f W − X_q Ŵ‖² = ‖X_f W − X_q W'‖² + ‖X_q (W' − Ŵ)‖²`, the second GPTQ's loss.
pub fn corrected_weight(
    w: &[f32],
    k: usize,
    n: usize,
    h: &super::Hessian,
    cross: &CrossMoment,
    damp: f64,
) -> Result<Vec<f32>, String> {
    if h.k() != k || cross.k != k || w.len() != k * n {
        return Err("the statistics do not match the weight's K".into());
    }
    let mut hd = h.dense();
    let mean = (0..k).map(|i| hd[i * k + i]).sum::<f64>() / k as f64;
    // D = X_qᵀX_f − X_qᵀX_q.
    let d: Vec<f64> = cross.m.iter().zip(&hd).map(|(c, h)| c - h).collect();
    for i in 0..k {
        if hd[i * k + i] == 0.0 {
            hd[i * k + i] = 1.0;
        }
        hd[i * k + i] += damp * mean.max(f64::MIN_POSITIVE);
    }
    let u = super::linalg::upper_cholesky_of_inverse(hd, k)
        .map_err(|_| "the dampened Hessian is not positive definite".to_string())?;
    // Z = Uᵀ U D W, column by column.
    let mut out = w.to_vec();
    let (mut a, mut b) = (vec![0f64; k], vec![0f64; k]);
    for c in 0..n {
        for (i, ai) in a.iter_mut().enumerate() {
            *ai = (0..k).map(|j| d[i * k + j] * f64::from(w[j * n + c])).sum();
        }
        for (i, bi) in b.iter_mut().enumerate() {
            *bi = (i..k).map(|j| u[i * k + j] * a[j]).sum();
        }
        for i in 0..k {
            let z: f64 = (0..=i).map(|j| u[j * k + i] * b[j]).sum();
            out[i * n + c] += z as f32;
        }
    }
    Ok(out)
}

/// The `[n, k]` transpose of the row-major `[k, n]` matrix `m`.
fn transpose(m: &[f32], k: usize, n: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for r in 0..k {
        for c in 0..n {
            t[c * k + r] = m[r * n + c];
        }
    }
    t
}

#[cfg(test)]
mod tests;
