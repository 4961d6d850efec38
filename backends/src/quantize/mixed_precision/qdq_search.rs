//! The search in static QDQ mode: candidates are the nodes the plan quantizes; a point is the
//! whole model quantized (and pinned) with the `k` most sensitive of them at 16-bit.

use std::collections::{BTreeMap, BTreeSet};

use kiln_passes::ir::Model;
use kiln_passes::quant::qdq::{QdqSummary, QuantPlan, TensorKind};
use kiln_passes::quant::{QuantConfig, Ranges};

use crate::calibrate::Progress;

use super::super::accuracy::Reference;
use super::super::error::QuantizeError;
use super::super::sensitivity::qdq_each_alone;
use super::super::{build_qdq, pin, Stage};
use super::promote::{layer_tensors, node_id, promote_qdq, sixteen_bit};
use super::search::{explore, sensitivity_progress};
use super::{MixedPrecisionOptions, MixedPrecisionReport};

/// The float model, its calibration and the samples a static search measures on.
pub(crate) struct QdqSearch<'a> {
    /// The optimized float model.
    pub float: &'a Model,
    /// The configuration without promotions.
    pub config: &'a QuantConfig,
    /// Its plan on `float`.
    pub plan: &'a QuantPlan,
    /// Ranges under `config`'s schemes (every tensor any point needs).
    pub ranges: &'a Ranges,
    /// The same tensors' ranges under the promoted (16-bit) schemes.
    pub promoted_ranges: &'a Ranges,
    /// The float outputs on the samples.
    pub reference: &'a Reference<'a>,
}

/// The point chosen: its configuration and ranges (what the driver builds), and the report.
pub(crate) struct QdqChoice {
    /// The configuration with the chosen layers promoted.
    pub config: QuantConfig,
    /// Its ranges.
    pub ranges: Ranges,
    /// What the search did.
    pub report: MixedPrecisionReport,
}

impl QdqSearch<'_> {
    /// Ranks the candidates, evaluates the points, chooses one.
    pub fn run(
        &self,
        options: &MixedPrecisionOptions,
        on: &str,
        progress: &mut dyn FnMut(Stage, Progress),
    ) -> Result<QdqChoice, QuantizeError> {
        let ranking = qdq_each_alone(
            self.float,
            self.config,
            self.ranges,
            &self.plan.nodes,
            self.reference,
            &mut sensitivity_progress(self.plan.nodes.len(), progress),
        )?;
        let order: Vec<String> = ranking.iter().map(|l| l.node.clone()).collect();
        let shares = self.shares(&order);
        let (front, choice) = explore(options, &shares, progress, &mut |k| {
            let config = self.promoted(&order[..k]);
            let ranges = self.ranges_for(&config);
            let mut model = self.float.clone();
            let summary = build_qdq(&mut model, &config, &ranges)?;
            pin(&mut model, &config)?;
            let sqnr = self.reference.measure(&model.to_proto())?;
            Ok((stored_bytes(&summary, self.float), sqnr.db()))
        })?;
        let k = front[choice.index].promoted;
        let config = self.promoted(&order[..k]);
        let ranges = self.ranges_for(&config);
        let report = MixedPrecisionReport {
            target_sqnr: options.target_sqnr,
            max_16bit_share: options.max_16bit_share,
            promotion: format!(
                "{} activations, int16 weights",
                sixteen_bit(self.config.activations.dtype).name()
            ),
            on: on.to_string(),
            samples: self.reference.samples(),
            ranking,
            front,
            chosen: choice.index,
            target_reached: choice.reached,
            promoted: order[..k].to_vec(),
            not_promoted: Vec::new(),
        };
        Ok(QdqChoice {
            config,
            ranges,
            report,
        })
    }

    /// The configuration with `nodes` promoted.
    fn promoted(&self, nodes: &[String]) -> QuantConfig {
        promote_qdq(self.config, self.float, self.plan, nodes)
    }

    /// The ranges of `config`: a tensor whose scheme it changed takes its range under the
    /// promoted scheme (the methods other than MinMax depend on the bits).
    fn ranges_for(&self, config: &QuantConfig) -> Ranges {
        let mut out = Ranges::new();
        for (name, range) in self.ranges.iter() {
            let promoted = config.activation_scheme(name) != self.config.activation_scheme(name);
            let r = match self.promoted_ranges.get(name) {
                Some(p) if promoted => p,
                _ => range,
            };
            out.insert(name, r);
        }
        out
    }

    /// The 16-bit share with the first `k` layers of `order` promoted, for every `k`: the
    /// share of the candidate layers' weight elements they hold (each weight counted once).
    fn shares(&self, order: &[String]) -> Vec<f64> {
        let g = &self.float.graph;
        let by_id: BTreeMap<String, _> = g
            .nodes()
            .filter(|(_, n)| n.is_operator())
            .map(|(i, _)| (node_id(g, i), i))
            .collect();
        let layer_weights: Vec<Vec<(String, usize)>> = order
            .iter()
            .map(|id| {
                by_id.get(id).map_or_else(Vec::new, |&idx| {
                    layer_tensors(g, idx, self.plan)
                        .weights
                        .iter()
                        .filter_map(|&w| Some((g.value_name(w).to_string(), g.constant(w)?.len())))
                        .collect()
                })
            })
            .collect();
        let mut seen = BTreeSet::new();
        let mut cumulative = vec![0usize];
        for weights in &layer_weights {
            let mut sum = *cumulative.last().unwrap_or(&0);
            for (name, elements) in weights {
                if seen.insert(name.clone()) {
                    sum += elements;
                }
            }
            cumulative.push(sum);
        }
        let total = *cumulative.last().unwrap_or(&0);
        cumulative
            .iter()
            .map(|&c| {
                if total == 0 {
                    0.0
                } else {
                    c as f64 / total as f64
                }
            })
            .collect()
    }
}

/// Bytes of the weights a QDQ rewrite stored: integers (a weight quantized at two types
/// counts twice), float32 scales and zero points at the weight's type.
fn stored_bytes(summary: &QdqSummary, float: &Model) -> u64 {
    let g = &float.graph;
    summary
        .tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Weight)
        .map(|t| {
            let elements = g
                .find_value(&t.name)
                .and_then(|v| g.constant(v))
                .map_or(0, |c| c.len()) as u64;
            let bytes = u64::from(t.dtype.bits() / 8);
            elements * bytes + 4 * t.scales.len() as u64 + bytes * t.zero_points.len() as u64
        })
        .sum()
}
