//! `--bias-correction` in static mode: the weights are quantized once in a trial copy, the
//! float model runs over the calibration samples in ONNX Runtime to measure the mean of each
//! corrected layer's input per channel (per channel and kernel tap for a Conv, so padding is
//! exact; streamed: one running sum each), the float
//! biases are shifted by the mean error of the weights
//! ([`kiln_passes::quant::bias_correction`]), and the model is then quantized for real (the
//! weights quantize the same; the biases now carry the correction).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use kiln_passes::ir::Model;
use kiln_passes::quant::bias_correction::{bias_targets, correct_biases, BiasTarget, ChannelAxis};
use kiln_passes::quant::{qdq, QuantConfig, Ranges};
use kiln_proto::onnx::ModelProto;
use serde::Serialize;

use super::error::QuantizeError;
use crate::calibrate::{CalibrationError, Progress, Samples};
use crate::runtime::{expose_outputs, Optimization, Session, SessionOptions};
use crate::value::Value;

/// What bias correction did.
#[derive(Debug, Clone, Serialize)]
pub struct BiasCorrectionReport {
    /// Samples the means were measured on.
    pub samples: u64,
    /// Every corrected layer.
    pub corrected: Vec<CorrectedLayer>,
    /// Layers with a weight and bias left uncorrected, and why.
    pub skipped: Vec<super::SkippedNode>,
}

/// One corrected bias.
#[derive(Debug, Clone, Serialize)]
pub struct CorrectedLayer {
    /// The node.
    pub node: String,
    /// The bias constant.
    pub bias: String,
    /// Output channels.
    pub channels: usize,
    /// Mean |shift| of its values.
    pub mean_abs_shift: f64,
    /// Largest |shift|.
    pub max_abs_shift: f64,
}

/// Shifts the float biases of `model` (optimized, not yet quantized) by the mean weight error
/// that quantizing it with `config` and `ranges` makes, measured on `samples` run through
/// `float` (the same model as ONNX Runtime sees it).
pub(super) fn correct(
    model: &mut Model,
    float: &ModelProto,
    config: &QuantConfig,
    ranges: &Ranges,
    samples: Samples,
    session: &SessionOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BiasCorrectionReport, QuantizeError> {
    let mut trial = model.clone();
    qdq::insert_qdq(&mut trial, config, ranges)?;
    let (targets, mut skipped) = bias_targets(model);
    let (means, count) = channel_means(float, &targets, samples, session, progress)?;
    let (done, more) = correct_biases(model, &trial, &targets, &means);
    skipped.extend(more);
    Ok(BiasCorrectionReport {
        samples: count,
        corrected: done
            .into_iter()
            .map(|c| CorrectedLayer {
                node: c.node,
                bias: c.bias,
                channels: c.channels,
                mean_abs_shift: c.mean_abs_shift,
                max_abs_shift: c.max_abs_shift,
            })
            .collect(),
        skipped: skipped
            .into_iter()
            .map(|s| super::SkippedNode::new(&s.node, "", &s.reason))
            .collect(),
    })
}

/// The means each target needs over `samples`, by node: of its input per channel, or for a
/// Conv per channel and kernel tap (padding read as zero).
fn channel_means(
    float: &ModelProto,
    targets: &[BiasTarget],
    mut samples: Samples,
    session: &SessionOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(BTreeMap<String, Vec<f64>>, u64), QuantizeError> {
    if targets.is_empty() {
        return Ok((BTreeMap::new(), 0));
    }
    let graph_inputs: HashSet<&str> = float
        .graph
        .as_ref()
        .map(|g| g.input.iter().map(|i| i.name.as_str()).collect())
        .unwrap_or_default();
    let exposed: Vec<String> = targets
        .iter()
        .map(|t| t.activation.clone())
        .filter(|n| !graph_inputs.contains(n.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // As written (no ONNX Runtime rewrites), like calibration.
    let options = SessionOptions {
        intra_threads: session.intra_threads,
        optimization: Optimization::DisableAll,
    };
    let mut runner = Session::from_model_with(&expose_outputs(float, &exposed), &options)
        .map_err(CalibrationError::Session)?;
    // Per node: sums and the count each is over.
    let mut sums: Vec<(Vec<f64>, u64)> = targets
        .iter()
        .map(|t| {
            let per = t.geometry.as_ref().map_or(1, |g| g.taps());
            (vec![0.0; t.channels * per], 0)
        })
        .collect();
    let (total, start) = (samples.len(), Instant::now());
    let mut done = 0u64;
    while let Some(sample) = samples.next_sample() {
        let sample = sample?;
        let outputs = runner
            .run(&sample.values)
            .map_err(|source| CalibrationError::Run {
                sample: sample.label.clone(),
                source,
            })?;
        for (t, (sum, count)) in targets.iter().zip(sums.iter_mut()) {
            let Some((name, value)) = outputs
                .iter()
                .chain(&sample.values)
                .find(|(n, _)| *n == t.activation)
            else {
                continue;
            };
            let Value::Tensor(tensor) = value else {
                continue;
            };
            let shape = tensor.shape().to_vec();
            let values = tensor
                .to_f64_vec()
                .ok_or_else(|| CalibrationError::NotFloat {
                    name: name.clone(),
                    got: value.describe(),
                })?;
            let layout = |reason: String| CalibrationError::layout(name.as_str(), reason);
            match (&t.geometry, t.axis) {
                (Some(geometry), _) => {
                    if shape.get(1) != Some(&t.channels) {
                        return Err(layout(format!(
                            "shape {shape:?} does not have {} channels at axis 1",
                            t.channels
                        ))
                        .into());
                    }
                    let (s, n) = geometry.tap_sums(&values, &shape).map_err(layout)?;
                    for (a, b) in sum.iter_mut().zip(s) {
                        *a += b;
                    }
                    *count += n;
                }
                (None, axis) => {
                    let at = match axis {
                        ChannelAxis::Second => 1,
                        ChannelAxis::Last => shape.len().saturating_sub(1),
                    };
                    if shape.get(at) != Some(&t.channels) {
                        return Err(layout(format!(
                            "shape {shape:?} does not have {} channels at axis {at}",
                            t.channels
                        ))
                        .into());
                    }
                    let inner: usize = shape[at + 1..].iter().product();
                    for (i, v) in values.iter().enumerate() {
                        if v.is_finite() {
                            sum[(i / inner.max(1)) % t.channels] += v;
                        }
                    }
                    *count += (values.len() / t.channels) as u64;
                }
            }
        }
        done += 1;
        progress(Progress {
            done: done as usize,
            total,
            elapsed: start.elapsed(),
        });
    }
    let means = targets
        .iter()
        .zip(sums)
        .map(|(t, (sum, count))| {
            let count = count.max(1) as f64;
            (t.node.clone(), sum.into_iter().map(|s| s / count).collect())
        })
        .collect();
    Ok((means, done))
}
