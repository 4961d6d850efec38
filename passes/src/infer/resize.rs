//! Resize and Upsample: output dims from constant sizes or scales.

use crate::ir::Dim;

use super::ctx::Ctx;
use super::dims;
use super::ty::Ty;

/// Resize (opset 10: `X, scales`; 11+: `X, roi, scales, sizes`; 18+: `axes`) and Upsample
/// (attribute `scales` before 9, input after).
pub fn resize(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let Some(shape) = ctx.shape(0) else {
        return Some(vec![Ty::tensor(elem, None)]);
    };
    let rank = shape.len();
    let upsample = ctx.node.op_type() == "Upsample";
    let (scales_slot, sizes_slot) = if upsample || ctx.opset < 11 {
        (1, None)
    } else {
        (2, Some(3))
    };
    let axes: Vec<usize> = match ctx.attr_ints("axes") {
        Some(a) if ctx.opset >= 18 && !upsample => a
            .iter()
            .map(|&x| dims::axis(x, rank))
            .collect::<Option<Vec<usize>>>()?,
        _ => (0..rank).collect(),
    };
    let stretch = ctx
        .attr_str("keep_aspect_ratio_policy")
        .unwrap_or("stretch")
        == "stretch";
    let mut out = shape.to_vec();
    let sizes = sizes_slot.filter(|&s| ctx.has(s)).map(|s| ctx.ints(s));
    let scales: Option<Option<Vec<f64>>> = if upsample && ctx.opset < 9 {
        Some(
            ctx.attr_floats("scales")
                .map(|v| v.iter().map(|&x| x as f64).collect()),
        )
    } else if ctx.has(scales_slot) {
        Some(ctx.floats(scales_slot))
    } else {
        None
    };
    let given_sizes =
        matches!(&sizes, Some(Some(v)) if !v.is_empty()) || matches!(sizes, Some(None));
    if given_sizes {
        match sizes.flatten() {
            Some(v) if v.len() == axes.len() && stretch => {
                for (&a, &n) in axes.iter().zip(&v) {
                    if n < 0 {
                        return None;
                    }
                    out[a] = Dim::Known(n);
                }
            }
            _ => axes.iter().for_each(|&a| out[a] = Dim::Unknown),
        }
    } else {
        match scales.flatten() {
            Some(v) if v.len() == axes.len() => {
                for (&a, &s) in axes.iter().zip(&v) {
                    out[a] = scaled(&shape[a], s);
                }
            }
            _ => axes.iter().for_each(|&a| out[a] = Dim::Unknown),
        }
    }
    Some(vec![Ty::tensor(elem, Some(out))])
}

/// `floor(d · s)`, when float32 and float64 arithmetic agree (runtimes use either).
fn scaled(d: &Dim, s: f64) -> Dim {
    if s == 1.0 {
        return d.clone();
    }
    let Dim::Known(n) = d else {
        return Dim::Unknown;
    };
    let wide = (*n as f64 * s).floor();
    let narrow = (*n as f32 * s as f32).floor() as f64;
    if wide != narrow || !(0.0..(1u64 << 40) as f64).contains(&wide) {
        return Dim::Unknown;
    }
    Dim::Known(wide as i64)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::tensor::Tensor;

    #[test]
    fn resize_by_scales_and_sizes() {
        let scales = In::Const(Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 2.0, 2.0]).unwrap());
        let (m, _) = run_one(
            13,
            "Resize",
            &[f32_in(&["n", "3", "8", "9"]), In::Absent, scales],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n,3,16,18]");
        let (m, _) = run_one(
            13,
            "Resize",
            &[
                f32_in(&["n", "3", "8", "9"]),
                In::Absent,
                In::Absent,
                ints_in(&[1, 3, 5, 5]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,3,5,5]");
        let scales = In::Const(Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 2.0, 2.0]).unwrap());
        let (m, _) = run_one(
            9,
            "Upsample",
            &[f32_in(&["1", "3", "4", "h"]), scales],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,3,8,?]");
    }
}
