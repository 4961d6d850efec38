//! AWQ-style weight-only quantization (Lin et al., 2023): per group of weights that read one
//! activation (q/k/v behind one norm, gate/up behind another, down behind the gated product,
//! the LM head behind the final norm), a per-input-channel scale `s = mean|x|^α` chosen on
//! the calibration data (`scale_search.rs`) is multiplied into the weights and divided out of
//! the activation where it is produced (`fold.rs`), so the float model is unchanged; then each
//! block's range is shrunk by the ratio of least output error (`clip_search.rs`), or the
//! scaled weights go through GPTQ.
//!
//! The error everything here minimizes is the layer's output error on the calibration inputs,
//! `Σ_j Δw_jᵀ H Δw_j` with `H = XᵀX`, the Hessian GPTQ already collects; AWQ's `mean|x|`
//! comes beside it ([`MeanAbs`]). [`apply_scales`] edits the model and returns what it did;
//! [`Awq`] is the [`BlockQuantizer`] that then chooses the integers, each weight with the
//! Hessian of its (scaled) input.

mod clip_search;
mod fold;
mod magnitude;
mod scale_search;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

pub use clip_search::{clip_ratios, quantize_clipped, Clipped, CLIP_MIN, CLIP_STEPS};
pub use magnitude::MeanAbs;
pub use scale_search::{alpha_grid, awq_scales, search_scales, GroupWeight, ScaleChoice};

pub(super) use clip_search::shrunk_grid;

use super::config::BlockwiseConfig;
use super::gptq::{
    error_of_columns, quantize_gptq, sample_columns, FallbackLog, GptqFallback, GptqOptions,
};
use super::hessian::Hessian;
use super::rtn::{quantize_rtn, BlockParams, BlockQuantized, BlockQuantizer};
use super::weight::matrix;
use super::{linear_nodes, LinearInput};
use crate::ir::{Model, NameSet, NodeIndex, ValueRef};
use crate::pipeline::PassError;

/// AWQ's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AwqOptions {
    /// Points of the α grid on `[0, 1]` (AWQ's `n_grid` 20, plus 1.0).
    pub grid: usize,
    /// Shrink each block's range by the ratio of least output error (AWQ's clip search).
    pub clip: bool,
    /// Where no producer can take `1/s`, insert a `Mul` by it in front of the group (else the
    /// group keeps its scale 1 and only gets the clip search).
    pub insert_mul: bool,
    /// Choose the integers of the scaled weights with GPTQ instead of rounding them (its
    /// `clip` is replaced by this `clip`: the clip search then runs inside GPTQ).
    pub gptq: Option<GptqOptions>,
}

impl Default for AwqOptions {
    fn default() -> AwqOptions {
        AwqOptions {
            grid: 21,
            clip: true,
            insert_mul: false,
            gptq: None,
        }
    }
}

/// The calibration statistics of one activation.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationStats {
    /// `XᵀX`.
    pub hessian: Hessian,
    /// `mean|x_i|` per channel.
    pub mean_abs: Vec<f64>,
}

/// Where a group's `1/s` went.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaling {
    /// Into a constant of the activation's producer (which one, said in words).
    Folded {
        /// What was divided.
        into: String,
    },
    /// Into a `Mul` inserted in front of the group.
    Mul {
        /// The new node.
        node: String,
    },
    /// Nowhere: the group's weights are not scaled.
    Unscaled {
        /// Why.
        reason: String,
    },
}

/// What AWQ did to one group of weights reading the same activation.
#[derive(Debug, Clone, PartialEq)]
pub struct AwqGroup {
    /// The activation.
    pub activation: String,
    /// The nodes reading it (their names, or their first output's).
    pub nodes: Vec<String>,
    /// Their weights.
    pub weights: Vec<String>,
    /// The exponent chosen (0: no scaling).
    pub alpha: f64,
    /// The group's output error on the calibration data with the scales and RTN.
    pub error: f64,
    /// The same without scales.
    pub rtn_error: f64,
    /// Where `1/s` went.
    pub scaling: Scaling,
}

/// One group: the activation, its readers and their weights (each with its K axis).
struct Group {
    activation: ValueRef,
    inputs: Vec<(NodeIndex, LinearInput)>,
}

