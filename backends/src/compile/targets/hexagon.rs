//! Qualcomm Hexagon HTP through ONNX Runtime's QNN execution provider: quantized everywhere
//! (the HTP runs no float ops), uint8 or uint16 activations, int8 symmetric weights per-channel
//! only where QNN takes it (the profile's `weights.per_op`: Conv, ConvTranspose), int32 bias,
//! the profile's minimum real range and fixed 16-bit Sigmoid/Tanh outputs, and Q/DQ in the
//! profile's domain (`auto`: `com.microsoft` for 16-bit types below opset 21, as ORT's
//! `get_qnn_qdq_config` writes them). Loop/If and other
//! ops outside the profile's set fall back (the partition says which and why).

use kiln_passes::ir::Model;

use super::super::error::CompileError;
use super::super::Context;
use super::{quantized, Emitted};

/// Builds the pipeline, quantizes, emits.
pub fn compile(mut model: Model, cx: &Context) -> Result<Emitted, CompileError> {
    let mut config = cx.profile.quant_config();
    config.op_types = quantized::device_ops(cx);
    // Nothing computes in float on the HTP: pinned ops would fall back.
    config.pin_ops.clear();
    let report = quantized::run(&mut model, config, cx)?;
    let legalized = vec![format!(
        "weights per-channel on {} only, per-tensor elsewhere",
        cx.profile
            .quantization
            .weights
            .per_op
            .iter()
            .filter(|(op, _)| cx.profile.weight_per_channel(op))
            .map(|(op, _)| op.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )];
    Ok(Emitted {
        model,
        sim: None,
        validate_instead: None,
        partition_view: None,
        quantize: Some(report),
        legalized,
        integer_only: true,
        quantized_io: Vec::new(),
    })
}
