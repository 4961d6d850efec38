//! Operators on shapes and metadata: Shape, Size, Identity, Reshape, Flatten, Unsqueeze,
//! Squeeze, ConstantOfShape, Range. All but Range work on every element type (strings too):
//! they only reinterpret a tensor's shape or repeat its bytes.

use bytes::Bytes;

use super::context::{int_values, invalid, norm_axes, norm_axis};
use super::scalar::Elem;
use super::{Ctx, EvalError, Out};
use crate::ir::AttrValue;
use crate::tensor::{DataType, Element, Tensor};

/// The operators this module evaluates.
pub(crate) const OPS: &[&str] = &[
    "Shape",
    "Size",
    "Identity",
    "Reshape",
    "Flatten",
    "Unsqueeze",
    "Squeeze",
    "ConstantOfShape",
    "Range",
];

/// True for the operators this module evaluates.
pub(crate) fn supports(op: &str) -> bool {
    OPS.contains(&op)
}

pub(crate) fn eval(ctx: &Ctx) -> Out {
    let r = match ctx.op {
        "Shape" => shape(ctx)?,
        "Size" => Tensor::scalar(ctx.required(0)?.len() as i64),
        "Identity" => ctx.required(0)?.clone(),
        "Reshape" => reshape(ctx)?,
        "Flatten" => flatten(ctx)?,
        "Unsqueeze" => unsqueeze(ctx)?,
        "Squeeze" => squeeze(ctx)?,
        "ConstantOfShape" => match constant_of_shape(ctx)? {
            Some(t) => t,
            None => return Ok(None),
        },
        "Range" => return range(ctx),
        _ => return Ok(None),
    };
    Ok(Some(vec![r]))
}

/// The `[start, end)` range of dims `Shape` (opset 15) keeps of a rank-`rank` tensor.
pub fn shape_range(start: i64, end: Option<i64>, rank: usize) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    (s, e.max(s))
}

fn shape(ctx: &Ctx) -> Result<Tensor, EvalError> {
    let t = ctx.required(0)?;
    let end = ctx.attr("end").map(|v| v.as_int().unwrap_or(i64::MAX));
    let (s, e) = shape_range(ctx.int("start", 0)?, end, t.shape().len());
    let dims: Vec<i64> = t.dims()[s..e].to_vec();
    Ok(Tensor::from_vec(vec![dims.len()], dims)?)
}

/// The output shape of `Reshape` of `input` to the requested `shape`.
pub(crate) fn reshape_dims(
    input: &[usize],
    shape: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, EvalError> {
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or_else(|| invalid!("Reshape: 0 at position {i} past input rank"))?,
            ),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(invalid!("Reshape: bad target shape {shape:?}")),
        }
    }
    if allowzero && infer.is_some() && shape.contains(&0) {
        return Err(invalid!("Reshape: -1 with a 0 dim under allowzero"));
    }
    let total: u128 = input.iter().map(|&d| d as u128).product();
    let known: u128 = out.iter().map(|&d| d as u128).product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(invalid!(
                "Reshape: cannot infer -1 of {input:?} → {shape:?}"
            ));
        }
        out[i] = (total / known) as usize;
    } else if known != total {
        return Err(invalid!("Reshape: {input:?} does not fit {shape:?}"));
    }
    Ok(out)
}

fn reshape(ctx: &Ctx) -> Result<Tensor, EvalError> {
    let t = ctx.required(0)?;
    let target = if ctx.opset < 5 {
        ctx.ints("shape")?.unwrap_or_default()
    } else {
        int_values(ctx.required(1)?, ctx.op)?
    };
    let allowzero = ctx.int("allowzero", 0)? != 0;
    Ok(t.reshaped(reshape_dims(t.shape(), &target, allowzero)?)?)
}

fn flatten(ctx: &Ctx) -> Result<Tensor, EvalError> {
    let t = ctx.required(0)?;
    let rank = t.shape().len();
    let axis = ctx.int("axis", 1)?;
    let a = if axis == rank as i64 {
        rank
    } else {
        norm_axis(axis, rank, ctx.op)?
    };
    let outer = t.shape()[..a].iter().product();
    let inner = t.shape()[a..].iter().product();
    Ok(t.reshaped(vec![outer, inner])?)
}

/// Axes from the attribute (before `from_opset`) or from input 1.
fn axes(ctx: &Ctx, from_opset: i64) -> Result<Option<Vec<i64>>, EvalError> {
    if ctx.opset < from_opset {
        ctx.ints("axes")
    } else {
        ctx.int_input(1)
    }
}

fn unsqueeze(ctx: &Ctx) -> Result<Tensor, EvalError> {
    let t = ctx.required(0)?;
    let axes = axes(ctx, 13)?.ok_or_else(|| invalid!("Unsqueeze: axes missing"))?;
    let rank = t.shape().len() + axes.len();
    let mut axes = norm_axes(&axes, rank, ctx.op)?;
    axes.sort_unstable();
    let mut dims = t.shape().iter().copied();
    let shape = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                Some(1)
            } else {
                dims.next()
            }
        })
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| invalid!("Unsqueeze: bad axes"))?;
    Ok(t.reshaped(shape)?)
}

