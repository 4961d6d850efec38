//! Legalization on hand-built graphs: each step's structure, the numbers it writes, and
//! what it refuses.

use super::*;
use crate::ir::{AttrValue, Dim, Graph, GraphOutput, Model, Node, NodeIndex, ValueInfo, ValueRef};
use crate::quant::{QuantScheme, QuantType};
use crate::tensor::{DataType, Tensor};

// ---------------------------------------------------------------- building graphs

fn input(g: &mut Graph, name: &str, dtype: DataType, dims: &[i64]) -> ValueRef {
    let d: Vec<Dim> = dims.iter().map(|&n| Dim::Known(n)).collect();
    ValueRef::new(
        g.add_node(Node::input(ValueInfo::tensor(name, dtype, &d))),
        0,
    )
}

fn init(g: &mut Graph, name: &str, t: Tensor) -> ValueRef {
    ValueRef::new(g.add_node(Node::initializer(name, t)), 0)
}

fn node(
    g: &mut Graph,
    op_type: &str,
    domain: &str,
    inputs: &[Option<ValueRef>],
    outs: &[&str],
    attrs: Vec<(&str, AttrValue)>,
) -> NodeIndex {
    let mut n = Node::op(op_type, &format!("{}_node", outs[0]), outs).with_domain(domain);
    for (k, v) in attrs {
        n = n.with_attr(k, v);
    }
    let idx = g.add_node(n);
    for (s, v) in inputs.iter().enumerate() {
        if let Some(v) = v {
            g.connect(*v, idx, s);
        }
    }
    idx
}

fn op(g: &mut Graph, op_type: &str, inputs: &[ValueRef], out: &str) -> ValueRef {
    let ins: Vec<_> = inputs.iter().map(|&v| Some(v)).collect();
    ValueRef::new(node(g, op_type, "", &ins, &[out], vec![]), 0)
}

fn output(g: &mut Graph, v: ValueRef) {
    let info = g.value_info(v).clone();
    g.outputs.push(GraphOutput { value: v, info });
}

fn scalar_f(v: f32) -> Tensor {
    Tensor::scalar(v)
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

fn find(g: &Graph, op_type: &str) -> Vec<NodeIndex> {
    g.nodes()
        .filter(|(_, n)| n.is_operator() && n.op_type() == op_type)
        .map(|(i, _)| i)
        .collect()
}

fn one(g: &Graph, op_type: &str) -> NodeIndex {
    let v = find(g, op_type);
    assert_eq!(v.len(), 1, "expected one {op_type}: {:?}", ops(g));
    v[0]
}

fn const_in(g: &Graph, n: NodeIndex, slot: usize) -> Tensor {
    g.constant_input(n, slot)
        .unwrap_or_else(|| panic!("input {slot} of {} is not a constant", g[n].op_type()))
        .clone()
}

// ---------------------------------------------------------------- QOperator

/// x → Q → QLinearConv (per-channel int8 weight, int32 bias) → DQ → y.
fn qlinear_conv() -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[1, 1, 2, 2]);
    let xs = init(g, "xs", scalar_f(0.1));
    let xz = init(g, "xz", Tensor::scalar(-3i8));
    let xq = op(g, "QuantizeLinear", &[x, xs, xz], "xq");
    let w = init(
        g,
        "w",
        Tensor::from_vec(vec![2, 1, 1, 1], vec![10i8, -20]).unwrap(),
    );
    let ws = init(
        g,
        "ws",
        Tensor::from_vec(vec![2], vec![0.5f32, 0.25]).unwrap(),
    );
    let wz = init(g, "wz", Tensor::from_vec(vec![2], vec![0i8, 0]).unwrap());
    let ys = init(g, "ys", scalar_f(0.2));
    let yz = init(g, "yz", Tensor::scalar(1i8));
    let b = init(g, "b", Tensor::from_vec(vec![2], vec![7i32, -9]).unwrap());
    let conv = node(
        g,
        "QLinearConv",
        "",
        &[xq, xs, xz, w, ws, wz, ys, yz, b].map(Some),
        &["yq"],
        vec![("kernel_shape", AttrValue::Ints(vec![1, 1]))],
    );
    let y = op(
        g,
        "DequantizeLinear",
        &[ValueRef::new(conv, 0), ys, yz],
        "y",
    );
    output(g, y);
    m
}

