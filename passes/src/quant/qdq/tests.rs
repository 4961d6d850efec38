//! Unit tests of QDQ insertion on hand-built graphs: one per rule.

use std::collections::BTreeSet;

use super::*;
use crate::ir::{AttrValue, Dim, Graph, GraphOutput, Node, NodeIndex, ValueInfo, ValueRef};
use crate::quant::config::TensorOverride;
use crate::quant::scheme::QuantScheme;
use crate::tensor::{DataType, Tensor};

/// A model under construction.
struct B {
    m: Model,
}

impl B {
    fn new() -> B {
        B { m: Model::new(13) }
    }

    fn g(&mut self) -> &mut Graph {
        &mut self.m.graph
    }

    fn input(&mut self, name: &str, dims: &[i64]) -> ValueRef {
        let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Known(d)).collect();
        let info = ValueInfo::tensor(name, DataType::Float, &dims);
        ValueRef::new(self.g().add_node(Node::input(info)), 0)
    }

    fn constant(&mut self, name: &str, shape: &[usize], vals: Vec<f32>) -> ValueRef {
        let t = Tensor::from_vec(shape.to_vec(), vals).unwrap();
        ValueRef::new(self.g().add_node(Node::initializer(name, t)), 0)
    }

    /// A constant of `n` values spread over [-1, 1] (distinct per channel).
    fn weight(&mut self, name: &str, shape: &[usize]) -> ValueRef {
        let n: usize = shape.iter().product();
        let vals = (0..n)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0 * (1.0 + i as f32 / n as f32))
            .collect();
        self.constant(name, shape, vals)
    }

    fn ints(&mut self, name: &str, vals: Vec<i64>) -> ValueRef {
        let t = Tensor::from_vec(vec![vals.len()], vals).unwrap();
        ValueRef::new(self.g().add_node(Node::initializer(name, t)), 0)
    }

    fn op_with(
        &mut self,
        op: &str,
        name: &str,
        ins: &[ValueRef],
        out: &str,
        attrs: Vec<(&str, AttrValue)>,
    ) -> ValueRef {
        let mut node = Node::op(op, name, &[out]);
        for (k, v) in attrs {
            node = node.with_attr(k, v);
        }
        let idx = self.g().add_node(node);
        for (slot, &v) in ins.iter().enumerate() {
            self.g().connect(v, idx, slot);
        }
        ValueRef::new(idx, 0)
    }

    fn op(&mut self, op: &str, name: &str, ins: &[ValueRef], out: &str) -> ValueRef {
        self.op_with(op, name, ins, out, vec![])
    }

    fn output(&mut self, v: ValueRef) {
        let info = ValueInfo::new(self.m.graph.value_name(v));
        self.g().outputs.push(GraphOutput { value: v, info });
    }

    /// x[1,2,4,4] → Conv(w[3,2,1,1], b[3]) named `name`, output `out`.
    fn conv(&mut self, name: &str, x: ValueRef, out: &str, cin: usize) -> ValueRef {
        let w = self.weight(&format!("{name}.weight"), &[3, cin, 1, 1]);
        let b = self.constant(&format!("{name}.bias"), &[3], vec![0.5, -0.25, 0.125]);
        self.op(op_conv(), name, &[x, w, b], out)
    }
}

fn op_conv() -> &'static str {
    "Conv"
}

fn cfg() -> QuantConfig {
    QuantConfig::default()
}

/// A range for every tensor: [-1, 2] unless `special` says otherwise.
fn ranges_for(p: &QuantPlan, special: &[(&str, Range)]) -> Ranges {
    p.tensors
        .iter()
        .map(|n| {
            let r = special
                .iter()
                .find(|(s, _)| s == n)
                .map_or(Range::new(-1.0, 2.0), |(_, r)| *r);
            (n.clone(), r)
        })
        .collect()
}

/// Plans, calibrates with `ranges_for`, inserts, verifies.
fn quantize_with(
    m: &mut Model,
    c: &QuantConfig,
    special: &[(&str, Range)],
) -> (QuantPlan, QdqSummary) {
    let p = plan(m, c).unwrap();
    let s = insert_qdq(m, c, &ranges_for(&p, special)).unwrap();
    m.graph.verify().unwrap();
    (p, s)
}

fn node(g: &Graph, name: &str) -> NodeIndex {
    g.nodes()
        .find(|(_, n)| n.name == name)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// The node producing the value read at input `slot` of node `name`.
fn feeder(g: &Graph, name: &str, slot: usize) -> NodeIndex {
    g.input(node(g, name), slot).unwrap().node
}

fn count(g: &Graph, op: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op_type() == op).count()
}

fn tensor<'a>(s: &'a QdqSummary, name: &str, kind: TensorKind) -> &'a QuantizedTensor {
    s.tensors
        .iter()
        .find(|t| t.name == name && t.kind == kind)
        .unwrap_or_else(|| panic!("{name} ({kind:?}) not quantized: {:?}", s.tensors))
}

/// The scale / zero-point values read by a Q or DQ node.
fn params_of(g: &Graph, qdq: NodeIndex) -> (ValueRef, ValueRef) {
    (g.input(qdq, 1).unwrap(), g.input(qdq, 2).unwrap())
}