/// Searches each group's scale and applies it to `model` (weights times `s`, `1/s` folded
/// into the producer or a `Mul`); returns what was done per group, in graph order, and the
/// quantizer to quantize the edited model with.
///
/// Groups without statistics, whose weights are also read outside the group, or that hold
/// values AWQ cannot read are left unscaled, with the reason.
pub fn apply_scales(
    model: &mut Model,
    config: &BlockwiseConfig,
    stats: &BTreeMap<String, ActivationStats>,
    options: &AwqOptions,
) -> Result<(Vec<AwqGroup>, Awq), PassError> {
    let groups = groups(model, config);
    let params = config.params();
    let mut names = NameSet::of(&model.graph);
    let mut done = Vec::with_capacity(groups.len());
    // The scale each activation ended up divided by.
    let mut applied: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for g in &groups {
        let graph = &model.graph;
        let act = graph.value_name(g.activation).to_string();
        let mut report = AwqGroup {
            activation: act.clone(),
            nodes: g.inputs.iter().map(|(_, li)| li.node.clone()).collect(),
            weights: dedup(g.inputs.iter().map(|(_, li)| li.weight.clone())),
            alpha: 0.0,
            error: f64::NAN,
            rtn_error: f64::NAN,
            scaling: Scaling::Unscaled {
                reason: String::new(),
            },
        };
        let choice = match stats.get(&act) {
            None => Err("no calibration statistics for the activation".to_string()),
            Some(s) => search_group(model, g, s, params, options.grid),
        };
        let choice = match choice {
            Ok(c) => c,
            Err(reason) => {
                report.scaling = Scaling::Unscaled { reason };
                done.push(report);
                continue;
            }
        };
        report.alpha = choice.alpha;
        report.error = choice.error;
        report.rtn_error = choice.rtn_error;
        if choice.alpha == 0.0 {
            report.scaling = Scaling::Unscaled {
                reason: "α = 0 (no scaling) had the least error".into(),
            };
            done.push(report);
            continue;
        }
        report.scaling = scale_group(model, &mut names, g, &choice.scales, options.insert_mul)
            .map_err(|e| PassError::Unsupported(format!("AWQ on '{act}': {e}")))?;
        if !matches!(report.scaling, Scaling::Unscaled { .. }) {
            applied.insert(act, choice.scales);
        }
        done.push(report);
    }
    let quantizer = Awq::with_statistics(&groups, model, stats, &applied, *options);
    Ok((done, quantizer))
}

/// Unique values, first occurrence kept.
fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items.filter(|s| seen.insert(s.clone())).collect()
}

/// The selected MatMul/Gemm inputs of the main graph grouped by activation, in graph order.
fn groups(model: &Model, config: &BlockwiseConfig) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for (idx, li) in linear_nodes(model, config) {
        let Some(act) = model.graph.input(idx, 0) else {
            continue;
        };
        match out.iter_mut().find(|g| g.activation == act) {
            Some(g) => g.inputs.push((idx, li)),
            None => out.push(Group {
                activation: act,
                inputs: vec![(idx, li)],
            }),
        }
    }
    out
}

/// The scale search of group `g` on the model's current weights, or why it cannot run.
fn search_group(
    model: &Model,
    g: &Group,
    s: &ActivationStats,
    params: BlockParams,
    grid: usize,
) -> Result<ScaleChoice, String> {
    let graph = &model.graph;
    let k = g.inputs[0].1.k;
    if s.hessian.k() != k || s.mean_abs.len() != k {
        return Err(format!(
            "its statistics have {} channels, the weights' K is {k}",
            s.hessian.k()
        ));
    }
    if s.hessian.rows() == 0 {
        return Err("no calibration rows reached the activation".into());
    }
    let nodes: BTreeSet<NodeIndex> = g.inputs.iter().map(|(n, _)| *n).collect();
    let mut seen = BTreeSet::new();
    let mut mats = Vec::new();
    for (idx, li) in &g.inputs {
        let w = graph.input(*idx, 1).ok_or("a weight input is missing")?;
        if !seen.insert(w) {
            continue;
        }
        for (reader, _) in graph.consumers(w) {
            if !nodes.contains(&reader) {
                return Err(format!(
                    "weight '{}' is also read by '{}', outside the group",
                    li.weight,
                    crate::quant::bodies::label(graph, reader)
                ));
            }
        }
        let t = graph.constant(w).ok_or("a weight is not a constant")?;
        mats.push(matrix(t, li.k_axis, 1.0)?);
    }
    let weights: Vec<GroupWeight> = mats
        .iter()
        .map(|m| GroupWeight {
            data: &m.data,
            k: m.k,
            n: m.n,
        })
        .collect();
    search_scales(&weights, &s.hessian, &s.mean_abs, params, grid)
}

