//! Dynamic quantization on hand-built graphs: the structure of each rewrite, axes, bias
//! handling, sharing, exclusion, `Constant`-node weights, subgraphs and skip reasons.

use std::collections::BTreeSet;

use super::*;
use crate::cleanup::test_util::{op_node, output};
use crate::ir::{
    AttrValue, ConstantAttr, ConstantOrigin, Dim, Node, TensorSource, ValueInfo, ValueRef,
};
use crate::quant::scheme::QuantScheme;
use crate::tensor::{DataType, Tensor};

// ---------------------------------------------------------------- building graphs

fn input(g: &mut Graph, name: &str, dims: &[i64]) -> ValueRef {
    let d: Vec<Dim> = dims.iter().map(|&n| Dim::Known(n)).collect();
    ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(name, DataType::Float, &d))),
        0,
    )
}

fn init(g: &mut Graph, name: &str, shape: &[usize], v: Vec<f32>) -> ValueRef {
    let t = Tensor::from_vec(shape.to_vec(), v).unwrap();
    ValueRef::new(g.add_node(Node::initializer(name, t)), 0)
}

/// A paddle-style weight: an ONNX `Constant` operator.
fn constant_op(g: &mut Graph, name: &str, shape: &[usize], v: Vec<f32>) -> ValueRef {
    let mut node = Node::initializer(name, Tensor::from_vec(shape.to_vec(), v).unwrap());
    if let NodeKind::Constant { origin, .. } = &mut node.kind {
        *origin = ConstantOrigin::ConstantOp {
            attr: ConstantAttr::Value,
            domain: String::new(),
            attr_doc_string: String::new(),
            source: TensorSource::none(),
        };
    }
    node.name = format!("{name}_node");
    ValueRef::new(g.add_node(node), 0)
}

fn op(g: &mut Graph, op_type: &str, name: &str, inputs: &[ValueRef], out: &str) -> ValueRef {
    op_attrs(g, op_type, name, inputs, out, vec![])
}

fn op_attrs(
    g: &mut Graph,
    op_type: &str,
    name: &str,
    inputs: &[ValueRef],
    out: &str,
    attrs: Vec<(&str, AttrValue)>,
) -> ValueRef {
    let node = attrs
        .into_iter()
        .fold(Node::op(op_type, name, &[out]), |n, (k, v)| {
            n.with_attr(k, v)
        });
    op_node(g, node, inputs)
}

/// Deterministic weights in [-1, 1] with one large entry per column so per-column scales
/// differ.
fn weights(k: usize, n: usize) -> Vec<f32> {
    (0..k * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            if r == 0 {
                (c + 1) as f32 * 0.5
            } else {
                ((i * 37 % 19) as f32 - 9.0) / 10.0
            }
        })
        .collect()
}

fn mlp(opset: i64) -> Model {
    let mut m = Model::new(opset);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 4]);
    let w = init(g, "fc1.weight", &[4, 3], weights(4, 3));
    let y = op(g, "MatMul", "fc1", &[x, w], "y");
    output(g, y);
    m
}

fn run(m: &mut Model, config: &QuantConfig) -> DynamicSummary {
    let s = quantize_dynamic(m, config).expect("quantize_dynamic runs");
    m.graph.verify().expect("graph verifies");
    s
}

// ---------------------------------------------------------------- reading graphs

fn find(g: &Graph, op_type: &str) -> Vec<NodeIndex> {
    g.nodes()
        .filter(|(_, n)| n.op_type() == op_type && n.is_operator())
        .map(|(i, _)| i)
        .collect()
}

fn one(g: &Graph, op_type: &str) -> NodeIndex {
    let v = find(g, op_type);
    assert_eq!(v.len(), 1, "expected one {op_type}, found {}", v.len());
    v[0]
}

fn input_names(g: &Graph, n: NodeIndex) -> Vec<String> {
    g.inputs(n)
        .into_iter()
        .map(|v| v.map_or(String::new(), |v| g.value_name(v).to_string()))
        .collect()
}

fn constant_named(g: &Graph, name: &str) -> Tensor {
    let v = g
        .find_value(name)
        .unwrap_or_else(|| panic!("no value {name}"));
    g.constant(v)
        .unwrap_or_else(|| panic!("{name} is not a constant"))
        .clone()
}

fn ops(g: &Graph) -> Vec<String> {
    let mut v: Vec<String> = g
        .nodes()
        .filter(|(_, n)| n.is_operator())
        .map(|(_, n)| n.op_type().to_string())
        .collect();
    v.sort();
    v
}

