//! Static QDQ quantization: QuantizeLinear/DequantizeLinear pairs on activations, weights
//! stored quantized behind a DequantizeLinear, int32 biases — the form ONNX Runtime's
//! `quantize_static` writes (QDQ format) and executes.
//!
//! Two steps, with calibration in between: [`plan`] says which tensors need a calibrated
//! range; the caller measures them (`kiln_backends` runs the model); [`insert_qdq`] rewrites
//! the model with those ranges.
//!
//! Rules (per operator, in `rules.rs`):
//! - Conv/ConvTranspose/Gemm/MatMul: constant weights per channel (Conv axis 0, ConvTranspose
//!   1, Gemm 0 if `transB` else 1, MatMul 1 for a 2-D B) or per tensor; bias int32 with scale
//!   input scale × weight scale, zero point 0, when the shapes allow.
//! - Tensors an op only moves (Reshape, Transpose, MaxPool, Split, zero Pad, Gather, …) share
//!   their input's scale and zero point; Concat's inputs and output share one (the union of
//!   the inputs' ranges) when they can; Sigmoid/Softmax outputs have the range [0, 1].
//! - A Relu/Clip(min 0) after a quantized producer is removed when the scheme is asymmetric:
//!   the producer's QuantizeLinear, with the Relu output's range, clamps at 0 itself.
//! - One Q/DQ pair per tensor, read by all its consumers; graph outputs keep their names.
//! - Subgraph bodies stay float; nodes already in QDQ form are not quantized again.

mod activation;
mod groups;
mod insert;
mod plan;
mod rules;
mod select;
mod types;

#[cfg(test)]
mod tests;

use crate::ir::Model;
use crate::pipeline::{Changes, PassError};
use crate::tensor::TensorError;

use super::config::QuantConfig;
use super::ranges::{Range, Ranges};
use super::scheme::QuantType;
use super::weights::WeightError;

use plan::{Layout, Source};
use select::node_id;

/// What calibration must measure, what will be quantized, and what is left in float.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantPlan {
    /// Main-graph float activation tensors that need a calibrated range, in graph order.
    pub tensors: Vec<String>,
    /// Tensors whose range is fixed (Sigmoid/Softmax output [0, 1], or an override's range).
    pub fixed: Vec<(String, Range)>,
    /// Nodes to quantize, in graph order.
    pub nodes: Vec<String>,
    /// Nodes of a quantizable type left in float, with the reason.
    pub skipped: Vec<Skipped>,
}

/// A node left in float.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The node's name (its first output's name when it has none).
    pub node: String,
    /// Its operator type.
    pub op_type: String,
    /// Why it is not quantized.
    pub reason: String,
}

/// What a quantized tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// A computed tensor with a QuantizeLinear/DequantizeLinear pair.
    Activation,
    /// A constant stored quantized behind a DequantizeLinear.
    Weight,
    /// An int32 bias behind a DequantizeLinear.
    Bias,
}

/// One quantized tensor and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    /// The tensor's name in the float model.
    pub name: String,
    /// Activation, weight or bias.
    pub kind: TensorKind,
    /// Integer type.
    pub dtype: QuantType,
    /// Symmetric scheme.
    pub symmetric: bool,
    /// Per-channel axis.
    pub axis: Option<usize>,
    /// Scale(s): one, or one per channel.
    pub scales: Vec<f32>,
    /// Zero point(s).
    pub zero_points: Vec<i64>,
    /// The real range the parameters cover (activations).
    pub range: Option<Range>,
    /// The tensor whose parameters it reuses.
    pub shared_with: Option<String>,
}

/// What [`insert_qdq`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct QdqSummary {
    /// Every quantized tensor: activations in graph order, then weights, then biases.
    pub tensors: Vec<QuantizedTensor>,
    /// Quantized nodes, in graph order.
    pub nodes: Vec<String>,
    /// Relu/Clip nodes removed because their producer's quantization clamps.
    pub removed_activations: Vec<String>,
    /// Nodes left in float, with the reason.
    pub skipped: Vec<Skipped>,
    /// Bias values that saturated int32 (their scale is too small for them).
    pub saturated_bias: usize,
    /// Counts for the compile report.
    pub changes: Changes,
}

