//! `fuse-conv-bn`: a BatchNormalization (inference form) right after a Conv or ConvTranspose
//! with constant weights is folded into the weights and bias.
//!
//! With `s = scale / sqrt(var + epsilon)`, each output channel `c` gets `W'[c] = W[c] · s[c]`
//! and `b'[c] = (b[c] − mean[c]) · s[c] + B[c]`, computed in f64 and rounded once to the
//! weight's type. Conv weights are `[C_out, C_in/group, k…]`; ConvTranspose weights are
//! `[C_in, C_out/group, k…]`, so there output channel `g·(C_out/group) + j` is column `j` of
//! the rows of group `g`.

use crate::ir::{Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::{DataType, Tensor};

use super::pattern::{
    add_initializer, each_graph, float_tensor, is_op, operands_of, operators, remove_nodes,
    rewrite_node, sole_consumer,
};

/// Folds BatchNormalization into the Conv / ConvTranspose before it.
#[derive(Debug, Clone, Copy, Default)]
pub struct FuseConvBn;

impl Pass for FuseConvBn {
    fn name(&self) -> &'static str {
        "fuse-conv-bn"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        let mut conv = 0;
        let mut conv_t = 0;
        each_graph(&mut model.graph, &mut |g| {
            for bn in operators(g) {
                match fold(g, bn) {
                    Some(true) => conv_t += 1,
                    Some(false) => conv += 1,
                    None => {}
                }
            }
            Ok(0)
        })?;
        changes.add("conv+batchnorm", conv);
        changes.add("convtranspose+batchnorm", conv_t);
        Ok(changes)
    }
}

/// What the fold computes before touching the graph.
struct Plan {
    conv: NodeIndex,
    transposed: bool,
    weight: Tensor,
    bias: Tensor,
    weight_name: String,
}

/// Folds the BatchNormalization `bn` if it follows a foldable Conv; `Some(transposed)` when done.
fn fold(g: &mut crate::ir::Graph, bn: NodeIndex) -> Option<bool> {
    let plan = plan(g, bn)?;
    let conv_inputs = g.inputs(plan.conv);
    let x = conv_inputs.first().copied().flatten()?;
    let (op, attributes, name, doc, meta) = {
        let c = g.node(plan.conv)?;
        (
            c.op_type().to_string(),
            c.attributes.clone(),
            c.name.clone(),
            c.doc_string.clone(),
            c.metadata_props.clone(),
        )
    };
    let old = operands_of(g, &[plan.conv, bn]);
    // The BatchNormalization node becomes the Conv, so the pattern's output keeps its name.
    rewrite_node(g, bn, &op, "", attributes, &[Some(x)], 1);
    if let Some(n) = g.node_mut(bn) {
        n.name = name;
        n.doc_string = doc;
        n.metadata_props = meta;
    }
    remove_nodes(g, &[plan.conv], &old);
    let w = add_initializer(g, &plan.weight_name, plan.weight);
    let b = add_initializer(g, &format!("{}_bias", plan.weight_name), plan.bias);
    g.connect(w, bn, 1);
    g.connect(b, bn, 2);
    Some(plan.transposed)
}