fn per_tensor() -> QuantConfig {
    let mut c = QuantConfig::default();
    c.weights.per_channel = false;
    c
}

// ---------------------------------------------------------------- MatMul

#[test]
fn matmul_becomes_ort_integer_chain() {
    let mut m = mlp(13);
    let s = run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    assert_eq!(s.nodes, vec!["fc1"]);
    assert!(s.skipped.is_empty());

    let dql = one(g, "DynamicQuantizeLinear");
    assert_eq!(input_names(g, dql), vec!["x"]);
    assert_eq!(g[dql].name, "x_QuantizeLinear");
    let outs: Vec<&str> = g[dql].outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        outs,
        vec![
            "x_dynamic_quantized",
            "x_dynamic_scale",
            "x_dynamic_zero_point"
        ]
    );

    let mmi = one(g, "MatMulInteger");
    assert_eq!(g[mmi].name, "fc1_quant");
    assert_eq!(
        input_names(g, mmi),
        vec![
            "x_dynamic_quantized",
            "fc1.weight_quantized",
            "x_dynamic_zero_point",
            "fc1.weight_zero_point"
        ]
    );
    let cast = one(g, "Cast");
    assert_eq!(input_names(g, cast), vec!["y_output_quantized"]);
    assert_eq!(
        g[cast].attr("to").and_then(|a| a.as_int()),
        Some(i64::from(DataType::Float.onnx()))
    );
    // Two Muls: the scales product and the output scaling, which keeps the name y.
    let muls = find(g, "Mul");
    assert_eq!(muls.len(), 2);
    let y = g.outputs[0].value;
    assert_eq!(g.value_name(y), "y");
    assert_eq!(g[y.node].op_type(), "Mul");
    assert_eq!(g[y.node].name, "fc1_quant_output_scale_mul");
    assert_eq!(
        input_names(g, y.node),
        vec!["y_output_quantized_cast_output", "y_scales_mul"]
    );
    let scales = g.find_value("y_scales_mul").unwrap();
    assert_eq!(
        input_names(g, scales.node),
        vec!["x_dynamic_scale", "fc1.weight_scale"]
    );
    // The float weight is gone; nothing else is left over.
    assert!(g.find_value("fc1.weight").is_none());
    assert_eq!(
        ops(g),
        vec![
            "Cast",
            "DynamicQuantizeLinear",
            "MatMulInteger",
            "Mul",
            "Mul"
        ]
    );
    assert_eq!(s.changes.get("MatMul → MatMulInteger"), 1);
    assert_eq!(s.changes.get("float weights removed"), 1);
}

#[test]
fn matmul_weight_is_int8_symmetric_per_column() {
    let mut m = mlp(13);
    let s = run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    let w = weights(4, 3);
    let q = constant_named(g, "fc1.weight_quantized");
    assert_eq!(q.dtype(), DataType::Int8);
    assert_eq!(q.shape(), &[4, 3]);
    let scale = constant_named(g, "fc1.weight_scale");
    assert_eq!(scale.shape(), &[3]);
    let zp = constant_named(g, "fc1.weight_zero_point");
    assert_eq!((zp.dtype(), zp.shape()), (DataType::Int8, &[3usize][..]));
    assert_eq!(zp.to_vec::<i8>().unwrap(), vec![0, 0, 0]);
    // Column c's scale is its absmax / 127; dequantized values are within half a step.
    let sc: Vec<f32> = scale.to_vec().unwrap();
    for c in 0..3 {
        let absmax = (0..4).map(|r| w[r * 3 + c].abs()).fold(0.0f32, f32::max);
        assert!((sc[c] - absmax / 127.0).abs() < 1e-7, "column {c}");
    }
    let qv: Vec<i8> = q.to_vec().unwrap();
    for (i, (&qi, &wi)) in qv.iter().zip(&w).enumerate() {
        let back = f32::from(qi) * sc[i % 3];
        assert!((back - wi).abs() <= sc[i % 3] / 2.0 + 1e-6, "element {i}");
    }
    assert_eq!(
        s.weights,
        vec![DynamicWeight {
            name: "fc1.weight".into(),
            dtype: QuantType::Int8,
            axis: Some(1),
            scales: sc,
        }]
    );
}

#[test]
fn per_tensor_weights_have_scalar_params() {
    let mut m = mlp(13);
    let s = run(&mut m, &per_tensor());
    let g = &m.graph;
    assert_eq!(
        constant_named(g, "fc1.weight_scale").shape(),
        &[] as &[usize]
    );
    assert_eq!(
        constant_named(g, "fc1.weight_zero_point").shape(),
        &[] as &[usize]
    );
    assert_eq!(s.weights[0].axis, None);
    assert_eq!(s.weights[0].scales.len(), 1);
    // Largest |w| is 1.5 (row 0, column 2).
    assert!((s.weights[0].scales[0] - 1.5 / 127.0).abs() < 1e-7);
}