/// Why QDQ insertion failed.
#[derive(Debug, thiserror::Error)]
pub enum QdqError {
    /// A tensor of the plan has no range.
    #[error(
        "no calibrated range for tensor '{0}' (plan() lists it among the tensors to calibrate)"
    )]
    MissingRange(String),
    /// The model's opset is too old for the QDQ form asked for.
    #[error("this quantization needs ai.onnx opset {need} ({why}) but the model imports {have}; upgrade the model first")]
    Opset {
        /// The model's default-domain opset (0: none imported).
        have: i64,
        /// The opset needed.
        need: i64,
        /// What needs it.
        why: &'static str,
    },
    /// A constant could not be quantized.
    #[error("cannot quantize '{name}': {source}")]
    Weight {
        /// The constant.
        name: String,
        /// Why.
        source: WeightError,
    },
    /// A malformed tensor.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A broken invariant of the planner (a bug).
    #[error("internal error in QDQ insertion: {0}")]
    Internal(String),
}

impl From<QdqError> for PassError {
    fn from(e: QdqError) -> PassError {
        PassError::Unsupported(e.to_string())
    }
}

/// Which activation tensors need a calibrated range, which nodes will be quantized, and what
/// was skipped and why.
pub fn plan(model: &Model, config: &QuantConfig) -> Result<QuantPlan, PassError> {
    Ok(public_plan(model, &Layout::build(model, config)))
}

fn public_plan(model: &Model, layout: &Layout) -> QuantPlan {
    let mut acts: Vec<&plan::Act> = layout.acts.iter().collect();
    acts.sort_by_key(|a| a.key);
    QuantPlan {
        tensors: acts
            .iter()
            .filter(|a| a.source == Source::Calibrated && a.range_of.is_none())
            .map(|a| a.name.clone())
            .collect(),
        fixed: acts
            .iter()
            .filter_map(|a| match a.source {
                Source::Fixed(r) => Some((a.name.clone(), r)),
                _ => None,
            })
            .collect(),
        nodes: layout
            .nodes
            .iter()
            .map(|&n| node_id(&model.graph, n))
            .collect(),
        skipped: layout.skipped.clone(),
    }
}

/// Rewrites the model into QDQ form with the given ranges (every tensor of
/// `plan().tensors` must have one; a missing one is an error naming it).
pub fn insert_qdq(
    model: &mut Model,
    config: &QuantConfig,
    ranges: &Ranges,
) -> Result<QdqSummary, PassError> {
    let need = required_opset(config);
    let have = model.opset("").unwrap_or(0);
    if have < need {
        return Err(QdqError::Opset {
            have,
            need,
            why: if need >= 21 {
                "16-bit QuantizeLinear/DequantizeLinear"
            } else if need >= 13 {
                "per-channel DequantizeLinear"
            } else {
                "QuantizeLinear/DequantizeLinear"
            },
        }
        .into());
    }
    let layout = Layout::build(model, config);
    let nodes = public_plan(model, &layout).nodes;
    // All or nothing: a failure half-way leaves the caller's model untouched (weights are
    // shared bytes, so the copy is cheap).
    let mut work = model.clone();
    let summary = insert::rewrite(&mut work, config, &layout, ranges, nodes)?;
    crate::quant::legalize::settle_domain(&mut work, config.qdq_domain)?;
    *model = work;
    Ok(summary)
}

/// The lowest ai.onnx opset the QDQ form needs for this config: 21 for standard 16-bit types
/// (`com.microsoft` ones take any), 13 for per-channel weights, 10 otherwise.
pub fn required_opset(config: &QuantConfig) -> i64 {
    let standard = config.qdq_domain == crate::quant::QdqDomainRule::Standard;
    let sixteen = standard
        && (config.activations.dtype.bits() == 16
            || config.weights.scheme.dtype.bits() == 16
            || config
                .overrides
                .values()
                .any(|o| o.dtype.is_some_and(|d| d.bits() == 16)));
    if sixteen {
        21
    } else if config.weights.any_per_channel() {
        13
    } else {
        10
    }
}
