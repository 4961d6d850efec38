//! Renames and attribute fixes: Scatter → ScatterElements (11), RoiAlign's coordinate mode
//! (16), GridSample's mode names (20); and Scan-8, which is refused.

use crate::ir::{AttrValue, NodeIndex, NodeKind};
use crate::opset::rewrite::Cx;
use crate::pipeline::PassError;

/// Scatter-9 → 11: Scatter is deprecated in favour of ScatterElements, same inputs and axis.
pub(crate) fn scatter_11(cx: &mut Cx<'_>, node: NodeIndex, _step: i64) -> Result<(), PassError> {
    if let NodeKind::Op { op_type, .. } = &mut cx.g[node].kind {
        *op_type = "ScatterElements".to_string();
    }
    Ok(())
}

/// RoiAlign-10 → 16: the new default `half_pixel` shifts coordinates; opset 10's behaviour
/// is `output_half_pixel`, written out.
pub(crate) fn roialign_16(cx: &mut Cx<'_>, node: NodeIndex, _step: i64) -> Result<(), PassError> {
    if cx.g[node].attr("coordinate_transformation_mode").is_none() {
        cx.set_attr(
            node,
            "coordinate_transformation_mode",
            AttrValue::String("output_half_pixel".into()),
        );
    }
    Ok(())
}

/// GridSample-16 → 20: modes `bilinear`/`bicubic` are now called `linear`/`cubic`.
pub(crate) fn gridsample_20(cx: &mut Cx<'_>, node: NodeIndex, _step: i64) -> Result<(), PassError> {
    let renamed = match cx.str_attr(node, "mode").as_deref() {
        Some("bilinear") => "linear",
        Some("bicubic") => "cubic",
        _ => return Ok(()),
    };
    cx.set_attr(node, "mode", AttrValue::String(renamed.into()));
    Ok(())
}

/// Scan-8 → 9: Scan-8 has a batch axis and `sequence_lens`; rewriting it is not supported.
pub(crate) fn scan_9(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    Err(cx.unsupported(
        node,
        step,
        "Scan-8 (batched, with sequence_lens) is not converted",
    ))
}

#[cfg(test)]
mod tests {
    use crate::opset::adapters::testing::*;

    #[test]
    fn scatter_roialign_gridsample() {
        let mut m = model(9);
        let x = input(&mut m, "x", &[2, 2]);
        let g = &mut m.graph;
        let sc = op(g, "Scatter", "sc", &[Some(x), Some(x), Some(x)], 1, vec![]);
        let ra = op(g, "RoiAlign", "ra", &[Some(x), Some(x), Some(x)], 1, vec![]);
        let gs = op(
            g,
            "GridSample",
            "gs",
            &[Some(x), Some(x)],
            1,
            vec![("mode", string("bicubic"))],
        );
        let gs2 = op(
            g,
            "GridSample",
            "gs2",
            &[Some(x), Some(x)],
            1,
            vec![("mode", string("nearest"))],
        );
        for n in [sc, ra, gs, gs2] {
            output(g, out(n, 0));
        }
        upgrade(&mut m, 20);
        let g = &m.graph;
        assert_eq!(g[sc].op_type(), "ScatterElements");
        let s = |n, a: &str| g[n].attr(a).and_then(|v| v.as_str()).map(str::to_string);
        assert_eq!(
            s(ra, "coordinate_transformation_mode").as_deref(),
            Some("output_half_pixel")
        );
        assert_eq!(s(gs, "mode").as_deref(), Some("cubic"));
        assert_eq!(s(gs2, "mode").as_deref(), Some("nearest"));
    }

    #[test]
    fn scan_8_is_refused() {
        let mut m = model(8);
        let x = input(&mut m, "x", &[2, 2]);
        let s = op(&mut m.graph, "Scan", "scan", &[None, Some(x)], 1, vec![]);
        output(&mut m.graph, out(s, 0));
        assert!(upgrade_err(&mut m, 9).contains("Scan-8"));
    }
}