#[test]
fn reduce_range_and_uint8_weights_follow_the_config() {
    let mut c = per_tensor();
    c.weights.scheme.reduce_range = true;
    let mut m = mlp(13);
    let s = run(&mut m, &c);
    assert!((s.weights[0].scales[0] - 1.5 / 64.0).abs() < 1e-7);

    let mut c = per_tensor();
    c.weights.scheme = QuantScheme::new(QuantType::Uint8, false);
    let mut m = mlp(13);
    let s = run(&mut m, &c);
    let zp = constant_named(&m.graph, "fc1.weight_zero_point");
    assert_eq!(zp.dtype(), DataType::Uint8);
    assert_eq!(s.weights[0].dtype, QuantType::Uint8);
    assert!(zp.to_vec::<u8>().unwrap()[0] > 0);
}

#[test]
fn batched_weight_zero_point_is_scalar_or_full_shape() {
    // B of shape [2, 3, 2]: ORT takes a scalar or [2, 1, 2] zero point, not [2].
    let build = || {
        let mut m = Model::new(13);
        let g = &mut m.graph;
        let x = input(g, "x", &[2, 4, 3]);
        let w = init(g, "w", &[2, 3, 2], weights(6, 2));
        let y = op(g, "MatMul", "mm", &[x, w], "y");
        output(g, y);
        m
    };
    let mut m = build();
    let s = run(&mut m, &QuantConfig::default());
    assert_eq!(s.weights[0].axis, Some(2));
    assert_eq!(constant_named(&m.graph, "w_scale").shape(), &[2]);
    assert_eq!(
        constant_named(&m.graph, "w_zero_point").shape(),
        &[] as &[usize]
    );

    let mut c = QuantConfig::default();
    c.weights.scheme = QuantScheme::new(QuantType::Uint8, false);
    let mut m = build();
    run(&mut m, &c);
    let zp = constant_named(&m.graph, "w_zero_point");
    assert_eq!(zp.shape(), &[2, 1, 2]);
    let z: Vec<u8> = zp.to_vec().unwrap();
    assert_eq!(z[0..2], z[2..4], "tiled per batch");
}

#[test]
fn shared_activation_and_shared_weight_are_quantized_once() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 4]);
    let w = init(g, "w", &[4, 3], weights(4, 3));
    let v = init(g, "v", &[4, 3], weights(4, 3));
    let a = op(g, "MatMul", "a", &[x, w], "ya");
    let b = op(g, "MatMul", "b", &[x, w], "yb");
    let c = op(g, "MatMul", "c", &[x, v], "yc");
    for o in [a, b, c] {
        output(g, o);
    }
    let s = run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    assert_eq!(find(g, "DynamicQuantizeLinear").len(), 1);
    assert_eq!(find(g, "MatMulInteger").len(), 3);
    let names: Vec<&str> = s.weights.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, vec!["w", "v"]);
    assert!(g.find_value("w_quantized_1").is_none());
    assert_eq!(s.changes.get("DynamicQuantizeLinear added"), 1);
    assert_eq!(s.changes.get("weights quantized"), 2);
    assert_eq!(s.changes.get("float weights removed"), 2);
}

#[test]
fn float_weight_read_elsewhere_is_kept() {
    let mut m = mlp(13);
    let g = &mut m.graph;
    let w = g.find_value("fc1.weight").unwrap();
    let n = op(g, "Neg", "neg", &[w], "neg_w");
    output(g, n);
    let s = run(&mut m, &QuantConfig::default());
    assert_eq!(s.nodes, vec!["fc1"]);
    assert!(m.graph.find_value("fc1.weight").is_some());
    assert_eq!(s.changes.get("float weights removed"), 0);
}

#[test]
fn weights_in_constant_nodes_are_quantized_and_the_node_dropped() {
    let mut m = Model::new(12);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 4]);
    let w = constant_op(g, "linear_0.w_0", &[4, 3], weights(4, 3));
    let y = op(g, "MatMul", "", &[x, w], "linear_0.tmp_0");
    output(g, y);
    let s = run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    // Unnamed node: reported by its output.
    assert_eq!(s.nodes, vec!["linear_0.tmp_0"]);
    assert!(g.find_value("linear_0.w_0").is_none());
    assert_eq!(
        constant_named(g, "linear_0.w_0_quantized").dtype(),
        DataType::Int8
    );
    // Unnamed nodes take their output's name as the base of the new names.
    assert_eq!(g[one(g, "MatMulInteger")].name, "linear_0.tmp_0_quant");
}

