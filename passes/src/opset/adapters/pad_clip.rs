//! Attributes that became inputs typed like the data: Pad's `pads`/`value` (11), Clip's
//! `min`/`max` (11), Dropout's `ratio` (12); and Dropout's mask becoming bool (10).

use crate::ir::{NodeIndex, ValueRef};
use crate::opset::rewrite::Cx;
use crate::pipeline::PassError;
use crate::tensor::Tensor;

/// Pad-2 → 11: `pads` → input 1 (int64), `value` → input 2 (the data's type; omitted when 0,
/// the default, or when the mode is not `constant`).
pub(crate) fn pad_11(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let Some(data) = cx.g.input(node, 0) else {
        return Err(cx.unsupported(node, step, "Pad has no data input"));
    };
    let Some(pads) = cx.take_ints(node, "pads")? else {
        return Err(cx.unsupported(node, step, "Pad-2 needs 'pads'"));
    };
    let value = cx.take_float(node, "value")?.unwrap_or(0.0);
    let mode = cx
        .str_attr(node, "mode")
        .unwrap_or_else(|| "constant".into());
    let p = cx.ints(node, "pads", &pads)?;
    cx.g.connect(p, node, 1);
    if mode == "constant" && value != 0.0 {
        let v = cx.scalar_like(node, "value", f64::from(value), data, step)?;
        cx.g.connect(v, node, 2);
    }
    Ok(())
}

/// Clip-6 → 11: `min`/`max` → inputs 1/2 of the data's type (absent ones stay absent: ±∞).
pub(crate) fn clip_11(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let Some(data) = cx.g.input(node, 0) else {
        return Err(cx.unsupported(node, step, "Clip has no input"));
    };
    let min = cx.take_float(node, "min")?;
    let max = cx.take_float(node, "max")?;
    // Clip-6's defaults are ∓FLT_MAX, which is what an absent bound means now.
    let bound = |v: Option<f32>| v.filter(|v| v.abs() < f32::MAX);
    if let Some(min) = bound(min) {
        let v = cx.scalar_like(node, "min", f64::from(min), data, step)?;
        cx.g.connect(v, node, 1);
    }
    if let Some(max) = bound(max) {
        let v = cx.scalar_like(node, "max", f64::from(max), data, step)?;
        cx.g.connect(v, node, 2);
    }
    Ok(())
}

/// Dropout-7 → 10: the mask output became bool; a model reading the old (data-typed) mask
/// would need a Cast, which inference models never need, so that is refused.
pub(crate) fn dropout_10(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    if cx.g[node].outputs.len() > 1 && cx.is_used(ValueRef::new(node, 1)) {
        return Err(cx.unsupported(node, step, "its mask output is read (it becomes bool)"));
    }
    Ok(())
}

