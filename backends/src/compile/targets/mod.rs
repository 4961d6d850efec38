//! One module per target family. Each builds its pipeline from the profile, legalizes the graph
//! to the target's rules, and emits the model (and, where ONNX Runtime's CPU provider cannot
//! run the emitted form, its simulated twin).

pub mod ane;
mod blockwise;
pub mod edgetpu;
pub mod hexagon;
pub mod neon;
mod pinning;
pub mod prequantized;
mod quantized;

use kiln_passes::ir::Model;

use super::error::CompileError;
use super::Context;
use crate::quantize::QuantizeReport;

/// What a target hands back to the driver.
pub struct Emitted {
    /// The model written as `model.onnx`.
    pub model: Model,
    /// The simulated twin (`model.sim.onnx`), when ORT's CPU provider cannot run `model`.
    pub sim: Option<Model>,
    /// A model that runs in ORT and computes what `model` does, validated when there is no
    /// twin and `model` itself cannot be fed the float inputs (quantized I/O), with why.
    pub validate_instead: Option<(Model, String)>,
    /// The model the partition is read from (before precision casts), when not `model`.
    pub partition_view: Option<Model>,
    /// The quantizer's report, when the target quantized.
    pub quantize: Option<QuantizeReport>,
    /// What legalization changed, one line each.
    pub legalized: Vec<String>,
    /// Whether every op on the device must be quantized (no float units).
    pub integer_only: bool,
    /// The graph inputs/outputs that became quantized: (name, dtype, scale, zero point).
    pub quantized_io: Vec<super::report::QuantizedIo>,
}

/// Runs the target of the profile's family on `model` (already optimized).
pub fn run(model: Model, cx: &Context) -> Result<Emitted, CompileError> {
    use crate::profile::Family;
    match cx.profile.family {
        Family::Edgetpu => edgetpu::compile(model, cx),
        Family::Hexagon => hexagon::compile(model, cx),
        Family::Ane => ane::compile(model, cx),
        Family::Neon => neon::compile(model, cx),
        Family::Cpu => Err(CompileError::Unsupported {
            profile: cx.profile.name.clone(),
            what: "family 'cpu' has no compile target yet (use neon, or kiln quantize)".into(),
        }),
    }
}