#[test]
fn new_names_never_collide() {
    let mut m = mlp(13);
    let g = &mut m.graph;
    // Values already called like the names the rewrite would pick.
    let taken = init(g, "x_dynamic_quantized", &[1], vec![0.0]);
    let taken2 = init(g, "fc1.weight_quantized", &[1], vec![0.0]);
    for t in [taken, taken2] {
        output(g, t);
    }
    run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    let mmi = one(g, "MatMulInteger");
    assert_eq!(
        input_names(g, mmi)[..2],
        [
            "x_dynamic_quantized_1".to_string(),
            "fc1.weight_quantized_1".to_string()
        ]
    );
}

#[test]
fn output_is_deterministic() {
    let build = || {
        let mut m = Model::new(13);
        let g = &mut m.graph;
        let x = input(g, "x", &[2, 4]);
        let w = init(g, "w", &[4, 3], weights(4, 3));
        let v = init(g, "v", &[3, 3], weights(3, 3));
        let a = op(g, "MatMul", "a", &[x, w], "h");
        let r = op(g, "Relu", "r", &[a], "hr");
        let b = op(g, "MatMul", "b", &[r, v], "y");
        output(g, b);
        m
    };
    let (mut m1, mut m2) = (build(), build());
    run(&mut m1, &QuantConfig::default());
    run(&mut m2, &QuantConfig::default());
    assert_eq!(m1.to_proto(), m2.to_proto());
}

// ---------------------------------------------------------------- Gemm

fn gemm_model(attrs: Vec<(&str, AttrValue)>, w_shape: [usize; 2], with_c: bool) -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 4]);
    let w = init(g, "fc.weight", &w_shape, weights(w_shape[0], w_shape[1]));
    let mut ins = vec![x, w];
    if with_c {
        ins.push(init(g, "fc.bias", &[3], vec![0.5, -1.0, 2.0]));
    }
    let y = op_attrs(g, "Gemm", "fc", &ins, "y", attrs);
    output(g, y);
    m
}

#[test]
fn gemm_trans_b_is_transposed_into_the_weight_and_bias_added() {
    // B is [N=3, K=4] with transB = 1.
    let mut m = gemm_model(vec![("transB", AttrValue::Int(1))], [3, 4], true);
    let s = run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    assert_eq!(s.nodes, vec!["fc"]);
    let q = constant_named(g, "fc.weight_quantized");
    assert_eq!(q.shape(), &[4, 3], "stored as [K, N] for MatMulInteger");
    // Per output column = per row of the original B (axis 0 of the model's weight).
    assert_eq!(s.weights[0].axis, Some(0));
    let w = weights(3, 4);
    for (n, &sc) in s.weights[0].scales.iter().enumerate() {
        let absmax = (0..4).map(|k| w[n * 4 + k].abs()).fold(0.0f32, f32::max);
        assert!((sc - absmax / 127.0).abs() < 1e-7);
    }
    let qv: Vec<i8> = q.to_vec().unwrap();
    // q[k][n] stands for B[n][k].
    let (k, n) = (1, 2);
    let back = f32::from(qv[k * 3 + n]) * s.weights[0].scales[n];
    assert!((back - w[n * 4 + k]).abs() <= s.weights[0].scales[n] / 2.0 + 1e-6);
    // y = Add(Mul(Cast(MatMulInteger), scales), C).
    let y = g.outputs[0].value;
    assert_eq!(g[y.node].op_type(), "Add");
    assert_eq!(g[y.node].name, "y_bias_add");
    assert_eq!(
        input_names(g, y.node),
        vec!["y_quant_scaled_output", "fc.bias"]
    );
    assert!(g[one(g, "MatMulInteger")].attributes.is_empty());
    assert!(find(g, "Gemm").is_empty());
    assert_eq!(s.changes.get("Gemm → MatMulInteger"), 1);
}

#[test]
fn gemm_alpha_and_beta_are_folded() {
    let attrs = vec![
        ("alpha", AttrValue::Float(2.0)),
        ("beta", AttrValue::Float(0.5)),
    ];
    let mut m = gemm_model(attrs, [4, 3], true);
    let s = run(&mut m, &per_tensor());
    let g = &m.graph;
    // alpha scales the weight: largest |2·w| = 3.0.
    assert!((s.weights[0].scales[0] - 3.0 / 127.0).abs() < 1e-7);
    assert_eq!(s.weights[0].axis, None);
    let c = constant_named(g, "fc.bias_beta");
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![0.25, -0.5, 1.0]);
    assert!(g.find_value("fc.bias").is_none(), "the unscaled C is gone");
}

