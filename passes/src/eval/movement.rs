//! Data movement: Transpose, Concat, Split, Slice, Gather, Tile, Expand.
//!
//! Each is computed once, with ndarray, on an array of element *positions* (`0..n` in the
//! input's shape); the tensor's elements are then copied in the resulting order. So one
//! implementation serves every element type, strings included, and copies bytes exactly.

use bytes::Bytes;
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

use super::context::{int_values, invalid, norm_axes, norm_axis};
use super::elementwise::broadcast_shape;
use super::{Ctx, EvalError, Out};
use crate::tensor::{Tensor, TensorData};

/// The operators this module evaluates.
pub(crate) const OPS: &[&str] = &[
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Tile",
    "Expand",
];

/// True for the operators this module evaluates.
pub(crate) fn supports(op: &str) -> bool {
    OPS.contains(&op)
}

pub(crate) fn eval(ctx: &Ctx) -> Out {
    if ctx.op == "Concat" {
        return concat(ctx);
    }
    let t = ctx.required(0)?;
    let pos = positions(t, 0)?;
    let outs: Vec<ArrayD<usize>> = match ctx.op {
        "Transpose" => vec![transpose(ctx, pos)?],
        "Split" => match split(ctx, pos)? {
            Some(v) => v,
            None => return Ok(None),
        },
        "Slice" => vec![slice(ctx, pos)?],
        "Gather" => vec![gather(ctx, pos)?],
        "Tile" => vec![tile(ctx, pos)?],
        "Expand" => vec![expand(ctx, pos)?],
        _ => return Ok(None),
    };
    let mut result = Vec::with_capacity(outs.len());
    for o in &outs {
        match take(&[t], o)? {
            Some(r) => result.push(r),
            None => return Ok(None),
        }
    }
    Ok(Some(result))
}

/// Positions `offset..offset + n` in the shape of `t`.
fn positions(t: &Tensor, offset: usize) -> Result<ArrayD<usize>, EvalError> {
    ArrayD::from_shape_vec(IxDyn(t.shape()), (offset..offset + t.len()).collect())
        .map_err(|e| invalid!("bad tensor shape: {e}"))
}

/// A tensor of the elements at `order` (positions into the inputs laid end to end);
/// `None` for element types not stored in whole bytes.
fn take(inputs: &[&Tensor], order: &ArrayD<usize>) -> Result<Option<Tensor>, EvalError> {
    let dtype = inputs[0].dtype();
    let shape = order.shape().to_vec();
    if inputs[0].strings().is_some() {
        let mut pool: Vec<&Bytes> = Vec::new();
        for t in inputs {
            pool.extend(t.strings().unwrap_or_default());
        }
        let v = order
            .iter()
            .map(|&i| pool.get(i).map(|b| (*b).clone()))
            .collect::<Option<Vec<Bytes>>>()
            .ok_or_else(|| invalid!("position out of range"))?;
        return Ok(Some(Tensor::from_strings(shape, v)?));
    }
    if !dtype.bits().is_multiple_of(8) {
        return Ok(None);
    }
    let size = dtype.bits() / 8;
    let mut pool: Vec<&[u8]> = Vec::with_capacity(inputs.len());
    let mut starts = Vec::with_capacity(inputs.len());
    let mut total = 0;
    for t in inputs {
        let TensorData::Raw(raw) = t.data() else {
            return Err(invalid!("mixed string and numeric inputs"));
        };
        pool.push(raw);
        starts.push(total);
        total += t.len();
    }
    let mut out = Vec::with_capacity(order.len() * size);
    for &i in order.iter() {
        // Which input holds position i: the last one starting at or before it.
        let k = starts.partition_point(|&s| s <= i).saturating_sub(1);
        let local = (i - starts[k]) * size;
        let bytes = pool[k]
            .get(local..local + size)
            .ok_or_else(|| invalid!("position out of range"))?;
        out.extend_from_slice(bytes);
    }
    Ok(Some(Tensor::from_raw(dtype, shape, Bytes::from(out))?))
}

/// Collects a view into a standard-layout array.
fn owned(v: ArrayViewD<usize>) -> ArrayD<usize> {
    v.as_standard_layout().into_owned()
}

