//! The per-operator rule table: which inputs of an operator are quantized, and how its outputs
//! get their parameters (their own range, a fixed range, or the input's).

use crate::ir::{AttrValue, Node};

/// How one operator type is quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Conv, ConvTranspose, Gemm: activation input 0, weight input 1 (per channel on the
    /// op's output-channel axis), int32 bias input 2; own output range.
    Weighted,
    /// MatMul: constant inputs are weights (B per channel on its last axis when 2-D).
    MatMul,
    /// Add, Mul: every input quantized (constants from their own min/max); own output range.
    Elementwise,
    /// Concat: like `Elementwise`, and inputs and output share one scale when they can.
    Concat,
    /// Sigmoid, Softmax: the output range is fixed to [0, 1].
    UnitOutput,
    /// LayerNormalization: input 0 quantized, the scale a per-tensor weight, the bias left float.
    LayerNorm,
    /// GlobalAveragePool: input quantized, own output range (averaging narrows it a lot).
    OwnOutput,
    /// Split: the input is quantized; every output shares its parameters.
    Split,
    /// Pad: the input is quantized; the output shares its parameters unless the pad value
    /// could fall outside the input's range.
    Pad,
    /// Gather: constant data is a per-tensor weight whose parameters the output shares;
    /// activation data is shared like a `PassThrough`.
    Gather,
    /// Reshape, Transpose, MaxPool, …: values are moved, not computed, so the outputs share the
    /// input's parameters; quantized only when the input already is.
    PassThrough,
    /// Relu, Clip: quantized when the input is; removed when the producer's quantization can
    /// do the clamping.
    Activation,
}

/// The rule for an operator type of the default domain, if Kiln knows how to quantize it.
pub(crate) fn rule(op_type: &str) -> Option<Rule> {
    Some(match op_type {
        "Conv" | "ConvTranspose" | "Gemm" => Rule::Weighted,
        "MatMul" => Rule::MatMul,
        "Add" | "Mul" => Rule::Elementwise,
        "Concat" => Rule::Concat,
        "Sigmoid" | "Softmax" => Rule::UnitOutput,
        "LayerNormalization" => Rule::LayerNorm,
        "GlobalAveragePool" => Rule::OwnOutput,
        "Split" => Rule::Split,
        "Pad" => Rule::Pad,
        "Gather" => Rule::Gather,
        "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Flatten" | "MaxPool"
        | "AveragePool" | "Slice" | "Resize" | "Identity" => Rule::PassThrough,
        "Relu" | "Clip" => Rule::Activation,
        _ => return None,
    })
}

/// Operator types quantized when the configuration names none (pinned ones are then left out).
pub(crate) const DEFAULT_OP_TYPES: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    "Add",
    "Mul",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Resize",
    "Sigmoid",
    "Softmax",
    "LayerNormalization",
    "Gather",
    "Split",
    "Slice",
    "Pad",
    "Transpose",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Identity",
    "Relu",
    "Clip",
];

impl Rule {
    /// The input slots that carry data (must be float32 for the node to be quantized); the
    /// others (shapes, indices, axes, pads, scales) are left alone.
    pub(crate) fn data_slots(self, arity: usize) -> Vec<usize> {
        match self {
            Rule::Weighted | Rule::MatMul => vec![0, 1],
            Rule::Elementwise | Rule::Concat => (0..arity).collect(),
            _ => vec![0],
        }
    }

    /// Whether the node is quantized only when its input already is (it adds no range of its
    /// own to calibrate).
    pub(crate) fn is_conditional(self) -> bool {
        matches!(self, Rule::PassThrough | Rule::Activation)
    }
}

/// The per-channel axis of a weight: Conv 0 (output channels lead), ConvTranspose 1,
/// Gemm 0 when B is transposed (`[N, K]`) else 1, MatMul 1 for a 2-D B (its output column);
/// `None` (per tensor) otherwise.
pub(crate) fn weight_axis(node: &Node, slot: usize, rank: usize) -> Option<usize> {
    if slot != 1 {
        return None;
    }
    let axis = match node.op_type() {
        "Conv" => 0,
        "ConvTranspose" => 1,
        "Gemm" => {
            let trans_b = node.attr("transB").and_then(AttrValue::as_int).unwrap_or(0);
            if trans_b != 0 {
                0
            } else {
                1
            }
        }
        "MatMul" if rank == 2 => 1,
        _ => return None,
    };
    (axis < rank).then_some(axis)
}

/// Whether a Resize interpolates within its input's range (nearest picks, linear takes convex
/// combinations); cubic can overshoot, so its output needs a range of its own.
pub(crate) fn resize_stays_in_range(node: &Node) -> bool {
    node.attr("mode")
        .and_then(AttrValue::as_str)
        .is_none_or(|m| m != "cubic")
}

/// The `(alpha, beta)` of a Gemm (1 when absent).
pub(crate) fn gemm_alpha_beta(node: &Node) -> (f32, f32) {
    let get = |n| node.attr(n).and_then(AttrValue::as_float).unwrap_or(1.0);
    (get("alpha"), get("beta"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_follow_the_op() {
        let conv = Node::op("Conv", "c", &["y"]);
        assert_eq!(weight_axis(&conv, 1, 4), Some(0));
        let convt = Node::op("ConvTranspose", "c", &["y"]);
        assert_eq!(weight_axis(&convt, 1, 4), Some(1));
        let gemm = Node::op("Gemm", "g", &["y"]);
        assert_eq!(weight_axis(&gemm, 1, 2), Some(1));
        let gemm_t = Node::op("Gemm", "g", &["y"]).with_attr("transB", AttrValue::Int(1));
        assert_eq!(weight_axis(&gemm_t, 1, 2), Some(0));
        let mm = Node::op("MatMul", "m", &["y"]);
        assert_eq!(weight_axis(&mm, 1, 2), Some(1));
        assert_eq!(weight_axis(&mm, 1, 3), None);
        assert_eq!(weight_axis(&mm, 0, 2), None);
        assert_eq!(weight_axis(&convt, 1, 1), None);
    }

    #[test]
    fn every_default_op_has_a_rule() {
        for op in DEFAULT_OP_TYPES {
            assert!(rule(op).is_some(), "{op}");
        }
        assert_eq!(rule("Erf"), None);
    }
}