#[test]
fn gemm_without_c_and_with_beta_zero_ends_in_mul() {
    let mut m = gemm_model(vec![], [4, 3], false);
    run(&mut m, &QuantConfig::default());
    assert_eq!(m.graph[m.graph.outputs[0].value.node].op_type(), "Mul");

    let mut m = gemm_model(vec![("beta", AttrValue::Float(0.0))], [4, 3], true);
    run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    assert_eq!(g[g.outputs[0].value.node].op_type(), "Mul");
    assert!(g.find_value("fc.bias").is_none());
}

#[test]
fn gemm_trans_a_and_computed_c_with_beta_are_skipped() {
    let mut m = gemm_model(vec![("transA", AttrValue::Int(1))], [2, 3], false);
    let s = run(&mut m, &QuantConfig::default());
    assert!(s.nodes.is_empty());
    assert_eq!(s.skipped.len(), 1);
    assert_eq!(s.skipped[0].op_type, "Gemm");
    assert!(s.skipped[0].reason.contains("transA"), "{:?}", s.skipped);
    one(&m.graph, "Gemm");

    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 4]);
    let c = input(g, "c", &[3]);
    let w = init(g, "w", &[4, 3], weights(4, 3));
    let y = op_attrs(
        g,
        "Gemm",
        "fc",
        &[x, w, c],
        "y",
        vec![("beta", AttrValue::Float(2.0))],
    );
    output(g, y);
    let s = run(&mut m, &QuantConfig::default());
    assert!(s.skipped[0].reason.contains("beta"), "{:?}", s.skipped);
    assert!(m.graph.find_value("w").is_some(), "nothing changed");
    assert!(find(&m.graph, "DynamicQuantizeLinear").is_empty());
}

// ---------------------------------------------------------------- Conv

fn conv_model(bias: Option<bool>) -> Model {
    // X [1, 2, 5, 5], W [3, 2, 3, 3]; bias constant (Some(true)) or an input (Some(false)).
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", &[1, 2, 5, 5]);
    let w = init(g, "conv1.weight", &[3, 2, 3, 3], weights(3, 18));
    let mut ins = vec![x, w];
    match bias {
        Some(true) => ins.push(init(g, "conv1.bias", &[3], vec![0.1, 0.2, 0.3])),
        Some(false) => ins.push(input(g, "b", &[3])),
        None => {}
    }
    let attrs = vec![
        ("pads", AttrValue::Ints(vec![1, 1, 1, 1])),
        ("strides", AttrValue::Ints(vec![2, 2])),
        ("group", AttrValue::Int(1)),
    ];
    let y = op_attrs(g, "Conv", "conv1", &ins, "y", attrs);
    output(g, y);
    m
}

#[test]
fn conv_becomes_conv_integer_with_reshaped_bias() {
    let mut m = conv_model(Some(true));
    let s = run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    assert_eq!(s.nodes, vec!["conv1"]);
    let ci = one(g, "ConvInteger");
    assert_eq!(g[ci].name, "conv1_quant");
    let attrs: Vec<&str> = g[ci].attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(attrs, vec!["pads", "strides", "group"]);
    assert_eq!(
        input_names(g, ci),
        vec![
            "x_dynamic_quantized",
            "conv1.weight_quantized",
            "x_dynamic_zero_point",
            "conv1.weight_zero_point"
        ]
    );
    let b = constant_named(g, "conv1.bias_reshaped");
    assert_eq!(b.shape(), &[1, 3, 1, 1]);
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![0.1, 0.2, 0.3]);
    assert!(g.find_value("conv1.bias").is_none());
    let y = g.outputs[0].value;
    assert_eq!(g[y.node].op_type(), "Add");
    assert!(g[y.node].attributes.is_empty(), "Conv's attributes moved");
    assert_eq!(
        input_names(g, y.node),
        vec!["y_quant_scaled_output", "conv1.bias_reshaped"]
    );
    assert!(find(g, "Reshape").is_empty());
    assert_eq!(s.changes.get("Conv → ConvInteger"), 1);
}

