//! `--sequential`: GPTQ's (or AWQ's quantizer's) statistics collected stage by stage, each
//! stage's on the model with the earlier stages already quantized (their weights replaced by
//! their dequantized values, so ONNX Runtime runs it in float), by the same collection as the
//! one-pass run ([`hessian::collect`]); only one stage's Hessians are held at a time. The
//! stages and the per-stage loop are `kiln_passes::quant::blockwise::sequential`'s.

use kiln_passes::ir::Model;
use kiln_passes::quant::blockwise::awq::{Awq, AwqWeight};
use kiln_passes::quant::blockwise::sequential::{quantize_stage, stages, Precomputed};
use kiln_passes::quant::blockwise::{BlockwiseConfig, Gptq, GptqFallback, WeightMethod};

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
/// under the Hessians measured. `model` itself is not changed: write it with
/// [`Staged::chosen`].
pub(super) fn quantize(
    model: &Model,
    config: &BlockwiseConfig,
    samples: &dyn Fn() -> Result<Samples, QuantizeError>,
    calibration: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Staged, QuantizeError> {
    let mut statistics = model.clone();
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
        let collected = hessian::collect(&proto, &stage, false, samples()?, calibration, progress)?;
        drop(proto);
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
                quantize_stage(&mut statistics, &stage, params, &awq, &mut staged.chosen);
                staged.fallbacks.extend(awq.fallbacks());
                staged.awq.extend(awq.chosen());
            }
            _ => {
                let mut gptq = Gptq::new(config.gptq);
                for (weight, h) in hessians {
                    gptq.insert(weight, h);
                }
                quantize_stage(&mut statistics, &stage, params, &gptq, &mut staged.chosen);
                staged.fallbacks.extend(gptq.fallbacks());
            }
        }
    }
    staged.awq.sort_by(|a, b| a.weight.cmp(&b.weight));
    Ok(staged)
}