#[test]
fn qlinear_conv_becomes_dq_conv_q_with_the_same_scales() {
    let mut m = qlinear_conv();
    let out = expand_qoperator(&mut m).expect("expands");
    m.graph.verify().unwrap();
    let g = &m.graph;
    assert_eq!(out.changed, 1);
    assert!(out.notes[0].contains("1 QLinearConv"), "{:?}", out.notes);
    assert!(find(g, "QLinearConv").is_empty());
    let conv = one(g, "Conv");
    assert_eq!(
        g[conv].attr("kernel_shape").and_then(AttrValue::as_ints),
        Some(&[1i64, 1][..])
    );
    // Weight: the same integers behind a per-channel DQ on axis 0.
    let wdq = g.input(conv, 1).unwrap().node;
    assert_eq!(g[wdq].op_type(), "DequantizeLinear");
    assert_eq!(g[wdq].attr("axis").and_then(AttrValue::as_int), Some(0));
    assert_eq!(const_in(g, wdq, 0).to_vec::<i8>().unwrap(), vec![10, -20]);
    assert_eq!(
        const_in(g, wdq, 1).to_vec::<f32>().unwrap(),
        vec![0.5, 0.25]
    );
    // Bias: int32 with scale = x scale × weight scale, zero point 0.
    let bdq = g.input(conv, 2).unwrap().node;
    assert_eq!(const_in(g, bdq, 0).to_vec::<i32>().unwrap(), vec![7, -9]);
    let bs = const_in(g, bdq, 1).to_vec::<f32>().unwrap();
    assert_eq!(bs, vec![0.1f32 * 0.5, 0.1f32 * 0.25]);
    // Input: DQ with the activation's own scale and zero point.
    let xdq = g.input(conv, 0).unwrap().node;
    assert_eq!(const_in(g, xdq, 2).to_vec::<i8>().unwrap(), vec![-3]);
    // Output: Q with the node's output scale, under the node's output name.
    let q = g.consumers(ValueRef::new(conv, 0))[0].0;
    assert_eq!(g[q].op_type(), "QuantizeLinear");
    assert_eq!(g.value_name(ValueRef::new(q, 0)), "yq");
    assert_eq!(const_in(g, q, 1).to_vec::<f32>().unwrap(), vec![0.2]);
    assert_eq!(const_in(g, q, 2).to_vec::<i8>().unwrap(), vec![1]);
    assert_eq!(g.value_name(g.outputs[0].value), "y");
}

#[test]
fn qlinear_concat_and_microsoft_ops_expand() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let a = input(g, "a", DataType::Uint8, &[1, 2]);
    let b = input(g, "b", DataType::Uint8, &[1, 2]);
    let s1 = init(g, "s1", scalar_f(0.1));
    let z1 = init(g, "z1", Tensor::scalar(128u8));
    let s2 = init(g, "s2", scalar_f(0.2));
    let z2 = init(g, "z2", Tensor::scalar(100u8));
    let add = node(
        g,
        "QLinearAdd",
        "com.microsoft",
        &[a, s1, z1, b, s2, z2, s2, z2].map(Some),
        &["sum"],
        vec![],
    );
    let sum = ValueRef::new(add, 0);
    let cat = node(
        g,
        "QLinearConcat",
        "com.microsoft",
        &[s1, z1, sum, s2, z2, a, s1, z1].map(Some),
        &["cat"],
        vec![("axis", AttrValue::Int(1))],
    );
    output(g, ValueRef::new(cat, 0));
    let out = expand_qoperator(&mut m).expect("expands");
    m.graph.verify().unwrap();
    assert_eq!(out.changed, 2, "{out:?}");
    let g = &m.graph;
    assert_eq!(
        ops(g),
        vec![
            "Add",
            "Concat",
            "DequantizeLinear",
            "DequantizeLinear",
            "DequantizeLinear",
            "QuantizeLinear",
            "QuantizeLinear"
        ],
        "one shared DQ of `a` (read twice with the same scale) and one of `b` and of the sum"
    );
    assert_eq!(g.value_name(g.outputs[0].value), "cat");
    let concat = one(g, "Concat");
    assert_eq!(g[concat].attr("axis").and_then(AttrValue::as_int), Some(1));
}

