//! Reductions: Reduce* (axes as attribute, or as input from opset 13 for ReduceSum and 18
//! for the others) and ArgMax / ArgMin.

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::{Ctx, Param};
use super::dims;
use super::ty::Ty;

/// The opset from which a Reduce operator takes its axes as an input.
fn axes_input_since(op: &str) -> i64 {
    if op == "ReduceSum" {
        13
    } else {
        18
    }
}

/// The input's shape with `axes` reduced (kept as 1 or dropped).
fn reduced(shape: &[Dim], axes: &[usize], keepdims: bool) -> Vec<Dim> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d.clone()),
            (true, true) => Some(Dim::Known(1)),
            (true, false) => None,
        })
        .collect()
}

/// ReduceMean, ReduceSum, ReduceMax, …: the input's type, reduced shape.
pub fn reduce(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(0);
    let keepdims = ctx.attr_int_or("keepdims", 1) != 0;
    let since = axes_input_since(ctx.node.op_type());
    let noop = ctx.opset >= since && ctx.attr_int_or("noop_with_empty_axes", 0) != 0;
    let Some(shape) = ctx.shape(0) else {
        return Some(vec![Ty::tensor(elem, None)]);
    };
    let out = match ctx.param("axes", 1, since) {
        Param::Known(a) if !a.is_empty() => {
            Some(reduced(shape, &dims::axes(&a, shape.len())?, keepdims))
        }
        Param::Known(_) | Param::Absent if noop => Some(shape.to_vec()),
        Param::Known(_) | Param::Absent => {
            let all: Vec<usize> = (0..shape.len()).collect();
            Some(reduced(shape, &all, keepdims))
        }
        Param::Unknown if keepdims => Some(vec![Dim::Unknown; shape.len()]),
        Param::Unknown => None,
    };
    Some(vec![Ty::tensor(elem, out)])
}

/// ArgMax, ArgMin: int64, `axis` reduced.
pub fn arg_reduce(ctx: &Ctx) -> Option<Vec<Ty>> {
    let keepdims = ctx.attr_int_or("keepdims", 1) != 0;
    let out = match ctx.shape(0) {
        Some(s) => {
            let a = dims::axis(ctx.attr_int_or("axis", 0), s.len())?;
            Some(reduced(s, &[a], keepdims))
        }
        None => None,
    };
    Some(vec![Ty::tensor(Some(DataType::Int64), out)])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn keepdims_both_ways_attr_and_input_axes() {
        let (m, _) = run_one(
            13,
            "ReduceMean",
            &[f32_in(&["b", "s", "768"])],
            &[("axes", ints(&[-1]))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,s,1]");
        let (m, _) = run_one(
            13,
            "ReduceMean",
            &[f32_in(&["b", "s", "768"])],
            &[("axes", ints(&[1])), ("keepdims", int(0))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,768]");
        let (m, _) = run_one(
            18,
            "ReduceMean",
            &[f32_in(&["b", "s", "768"]), ints_in(&[-1])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,s,1]");
        let (m, _) = run_one(
            13,
            "ReduceSum",
            &[f32_in(&["b", "s"]), ints_in(&[0])],
            &[("keepdims", int(0))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[s]");
        let (m, _) = run_one(
            11,
            "ReduceSum",
            &[f32_in(&["b", "s"])],
            &[("keepdims", int(0))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[]");
        let (m, _) = run_one(
            13,
            "ReduceSum",
            &[f32_in(&["b", "s"])],
            &[("noop_with_empty_axes", int(1))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,s]");
        let (m, _) = run_one(
            13,
            "ArgMax",
            &[f32_in(&["b", "s"])],
            &[("axis", int(1)), ("keepdims", int(0))],
            1,
        );
        assert_eq!(out_type(&m, 0), "int64[b]");
    }
}
