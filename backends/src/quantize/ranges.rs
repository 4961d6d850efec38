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

/// The range of every tensor `plan` quantizes (and, for sensitivity, every tensor a
/// one-node plan needs), with a summary of where they came from.
#[allow(clippy::too_many_arguments)]
pub(super) fn gather(
    float: &FloatModel<'_>,
    config: &QuantConfig,
    plan: &QuantPlan,
    source: &RangeSource,
    method: Method,
    calibration: &CalibrationOptions,
    save_stats: Option<&Path>,
    sensitivity: bool,
    warnings: &mut Vec<String>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Ranges, CalibrationSummary), QuantizeError> {
    // Sensitivity quantizes one node at a time, which needs ranges the full plan does not
    // (a Conv's own output, when the full plan folds its Relu into it).
    let mut calibrated = plan.tensors.clone();
    if sensitivity {
        let mut seen: BTreeSet<String> = calibrated.iter().cloned().collect();
        for node in &plan.nodes {
            let mut one = config.clone();
            one.only_nodes = Some(BTreeSet::from([node.clone()]));
            for t in qdq::plan(float.model, &one)?.tensors {
                if seen.insert(t.clone()) {
                    calibrated.push(t);
                }
            }
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
    let mut ranges = stats.ranges(method, &|n| config.activation_scheme(n));
    for (name, range) in &plan.fixed {
        ranges.insert(name.clone(), *range);
    }
    Ok((ranges, summary))
}
