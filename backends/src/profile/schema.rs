//! The profile file's schema: serde structs, every key optional (a missing key takes the
//! default written next to it, or the value of the profile it `extends`), unknown keys refused.
//!
//! ```yaml
//! name: my-board
//! family: hexagon            # edgetpu | hexagon | ane | neon | cpu
//! extends: hexagon           # a built-in name, or a file relative to this one
//! quantization:
//!   activations: { dtype: uint16 }
//! validation: { min_sqnr: 25 }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The hardware family a profile targets; each has one target module in the compiler.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Google Coral Edge TPU (through a TFLite full-integer model).
    Edgetpu,
    /// Qualcomm Hexagon HTP through ONNX Runtime's QNN execution provider.
    Hexagon,
    /// Apple Neural Engine (through Core ML).
    Ane,
    /// ARM CPUs with NEON, through ONNX Runtime's CPU kernels (MLAS).
    Neon,
    /// Any CPU ONNX Runtime runs on; no device restrictions.
    #[default]
    Cpu,
}

impl Family {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Family::Edgetpu => "edgetpu",
            Family::Hexagon => "hexagon",
            Family::Ane => "ane",
            Family::Neon => "neon",
            Family::Cpu => "cpu",
        }
    }
}

/// An element type a profile may name for activations, weights or bias. Not every type is
/// valid in every place or on every family: `check` says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 4-bit unsigned (weights, per-block only, with a zero point per block).
    Uint4,
    /// 4-bit signed (weights, per-block only, symmetric).
    Int4,
    /// 8-bit unsigned.
    Uint8,
    /// 8-bit signed.
    Int8,
    /// 16-bit unsigned.
    Uint16,
    /// 16-bit signed.
    Int16,
    /// 32-bit signed (biases).
    Int32,
    /// IEEE half: not quantized, kept in half precision.
    Float16,
    /// bfloat16: not quantized, kept in bfloat16.
    Bfloat16,
    /// float32: not quantized.
    Float32,
}

impl Dtype {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Uint4 => "uint4",
            Dtype::Int4 => "int4",
            Dtype::Uint8 => "uint8",
            Dtype::Int8 => "int8",
            Dtype::Uint16 => "uint16",
            Dtype::Int16 => "int16",
            Dtype::Int32 => "int32",
            Dtype::Float16 => "float16",
            Dtype::Bfloat16 => "bfloat16",
            Dtype::Float32 => "float32",
        }
    }

    /// Whether this is a float type (the tensor is not quantized).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32)
    }

    /// Bits per element.
    pub fn bits(self) -> u32 {
        match self {
            Dtype::Uint4 | Dtype::Int4 => 4,
            Dtype::Uint8 | Dtype::Int8 => 8,
            Dtype::Uint16 | Dtype::Int16 | Dtype::Float16 | Dtype::Bfloat16 => 16,
            Dtype::Int32 | Dtype::Float32 => 32,
        }
    }

    /// The integer range of an integer type (`None` for floats).
    pub fn int_range(self) -> Option<(i64, i64)> {
        Some(match self {
            Dtype::Uint4 => (0, 15),
            Dtype::Int4 => (-8, 7),
            Dtype::Uint8 => (0, 255),
            Dtype::Int8 => (-128, 127),
            Dtype::Uint16 => (0, 65_535),
            Dtype::Int16 => (-32_768, 32_767),
            Dtype::Int32 => (i32::MIN as i64, i32::MAX as i64),
            Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32 => return None,
        })
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A float type for compute and for pinned ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    /// IEEE half.
    Float16,
    /// bfloat16.
    Bfloat16,
    /// float32.
    #[default]
    Float32,
}

impl FloatType {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            FloatType::Float16 => "float16",
            FloatType::Bfloat16 => "bfloat16",
            FloatType::Float32 => "float32",
        }
    }
}

/// One scale for the whole weight tensor, one per output channel, or one per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// One scale and zero point per tensor.
    PerTensor,
    /// One scale (and zero point) per output channel, on the axis the op implies.
    #[default]
    PerChannel,
    /// One scale (and zero point) per `block_size` weights along K of each output column:
    /// weight-only (activations stay float), MatMul/Gemm weights and optionally embeddings.
    PerBlock,
}

