//! Operators that rearrange or compute shapes: Reshape, Flatten, Squeeze, Unsqueeze,
//! Transpose, Shape, Size, Expand, ConstantOfShape, Range, DepthToSpace, SpaceToDepth.

use crate::ir::{AttrValue, Dim};
use crate::tensor::DataType;

use super::ctx::{Ctx, Param};
use super::dims;
use super::ty::Ty;

/// The contents of 1-D input `slot` as dims: from its known contents, else as many unknown
/// dims as its (fixed) length, else `None`.
pub fn shape_operand(ctx: &Ctx, slot: usize) -> Option<Vec<Dim>> {
    if let Some(s) = ctx.sym(slot) {
        return Some(s.items.clone());
    }
    if let Some(v) = ctx.ints(slot) {
        return Some(v.into_iter().map(Dim::Known).collect());
    }
    match ctx.shape(slot)? {
        [d] => Some(vec![Dim::Unknown; dims::small_len(d)?]),
        _ => None,
    }
}

/// Reshape: the target shape with `0` copied from the input (unless `allowzero`) and `-1`
/// solved from the element counts, keeping names that cancel (`[b,s,768] → [b,s,12,-1]`).
pub fn reshape(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let Some(target) = shape_operand(ctx, 1) else {
        return Some(vec![Ty::tensor(elem, None)]);
    };
    let allowzero = ctx.opset >= 14 && ctx.attr_int_or("allowzero", 0) != 0;
    let input = ctx.shape(0);
    let mut infer_at = None;
    let mut out = Vec::with_capacity(target.len());
    for (i, d) in target.iter().enumerate() {
        out.push(match d {
            Dim::Known(0) if !allowzero => {
                input.map_or(Dim::Unknown, |s| s.get(i).cloned().unwrap_or(Dim::Unknown))
            }
            Dim::Known(-1) => {
                if infer_at.replace(i).is_some() {
                    return None;
                }
                Dim::Unknown
            }
            Dim::Known(n) if *n < 0 => return None,
            other => other.clone(),
        });
    }
    if let Some(at) = infer_at {
        let others: Vec<Dim> = out
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != at)
            .map(|(_, d)| d.clone())
            .collect();
        out[at] = match (input.and_then(dims::product), dims::product(&others)) {
            (Some(num), Some(den)) => dims::quotient(&num, &den),
            _ => Dim::Unknown,
        };
    }
    Some(vec![Ty::tensor(elem, Some(out))])
}

/// Flatten: `[prod(dims[..axis]), prod(dims[axis..])]`.
pub fn flatten(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let Some(shape) = ctx.shape(0) else {
        return Some(vec![Ty::tensor(elem, Some(vec![Dim::Unknown; 2]))]);
    };
    let r = shape.len() as i64;
    let mut axis = ctx.attr_int_or("axis", 1);
    if axis < 0 {
        axis += r;
    }
    if !(0..=r).contains(&axis) {
        return None;
    }
    let (a, b) = shape.split_at(axis as usize);
    Some(vec![Ty::tensor(
        elem,
        Some(vec![dims::product_dim(a), dims::product_dim(b)]),
    )])
}

/// Squeeze: drops the given axes, or every dim known to be 1.
pub fn squeeze(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let shape = ctx.shape(0);
    let out = match (ctx.param("axes", 1, 13), shape) {
        (_, None) | (Param::Unknown, _) => None,
        (Param::Absent, Some(s)) => {
            if s.iter().any(|d| !matches!(d, Dim::Known(_))) {
                // A name or unknown dim may be 1: the rank is not known.
                None
            } else {
                Some(s.iter().filter(|d| **d != Dim::Known(1)).cloned().collect())
            }
        }
        (Param::Known(axes), Some(s)) => {
            let axes = dims::axes(&axes, s.len())?;
            if axes
                .iter()
                .any(|&a| matches!(s[a], Dim::Known(n) if n != 1))
            {
                return None;
            }
            Some(
                s.iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect(),
            )
        }
    };
    Some(vec![Ty::tensor(elem, out)])
}

/// Unsqueeze: inserts dims of 1 at the given axes (counted in the output's rank).
pub fn unsqueeze(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let out = match (ctx.param("axes", 1, 13), ctx.shape(0)) {
        (Param::Known(axes), Some(s)) => {
            let rank = s.len() + axes.len();
            let axes = dims::axes(&axes, rank)?;
            let mut rest = s.iter();
            Some(
                (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            Some(Dim::Known(1))
                        } else {
                            rest.next().cloned()
                        }
                    })
                    .collect::<Option<Vec<Dim>>>()?,
            )
        }
        (Param::Unknown, Some(s)) => match ctx.shape(1) {
            Some([d]) => Some(vec![Dim::Unknown; s.len() + dims::small_len(d)?]),
            _ => None,
        },
        (Param::Absent, _) => return None,
        _ => None,
    };
    Some(vec![Ty::tensor(elem, out)])
}

