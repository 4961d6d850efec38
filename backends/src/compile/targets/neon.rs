//! ARM CPUs with NEON through ONNX Runtime's CPU kernels (MLAS): int8 QDQ with int8 symmetric
//! weights, uint8 activations unless the profile declares i8mm (MLAS's signed kernels need it
//! to be fast), pinned ops in the profile's 16-bit float (simulated where ORT's CPU provider has
//! no kernel, which the quantizer does; decomposed RMSNorms, when an RMSNorm op is pinned, as
//! units left unquantized).
//!
//! A profile with per-block weights (`neon-int4`) is weight-only instead: MatMul/Gemm weights
//! become int4/int8 blocks and activations stay float. The natural ARM form is ONNX Runtime's
//! `com.microsoft.MatMulNBits` (`format: matmulnbits`): MLAS's SQNBitGemm has NEON kernels that
//! read the packed blocks directly (`sqnbitgemm_kernel_neon*.cpp`), so the weights stay 4-bit
//! in memory. The QDQ form (DequantizeLinear with block_size) runs too: ONNX Runtime's graph
//! optimizer turns DequantizeLinear + MatMul into MatMulNBits. Pinning is as for int8.

use kiln_passes::ir::Model;
use kiln_passes::precision::unit_nodes;
use kiln_passes::quant::QuantType;

use super::super::error::CompileError;
use super::super::Context;
use super::pinning::{describe, pin_both, Pin};
use super::{blockwise, quantized, Emitted};
use crate::profile::CpuFeature;

/// The 8-bit activation type MLAS runs fast on the profile's CPU: int8 with i8mm, else uint8.
pub(super) fn activation_type(cx: &Context) -> QuantType {
    if cx.profile.cpu_features.contains(&CpuFeature::I8mm) {
        QuantType::Int8
    } else {
        QuantType::Uint8
    }
}

/// Builds the pipeline, quantizes, emits.
pub fn compile(mut model: Model, cx: &Context) -> Result<Emitted, CompileError> {
    let mut config = cx.profile.quant_config();
    if let Some(block) = cx.profile.blockwise_config() {
        return weight_only(model, cx, block, config);
    }
    let mut legalized = Vec::new();
    let i8mm = cx.profile.cpu_features.contains(&CpuFeature::I8mm);
    let wanted = activation_type(cx);
    let a = config.activations.dtype;
    if matches!(a, QuantType::Int8 | QuantType::Uint8) && a != wanted {
        legalized.push(format!(
            "activations {} -> {} ({})",
            a.name(),
            wanted.name(),
            if i8mm {
                "i8mm declared: MLAS's signed kernels"
            } else {
                "no i8mm: MLAS's fast kernels take unsigned activations"
            }
        ));
        config.activations.dtype = wanted;
    }
    // Pinning runs here, not in the quantizer, so the emitted model has real float16 ops and
    // the simulated twin is a separate file.
    let pins = [Pin {
        ops: std::mem::take(&mut config.pin_ops),
        float: config.pin_float,
    }];
    // A decomposed RMSNorm pinned as a unit reaches pinning whole: none of its nodes is
    // quantized (the quantizer would skip them itself if it were given the pinned ops).
    let g = &model.graph;
    for idx in unit_nodes(g, &pins[0].ops) {
        let n = &g[idx];
        let id = match n.outputs.first() {
            _ if !n.name.is_empty() => n.name.clone(),
            Some(o) => o.name.clone(),
            None => continue,
        };
        config.exclude_nodes.insert(id);
    }
    let report = quantized::run(&mut model, config, cx)?;
    pin_and_emit(model, &pins, report, legalized)
}

/// Block-wise weights, float activations, then the profile's pinning.
fn weight_only(
    mut model: Model,
    cx: &Context,
    block: kiln_passes::quant::blockwise::BlockwiseConfig,
    mut config: kiln_passes::quant::QuantConfig,
) -> Result<Emitted, CompileError> {
    let (report, line) = blockwise::run(&mut model, block, cx)?;
    let legalized = vec![line];
    let pins = [Pin {
        ops: std::mem::take(&mut config.pin_ops),
        float: config.pin_float,
    }];
    pin_and_emit(model, &pins, report, legalized)
}

/// Pins the model as `pins` say (writing the simulated twin where ORT needs one) and emits it.
fn pin_and_emit(
    mut model: Model,
    pins: &[Pin],
    report: crate::quantize::QuantizeReport,
    mut legalized: Vec<String>,
) -> Result<Emitted, CompileError> {
    let (sim, changes) = pin_both(&mut model, pins)?;
    if !changes.is_empty() {
        legalized.push(format!("pinned: {}", describe(&changes)));
    }
    Ok(Emitted {
        model,
        sim,
        validate_instead: None,
        partition_view: None,
        quantize: Some(report),
        legalized,
        integer_only: false,
        quantized_io: Vec::new(),
    })
}