/// Folds `1/s` (or inserts a `Mul` by it) and multiplies the group's weights by `s`.
fn scale_group(
    model: &mut Model,
    names: &mut NameSet,
    g: &Group,
    scales: &[f32],
    insert_mul: bool,
) -> Result<Scaling, String> {
    let graph = &mut model.graph;
    let nodes: BTreeSet<NodeIndex> = g.inputs.iter().map(|(n, _)| *n).collect();
    let scaling = match fold::fold_targets(graph, g.activation, scales.len(), &nodes) {
        Ok((slots, into)) => {
            fold::divide(graph, names, &slots, scales)?;
            Scaling::Folded { into }
        }
        Err(_) if insert_mul => {
            let readers: Vec<NodeIndex> = nodes.iter().copied().collect();
            let node = fold::insert_mul(graph, names, g.activation, &readers, scales)?;
            Scaling::Mul { node }
        }
        Err(reason) => {
            return Ok(Scaling::Unscaled {
                reason: format!("nothing to fold 1/s into: {reason}"),
            })
        }
    };
    let mut seen = BTreeSet::new();
    for (idx, li) in &g.inputs {
        let w = graph.input(*idx, 1).ok_or("a weight input is missing")?;
        if seen.insert(w) {
            fold::scale_weight(graph, w, li.k_axis, scales)?;
        }
    }
    Ok(scaling)
}

/// How [`Awq`] chose one weight's integers.
#[derive(Debug, Clone, PartialEq)]
pub struct AwqWeight {
    /// The weight.
    pub weight: String,
    /// `clip` (clip search), `gptq`, or `rtn`.
    pub integers: &'static str,
    /// Blocks (× columns) whose range the clip search shrank, of `blocks`.
    pub clipped: Option<usize>,
    /// Blocks (× columns).
    pub blocks: usize,
    /// The mean ratio the clip search kept.
    pub mean_ratio: Option<f64>,
    /// The output error of the integers on the calibration data, over RTN's on the same
    /// (scaled) weight: all columns for the clip search, a sample of 64 for GPTQ.
    pub error_ratio: f64,
}

/// AWQ's [`BlockQuantizer`]: each weight's integers by the clip search (or GPTQ) under the
/// Hessian of its input as scaled; a weight without statistics is rounded to nearest and
/// listed in [`Awq::fallbacks`].
#[derive(Debug, Default)]
pub struct Awq {
    options: AwqOptions,
    hessians: BTreeMap<String, Arc<Hessian>>,
    chosen: Mutex<Vec<AwqWeight>>,
    fallbacks: FallbackLog,
}

impl Awq {
    /// A quantizer with `options` and no statistics yet.
    pub fn new(options: AwqOptions) -> Awq {
        Awq {
            options,
            ..Awq::default()
        }
    }

    /// Uses `hessian` for the weight named `weight`.
    pub fn insert(&mut self, weight: impl Into<String>, hessian: Arc<Hessian>) {
        self.hessians.insert(weight.into(), hessian);
    }

    /// The Hessian of `weight`, if any.
    pub fn hessian(&self, weight: &str) -> Option<&Hessian> {
        self.hessians.get(weight).map(|h| &**h)
    }

    /// How each weight's integers were chosen, sorted by weight name.
    pub fn chosen(&self) -> Vec<AwqWeight> {
        let mut v = self.chosen.lock().map(|c| c.clone()).unwrap_or_default();
        v.sort_by(|a, b| a.weight.cmp(&b.weight));
        v
    }

    /// The weights rounded to nearest instead, and why.
    pub fn fallbacks(&self) -> Vec<GptqFallback> {
        self.fallbacks.list()
    }

    fn record(&self, w: AwqWeight) {
        if let Ok(mut c) = self.chosen.lock() {
            c.push(w);
        }
    }

