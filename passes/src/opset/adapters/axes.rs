//! Attributes that became int64 inputs: `axes` of Squeeze/Unsqueeze/ReduceSum (13) and the
//! other Reduce ops (18), Slice's starts/ends/axes (10), TopK's k (10), Split's `split` (13)
//! and `num_outputs` (18), DFT's `axis` (20).

use crate::ir::{AttrValue, NodeIndex, ValueRef};
use crate::opset::rewrite::Cx;
use crate::pipeline::PassError;
use crate::tensor::Tensor;

/// `axes` attribute → input 1 (absent attribute: absent input, which keeps "all axes" for
/// Squeeze and the Reduce ops).
pub(crate) fn axes_to_input(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let Some(axes) = cx.take_ints(node, "axes")? else {
        if cx.g[node].op_type() == "Unsqueeze" {
            return Err(cx.unsupported(node, step, "Unsqueeze has no 'axes'"));
        }
        return Ok(());
    };
    if cx.g.input(node, 1).is_some() {
        return Err(cx.unsupported(node, step, "it has both an 'axes' attribute and input"));
    }
    // An empty list meant "all axes" for the Reduce ops, as an absent input does now.
    if axes.is_empty() && cx.g[node].op_type() != "Unsqueeze" {
        return Ok(());
    }
    let v = cx.ints(node, "axes", &axes)?;
    cx.g.connect(v, node, 1);
    Ok(())
}

/// Slice-1 → 10: `starts`, `ends`, `axes` attributes → inputs 1–3.
pub(crate) fn slice_10(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let starts = cx.take_ints(node, "starts")?;
    let ends = cx.take_ints(node, "ends")?;
    let axes = cx.take_ints(node, "axes")?;
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return Err(cx.unsupported(node, step, "Slice-1 needs 'starts' and 'ends'"));
    };
    let s = cx.ints(node, "starts", &starts)?;
    let e = cx.ints(node, "ends", &ends)?;
    cx.g.connect(s, node, 1);
    cx.g.connect(e, node, 2);
    if let Some(axes) = axes {
        let a = cx.ints(node, "axes", &axes)?;
        cx.g.connect(a, node, 3);
    }
    Ok(())
}

/// TopK-1 → 10: `k` attribute → input `K` (1-D, one element).
pub(crate) fn topk_10(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let Some(k) = cx.take_int(node, "k")? else {
        return Err(cx.unsupported(node, step, "TopK-1 needs 'k'"));
    };
    let v = cx.ints(node, "k", &[k])?;
    cx.g.connect(v, node, 1);
    Ok(())
}

/// Split-11 → 13: `split` attribute → input 1.
pub(crate) fn split_13(cx: &mut Cx<'_>, node: NodeIndex, _step: i64) -> Result<(), PassError> {
    if let Some(split) = cx.take_ints(node, "split")? {
        let v = cx.ints(node, "split", &split)?;
        cx.g.connect(v, node, 1);
    }
    Ok(())
}

/// Split-13 → 18: an equal split must now say how many parts (`num_outputs`).
pub(crate) fn split_18(cx: &mut Cx<'_>, node: NodeIndex, _step: i64) -> Result<(), PassError> {
    if cx.g.input(node, 1).is_none() && cx.g[node].attr("num_outputs").is_none() {
        let n = cx.g[node].outputs.len() as i64;
        cx.set_attr(node, "num_outputs", AttrValue::Int(n));
    }
    Ok(())
}

