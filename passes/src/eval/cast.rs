//! `Cast` and `CastLike` between bool, every integer type, float16, bfloat16, float and double.
//!
//! Narrowing follows ONNX Runtime: integers wrap, floats round to nearest even, double →
//! float16/bfloat16 goes through float (two roundings, as ORT does). A float → integer cast
//! whose value is NaN or out of the target's range is undefined in C++ and differs between
//! CPUs, so it is refused rather than folded. Strings and 8/4/2-bit types are unsupported.

use ndarray::ArrayD;

use super::array::{with_arr, Arr};
use super::context::{invalid, one};
use super::scalar::Elem;
use super::{Ctx, EvalError, Out};
use crate::tensor::DataType;

/// The operators this module evaluates.
pub(crate) const OPS: &[&str] = &["Cast", "CastLike"];

/// True for the operators this module evaluates.
pub(crate) fn supports(op: &str) -> bool {
    OPS.contains(&op)
}

pub(crate) fn eval(ctx: &Ctx) -> Out {
    let to = if ctx.op == "Cast" {
        let code = ctx.int("to", 0)?;
        let code = i32::try_from(code).map_err(|_| invalid!("Cast: bad 'to' {code}"))?;
        DataType::from_onnx(code).ok_or_else(|| invalid!("Cast: unknown type {code}"))?
    } else {
        ctx.required(1)?.dtype()
    };
    let Some(a) = ctx.arr(0)? else {
        return Ok(None);
    };
    match cast(&a, to)? {
        Some(r) => one(r),
        None => Ok(None),
    }
}

/// Converts `a` to `to`; `None` when `to` is not a type the evaluator computes on.
pub(crate) fn cast(a: &Arr, to: DataType) -> Result<Option<Arr>, EvalError> {
    if a.dtype() == to {
        return Ok(Some(a.clone()));
    }
    with_arr!(a, x => cast_from(x, to))
}

fn cast_from<S: Elem>(x: &ArrayD<S>, to: DataType) -> Result<Option<Arr>, EvalError> {
    Ok(Some(match to {
        DataType::Bool => Arr::Bool(conv(x)?),
        DataType::Uint8 => Arr::U8(conv(x)?),
        DataType::Int8 => Arr::I8(conv(x)?),
        DataType::Uint16 => Arr::U16(conv(x)?),
        DataType::Int16 => Arr::I16(conv(x)?),
        DataType::Uint32 => Arr::U32(conv(x)?),
        DataType::Int32 => Arr::I32(conv(x)?),
        DataType::Uint64 => Arr::U64(conv(x)?),
        DataType::Int64 => Arr::I64(conv(x)?),
        DataType::Float16 => Arr::F16(conv(x)?),
        DataType::Bfloat16 => Arr::Bf16(conv(x)?),
        DataType::Float => Arr::F32(conv(x)?),
        DataType::Double => Arr::F64(conv(x)?),
        _ => return Ok(None),
    }))
}

fn conv<S: Elem, D: Elem>(x: &ArrayD<S>) -> Result<ArrayD<D>, EvalError> {
    let range = D::int_range().map(|(lo, hi)| (lo as f64, (hi + 1) as f64));
    let mut bad = None;
    let r = x.mapv(|v| match v.to_i128() {
        Some(i) => D::from_i128(i),
        None => {
            let f = v.to_f64();
            if let Some((lo, hi)) = range {
                let t = f.trunc();
                if f.is_nan() || t < lo || t >= hi {
                    bad = Some(f);
                    return D::from_i128(0);
                }
                return D::from_i128(t as i128);
            }
            D::from_f64(f)
        }
    });
    match bad {
        Some(f) => Err(invalid!(
            "Cast: {f} is out of range of the integer target (undefined behaviour)"
        )),
        None => Ok(r),
    }
}
