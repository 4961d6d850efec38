//! Models that arrive already quantized (QAT exports with Q/DQ pairs, ONNX Runtime's QDQ and
//! QOperator output, its dynamic integer form): compiled, not quantized twice. Their scales
//! are kept and legalized to the target by the steps of `kiln_passes::quant::legalize`:
//!
//! - every target: QOperator ops become QDQ, QAT float weights behind a `QuantizeLinear`
//!   become integers, PyTorch's QAT Conv → Div → BatchNorm becomes a Conv with a bias, a
//!   Relu its output's quantizer makes redundant goes,
//!   `com.microsoft` Q/DQ become standard (the profile's `qdq_domain` settles them at the
//!   end), and the dynamic form becomes float ops on
//!   dequantized weights ([`prepare`], after constant folding);
//! - integer targets with activation scales: activations move to the profile's signedness
//!   (int8 → uint8 for the Edge TPU), per-channel weights become per-tensor for ops the profile
//!   keeps per-tensor, and the Edge TPU's inputs/outputs become integer;
//! - integer targets without activation scales (the dynamic form, weight-only QDQ): the
//!   weights are dequantized exactly and the model is quantized with the profile's calibration,
//!   since there are no activation scales to keep;
//! - the ANE: the Q/DQ pairs stay (Core ML keeps a model's activation quantization, and the
//!   weights' integers are its int8 weight compression); float ops compute in the profile's
//!   16-bit type as for any model. Measured on bert_tiny_qdq: removing the activation pairs
//!   instead moves the result further from the model as shipped (27.7 vs 31.3 dB).

use kiln_passes::ir::Model;
use kiln_passes::quant::legalize::{
    dequantize_weights, drop_redundant_relu, expand_qoperator, fold_qat_batchnorm,
    fold_weight_quantize, integer_to_float_ops, scalar_params, settle_domain, shift_activations,
    standard_domain, weights_per_tensor, Outcome,
};

use super::super::error::CompileError;
use super::super::Context;
use super::{ane, edgetpu, neon, Emitted};
use crate::profile::Family;

/// The steps every target needs, run before the optimize pipeline.
pub fn prepare(model: &mut Model) -> Result<Outcome, CompileError> {
    let mut out = expand_qoperator(model)?;
    out.merge(fold_weight_quantize(model)?);
    out.merge(fold_qat_batchnorm(model)?);
    out.merge(drop_redundant_relu(model)?);
    out.merge(standard_domain(model)?);
    out.merge(scalar_params(model)?);
    out.merge(integer_to_float_ops(model)?);
    Ok(out)
}

/// Legalizes the prepared, optimized model for the profile's target and emits it.
pub fn compile(mut model: Model, cx: &Context, prepared: Outcome) -> Result<Emitted, CompileError> {
    let p = &cx.profile;
    let rule = p.quant_config().qdq_domain;
    let mut steps = prepared;
    let emitted = match p.family {
        Family::Cpu => return super::run(model, cx),
        Family::Ane => {
            steps.merge(settle_domain(&mut model, rule)?);
            ane::compile(model, cx)?
        }
        _ if !has_activation_scales(&model) => {
            steps.merge(dequantize_weights(&mut model)?);
            steps.merge(settle_domain(&mut model, rule)?);
            steps.notes.push(
                "no activation scales to keep (dynamic or weight-only form): quantized with the \
                 profile's calibration"
                    .into(),
            );
            super::run(model, cx)?
        }
        family => {
            let activations = match family {
                Family::Neon => neon::activation_type(cx),
                _ => p.quant_config().activations.dtype,
            };
            steps.merge(shift_activations(&mut model, activations)?);
            let scheme = p.quant_config().weights.scheme;
            steps.merge(weights_per_tensor(
                &mut model,
                &|op| !p.weight_per_channel(op),
                scheme,
            )?);
            steps.merge(settle_domain(&mut model, rule)?);
            let io = if family == Family::Edgetpu {
                Some(edgetpu::integer_io(&mut model, cx)?)
            } else {
                None
            };
            Emitted {
                model,
                sim: None,
                validate_instead: io.as_ref().and_then(|i| i.validate_instead.clone()),
                partition_view: None,
                quantize: None,
                legalized: io.as_ref().map(|i| i.legalized.clone()).unwrap_or_default(),
                integer_only: family != Family::Neon,
                quantized_io: io.map(|i| i.io).unwrap_or_default(),
            }
        }
    };
    let mut legalized = steps.notes;
    legalized.extend(steps.kept.into_iter().map(|k| format!("kept: {k}")));
    legalized.extend(emitted.legalized);
    Ok(Emitted {
        legalized,
        ..emitted
    })
}

/// Whether any activation (a non-constant tensor) is quantized by a `QuantizeLinear`.
fn has_activation_scales(model: &Model) -> bool {
    let g = &model.graph;
    g.nodes().any(|(n, node)| {
        node.is_operator()
            && node.domain().is_empty()
            && node.op_type() == "QuantizeLinear"
            && g.input(n, 0).is_some_and(|x| g.constant(x).is_none())
    })
}