#[test]
fn weight_axes_follow_the_op() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    let wt = b.weight("convt.weight", &[3, 5, 1, 1]);
    let ct = b.op("ConvTranspose", "convt", &[c, wt], "ct");
    let f = b.op_with(
        "Flatten",
        "flat",
        &[ct],
        "f",
        vec![("axis", AttrValue::Int(1))],
    );
    let wg = b.weight("gemm.weight", &[4, 80]);
    let g1 = b.op_with(
        "Gemm",
        "gemm_t",
        &[f, wg],
        "g1",
        vec![("transB", AttrValue::Int(1))],
    );
    let wg2 = b.weight("gemm2.weight", &[4, 6]);
    let g2 = b.op("Gemm", "gemm", &[g1, wg2], "g2");
    let wm = b.weight("mm.weight", &[6, 7]);
    let mm = b.op("MatMul", "mm", &[g2, wm], "mm_out");
    let w3 = b.weight("mm3.weight", &[2, 7, 3]);
    let r = b.ints("shape", vec![2, 1, 7]);
    let mm3 = b.op("Reshape", "reshape", &[mm, r], "r");
    let mm3 = b.op("MatMul", "mm3", &[mm3, w3], "mm3_out");
    b.output(mm3);
    let mut m = b.m;
    let (_, s) = quantize_with(&mut m, &cfg(), &[]);
    let axis = |n: &str| tensor(&s, n, TensorKind::Weight).axis;
    let scales = |n: &str| tensor(&s, n, TensorKind::Weight).scales.len();
    assert_eq!((axis("conv.weight"), scales("conv.weight")), (Some(0), 3));
    assert_eq!((axis("convt.weight"), scales("convt.weight")), (Some(1), 5));
    assert_eq!((axis("gemm.weight"), scales("gemm.weight")), (Some(0), 4));
    assert_eq!((axis("gemm2.weight"), scales("gemm2.weight")), (Some(1), 6));
    assert_eq!((axis("mm.weight"), scales("mm.weight")), (Some(1), 7));
    // A batched (3-D) MatMul weight is quantized per tensor.
    assert_eq!((axis("mm3.weight"), scales("mm3.weight")), (None, 1));
    let g = &m.graph;
    // Weights are int8 constants behind a DequantizeLinear with the axis attribute.
    let dq = feeder(g, "convt", 1);
    assert_eq!(g[dq].op_type(), "DequantizeLinear");
    assert_eq!(g[dq].attr("axis").and_then(AttrValue::as_int), Some(1));
    let q = g.constant(g.input(dq, 0).unwrap()).unwrap();
    assert_eq!(q.dtype(), DataType::Int8);
    assert_eq!(
        g.value_name(g.input(dq, 0).unwrap()),
        "convt.weight_quantized"
    );
    assert_eq!(
        g.value_name(ValueRef::new(dq, 0)),
        "convt.weight_dequantized"
    );
    // The float weights are gone.
    assert!(g.find_value("convt.weight").is_none());

    // Per tensor when the configuration says so: a scalar scale and no axis.
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    b.output(c);
    let mut m = b.m;
    let mut c = cfg();
    c.weights.per_channel = false;
    let (_, s) = quantize_with(&mut m, &c, &[]);
    assert_eq!(tensor(&s, "conv.weight", TensorKind::Weight).axis, None);
    let dq = feeder(&m.graph, "conv", 1);
    assert!(m.graph[dq].attr("axis").is_none());
    assert_eq!(
        m.graph.constant(params_of(&m.graph, dq).0).unwrap().shape(),
        &[] as &[usize]
    );
}

#[test]
fn bias_is_int32_with_input_times_weight_scale() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    let f = b.op("Flatten", "flat", &[c], "f");
    let w = b.weight("fc.weight", &[48, 2]);
    let bias = b.constant("fc.bias", &[2], vec![0.3, -0.6]);
    let y = b.op_with(
        "Gemm",
        "fc",
        &[f, w, bias],
        "y",
        vec![("beta", AttrValue::Float(2.0))],
    );
    b.output(y);
    let mut m = b.m;
    let (_, s) = quantize_with(&mut m, &cfg(), &[("x", Range::new(-1.0, 3.0))]);
    let x_scale = tensor(&s, "x", TensorKind::Activation).scales[0];
    assert!((x_scale - 4.0 / 255.0).abs() < 1e-7);
    let w_scales = &tensor(&s, "conv.weight", TensorKind::Weight).scales;
    let bias = tensor(&s, "conv.bias", TensorKind::Bias);
    assert_eq!(bias.dtype, QuantType::Int32);
    assert_eq!(bias.axis, Some(0));
    assert_eq!(bias.zero_points, vec![0, 0, 0]);
    for (bs, ws) in bias.scales.iter().zip(w_scales) {
        assert_eq!(*bs, x_scale * ws);
    }
    let g = &m.graph;
    let dq = feeder(g, "conv", 2);
    assert_eq!(g[dq].op_type(), "DequantizeLinear");
    let q: Vec<i32> = g
        .constant(g.input(dq, 0).unwrap())
        .unwrap()
        .to_vec()
        .unwrap();
    let want: Vec<i32> = [0.5f32, -0.25, 0.125]
        .iter()
        .zip(&bias.scales)
        .map(|(v, s)| crate::quant::scheme::round_half_even((v / s) as f64) as i32)
        .collect();
    assert_eq!(q, want);
    // Gemm's beta is folded into its bias (then 1); the bias scale uses the Flatten output's
    // scale, which is the Conv output's (shared).
    let fc = node(g, "fc");
    assert_eq!(g[fc].attr("beta").and_then(AttrValue::as_float), Some(1.0));
    let fc_bias = tensor(&s, "fc.bias", TensorKind::Bias);
    let c_scale = tensor(&s, "c", TensorKind::Activation).scales[0];
    let fw = &tensor(&s, "fc.weight", TensorKind::Weight).scales;
    assert_eq!(fc_bias.scales, vec![c_scale * fw[0], c_scale * fw[1]]);
    let dq = feeder(g, "fc", 2);
    let q: Vec<i32> = g
        .constant(g.input(dq, 0).unwrap())
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(
        q[0],
        crate::quant::scheme::round_half_even((0.6 / fc_bias.scales[0]) as f64) as i32
    );
    assert_eq!(s.saturated_bias, 0);
}

