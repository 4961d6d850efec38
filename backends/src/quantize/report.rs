//! What `quantize` did, as plain data for the terminal and for `--report FILE.json`.
//!
//! No wall times here: the same model, options and data give a byte-identical report.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::validate::metrics::finite_or_text;

use super::sensitivity::LayerSensitivity;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    /// `static` (calibrated QDQ) or `dynamic`.
    pub mode: &'static str,
    /// The settings used, after defaults.
    pub settings: Settings,
    /// The optimization pipeline's passes, when it ran.
    pub optimize: Option<Vec<PassSummary>>,
    /// Default-domain opset before and after.
    pub opset: Before,
    /// Operator counts of the main graph before and after.
    pub nodes: Before,
    /// Where ranges came from.
    pub calibration: Option<CalibrationSummary>,
    /// Every tensor stored or computed in integers.
    pub tensors: Vec<TensorReport>,
    /// Nodes quantized.
    pub quantized_nodes: Vec<String>,
    /// Nodes left in float, and why.
    pub skipped: Vec<SkippedNode>,
    /// Relu/Clip nodes folded into their producer's quantization.
    pub removed_activations: Vec<String>,
    /// Bias entries that saturated int32.
    pub saturated_bias: usize,
    /// What precision pinning changed.
    pub pinning: Option<PassSummary>,
    /// Output accuracy of the quantized model against the float model.
    pub accuracy: Option<Accuracy>,
    /// Per-layer sensitivity, worst first, when asked.
    pub sensitivity: Option<Vec<LayerSensitivity>>,
    /// Weight-only quantization: settings and every weight stored (weight-only mode).
    pub weight_only: Option<WeightOnlyReport>,
    /// Biases shifted by their weights' mean quantization error (`--bias-correction`).
    pub bias_correction: Option<super::BiasCorrectionReport>,
    /// The layers kept at 16-bit, the front explored and the point chosen (`--target-sqnr`,
    /// `--max-16bit-share`).
    pub mixed_precision: Option<super::MixedPrecisionReport>,
    /// Things the user should know (e.g. ranges from random data).
    pub warnings: Vec<String>,
}

/// A before/after pair.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Before {
    /// Before.
    pub before: i64,
    /// After.
    pub after: i64,
}

/// The settings, after defaults and overrides files.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Activation type.
    pub activations: String,
    /// Activations symmetric.
    pub symmetric_activations: bool,
    /// Weight type.
    pub weights: String,
    /// Weights symmetric.
    pub symmetric_weights: bool,
    /// Per-channel weights.
    pub per_channel: bool,
    /// Reduced range weights.
    pub reduce_range: bool,
    /// Calibration method (`minmax`, `percentile 99.999`, ...), static mode only.
    pub method: Option<String>,
    /// Op types pinned to a 16-bit float.
    pub pin_ops: Vec<String>,
    /// The float they compute in.
    pub pin_type: String,
    /// Tensors with an override.
    pub overrides: usize,
}

/// One pass's changes.
#[derive(Debug, Clone, Serialize)]
pub struct PassSummary {
    /// The pass.
    pub pass: String,
    /// What it changed, by kind.
    pub changes: BTreeMap<String, usize>,
}

/// Where the ranges came from.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSummary {
    /// `data`, `synthetic` or `saved`.
    pub source: String,
    /// The folder/file, or the statistics files.
    pub path: Option<String>,
    /// Samples folded into the statistics.
    pub samples: u64,
    /// Tensors calibrated.
    pub tensors: usize,
}

impl CalibrationSummary {
    /// The summary of `samples` samples read from `data` for `tensors` tensors.
    pub fn of(data: &crate::calibrate::CalibrationData, samples: u64, tensors: usize) -> Self {
        use crate::calibrate::CalibrationData;
        CalibrationSummary {
            source: match data {
                CalibrationData::Synthetic { .. } => "synthetic".to_string(),
                CalibrationData::Path(_) => "data".to_string(),
            },
            path: match data {
                CalibrationData::Path(p) => Some(p.display().to_string()),
                CalibrationData::Synthetic { .. } => None,
            },
            samples,
            tensors,
        }
    }
}

/// One quantized tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// Its name in the float model.
    pub name: String,
    /// `activation`, `weight` or `bias`.
    pub kind: String,
    /// Integer type.
    pub dtype: String,
    /// Symmetric scheme.
    pub symmetric: bool,
    /// Channel axis, when per channel.
    pub axis: Option<usize>,
    /// Scale(s).
    pub scale: Vec<f32>,
    /// Zero point(s).
    pub zero_point: Vec<i64>,
    /// The real range chosen (activations).
    pub range: Option<[f32; 2]>,
    /// The tensor whose parameters it reuses.
    pub shared_with: Option<String>,
    /// How many held-out values fell outside the representable range (`--check-inputs`).
    pub saturation: Option<SaturationReport>,
}