#[test]
fn unknown_attributes_keep_the_node() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let a = input(g, "a", DataType::Uint8, &[1, 2, 2, 2]);
    let s = init(g, "s", scalar_f(0.1));
    let z = init(g, "z", Tensor::scalar(128u8));
    let pool = node(
        g,
        "QLinearGlobalAveragePool",
        "com.microsoft",
        &[a, s, z, s, z].map(Some),
        &["p"],
        vec![("channels_last", AttrValue::Int(1))],
    );
    output(g, ValueRef::new(pool, 0));
    let out = expand_qoperator(&mut m).unwrap();
    assert_eq!(out.changed, 0);
    assert!(out.kept[0].contains("channels_last"), "{:?}", out.kept);
    assert_eq!(ops(&m.graph), vec!["QLinearGlobalAveragePool"]);
}

// ---------------------------------------------------------------- QAT weights, domain

#[test]
fn quantize_of_a_float_weight_folds_with_half_to_even_rounding() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let w = init(
        g,
        "w",
        Tensor::from_vec(vec![2, 2], vec![0.25f32, 0.75, -100.0, 1.0]).unwrap(),
    );
    let s = init(
        g,
        "s",
        Tensor::from_vec(vec![2], vec![0.5f32, 0.25]).unwrap(),
    );
    let z = init(g, "z", Tensor::from_vec(vec![2], vec![0i8, 1]).unwrap());
    let q = node(
        g,
        "QuantizeLinear",
        "",
        &[Some(w), Some(s), Some(z)],
        &["wq"],
        vec![("axis", AttrValue::Int(0))],
    );
    let dq = op(g, "DequantizeLinear", &[ValueRef::new(q, 0), s, z], "wd");
    output(g, dq);
    let out = fold_weight_quantize(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(out.changed, 1);
    let g = &m.graph;
    let dq = one(g, "DequantizeLinear");
    // 0.25/0.5 = 0.5 → 0 and 0.75/0.5 = 1.5 → 2 (half to even); -100/0.25 + 1 saturates.
    assert_eq!(
        const_in(g, dq, 0).to_vec::<i8>().unwrap(),
        vec![0, 2, -128, 5]
    );
    assert_eq!(g.value_name(g.input(dq, 0).unwrap()), "wq");
    assert!(find(g, "QuantizeLinear").is_empty());
}

/// x → com.microsoft Q(uint16) → com.microsoft DQ → y at opset 13.
fn microsoft_uint16() -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2]);
    let s = init(g, "s", scalar_f(0.001));
    let z = init(g, "z", Tensor::scalar(32768u16));
    let q = node(
        g,
        "QuantizeLinear",
        "com.microsoft",
        &[Some(x), Some(s), Some(z)],
        &["q"],
        vec![],
    );
    let dq = node(
        g,
        "DequantizeLinear",
        "com.microsoft",
        &[Some(ValueRef::new(q, 0)), Some(s), Some(z)],
        &["y"],
        vec![],
    );
    output(g, ValueRef::new(dq, 0));
    m
}

fn domains(m: &Model) -> Vec<String> {
    m.graph
        .nodes()
        .filter(|(_, n)| n.is_operator())
        .map(|(_, n)| n.domain().to_string())
        .collect()
}

#[test]
fn microsoft_16_bit_qdq_settles_by_the_rule() {
    use crate::quant::QdqDomainRule;
    // Standard: standard ops at opset 21.
    let mut m = microsoft_uint16();
    assert_eq!(standard_domain(&mut m).unwrap().changed, 2);
    assert!(domains(&m).iter().all(String::is_empty));
    settle_domain(&mut m, QdqDomainRule::Standard).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(m.opset(""), Some(21));
    assert!(domains(&m).iter().all(String::is_empty));
    // Auto below opset 21: back to com.microsoft, the opset unchanged.
    let mut m = microsoft_uint16();
    standard_domain(&mut m).unwrap();
    let out = settle_domain(&mut m, QdqDomainRule::Auto).unwrap();
    assert_eq!(out.changed, 2);
    assert_eq!(m.opset(""), Some(13));
    assert_eq!(m.opset("com.microsoft"), Some(1));
    assert!(domains(&m).iter().all(|d| d == "com.microsoft"));
}