#[test]
fn a_weight_scale_rises_where_its_int32_bias_would_saturate() {
    // uint16 input over [0, 1e-3] and int16 weights: scale products near 5e-13, so a bias
    // of 0.5 needs ~1e12 steps, beyond int32; ORT raises the weight scale instead.
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    b.output(c);
    let mut m = b.m;
    m.opset_import[0].version = 21;
    let sixteen = |dtype| TensorOverride {
        dtype: Some(dtype),
        symmetric: Some(dtype == QuantType::Int16),
        range: None,
    };
    let mut c16 = cfg();
    c16.overrides.insert("x".into(), sixteen(QuantType::Uint16));
    c16.overrides.insert("c".into(), sixteen(QuantType::Uint16));
    c16.overrides
        .insert("conv.weight".into(), sixteen(QuantType::Int16));
    // The scales the weight alone gives (what an 8-bit input keeps, below).
    let conv_weight = Tensor::from_vec(
        vec![3, 2, 1, 1],
        (0..6)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0 * (1.0 + i as f32 / 6.0))
            .collect(),
    )
    .unwrap();
    let own = |dtype| -> Vec<f32> {
        crate::quant::weights::quantize_weight(
            &conv_weight,
            QuantScheme::new(dtype, true),
            Some(0),
            None,
        )
        .unwrap()
        .params
        .iter()
        .map(|p| p.scale)
        .collect()
    };
    let before = own(QuantType::Int16);
    let (_, s) = quantize_with(&mut m, &c16, &[("x", Range::new(0.0, 1e-3))]);
    assert_eq!(s.saturated_bias, 0);
    let x_scale = tensor(&s, "x", TensorKind::Activation).scales[0];
    let w = tensor(&s, "conv.weight", TensorKind::Weight);
    assert_eq!(w.dtype, QuantType::Int16);
    let qrange = i32::MAX as f64 - (i32::MIN as f64 + 1.0);
    for ((ws, bias), old) in w.scales.iter().zip([0.5f64, -0.25, 0.125]).zip(&before) {
        let need = 1.0001 * 2.0 * bias.abs() / qrange;
        let product = f64::from(x_scale) * f64::from(*ws);
        assert!(
            product >= need * (1.0 - 1e-6) && product <= need * 1.001,
            "{product} {need}"
        );
        assert!(ws > old, "{ws} <= {old}");
    }
    // The stored integers are the weight requantized with the raised scales.
    let g = &m.graph;
    let dq = feeder(g, "conv", 1);
    let (scale, _) = params_of(g, dq);
    let stored: Vec<f32> = g.constant(scale).unwrap().to_vec().unwrap();
    assert_eq!(stored, w.scales);
    let q: Vec<i16> = g
        .constant(g.input(dq, 0).unwrap())
        .unwrap()
        .to_vec()
        .unwrap();
    assert!(q.iter().all(|v| v.unsigned_abs() < 32767), "{q:?}");
    // With an 8-bit input the products are large enough: nothing changes.
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    b.output(c);
    let mut m8 = b.m;
    let (_, s8) = quantize_with(&mut m8, &cfg(), &[]);
    let w8 = tensor(&s8, "conv.weight", TensorKind::Weight);
    let auto_scales = own(QuantType::Int8);
    assert_eq!(w8.scales, auto_scales);
}

#[test]
fn a_bias_that_cannot_be_quantized_stays_float() {
    // A per-channel Gemm weight with a bias broadcast over rows (shape [1, N]) cannot take a
    // 1-D per-channel scale: the bias stays float (ORT's tool crashes on this).
    let mut b = B::new();
    let x = b.input("x", &[2, 3]);
    let w = b.weight("w", &[3, 4]);
    let bias = b.constant("b", &[1, 4], vec![0.1, 0.2, 0.3, 0.4]);
    let y = b.op("Gemm", "gemm", &[x, w, bias], "y");
    b.output(y);
    let mut m = b.m;
    let (_, s) = quantize_with(&mut m, &cfg(), &[]);
    assert!(s.tensors.iter().all(|t| t.kind != TensorKind::Bias));
    let g = &m.graph;
    assert_eq!(g[feeder(g, "gemm", 2)].op_type(), "Constant");
}