fn squeeze(ctx: &Ctx) -> Result<Tensor, EvalError> {
    let t = ctx.required(0)?;
    let rank = t.shape().len();
    let axes = match axes(ctx, 13)? {
        Some(a) => norm_axes(&a, rank, ctx.op)?,
        None => (0..rank).filter(|&i| t.shape()[i] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| t.shape()[a] != 1) {
        return Err(invalid!("Squeeze: axis {a} has size {}", t.shape()[a]));
    }
    let shape = (0..rank)
        .filter(|i| !axes.contains(i))
        .map(|i| t.shape()[i])
        .collect();
    Ok(t.reshaped(shape)?)
}

fn constant_of_shape(ctx: &Ctx) -> Result<Option<Tensor>, EvalError> {
    let dims = int_values(ctx.required(0)?, ctx.op)?;
    if dims.iter().any(|&d| d < 0) {
        return Err(invalid!("ConstantOfShape: negative dim in {dims:?}"));
    }
    let n: u128 = dims.iter().map(|&d| d as u128).product();
    ctx.check_count(n)?;
    let value = match ctx.attr("value") {
        Some(AttrValue::Tensor(t)) => t.clone(),
        Some(_) => return Err(invalid!("ConstantOfShape: 'value' is not a tensor")),
        None => Tensor::scalar(0f32),
    };
    if value.len() != 1 {
        return Err(invalid!("ConstantOfShape: 'value' must hold one element"));
    }
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let Some(raw) = value.raw() else {
        return Ok(None);
    };
    if !value.dtype().bits().is_multiple_of(8) {
        return Ok(None);
    }
    Ok(Some(Tensor::from_raw(
        value.dtype(),
        shape,
        Bytes::from(raw.repeat(n as usize)),
    )?))
}

fn range(ctx: &Ctx) -> Out {
    let (s, l, d) = (ctx.required(0)?, ctx.required(1)?, ctx.required(2)?);
    if s.dtype() != l.dtype() || s.dtype() != d.dtype() {
        return Err(invalid!("Range: input types differ"));
    }
    if [s, l, d].iter().any(|t| t.len() != 1) {
        return Err(invalid!("Range: inputs must be scalars"));
    }
    let t = match s.dtype() {
        DataType::Int16 => range_int::<i16>(ctx, s, l, d)?,
        DataType::Int32 => range_int::<i32>(ctx, s, l, d)?,
        DataType::Int64 => range_int::<i64>(ctx, s, l, d)?,
        DataType::Float => range_float::<f32>(ctx, s, l, d)?,
        DataType::Double => range_float::<f64>(ctx, s, l, d)?,
        _ => return Ok(None),
    };
    Ok(Some(vec![t]))
}

fn first<T: Element>(t: &Tensor) -> Result<T, EvalError> {
    t.to_vec::<T>()?
        .first()
        .copied()
        .ok_or_else(|| invalid!("Range: empty input"))
}

fn range_int<T: Element + Elem>(
    ctx: &Ctx,
    s: &Tensor,
    l: &Tensor,
    d: &Tensor,
) -> Result<Tensor, EvalError> {
    let (start, limit, delta) = (first::<T>(s)?, first::<T>(l)?, first::<T>(d)?);
    let (s, l, d) = (
        start.to_i128().unwrap_or(0),
        limit.to_i128().unwrap_or(0),
        delta.to_i128().unwrap_or(0),
    );
    if d == 0 {
        return Err(invalid!("Range: delta is 0"));
    }
    let span = l - s;
    let n = if (span > 0) == (d > 0) && span != 0 {
        (span.abs() + d.abs() - 1) / d.abs()
    } else {
        0
    };
    ctx.check_count(n as u128)?;
    let v: Vec<T> = (0..n).map(|i| T::from_i128(s + i * d)).collect();
    Ok(Tensor::from_vec(vec![v.len()], v)?)
}

fn range_float<T: Element + Elem + std::ops::AddAssign + std::ops::Sub<Output = T>>(
    ctx: &Ctx,
    s: &Tensor,
    l: &Tensor,
    d: &Tensor,
) -> Result<Tensor, EvalError> {
    let (start, limit, delta) = (first::<T>(s)?, first::<T>(l)?, first::<T>(d)?);
    let (sf, lf, df) = (start.to_f64(), limit.to_f64(), delta.to_f64());
    if df == 0.0 || !sf.is_finite() || !lf.is_finite() || !df.is_finite() {
        return Err(invalid!("Range: delta is 0 or a bound is not finite"));
    }
    // As ONNX Runtime: count = ceil((limit - start) / delta), values by repeated addition.
    let n = ((limit - start).to_f64() / df).ceil().max(0.0);
    ctx.check_count(n as u128)?;
    let mut v = Vec::with_capacity(n as usize);
    let mut x = start;
    for _ in 0..n as usize {
        v.push(x);
        x += delta;
    }
    Ok(Tensor::from_vec(vec![v.len()], v)?)
}
