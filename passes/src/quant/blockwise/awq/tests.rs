//! AWQ on hand-built graphs: scales folded into a norm gain, a gated MLP's up projection, a
//! LayerNorm's scale and bias and a `Mul` in front of an unfoldable group, each checked by
//! running the float graph before and after (Kiln's evaluator, node by node); groups that
//! cannot be scaled are left alone with the reason; α = 0 is RTN.

use std::collections::BTreeMap;

use super::*;
use crate::cleanup::test_util::{op_node, output};
use crate::ir::{AttrValue, Dim, Graph, Node, ValueInfo, ValueRef};
use crate::quant::blockwise::test_support::{run, values};
use crate::quant::blockwise::{
    quantize_blockwise, quantize_blockwise_with, BlockwiseConfig, WeightMethod,
};
use crate::tensor::{DataType, Tensor};

const K: usize = 64;
const ROWS: usize = 48;

/// Inputs whose channels differ in size, a few of them salient (what AWQ scales for).
fn inputs(rows: usize, seed: u64) -> Tensor {
    let v: Vec<f32> = values(rows * K, seed)
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            let c = i % K;
            x * if c % 13 == 5 {
                25.0
            } else {
                0.5 + (c % 4) as f32 * 0.25
            }
        })
        .collect();
    Tensor::from_vec(vec![rows, K], v).unwrap()
}

fn init(g: &mut Graph, name: &str, shape: &[usize], v: Vec<f32>) -> ValueRef {
    let t = Tensor::from_vec(shape.to_vec(), v).unwrap();
    ValueRef::new(g.add_node(Node::initializer(name, t)), 0)
}

fn weight(g: &mut Graph, name: &str, k: usize, n: usize, seed: u64) -> ValueRef {
    init(g, name, &[k, n], values(k * n, seed))
}

fn op(g: &mut Graph, op_type: &str, name: &str, inputs: &[ValueRef]) -> ValueRef {
    op_node(
        g,
        Node::op(op_type, name, &[&format!("{name}_out")]),
        inputs,
    )
}

/// x → Mul(gain) → q, v projections; Relu(q) → o projection (unfoldable); + x → Mul(gain)
/// → gate/up → Mul(silu(gate), up) → down (the output).
fn decoder() -> Model {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(
            "x",
            DataType::Float,
            &[Dim::Known(ROWS as i64), Dim::Known(K as i64)],
        ))),
        0,
    );
    let g1 = init(
        g,
        "ln1.weight",
        &[K],
        values(K, 1).iter().map(|v| 1.0 + 0.2 * v).collect(),
    );
    let n1 = op(g, "Mul", "ln1", &[x, g1]);
    let wq = weight(g, "q.weight", K, 32, 2);
    let q = op(g, "MatMul", "q_proj", &[n1, wq]);
    let wv = weight(g, "v.weight", K, K, 3);
    let v = op(g, "MatMul", "v_proj", &[n1, wv]);
    let a = op(g, "Relu", "attn", &[q]);
    let wo = weight(g, "o.weight", 32, K, 4);
    let o = op(g, "MatMul", "o_proj", &[a, wo]);
    let r = op(g, "Add", "residual", &[v, o]);
    let g2 = init(
        g,
        "ln2.weight",
        &[K],
        values(K, 5).iter().map(|v| 1.0 + 0.2 * v).collect(),
    );
    let n2 = op(g, "Mul", "ln2", &[g2, r]);
    let wg = weight(g, "gate.weight", K, 128, 6);
    let gate = op(g, "MatMul", "gate_proj", &[n2, wg]);
    let wu = weight(g, "up.weight", K, 128, 7);
    let up = op(g, "MatMul", "up_proj", &[n2, wu]);
    let sig = op(g, "Sigmoid", "sigmoid", &[gate]);
    let silu = op(g, "Mul", "silu", &[gate, sig]);
    let p = op(g, "Mul", "gated", &[silu, up]);
    let wd = weight(g, "down.weight", 128, K, 8);
    let down = op(g, "MatMul", "down_proj", &[p, wd]);
    output(g, down);
    m
}

/// The calibration statistics of every MatMul input of `m`, from `rows` rows.
fn stats(m: &Model, rows: usize) -> BTreeMap<String, ActivationStats> {
    let x = inputs(rows, 99);
    let vals = run(&m.graph, &x);
    let mut out = BTreeMap::new();
    for li in linear_inputs(m, &BlockwiseConfig::default()) {
        let v: Vec<f32> = vals[&li.activation].to_vec().unwrap();
        let mut h = Hessian::new(li.k);
        h.add_rows(&v).unwrap();
        let mut a = MeanAbs::new(li.k);
        a.add_rows(&v).unwrap();
        out.insert(
            li.activation.clone(),
            ActivationStats {
                hessian: h,
                mean_abs: a.mean(),
            },
        );
    }
    out
}