#[test]
fn a_tensor_with_two_consumers_gets_one_pair() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c1 = b.conv("conv1", x, "c1", 2);
    let c2 = b.conv("conv2", x, "c2", 2);
    let y = b.op("Add", "add", &[c1, c2], "y");
    b.output(y);
    let mut m = b.m;
    let (p, _) = quantize_with(&mut m, &cfg(), &[]);
    assert_eq!(p.tensors, vec!["x", "c1", "c2", "y"]);
    let g = &m.graph;
    assert_eq!(feeder(g, "conv1", 0), feeder(g, "conv2", 0));
    let dq = feeder(g, "conv1", 0);
    assert_eq!(g.value_name(ValueRef::new(dq, 0)), "x_dequantized");
    let q = g.input(dq, 0).unwrap().node;
    assert_eq!(g[q].op_type(), "QuantizeLinear");
    assert_eq!(g.value_name(g.input(q, 0).unwrap()), "x");
    assert_eq!(g.value_name(params_of(g, q).0), "x_scale");
    assert_eq!(g.value_name(params_of(g, q).1), "x_zero_point");
    // x, c1, c2, y: four pairs.
    assert_eq!(count(g, "QuantizeLinear"), 4);
}

#[test]
fn data_movement_ops_share_their_input_parameters() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    let mp = b.op_with(
        "MaxPool",
        "pool",
        &[c],
        "p",
        vec![("kernel_shape", AttrValue::Ints(vec![2, 2]))],
    );
    let shape = b.ints("shape", vec![1, 3, 4, 4]);
    let r = b.op("Reshape", "reshape", &[c, shape], "r");
    let t = b.op_with(
        "Transpose",
        "tr",
        &[r],
        "t",
        vec![("perm", AttrValue::Ints(vec![0, 1, 3, 2]))],
    );
    let f = b.op("Flatten", "flat", &[mp], "f");
    b.output(t);
    b.output(f);
    let mut m = b.m;
    let (p, s) = quantize_with(&mut m, &cfg(), &[]);
    // Only x and the Conv output need a range.
    assert_eq!(p.tensors, vec!["x", "c"]);
    assert_eq!(p.nodes, vec!["conv", "pool", "reshape", "tr", "flat"]);
    let c_params = (
        tensor(&s, "c", TensorKind::Activation).scales.clone(),
        tensor(&s, "c", TensorKind::Activation).zero_points.clone(),
    );
    for name in ["p", "r", "t", "f"] {
        let a = tensor(&s, name, TensorKind::Activation);
        assert_eq!(
            (a.scales.clone(), a.zero_points.clone()),
            c_params,
            "{name}"
        );
        assert_eq!(a.shared_with.as_deref(), Some("c"), "{name}");
    }
    // The pairs read the very same scale / zero-point initializers.
    let g = &m.graph;
    let c_dq = feeder(g, "pool", 0);
    let t_q = g.input(g.outputs[0].value.node, 0).unwrap().node;
    assert_eq!(g[t_q].op_type(), "QuantizeLinear");
    assert_eq!(params_of(g, c_dq), params_of(g, t_q));
}

#[test]
fn concat_inputs_and_output_share_one_scale() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c1 = b.conv("conv1", x, "c1", 2);
    let c2 = b.conv("conv2", x, "c2", 2);
    let cat = b.op_with(
        "Concat",
        "cat",
        &[c1, c2],
        "cat",
        vec![("axis", AttrValue::Int(1))],
    );
    let y = b.conv("conv3", cat, "y", 6);
    b.output(y);
    let mut m = b.m;
    let (p, s) = quantize_with(
        &mut m,
        &cfg(),
        &[("c1", Range::new(-1.0, 1.0)), ("c2", Range::new(-3.0, 0.5))],
    );
    assert_eq!(p.tensors, vec!["x", "c1", "c2", "y"]);
    let want = QuantScheme::new(QuantType::Uint8, false).params(-3.0, 1.0, None);
    for name in ["c1", "c2", "cat"] {
        let a = tensor(&s, name, TensorKind::Activation);
        assert_eq!(a.scales, vec![want.scale], "{name}");
        assert_eq!(a.zero_points, vec![want.zero_point], "{name}");
        assert_eq!(a.range, Some(Range::new(-3.0, 1.0)));
    }
    assert_eq!(
        tensor(&s, "cat", TensorKind::Activation)
            .shared_with
            .as_deref(),
        Some("c1")
    );
}