impl Granularity {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::PerTensor => "per-tensor",
            Granularity::PerChannel => "per-channel",
            Granularity::PerBlock => "per-block",
        }
    }
}

/// How block-wise weights are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// Standard ONNX: an opset-21 `DequantizeLinear` with `block_size` in front of the float
    /// MatMul/Gemm.
    #[default]
    Qdq,
    /// ONNX Runtime's `com.microsoft.MatMulNBits` (runs only in ONNX Runtime).
    Matmulnbits,
}

impl WeightFormat {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Qdq => "qdq",
            WeightFormat::Matmulnbits => "matmulnbits",
        }
    }
}

/// How block-wise integers are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightMethod {
    /// Round to nearest, block by block (no data needed).
    #[default]
    Rtn,
    /// AWQ: activation-aware per-channel scales folded into the model, then a clip search of
    /// each block's range, from the compile's calibration data.
    Awq,
    /// GPTQ with its per-block clip search (`--weight-method gptq --gptq-clip`, the measured
    /// best), from the compile's calibration data.
    Gptq,
}

/// How calibration turns observed values into a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationMethod {
    /// The observed minimum and maximum.
    #[default]
    Minmax,
    /// Keep `percentile` percent of the values.
    Percentile,
    /// Least KL divergence between the histogram and its quantized form.
    Entropy,
    /// Least expected squared quantization error.
    Mse,
}

/// What happens to an op the device cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnsupportedPolicy {
    /// It runs on the CPU; the report lists it and counts the device segments.
    #[default]
    Fallback,
    /// The compile fails, naming it.
    Error,
}

/// What the model's own inputs or outputs look like after compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoHandling {
    /// They stay float; the quantize/dequantize at the edge is inside the model.
    #[default]
    Float,
    /// They become the quantized type: the caller quantizes inputs and dequantizes outputs.
    Quantize,
}

/// Which domain 16-bit QuantizeLinear/DequantizeLinear use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QdqDomain {
    /// The standard ops; 16-bit types need opset 21, so the model is upgraded to it.
    #[default]
    #[serde(rename = "onnx")]
    Onnx,
    /// `com.microsoft` Q/DQ whenever a 16-bit type is used below opset 21 (ONNX Runtime's
    /// `UseQDQContribOps`), the standard ones otherwise.
    #[serde(rename = "auto")]
    Auto,
    /// Always `com.microsoft` Q/DQ.
    #[serde(rename = "com.microsoft")]
    Microsoft,
}

/// A CPU feature a `neon` profile assumes the device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuFeature {
    /// SDOT/UDOT (FEAT_DotProd): 4-way int8 dot products.
    Dotprod,
    /// SMMLA/UMMLA/USMMLA (FEAT_I8MM): int8 matrix multiply-accumulate.
    I8mm,
    /// Half-precision arithmetic (FEAT_FP16).
    Fp16,
    /// bfloat16 dot products and matrix multiply (FEAT_BF16).
    Bf16,
}

impl CpuFeature {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            CpuFeature::Dotprod => "dotprod",
            CpuFeature::I8mm => "i8mm",
            CpuFeature::Fp16 => "fp16",
            CpuFeature::Bf16 => "bf16",
        }
    }
}

/// A whole profile: after `extends` is resolved, every key has a value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Short name (`hexagon`, `my-board`); defaults to the file's stem.
    pub name: String,
    /// One line for `kiln profile list`.
    pub description: String,
    /// The target family; required unless inherited.
    pub family: Family,
    /// The profile this one changes: a built-in name, or a file relative to this one.
    /// Resolved profiles have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// CPU features assumed (neon and cpu families only).
    pub cpu_features: Vec<CpuFeature>,
    /// Quantization of activations, weights and bias.
    pub quantization: Quantization,
    /// How ranges are calibrated.
    pub calibration: Calibration,
    /// Float types: compute, and ops pinned to a 16-bit float.
    pub precision: Precision,
    /// Which graph rewrites run.
    pub optimize: Optimize,
    /// What the device runs.
    pub ops: Ops,
    /// The model's inputs and outputs.
    pub io: Io,
    /// Shape requirements.
    pub shapes: Shapes,
    /// On-chip memory.
    pub memory: Memory,
    /// Pass/fail limits of the validation against the float model.
    pub validation: Validation,
}