/// DFT-17 → 20: `axis` attribute (default 1) → input 2; the new input defaults to -2, so it
/// is always written.
pub(crate) fn dft_20(cx: &mut Cx<'_>, node: NodeIndex, _step: i64) -> Result<(), PassError> {
    let axis = cx.take_int(node, "axis")?.unwrap_or(1);
    let v: ValueRef = cx.constant(node, "axis", Tensor::scalar(axis));
    cx.g.connect(v, node, 2);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::opset::adapters::testing::*;

    #[test]
    fn squeeze_unsqueeze_and_reducesum_move_axes_at_13() {
        let mut m = model(11);
        let x = input(&mut m, "x", &[1, 3, 1]);
        let g = &mut m.graph;
        let sq = op(
            g,
            "Squeeze",
            "sq",
            &[Some(x)],
            1,
            vec![("axes", ints(&[0, 2]))],
        );
        let all = op(g, "Squeeze", "all", &[Some(x)], 1, vec![]);
        let un = op(
            g,
            "Unsqueeze",
            "un",
            &[Some(out(sq, 0))],
            1,
            vec![("axes", ints(&[1]))],
        );
        let rs = op(
            g,
            "ReduceSum",
            "rs",
            &[Some(x)],
            1,
            vec![("axes", ints(&[1]))],
        );
        let rm = op(
            g,
            "ReduceMean",
            "rm",
            &[Some(x)],
            1,
            vec![("axes", ints(&[1]))],
        );
        for n in [un, all, rs, rm] {
            output(g, out(n, 0));
        }
        upgrade(&mut m, 13);
        let g = &m.graph;
        assert_eq!(const_ints(g, sq, 1), vec![0, 2]);
        assert_eq!(g.value_name(g.input(sq, 1).unwrap()), "sq_axes");
        assert!(g[sq].attr("axes").is_none());
        assert!(g.input(all, 1).is_none());
        assert_eq!(const_ints(g, un, 1), vec![1]);
        assert_eq!(const_ints(g, rs, 1), vec![1]);
        // ReduceMean moves only at 18.
        assert!(g[rm].attr("axes").is_some());
        assert!(g.input(rm, 1).is_none());
    }

    #[test]
    fn reduce_ops_move_axes_at_18_and_keep_reduce_all() {
        let mut m = model(13);
        let x = input(&mut m, "x", &[2, 3]);
        let g = &mut m.graph;
        let rm = op(
            g,
            "ReduceMean",
            "rm",
            &[Some(x)],
            1,
            vec![("axes", ints(&[-1]))],
        );
        let rmax = op(
            g,
            "ReduceMax",
            "rmax",
            &[Some(x)],
            1,
            vec![("keepdims", AttrValue::Int(0))],
        );
        let rl2 = op(
            g,
            "ReduceL2",
            "rl2",
            &[Some(x)],
            1,
            vec![("axes", ints(&[]))],
        );
        for n in [rm, rmax, rl2] {
            output(g, out(n, 0));
        }
        upgrade(&mut m, 18);
        let g = &m.graph;
        assert_eq!(const_ints(g, rm, 1), vec![-1]);
        assert!(g.input(rmax, 1).is_none());
        assert_eq!(g[rmax].attr("keepdims"), Some(&AttrValue::Int(0)));
        assert!(g.input(rl2, 1).is_none());
        assert!(g[rl2].attr("axes").is_none());
    }

    #[test]
    fn slice_and_topk_move_at_10() {
        let mut m = model(9);
        let x = input(&mut m, "x", &[4, 5]);
        let g = &mut m.graph;
        let sl = op(
            g,
            "Slice",
            "sl",
            &[Some(x)],
            1,
            vec![
                ("starts", ints(&[1])),
                ("ends", ints(&[3])),
                ("axes", ints(&[1])),
            ],
        );
        let tk = op(
            g,
            "TopK",
            "tk",
            &[Some(x)],
            2,
            vec![("k", AttrValue::Int(2))],
        );
        output(g, out(sl, 0));
        output(g, out(tk, 0));
        upgrade(&mut m, 10);
        let g = &m.graph;
        assert_eq!(const_ints(g, sl, 1), vec![1]);
        assert_eq!(const_ints(g, sl, 2), vec![3]);
        assert_eq!(const_ints(g, sl, 3), vec![1]);
        assert!(g.input(sl, 4).is_none());
        assert_eq!(const_ints(g, tk, 1), vec![2]);
        assert!(g[tk].attributes.is_empty());
    }

    #[test]
    fn split_moves_at_13_and_counts_outputs_at_18() {
        let mut m = model(11);
        let x = input(&mut m, "x", &[6]);
        let g = &mut m.graph;
        let uneven = op(
            g,
            "Split",
            "uneven",
            &[Some(x)],
            2,
            vec![("split", ints(&[2, 4]))],
        );
        let even = op(g, "Split", "even", &[Some(x)], 3, vec![]);
        output(g, out(uneven, 1));
        output(g, out(even, 2));
        upgrade(&mut m, 18);
        let g = &m.graph;
        assert_eq!(const_ints(g, uneven, 1), vec![2, 4]);
        assert!(g[uneven].attr("num_outputs").is_none());
        assert!(g.input(even, 1).is_none());
        assert_eq!(g[even].attr("num_outputs"), Some(&AttrValue::Int(3)));
    }

    #[test]
    fn slice_without_ends_is_refused() {
        let mut m = model(9);
        let x = input(&mut m, "x", &[4]);
        let sl = op(
            &mut m.graph,
            "Slice",
            "sl",
            &[Some(x)],
            1,
            vec![("starts", ints(&[1]))],
        );
        output(&mut m.graph, out(sl, 0));
        let e = upgrade_err(&mut m, 17);
        assert!(e.contains("'sl' (Slice)"), "{e}");
        // The failed upgrade left the model as it was.
        assert_eq!(m.opset(""), Some(9));
        assert!(m.graph[sl].attr("starts").is_some());
    }

    use crate::ir::AttrValue;
}