/// Transpose: the dims permuted by `perm` (reversed by default).
pub fn transpose(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let Some(s) = ctx.shape(0) else {
        return Some(vec![Ty::tensor(elem, None)]);
    };
    let perm: Vec<usize> = match ctx.attr_ints("perm") {
        Some(p) => p
            .iter()
            .map(|&a| usize::try_from(a).ok())
            .collect::<Option<Vec<usize>>>()?,
        None => (0..s.len()).rev().collect(),
    };
    let mut seen = vec![false; s.len()];
    for &p in &perm {
        if p >= s.len() || std::mem::replace(&mut seen[p], true) {
            return None;
        }
    }
    if perm.len() != s.len() {
        return None;
    }
    Some(vec![Ty::tensor(
        elem,
        Some(perm.iter().map(|&p| s[p].clone()).collect()),
    )])
}

/// The `[start, end)` range of Shape (opset 15 `start`/`end`, clamped like Python slices).
pub fn shape_range(ctx: &Ctx, rank: usize) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(ctx.attr_int_or("start", 0));
    let end = clamp(ctx.attr_int_or("end", r));
    (start, end.max(start))
}

/// Shape: int64 `[rank]` (or the length of the `start..end` range).
pub fn shape(ctx: &Ctx) -> Option<Vec<Ty>> {
    let len = match ctx.rank(0) {
        Some(r) => {
            let (s, e) = shape_range(ctx, r);
            Dim::Known((e - s) as i64)
        }
        None => Dim::Unknown,
    };
    Some(vec![Ty::known(DataType::Int64, vec![len])])
}

/// Size: an int64 scalar.
pub fn size(_ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::known(DataType::Int64, vec![])])
}

/// Expand: the input broadcast with the target shape.
pub fn expand(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let out = match (ctx.shape(0), shape_operand(ctx, 1)) {
        (Some(s), Some(t)) => Some(dims::broadcast(&[s, &t])?),
        _ => None,
    };
    Some(vec![Ty::tensor(elem, out)])
}

/// ConstantOfShape: the element type of `value` (float by default), the given shape.
pub fn constant_of_shape(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = match ctx.attr("value") {
        Some(AttrValue::Tensor(t)) => t.dtype(),
        Some(_) => return None,
        None => DataType::Float,
    };
    let out = shape_operand(ctx, 0);
    if let Some(d) = &out {
        if d.iter().any(|d| matches!(d, Dim::Known(n) if *n < 0)) {
            return None;
        }
    }
    Some(vec![Ty::tensor(Some(elem), out)])
}

/// Range: the start's type; the length when start, limit and delta are constants.
pub fn range(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0).or(ctx.elem(1)).or(ctx.elem(2));
    let len = range_len(ctx).map_or(Dim::Unknown, Dim::Known);
    Some(vec![Ty::tensor(elem, Some(vec![len]))])
}

fn range_len(ctx: &Ctx) -> Option<i64> {
    let one = |i: usize| -> Option<f64> {
        let v = ctx.floats(i)?;
        (v.len() == 1).then(|| v[0])
    };
    let (start, limit, delta) = (one(0)?, one(1)?, one(2)?);
    if delta == 0.0 {
        return None;
    }
    let wide = ((limit - start) / delta).ceil().max(0.0);
    if ctx.elem(0) == Some(DataType::Float) {
        // Computed in float32 at run time: use the count only if both precisions agree.
        let narrow = ((limit as f32 - start as f32) / delta as f32)
            .ceil()
            .max(0.0);
        if narrow as f64 != wide {
            return None;
        }
    } else if !ctx.elem(0).is_some_and(super::ctx::is_integer)
        && ctx.elem(0) != Some(DataType::Double)
    {
        return None;
    }
    (wide < (1u64 << 40) as f64).then_some(wide as i64)
}

/// Det: the batch dims (all but the last two).
pub fn det(ctx: &Ctx) -> Option<Vec<Ty>> {
    let out = match ctx.shape(0) {
        Some(s) if s.len() >= 2 => Some(s[..s.len() - 2].to_vec()),
        Some(_) => return None,
        None => None,
    };
    Some(vec![Ty::tensor(ctx.elem(0), out)])
}

/// DepthToSpace: `[N, C/b², H·b, W·b]`.
pub fn depth_to_space(ctx: &Ctx) -> Option<Vec<Ty>> {
    let b = ctx.attr_int("blocksize")?;
    let s = ctx.shape(0);
    let out = s.and_then(|s| match s {
        [n, c, h, w] => Some(vec![
            n.clone(),
            match (dims::known(c), b.checked_mul(b)) {
                (Some(c), Some(bb)) if b > 0 && c % bb == 0 => Dim::Known(c / bb),
                _ => Dim::Unknown,
            },
            dims::scale(h, b),
            dims::scale(w, b),
        ]),
        _ => None,
    });
    Some(vec![Ty::tensor(ctx.elem(0), out)])
}