/// Dropout-10 → 12: `ratio` → input 1 (a float scalar).
pub(crate) fn dropout_12(cx: &mut Cx<'_>, node: NodeIndex, _step: i64) -> Result<(), PassError> {
    if let Some(ratio) = cx.take_float(node, "ratio")? {
        let v = cx.constant(node, "ratio", Tensor::scalar(ratio));
        cx.g.connect(v, node, 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ir::AttrValue;
    use crate::opset::adapters::testing::*;
    use crate::tensor::DataType;

    #[test]
    fn pad_moves_pads_and_a_typed_value() {
        let mut m = model(10);
        let x = input(&mut m, "x", &[2, 2]);
        let g = &mut m.graph;
        let zero = op(
            g,
            "Pad",
            "zero",
            &[Some(x)],
            1,
            vec![("pads", ints(&[0, 1, 0, 1]))],
        );
        let five = op(
            g,
            "Pad",
            "five",
            &[Some(out(zero, 0))],
            1,
            vec![
                ("pads", ints(&[1, 0, 1, 0])),
                ("value", AttrValue::Float(5.0)),
            ],
        );
        let refl = op(
            g,
            "Pad",
            "refl",
            &[Some(x)],
            1,
            vec![
                ("mode", string("reflect")),
                ("pads", ints(&[0, 1, 0, 1])),
                ("value", AttrValue::Float(5.0)),
            ],
        );
        output(g, out(five, 0));
        output(g, out(refl, 0));
        upgrade(&mut m, 11);
        let g = &m.graph;
        assert_eq!(const_ints(g, zero, 1), vec![0, 1, 0, 1]);
        assert!(g.input(zero, 2).is_none());
        // The type of zero's output is found through the Pad back to the float input.
        assert_eq!(const_floats(g, five, 2), vec![5.0]);
        assert!(g.input(refl, 2).is_none());
        assert!(g[refl].attr("mode").is_some());
        assert!(g[five].attr("value").is_none());
    }

    #[test]
    fn pad_value_of_unknown_type_goes_through_castlike() {
        let mut m = model(10);
        let x = untyped_input(&mut m, "x");
        let p = op(
            &mut m.graph,
            "Pad",
            "p",
            &[Some(x)],
            1,
            vec![("pads", ints(&[1, 1])), ("value", AttrValue::Float(2.0))],
        );
        output(&mut m.graph, out(p, 0));
        let mut low = m.clone();
        upgrade(&mut m, 17);
        let g = &m.graph;
        let cast = g.input(p, 2).unwrap().node;
        assert_eq!(g[cast].op_type(), "CastLike");
        assert_eq!(const_floats(g, cast, 0), vec![2.0]);
        assert_eq!(g.input(cast, 1), Some(x));
        // Below 15 there is no CastLike: refused.
        assert!(upgrade_err(&mut low, 13).contains("element type"));
    }

    #[test]
    fn clip_bounds_become_inputs_of_the_data_type() {
        let mut m = model(6 + 4);
        let x = init(
            &mut m,
            "x",
            crate::tensor::Tensor::from_vec(vec![2], vec![1.0f64, 9.0]).unwrap(),
        );
        let g = &mut m.graph;
        let c6 = op(
            g,
            "Clip",
            "c6",
            &[Some(x)],
            1,
            vec![
                ("min", AttrValue::Float(0.0)),
                ("max", AttrValue::Float(6.0)),
            ],
        );
        let hi = op(
            g,
            "Clip",
            "hi",
            &[Some(x)],
            1,
            vec![("max", AttrValue::Float(1.0))],
        );
        let none = op(g, "Clip", "none", &[Some(x)], 1, vec![]);
        for n in [c6, hi, none] {
            output(g, out(n, 0));
        }
        upgrade(&mut m, 12);
        let g = &m.graph;
        let t = g.constant_input(c6, 1).unwrap();
        assert_eq!(t.dtype(), DataType::Double);
        assert_eq!(t.to_vec::<f64>().unwrap(), vec![0.0]);
        assert_eq!(
            g.constant_input(c6, 2).unwrap().to_vec::<f64>().unwrap(),
            vec![6.0]
        );
        assert!(g.input(hi, 1).is_none());
        assert_eq!(
            g.constant_input(hi, 2).unwrap().to_vec::<f64>().unwrap(),
            vec![1.0]
        );
        assert_eq!(g.inputs(none), vec![Some(x)]);
    }

    #[test]
    fn dropout_ratio_moves_and_a_read_mask_is_refused() {
        let mut m = model(9);
        let x = input(&mut m, "x", &[2]);
        let d = op(
            &mut m.graph,
            "Dropout",
            "d",
            &[Some(x)],
            2,
            vec![("ratio", AttrValue::Float(0.25))],
        );
        output(&mut m.graph, out(d, 0));
        let mut masked = m.clone();
        upgrade(&mut m, 12);
        assert_eq!(const_floats(&m.graph, d, 1), vec![0.25]);
        output(&mut masked.graph, out(d, 1));
        assert!(upgrade_err(&mut masked, 12).contains("mask"));
    }
}
