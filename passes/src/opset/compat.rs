//! Every default-domain operator step from opset 8 to 21 that needs no rewrite, and why.
//!
//! Generated from `onnx.defs.get_all_schemas_with_history()` (onnx 1.20.1): each
//! (operator, since_version) in 8..=21 whose operator existed before, minus the steps in
//! [`super::adapters::ADAPTERS`]. Notes: `types` = the step only adds element types or
//! accepted values (negative axes, broadcasting, wider index types), so every old use keeps
//! its meaning; `+attr` = a new attribute whose default is the old behaviour; the others are
//! new optional inputs/outputs. Steps of opset 7 and earlier are not listed: the pass refuses
//! models below opset 7.

/// (operator, steps at which it changed compatibly); comments say how.
pub(crate) const COMPATIBLE: &[(&str, &[i64])] = &[
    ("Abs", &[13]),                         // types
    ("Add", &[13, 14]),                     // types
    ("ArgMax", &[11, 12, 13]),              // +select_last_index; types
    ("ArgMin", &[11, 12, 13]),              // +select_last_index; types
    ("AveragePool", &[10, 11, 19]),         // +ceil_mode; +dilations; types
    ("BatchNormalization", &[15]),          // types
    ("Cast", &[9, 13, 19, 21]),             // +saturate; types
    ("CastLike", &[19, 21]),                // +saturate; types
    ("Ceil", &[13]),                        // types
    ("Clip", &[12, 13]),                    // types
    ("Compress", &[11]),                    // types
    ("Concat", &[11, 13]),                  // types
    ("Constant", &[9, 11, 12, 13, 19, 21]), // +sparse_value; +value_float; +value_floats; +value_int; +value_ints; +value_string; +value_strings; types
    ("ConstantOfShape", &[20, 21]),         // types
    ("Conv", &[11]),                        // types
    ("ConvTranspose", &[11]),               // types
    ("CumSum", &[14]),                      // types
    ("DepthToSpace", &[11, 13]),            // +mode; types
    ("DequantizeLinear", &[13, 19, 21]),    // +axis; +block_size; types
    ("Div", &[13, 14]),                     // types
    ("Dropout", &[13]),                     // types
    ("Equal", &[11, 13, 19]),               // types
    ("Erf", &[13]),                         // types
    ("Exp", &[13]),                         // types
    ("Expand", &[13]),                      // types
    ("Flatten", &[9, 11, 13, 21]),          // types
    ("Floor", &[13]),                       // types
    ("GRU", &[14]),                         // +layout
    ("Gather", &[11, 13]),                  // types
    ("GatherElements", &[13]),              // types
    ("GatherND", &[12, 13]),                // +batch_dims; types
    ("Gemm", &[9, 11, 13]),                 // new optional input; types
    ("Greater", &[9, 13]),                  // types
    ("GreaterOrEqual", &[16]),              // types
    ("Hardmax", &[11]),                     // types
    ("Identity", &[13, 14, 16, 19, 21]),    // types
    ("If", &[11, 13, 16, 19, 21]),          // types
    ("IsInf", &[20]),                       // types
    ("IsNaN", &[13, 20]),                   // types
    ("LRN", &[13]),                         // types
    ("LSTM", &[14]),                        // +layout
    ("LeakyRelu", &[16]),                   // types
    ("Less", &[9, 13]),                     // types
    ("LessOrEqual", &[16]),                 // types
    ("Log", &[13]),                         // types
    ("LogSoftmax", &[11]),                  // types
    ("Loop", &[11, 13, 16, 19, 21]),        // types
    ("LpPool", &[11, 18]),                  // +ceil_mode; +dilations; types
    ("MatMul", &[9, 13]),                   // types
    ("Max", &[8, 12, 13]),                  // types
    ("MaxPool", &[8, 10, 11, 12]), // +ceil_mode; +dilations; +storage_order; new optional output; types
    ("MaxUnpool", &[11]),          // types
    ("Mean", &[8, 13]),            // types
    ("MeanVarianceNormalization", &[13]), // types
    ("Min", &[8, 12, 13]),         // types
    ("Mod", &[13]),                // types
    ("Mul", &[13, 14]),            // types
    ("Neg", &[13]),                // types
    ("NegativeLogLikelihoodLoss", &[13]), // types
    ("NonMaxSuppression", &[11]),  // types
    ("NonZero", &[13]),            // types
    ("OneHot", &[11]),             // types
    ("OptionalGetElement", &[18]), // types
    ("OptionalHasElement", &[18]), // new optional input
    ("PRelu", &[9, 16]),           // types
    ("Pad", &[13, 18, 19, 21]),    // new optional input; types
    ("Pow", &[12, 13, 15]),        // types
    ("QLinearMatMul", &[21]),      // types
    ("QuantizeLinear", &[13, 19, 21]), // +axis; +block_size; +output_dtype; +saturate
    ("RNN", &[14]),                // +layout
    ("Reciprocal", &[13]),         // types
    ("ReduceL1", &[11, 13]),       // types
    ("ReduceL2", &[11, 13]),       // types
    ("ReduceLogSum", &[11, 13]),   // types
    ("ReduceLogSumExp", &[11, 13]), // types
    ("ReduceMax", &[11, 12, 13, 20]), // types
    ("ReduceMean", &[11, 13]),     // types
    ("ReduceMin", &[11, 12, 13, 20]), // types
    ("ReduceProd", &[11, 13]),     // types
    ("ReduceSum", &[11]),          // types
    ("ReduceSumSquare", &[11, 13]), // types
    ("Relu", &[13, 14]),           // types
    ("Reshape", &[13, 14, 19, 21]), // +allowzero; types
    ("Resize", &[18, 19]),         // +antialias; +axes; +keep_aspect_ratio_policy; types
    ("Scan", &[11, 16, 19, 21]),   // types
    ("ScatterElements", &[13, 16, 18]), // +reduction; types
    ("ScatterND", &[13, 16, 18]),  // +reduction; types
    ("Shape", &[13, 15, 19, 21]),  // +end; +start; types
    ("Sigmoid", &[13]),            // types
    ("Sign", &[13]),               // types
    ("Size", &[13, 19, 21]),       // types
    ("Slice", &[11, 13]),          // types
    ("Softmax", &[11]),            // types
    ("SoftmaxCrossEntropyLoss", &[13]), // types
    ("SpaceToDepth", &[13]),       // types
    ("Split", &[11]),              // types
    ("Sqrt", &[13]),               // types
    ("Squeeze", &[11, 21]),        // types
    ("Sub", &[13, 14]),            // types
    ("Sum", &[8, 13]),             // types
    ("Tanh", &[13]),               // types
    ("Tile", &[13]),               // types
    ("TopK", &[11]),               // +largest; +sorted
    ("Transpose", &[13, 21]),      // types
    ("Unsqueeze", &[11, 21]),      // types
    ("Where", &[16]),              // types
];