/// Saturation of one tensor on held-out inputs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SaturationReport {
    /// Values seen.
    pub values: u64,
    /// Below the representable minimum.
    pub below: u64,
    /// Above the representable maximum.
    pub above: u64,
    /// (below + above) / values.
    pub share: f64,
}

/// A node left in float.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedNode {
    /// The node.
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// Why.
    pub reason: String,
}

impl SkippedNode {
    /// A node left in float, and why.
    pub fn new(node: &str, op_type: &str, reason: &str) -> SkippedNode {
        SkippedNode {
            node: node.to_string(),
            op_type: op_type.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Weight-only (block-wise) quantization.
#[derive(Debug, Clone, Serialize)]
pub struct WeightOnlyReport {
    /// Bits per weight (4 or 8).
    pub bits: u32,
    /// Weights along K sharing a scale.
    pub block_size: usize,
    /// Signed with zero point 0 (else unsigned with zero points).
    pub symmetric: bool,
    /// `qdq` or `matmulnbits`.
    pub format: String,
    /// How integers were chosen (`rtn`).
    pub method: String,
    /// Whether the LM head was allowed.
    pub lm_head: bool,
    /// Whether embedding tables were allowed.
    pub embeddings: bool,
    /// Every weight stored quantized.
    pub weights: Vec<BlockWeightReport>,
    /// Bytes of those weights in float.
    pub float_bytes: u64,
    /// Bytes of the integers, scales and zero points that replaced them.
    pub quantized_bytes: u64,
    /// Bytes of every constant of the model, before and after.
    pub constant_bytes: Before,
    /// AWQ (method `awq`): what each group's scale did and how each weight's integers were
    /// chosen.
    pub awq: Option<AwqReport>,
}

/// What AWQ did.
#[derive(Debug, Clone, Serialize)]
pub struct AwqReport {
    /// Groups of weights reading one activation, in graph order.
    pub groups: Vec<AwqGroupReport>,
    /// Every weight AWQ's quantizer chose integers for, by name.
    pub weights: Vec<AwqWeightReport>,
}

/// One group of weights that read the same activation and share its scale.
#[derive(Debug, Clone, Serialize)]
pub struct AwqGroupReport {
    /// The activation.
    pub activation: String,
    /// The nodes reading it.
    pub nodes: Vec<String>,
    /// Their weights.
    pub weights: Vec<String>,
    /// The exponent of `s = mean|x|^α` chosen (0: not scaled).
    pub alpha: f64,
    /// `folded` (into a constant of the producer), `mul` (a Mul inserted) or `none`.
    pub scaled: String,
    /// What `1/s` was folded into, or the Mul node inserted.
    pub into: Option<String>,
    /// Why the group was not scaled.
    pub reason: Option<String>,
    /// The group's output error on the calibration data with the scale, over RTN's (both
    /// rounded to nearest, before any clipping); none without statistics.
    pub error_ratio: Option<f64>,
}

/// How one weight's integers were chosen.
#[derive(Debug, Clone, Serialize)]
pub struct AwqWeightReport {
    /// The weight.
    pub name: String,
    /// `clip` (the clip search), `gptq` or `rtn`.
    pub integers: String,
    /// Blocks (× columns) whose range was shrunk.
    pub clipped_blocks: Option<usize>,
    /// Blocks (× columns).
    pub blocks: usize,
    /// The mean ratio kept by the clip search.
    pub mean_clip_ratio: Option<f64>,
    /// The output error of its integers on the calibration data over RTN's on the same
    /// (scaled) weight.
    pub error_ratio: f64,
}

/// One weight stored block-wise.
#[derive(Debug, Clone, Serialize)]
pub struct BlockWeightReport {
    /// Its name in the float model.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The stored element type (`int4`, `uint4`, `int8`, `uint8`; `uint8` when packed for
    /// MatMulNBits).
    pub dtype: String,
    /// `linear`, `lm_head` or `embedding`.
    pub role: String,
    /// Scales stored.
    pub blocks: usize,
    /// Bytes in float.
    pub float_bytes: u64,
    /// Bytes quantized.
    pub quantized_bytes: u64,
}

/// Output SQNR of the quantized model.
#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    /// `check-inputs` (held out) or `calibration` (in-sample).
    pub on: String,
    /// Samples compared.
    pub samples: usize,
    /// 10·log10(Σr²/Σ(r−q)²) over every float output element.
    #[serde(serialize_with = "finite_or_text")]
    pub sqnr_db: f64,
}