#[test]
fn relu_is_folded_into_an_asymmetric_producer() {
    let build = |extra_reader: bool| {
        let mut b = B::new();
        let x = b.input("x", &[1, 2, 4, 4]);
        let c = b.conv("conv", x, "c", 2);
        let r = b.op("Relu", "relu", &[c], "r");
        let y = b.conv("conv2", r, "y", 3);
        if extra_reader {
            let z = b.op("Add", "add", &[c, y], "z");
            b.output(z);
        } else {
            b.output(y);
        }
        b.m
    };
    // Asymmetric uint8: the Relu goes, the Conv writes `r` with r's range.
    let mut m = build(false);
    let (p, s) = quantize_with(&mut m, &cfg(), &[("r", Range::new(0.0, 2.0))]);
    assert_eq!(p.tensors, vec!["x", "r", "y"]);
    assert_eq!(s.removed_activations, vec!["relu"]);
    assert_eq!(count(&m.graph, "Relu"), 0);
    let r = tensor(&s, "r", TensorKind::Activation);
    assert_eq!(r.zero_points, vec![0]);
    assert_eq!(r.range, Some(Range::new(0.0, 2.0)));
    let g = &m.graph;
    let conv = node(g, "conv");
    assert_eq!(g.value_name(ValueRef::new(conv, 0)), "r");
    assert!(g.find_value("c").is_none());

    // Symmetric activations: zero is mid-range, so the Relu must stay.
    let mut m = build(false);
    let mut c = cfg();
    c.activations = QuantScheme::new(QuantType::Int8, true);
    let (p, s) = quantize_with(&mut m, &c, &[]);
    assert!(s.removed_activations.is_empty());
    assert_eq!(count(&m.graph, "Relu"), 1);
    // The Conv output, read only by the Relu, is quantized with the Relu output's range.
    assert_eq!(p.tensors, vec!["x", "r", "y"]);
    let ct = tensor(&s, "c", TensorKind::Activation);
    assert_eq!(ct.range, Some(Range::new(-1.0, 2.0)));
    assert_eq!(ct.scales, tensor(&s, "r", TensorKind::Activation).scales);

    // The Conv output has another reader: the Relu must stay, and c keeps its own range.
    let mut m = build(true);
    let (p, s) = quantize_with(&mut m, &cfg(), &[]);
    assert!(s.removed_activations.is_empty());
    assert_eq!(p.tensors, vec!["x", "c", "r", "y", "z"]);
    assert_eq!(count(&m.graph, "Relu"), 1);

    // A Clip with min 0 is folded too; one with min -1 is not.
    for (min, folded) in [(0.0, true), (-1.0, false)] {
        let mut b = B::new();
        let x = b.input("x", &[1, 2, 4, 4]);
        let c = b.conv("conv", x, "c", 2);
        let lo = b.constant("lo", &[], vec![min]);
        let hi = b.constant("hi", &[], vec![6.0]);
        let r = b.op("Clip", "clip", &[c, lo, hi], "r");
        b.output(r);
        let mut m = b.m;
        let (_, s) = quantize_with(&mut m, &cfg(), &[]);
        assert_eq!(
            s.removed_activations.len(),
            usize::from(folded),
            "min {min}"
        );
        // The bounds go with the Clip.
        assert_eq!(m.graph.find_value("lo").is_none(), folded);
    }
}

#[test]
fn a_folded_relu_never_shares_a_scale_with_negative_values() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c1 = b.conv("conv1", x, "c1", 2);
    let r = b.op("Relu", "relu", &[c1], "r");
    let c2 = b.conv("conv2", x, "c2", 2);
    let cat = b.op_with(
        "Concat",
        "cat",
        &[r, c2],
        "cat",
        vec![("axis", AttrValue::Int(1))],
    );
    b.output(cat);
    let mut m = b.m;
    let (p, s) = quantize_with(&mut m, &cfg(), &[("r", Range::new(0.0, 1.0))]);
    assert_eq!(s.removed_activations, vec!["relu"]);
    // c2 may be negative: no unified scale, so r keeps zero point 0 (the clamp).
    assert!(p.tensors.contains(&"cat".to_string()));
    assert_eq!(tensor(&s, "r", TensorKind::Activation).zero_points, vec![0]);
    assert_eq!(tensor(&s, "cat", TensorKind::Activation).shared_with, None);
}

#[test]
fn exclusions_and_op_types_leave_nodes_float() {
    let build = || {
        let mut b = B::new();
        let x = b.input("x", &[1, 2, 4, 4]);
        let c1 = b.conv("conv1", x, "c1", 2);
        let s = b.op("Sigmoid", "sig", &[c1], "s");
        let y = b.op("Mul", "mul", &[c1, s], "y");
        b.output(y);
        b.m
    };
    let reason = |p: &QuantPlan, n: &str| {
        p.skipped
            .iter()
            .find(|s| s.node == n)
            .map(|s| s.reason.clone())
            .unwrap_or_default()
    };
    let m = build();
    let p = plan(&m, &cfg()).unwrap();
    assert_eq!(p.nodes, vec!["conv1", "sig", "mul"]);
    assert_eq!(p.fixed, vec![("s".to_string(), Range::new(0.0, 1.0))]);

    let mut c = cfg();
    c.exclude_nodes.insert("sig".into());
    let p = plan(&m, &c).unwrap();
    assert_eq!(p.nodes, vec!["conv1", "mul"]);
    assert!(reason(&p, "sig").contains("exclude_nodes"));
    // The Sigmoid's output is still the Mul's input: calibrated now, not fixed.
    assert_eq!(p.tensors, vec!["x", "c1", "s", "y"]);

    let mut c = cfg();
    c.exclude_op_types.insert("Mul".into());
    let p = plan(&m, &c).unwrap();
    assert_eq!(p.nodes, vec!["conv1", "sig"]);
    assert!(reason(&p, "mul").contains("exclude_op_types"));

    let mut c = cfg();
    c.op_types = Some(BTreeSet::from(["Conv".to_string(), "Erf".to_string()]));
    let p = plan(&m, &c).unwrap();
    assert_eq!(p.nodes, vec!["conv1"]);
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);

    let mut c = cfg();
    c.only_nodes = Some(BTreeSet::from(["mul".to_string()]));
    let mut m2 = build();
    let (p, s) = quantize_with(&mut m2, &c, &[]);
    assert_eq!(p.nodes, vec!["mul"]);
    // Sigmoid is not quantized, so its output has no fixed range: it is calibrated.
    assert_eq!(p.tensors, vec!["c1", "s", "y"]);
    assert!(s.tensors.iter().all(|t| t.kind == TensorKind::Activation));
    assert_eq!(count(&m2.graph, "QuantizeLinear"), 3);

    // Softmax is pinned by default, quantized with [0, 1] when not pinned.
    let mut b = B::new();
    let x = b.input("x", &[2, 3]);
    let y = b.op("Softmax", "sm", &[x], "y");
    b.output(y);
    let p = plan(&b.m, &cfg()).unwrap();
    assert!(p.nodes.is_empty());
    assert!(reason(&p, "sm").contains("pinned"));
    let mut c = cfg();
    c.pin_ops.clear();
    let p = plan(&b.m, &c).unwrap();
    assert_eq!(p.nodes, vec!["sm"]);
    assert_eq!(p.fixed, vec![("y".to_string(), Range::new(0.0, 1.0))]);
}