#[test]
fn conv_weight_is_per_channel_with_one_zero_point() {
    let mut m = conv_model(None);
    let s = run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    assert_eq!(s.weights[0].axis, Some(0));
    assert_eq!(s.weights[0].scales.len(), 3);
    // Scales broadcast against [N, M, H, W]; ConvInteger gets one zero point.
    assert_eq!(constant_named(g, "conv1.weight_scale").shape(), &[3, 1, 1]);
    let zp = constant_named(g, "conv1.weight_zero_point");
    assert_eq!(zp.shape(), &[] as &[usize]);
    assert_eq!(zp.dtype(), DataType::Int8);
    assert_eq!(g[g.outputs[0].value.node].op_type(), "Mul");
}

#[test]
fn conv_with_channel_zero_points_that_differ_falls_back_to_per_tensor() {
    let mut c = QuantConfig::default();
    c.weights.scheme = QuantScheme::new(QuantType::Uint8, false);
    let mut m = conv_model(None);
    let s = run(&mut m, &c);
    assert_eq!(s.weights[0].axis, None);
    assert_eq!(s.weights[0].scales.len(), 1);
    let g = &m.graph;
    assert_eq!(
        constant_named(g, "conv1.weight_scale").shape(),
        &[] as &[usize]
    );
    assert_eq!(
        constant_named(g, "conv1.weight_zero_point").dtype(),
        DataType::Uint8
    );
}

#[test]
fn conv_with_computed_bias_gets_orts_reshape() {
    let mut m = conv_model(Some(false));
    run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    let r = one(g, "Reshape");
    assert_eq!(input_names(g, r), vec!["b", "y_bias_reshape_shape"]);
    assert_eq!(
        constant_named(g, "y_bias_reshape_shape")
            .to_vec::<i64>()
            .unwrap(),
        vec![1, -1, 1, 1]
    );
    let y = g.outputs[0].value;
    assert_eq!(
        input_names(g, y.node),
        vec!["y_quant_scaled_output", "y_bias_reshape_output"]
    );
}

// ---------------------------------------------------------------- Gather

#[test]
fn embedding_gather_reads_a_uint8_table_and_dequantizes() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let ids = ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(
            "ids",
            DataType::Int64,
            &[Dim::Known(3)],
        ))),
        0,
    );
    let table = init(g, "wte", &[5, 4], weights(5, 4));
    let e = op(g, "Gather", "embed", &[table, ids], "e");
    // A Gather of an int64 constant (shape arithmetic) is no weight.
    let shape_c = ValueRef::new(
        g.add_node(Node::initializer(
            "dims",
            Tensor::from_vec(vec![2], vec![7i64, 8]).unwrap(),
        )),
        0,
    );
    let zero = ValueRef::new(
        g.add_node(Node::initializer("zero", Tensor::scalar(0i64))),
        0,
    );
    let d = op(g, "Gather", "dim0", &[shape_c, zero], "d0");
    output(g, e);
    output(g, d);
    let s = run(&mut m, &QuantConfig::default());
    let g = &m.graph;
    assert_eq!(s.nodes, vec!["embed"]);
    assert!(s.skipped.is_empty(), "shape Gathers are not reported");
    let q = constant_named(g, "wte_quantized");
    assert_eq!((q.dtype(), q.shape()), (DataType::Uint8, &[5usize, 4][..]));
    assert_eq!(s.weights[0].dtype, QuantType::Uint8);
    assert_eq!(s.weights[0].axis, None);
    let y = g.outputs[0].value;
    assert_eq!(g[y.node].op_type(), "DequantizeLinear");
    assert_eq!(
        input_names(g, y.node),
        vec!["e_quantized", "wte_scale", "wte_zero_point"]
    );
    let gathers = find(g, "Gather");
    assert_eq!(gathers.len(), 2);
    let qg = g.find_value("e_quantized").unwrap().node;
    assert_eq!(input_names(g, qg), vec!["wte_quantized", "ids"]);
    assert_eq!(g[qg].name, "embed");
    assert!(find(g, "DynamicQuantizeLinear").is_empty());
}

// ---------------------------------------------------------------- selection and skips

fn two_layers() -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 4]);
    let w1 = init(g, "w1", &[4, 4], weights(4, 4));
    let w2 = init(g, "w2", &[4, 4], weights(4, 4));
    let h = op(g, "MatMul", "l1", &[x, w1], "h");
    let y = op(g, "MatMul", "l2", &[h, w2], "y");
    output(g, y);
    m
}

