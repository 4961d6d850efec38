//! Upsample and Resize: Upsample's `scales` became an input (9), Upsample became Resize (10),
//! Resize gained `roi` and explicit coordinate/rounding modes (11), and `scales` became
//! optional, to be left out when `sizes` is given (13).

use crate::ir::{AttrValue, NodeIndex, NodeKind};
use crate::opset::rewrite::Cx;
use crate::pipeline::PassError;
use crate::tensor::Tensor;

/// Upsample-7 → 9: `scales` attribute → input 1 (float32).
pub(crate) fn upsample_9(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let scales = match cx.take_attr(node, "scales") {
        Some(AttrValue::Floats(s)) => s,
        _ => return Err(cx.unsupported(node, step, "Upsample-7 needs float 'scales'")),
    };
    let t = Tensor::from_vec(vec![scales.len()], scales)?;
    let v = cx.constant(node, "scales", t);
    cx.g.connect(v, node, 1);
    Ok(())
}

/// Upsample-9 → 10: Upsample is deprecated; Resize-10 takes the same inputs and attribute
/// and computes the same thing.
pub(crate) fn upsample_10(cx: &mut Cx<'_>, node: NodeIndex, _step: i64) -> Result<(), PassError> {
    if let NodeKind::Op { op_type, .. } = &mut cx.g[node].kind {
        *op_type = "Resize".to_string();
    }
    Ok(())
}

/// Resize-10 → 11: inputs (X, scales) → (X, roi, scales), and the modes opset 10 implied are
/// written out: `asymmetric` coordinates, and for nearest, the rounding ONNX Runtime used
/// (truncation when upsampling, ceiling when downsampling).
pub(crate) fn resize_11(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let Some(scales) = cx.g.input(node, 1) else {
        return Err(cx.unsupported(node, step, "Resize-10 has no scales"));
    };
    let mode = cx
        .str_attr(node, "mode")
        .unwrap_or_else(|| "nearest".into());
    if mode == "nearest" {
        // Known scales decide; unknown ones (computed at run time) are taken as upsampling,
        // which is what Upsample/Resize-10 models do in practice.
        let known = cx.g.constant(scales).and_then(|t| t.to_f64_vec());
        let rounding = match known {
            Some(s) if s.iter().all(|&k| k >= 1.0) => "floor",
            Some(s) if s.iter().all(|&k| k <= 1.0) => "ceil",
            Some(_) => {
                return Err(cx.unsupported(
                    node,
                    step,
                    "nearest resize that upsamples some axes and downsamples others",
                ))
            }
            None => "floor",
        };
        cx.set_attr(node, "nearest_mode", AttrValue::String(rounding.into()));
    }
    cx.set_attr(
        node,
        "coordinate_transformation_mode",
        AttrValue::String("asymmetric".into()),
    );
    let roi = cx.constant(node, "roi", Tensor::from_vec::<f32>(vec![0], vec![])?);
    cx.g.connect(roi, node, 1);
    cx.g.connect(scales, node, 2);
    Ok(())
}