#[test]
fn non_float_inputs_and_unknown_types_are_skipped_with_a_reason() {
    let mut b = B::new();
    let i = b.ints("i", vec![1, 2]);
    let j = b.ints("j", vec![3, 4]);
    let s = b.op("Add", "int_add", &[i, j], "s");
    let opaque = b.op("CustomOp", "custom", &[s], "u");
    let w = b.constant("w", &[], vec![2.0]);
    let y = b.op("Mul", "mystery", &[opaque, w], "y");
    b.output(y);
    let p = plan(&b.m, &cfg()).unwrap();
    assert!(p.nodes.is_empty());
    let reasons: Vec<(&str, &str)> = p
        .skipped
        .iter()
        .map(|s| (s.node.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("int_add", "input 'i' is int64, not float32"),
            ("mystery", "element type of input 'u' is unknown"),
        ]
    );
}

#[test]
fn overrides_set_type_and_fixed_ranges() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    let shape = b.ints("shape", vec![1, -1]);
    let r = b.op("Reshape", "reshape", &[c, shape], "r");
    b.output(r);
    let mut m = b.m;
    let mut conf = cfg();
    conf.overrides.insert(
        "c".into(),
        TensorOverride {
            dtype: Some(QuantType::Uint16),
            ..Default::default()
        },
    );
    conf.overrides.insert(
        "x".into(),
        TensorOverride {
            range: Some(Range::new(-2.0, 2.0)),
            symmetric: Some(true),
            ..Default::default()
        },
    );
    conf.overrides.insert(
        "r".into(),
        TensorOverride {
            dtype: Some(QuantType::Int8),
            ..Default::default()
        },
    );
    m.opset_import[0].version = 21;
    let p = plan(&m, &conf).unwrap();
    assert_eq!(p.fixed, vec![("x".to_string(), Range::new(-2.0, 2.0))]);
    // r has its own type: it no longer shares c's parameters and needs a range.
    assert_eq!(p.tensors, vec!["c", "r"]);
    let s = insert_qdq(&mut m, &conf, &ranges_for(&p, &[])).unwrap();
    m.graph.verify().unwrap();
    let xt = tensor(&s, "x", TensorKind::Activation);
    assert_eq!(
        (xt.dtype, xt.symmetric, xt.zero_points[0]),
        (QuantType::Uint8, true, 128)
    );
    assert!((xt.scales[0] - 4.0 / 255.0).abs() < 1e-7);
    let ct = tensor(&s, "c", TensorKind::Activation);
    assert_eq!(ct.dtype, QuantType::Uint16);
    assert!((ct.scales[0] - 3.0 / 65535.0).abs() < 1e-9);
    let rt = tensor(&s, "r", TensorKind::Activation);
    assert_eq!(
        (rt.dtype, rt.shared_with.as_deref()),
        (QuantType::Int8, None)
    );
    let g = &m.graph;
    let zp = g.constant(params_of(g, feeder(g, "reshape", 0)).1).unwrap();
    assert_eq!(zp.dtype(), DataType::Uint16);
    // 16-bit types need opset 21.
    assert_eq!(required_opset(&conf), 21);
}

#[test]
fn graph_outputs_keep_their_names() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "y", 2);
    let z = b.conv("conv2", c, "z", 3);
    b.output(c);
    b.output(z);
    let mut m = b.m;
    quantize_with(&mut m, &cfg(), &[]);
    let g = &m.graph;
    let names: Vec<&str> = g.outputs.iter().map(|o| g.value_name(o.value)).collect();
    assert_eq!(names, vec!["y", "z"]);
    for o in &g.outputs {
        assert_eq!(g[o.value.node].op_type(), "DequantizeLinear");
    }
    // The Conv now writes y_QuantizeLinear_Input; conv2 reads the dequantized y.
    let conv = node(g, "conv");
    assert_eq!(
        g.value_name(ValueRef::new(conv, 0)),
        "y_QuantizeLinear_Input"
    );
    assert_eq!(g.input(node(g, "conv2"), 0), Some(g.outputs[0].value));
}

