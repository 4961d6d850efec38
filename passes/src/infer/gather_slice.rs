//! Indexing and joining: Gather*, Slice, Split, Concat, Tile, Pad, TopK, NonZero, OneHot,
//! Compress, Unique.

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::{Ctx, Param};
use super::dims;
use super::ty::Ty;

/// A slice end at or past this is taken as "to the end" for a dim of unknown size.
const TO_THE_END: i64 = i32::MAX as i64;

/// Gather: `data[:axis] + indices.shape + data[axis+1:]`.
pub fn gather(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let out = match (ctx.shape(0), ctx.shape(1)) {
        (Some(d), Some(i)) => {
            let a = dims::axis(ctx.attr_int_or("axis", 0), d.len())?;
            let mut out = d[..a].to_vec();
            out.extend_from_slice(i);
            out.extend_from_slice(&d[a + 1..]);
            Some(out)
        }
        _ => None,
    };
    Some(vec![Ty::tensor(elem, out)])
}

/// GatherElements: the indices' shape, the data's type.
pub fn gather_elements(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        ctx.elem(0),
        ctx.shape(1).map(<[Dim]>::to_vec),
    )])
}

/// GatherND: `indices.shape[:-1] + data.shape[batch_dims + k:]` with `k` the last index dim.
pub fn gather_nd(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let b = usize::try_from(ctx.attr_int_or("batch_dims", 0)).ok()?;
    let out = match (ctx.shape(0), ctx.shape(1)) {
        (Some(d), Some([lead @ .., Dim::Known(k)])) => {
            let start = b.checked_add(usize::try_from(*k).ok()?)?;
            let tail = d.get(start..)?;
            let mut out = lead.to_vec();
            out.extend_from_slice(tail);
            Some(out)
        }
        _ => None,
    };
    Some(vec![Ty::tensor(elem, out)])
}