/// SpaceToDepth: `[N, C·b², H/b, W/b]`.
pub fn space_to_depth(ctx: &Ctx) -> Option<Vec<Ty>> {
    let b = ctx.attr_int("blocksize")?;
    let div = |d: &Dim| match d {
        Dim::Known(x) if b > 0 && x % b == 0 => Dim::Known(x / b),
        _ => Dim::Unknown,
    };
    let out = ctx.shape(0).and_then(|s| match s {
        [n, c, h, w] => Some(vec![
            n.clone(),
            dims::scale(c, b.checked_mul(b)?),
            div(h),
            div(w),
        ]),
        _ => None,
    });
    Some(vec![Ty::tensor(ctx.elem(0), out)])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::tensor::{DataType, Tensor};

    #[test]
    fn reshape_copies_zero_and_solves_minus_one_with_names() {
        let (m, _) = run_one(
            13,
            "Reshape",
            &[f32_in(&["batch", "seq", "768"]), ints_in(&[0, 0, 12, -1])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[batch,seq,12,64]");
        let (m, _) = run_one(
            13,
            "Reshape",
            &[
                f32_in(&["batch", "seq", "12", "64"]),
                ints_in(&[0, -1, 768]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[batch,seq,768]");
        let (m, _) = run_one(
            13,
            "Reshape",
            &[f32_in(&["batch", "?", "768"]), ints_in(&[-1, 768])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[?,768]");
        let (m, _) = run_one(
            14,
            "Reshape",
            &[f32_in(&["0", "4"]), ints_in(&[0, 4])],
            &[("allowzero", int(1))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[0,4]");
        let (m, _) = run_one(
            13,
            "Reshape",
            &[f32_in(&["2", "6"]), typed_in(DataType::Int64, &["3"])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[?,?,?]");
    }

    #[test]
    fn squeeze_and_unsqueeze_attr_and_input_forms() {
        let (m, _) = run_one(
            11,
            "Squeeze",
            &[f32_in(&["1", "n", "1"])],
            &[("axes", ints(&[0, -1]))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n]");
        let (m, _) = run_one(
            13,
            "Squeeze",
            &[f32_in(&["1", "n", "1"]), ints_in(&[0])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n,1]");
        let (m, _) = run_one(13, "Squeeze", &[f32_in(&["1", "n"])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32", "a named dim may be 1");
        let (m, _) = run_one(13, "Squeeze", &[f32_in(&["1", "3", "1"])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32[3]");
        let (m, _) = run_one(
            11,
            "Unsqueeze",
            &[f32_in(&["n", "3"])],
            &[("axes", ints(&[0, -1]))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,n,3,1]");
        let (m, _) = run_one(13, "Unsqueeze", &[f32_in(&["n"]), ints_in(&[1])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32[n,1]");
    }

    #[test]
    fn flatten_transpose_shape_expand() {
        let (m, _) = run_one(13, "Flatten", &[f32_in(&["n", "3", "4", "5"])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32[n,60]");
        let (m, _) = run_one(
            13,
            "Flatten",
            &[f32_in(&["n", "3"])],
            &[("axis", int(0))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,?]");
        let (m, _) = run_one(
            13,
            "Transpose",
            &[f32_in(&["a", "b", "3"])],
            &[("perm", ints(&[0, 2, 1]))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[a,3,b]");
        let (m, _) = run_one(13, "Transpose", &[f32_in(&["a", "b", "3"])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32[3,b,a]");
        let (m, _) = run_one(
            15,
            "Shape",
            &[f32_in(&["a", "b", "3"])],
            &[("start", int(-2))],
            1,
        );
        assert_eq!(out_type(&m, 0), "int64[2]");
        let (m, _) = run_one(
            13,
            "Expand",
            &[f32_in(&["1", "n"]), ints_in(&[4, 1, 1])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[4,1,n]");
    }

    #[test]
    fn constant_of_shape_and_range() {
        let (m, _) = run_one(
            13,
            "ConstantOfShape",
            &[ints_in(&[2, 3])],
            &[(
                "value",
                crate::ir::AttrValue::Tensor(Tensor::from_vec(vec![1], vec![1i64]).unwrap()),
            )],
            1,
        );
        assert_eq!(out_type(&m, 0), "int64[2,3]");
        let (m, _) = run_one(
            13,
            "Range",
            &[
                In::Const(Tensor::scalar(0i64)),
                In::Const(Tensor::scalar(10i64)),
                In::Const(Tensor::scalar(3i64)),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "int64[4]");
        let (m, _) = run_one(
            13,
            "Range",
            &[
                In::Const(Tensor::scalar(1.0f32)),
                typed_in(DataType::Float, &[]),
                In::Const(Tensor::scalar(1.0f32)),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[?]");
    }
}