/// Quantization of activations, weights and bias.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quantization {
    /// Activation tensors.
    pub activations: ActivationQuant,
    /// Weights (constant inputs of Conv, ConvTranspose, Gemm, MatMul, Gather).
    pub weights: WeightQuant,
    /// Biases of Conv/Gemm.
    pub bias: BiasQuant,
    /// Smallest real range a scale may cover (QNN needs 1e-4); none: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_real_range: Option<f64>,
    /// Op types to quantize; none: the quantizer's default set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_types: Option<Vec<String>>,
    /// Op types left in float.
    pub exclude_op_types: Vec<String>,
    /// Fixed output scale and zero point of an op, per output type (QNN's 16-bit Sigmoid/Tanh).
    pub fixed_outputs: BTreeMap<String, BTreeMap<Dtype, FixedParams>>,
    /// Domain of 16-bit Q/DQ ops.
    pub qdq_domain: QdqDomain,
    /// Quantize weights only, whatever `activations.dtype` says: activations stay in
    /// `precision.compute` (as a float activation dtype also says).
    pub weight_only: bool,
    /// Keep the most sensitive layers at 16-bit until the output SQNR reaches a target
    /// (`kiln quantize --target-sqnr`); none: every layer at the profile's types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed_precision: Option<MixedPrecision>,
}

/// Automatic mixed precision: which layers to keep at 16-bit (static: 16-bit activations and
/// int16 weights; per-block weights: float16 weights), chosen by per-layer sensitivity.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixedPrecision {
    /// The output SQNR (dB) against the float model to reach, on the calibration samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_sqnr: Option<f64>,
    /// The largest share (0..1) of the candidate layers' weight elements kept at 16-bit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_16bit_share: Option<f64>,
}

/// Activation quantization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivationQuant {
    /// Element type; a float type means activations are not quantized.
    pub dtype: Dtype,
    /// Zero point in the middle of the range.
    pub symmetric: bool,
    /// Use one bit less of range.
    pub reduce_range: bool,
}

impl Default for ActivationQuant {
    fn default() -> ActivationQuant {
        ActivationQuant {
            dtype: Dtype::Uint8,
            symmetric: false,
            reduce_range: false,
        }
    }
}

/// Weight quantization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeightQuant {
    /// Element type; a float type means weights are not quantized.
    pub dtype: Dtype,
    /// Zero point 0 (signed types) or mid-range.
    pub symmetric: bool,
    /// Use one bit less of range.
    pub reduce_range: bool,
    /// Per-tensor, per-channel (unless `per_op` says otherwise for an op) or per-block.
    pub granularity: Granularity,
    /// Weights along K that share a scale, for per-block weights: 32, 64 or 128 (none: 32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// Weights with fewer elements stay float (Core ML's `weight_threshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_elements: Option<u64>,
    /// How per-block weights are written.
    pub format: WeightFormat,
    /// How per-block integers are chosen.
    pub method: WeightMethod,
    /// Per-block: quantize the LM head (the MatMul/Gemm feeding a graph output) too.
    pub lm_head: bool,
    /// Per-block: quantize Gather embedding tables too (always in the QDQ form).
    pub embeddings: bool,
    /// Per-block, calibrated methods: collect each stage's statistics with the earlier
    /// stages already quantized (`kiln quantize --sequential`).
    pub sequential: bool,
    /// With `sequential`: each weight's integers aim at the float model's output
    /// (`kiln quantize --float-target`).
    pub float_target: bool,
    /// Per-op exceptions, by op type.
    pub per_op: BTreeMap<String, WeightOverride>,
}

impl Default for WeightQuant {
    fn default() -> WeightQuant {
        WeightQuant {
            dtype: Dtype::Int8,
            symmetric: true,
            reduce_range: false,
            granularity: Granularity::PerChannel,
            block_size: None,
            min_elements: None,
            format: WeightFormat::Qdq,
            method: WeightMethod::Rtn,
            lm_head: true,
            embeddings: false,
            sequential: false,
            float_target: false,
            per_op: BTreeMap::new(),
        }
    }
}

/// A per-op exception to the weight settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeightOverride {
    /// Granularity for this op's weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granularity: Option<Granularity>,
}