/// The length of `dim[start:end:step]` (ONNX Slice clamping).
pub fn slice_len(dim: &Dim, start: i64, end: i64, step: i64) -> Dim {
    if step == 0 {
        return Dim::Unknown;
    }
    let Dim::Known(n) = dim else {
        // The whole axis, forwards or backwards, whatever its size.
        let whole = (step == 1 && start == 0 && end >= TO_THE_END)
            || (step == -1 && start >= TO_THE_END && end <= -TO_THE_END);
        return if whole { dim.clone() } else { Dim::Unknown };
    };
    // In i128: starts, ends and steps are the model's and may be near the i64 limits.
    let (n, start, end, step) = (*n as i128, start as i128, end as i128, step as i128);
    let norm = |v: i128| if v < 0 { v + n } else { v };
    let (s, e) = (norm(start), norm(end));
    let len = if step > 0 {
        let (s, e) = (s.clamp(0, n), e.clamp(0, n));
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else {
        let (s, e) = (s.clamp(0, n - 1), e.clamp(-1, n - 1));
        if s > e {
            (s - e - step - 1) / (-step)
        } else {
            0
        }
    };
    Dim::Known(len as i64)
}

/// Slice: attributes before opset 10, inputs from it on.
pub fn slice(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let Some(shape) = ctx.shape(0) else {
        return Some(vec![Ty::tensor(elem, None)]);
    };
    let rank = shape.len();
    let (starts, ends, axes, steps) = if ctx.opset >= 10 {
        (
            ctx.param("", 1, 0),
            ctx.param("", 2, 0),
            ctx.param("", 3, 0),
            ctx.param("", 4, 0),
        )
    } else {
        (
            ctx.param("starts", 0, i64::MAX),
            ctx.param("ends", 0, i64::MAX),
            ctx.param("axes", 0, i64::MAX),
            Param::Absent,
        )
    };
    // Which axes are sliced, if known.
    let n_given = match (&starts, &ends) {
        (Param::Known(s), _) | (_, Param::Known(s)) => Some(s.len()),
        _ if ctx.opset >= 10 => match ctx.shape(1) {
            Some([d]) => dims::small_len(d),
            _ => None,
        },
        _ => None,
    };
    let axes: Option<Vec<i64>> = match axes {
        Param::Known(a) => Some(a),
        Param::Absent => n_given.map(|k| (0..k as i64).collect()),
        Param::Unknown => None,
    };
    let Some(axes) = axes else {
        return Some(vec![Ty::tensor(elem, Some(vec![Dim::Unknown; rank]))]);
    };
    let mut out = shape.to_vec();
    let idx: Vec<usize> = axes
        .iter()
        .map(|&a| dims::axis(a, rank))
        .collect::<Option<Vec<usize>>>()?;
    match (starts, ends) {
        (Param::Known(s), Param::Known(e)) => {
            let st = match steps {
                Param::Known(st) => st,
                Param::Absent => vec![1; s.len()],
                Param::Unknown => {
                    for &a in &idx {
                        out[a] = Dim::Unknown;
                    }
                    return Some(vec![Ty::tensor(elem, Some(out))]);
                }
            };
            if s.len() != idx.len() || e.len() != idx.len() || st.len() != idx.len() {
                return None;
            }
            for (k, &a) in idx.iter().enumerate() {
                out[a] = slice_len(&shape[a], s[k], e[k], st[k]);
            }
        }
        _ => {
            for &a in &idx {
                out[a] = Dim::Unknown;
            }
        }
    }
    Some(vec![Ty::tensor(elem, Some(out))])
}

/// Split: sizes from `split` (attribute before 13, input from it on), else equal parts
/// (opset 18 `num_outputs`: the last part may be smaller).
pub fn split(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let n = ctx.n_outputs();
    let Some(shape) = ctx.shape(0) else {
        return Some(vec![Ty::tensor(elem, None); n]);
    };
    let a = dims::axis(ctx.attr_int_or("axis", 0), shape.len())?;
    let sizes: Vec<Dim> = match ctx.param("split", 1, 13) {
        Param::Known(s) if s.len() == n => s.into_iter().map(Dim::Known).collect(),
        Param::Known(_) => return None,
        Param::Unknown => vec![Dim::Unknown; n],
        Param::Absent => match &shape[a] {
            Dim::Known(d) if n > 0 => {
                let n64 = n as i64;
                if ctx.opset >= 18 && ctx.attr("num_outputs").is_some() {
                    let chunk = d.saturating_add(n64 - 1) / n64;
                    let last = d - chunk.saturating_mul(n64 - 1);
                    if last < 0 {
                        return None;
                    }
                    let mut v = vec![Dim::Known(chunk); n - 1];
                    v.push(Dim::Known(last));
                    v
                } else if d % n64 == 0 {
                    vec![Dim::Known(d / n64); n]
                } else {
                    return None;
                }
            }
            _ => vec![Dim::Unknown; n],
        },
    };
    Some(
        sizes
            .into_iter()
            .map(|s| {
                let mut out = shape.to_vec();
                out[a] = s;
                Ty::tensor(elem, Some(out))
            })
            .collect(),
    )
}

/// Concat: the sum along `axis`, the other dims unified across inputs.
pub fn concat(ctx: &Ctx) -> Option<Vec<Ty>> {
    let present: Vec<usize> = (0..ctx.n_inputs()).filter(|&i| ctx.has(i)).collect();
    let elem = present.iter().find_map(|&i| ctx.elem(i));
    let shapes: Vec<Option<&[Dim]>> = present.iter().map(|&i| ctx.shape(i)).collect();
    let Some(rank) = shapes.iter().flatten().map(|s| s.len()).next() else {
        return Some(vec![Ty::tensor(elem, None)]);
    };
    if shapes.iter().flatten().any(|s| s.len() != rank) {
        return None;
    }
    let a = dims::axis(ctx.attr_int("axis")?, rank)?;
    let mut out = vec![Dim::Unknown; rank];
    for s in shapes.iter().flatten() {
        for (i, d) in s.iter().enumerate() {
            if i != a {
                out[i] = dims::unify(&out[i], d);
            }
        }
    }
    let mut total = Some(0i64);
    for s in &shapes {
        total = match (total, s.map(|s| &s[a])) {
            (Some(t), Some(Dim::Known(n))) => t.checked_add(*n),
            _ => None,
        };
    }
    out[a] = match total {
        Some(t) => Dim::Known(t),
        // One input carrying the whole axis, the others empty along it.
        None => {
            let nonzero: Vec<&Dim> = shapes
                .iter()
                .filter_map(|s| s.map(|s| &s[a]))
                .filter(|d| **d != Dim::Known(0))
                .collect();
            match (nonzero.as_slice(), shapes.iter().all(Option::is_some)) {
                ([d], true) => (*d).clone(),
                _ => Dim::Unknown,
            }
        }
    };
    Some(vec![Ty::tensor(elem, Some(out))])
}

/// Tile: each dim times its repeat.
pub fn tile(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let out = ctx.shape(0).and_then(|s| match ctx.ints(1) {
        Some(r) if r.len() == s.len() => {
            Some(s.iter().zip(&r).map(|(d, &k)| dims::scale(d, k)).collect())
        }
        Some(_) => None,
        None => Some(vec![Dim::Unknown; s.len()]),
    });
    Some(vec![Ty::tensor(elem, out)])
}

/// Pad: each dim plus its begin and end pads (`pads` attribute before 11, input from it
/// on; opset 18 `axes` input).
pub fn pad(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let Some(shape) = ctx.shape(0) else {
        return Some(vec![Ty::tensor(elem, None)]);
    };
    let rank = shape.len();
    let pads = if ctx.opset >= 11 {
        ctx.param("", 1, 0)
    } else {
        match ctx.attr_ints("pads").or(ctx.attr_ints("paddings")) {
            Some(p) => Param::Known(p.to_vec()),
            None => Param::Unknown,
        }
    };
    let axes: Option<Vec<usize>> = if ctx.opset >= 18 && ctx.has(3) {
        ctx.ints(3).and_then(|a| {
            a.iter()
                .map(|&x| dims::axis(x, rank))
                .collect::<Option<Vec<usize>>>()
        })
    } else {
        Some((0..rank).collect())
    };
    let mut out = shape.to_vec();
    match (pads, axes) {
        (Param::Known(p), Some(axes)) => {
            if p.len() != 2 * axes.len() {
                return None;
            }
            let k = axes.len();
            for (j, &a) in axes.iter().enumerate() {
                let d = dims::add(&shape[a], p[j].checked_add(p[j + k])?);
                if matches!(d, Dim::Known(n) if n < 0) {
                    return None;
                }
                out[a] = d;
            }
        }
        (_, Some(axes)) => {
            for a in axes {
                out[a] = Dim::Unknown;
            }
        }
        (_, None) => out = vec![Dim::Unknown; rank],
    }
    Some(vec![Ty::tensor(elem, Some(out))])
}

/// TopK: values and int64 indices, `k` along `axis`.
pub fn top_k(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let k = if ctx.opset >= 10 {
        ctx.ints(1).and_then(|v| (v.len() == 1).then(|| v[0]))
    } else {
        ctx.attr_int("k")
    };
    let out = match ctx.shape(0) {
        Some(s) => {
            let a = dims::axis(ctx.attr_int_or("axis", -1), s.len())?;
            let mut o = s.to_vec();
            o[a] = k.map_or(Dim::Unknown, Dim::Known);
            Some(o)
        }
        None => None,
    };
    Some(vec![
        Ty::tensor(elem, out.clone()),
        Ty::tensor(Some(DataType::Int64), out),
    ])
}

/// NonZero: int64 `[rank, ?]`.
pub fn non_zero(ctx: &Ctx) -> Option<Vec<Ty>> {
    let rank = ctx.rank(0).map_or(Dim::Unknown, |r| Dim::Known(r as i64));
    Some(vec![Ty::known(DataType::Int64, vec![rank, Dim::Unknown])])
}

/// OneHot: the values' type; the indices' shape with `depth` inserted at `axis`.
pub fn one_hot(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(2);
    let depth = ctx
        .floats(1)
        .and_then(|v| (v.len() == 1 && v[0] >= 1.0).then(|| Dim::Known(v[0] as i64)))
        .unwrap_or(Dim::Unknown);
    let out = match ctx.shape(0) {
        Some(s) => {
            let a = dims::axis(ctx.attr_int_or("axis", -1), s.len() + 1)?;
            let mut o = s.to_vec();
            o.insert(a, depth);
            Some(o)
        }
        None => None,
    };
    Some(vec![Ty::tensor(elem, out)])
}

/// The input's shape with `axis` (if given) unknown, else a 1-D unknown length.
fn data_dependent(ctx: &Ctx) -> Option<Option<Vec<Dim>>> {
    Some(match ctx.attr_int("axis") {
        Some(a) => match ctx.shape(0) {
            Some(s) => {
                let a = dims::axis(a, s.len())?;
                let mut o = s.to_vec();
                o[a] = Dim::Unknown;
                Some(o)
            }
            None => None,
        },
        None => Some(vec![Dim::Unknown]),
    })
}

/// Compress: the input's type, the selected axis of unknown length.
pub fn compress(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(ctx.elem(0), data_dependent(ctx)?)])
}