/// Resize-11 → 13: `tf_half_pixel_for_nn` is gone (refused); with `sizes` given, `scales` is
/// now left out instead of being an empty tensor.
pub(crate) fn resize_13(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    if cx
        .str_attr(node, "coordinate_transformation_mode")
        .as_deref()
        == Some("tf_half_pixel_for_nn")
    {
        return Err(cx.unsupported(
            node,
            step,
            "coordinate_transformation_mode 'tf_half_pixel_for_nn' no longer exists",
        ));
    }
    if cx.g.input(node, 3).is_some() {
        if let Some(scales) = cx.g.disconnect(node, 2) {
            cx.drop_if_dead_constant(scales);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ir::AttrValue;
    use crate::opset::adapters::testing::*;
    use crate::tensor::Tensor;

    fn attr_str(g: &crate::ir::Graph, n: crate::ir::NodeIndex, a: &str) -> Option<String> {
        g[n].attr(a).and_then(|v| v.as_str()).map(str::to_string)
    }

    #[test]
    fn upsample_7_becomes_resize_with_the_old_modes() {
        let mut m = model(7);
        let x = input(&mut m, "x", &[1, 1, 2, 2]);
        let g = &mut m.graph;
        let up = op(
            g,
            "Upsample",
            "up",
            &[Some(x)],
            1,
            vec![("scales", AttrValue::Floats(vec![1.0, 1.0, 2.0, 3.0]))],
        );
        output(g, out(up, 0));
        upgrade(&mut m, 17);
        let g = &m.graph;
        assert_eq!(g[up].op_type(), "Resize");
        assert_eq!(const_floats(g, up, 1), Vec::<f32>::new());
        assert_eq!(const_floats(g, up, 2), vec![1.0, 1.0, 2.0, 3.0]);
        assert!(g.input(up, 3).is_none());
        assert_eq!(
            attr_str(g, up, "coordinate_transformation_mode").as_deref(),
            Some("asymmetric")
        );
        assert_eq!(attr_str(g, up, "nearest_mode").as_deref(), Some("floor"));
        assert!(g[up].attr("scales").is_none());
    }

    #[test]
    fn resize_10_downsampling_rounds_up_and_linear_has_no_rounding() {
        let mut m = model(10);
        let x = input(&mut m, "x", &[1, 1, 4, 4]);
        let half = init(
            &mut m,
            "half",
            Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 0.5, 0.5]).unwrap(),
        );
        let g = &mut m.graph;
        let down = op(g, "Resize", "down", &[Some(x), Some(half)], 1, vec![]);
        let lin = op(
            g,
            "Resize",
            "lin",
            &[Some(x), Some(half)],
            1,
            vec![("mode", string("linear"))],
        );
        let mixed_scales = init(
            &mut m,
            "mixed",
            Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 0.5, 2.0]).unwrap(),
        );
        let g = &mut m.graph;
        output(g, out(down, 0));
        output(g, out(lin, 0));
        let mut mixed = m.clone();
        upgrade(&mut m, 13);
        let g = &m.graph;
        assert_eq!(attr_str(g, down, "nearest_mode").as_deref(), Some("ceil"));
        assert_eq!(g.input(down, 2), Some(half));
        assert!(g[lin].attr("nearest_mode").is_none());
        assert_eq!(
            attr_str(g, lin, "coordinate_transformation_mode").as_deref(),
            Some("asymmetric")
        );

        let g = &mut mixed.graph;
        let mix = op(
            g,
            "Resize",
            "mix",
            &[Some(x), Some(mixed_scales)],
            1,
            vec![],
        );
        output(g, out(mix, 0));
        assert!(upgrade_err(&mut mixed, 11).contains("'mix' (Resize)"));
    }

    #[test]
    fn resize_11_with_sizes_drops_empty_scales_at_13() {
        let mut m = model(11);
        let x = input(&mut m, "x", &[1, 1, 4, 4]);
        let roi = init(
            &mut m,
            "roi",
            Tensor::from_vec::<f32>(vec![0], vec![]).unwrap(),
        );
        let scales = init(
            &mut m,
            "scales",
            Tensor::from_vec::<f32>(vec![0], vec![]).unwrap(),
        );
        let sizes = init(
            &mut m,
            "sizes",
            Tensor::from_vec(vec![4], vec![1i64, 1, 8, 8]).unwrap(),
        );
        let g = &mut m.graph;
        let r = op(
            g,
            "Resize",
            "r",
            &[Some(x), Some(roi), Some(scales), Some(sizes)],
            1,
            vec![],
        );
        output(g, out(r, 0));
        let mut tf = m.clone();
        upgrade(&mut m, 13);
        let g = &m.graph;
        assert_eq!(g.inputs(r), vec![Some(x), Some(roi), None, Some(sizes)]);
        assert!(g.find_value("scales").is_none());

        tf.graph[r].attributes.push(crate::ir::Attribute::new(
            "coordinate_transformation_mode",
            string("tf_half_pixel_for_nn"),
        ));
        assert!(upgrade_err(&mut tf, 13).contains("tf_half_pixel_for_nn"));
    }
}
