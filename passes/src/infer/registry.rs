//! Which rule infers which operator: the default ONNX domain, plus ONNX Runtime's
//! `com.microsoft` QuantizeLinear/DequantizeLinear (16-bit Q/DQ below opset 21, which Kiln
//! writes itself); other domains stay unknown.

use super::ctx::Ctx;
use super::ty::Ty;
use super::{
    broadcast as bc, conv_pool as cp, elementwise as ew, gather_slice as gs, matmul as mm,
    normalization as norm, quant, reduce, sequence as seq, shape_ops as so,
};

/// A rule: the output types of one node (fewer than its outputs leaves the rest unknown),
/// or `None` when the node is malformed or beyond the rule.
pub type Rule = fn(&Ctx) -> Option<Vec<Ty>>;

/// Operators whose output has the input's type and shape.
const UNARY: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BitwiseNot",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "CumSum",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "InstanceNormalization",
    "LRN",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Mish",
    "Neg",
    "Not",
    "Reciprocal",
    "Relu",
    "ReverseSequence",
    "Round",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Trilu",
    "Swish",
    "RMSNormalization",
];

/// Broadcasting operators whose output has input 0's element type.
const ARITHMETIC: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
];

/// Broadcasting operators with a bool output.
const COMPARISON: &[&str] = &[
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
];

/// Reductions keeping the input's type.
const REDUCE: &[&str] = &[
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

/// The rule for `op_type` in `domain`, if Kiln has one.
pub fn rule(domain: &str, op_type: &str) -> Option<Rule> {
    if domain == "com.microsoft" {
        // Without these, every node after a 16-bit Q/DQ had an unknown shape, and a profile
        // that places nodes by static shape sent them all to the CPU.
        return match op_type {
            "QuantizeLinear" => Some(quant::quantize),
            "DequantizeLinear" => Some(quant::dequantize_contrib),
            _ => None,
        };
    }
    if !(domain.is_empty() || domain == "ai.onnx") {
        return None;
    }
    let op = op_type;
    if UNARY.contains(&op) {
        return Some(ew::unary);
    }
    if ARITHMETIC.contains(&op) {
        return Some(bc::arithmetic);
    }
    if COMPARISON.contains(&op) {
        return Some(bc::comparison);
    }
    if REDUCE.contains(&op) {
        return Some(reduce::reduce);
    }
    Some(match op {
        "Identity" => ew::identity,
        "IsNaN" | "IsInf" => ew::predicate,
        "Cast" => ew::cast,
        "CastLike" => ew::cast_like,
        "Dropout" => ew::dropout,
        "EyeLike" | "RandomNormalLike" | "RandomUniformLike" | "Bernoulli" => ew::like_with_dtype,
        "RandomNormal" | "RandomUniform" => ew::random,
        "Multinomial" => ew::multinomial,
        "Where" => bc::where_,
        "PRelu" => bc::prelu,
        "Reshape" => so::reshape,
        "Flatten" => so::flatten,
        "Squeeze" => so::squeeze,
        "Unsqueeze" => so::unsqueeze,
        "Transpose" => so::transpose,
        "Shape" => so::shape,
        "Size" => so::size,
        "Expand" => so::expand,
        "ConstantOfShape" => so::constant_of_shape,
        "Range" => so::range,
        "DepthToSpace" => so::depth_to_space,
        "Det" => so::det,
        "SpaceToDepth" => so::space_to_depth,
        "Gather" => gs::gather,
        "GatherElements" => gs::gather_elements,
        "GatherND" => gs::gather_nd,
        "Slice" => gs::slice,
        "Split" => gs::split,
        "Concat" => gs::concat,
        "Tile" => gs::tile,
        "Pad" => gs::pad,
        "TopK" => gs::top_k,
        "NonZero" => gs::non_zero,
        "OneHot" => gs::one_hot,
        "Compress" => gs::compress,
        "Unique" => gs::unique,
        "Conv" => cp::conv,
        "ConvInteger" => cp::conv_integer,
        "QLinearConv" => cp::qlinear_conv,
        "ConvTranspose" => cp::conv_transpose,
        "MaxPool" | "AveragePool" | "LpPool" => cp::pool,
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => cp::global_pool,
        "RoiAlign" => cp::roi_align,
        "GridSample" => cp::grid_sample,
        "MatMul" => mm::matmul,
        "MatMulInteger" => mm::matmul_integer,
        "QLinearMatMul" => mm::qlinear_matmul,
        "Gemm" => mm::gemm,
        "Einsum" => mm::einsum,
        "BatchNormalization" => norm::batch_norm,
        "LayerNormalization" => norm::layer_norm,
        "SimplifiedLayerNormalization" => norm::simplified_layer_norm,
        "ArgMax" | "ArgMin" => reduce::arg_reduce,
        "QuantizeLinear" => quant::quantize,
        "DequantizeLinear" => quant::dequantize,
        "DynamicQuantizeLinear" => quant::dynamic_quantize,
        "SequenceEmpty" => seq::empty,
        "SequenceConstruct" | "SplitToSequence" => seq::of_input,
        "SequenceInsert" | "SequenceErase" => seq::same_seq,
        "SequenceAt" | "ConcatFromSequence" => seq::element,
        "SequenceLength" => seq::length,
        "Resize" | "Upsample" => super::resize::resize,
        _ => return None,
    })
}

/// Every operator of the default domain with a rule (for reports and tests).
pub fn covered_ops() -> Vec<&'static str> {
    const OTHERS: &[&str] = &[
        "Identity",
        "IsNaN",
        "IsInf",
        "Cast",
        "CastLike",
        "Dropout",
        "EyeLike",
        "RandomNormalLike",
        "RandomUniformLike",
        "Bernoulli",
        "RandomNormal",
        "RandomUniform",
        "Multinomial",
        "Where",
        "PRelu",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Shape",
        "Size",
        "Expand",
        "ConstantOfShape",
        "Range",
        "DepthToSpace",
        "Det",
        "SpaceToDepth",
        "Gather",
        "GatherElements",
        "GatherND",
        "Slice",
        "Split",
        "Concat",
        "Tile",
        "Pad",
        "TopK",
        "NonZero",
        "OneHot",
        "Compress",
        "Unique",
        "Conv",
        "ConvInteger",
        "QLinearConv",
        "ConvTranspose",
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "GlobalLpPool",
        "RoiAlign",
        "GridSample",
        "MatMul",
        "MatMulInteger",
        "QLinearMatMul",
        "Gemm",
        "Einsum",
        "BatchNormalization",
        "LayerNormalization",
        "SimplifiedLayerNormalization",
        "ArgMax",
        "ArgMin",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "SequenceEmpty",
        "SequenceConstruct",
        "SplitToSequence",
        "SequenceInsert",
        "SequenceErase",
        "SequenceAt",
        "ConcatFromSequence",
        "SequenceLength",
        "Resize",
        "Upsample",
        "If",
        "Loop",
        "Scan",
    ];
    let mut all: Vec<&'static str> = [UNARY, ARITHMETIC, COMPARISON, REDUCE, OTHERS].concat();
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_op_has_a_rule_and_custom_domains_none() {
        for op in covered_ops() {
            if !matches!(op, "If" | "Loop" | "Scan") {
                assert!(rule("", op).is_some(), "{op}");
            }
        }
        assert!(rule("com.microsoft", "Gelu").is_none());
        assert!(rule("", "NoSuchOp").is_none());
    }
}
