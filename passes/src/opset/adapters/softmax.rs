//! Softmax, LogSoftmax and Hardmax at 13: `axis` used to split the input into a 2-D matrix
//! (`[prod(dims[..axis]), prod(dims[axis..])]`) normalized along its rows; now it names the
//! one axis normalized, default -1.

use crate::ir::{AttrValue, NodeIndex, ValueRef};
use crate::opset::rewrite::Cx;
use crate::pipeline::PassError;

/// Opset-11 softmax → 13. When `axis` is the last axis the meaning is the same (the axis is
/// written out, as the default changed from 1 to -1); otherwise the exact rewrite
/// `Reshape(op(Flatten(x, axis), axis=1), Shape(x))`.
pub(crate) fn softmax_13(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let Some(x) = cx.g.input(node, 0) else {
        return Err(cx.unsupported(node, step, "it has no input"));
    };
    let axis = cx.int_attr(node, "axis").unwrap_or(1);
    let rank = cx.g.value_info(x).shape().map(|s| s.len() as i64);
    let last = axis == -1 || rank.is_some_and(|r| axis == r - 1);
    if last {
        cx.set_attr(node, "axis", AttrValue::Int(axis));
        return Ok(());
    }
    if rank.is_some_and(|r| axis < -r || axis >= r) {
        return Err(cx.unsupported(node, step, &format!("axis {axis} is out of range")));
    }
    let shape = cx.op(node, "Shape", "shape", 1);
    cx.g.connect(x, shape, 0);
    let flatten = cx.op(node, "Flatten", "flatten", 1);
    cx.g[flatten]
        .attributes
        .push(crate::ir::Attribute::new("axis", AttrValue::Int(axis)));
    cx.g.connect(x, flatten, 0);
    let reshape = cx.op(node, "Reshape", "reshape", 1);
    let y = ValueRef::new(node, 0);
    cx.take_over(y, ValueRef::new(reshape, 0));
    cx.g.connect(ValueRef::new(flatten, 0), node, 0);
    cx.set_attr(node, "axis", AttrValue::Int(1));
    cx.g.connect(y, reshape, 0);
    cx.g.connect(ValueRef::new(shape, 0), reshape, 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ir::{AttrValue, Dim, ValueInfo};
    use crate::opset::adapters::testing::*;
    use crate::tensor::DataType;

    #[test]
    fn last_axis_keeps_the_node_and_writes_the_axis() {
        let mut m = model(12);
        let x = input(&mut m, "x", &[2, 5]);
        let g = &mut m.graph;
        let s = op(g, "Softmax", "s", &[Some(x)], 1, vec![]);
        let l = op(
            g,
            "LogSoftmax",
            "l",
            &[Some(x)],
            1,
            vec![("axis", AttrValue::Int(-1))],
        );
        output(g, out(s, 0));
        output(g, out(l, 0));
        let before = m.graph.node_count();
        upgrade(&mut m, 13);
        let g = &m.graph;
        assert_eq!(g.node_count(), before);
        assert_eq!(g[s].attr("axis"), Some(&AttrValue::Int(1)));
        assert_eq!(g[l].attr("axis"), Some(&AttrValue::Int(-1)));
    }

    #[test]
    fn inner_axis_becomes_flatten_softmax_reshape_keeping_the_output_name() {
        let mut m = model(11);
        let x = input(&mut m, "x", &[2, 3, 4]);
        let g = &mut m.graph;
        let s = op(g, "Softmax", "s", &[Some(x)], 1, vec![]);
        g[s].outputs[0] = ValueInfo::tensor(
            "s_out0",
            DataType::Float,
            &[Dim::Known(2), Dim::Known(3), Dim::Known(4)],
        );
        let relu = op(g, "Relu", "relu", &[Some(out(s, 0))], 1, vec![]);
        output(g, out(s, 0));
        output(g, out(relu, 0));
        upgrade(&mut m, 17);
        let g = &m.graph;
        let flat = g.input(s, 0).unwrap().node;
        assert_eq!(g[flat].op_type(), "Flatten");
        assert_eq!(g[flat].attr("axis"), Some(&AttrValue::Int(1)));
        assert_eq!(g.input(flat, 0), Some(x));
        assert_eq!(g[s].attr("axis"), Some(&AttrValue::Int(1)));
        let reshape = g.input(relu, 0).unwrap().node;
        assert_eq!(g[reshape].op_type(), "Reshape");
        assert_eq!(g.input(reshape, 0).unwrap().node, s);
        let shape = g.input(reshape, 1).unwrap().node;
        assert_eq!(g[shape].op_type(), "Shape");
        assert_eq!(g.input(shape, 0), Some(x));
        // The graph output still carries the old name and type, now on the Reshape.
        assert_eq!(g.outputs[0].value.node, reshape);
        assert_eq!(g.value_name(g.outputs[0].value), "s_out0");
        assert!(g.value_info(g.outputs[0].value).ty.is_some());
        assert!(g.value_info(crate::ir::ValueRef::new(s, 0)).ty.is_none());
    }

    #[test]
    fn unknown_rank_takes_the_exact_rewrite() {
        let mut m = model(11);
        let x = untyped_input(&mut m, "x");
        let h = op(
            &mut m.graph,
            "Hardmax",
            "h",
            &[Some(x)],
            1,
            vec![("axis", AttrValue::Int(2))],
        );
        output(&mut m.graph, out(h, 0));
        upgrade(&mut m, 13);
        assert_eq!(ops(&m.graph, "Flatten").len(), 1);
        assert_eq!(m.graph[h].attr("axis"), Some(&AttrValue::Int(1)));
    }
}