fn transpose(ctx: &Ctx, pos: ArrayD<usize>) -> Result<ArrayD<usize>, EvalError> {
    let rank = pos.ndim();
    let perm: Vec<usize> = match ctx.ints("perm")? {
        Some(p) => {
            let p = norm_axes(&p, rank, ctx.op)?;
            if p.len() != rank {
                return Err(invalid!("Transpose: perm {p:?} for rank {rank}"));
            }
            p
        }
        None => (0..rank).rev().collect(),
    };
    Ok(owned(pos.view().permuted_axes(IxDyn(&perm))))
}

fn concat(ctx: &Ctx) -> Out {
    let inputs = (0..ctx.inputs.len())
        .map(|i| ctx.required(i))
        .collect::<Result<Vec<&Tensor>, EvalError>>()?;
    let first = inputs
        .first()
        .ok_or_else(|| invalid!("Concat: no inputs"))?;
    let rank = first.shape().len();
    let axis = norm_axis(
        ctx.attr("axis")
            .and_then(|a| a.as_int())
            .ok_or_else(|| invalid!("Concat: axis missing"))?,
        rank,
        ctx.op,
    )?;
    let mut parts = Vec::with_capacity(inputs.len());
    let mut offset = 0;
    for t in &inputs {
        let same = t.shape().len() == rank
            && (0..rank).all(|i| i == axis || t.shape()[i] == first.shape()[i]);
        if t.dtype() != first.dtype() || !same {
            return Err(invalid!("Concat: inputs do not match"));
        }
        parts.push(positions(t, offset)?);
        offset += t.len();
    }
    let views: Vec<ArrayViewD<usize>> = parts.iter().map(|p| p.view()).collect();
    let joined = ndarray::concatenate(Axis(axis), &views).map_err(|e| invalid!("Concat: {e}"))?;
    Ok(take(&inputs, &joined)?.map(|t| vec![t]))
}

fn split(ctx: &Ctx, pos: ArrayD<usize>) -> Result<Option<Vec<ArrayD<usize>>>, EvalError> {
    let axis = norm_axis(ctx.int("axis", 0)?, pos.ndim(), ctx.op)?;
    let dim = pos.shape()[axis];
    let sizes: Vec<usize> = match if ctx.opset < 13 {
        ctx.ints("split")?
    } else {
        ctx.int_input(1)?
    } {
        Some(s) => {
            // Checked: sizes near i64::MAX would wrap (or panic) in a plain sum.
            let total = s.iter().try_fold(0i64, |acc, &v| acc.checked_add(v));
            if s.iter().any(|&v| v < 0) || total != Some(dim as i64) {
                return Err(invalid!("Split: sizes {s:?} do not sum to {dim}"));
            }
            s.iter().map(|&v| v as usize).collect()
        }
        None => {
            let n = match ctx.attr("num_outputs").and_then(|a| a.as_int()) {
                Some(n) if ctx.opset >= 18 => {
                    // The attribute is the model's word, not a count of declared outputs:
                    // a negative or huge value must not size an allocation.
                    match usize::try_from(n) {
                        Ok(n) if n <= dim.max(1) => n,
                        _ => {
                            return Err(invalid!(
                                "Split: num_outputs {n} is not between 1 and the {dim} \
                                 elements of axis {axis}"
                            ))
                        }
                    }
                }
                _ => match ctx.options.num_outputs {
                    Some(n) => n,
                    None => return Ok(None),
                },
            };
            if n == 0 {
                return Err(invalid!("Split: zero outputs"));
            }
            if ctx.opset >= 18 {
                // Chunks of ceil(dim / n), the last one smaller.
                let chunk = dim.div_ceil(n);
                (0..n)
                    .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                    .collect()
            } else if dim.is_multiple_of(n) {
                vec![dim / n; n]
            } else {
                return Err(invalid!("Split: {dim} does not divide into {n}"));
            }
        }
    };
    let mut start = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for s in sizes {
        let part = pos.slice_axis(Axis(axis), Slice::from(start..start + s));
        outs.push(owned(part));
        start += s;
    }
    Ok(Some(outs))
}