/// Bias quantization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BiasQuant {
    /// int32 (scale = input scale × weight scale), or a float type (left float).
    pub dtype: Dtype,
}

impl Default for BiasQuant {
    fn default() -> BiasQuant {
        BiasQuant {
            dtype: Dtype::Int32,
        }
    }
}

/// A fixed scale and zero point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedParams {
    /// Scale (> 0).
    pub scale: f64,
    /// Zero point (within the type's range).
    pub zero_point: i64,
}

/// How ranges are calibrated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Calibration {
    /// The range rule.
    pub method: CalibrationMethod,
    /// The percentile kept by `percentile` (default 99.999).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Calibration samples to use (0: the profile quantizes no activations).
    pub samples: u32,
}

impl Default for Calibration {
    fn default() -> Calibration {
        Calibration {
            method: CalibrationMethod::Minmax,
            percentile: None,
            samples: 128,
        }
    }
}

/// Float types: compute, and ops pinned to a 16-bit float.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Precision {
    /// The float type everything not quantized computes in.
    pub compute: FloatType,
    /// Op types kept out of integer quantization and computed in `pin_float`.
    pub pin_ops: Vec<String>,
    /// The 16-bit float pinned ops compute in.
    pub pin_float: FloatType,
}

impl Default for Precision {
    fn default() -> Precision {
        Precision {
            compute: FloatType::Float32,
            pin_ops: vec!["LayerNormalization".into(), "Softmax".into()],
            pin_float: FloatType::Float16,
        }
    }
}

/// Which graph rewrites run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Optimize {
    /// Fusion passes to run (names of `kiln_passes::fuse` passes), in pipeline order.
    pub fusions: Vec<String>,
    /// Allow ONNX Runtime's `com.microsoft` ops where the opset lacks the standard one.
    pub allow_contrib: bool,
}

impl Default for Optimize {
    fn default() -> Optimize {
        Optimize {
            fusions: super::names::fusion_names(),
            allow_contrib: false,
        }
    }
}

/// What the device runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ops {
    /// Every op runs on the device (CPU families); `supported` then only adds constraints.
    pub all: bool,
    /// The ops the device runs, each with its constraints.
    pub supported: BTreeMap<String, OpConstraints>,
    /// Ops to remove from the inherited `supported` set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
    /// What happens to the others.
    pub unsupported: UnsupportedPolicy,
}

/// Limits of one op on the device; a node outside them falls back like an unsupported op.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpConstraints {
    /// Element types its data inputs may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtypes: Option<Vec<Dtype>>,
    /// Smallest input rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_rank: Option<u32>,
    /// Largest input rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rank: Option<u32>,
    /// Its shapes must be static (over `shapes.static`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_shapes: Option<bool>,
    /// Largest kernel extent on any axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_kernel: Option<u32>,
    /// Allowed values of its strides (Conv/pool `strides`, Slice `steps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strides: Option<Vec<u32>>,
    /// Whether a following activation may be fused into it (false: it stays its own op).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fused_activation: Option<bool>,
    /// Largest number of elements of its input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_elements: Option<u64>,
    /// Reduces or pads only along the spatial (height/width) axes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spatial_only: Option<bool>,
    /// The vendor's wording for a limit not checked mechanically.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The model's inputs and outputs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Io {
    /// Graph inputs.
    pub inputs: IoHandling,
    /// Graph outputs.
    pub outputs: IoHandling,
}

/// Shape requirements.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shapes {
    /// Every shape must be static (dynamic dims are fixed at compile time, or the op falls back).
    #[serde(rename = "static")]
    pub static_shapes: bool,
    /// The batch size the device runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// Largest tensor rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rank: Option<u32>,
    /// Only this many innermost dims may be larger than 1 (the Edge TPU's 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_nontrivial_dims: Option<u32>,
}

/// On-chip memory.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Memory {
    /// Bytes of on-chip memory that cache parameters (the Edge TPU's ~8 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter_cache_bytes: Option<u64>,
}

/// Pass/fail limits of the validation against the float model, on every output.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Validation {
    /// Smallest SQNR in dB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_sqnr: Option<f64>,
    /// Smallest cosine similarity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_cosine: Option<f64>,
    /// Largest max abs error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs: Option<f64>,
    /// Smallest top-1 agreement (where an output is a score vector).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_top1: Option<f64>,
}
