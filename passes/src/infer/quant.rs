//! Quantization operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::Ctx;
use super::ty::Ty;

/// QuantizeLinear: the zero point's type, else `output_dtype` (opset 21+), else uint8.
pub fn quantize(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = if ctx.has(2) {
        ctx.elem(2)
    } else {
        match ctx.attr_int("output_dtype") {
            Some(code) if code != 0 => Some(ctx.attr_dtype("output_dtype")?),
            _ => Some(DataType::Uint8),
        }
    };
    Some(vec![Ty::tensor(elem, ctx.shape(0).map(<[Dim]>::to_vec))])
}

/// DequantizeLinear: the scale's type (float before opset 19), else `output_dtype`.
pub fn dequantize(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = match ctx.attr_int("output_dtype") {
        Some(code) if code != 0 => Some(ctx.attr_dtype("output_dtype")?),
        _ if ctx.opset < 19 => Some(DataType::Float),
        _ => ctx.elem(1),
    };
    Some(vec![Ty::tensor(elem, ctx.shape(0).map(<[Dim]>::to_vec))])
}

/// ONNX Runtime's `com.microsoft` DequantizeLinear: the scale's type (float or float16).
pub fn dequantize_contrib(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        ctx.elem(1),
        ctx.shape(0).map(<[Dim]>::to_vec),
    )])
}

/// DynamicQuantizeLinear: uint8 data, float scale, uint8 zero point.
pub fn dynamic_quantize(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![
        Ty::tensor(Some(DataType::Uint8), ctx.shape(0).map(<[Dim]>::to_vec)),
        Ty::known(DataType::Float, vec![]),
        Ty::known(DataType::Uint8, vec![]),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::tensor::{DataType, Tensor};

    #[test]
    fn quantize_types_follow_zero_point_or_default() {
        let (m, _) = run_one(
            13,
            "QuantizeLinear",
            &[
                f32_in(&["n", "4"]),
                In::Const(Tensor::scalar(0.1f32)),
                In::Const(Tensor::scalar(0i8)),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "int8[n,4]");
        let (m, _) = run_one(
            13,
            "QuantizeLinear",
            &[f32_in(&["n"]), In::Const(Tensor::scalar(0.1f32))],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "uint8[n]");
        let (m, _) = run_one(
            19,
            "DequantizeLinear",
            &[
                typed_in(DataType::Int8, &["n"]),
                typed_in(DataType::Float16, &[]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float16[n]");
    }

    /// ONNX Runtime's 16-bit Q/DQ (below opset 21) carry types and shapes through.
    #[test]
    fn microsoft_quantize_and_dequantize_are_inferred() {
        use crate::ir::{Model, Node, ValueRef};
        use crate::pipeline::Pass;

        let mut m = Model::new(13);
        let ins = add_inputs(
            &mut m,
            &[
                f32_in(&["n", "4"]),
                In::Const(Tensor::scalar(0.001f32)),
                In::Const(Tensor::scalar(32768u16)),
            ],
        );
        let [Some(x), Some(scale), Some(zero)] = ins[..] else {
            panic!("three inputs")
        };
        let g = &mut m.graph;
        let q = g.add_node(Node::op("QuantizeLinear", "q", &["q"]).with_domain("com.microsoft"));
        for (slot, v) in [x, scale, zero].into_iter().enumerate() {
            g.connect(v, q, slot);
        }
        let dq =
            g.add_node(Node::op("DequantizeLinear", "dq", &["y"]).with_domain("com.microsoft"));
        for (slot, v) in [ValueRef::new(q, 0), scale, zero].into_iter().enumerate() {
            g.connect(v, dq, slot);
        }
        for n in [q, dq] {
            if let Some(node) = g.node_mut(n) {
                node.input_arity = 3;
            }
        }
        crate::infer::InferShapes.run(&mut m).unwrap();
        m.graph.verify().unwrap();
        let ty = |n| crate::ir::describe_type(m.graph[n].outputs[0].ty.as_ref());
        assert_eq!(ty(q), "uint16[n,4]");
        assert_eq!(ty(dq), "float32[n,4]");
    }
}