use super::super::linear_inputs;

fn config(awq: AwqOptions) -> BlockwiseConfig {
    BlockwiseConfig {
        method: WeightMethod::Awq,
        awq,
        ..Default::default()
    }
}

/// The largest |a − b| over the graph outputs, relative to the largest |a|.
fn output_change(before: &Model, after: &Model, x: &Tensor) -> f64 {
    let (a, b) = (run(&before.graph, x), run(&after.graph, x));
    let mut worst = 0f64;
    for o in &before.graph.outputs {
        let name = before.graph.value_name(o.value);
        let (p, q): (Vec<f32>, Vec<f32>) = (a[name].to_vec().unwrap(), b[name].to_vec().unwrap());
        let top = p.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        for (u, v) in p.iter().zip(&q) {
            worst = worst.max(f64::from((u - v).abs()) / top);
        }
    }
    worst
}

fn group<'a>(groups: &'a [AwqGroup], activation: &str) -> &'a AwqGroup {
    groups
        .iter()
        .find(|g| g.activation == activation)
        .unwrap_or_else(|| panic!("no group for {activation}: {groups:#?}"))
}

#[test]
fn folding_keeps_the_float_outputs() {
    let float = decoder();
    let mut m = float.clone();
    let s = stats(&m, ROWS);
    let options = AwqOptions {
        insert_mul: true,
        ..Default::default()
    };
    let (groups, _) = apply_scales(&mut m, &config(options), &s, &options).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(groups.len(), 4, "{groups:#?}");
    // The salient channels make the norm's group scale.
    let ln1 = group(&groups, "ln1_out");
    assert!(ln1.alpha > 0.0, "{ln1:?}");
    assert!(ln1.error < ln1.rtn_error, "{ln1:?}");
    assert_eq!(ln1.weights, ["q.weight", "v.weight"]);
    match &ln1.scaling {
        Scaling::Folded { into } => assert!(into.contains("'ln1.weight'"), "{into}"),
        other => panic!("{other:?}"),
    }
    for g in &groups {
        assert!(g.error <= g.rtn_error, "{g:?}");
        if g.alpha == 0.0 {
            continue;
        }
        match (g.activation.as_str(), &g.scaling) {
            ("ln1_out", Scaling::Folded { .. }) => {}
            ("ln2_out", Scaling::Folded { into }) => assert!(into.contains("ln2.weight")),
            ("gated_out", Scaling::Folded { into }) => {
                assert!(into.contains("output columns of 'up.weight'"), "{into}")
            }
            ("attn_out", Scaling::Mul { node }) => assert!(node.contains("awq_Mul")),
            (a, s) => panic!("{a}: {s:?}"),
        }
    }
    // Scaled weights and folded constants in float32: the outputs move by rounding only.
    let x = inputs(8, 7);
    let change = output_change(&float, &m, &x);
    assert!(change < 1e-5, "{change}");
    assert!(change > 0.0 || groups.iter().all(|g| g.alpha == 0.0));
}

#[test]
fn the_gated_mlp_folds_into_the_up_projection() {
    let float = decoder();
    let mut m = float.clone();
    let s = stats(&m, ROWS);
    let options = AwqOptions::default();
    let (groups, _) = apply_scales(&mut m, &config(options), &s, &options).unwrap();
    let read = |m: &Model, name: &str| -> Vec<f32> {
        let v = m.graph.find_value(name).unwrap();
        m.graph.constant(v).unwrap().to_vec().unwrap()
    };
    let gated = group(&groups, "gated_out");
    assert!(gated.alpha > 0.0, "{gated:?}");
    let s_down = awq_scales(&s["gated_out"].mean_abs, gated.alpha);
    // down's rows times s, up's columns divided by it (after its own group's row scale).
    let (before, after) = (read(&float, "down.weight"), read(&m, "down.weight"));
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(*a, b * s_down[i / K], "down row {}", i / K);
    }
    let ln2 = group(&groups, "ln2_out");
    let s_up = awq_scales(&s["ln2_out"].mean_abs, ln2.alpha);
    let (before, after) = (read(&float, "up.weight"), read(&m, "up.weight"));
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let (r, c) = (i / 128, i % 128);
        assert_eq!(*a, b * s_up[r] / s_down[c], "up [{r}, {c}]");
    }
    assert!(output_change(&float, &m, &inputs(4, 3)) < 1e-5);
}

