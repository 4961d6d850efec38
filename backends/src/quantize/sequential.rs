//! `--sequential`: GPTQ's (or AWQ's quantizer's) statistics collected stage by stage, each
//! stage's on the model with the earlier stages already quantized (their weights replaced by
//! their dequantized values, so ONNX Runtime runs it in float), by the same collection as the
//! one-pass run ([`hessian::collect`]); only one stage's Hessians are held at a time. The
//! stages and the per-stage loop are `kiln_passes::quant::blockwise::sequential`'s.

use std::collections::BTreeMap;

use kiln_passes::ir::Model;
use kiln_passes::quant::blockwise::awq::{Awq, AwqWeight};
use kiln_passes::quant::blockwise::sequential::{
    corrected_weight, quantize_stage_towards, stages, CrossMoment, Precomputed,
};
use kiln_passes::quant::blockwise::{BlockwiseConfig, Gptq, GptqFallback, Hessian, WeightMethod};
use kiln_proto::onnx::ModelProto;

use super::error::QuantizeError;
use super::hessian;
use crate::calibrate::{CalibrationOptions, Progress, Samples};

/// What the stages chose, and what to report of them.
pub(super) struct Staged {
    /// Every weight's integers.
    pub chosen: Precomputed,
    /// Weights rounded to nearest by a stage's quantizer, and why.
    pub fallbacks: Vec<GptqFallback>,
    /// AWQ's choice for each weight (AWQ only), sorted by weight.
    pub awq: Vec<AwqWeight>,
    /// Samples each stage ran.
    pub samples: u64,
    /// Activations whose statistics were collected, over all stages.
    pub activations: usize,
}

/// Quantizes the selected weights of `model` (the float model, or the one AWQ scaled) stage
/// by stage: for each, runs a copy of `model` holding the earlier stages' dequantized
/// weights over `samples()`, and chooses the stage's integers with GPTQ (or AWQ's quantizer)
/// under the Hessians measured. With `config.float_target`, each weight's integers aim at
/// the output of `model` itself (float) instead: the cross moments of each stage's
/// inputs against the float model's come from a run of it on the same samples. `model` itself is not changed: write it with
/// [`Staged::chosen`].
pub(super) fn quantize(
    model: &Model,
    config: &BlockwiseConfig,
    samples: &dyn Fn() -> Result<Samples, QuantizeError>,
    calibration: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Staged, QuantizeError> {
    let mut statistics = model.clone();
    // The target of `float_target`: `model` before any stage (AWQ's scales in).
    let float: Option<ModelProto> = config.float_target.then(|| model.to_proto());
    let mut staged = Staged {
        chosen: Precomputed::new(),
        fallbacks: Vec::new(),
        awq: Vec::new(),
        samples: 0,
        activations: 0,
    };
    let params = config.params();
    for stage in stages(model, config) {
        let proto = statistics.to_proto();
        let (collected, cross) = if let Some(float) = &float {
            let (c, cross) =
                hessian::collect_paired(float, &proto, &stage, samples, calibration, progress)?;
            (c, Some(cross))
        } else {
            let c = hessian::collect(&proto, &stage, false, samples()?, calibration, progress)?;
            (c, None)
        };
        drop(proto);
        // Each weight's target: W' from its (first) activation's statistics.
        let targets: BTreeMap<String, (Hessian, CrossMoment)> = match &cross {
            None => BTreeMap::new(),
            Some(cross) => stage
                .iter()
                .filter_map(|li| {
                    let h = collected.hessians.get(&li.activation)?.clone();
                    let c = cross.get(&li.activation)?.clone();
                    Some((li.weight.clone(), (h, c)))
                })
                .collect(),
        };
        let damp = match config.method {
            WeightMethod::Awq => config.awq.gptq.unwrap_or_default().damp,
            _ => config.gptq.damp,
        };
        let target = |name: &str, w: &[f32], k: usize, n: usize| -> Option<Vec<f32>> {
            let (h, c) = targets.get(name)?;
            corrected_weight(w, k, n, h, c, damp).ok()
        };
        staged.samples = collected.samples;
        staged.activations += collected.hessians.len();
        let hessians = hessian::by_weight(&stage, collected.hessians);
        // Weights a stage cannot read are met again, and reported, by the block-wise pass.
        match config.method {
            WeightMethod::Awq => {
                let mut awq = Awq::new(config.awq);
                for (weight, h) in hessians {
                    awq.insert(weight, h);
                }
                quantize_stage_towards(
                    &mut statistics,
                    &stage,
                    params,
                    &awq,
                    &target,
                    &mut staged.chosen,
                );
                staged.fallbacks.extend(awq.fallbacks());
                staged.awq.extend(awq.chosen());
            }
            _ => {
                let mut gptq = Gptq::new(config.gptq);
                for (weight, h) in hessians {
                    gptq.insert(weight, h);
                }
                quantize_stage_towards(
                    &mut statistics,
                    &stage,
                    params,
                    &gptq,
                    &target,
                    &mut staged.chosen,
                );
                staged.fallbacks.extend(gptq.fallbacks());
            }
        }
    }
    staged.awq.sort_by(|a, b| a.weight.cmp(&b.weight));
    Ok(staged)
}
