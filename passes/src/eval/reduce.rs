//! ReduceSum / ReduceMean / ReduceMax / ReduceMin / ReduceProd with axes from the attribute
//! or the input (by opset), `keepdims` and `noop_with_empty_axes`.
//!
//! Integers accumulate in their own type (wrapping); floats accumulate in float64 and round
//! once to their type.

use ndarray::{ArrayD, IxDyn};

use super::array::Arr;
use super::context::{invalid, norm_axes, one};
use super::scalar::Num;
use super::{Ctx, EvalError, Out};

/// The operators this module evaluates.
pub(crate) const OPS: &[&str] = &[
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
];

/// True for the operators this module evaluates.
pub(crate) fn supports(op: &str) -> bool {
    OPS.contains(&op)
}

pub(crate) fn eval(ctx: &Ctx) -> Out {
    let Some(a) = ctx.arr(0)? else {
        return Ok(None);
    };
    let rank = a.shape().len();
    // Axes moved from the attribute to an input at opset 13 for ReduceSum, 18 for the rest.
    let input_from = if ctx.op == "ReduceSum" { 13 } else { 18 };
    let axes = if ctx.opset < input_from {
        ctx.ints("axes")?
    } else {
        ctx.int_input(1)?
    };
    let axes = match axes {
        Some(a) if !a.is_empty() => norm_axes(&a, rank, ctx.op)?,
        _ if ctx.opset >= input_from && ctx.int("noop_with_empty_axes", 0)? != 0 => {
            return Ok(Some(vec![ctx.required(0)?.clone()]));
        }
        _ => (0..rank).collect(),
    };
    let keep = ctx.int("keepdims", 1)? != 0;
    let r = match &a {
        // Max / Min of bools (opset 20) are any / all: reduce them as 0 / 1 bytes.
        Arr::Bool(x) if matches!(ctx.op, "ReduceMax" | "ReduceMin") => {
            let bytes = x.mapv(u8::from);
            Arr::Bool(reduce(ctx, &bytes, &axes, keep)?.mapv(|v| v != 0))
        }
        Arr::Bool(_) => return Ok(None),
        Arr::U8(x) => Arr::U8(reduce(ctx, x, &axes, keep)?),
        Arr::I8(x) => Arr::I8(reduce(ctx, x, &axes, keep)?),
        Arr::U16(x) => Arr::U16(reduce(ctx, x, &axes, keep)?),
        Arr::I16(x) => Arr::I16(reduce(ctx, x, &axes, keep)?),
        Arr::U32(x) => Arr::U32(reduce(ctx, x, &axes, keep)?),
        Arr::I32(x) => Arr::I32(reduce(ctx, x, &axes, keep)?),
        Arr::U64(x) => Arr::U64(reduce(ctx, x, &axes, keep)?),
        Arr::I64(x) => Arr::I64(reduce(ctx, x, &axes, keep)?),
        Arr::F16(x) => Arr::F16(reduce(ctx, x, &axes, keep)?),
        Arr::Bf16(x) => Arr::Bf16(reduce(ctx, x, &axes, keep)?),
        Arr::F32(x) => Arr::F32(reduce(ctx, x, &axes, keep)?),
        Arr::F64(x) => Arr::F64(reduce(ctx, x, &axes, keep)?),
    };
    one(r)
}

fn reduce<T: Num>(
    ctx: &Ctx,
    a: &ArrayD<T>,
    axes: &[usize],
    keep: bool,
) -> Result<ArrayD<T>, EvalError> {
    let rank = a.ndim();
    let kept: Vec<usize> = (0..rank).filter(|i| !axes.contains(i)).collect();
    let mut perm = kept.clone();
    perm.extend_from_slice(axes);
    let group: usize = axes.iter().map(|&i| a.shape()[i]).product();
    // Reduced axes last: each run of `group` consecutive elements is one output element.
    let flat: Vec<T> = a
        .view()
        .permuted_axes(IxDyn(&perm))
        .iter()
        .copied()
        .collect();
    let outer: usize = kept.iter().map(|&i| a.shape()[i]).product();
    let out: Vec<T> = (0..outer)
        .map(|o| combine(ctx.op, &flat[o * group..(o + 1) * group]))
        .collect::<Result<_, _>>()?;
    let shape: Vec<usize> = if keep {
        (0..rank)
            .map(|i| if axes.contains(&i) { 1 } else { a.shape()[i] })
            .collect()
    } else {
        kept.iter().map(|&i| a.shape()[i]).collect()
    };
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| invalid!("{}: {e}", ctx.op))
}

fn combine<T: Num>(op: &str, v: &[T]) -> Result<T, EvalError> {
    let float_sum = |prod: bool| {
        let init = if prod { 1.0 } else { 0.0 };
        v.iter().fold(init, |acc, &x| {
            if prod {
                acc * x.to_f64()
            } else {
                acc + x.to_f64()
            }
        })
    };
    Ok(match op {
        "ReduceSum" if T::FLOAT => T::from_f64(float_sum(false)),
        "ReduceSum" => v.iter().fold(T::zero(), |acc, &x| acc.add(x)),
        "ReduceProd" if T::FLOAT => T::from_f64(float_sum(true)),
        "ReduceProd" => v.iter().fold(T::one(), |acc, &x| acc.mul(x)),
        "ReduceMean" if T::FLOAT => T::from_f64(float_sum(false) / v.len() as f64),
        "ReduceMean" => {
            let sum = v.iter().fold(T::zero(), |acc, &x| acc.add(x));
            sum.div(T::from_i128(v.len() as i128))
                .map_err(|_| invalid!("ReduceMean: empty reduction of integers"))?
        }
        "ReduceMax" => v.iter().fold(T::lowest(), |acc, &x| {
            if acc.is_nan() || x.is_nan() {
                if acc.is_nan() {
                    acc
                } else {
                    x
                }
            } else if x > acc {
                x
            } else {
                acc
            }
        }),
        _ => v.iter().fold(T::highest(), |acc, &x| {
            if acc.is_nan() || x.is_nan() {
                if acc.is_nan() {
                    acc
                } else {
                    x
                }
            } else if x < acc {
                x
            } else {
                acc
            }
        }),
    })
}