#[test]
fn a_missing_range_is_an_error_naming_the_tensor() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    b.output(c);
    let mut m = b.m;
    let before = m.to_proto();
    let mut ranges = Ranges::new();
    ranges.insert("x", Range::new(0.0, 1.0));
    let err = insert_qdq(&mut m, &cfg(), &ranges).unwrap_err().to_string();
    assert!(err.contains("'c'"), "{err}");
    assert_eq!(
        m.to_proto(),
        before,
        "a failed insertion must leave the model as it was"
    );
}

#[test]
fn the_opset_must_allow_the_form() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    b.output(c);
    let mut m = b.m;
    m.opset_import[0].version = 12;
    let r = Ranges::new();
    let err = insert_qdq(&mut m, &cfg(), &r).unwrap_err().to_string();
    assert!(err.contains("opset 13") && err.contains("12"), "{err}");
    assert_eq!(required_opset(&cfg()), 13);
    let mut c = cfg();
    c.weights.per_channel = false;
    assert_eq!(required_opset(&c), 10);
}

#[test]
fn an_already_quantized_graph_is_not_quantized_twice() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 4, 4]);
    let c = b.conv("conv", x, "c", 2);
    let y = b.op("Sigmoid", "sig", &[c], "y");
    b.output(y);
    let mut m = b.m;
    quantize_with(&mut m, &cfg(), &[]);
    let q = count(&m.graph, "QuantizeLinear");
    let dq = count(&m.graph, "DequantizeLinear");
    let p = plan(&m, &cfg()).unwrap();
    assert!(p.nodes.is_empty() && p.tensors.is_empty(), "{p:?}");
    let reasons: Vec<&str> = p.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons.iter().all(|r| r.starts_with("already quantized")),
        "{reasons:?}"
    );
    let s = insert_qdq(&mut m, &cfg(), &Ranges::new()).unwrap();
    m.graph.verify().unwrap();
    assert!(s.tensors.is_empty());
    assert_eq!(
        (
            count(&m.graph, "QuantizeLinear"),
            count(&m.graph, "DequantizeLinear")
        ),
        (q, dq)
    );
}

#[test]
fn embeddings_are_weights_and_the_gather_shares_them() {
    let mut b = B::new();
    let table = b.weight("emb", &[10, 4]);
    let ids = b.ints("ids", vec![1, 3]);
    let e = b.op("Gather", "gather", &[table, ids], "e");
    let x = b.input("x", &[2, 4]);
    let y = b.op("Add", "add", &[e, x], "y");
    b.output(y);
    let mut m = b.m;
    let (p, s) = quantize_with(&mut m, &cfg(), &[]);
    assert_eq!(p.tensors, vec!["x", "y"]);
    let w = tensor(&s, "emb", TensorKind::Weight);
    assert_eq!((w.dtype, w.axis), (QuantType::Int8, None));
    let e = tensor(&s, "e", TensorKind::Activation);
    assert_eq!(e.shared_with.as_deref(), Some("emb"));
    assert_eq!(
        (e.scales.clone(), e.zero_points.clone()),
        (w.scales.clone(), w.zero_points.clone())
    );
    let g = &m.graph;
    // The Gather output's pair reads the table's scale and zero point.
    let table_dq = feeder(g, "gather", 0);
    let e_dq = feeder(g, "add", 0);
    assert_eq!(params_of(g, table_dq), params_of(g, e_dq));
}

#[test]
fn constant_operands_use_the_activation_scheme_and_weights_are_quantized_once() {
    let mut b = B::new();
    let x = b.input("x", &[2, 3]);
    let w = b.weight("w", &[3, 3]);
    let k = b.constant("k", &[3], vec![-0.5, 0.25, 1.0]);
    let a = b.op("MatMul", "mm1", &[x, w], "a");
    let a2 = b.op("MatMul", "mm2", &[a, w], "a2");
    let y = b.op("Add", "add", &[a2, k], "y");
    b.output(y);
    let mut m = b.m;
    let (_, s) = quantize_with(&mut m, &cfg(), &[]);
    let weights: Vec<&QuantizedTensor> = s
        .tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Weight)
        .collect();
    assert_eq!(weights.len(), 2, "{weights:?}");
    let kt = tensor(&s, "k", TensorKind::Weight);
    let want = QuantScheme::new(QuantType::Uint8, false).params(-0.5, 1.0, None);
    assert_eq!(
        (kt.dtype, kt.scales[0], kt.zero_points[0]),
        (QuantType::Uint8, want.scale, want.zero_point)
    );
    let g = &m.graph;
    assert_eq!(feeder(g, "mm1", 1), feeder(g, "mm2", 1));
}