#[test]
fn excluded_nodes_and_op_types_stay_float_and_are_reported() {
    let c = QuantConfig {
        exclude_nodes: BTreeSet::from(["l2".to_string()]),
        ..Default::default()
    };
    let mut m = two_layers();
    let s = run(&mut m, &c);
    assert_eq!(s.nodes, vec!["l1"]);
    assert_eq!(
        s.skipped,
        vec![DynamicSkipped {
            node: "l2".into(),
            op_type: "MatMul".into(),
            reason: "node excluded by name".into()
        }]
    );
    assert_eq!(find(&m.graph, "MatMul").len(), 1);
    assert!(m.graph.find_value("w2").is_some());

    let c = QuantConfig {
        exclude_op_types: BTreeSet::from(["MatMul".to_string()]),
        ..Default::default()
    };
    let mut m = two_layers();
    let s = run(&mut m, &c);
    assert!(s.nodes.is_empty());
    assert_eq!(s.skipped.len(), 2);
    assert!(s.skipped[0].reason.contains("excluded"));
    assert!(s.changes.is_empty());
}

#[test]
fn only_nodes_and_op_types_select_silently() {
    let c = QuantConfig {
        only_nodes: Some(BTreeSet::from(["l2".to_string()])),
        ..Default::default()
    };
    let mut m = two_layers();
    let s = run(&mut m, &c);
    assert_eq!(s.nodes, vec!["l2"]);
    assert!(s.skipped.is_empty());
    assert_eq!(
        m.graph.value_name(
            m.graph
                .input(one(&m.graph, "DynamicQuantizeLinear"), 0)
                .unwrap()
        ),
        "h"
    );

    let c = QuantConfig {
        op_types: Some(BTreeSet::from(["Conv".to_string(), "Add".to_string()])),
        ..Default::default()
    };
    let mut m = two_layers();
    let s = run(&mut m, &c);
    assert!(s.nodes.is_empty() && s.skipped.is_empty());
    assert_eq!(find(&m.graph, "MatMul").len(), 2);
}

#[test]
fn non_constant_and_overridable_weights_are_skipped_with_reasons() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 4]);
    let k = input(g, "k", &[4, 4]);
    let qk = op(g, "MatMul", "scores", &[x, k], "s");
    // An initializer also listed as a graph input: a default a caller may override.
    let mut listed = Node::initializer("w", Tensor::from_vec(vec![4, 4], weights(4, 4)).unwrap());
    if let NodeKind::Constant {
        origin: ConstantOrigin::Initializer {
            listed_as_input, ..
        },
        ..
    } = &mut listed.kind
    {
        *listed_as_input = true;
    }
    let w = ValueRef::new(g.add_node(listed), 0);
    let y = op(g, "MatMul", "proj", &[qk, w], "y");
    output(g, y);
    let s = run(&mut m, &QuantConfig::default());
    assert!(s.nodes.is_empty());
    let reasons: Vec<(&str, &str)> = s
        .skipped
        .iter()
        .map(|k| (k.node.as_str(), k.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "scores");
    assert!(reasons[0].1.contains("graph input"), "{reasons:?}");
    assert_eq!(reasons[1].0, "proj");
    assert!(reasons[1].1.contains("override"), "{reasons:?}");
}

#[test]
fn float16_and_constant_activation_are_skipped_with_reasons() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(
            "x",
            DataType::Float16,
            &[Dim::Known(2), Dim::Known(2)],
        ))),
        0,
    );
    let w16 = Tensor::from_vec(vec![2, 2], vec![half::f16::from_f32(1.0); 4]).unwrap();
    let w = ValueRef::new(g.add_node(Node::initializer("w16", w16)), 0);
    let y = op(g, "MatMul", "half", &[x, w], "y");
    let a = init(g, "a", &[2, 2], vec![1.0; 4]);
    let b = init(g, "b", &[2, 2], vec![1.0; 4]);
    let z = op(g, "MatMul", "consts", &[a, b], "z");
    output(g, y);
    output(g, z);
    let s = run(&mut m, &QuantConfig::default());
    assert!(s.nodes.is_empty());
    assert_eq!(s.skipped.len(), 2, "{:?}", s.skipped);
    assert!(s.skipped[0].reason.contains("float16") || s.skipped[0].reason.contains("float32"));
    assert!(s.skipped[1].reason.contains("constant"), "{:?}", s.skipped);
}

// ---------------------------------------------------------------- subgraphs

