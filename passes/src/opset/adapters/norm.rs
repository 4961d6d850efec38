//! Normalizations: BatchNormalization lost `spatial` (9) and its training outputs changed
//! (14); GroupNormalization's scale and bias went from one value per group to one per
//! channel (21).

use crate::ir::{Dim, NodeIndex, ValueRef};
use crate::opset::rewrite::Cx;
use crate::pipeline::PassError;
use crate::tensor::Tensor;

/// BatchNormalization-7 → 9: `spatial` is gone; 1 (the default) is what remains.
pub(crate) fn batchnorm_9(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    match cx.take_int(node, "spatial")? {
        None | Some(1) => Ok(()),
        Some(_) => Err(cx.unsupported(node, step, "spatial=0 (per-activation statistics)")),
    }
}

/// BatchNormalization-9 → 14: the optional outputs became the training outputs
/// (running mean/var, only with `training_mode`); unused ones are dropped, read ones refused.
pub(crate) fn batchnorm_14(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let n = cx.g[node].outputs.len();
    if (1..n).any(|s| cx.is_used(ValueRef::new(node, s))) {
        return Err(cx.unsupported(node, step, "it reads training outputs (mean/var)"));
    }
    cx.g[node].outputs.truncate(1);
    Ok(())
}

/// GroupNormalization-18 → 21: constant per-group scale and bias are repeated per channel
/// (the channel count must be declared on the input).
pub(crate) fn groupnorm_21(cx: &mut Cx<'_>, node: NodeIndex, step: i64) -> Result<(), PassError> {
    let Some(x) = cx.g.input(node, 0) else {
        return Err(cx.unsupported(node, step, "it has no input"));
    };
    let channels = match cx.g.value_info(x).shape().as_deref() {
        Some([_, Dim::Known(c), ..]) if *c > 0 => *c as usize,
        _ => return Err(cx.unsupported(node, step, "the input's channel count is unknown")),
    };
    for slot in 1..=2 {
        let Some(t) = cx.g.constant_input(node, slot).cloned() else {
            return Err(cx.unsupported(node, step, "scale and bias are not constants"));
        };
        let groups = t.len();
        if t.shape().len() != 1 || groups == 0 || channels % groups != 0 {
            return Err(cx.unsupported(node, step, "scale/bias do not divide the channels"));
        }
        let per = channels / groups;
        let width = t.byte_size() / groups;
        let raw = t
            .raw()
            .ok_or_else(|| cx.unsupported(node, step, "non-numeric scale"))?;
        let mut bytes = Vec::with_capacity(width * channels);
        for chunk in raw.chunks(width) {
            for _ in 0..per {
                bytes.extend_from_slice(chunk);
            }
        }
        let repeated = Tensor::from_raw(t.dtype(), vec![channels], bytes.into())?;
        let suffix = if slot == 1 { "scale" } else { "bias" };
        let v = cx.constant(node, suffix, repeated);
        if let Some(old) = cx.g.input(node, slot) {
            cx.g.connect(v, node, slot);
            cx.drop_if_dead_constant(old);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ir::{AttrValue, ValueRef};
    use crate::opset::adapters::testing::*;
    use crate::tensor::Tensor;

    #[test]
    fn batchnorm_drops_spatial_and_unused_outputs() {
        let mut m = model(7);
        let x = input(&mut m, "x", &[1, 2, 3, 3]);
        let w: Vec<_> = (0..4)
            .map(|i| {
                init(
                    &mut m,
                    &format!("w{i}"),
                    Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap(),
                )
            })
            .collect();
        let ins: Vec<_> = std::iter::once(Some(x))
            .chain(w.iter().map(|&v| Some(v)))
            .collect();
        let bn = op(
            &mut m.graph,
            "BatchNormalization",
            "bn",
            &ins,
            5,
            vec![("spatial", AttrValue::Int(1))],
        );
        output(&mut m.graph, out(bn, 0));
        let mut per_act = m.clone();
        let mut training = m.clone();
        upgrade(&mut m, 15);
        assert!(m.graph[bn].attributes.is_empty());
        assert_eq!(m.graph[bn].outputs.len(), 1);

        per_act.graph[bn].attributes[0].value = AttrValue::Int(0);
        assert!(upgrade_err(&mut per_act, 9).contains("spatial"));
        output(&mut training.graph, ValueRef::new(bn, 1));
        assert!(upgrade_err(&mut training, 14).contains("training"));
    }

    #[test]
    fn groupnorm_scale_and_bias_go_per_channel() {
        let mut m = model(18);
        let x = input(&mut m, "x", &[1, 4, 2]);
        let s = init(
            &mut m,
            "s",
            Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap(),
        );
        let b = init(
            &mut m,
            "b",
            Tensor::from_vec(vec![2], vec![3.0f32, 4.0]).unwrap(),
        );
        let gn = op(
            &mut m.graph,
            "GroupNormalization",
            "gn",
            &[Some(x), Some(s), Some(b)],
            1,
            vec![("num_groups", AttrValue::Int(2))],
        );
        output(&mut m.graph, out(gn, 0));
        upgrade(&mut m, 21);
        let g = &m.graph;
        assert_eq!(const_floats(g, gn, 1), vec![1.0, 1.0, 2.0, 2.0]);
        assert_eq!(const_floats(g, gn, 2), vec![3.0, 3.0, 4.0, 4.0]);
        assert!(g.find_value("s").is_none());
    }
}