#[test]
fn pad_shares_only_when_it_pads_with_zero() {
    for (value, shares) in [(0.0f32, true), (5.0, false)] {
        let mut b = B::new();
        let x = b.input("x", &[1, 2, 4, 4]);
        let c = b.conv("conv", x, "c", 2);
        let pads = b.ints("pads", vec![0, 0, 1, 1, 0, 0, 1, 1]);
        let v = b.constant("v", &[], vec![value]);
        let y = b.op("Pad", "pad", &[c, pads, v], "y");
        b.output(y);
        let mut m = b.m;
        let (p, s) = quantize_with(&mut m, &cfg(), &[]);
        assert_eq!(p.tensors.contains(&"y".to_string()), !shares, "pad {value}");
        let yt = tensor(&s, "y", TensorKind::Activation);
        assert_eq!(yt.shared_with.is_some(), shares);
    }
}

#[test]
fn subgraph_bodies_are_reported_and_left_float() {
    let mut body = Graph::new("then");
    let o = ValueRef::new(body.add_node(Node::outer("x")), 0);
    let k = ValueRef::new(
        body.add_node(Node::initializer("two", Tensor::scalar(2.0f32))),
        0,
    );
    let mul = body.add_node(Node::op("Mul", "inner_mul", &["t"]));
    body.connect(o, mul, 0);
    body.connect(k, mul, 1);
    body.outputs.push(GraphOutput {
        value: ValueRef::new(mul, 0),
        info: ValueInfo::tensor("t", DataType::Float, &[Dim::Known(2)]),
    });
    let mut els = body.clone();
    els.name = "else".into();
    let mut b = B::new();
    let x = b.input("x", &[2]);
    let cond = {
        let info = ValueInfo::tensor("cond", DataType::Bool, &[]);
        ValueRef::new(b.g().add_node(Node::input(info)), 0)
    };
    let iff = b.g().add_node(
        Node::op("If", "branch", &["y"])
            .with_attr("then_branch", AttrValue::Graph(Box::new(body)))
            .with_attr("else_branch", AttrValue::Graph(Box::new(els))),
    );
    b.g().connect(cond, iff, 0);
    b.g().capture(x, iff);
    b.output(ValueRef::new(iff, 0));
    let m = b.m;
    m.graph.verify().unwrap();
    let p = plan(&m, &cfg()).unwrap();
    assert!(p.nodes.is_empty() && p.tensors.is_empty());
    assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
    assert!(p
        .skipped
        .iter()
        .all(|s| s.node == "inner_mul" && s.reason.contains("'branch' (If)")));
}

#[test]
fn insertion_is_deterministic() {
    let build = || {
        let mut b = B::new();
        let x = b.input("x", &[1, 2, 4, 4]);
        let c1 = b.conv("conv1", x, "c1", 2);
        let c2 = b.conv("conv2", x, "c2", 2);
        let cat = b.op_with(
            "Concat",
            "cat",
            &[c1, c2],
            "cat",
            vec![("axis", AttrValue::Int(1))],
        );
        let r = b.op("Relu", "relu", &[cat], "r");
        b.output(r);
        b.m
    };
    let mut a = build();
    let mut b = build();
    quantize_with(&mut a, &cfg(), &[]);
    quantize_with(&mut b, &cfg(), &[]);
    assert_eq!(a.to_proto(), b.to_proto());
}

#[test]
fn a_decomposed_rmsnorm_pinned_as_a_unit_stays_float() {
    // x → RMSNorm (Mul(x, x), ReduceMean, Add eps, Sqrt, Reciprocal, Mul(x, ·), Mul(weight)) →
    // MatMul; the residual Add(x, y) is outside the unit.
    let mut b = B::new();
    let x = b.input("x", &[2, 8]);
    let sq = b.op("Mul", "sq", &[x, x], "sq");
    let ms = b.op_with(
        "ReduceMean",
        "ms",
        &[sq],
        "ms",
        vec![("axes", AttrValue::Ints(vec![-1]))],
    );
    let eps = b.constant("eps", &[], vec![1e-5]);
    let ve = b.op("Add", "add_eps", &[ms, eps], "ve");
    let r = b.op("Sqrt", "sqrt", &[ve], "r");
    let inv = b.op("Reciprocal", "inv", &[r], "inv");
    let n = b.op("Mul", "normed", &[x, inv], "n");
    let w = b.weight("norm.weight", &[8]);
    let y = b.op("Mul", "scaled", &[n, w], "y");
    let mw = b.weight("proj", &[8, 4]);
    let p = b.op("MatMul", "proj", &[y, mw], "p");
    let z = b.op("Add", "residual", &[x, y], "z");
    b.output(p);
    b.output(z);
    let unit = ["sq", "add_eps", "normed", "scaled"];
    let mut c = cfg();
    let plan_of = |c: &QuantConfig| plan(&b.m, c).unwrap();
    let p = plan_of(&c);
    assert!(
        unit.iter().all(|n| p.nodes.contains(&n.to_string())),
        "{:?}",
        p.nodes
    );
    c.pin_ops.insert("SimplifiedLayerNormalization".into());
    let p = plan_of(&c);
    assert_eq!(p.nodes, vec!["proj", "residual"]);
    for n in unit {
        let s = p.skipped.iter().find(|s| s.node == n).unwrap();
        assert!(s.reason.contains("pinned as a unit"), "{n}: {}", s.reason);
    }
}