#[test]
fn auto_keeps_8_bit_qdq_standard_and_microsoft_moves_them() {
    use crate::quant::QdqDomainRule;
    let mut m = int8_activation();
    assert_eq!(
        settle_domain(&mut m, QdqDomainRule::Auto).unwrap().changed,
        0
    );
    assert!(domains(&m).iter().all(String::is_empty));
    settle_domain(&mut m, QdqDomainRule::Microsoft).unwrap();
    assert_eq!(
        domains(&m).iter().filter(|d| *d == "com.microsoft").count(),
        2
    );
}

// ---------------------------------------------------------------- dynamic form

/// ORT's quantize_dynamic MatMul: DQL(x) → MatMulInteger → Cast → Mul(·, x_scale × w_scale).
fn dynamic_matmul() -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[1, 2]);
    let dql = node(
        g,
        "DynamicQuantizeLinear",
        "",
        &[Some(x)],
        &["xq", "xs", "xz"],
        vec![],
    );
    let w = init(
        g,
        "wq",
        Tensor::from_vec(vec![2, 3], vec![1i8, 2, 3, -4, -5, -6]).unwrap(),
    );
    let ws = init(
        g,
        "ws",
        Tensor::from_vec(vec![3], vec![0.1f32, 0.2, 0.3]).unwrap(),
    );
    let wz = init(g, "wz", Tensor::from_vec(vec![3], vec![0i8, 0, 0]).unwrap());
    let mi = node(
        g,
        "MatMulInteger",
        "",
        &[
            Some(ValueRef::new(dql, 0)),
            Some(w),
            Some(ValueRef::new(dql, 2)),
            Some(wz),
        ],
        &["acc"],
        vec![],
    );
    let cast = node(
        g,
        "Cast",
        "",
        &[Some(ValueRef::new(mi, 0))],
        &["accf"],
        vec![("to", AttrValue::Int(1))],
    );
    let sm = op(g, "Mul", &[ValueRef::new(dql, 1), ws], "scales");
    let y = op(g, "Mul", &[ValueRef::new(cast, 0), sm], "y");
    output(g, y);
    m
}

#[test]
fn dynamic_matmul_becomes_matmul_on_a_dequantized_weight() {
    let mut m = dynamic_matmul();
    let out = integer_to_float_ops(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(out.changed, 1, "{out:?}");
    let g = &m.graph;
    assert_eq!(ops(g), vec!["DequantizeLinear", "MatMul"]);
    let mm = one(g, "MatMul");
    assert_eq!(g.value_name(g.input(mm, 0).unwrap()), "x");
    let dq = g.input(mm, 1).unwrap().node;
    assert_eq!(g[dq].attr("axis").and_then(AttrValue::as_int), Some(1));
    assert_eq!(
        const_in(g, dq, 1).to_vec::<f32>().unwrap(),
        vec![0.1, 0.2, 0.3]
    );
    assert_eq!(g.value_name(g.outputs[0].value), "y");
    assert_eq!(g.outputs[0].value, ValueRef::new(mm, 0));
}

#[test]
fn a_chain_in_another_shape_is_kept_with_the_reason() {
    let mut m = dynamic_matmul();
    // The Cast's result is read twice: not ORT's chain.
    let cast = one(&m.graph, "Cast");
    let extra = op(&mut m.graph, "Relu", &[ValueRef::new(cast, 0)], "r");
    output(&mut m.graph, extra);
    let out = integer_to_float_ops(&mut m).unwrap();
    assert_eq!(out.changed, 0);
    assert!(
        out.kept[0].contains("not read by one Mul only"),
        "{:?}",
        out.kept
    );
    assert!(find(&m.graph, "MatMulInteger").len() == 1);
}

#[test]
fn dequantized_weights_become_float_constants() {
    let mut m = dynamic_matmul();
    integer_to_float_ops(&mut m).unwrap();
    let out = dequantize_weights(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(out.changed, 1);
    let g = &m.graph;
    let mm = one(g, "MatMul");
    let w = const_in(g, mm, 1).to_vec::<f32>().unwrap();
    let want = [0.1f32, 0.4, 0.90000004, -0.4, -1.0, -1.8000001];
    for (a, b) in w.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{w:?}");
    }
}

// ---------------------------------------------------------------- activations

/// x → Q(int8, zp -3) → MaxPool → DQ → y, and the Q/DQ params constants.
fn int8_activation() -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[1, 1, 2, 2]);
    let s = init(g, "s", scalar_f(0.1));
    let z = init(g, "z", Tensor::scalar(-3i8));
    let q = op(g, "QuantizeLinear", &[x, s, z], "q");
    g.value_info_mut(q).ty = ValueInfo::tensor("q", DataType::Int8, &[]).ty;
    let pool = node(
        g,
        "MaxPool",
        "",
        &[Some(q)],
        &["p"],
        vec![("kernel_shape", AttrValue::Ints(vec![2, 2]))],
    );
    let pv = ValueRef::new(pool, 0);
    g.value_info_mut(pv).ty = ValueInfo::tensor("p", DataType::Int8, &[]).ty;
    let y = op(g, "DequantizeLinear", &[pv, s, z], "y");
    let r = op(g, "Relu", &[y], "r");
    output(g, r);
    m
}