/// Unique: the values, then int64 indices, inverse indices and counts.
pub fn unique(ctx: &Ctx) -> Option<Vec<Ty>> {
    let idx = Ty::known(DataType::Int64, vec![Dim::Unknown]);
    Some(vec![
        Ty::tensor(ctx.elem(0), data_dependent(ctx)?),
        idx.clone(),
        idx.clone(),
        idx,
    ])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn slice_clamps_negative_and_overflowing_ends() {
        let k = Dim::Known;
        assert_eq!(slice_len(&k(10), 2, i64::MAX, 1), k(8));
        assert_eq!(slice_len(&k(10), -3, -1, 1), k(2));
        assert_eq!(slice_len(&k(10), 0, -100, 1), k(0));
        assert_eq!(slice_len(&k(10), -1, i64::MIN, -1), k(10));
        assert_eq!(slice_len(&k(10), 9, 0, -2), k(5));
        assert_eq!(slice_len(&k(10), 0, 10, 3), k(4));
        assert_eq!(slice_len(&k(10), 20, 30, 1), k(0));
        let n = Dim::Symbolic("n".into());
        assert_eq!(slice_len(&n, 0, i64::MAX, 1), n);
        assert_eq!(slice_len(&n, 1, i64::MAX, 1), Dim::Unknown);
    }

    #[test]
    fn slice_input_and_attribute_forms() {
        let (m, _) = run_one(
            13,
            "Slice",
            &[
                f32_in(&["n", "10", "8"]),
                ints_in(&[-3, 1]),
                ints_in(&[i64::MAX, 100]),
                ints_in(&[1, 2]),
                ints_in(&[1, 2]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n,3,4]");
        let (m, _) = run_one(
            9,
            "Slice",
            &[f32_in(&["4", "10"])],
            &[
                ("starts", ints(&[1])),
                ("ends", ints(&[-1])),
                ("axes", ints(&[1])),
            ],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[4,8]");
        let (m, _) = run_one(
            13,
            "Slice",
            &[
                f32_in(&["4", "10"]),
                typed_in(DataType::Int64, &["1"]),
                ints_in(&[5]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[?,10]");
    }

    #[test]
    fn gather_with_scalar_and_vector_indices() {
        let (m, _) = run_one(
            13,
            "Gather",
            &[f32_in(&["b", "s", "768"]), In::Const(Tensor::scalar(0i64))],
            &[("axis", int(1))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,768]");
        let (m, _) = run_one(
            13,
            "Gather",
            &[
                f32_in(&["30522", "768"]),
                typed_in(DataType::Int64, &["b", "s"]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,s,768]");
    }

    #[test]
    fn split_concat_pad_tile_topk() {
        let (m, _) = run_one(13, "Split", &[f32_in(&["b", "9"])], &[("axis", int(1))], 3);
        assert_eq!(out_type(&m, 2), "float32[b,3]");
        let (m, _) = run_one(
            11,
            "Split",
            &[f32_in(&["b", "9"])],
            &[("axis", int(1)), ("split", ints(&[2, 7]))],
            2,
        );
        assert_eq!(out_type(&m, 1), "float32[b,7]");
        let (m, _) = run_one(
            18,
            "Split",
            &[f32_in(&["10"])],
            &[("num_outputs", int(3))],
            3,
        );
        assert_eq!(out_type(&m, 0), "float32[4]");
        assert_eq!(out_type(&m, 2), "float32[2]");
        let (m, _) = run_one(
            13,
            "Concat",
            &[f32_in(&["b", "2"]), f32_in(&["?", "3"])],
            &[("axis", int(-1))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,5]");
        let (m, _) = run_one(
            13,
            "Pad",
            &[f32_in(&["n", "3", "4"]), ints_in(&[0, 1, 2, 0, 1, 2])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n,5,8]");
        let (m, _) = run_one(2, "Pad", &[f32_in(&["3"])], &[("pads", ints(&[1, 1]))], 1);
        assert_eq!(out_type(&m, 0), "float32[5]");
        let (m, _) = run_one(13, "Tile", &[f32_in(&["n", "3"]), ints_in(&[1, 2])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32[n,6]");
        let (m, _) = run_one(13, "TopK", &[f32_in(&["n", "30"]), ints_in(&[5])], &[], 2);
        assert_eq!(out_type(&m, 0), "float32[n,5]");
        assert_eq!(out_type(&m, 1), "int64[n,5]");
    }
}