fn plan(g: &crate::ir::Graph, bn: NodeIndex) -> Option<Plan> {
    if !is_op(g, bn, "BatchNormalization") {
        return None;
    }
    let node = g.node(bn)?;
    let int_attr = |k: &str, d: i64| node.attr(k).and_then(|a| a.as_int()).unwrap_or(d);
    if int_attr("training_mode", 0) != 0 || int_attr("spatial", 1) != 1 {
        return None;
    }
    if (1..node.outputs.len()).any(|s| g.is_used(ValueRef::new(bn, s))) {
        return None;
    }
    let eps = node
        .attr("epsilon")
        .and_then(|a| a.as_float())
        .unwrap_or(1e-5) as f64;

    let x = g.input(bn, 0)?;
    let conv = x.node;
    let transposed = if is_op(g, conv, "Conv") {
        false
    } else if is_op(g, conv, "ConvTranspose") {
        true
    } else {
        return None;
    };
    if x.slot != 0 || sole_consumer(g, x) != Some((bn, 0)) {
        return None;
    }
    let cnode = g.node(conv)?;
    let group = cnode.attr("group").and_then(|a| a.as_int()).unwrap_or(1);
    let group = usize::try_from(group).ok().filter(|&gr| gr > 0)?;
    let wv = g.input(conv, 1)?;
    let w = g.constant(wv)?;
    let dtype = w.dtype();
    if !matches!(
        dtype,
        DataType::Float | DataType::Float16 | DataType::Double
    ) {
        return None;
    }
    let shape = w.shape().to_vec();
    if shape.len() < 3 {
        return None;
    }
    let c_out = if transposed {
        if shape[0] % group != 0 {
            return None;
        }
        shape[1].checked_mul(group)?
    } else {
        shape[0]
    };

    let per_channel = |slot: usize| -> Option<Vec<f64>> {
        let t = g.constant_input(bn, slot)?;
        (t.shape() == [c_out] && t.dtype().is_float())
            .then(|| t.to_f64_vec())
            .flatten()
    };
    let (scale, beta, mean, var) = (
        per_channel(1)?,
        per_channel(2)?,
        per_channel(3)?,
        per_channel(4)?,
    );
    let bias = match g.input(conv, 2) {
        None => vec![0.0; c_out],
        Some(v) => {
            let t = g.constant(v)?;
            if t.shape() != [c_out] || t.dtype() != dtype {
                return None;
            }
            t.to_f64_vec()?
        }
    };
    let s: Vec<f64> = scale
        .iter()
        .zip(&var)
        .map(|(sc, v)| sc / (v + eps).sqrt())
        .collect();
    if s.iter().any(|v| !v.is_finite()) {
        return None;
    }

    let mut wf = w.to_f64_vec()?;
    let inner: usize = shape[2..].iter().product();
    if transposed {
        let (c_in, per_group_out) = (shape[0], shape[1]);
        let in_per_group = c_in / group;
        for ic in 0..c_in {
            for j in 0..per_group_out {
                let oc = (ic / in_per_group) * per_group_out + j;
                let start = (ic * per_group_out + j) * inner;
                wf[start..start + inner]
                    .iter_mut()
                    .for_each(|v| *v *= s[oc]);
            }
        }
    } else {
        let block = wf.len() / c_out.max(1);
        for (oc, chunk) in wf.chunks_mut(block.max(1)).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= s[oc]);
        }
    }
    let new_bias: Vec<f64> = (0..c_out)
        .map(|c| (bias[c] - mean[c]) * s[c] + beta[c])
        .collect();
    Some(Plan {
        conv,
        transposed,
        weight: float_tensor(dtype, shape, &wf)?,
        bias: float_tensor(dtype, vec![c_out], &new_bias)?,
        weight_name: g.value_name(wv).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::testutil::{noise, Builder};
    use crate::ir::AttrValue;

    /// Conv 2-D, stride 1, no padding, with groups; x is [1, C, H, W].
    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        x: &[f32],
        c: usize,
        h: usize,
        wd: usize,
        w: &[f32],
        ws: &[usize],
        b: &[f32],
        group: usize,
    ) -> Vec<f32> {
        let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let (oh, ow) = (h - kh + 1, wd - kw + 1);
        let mut y = vec![0f32; m * oh * ow];
        let m_per_group = m / group;
        for oc in 0..m {
            let gi = oc / m_per_group;
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b[oc];
                    for ci in 0..cg {
                        let ic = gi * cg + ci;
                        assert!(ic < c);
                        for a in 0..kh {
                            for bb in 0..kw {
                                acc += x[(ic * h + i + a) * wd + j + bb]
                                    * w[((oc * cg + ci) * kh + a) * kw + bb];
                            }
                        }
                    }
                    y[(oc * oh + i) * ow + j] = acc;
                }
            }
        }
        y
    }

    struct Bn {
        scale: Vec<f32>,
        beta: Vec<f32>,
        mean: Vec<f32>,
        var: Vec<f32>,
    }

    fn bn_params(c: usize) -> Bn {
        Bn {
            scale: noise(c, 1),
            beta: noise(c, 2),
            mean: noise(c, 3),
            var: noise(c, 4).iter().map(|v| v.abs() + 0.5).collect(),
        }
    }

    /// Conv(x, w[, b]) → BatchNormalization; returns the builder and the BN output.
    fn build(
        group: i64,
        with_bias: bool,
        bn_shape_c: usize,
    ) -> (Builder, ValueRef, Vec<f32>, Vec<f32>, Bn) {
        let mut b = Builder::new(13);
        let x = b.input("x", &[1, 4, 5, 5]);
        let ws = [4usize, (4 / group) as usize, 3, 3];
        let wv = noise(ws.iter().product(), 7);
        let w = b.floats("w", &ws, wv.clone());
        let bias = noise(4, 8);
        let mut ins = vec![x, w];
        if with_bias {
            ins.push(b.floats("b", &[4], bias.clone()));
        }
        let y = b.op("Conv", &ins, vec![("group", AttrValue::Int(group))]);
        let p = bn_params(4);
        let s = b.floats(
            "s",
            &[bn_shape_c],
            p.scale.iter().cycle().take(bn_shape_c).copied().collect(),
        );
        let be = b.floats("be", &[4], p.beta.clone());
        let m = b.floats("m", &[4], p.mean.clone());
        let v = b.floats("v", &[4], p.var.clone());
        let z = b.op(
            "BatchNormalization",
            &[y, s, be, m, v],
            vec![("epsilon", AttrValue::Float(1e-3))],
        );
        b.output(z);
        let bias = if with_bias { bias } else { vec![0.0; 4] };
        (b, z, wv, bias, p)
    }

    fn reference(x: &[f32], w: &[f32], bias: &[f32], p: &Bn, group: usize) -> Vec<f32> {
        let ws = [4, 4 / group, 3, 3];
        let y = conv2d(x, 4, 5, 5, w, &ws, bias, group);
        let per = y.len() / 4;
        y.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = i / per;
                (v - p.mean[c]) / (p.var[c] + 1e-3).sqrt() * p.scale[c] + p.beta[c]
            })
            .collect()
    }

    fn fused_output(b: &Builder, x: &[f32], group: usize) -> Vec<f32> {
        let g = &b.model.graph;
        let out = g.outputs[0].value;
        let w = g
            .constant_input(out.node, 1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let bias = g
            .constant_input(out.node, 2)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        conv2d(x, 4, 5, 5, &w, &[4, 4 / group, 3, 3], &bias, group)
    }

    #[test]
    fn folds_into_weights_and_matches_numerically() {
        for (group, with_bias) in [(1, true), (1, false), (2, true), (4, false)] {
            let (mut b, z, w, bias, p) = build(group, with_bias, 4);
            let name = b.model.graph.value_name(z).to_string();
            let c = b.run(&FuseConvBn);
            assert_eq!(c.get("conv+batchnorm"), 1);
            assert_eq!(b.count("BatchNormalization"), 0);
            assert_eq!(b.count("Conv"), 1);
            let out = b.model.graph.outputs[0].value;
            assert_eq!(b.model.graph.value_name(out), name);
            // Old weight and BN constants are gone; the new weight kept the name.
            assert!(b.model.graph.find_value("s").is_none());
            assert!(b.model.graph.find_value("w").is_some());
            let x = noise(100, 11);
            let want = reference(&x, &w, &bias, &p, group as usize);
            let got = fused_output(&b, &x, group as usize);
            for (a, e) in got.iter().zip(&want) {
                assert!((a - e).abs() <= 1e-5 + 1e-4 * e.abs(), "{a} vs {e}");
            }
        }
    }

    #[test]
    fn leaves_shared_or_mis_shaped_patterns_alone() {
        // Conv output read twice.
        let (mut b, _, _, _, _) = build(1, true, 4);
        let conv_out = b
            .model
            .graph
            .nodes()
            .find(|(_, n)| n.op_type() == "Conv")
            .map(|(i, _)| ValueRef::new(i, 0))
            .unwrap();
        b.op("Relu", &[conv_out], vec![]);
        assert!(b.run(&FuseConvBn).is_empty());
        // Conv output is a graph output.
        let (mut b, _, _, _, _) = build(1, true, 4);
        let conv_out = b
            .model
            .graph
            .nodes()
            .find(|(_, n)| n.op_type() == "Conv")
            .map(|(i, _)| ValueRef::new(i, 0))
            .unwrap();
        b.output(conv_out);
        assert!(b.run(&FuseConvBn).is_empty());
        // Scale of the wrong length.
        let (mut b, _, _, _, _) = build(1, true, 2);
        assert!(b.run(&FuseConvBn).is_empty());
        assert_eq!(b.count("BatchNormalization"), 1);
    }

    #[test]
    fn leaves_training_mode_and_non_constant_weights_alone() {
        let (mut b, z, _, _, _) = build(1, true, 4);
        b.model.graph[z.node]
            .attributes
            .push(crate::ir::Attribute::new(
                "training_mode",
                AttrValue::Int(1),
            ));
        assert!(b.run(&FuseConvBn).is_empty());

        let mut b = Builder::new(13);
        let x = b.input("x", &[1, 4, 5, 5]);
        let w = b.input("w", &[4, 4, 3, 3]);
        let y = b.op("Conv", &[x, w], vec![]);
        let p = bn_params(4);
        let s = b.floats("s", &[4], p.scale);
        let be = b.floats("be", &[4], p.beta);
        let m = b.floats("m", &[4], p.mean);
        let v = b.floats("v", &[4], p.var);
        let z = b.op("BatchNormalization", &[y, s, be, m, v], vec![]);
        b.output(z);
        assert!(b.run(&FuseConvBn).is_empty());
    }

    #[test]
    fn conv_transpose_scales_output_channels_of_each_group() {
        // ConvTranspose weight [C_in=4, C_out/group=3, 1, 1] with group 2: C_out = 6.
        let mut b = Builder::new(13);
        let x = b.input("x", &[1, 4, 2, 2]);
        let w = b.floats("w", &[4, 3, 1, 1], vec![1.0; 12]);
        let y = b.op("ConvTranspose", &[x, w], vec![("group", AttrValue::Int(2))]);
        let s = b.floats("s", &[6], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let be = b.floats("be", &[6], vec![0.5; 6]);
        let m = b.floats("m", &[6], vec![1.0; 6]);
        let v = b.floats("v", &[6], vec![1.0; 6]);
        let z = b.op(
            "BatchNormalization",
            &[y, s, be, m, v],
            vec![("epsilon", AttrValue::Float(0.0))],
        );
        b.output(z);
        let c = b.run(&FuseConvBn);
        assert_eq!(c.get("convtranspose+batchnorm"), 1);
        let g = &b.model.graph;
        let out = g.outputs[0].value;
        assert_eq!(g[out.node].op_type(), "ConvTranspose");
        let w = g
            .constant_input(out.node, 1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        // Rows 0,1 belong to group 0 (channels 0..3), rows 2,3 to group 1 (channels 3..6).
        assert_eq!(
            w,
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0]
        );
        let bias = g
            .constant_input(out.node, 2)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(bias, vec![-0.5, -1.5, -2.5, -3.5, -4.5, -5.5]);
    }

    #[test]
    fn float16_weights_stay_float16() {
        use half::f16;
        let mut b = Builder::new(13);
        let x = b.input("x", &[1, 2, 3, 3]);
        let wt = Tensor::from_vec(vec![2, 2, 1, 1], vec![f16::from_f32(1.0); 4]).unwrap();
        let w = b.constant("w", wt);
        let y = b.op("Conv", &[x, w], vec![]);
        let ones = Tensor::from_vec(vec![2], vec![f16::from_f32(2.0); 2]).unwrap();
        let s = b.constant("s", ones.clone());
        let be = b.constant("be", ones.clone());
        let m = b.constant("m", ones.clone());
        let v = b.constant("v", ones);
        let z = b.op(
            "BatchNormalization",
            &[y, s, be, m, v],
            vec![("epsilon", AttrValue::Float(2.0))],
        );
        b.output(z);
        assert_eq!(b.run(&FuseConvBn).get("conv+batchnorm"), 1);
        let out = b.model.graph.outputs[0].value;
        let w = b.model.graph.constant_input(out.node, 1).unwrap();
        assert_eq!(w.dtype(), DataType::Float16);
        assert_eq!(w.to_f64_vec().unwrap(), vec![1.0; 4]);
    }
}