#[test]
fn unfoldable_and_shared_activations_are_left_unscaled_with_the_reason() {
    let mut m = decoder();
    // Something else reads ln1's output: folding into its gain would change it.
    let n1 = m.graph.find_value("ln1_out").unwrap();
    let extra = op(&mut m.graph, "Relu", "extra", &[n1]);
    output(&mut m.graph, extra);
    let float = m.clone();
    let s = stats(&m, ROWS);
    let options = AwqOptions::default();
    let (groups, _) = apply_scales(&mut m, &config(options), &s, &options).unwrap();
    m.graph.verify().unwrap();
    let ln1 = group(&groups, "ln1_out");
    match &ln1.scaling {
        Scaling::Unscaled { reason } => {
            assert!(reason.contains("also read by Relu 'extra'"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let attn = group(&groups, "attn_out");
    if attn.alpha > 0.0 {
        match &attn.scaling {
            Scaling::Unscaled { reason } => assert!(reason.contains("Relu"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    // Unscaled groups keep their weights as they were.
    for w in ["q.weight", "v.weight", "o.weight"] {
        let v = m.graph.find_value(w).unwrap();
        let f = float.graph.find_value(w).unwrap();
        assert_eq!(m.graph.constant(v), float.graph.constant(f), "{w}");
    }
    assert!(output_change(&float, &m, &inputs(4, 5)) < 1e-5);
}

#[test]
fn alpha_zero_and_no_clipping_is_rtn() {
    let mut rtn = decoder();
    quantize_blockwise(&mut rtn, &BlockwiseConfig::default()).unwrap();
    let mut m = decoder();
    let s = stats(&m, ROWS);
    let options = AwqOptions {
        grid: 1,
        clip: false,
        ..Default::default()
    };
    let c = config(options);
    let (groups, awq) = apply_scales(&mut m, &c, &s, &options).unwrap();
    assert!(groups
        .iter()
        .all(|g| g.alpha == 0.0 && g.error == g.rtn_error));
    quantize_blockwise_with(&mut m, &c, &awq).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(m.to_proto(), rtn.to_proto());
    assert!(awq.chosen().iter().all(|w| w.integers == "rtn"));
    assert_eq!(awq.chosen().len(), 6);
}

#[test]
fn the_quantizer_clips_under_each_weights_scaled_hessian() {
    let mut m = decoder();
    let s = stats(&m, ROWS);
    let options = AwqOptions::default();
    let c = config(options);
    let (groups, awq) = apply_scales(&mut m, &c, &s, &options).unwrap();
    // A folded group's weights get the Hessian of the divided activation.
    let ln1 = group(&groups, "ln1_out");
    let scales = awq_scales(&s["ln1_out"].mean_abs, ln1.alpha);
    let h = awq.hessian("q.weight").unwrap();
    let h0 = &s["ln1_out"].hessian;
    let (i, j) = (5, 18);
    let want = h0.get(i, j) / (f64::from(scales[i]) * f64::from(scales[j]));
    assert!((h.get(i, j) - want).abs() <= 1e-12 * want.abs().max(1.0));
    quantize_blockwise_with(&mut m, &c, &awq).unwrap();
    m.graph.verify().unwrap();
    let chosen = awq.chosen();
    assert_eq!(chosen.len(), 6);
    for w in &chosen {
        assert_eq!(w.integers, "clip");
        assert!(w.error_ratio <= 1.0, "{w:?}");
        assert!(w.clipped.unwrap() <= w.blocks);
    }
    assert!(awq.fallbacks().is_empty());
}

#[test]
fn a_layer_norm_folds_scale_and_bias() {
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(
            "x",
            DataType::Float,
            &[Dim::Known(4), Dim::Known(K as i64)],
        ))),
        0,
    );
    let scale = init(g, "ln.scale", &[K], values(K, 3));
    let bias = init(g, "ln.bias", &[K], values(K, 4));
    let ln = g.add_node(
        Node::op("LayerNormalization", "ln", &["n"]).with_attr("axis", AttrValue::Int(-1)),
    );
    g.connect(x, ln, 0);
    g.connect(scale, ln, 1);
    g.connect(bias, ln, 2);
    let n = ValueRef::new(ln, 0);
    let w = weight(g, "fc.weight", K, 16, 5);
    let y = op(g, "MatMul", "fc", &[n, w]);
    output(g, y);
    let group = BTreeSet::from([y.node]);
    let (slots, what) = fold::fold_targets(&m.graph, n, K, &group).unwrap();
    assert_eq!(slots, vec![(ln, 1), (ln, 2)]);
    assert!(what.contains("'ln.scale' and 'ln.bias'"), "{what}");
    let s: Vec<f32> = (0..K).map(|i| 0.5 + i as f32 / K as f32).collect();
    let mut names = NameSet::of(&m.graph);
    fold::divide(&mut m.graph, &mut names, &slots, &s).unwrap();
    let read = |name: &str| -> Vec<f32> {
        let v = m.graph.find_value(name).unwrap();
        m.graph.constant(v).unwrap().to_vec().unwrap()
    };
    let (sc, bi) = (read("ln.scale"), read("ln.bias"));
    for i in 0..K {
        assert_eq!(sc[i], values(K, 3)[i] / s[i]);
        assert_eq!(bi[i], values(K, 4)[i] / s[i]);
    }
    // A Gemm with transB holds K on axis 1.
    let mut g2 = Graph::new("g");
    let t = init(&mut g2, "w", &[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    fold::scale_weight(&mut g2, t, 1, &[1.0, 10.0, 100.0]).unwrap();
    let v: Vec<f32> = g2.constant(t).unwrap().to_vec().unwrap();
    assert_eq!(v, vec![1.0, 20.0, 300.0, 4.0, 50.0, 600.0]);
    assert!(fold::scale_weight(&mut g2, t, 0, &[1.0]).is_err());
}

#[test]
fn missing_statistics_leave_groups_unscaled_and_weights_rounded() {
    let mut m = decoder();
    let float = m.clone();
    let options = AwqOptions::default();
    let c = config(options);
    let (groups, awq) = apply_scales(&mut m, &c, &BTreeMap::new(), &options).unwrap();
    assert!(groups.iter().all(|g| matches!(
        &g.scaling,
        Scaling::Unscaled { reason } if reason.contains("no calibration statistics")
    )));
    assert_eq!(m.to_proto(), float.to_proto());
    let mut rtn = decoder();
    quantize_blockwise(&mut rtn, &BlockwiseConfig::default()).unwrap();
    quantize_blockwise_with(&mut m, &c, &awq).unwrap();
    assert_eq!(m.to_proto(), rtn.to_proto());
    assert_eq!(awq.fallbacks().len(), 6);
}

#[test]
fn folds_reach_through_a_reshape_and_past_a_shape_reader() {
    // x → Mul(gain) → Reshape [ROWS, K] → [2, ROWS/2, K] → MatMul; a Shape reads the gain's
    // output too (as llama's attention does): only values matter, so the fold is allowed.
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(
            "x",
            DataType::Float,
            &[Dim::Known(ROWS as i64), Dim::Known(K as i64)],
        ))),
        0,
    );
    let gain = init(g, "gain", &[K], values(K, 2));
    let n = op(g, "Mul", "norm", &[x, gain]);
    *g.value_info_mut(n) = ValueInfo::tensor(
        "norm_out",
        DataType::Float,
        &[Dim::Known(ROWS as i64), Dim::Known(K as i64)],
    );
    let shape = op(g, "Shape", "shape", &[n]);
    output(g, shape);
    let target = ValueRef::new(
        g.add_node(Node::initializer(
            "target",
            Tensor::from_vec(vec![3], vec![2i64, (ROWS / 2) as i64, K as i64]).unwrap(),
        )),
        0,
    );
    let r = op(g, "Reshape", "reshape", &[n, target]);
    *g.value_info_mut(r) = ValueInfo::tensor(
        "reshape_out",
        DataType::Float,
        &[
            Dim::Known(2),
            Dim::Known((ROWS / 2) as i64),
            Dim::Known(K as i64),
        ],
    );
    let w = weight(g, "fc.weight", K, 16, 3);
    let y = op(g, "MatMul", "fc", &[r, w]);
    output(g, y);
    let group = BTreeSet::from([y.node]);
    let (slots, what) = fold::fold_targets(&m.graph, r, K, &group).unwrap();
    assert_eq!(slots, vec![(n.node, 1)]);
    assert!(what.contains("gain 'gain' of Mul 'norm'"), "{what}");
    // A Reshape that moves the channel dim stops the walk.
    *m.graph.value_info_mut(r) = ValueInfo::tensor(
        "reshape_out",
        DataType::Float,
        &[Dim::Known(ROWS as i64 * 2), Dim::Known((K / 2) as i64)],
    );
    let e = fold::fold_targets(&m.graph, r, K, &group).unwrap_err();
    assert!(e.contains("produced by Reshape"), "{e}");
}

#[test]
fn awq_then_gptq_is_never_worse_than_rounding() {
    let mut m = decoder();
    let s = stats(&m, ROWS);
    let options = AwqOptions {
        gptq: Some(GptqOptions::default()),
        ..Default::default()
    };
    let c = config(options);
    let (_, awq) = apply_scales(&mut m, &c, &s, &options).unwrap();
    quantize_blockwise_with(&mut m, &c, &awq).unwrap();
    m.graph.verify().unwrap();
    let chosen = awq.chosen();
    // A weight GPTQ did not improve is rounded instead and listed as a fallback.
    assert_eq!(chosen.len() + awq.fallbacks().len(), 6, "{chosen:?}");
    assert!(!chosen.is_empty());
    for w in &chosen {
        assert_eq!(w.integers, "gptq");
        assert!(w.error_ratio <= 1.0, "{w:?}");
    }
}