#[test]
fn int8_activations_shift_to_uint8_through_integer_moves() {
    let mut m = int8_activation();
    let out = shift_activations(&mut m, QuantType::Uint8).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(out.changed, 1, "{out:?}");
    let g = &m.graph;
    for n in find(g, "QuantizeLinear")
        .into_iter()
        .chain(find(g, "DequantizeLinear"))
    {
        assert_eq!(const_in(g, n, 2).to_vec::<u8>().unwrap(), vec![125]);
        assert_eq!(const_in(g, n, 1).to_vec::<f32>().unwrap(), vec![0.1]);
    }
    let pool = one(g, "MaxPool");
    assert_eq!(
        g.value_info(ValueRef::new(pool, 0)).elem_type(),
        Some(DataType::Uint8)
    );
    // Already unsigned: nothing to do.
    let again = shift_activations(&mut m, QuantType::Uint8).unwrap();
    assert_eq!(again.changed, 0);
}

#[test]
fn an_activation_read_by_an_integer_op_is_kept_with_the_reason() {
    let mut m = int8_activation();
    let q = one(&m.graph, "QuantizeLinear");
    let extra = op(&mut m.graph, "Neg", &[ValueRef::new(q, 0)], "neg");
    output(&mut m.graph, extra);
    let out = shift_activations(&mut m, QuantType::Uint8).unwrap();
    assert_eq!(out.changed, 0);
    assert!(out.kept[0].contains("(Neg)"), "{:?}", out.kept);
    let q = one(&m.graph, "QuantizeLinear");
    assert_eq!(const_in(&m.graph, q, 2).dtype(), DataType::Int8);
}

// ---------------------------------------------------------------- per-tensor weights