    /// The quantizer for the model `apply_scales` edited: each weight's Hessian is its
    /// activation's, as divided by the scale applied to it (`D⁻¹ H D⁻¹`), summed over the
    /// activations it reads when several nodes read it.
    fn with_statistics(
        groups: &[Group],
        model: &Model,
        stats: &BTreeMap<String, ActivationStats>,
        applied: &BTreeMap<String, Vec<f32>>,
        options: AwqOptions,
    ) -> Awq {
        let mut by_act: BTreeMap<String, Arc<Hessian>> = BTreeMap::new();
        for (act, s) in stats {
            let h = match applied.get(act) {
                Some(scales) => match divided(&s.hessian, scales) {
                    Some(h) => h,
                    None => continue,
                },
                None => s.hessian.clone(),
            };
            by_act.insert(act.clone(), Arc::new(h));
        }
        let reads: Vec<(&str, &str)> = groups
            .iter()
            .flat_map(|g| {
                let act = model.graph.value_name(g.activation);
                g.inputs
                    .iter()
                    .map(move |(_, li)| (li.weight.as_str(), act))
            })
            .collect();
        let mut awq = Awq::new(options);
        for (weight, h) in super::hessian::per_weight(reads, &by_act) {
            awq.insert(weight, h);
        }
        awq
    }
}

/// `D⁻¹ H D⁻¹` with `D = diag(scales)`: the Hessian of the activation divided by `scales`.
fn divided(h: &Hessian, scales: &[f32]) -> Option<Hessian> {
    let k = h.k();
    if scales.len() != k {
        return None;
    }
    let mut d = h.dense();
    for i in 0..k {
        for j in 0..k {
            d[i * k + j] /= f64::from(scales[i]) * f64::from(scales[j]);
        }
    }
    Hessian::from_dense(k, &d, h.rows()).ok()
}

impl BlockQuantizer for Awq {
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        k: usize,
        n: usize,
        params: BlockParams,
    ) -> Result<BlockQuantized, String> {
        let rtn = quantize_rtn(w, k, n, params)?;
        let Some(h) = self.hessians.get(name) else {
            self.fallbacks
                .note(name, "no calibration statistics for its input");
            return Ok(rtn);
        };
        let blocks = rtn.scales.len();
        if let Some(g) = self.options.gptq {
            let g = GptqOptions {
                clip: self.options.clip,
                ..g
            };
            let q = match quantize_gptq(w, k, n, params, h, &g) {
                Ok(q) => q,
                Err(e) => {
                    self.fallbacks.note(name, e);
                    return Ok(rtn);
                }
            };
            let cols = sample_columns(n, CHECKED_COLUMNS);
            let hd = h.dense();
            let (e, r) = (
                error_of_columns(w, &q, &hd, &cols),
                error_of_columns(w, &rtn, &hd, &cols),
            );
            if e > r {
                self.fallbacks.note(
                    name,
                    format!(
                        "GPTQ's output error on the calibration data ({e:.4e}) is not below RTN's ({r:.4e}) on {} of its columns",
                        cols.len()
                    ),
                );
                return Ok(rtn);
            }
            self.record(AwqWeight {
                weight: name.to_string(),
                integers: "gptq",
                clipped: None,
                blocks,
                mean_ratio: None,
                error_ratio: ratio(e, r),
            });
            return Ok(q);
        }
        if !self.options.clip {
            self.record(AwqWeight {
                weight: name.to_string(),
                integers: "rtn",
                clipped: None,
                blocks,
                mean_ratio: None,
                error_ratio: 1.0,
            });
            return Ok(rtn);
        }
        match quantize_clipped(w, k, n, params, h) {
            Ok(c) => {
                self.record(AwqWeight {
                    weight: name.to_string(),
                    integers: "clip",
                    clipped: Some(c.clipped),
                    blocks: c.blocks,
                    mean_ratio: Some(c.mean_ratio),
                    error_ratio: ratio(c.error, c.rtn_error),
                });
                Ok(c.quantized)
            }
            Err(e) => {
                self.fallbacks.note(name, e);
                Ok(rtn)
            }
        }
    }
}

/// Columns on which a GPTQ result is compared with RTN's.
const CHECKED_COLUMNS: usize = 64;

/// `e / r`, 1 when both are 0.
fn ratio(e: f64, r: f64) -> f64 {
    if r > 0.0 {
        e / r
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests;
