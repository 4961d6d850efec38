//! Where activation ranges come from: calibration over samples, or saved statistics (merged
//! when several shards), turned into ranges by the chosen method, with the ranges ops fix.

use std::collections::BTreeSet;
use std::path::Path;

use kiln_passes::quant::qdq::{self, QuantPlan};
use kiln_passes::quant::{QuantConfig, Ranges};

use crate::calibrate::{
    collect, open_samples_with, CalibrationData, CalibrationOptions, Method, Progress, Statistics,
};

use super::{CalibrationSummary, FloatModel, QuantizeError, RangeSource};

/// What calibration measured: the ranges under `config`, where they came from, and the
/// statistics (ranges under other schemes are derived from them).
pub(super) struct Gathered {
    /// The range of every calibrated tensor under the config's schemes, and the fixed ones.
    pub ranges: Ranges,
    /// Where they came from.
    pub summary: CalibrationSummary,
    /// The statistics behind them.
    pub stats: Statistics,
}

/// The range of every tensor `plan` quantizes and of every tensor of `extra` (the ranges other
/// plans need: see [`one_node_tensors`]), with a summary of where they came from.
#[allow(clippy::too_many_arguments)]
pub(super) fn gather(
    float: &FloatModel<'_>,
    config: &QuantConfig,
    plan: &QuantPlan,
    extra: &[String],
    source: &RangeSource,
    method: Method,
    calibration: &CalibrationOptions,
    save_stats: Option<&Path>,
    warnings: &mut Vec<String>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Gathered, QuantizeError> {
    let mut calibrated = plan.tensors.clone();
    let mut seen: BTreeSet<String> = calibrated.iter().cloned().collect();
    for t in extra {
        if seen.insert(t.clone()) {
            calibrated.push(t.clone());
        }
    }
    let (stats, summary) = match source {
        RangeSource::Calibrate(data) => {
            if let CalibrationData::Synthetic { .. } = data {
                warnings.push(
                    "ranges come from random inputs (--synthetic): they are a placeholder; calibrate on real data before shipping".to_string(),
                );
            }
            let samples = open_samples_with(data, float.inputs, float.spec)?;
            let stats = collect(float.proto, &calibrated, samples, calibration, progress)?;
            let summary = CalibrationSummary::of(data, stats.samples(), calibrated.len());
            (stats, summary)
        }
        RangeSource::Saved(files) => {
            let Some(first) = files.first() else {
                return Err(QuantizeError::Options("no statistics file given".into()));
            };
            let mut stats = Statistics::load(first)?;
            for f in &files[1..] {
                stats.merge(&Statistics::load(f)?)?;
            }
            let known: BTreeSet<&str> = stats.tensor_names().collect();
            if let Some(t) = calibrated.iter().find(|t| !known.contains(t.as_str())) {
                return Err(QuantizeError::RangesMissing {
                    path: first.clone(),
                    tensor: t.clone(),
                });
            }
            let summary = CalibrationSummary {
                source: "saved".to_string(),
                path: Some(
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                samples: stats.samples(),
                tensors: calibrated.len(),
            };
            (stats, summary)
        }
    };
    if let Some(path) = save_stats {
        stats.save(path)?;
    }
    let ranges = ranges_under(&stats, method, config, plan);
    Ok(Gathered {
        ranges,
        summary,
        stats,
    })
}

/// The ranges `stats` give under `config`'s schemes (the methods other than MinMax depend on
/// the bits), with the ranges `plan` fixes.
pub(super) fn ranges_under(
    stats: &Statistics,
    method: Method,
    config: &QuantConfig,
    plan: &QuantPlan,
) -> Ranges {
    let mut ranges = stats.ranges(method, &|n| config.activation_scheme(n));
    for (name, range) in &plan.fixed {
        ranges.insert(name.clone(), *range);
    }
    ranges
}

/// The tensors quantizing one node of `plan` at a time needs beyond the full plan's (a Conv's
/// own output, when the full plan folds its Relu into it): per-layer sensitivity's.
pub(super) fn one_node_tensors(
    model: &kiln_passes::ir::Model,
    config: &QuantConfig,
    plan: &QuantPlan,
) -> Result<Vec<String>, QuantizeError> {
    let mut out = Vec::new();
    for node in &plan.nodes {
        let mut one = config.clone();
        one.only_nodes = Some(BTreeSet::from([node.clone()]));
        out.extend(qdq::plan(model, &one)?.tensors);
    }
    Ok(out)
}