#[test]
fn per_channel_conv_weights_become_per_tensor_with_the_bias_rescaled() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[1, 1, 2, 2]);
    let xs = init(g, "xs", scalar_f(0.5));
    let xz = init(g, "xz", Tensor::scalar(0u8));
    let xq = op(g, "QuantizeLinear", &[x, xs, xz], "xq");
    let xd = op(g, "DequantizeLinear", &[xq, xs, xz], "xd");
    let w = init(
        g,
        "w",
        Tensor::from_vec(vec![2, 1, 1, 1], vec![127i8, 127]).unwrap(),
    );
    let ws = init(
        g,
        "ws",
        Tensor::from_vec(vec![2], vec![0.01f32, 0.02]).unwrap(),
    );
    let wz = init(g, "wz", Tensor::from_vec(vec![2], vec![0i8, 0]).unwrap());
    let wd = node(
        g,
        "DequantizeLinear",
        "",
        &[Some(w), Some(ws), Some(wz)],
        &["wd"],
        vec![("axis", AttrValue::Int(0))],
    );
    let b = init(
        g,
        "b",
        Tensor::from_vec(vec![2], vec![100i32, 100]).unwrap(),
    );
    let bs = init(
        g,
        "bs",
        Tensor::from_vec(vec![2], vec![0.005f32, 0.01]).unwrap(),
    );
    let bd = node(
        g,
        "DequantizeLinear",
        "",
        &[Some(b), Some(bs)],
        &["bd"],
        vec![("axis", AttrValue::Int(0))],
    );
    let conv = node(
        g,
        "Conv",
        "",
        &[
            Some(xd),
            Some(ValueRef::new(wd, 0)),
            Some(ValueRef::new(bd, 0)),
        ],
        &["y"],
        vec![],
    );
    output(g, ValueRef::new(conv, 0));
    let scheme = QuantScheme::new(QuantType::Int8, true);
    let out = weights_per_tensor(&mut m, &|op| op == "Conv", scheme).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(out.changed, 1, "{out:?}");
    let g = &m.graph;
    let conv = one(g, "Conv");
    let wdq = g.input(conv, 1).unwrap().node;
    assert!(g[wdq].attr("axis").is_none());
    // Weights 1.27 and 2.54: one scale 2.54/127 = 0.02, so 1.27 → 63.5 → 64 (half to even).
    assert_eq!(const_in(g, wdq, 1).to_vec::<f32>().unwrap(), vec![0.02]);
    assert_eq!(const_in(g, wdq, 0).to_vec::<i8>().unwrap(), vec![64, 127]);
    // Bias 0.5 and 1.0 with scale 0.5 × 0.02 = 0.01.
    let bdq = g.input(conv, 2).unwrap().node;
    assert_eq!(const_in(g, bdq, 0).to_vec::<i32>().unwrap(), vec![50, 100]);
    assert!(
        out.notes[0].contains("worst weight SQNR"),
        "{:?}",
        out.notes
    );
    // The old per-channel constants are gone.
    assert!(g.find_value("ws").is_none() && g.find_value("bs").is_none());
}

#[test]
fn one_element_scales_become_scalars() {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2]);
    let s = init(g, "s", Tensor::from_vec(vec![1], vec![0.1f32]).unwrap());
    let z = init(g, "z", Tensor::from_vec(vec![1], vec![3i8]).unwrap());
    let q = op(g, "QuantizeLinear", &[x, s, z], "q");
    let y = op(g, "DequantizeLinear", &[q, s, z], "y");
    output(g, y);
    let out = scalar_params(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(out.changed, 2);
    let g = &m.graph;
    for n in [one(g, "QuantizeLinear"), one(g, "DequantizeLinear")] {
        assert!(const_in(g, n, 1).shape().is_empty());
        assert_eq!(const_in(g, n, 2).to_vec::<i8>().unwrap(), vec![3]);
        assert!(const_in(g, n, 2).shape().is_empty());
    }
    assert!(
        g.find_value("s").is_none(),
        "the [1]-shaped constants are gone"
    );
}

// ---------------------------------------------------------------- QAT Conv+BN, Relu