/// One axis of an ONNX slice, clamped as ONNX specifies: ndarray's `Slice`.
pub(crate) fn slice_axis(start: i64, end: i64, step: i64, dim: usize) -> Slice {
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    if step > 0 {
        let (s, e) = (norm(start).clamp(0, d), norm(end).clamp(0, d));
        if s >= e {
            return Slice::new(0, Some(0), 1);
        }
        Slice::new(s as isize, Some(e as isize), step as isize)
    } else {
        let (s, e) = (norm(start).clamp(0, d - 1), norm(end).clamp(-1, d - 1));
        if s <= e {
            return Slice::new(0, Some(0), 1);
        }
        // ndarray walks a negative step from the end of [e+1, s+1).
        Slice::new((e + 1) as isize, Some((s + 1) as isize), step as isize)
    }
}

fn slice(ctx: &Ctx, pos: ArrayD<usize>) -> Result<ArrayD<usize>, EvalError> {
    let rank = pos.ndim();
    let (starts, ends, axes, steps) = if ctx.opset < 10 {
        (
            ctx.ints("starts")?
                .ok_or_else(|| invalid!("Slice: starts missing"))?,
            ctx.ints("ends")?
                .ok_or_else(|| invalid!("Slice: ends missing"))?,
            ctx.ints("axes")?,
            None,
        )
    } else {
        (
            int_values(ctx.required(1)?, ctx.op)?,
            int_values(ctx.required(2)?, ctx.op)?,
            ctx.int_input(3)?,
            ctx.int_input(4)?,
        )
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(invalid!(
            "Slice: starts, ends, axes and steps differ in length"
        ));
    }
    let axes = norm_axes(&axes, rank, ctx.op)?;
    let mut per_axis = vec![Slice::from(..); rank];
    for i in 0..n {
        if steps[i] == 0 {
            return Err(invalid!("Slice: step 0"));
        }
        per_axis[axes[i]] = slice_axis(starts[i], ends[i], steps[i], pos.shape()[axes[i]]);
    }
    let v = pos.slice_each_axis(|ax| per_axis[ax.axis.index()]);
    Ok(owned(v))
}

fn gather(ctx: &Ctx, pos: ArrayD<usize>) -> Result<ArrayD<usize>, EvalError> {
    let rank = pos.ndim();
    if rank == 0 {
        return Err(invalid!("Gather: data must have rank >= 1"));
    }
    let axis = norm_axis(ctx.int("axis", 0)?, rank, ctx.op)?;
    let idx_t = ctx.required(1)?;
    let dim = pos.shape()[axis] as i64;
    let idx = int_values(idx_t, ctx.op)?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + dim } else { i };
            if (0..dim).contains(&j) {
                Ok(j as usize)
            } else {
                Err(invalid!("Gather: index {i} out of range for {dim}"))
            }
        })
        .collect::<Result<Vec<usize>, EvalError>>()?;
    let mut shape = pos.shape()[..axis].to_vec();
    shape.extend_from_slice(idx_t.shape());
    shape.extend_from_slice(&pos.shape()[axis + 1..]);
    ctx.check(&shape)?;
    let picked = pos.select(Axis(axis), &idx);
    let v: Vec<usize> = picked.iter().copied().collect();
    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| invalid!("Gather: {e}"))
}

fn tile(ctx: &Ctx, pos: ArrayD<usize>) -> Result<ArrayD<usize>, EvalError> {
    let reps = int_values(ctx.required(1)?, ctx.op)?;
    if reps.len() != pos.ndim() || reps.iter().any(|&r| r < 0) {
        return Err(invalid!("Tile: repeats {reps:?} for rank {}", pos.ndim()));
    }
    let in_shape = pos.shape().to_vec();
    let shape: Vec<usize> = in_shape
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.saturating_mul(r as usize))
        .collect();
    ctx.check(&shape)?;
    Ok(ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
        let src: Vec<usize> = (0..in_shape.len()).map(|a| ix[a] % in_shape[a]).collect();
        pos[IxDyn(&src)]
    }))
}

fn expand(ctx: &Ctx, pos: ArrayD<usize>) -> Result<ArrayD<usize>, EvalError> {
    let target = int_values(ctx.required(1)?, ctx.op)?;
    if target.iter().any(|&d| d < 0) {
        return Err(invalid!("Expand: negative dim in {target:?}"));
    }
    let target: Vec<usize> = target.iter().map(|&d| d as usize).collect();
    let shape = broadcast_shape(pos.shape(), &target, ctx.op)?;
    ctx.check(&shape)?;
    let v = pos
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| invalid!("Expand: cannot broadcast"))?;
    Ok(owned(v))
}