/// True when `op`'s change at `step` needs no rewrite.
pub(crate) fn is_compatible(op: &str, step: i64) -> bool {
    COMPATIBLE
        .iter()
        .any(|(o, steps)| *o == op && steps.contains(&step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opset::adapters::{find, ADAPTERS};

    /// Every (operator, since_version) in 8..=21 with an earlier version, from onnx 1.20.1.
    const ALL_STEPS: &[(&str, &[i64])] = &[
        ("Abs", &[13]),
        ("Add", &[13, 14]),
        ("ArgMax", &[11, 12, 13]),
        ("ArgMin", &[11, 12, 13]),
        ("AveragePool", &[10, 11, 19]),
        ("BatchNormalization", &[9, 14, 15]),
        ("Cast", &[9, 13, 19, 21]),
        ("CastLike", &[19, 21]),
        ("Ceil", &[13]),
        ("Clip", &[11, 12, 13]),
        ("Compress", &[11]),
        ("Concat", &[11, 13]),
        ("Constant", &[9, 11, 12, 13, 19, 21]),
        ("ConstantOfShape", &[20, 21]),
        ("Conv", &[11]),
        ("ConvTranspose", &[11]),
        ("CumSum", &[14]),
        ("DFT", &[20]),
        ("DepthToSpace", &[11, 13]),
        ("DequantizeLinear", &[13, 19, 21]),
        ("Div", &[13, 14]),
        ("Dropout", &[10, 12, 13]),
        ("Equal", &[11, 13, 19]),
        ("Erf", &[13]),
        ("Exp", &[13]),
        ("Expand", &[13]),
        ("Flatten", &[9, 11, 13, 21]),
        ("Floor", &[13]),
        ("GRU", &[14]),
        ("Gather", &[11, 13]),
        ("GatherElements", &[13]),
        ("GatherND", &[12, 13]),
        ("Gemm", &[9, 11, 13]),
        ("Greater", &[9, 13]),
        ("GreaterOrEqual", &[16]),
        ("GridSample", &[20]),
        ("GroupNormalization", &[21]),
        ("Hardmax", &[11, 13]),
        ("Identity", &[13, 14, 16, 19, 21]),
        ("If", &[11, 13, 16, 19, 21]),
        ("IsInf", &[20]),
        ("IsNaN", &[13, 20]),
        ("LRN", &[13]),
        ("LSTM", &[14]),
        ("LeakyRelu", &[16]),
        ("Less", &[9, 13]),
        ("LessOrEqual", &[16]),
        ("Log", &[13]),
        ("LogSoftmax", &[11, 13]),
        ("Loop", &[11, 13, 16, 19, 21]),
        ("LpPool", &[11, 18]),
        ("MatMul", &[9, 13]),
        ("Max", &[8, 12, 13]),
        ("MaxPool", &[8, 10, 11, 12]),
        ("MaxUnpool", &[11]),
        ("Mean", &[8, 13]),
        ("MeanVarianceNormalization", &[13]),
        ("Min", &[8, 12, 13]),
        ("Mod", &[13]),
        ("Mul", &[13, 14]),
        ("Neg", &[13]),
        ("NegativeLogLikelihoodLoss", &[13]),
        ("NonMaxSuppression", &[11]),
        ("NonZero", &[13]),
        ("OneHot", &[11]),
        ("OptionalGetElement", &[18]),
        ("OptionalHasElement", &[18]),
        ("PRelu", &[9, 16]),
        ("Pad", &[11, 13, 18, 19, 21]),
        ("Pow", &[12, 13, 15]),
        ("QLinearMatMul", &[21]),
        ("QuantizeLinear", &[13, 19, 21]),
        ("RNN", &[14]),
        ("Reciprocal", &[13]),
        ("ReduceL1", &[11, 13, 18]),
        ("ReduceL2", &[11, 13, 18]),
        ("ReduceLogSum", &[11, 13, 18]),
        ("ReduceLogSumExp", &[11, 13, 18]),
        ("ReduceMax", &[11, 12, 13, 18, 20]),
        ("ReduceMean", &[11, 13, 18]),
        ("ReduceMin", &[11, 12, 13, 18, 20]),
        ("ReduceProd", &[11, 13, 18]),
        ("ReduceSum", &[11, 13]),
        ("ReduceSumSquare", &[11, 13, 18]),
        ("Relu", &[13, 14]),
        ("Reshape", &[13, 14, 19, 21]),
        ("Resize", &[11, 13, 18, 19]),
        ("RoiAlign", &[16]),
        ("Scan", &[9, 11, 16, 19, 21]),
        ("Scatter", &[11]),
        ("ScatterElements", &[13, 16, 18]),
        ("ScatterND", &[13, 16, 18]),
        ("Shape", &[13, 15, 19, 21]),
        ("Sigmoid", &[13]),
        ("Sign", &[13]),
        ("Size", &[13, 19, 21]),
        ("Slice", &[10, 11, 13]),
        ("Softmax", &[11, 13]),
        ("SoftmaxCrossEntropyLoss", &[13]),
        ("SpaceToDepth", &[13]),
        ("Split", &[11, 13, 18]),
        ("Sqrt", &[13]),
        ("Squeeze", &[11, 13, 21]),
        ("Sub", &[13, 14]),
        ("Sum", &[8, 13]),
        ("Tanh", &[13]),
        ("Tile", &[13]),
        ("TopK", &[10, 11]),
        ("Transpose", &[13, 21]),
        ("Unsqueeze", &[11, 13, 21]),
        ("Upsample", &[9, 10]),
        ("Where", &[16]),
    ];

    #[test]
    fn every_step_is_adapted_or_compatible_and_nothing_else_is_listed() {
        for (op, steps) in ALL_STEPS {
            for &s in *steps {
                let adapted = find(op, s).is_some();
                assert!(
                    adapted != is_compatible(op, s),
                    "{op} at {s}: adapted={adapted}, compatible={}",
                    is_compatible(op, s)
                );
            }
        }
        let known = |op: &str, s: i64| ALL_STEPS.iter().any(|(o, v)| *o == op && v.contains(&s));
        for a in ADAPTERS {
            assert!(
                known(a.op, a.step),
                "adapter {} {} is no step",
                a.op,
                a.step
            );
        }
        for (op, steps) in COMPATIBLE {
            for &s in *steps {
                assert!(known(op, s), "{op} {s} is no step");
            }
        }
    }
}