/// DQ(x) → Conv(DQ(W) per channel, zero bias) → Div(k) → BatchNormalization(γ, β, μ, σ²).
fn qat_conv_bn(divisor: [f32; 2]) -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[1, 1, 2, 2]);
    let xs = init(g, "xs", scalar_f(0.5));
    let xz = init(g, "xz", Tensor::scalar(0u8));
    let xq = op(g, "QuantizeLinear", &[x, xs, xz], "xq");
    let xd = op(g, "DequantizeLinear", &[xq, xs, xz], "xd");
    let w = init(
        g,
        "w",
        Tensor::from_vec(vec![2, 1, 1, 1], vec![10i8, -20]).unwrap(),
    );
    let ws = init(
        g,
        "ws",
        Tensor::from_vec(vec![2], vec![0.1f32, 0.2]).unwrap(),
    );
    let wz = init(g, "wz", Tensor::from_vec(vec![2], vec![0i8, 0]).unwrap());
    let wd = node(
        g,
        "DequantizeLinear",
        "",
        &[Some(w), Some(ws), Some(wz)],
        &["wd"],
        vec![("axis", AttrValue::Int(0))],
    );
    let b0 = init(
        g,
        "b0",
        Tensor::from_vec(vec![2], vec![0.0f32, 0.0]).unwrap(),
    );
    let conv = op(g, "Conv", &[xd, ValueRef::new(wd, 0), b0], "c");
    let k = init(
        g,
        "k",
        Tensor::from_vec(vec![1, 2, 1, 1], divisor.to_vec()).unwrap(),
    );
    let div = op(g, "Div", &[conv, k], "d");
    // γ/√(σ²+ε) = 2 and 4 with ε = 0: γ = (2, 4), σ² = 1.
    let gamma = init(
        g,
        "gamma",
        Tensor::from_vec(vec![2], vec![2.0f32, 4.0]).unwrap(),
    );
    let beta = init(
        g,
        "beta",
        Tensor::from_vec(vec![2], vec![1.0f32, -1.0]).unwrap(),
    );
    let mean = init(
        g,
        "mean",
        Tensor::from_vec(vec![2], vec![0.5f32, 0.25]).unwrap(),
    );
    let var = init(
        g,
        "var",
        Tensor::from_vec(vec![2], vec![1.0f32, 1.0]).unwrap(),
    );
    let bn = node(
        g,
        "BatchNormalization",
        "",
        &[div, gamma, beta, mean, var].map(Some),
        &["bn"],
        vec![("epsilon", AttrValue::Float(0.0))],
    );
    output(g, ValueRef::new(bn, 0));
    m
}

#[test]
fn a_cancelling_qat_batchnorm_becomes_an_int32_conv_bias() {
    let mut m = qat_conv_bn([2.0, 4.0]);
    let out = fold_qat_batchnorm(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(out.changed, 1, "{out:?}");
    let g = &m.graph;
    assert!(find(g, "BatchNormalization").is_empty() && find(g, "Div").is_empty());
    let conv = one(g, "Conv");
    assert_eq!(g.value_name(ValueRef::new(conv, 0)), "bn");
    // b' = β − k·μ = (1 − 1, −1 − 1) = (0, −2); scales 0.5 × (0.1, 0.2).
    let bdq = g.input(conv, 2).unwrap().node;
    assert_eq!(g[bdq].op_type(), "DequantizeLinear");
    assert_eq!(
        const_in(g, bdq, 1).to_vec::<f32>().unwrap(),
        vec![0.05, 0.1]
    );
    assert_eq!(const_in(g, bdq, 0).to_vec::<i32>().unwrap(), vec![0, -20]);
}

#[test]
fn a_batchnorm_that_does_not_cancel_is_kept_with_the_channel() {
    let mut m = qat_conv_bn([2.0, 3.0]);
    let out = fold_qat_batchnorm(&mut m).unwrap();
    assert_eq!(out.changed, 0);
    assert!(out.kept[0].contains("channel 1"), "{:?}", out.kept);
    assert_eq!(find(&m.graph, "BatchNormalization").len(), 1);
}

/// x → Q → DQ → Relu → Q(scale 0.1, zero point `zp`) → DQ → y.
fn relu_before_q(zp: u8) -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = input(g, "x", DataType::Float, &[2]);
    let s = init(g, "s", scalar_f(0.1));
    let z = init(g, "z", Tensor::scalar(zp));
    let r = op(g, "Relu", &[x], "r");
    let q = op(g, "QuantizeLinear", &[r, s, z], "q");
    let y = op(g, "DequantizeLinear", &[q, s, z], "y");
    output(g, y);
    m
}

#[test]
fn a_relu_before_a_zero_based_quantizer_is_dropped_and_others_kept() {
    let mut m = relu_before_q(0);
    assert_eq!(drop_redundant_relu(&mut m).unwrap().changed, 1);
    m.graph.verify().unwrap();
    assert!(find(&m.graph, "Relu").is_empty());
    let q = one(&m.graph, "QuantizeLinear");
    assert_eq!(m.graph.value_name(m.graph.input(q, 0).unwrap()), "x");
    // Zero point 3: the quantizer represents -0.3..0, so the Relu still clamps.
    let mut m = relu_before_q(3);
    assert_eq!(drop_redundant_relu(&mut m).unwrap().changed, 0);
    assert_eq!(find(&m.graph, "Relu").len(), 1);
}