#[test]
fn subgraph_weights_local_to_the_body_are_quantized_outer_ones_skipped() {
    let mut m = Model::new(13);
    let x = input(&mut m.graph, "x", &[2, 4]);
    let cond = ValueRef::new(
        m.graph
            .add_node(Node::input(ValueInfo::tensor("cond", DataType::Bool, &[]))),
        0,
    );
    let outer_w = init(&mut m.graph, "outer_w", &[4, 3], weights(4, 3));
    // then: MatMul(x, local constant); else: MatMul(x, outer_w).
    let mut then_g = Graph::new("then");
    let tx = ValueRef::new(then_g.add_node(Node::outer("x")), 0);
    let tw = init(&mut then_g, "then_w", &[4, 3], weights(4, 3));
    let ty = op(&mut then_g, "MatMul", "then_mm", &[tx, tw], "then_y");
    output(&mut then_g, ty);
    let mut else_g = Graph::new("else");
    let ex = ValueRef::new(else_g.add_node(Node::outer("x")), 0);
    let ew = ValueRef::new(else_g.add_node(Node::outer("outer_w")), 0);
    let ey = op(&mut else_g, "MatMul", "else_mm", &[ex, ew], "else_y");
    output(&mut else_g, ey);
    let iff = op_attrs(
        &mut m.graph,
        "If",
        "branch",
        &[cond],
        "y",
        vec![
            ("then_branch", AttrValue::Graph(Box::new(then_g))),
            ("else_branch", AttrValue::Graph(Box::new(else_g))),
        ],
    );
    m.graph.capture(x, iff.node);
    m.graph.capture(outer_w, iff.node);
    output(&mut m.graph, iff);

    let s = run(&mut m, &QuantConfig::default());
    assert_eq!(s.nodes, vec!["branch/then_branch/then_mm"]);
    assert_eq!(s.skipped.len(), 1);
    assert_eq!(s.skipped[0].node, "branch/else_branch/else_mm");
    assert!(s.skipped[0].reason.contains("enclosing"), "{:?}", s.skipped);
    let bodies: Vec<&Graph> = m.graph[iff.node].subgraphs().collect();
    // (The main graph's verify in `run` checked the bodies and their captures.)
    one(bodies[0], "MatMulInteger");
    assert!(bodies[0].find_value("then_w").is_none());
    assert_eq!(
        bodies[0].value_name(
            bodies[0]
                .input(one(bodies[0], "DynamicQuantizeLinear"), 0)
                .unwrap()
        ),
        "x"
    );
    assert_eq!(find(bodies[1], "MatMul").len(), 1);
    assert!(m.graph.find_value("outer_w").is_some());
}

// ---------------------------------------------------------------- refusals

#[test]
fn opset_below_11_is_refused_clearly() {
    assert_eq!(required_opset(), 11);
    let mut m = mlp(10);
    let before = m.clone();
    let err = quantize_dynamic(&mut m, &QuantConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("opset 11") && msg.contains("opset 10"),
        "{msg}"
    );
    assert_eq!(m, before, "nothing changed");
}

#[test]
fn configs_the_kernels_cannot_run_are_refused() {
    let c = QuantConfig {
        activations: QuantScheme::new(QuantType::Int8, false),
        ..Default::default()
    };
    let err = quantize_dynamic(&mut mlp(13), &c).unwrap_err().to_string();
    assert!(err.contains("uint8"), "{err}");

    let mut c = QuantConfig::default();
    c.activations.symmetric = true;
    assert!(quantize_dynamic(&mut mlp(13), &c).is_err());

    let mut c = QuantConfig::default();
    c.weights.scheme = QuantScheme::new(QuantType::Int16, true);
    let err = quantize_dynamic(&mut mlp(13), &c).unwrap_err().to_string();
    assert!(err.contains("int16"), "{err}");
}

#[test]
fn weight_overrides_change_type_and_16_bit_ones_are_skipped() {
    use crate::quant::config::TensorOverride;
    let mut c = per_tensor();
    c.overrides.insert(
        "w1".into(),
        TensorOverride {
            dtype: Some(QuantType::Uint8),
            symmetric: Some(false),
            range: None,
        },
    );
    c.overrides.insert(
        "w2".into(),
        TensorOverride {
            dtype: Some(QuantType::Int16),
            ..Default::default()
        },
    );
    let mut m = two_layers();
    let s = run(&mut m, &c);
    assert_eq!(s.nodes, vec!["l1"]);
    assert_eq!(s.weights[0].dtype, QuantType::Uint8);
    assert!(s.skipped[0].reason.contains("8-bit"), "{:?}", s.skipped);
}

#[test]
fn pass_reports_the_changes() {
    let mut m = mlp(13);
    let p = QuantizeDynamic::default();
    assert_eq!(p.name(), "quantize-dynamic");
    let c = p.run(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(c.get("MatMul → MatMulInteger"), 1);
}
