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
}
