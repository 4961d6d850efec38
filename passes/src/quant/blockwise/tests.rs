//! Weight-only block-wise quantization on hand-built graphs: the structure of each form,
//! the numbers stored (decoded back from the graph's tensors), Gemm variants, sharing,
//! `Constant`-node weights, exclusion, LM head, embeddings, subgraphs and refusals.

use super::*;
use crate::cleanup::test_util::{op_node, output};
use crate::ir::{
    AttrValue, ConstantAttr, ConstantOrigin, Dim, Node, TensorSource, ValueInfo, ValueRef,
};
use crate::tensor::{unpack_nibbles, Tensor};

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

fn op(
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

/// Deterministic weights in about [-1, 1], with a few large entries so blocks differ.
fn weights(k: usize, n: usize) -> Vec<f32> {
    (0..k * n)
        .map(|i| {
            let base = ((i * 37 % 29) as f32 - 14.0) / 14.0;
            if i % 41 == 0 {
                base * 3.0
            } else {
                base
            }
        })
        .collect()
}

/// x[2, K] → MatMul(W[K, N]) → Relu → y: the MatMul is not the LM head.
fn mlp(opset: i64, k: usize, n: usize) -> Model {
    let mut m = Model::new(opset);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, k as i64]);
    let w = init(g, "fc.weight", &[k, n], weights(k, n));
    let h = op(g, "MatMul", "fc", &[x, w], "h", vec![]);
    let y = op(g, "Relu", "act", &[h], "y", vec![]);
    output(g, y);
    m
}

fn config(format: WeightFormat, bits: Bits, symmetric: bool, block_size: usize) -> BlockwiseConfig {
    BlockwiseConfig {
        bits,
        block_size,
        symmetric,
        format,
        ..Default::default()
    }
}

fn run(m: &mut Model, c: &BlockwiseConfig) -> BlockwiseSummary {
    let s = quantize_blockwise(m, c).expect("quantize_blockwise runs");
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

fn constant_in(g: &Graph, n: NodeIndex, slot: usize) -> Tensor {
    g.constant_input(n, slot)
        .unwrap_or_else(|| panic!("input {slot} is not a constant"))
        .clone()
}

fn int_attr(g: &Graph, n: NodeIndex, name: &str) -> Option<i64> {
    g[n].attr(name).and_then(|a| a.as_int())
}

/// The float weight a `DequantizeLinear` (axis, block_size) computes, in its stored shape.
fn decode_dq(g: &Graph, dq: NodeIndex) -> (Vec<usize>, Vec<f32>) {
    let q = constant_in(g, dq, 0);
    let s = constant_in(g, dq, 1).to_vec::<f32>().unwrap();
    let z = g
        .constant_input(dq, 2)
        .map(|t| t.to_f64_vec().unwrap())
        .unwrap_or_else(|| vec![0.0; s.len()]);
    let axis = int_attr(g, dq, "axis").unwrap() as usize;
    let bs = int_attr(g, dq, "block_size").unwrap() as usize;
    let shape = q.shape().to_vec();
    let (rows, cols) = (shape[0], shape[1]);
    let v = q.to_f64_vec().unwrap();
    let out = (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            let m = if axis == 0 {
                (r / bs) * cols + c
            } else {
                r * cols.div_ceil(bs) + c / bs
            };
            ((v[i] - z[m]) * s[m] as f64) as f32
        })
        .collect();
    (shape, out)
}

/// The `[K, N]` float weight a MatMulNBits node computes with.
fn decode_nbits(g: &Graph, node: NodeIndex) -> Vec<f32> {
    let k = int_attr(g, node, "K").unwrap() as usize;
    let n = int_attr(g, node, "N").unwrap() as usize;
    let bits = int_attr(g, node, "bits").unwrap() as u32;
    let bs = int_attr(g, node, "block_size").unwrap() as usize;
    let nb = k.div_ceil(bs);
    let b = constant_in(g, node, 1);
    assert_eq!(b.shape(), &[n, nb, bs * bits as usize / 8]);
    let raw = b.to_vec::<u8>().unwrap();
    let codes = if bits == 4 {
        unpack_nibbles(&raw, n * nb * bs)
    } else {
        raw
    };
    let scales = constant_in(g, node, 2).to_vec::<f32>().unwrap();
    let zps: Vec<i32> = match g.constant_input(node, 3) {
        None => vec![1 << (bits - 1); n * nb],
        Some(z) => {
            let z = z.to_vec::<u8>().unwrap();
            let per_col = z.len() / n;
            (0..n * nb)
                .map(|i| {
                    let col = &z[(i / nb) * per_col..(i / nb + 1) * per_col];
                    if bits == 4 {
                        unpack_nibbles(col, nb)[i % nb] as i32
                    } else {
                        col[i % nb] as i32
                    }
                })
                .collect()
        }
    };
    let mut out = vec![0f32; k * n];
    for c in 0..n {
        for r in 0..k {
            let m = c * nb + r / bs;
            out[r * n + c] = (codes[m * bs + r % bs] as i32 - zps[m]) as f32 * scales[m];
        }
    }
    out
}

// ---------------------------------------------------------------- QDQ form

#[test]
fn qdq_form_puts_a_blocked_dequantize_in_front_of_the_matmul() {
    let mut m = mlp(17, 70, 3);
    let s = run(&mut m, &BlockwiseConfig::default());
    let g = &m.graph;
    assert_eq!(s.nodes, vec!["fc"]);
    assert!(s.skipped.is_empty());
    assert_eq!(m.opset(""), Some(21), "raised for DequantizeLinear-21");
    assert!(m.ir_version >= 10);
    let dq = one(g, "DequantizeLinear");
    assert_eq!(g[dq].name, "fc.weight_DequantizeLinear");
    assert_eq!(
        input_names(g, dq),
        vec!["fc.weight_quantized", "fc.weight_scale"]
    );
    assert_eq!(int_attr(g, dq, "axis"), Some(0));
    assert_eq!(int_attr(g, dq, "block_size"), Some(32));
    let q = constant_in(g, dq, 0);
    assert_eq!(q.dtype(), DataType::Int4);
    assert_eq!(q.shape(), &[70, 3]);
    assert_eq!(constant_in(g, dq, 1).shape(), &[3, 3]);
    let mm = one(g, "MatMul");
    assert_eq!(input_names(g, mm), vec!["x", "fc.weight_dequantized"]);
    assert!(g.find_value("fc.weight").is_none(), "float weight dropped");

    let w = &s.weights[0];
    assert_eq!(
        (w.name.as_str(), w.dtype, w.blocks),
        ("fc.weight", DataType::Int4, 9)
    );
    assert_eq!(w.role, WeightRole::Linear);
    assert_eq!(w.float_bytes, 70 * 3 * 4);
    assert_eq!(w.quantized_bytes, 105 + 9 * 4);
    assert_eq!(s.float_bytes(), 840);
}

#[test]
fn qdq_values_are_the_rtn_numbers() {
    for (bits, symmetric, dtype) in [
        (Bits::Four, true, DataType::Int4),
        (Bits::Four, false, DataType::Uint4),
        (Bits::Eight, true, DataType::Int8),
        (Bits::Eight, false, DataType::Uint8),
    ] {
        let (k, n) = (100, 5);
        let mut m = mlp(21, k, n);
        run(&mut m, &config(WeightFormat::Qdq, bits, symmetric, 64));
        let g = &m.graph;
        let dq = one(g, "DequantizeLinear");
        assert_eq!(constant_in(g, dq, 0).dtype(), dtype);
        assert_eq!(g.constant_input(dq, 2).is_some(), !symmetric);
        let expect = quantize_rtn(
            &weights(k, n),
            k,
            n,
            BlockParams {
                bits,
                block_size: 64,
                symmetric,
            },
        )
        .unwrap();
        assert_eq!(decode_dq(g, dq).1, expect.dequantized(), "{dtype}");
        // Within half a step of the float weights (step = |scale|), or one step where a
        // symmetric block's far side saturates at 2^(bits-1) - 1.
        let (w, d) = (weights(k, n), decode_dq(g, dq).1);
        let bound = if symmetric { 1.0001 } else { 0.5001 };
        for i in 0..k * n {
            let scale = expect.scales[(i / n / 64) * n + i % n].abs();
            assert!(
                (w[i] - d[i]).abs() <= scale * bound + 1e-7,
                "{dtype} at {i}"
            );
        }
    }
}

// ---------------------------------------------------------------- MatMulNBits form

#[test]
fn matmulnbits_form_replaces_the_matmul_in_place() {
    let mut m = mlp(17, 70, 3);
    let s = run(
        &mut m,
        &config(WeightFormat::MatMulNBits, Bits::Four, false, 32),
    );
    let g = &m.graph;
    assert_eq!(s.nodes, vec!["fc"]);
    assert_eq!(m.opset(""), Some(17), "no opset change needed");
    assert_eq!(m.opset(MS_DOMAIN), Some(1));
    assert!(find(g, "MatMul").is_empty());
    let nb = one(g, "MatMulNBits");
    assert_eq!(g[nb].domain(), MS_DOMAIN);
    assert_eq!(g[nb].name, "fc");
    assert_eq!(g.value_name(ValueRef::new(nb, 0)), "h", "output kept");
    assert_eq!(
        input_names(g, nb),
        vec![
            "x",
            "fc.weight_quantized",
            "fc.weight_scale",
            "fc.weight_zero_point"
        ]
    );
    for (a, v) in [("K", 70), ("N", 3), ("bits", 4), ("block_size", 32)] {
        assert_eq!(int_attr(g, nb, a), Some(v), "{a}");
    }
    assert!(g[nb].attr("accuracy_level").is_none());
    assert_eq!(constant_in(g, nb, 1).shape(), &[3, 3, 16]);
    assert_eq!(constant_in(g, nb, 2).shape(), &[9]);
    assert_eq!(constant_in(g, nb, 3).shape(), &[6]); // 3 columns × ceil(3 / 2) bytes
    assert_eq!(s.weights[0].dtype, DataType::Uint8);
}

#[test]
fn both_forms_hold_the_same_numbers() {
    for bits in [Bits::Four, Bits::Eight] {
        for symmetric in [true, false] {
            let (k, n) = (96, 7);
            let mut a = mlp(21, k, n);
            run(&mut a, &config(WeightFormat::Qdq, bits, symmetric, 32));
            let mut b = mlp(21, k, n);
            run(
                &mut b,
                &config(WeightFormat::MatMulNBits, bits, symmetric, 32),
            );
            let qdq = decode_dq(&a.graph, one(&a.graph, "DequantizeLinear")).1;
            let nbits = decode_nbits(&b.graph, one(&b.graph, "MatMulNBits"));
            assert_eq!(qdq, nbits, "{bits:?} symmetric={symmetric}");
            // Symmetric: no zero-point input, the kernel's default 2^(bits-1) applies.
            let node = one(&b.graph, "MatMulNBits");
            assert_eq!(b.graph.input(node, 3).is_none(), symmetric);
        }
    }
}

// ---------------------------------------------------------------- Gemm

fn gemm_model(trans_b: bool, alpha: f32, beta: f32, c_shape: &[usize]) -> Model {
    let (k, n) = (64, 4);
    let mut m = Model::new(17);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, k as i64]);
    let shape = if trans_b { [n, k] } else { [k, n] };
    let w = init(g, "W", &shape, weights(k, n));
    let c_len: usize = c_shape.iter().product();
    let c = init(
        g,
        "C",
        c_shape,
        (0..c_len).map(|i| i as f32 * 0.1).collect(),
    );
    let y = op(
        g,
        "Gemm",
        "gemm",
        &[x, w, c],
        "g",
        vec![
            ("transB", AttrValue::Int(i64::from(trans_b))),
            ("alpha", AttrValue::Float(alpha)),
            ("beta", AttrValue::Float(beta)),
        ],
    );
    let y = op(g, "Tanh", "act", &[y], "y", vec![]);
    output(g, y);
    m
}

#[test]
fn gemm_with_trans_b_blocks_along_axis_one_in_qdq_form() {
    let mut m = gemm_model(true, 1.0, 1.0, &[4]);
    run(&mut m, &BlockwiseConfig::default());
    let g = &m.graph;
    let dq = one(g, "DequantizeLinear");
    assert_eq!(int_attr(g, dq, "axis"), Some(1));
    let (shape, d) = decode_dq(g, dq);
    assert_eq!(shape, vec![4, 64]);
    assert_eq!(constant_in(g, dq, 1).shape(), &[4, 2]);
    // Rows of the stored [N, K] weight are the columns of the [K, N] matrix.
    let expect = quantize_rtn(
        &{
            let w = weights(64, 4);
            (0..256)
                .map(|i| w[(i % 4) * 64 + i / 4])
                .collect::<Vec<f32>>()
        },
        64,
        4,
        BlockwiseConfig::default().params(),
    )
    .unwrap()
    .dequantized();
    for r in 0..64 {
        for c in 0..4 {
            assert_eq!(d[c * 64 + r], expect[r * 4 + c]);
        }
    }
    let gemm = one(g, "Gemm");
    assert_eq!(input_names(g, gemm)[1], "W_dequantized");
}

#[test]
fn gemm_becomes_matmulnbits_with_its_bias() {
    let nbits = config(WeightFormat::MatMulNBits, Bits::Four, true, 32);
    let mut m = gemm_model(false, 1.0, 1.0, &[4]);
    run(&mut m, &nbits);
    let g = &m.graph;
    let node = one(g, "MatMulNBits");
    assert_eq!(input_names(g, node)[5], "C", "C is the bias as it is");
    assert!(g[node].attr("transB").is_none());

    // alpha folds into the weight, beta into a new bias; [1, N] is a bias too.
    let mut m = gemm_model(true, 2.0, 0.5, &[1, 4]);
    run(&mut m, &nbits);
    let g = &m.graph;
    let node = one(g, "MatMulNBits");
    let bias = constant_in(g, node, 5);
    assert_eq!(bias.shape(), &[4]);
    assert_eq!(bias.to_vec::<f32>().unwrap(), vec![0.0, 0.05, 0.1, 0.15]);
    assert!(g.find_value("C").is_none(), "the old C is dropped");
    let w = weights(64, 4);
    let expect = quantize_rtn(
        &(0..256)
            .map(|i| 2.0 * w[(i % 4) * 64 + i / 4])
            .collect::<Vec<f32>>(),
        64,
        4,
        nbits.params(),
    )
    .unwrap()
    .dequantized();
    assert_eq!(decode_nbits(g, node), expect);
}

#[test]
fn gemm_the_kernel_cannot_take_is_left_with_a_reason() {
    let nbits = config(WeightFormat::MatMulNBits, Bits::Four, true, 32);
    let mut m = gemm_model(false, 1.0, 1.0, &[2, 4]);
    let before = m.clone();
    let s = run(&mut m, &nbits);
    assert!(s.nodes.is_empty());
    assert!(s.skipped[0].reason.contains("bias"), "{:?}", s.skipped);
    assert_eq!(m.graph, before.graph, "nothing left behind");

    let mut m = gemm_model(false, 1.0, 1.0, &[4]);
    let gemm = one(&m.graph, "Gemm");
    m.graph[gemm]
        .attributes
        .push(crate::ir::Attribute::new("transA", AttrValue::Int(1)));
    let s = run(&mut m, &nbits);
    assert!(s.skipped[0].reason.contains("transA"), "{:?}", s.skipped);
    // The QDQ form does not care.
    let mut m = gemm_model(false, 1.0, 1.0, &[2, 4]);
    assert_eq!(run(&mut m, &BlockwiseConfig::default()).nodes, vec!["gemm"]);
}

// ---------------------------------------------------------------- which weights

#[test]
fn shared_and_constant_node_weights_are_quantized_once() {
    let mut m = Model::new(21);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 32]);
    let w = constant_op(g, "w", &[32, 32], weights(32, 32));
    let a = op(g, "MatMul", "a", &[x, w], "a", vec![]);
    let b = op(g, "MatMul", "b", &[a, w], "b", vec![]);
    let y = op(g, "Relu", "r", &[b], "y", vec![]);
    output(g, y);
    let s = run(&mut m, &BlockwiseConfig::default());
    assert_eq!(s.nodes, vec!["a", "b"]);
    assert_eq!(s.weights.len(), 1);
    let g = &m.graph;
    assert_eq!(find(g, "DequantizeLinear").len(), 2);
    assert!(g.find_value("w").is_none());
    assert_eq!(
        find(g, "Constant").len(),
        0,
        "the Constant node is gone; the integers are initializers"
    );
}

#[test]
fn excluded_nodes_lm_head_and_embeddings() {
    // ids → Gather(table) → MatMul(w1) → Relu → MatMul(head) → logits
    let build = || {
        let mut m = Model::new(21);
        let g = &mut m.graph;
        let ids = ValueRef::new(
            g.add_node(Node::input(ValueInfo::tensor(
                "ids",
                DataType::Int64,
                &[Dim::Known(3)],
            ))),
            0,
        );
        let table = init(g, "table", &[10, 32], weights(10, 32));
        let e = op(g, "Gather", "embed", &[table, ids], "e", vec![]);
        let w1 = init(g, "w1", &[32, 32], weights(32, 32));
        let h = op(g, "MatMul", "l1", &[e, w1], "h", vec![]);
        let h = op(g, "Relu", "act", &[h], "hr", vec![]);
        let head = init(g, "head", &[32, 10], weights(32, 10));
        let y = op(g, "MatMul", "lm_head", &[h, head], "logits", vec![]);
        output(g, y);
        m
    };
    let mut m = build();
    let s = run(&mut m, &BlockwiseConfig::default());
    assert_eq!(s.nodes, vec!["l1", "lm_head"]);
    assert_eq!(s.skipped.len(), 1);
    assert_eq!(s.skipped[0].node, "embed");
    assert!(s.skipped[0].reason.contains("embedding"));
    assert_eq!(s.weights[1].role, WeightRole::LmHead);

    let c = BlockwiseConfig {
        lm_head: false,
        embeddings: true,
        exclude_nodes: ["l1".to_string()].into(),
        format: WeightFormat::MatMulNBits,
        ..Default::default()
    };
    let mut m = build();
    let s = run(&mut m, &c);
    assert_eq!(s.nodes, vec!["embed"]);
    let reasons: Vec<(&str, &str)> = s
        .skipped
        .iter()
        .map(|k| (k.node.as_str(), k.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("l1", "node excluded by name"),
            ("lm_head", "LM head kept in float")
        ]
    );
    let g = &m.graph;
    assert_eq!(s.weights[0].role, WeightRole::Embedding);
    let dq = one(g, "DequantizeLinear");
    assert_eq!(int_attr(g, dq, "axis"), Some(1));
    assert_eq!(constant_in(g, dq, 0).shape(), &[10, 32]);
    assert_eq!(constant_in(g, dq, 1).shape(), &[10, 1]);
    let gather = one(g, "Gather");
    assert_eq!(input_names(g, gather), vec!["table_dequantized", "ids"]);
    assert!(find(g, "MatMulNBits").is_empty());
    assert_eq!(m.opset(MS_DOMAIN), None, "no MatMulNBits, no import");
}

#[test]
fn lm_head_is_found_through_reshapes_and_a_bias() {
    let mut m = Model::new(21);
    let g = &mut m.graph;
    let x = input(g, "x", &[2, 32]);
    let w = init(g, "w", &[32, 8], weights(32, 8));
    let b = init(g, "b", &[8], vec![0.5; 8]);
    let h = op(g, "MatMul", "proj", &[x, w], "h", vec![]);
    let h = op(g, "Add", "bias", &[h, b], "hb", vec![]);
    let y = op(g, "Identity", "id", &[h], "y", vec![]);
    output(g, y);
    let heads = lm_head::lm_heads(&m.graph);
    assert_eq!(heads.len(), 1);
    let c = BlockwiseConfig {
        lm_head: false,
        ..Default::default()
    };
    assert!(run(&mut m, &c).nodes.is_empty());
}

#[test]
fn activation_matmuls_and_odd_weights() {
    let mut m = Model::new(21);
    let g = &mut m.graph;
    let x = input(g, "x", &[4, 4]);
    let z = input(g, "z", &[4, 4]);
    let qk = op(g, "MatMul", "qk", &[x, z], "qk", vec![]);
    let w3 = init(g, "w3", &[1, 4, 4], weights(4, 4));
    let y = op(g, "MatMul", "batched", &[qk, w3], "y", vec![]);
    output(g, y);
    let before = m.clone();
    let s = run(&mut m, &BlockwiseConfig::default());
    assert!(s.nodes.is_empty());
    assert_eq!(s.skipped.len(), 1, "the activation MatMul is no candidate");
    assert!(s.skipped[0].reason.contains("rank 3"), "{:?}", s.skipped);
    assert_eq!(m.graph, before.graph);
}

// ---------------------------------------------------------------- subgraphs, refusals

#[test]
fn subgraph_weights_are_quantized_in_their_body() {
    let mut m = Model::new(21);
    let x = input(&mut m.graph, "x", &[2, 32]);
    let cond = ValueRef::new(
        m.graph
            .add_node(Node::input(ValueInfo::tensor("cond", DataType::Bool, &[]))),
        0,
    );
    let outer_w = init(&mut m.graph, "outer_w", &[32, 4], weights(32, 4));
    let mut then_g = Graph::new("then");
    let tx = ValueRef::new(then_g.add_node(Node::outer("x")), 0);
    let tw = init(&mut then_g, "then_w", &[32, 4], weights(32, 4));
    let ty = op(
        &mut then_g,
        "MatMul",
        "then_mm",
        &[tx, tw],
        "then_y",
        vec![],
    );
    output(&mut then_g, ty);
    let mut else_g = Graph::new("else");
    let ex = ValueRef::new(else_g.add_node(Node::outer("x")), 0);
    let ew = ValueRef::new(else_g.add_node(Node::outer("outer_w")), 0);
    let ey = op(
        &mut else_g,
        "MatMul",
        "else_mm",
        &[ex, ew],
        "else_y",
        vec![],
    );
    output(&mut else_g, ey);
    let iff = op(
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

    let s = run(&mut m, &BlockwiseConfig::default());
    assert_eq!(s.nodes, vec!["branch/then_branch/then_mm"]);
    assert_eq!(s.skipped[0].node, "branch/else_branch/else_mm");
    assert!(s.skipped[0].reason.contains("enclosing"), "{:?}", s.skipped);
    let bodies: Vec<&Graph> = m.graph[iff.node].subgraphs().collect();
    one(bodies[0], "DequantizeLinear");
    assert!(bodies[0].find_value("then_w").is_none());
}

#[test]
fn refusals_leave_the_model_untouched() {
    let mut m = mlp(17, 64, 4);
    let before = m.clone();
    let c = BlockwiseConfig {
        block_size: 16,
        ..Default::default()
    };
    let err = quantize_blockwise(&mut m, &c).unwrap_err().to_string();
    assert!(err.contains("block size 16"), "{err}");
    assert_eq!(m, before);

    // The QDQ form needs opset 21; opset 6 cannot be upgraded.
    let mut m = mlp(6, 64, 4);
    let before = m.clone();
    let err = quantize_blockwise(&mut m, &BlockwiseConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("opset 21"), "{err}");
    assert_eq!(m, before);
    // MatMulNBits does not need it.
    let s = run(
        &mut m,
        &config(WeightFormat::MatMulNBits, Bits::Four, true, 32),
    );
    assert_eq!(s.nodes, vec!["fc"]);
}

#[test]
fn a_model_without_weights_keeps_its_opset() {
    let mut m = Model::new(17);
    let x = input(&mut m.graph, "x", &[2]);
    let y = op(&mut m.graph, "Relu", "r", &[x], "y", vec![]);
    output(&mut m.graph, y);
    let s = run(&mut m, &BlockwiseConfig::default());
    assert!(s.nodes.is_empty() && s.weights.is_empty());
    assert_eq!(m.opset(""), Some(17));
}

#[test]
fn pass_reports_the_changes() {
    let mut m = mlp(21, 64, 4);
    let p = QuantizeBlockwise::default();
    assert_eq!(p.name(), "quantize-blockwise");
    let c = p.run(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(c.get("MatMul weight → DequantizeLinear"), 1);
    assert_eq!(c.get("weights quantized"), 1);
    assert_eq!(c.get("float weights removed"), 1);
}

// ---------------------------------------------------------------- parallel quantization

/// RTN that counts its calls and fails on one weight name.
#[derive(Default)]
struct Counting {
    calls: std::sync::Mutex<Vec<String>>,
    fail: &'static str,
}

impl BlockQuantizer for Counting {
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        k: usize,
        n: usize,
        params: BlockParams,
    ) -> Result<BlockQuantized, String> {
        self.calls.lock().unwrap().push(name.to_string());
        if name == self.fail {
            return Err(format!("{name}: refused by the test quantizer"));
        }
        quantize_rtn(w, k, n, params)
    }
}

#[test]
fn each_weight_is_quantized_once_and_reported_in_graph_order() {
    // Eight MatMuls on distinct weights, one weight shared by two, one that fails.
    let mut m = Model::new(21);
    let g = &mut m.graph;
    let mut h = input(g, "x", &[2, 64]);
    let shared = init(g, "shared", &[64, 64], weights(64, 64));
    for i in 0..8 {
        let w = init(g, &format!("w{i}"), &[64, 64], weights(64, 64));
        h = op(
            g,
            "MatMul",
            &format!("mm{i}"),
            &[h, w],
            &format!("h{i}"),
            vec![],
        );
    }
    let a = op(g, "MatMul", "s1", &[h, shared], "s1", vec![]);
    let b = op(g, "MatMul", "s2", &[a, shared], "s2", vec![]);
    let y = op(g, "Relu", "r", &[b], "y", vec![]);
    output(g, y);
    let quantizer = Counting {
        fail: "w3",
        ..Default::default()
    };
    let c = config(WeightFormat::MatMulNBits, Bits::Four, true, 32);
    let s = quantize_blockwise_with(&mut m, &c, &quantizer).unwrap();
    m.graph.verify().unwrap();
    let mut calls = quantizer.calls.into_inner().unwrap();
    calls.sort();
    let mut expected: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
    expected.push("shared".into());
    expected.sort();
    assert_eq!(calls, expected, "each weight quantized exactly once");
    assert_eq!(s.weights.len(), 8);
    assert_eq!(s.nodes.len(), 9);
    assert_eq!(s.skipped.len(), 1);
    assert_eq!(s.skipped[0].node, "mm3");
    assert!(s.skipped[0]
        .reason
        .contains("refused by the test quantizer"));
    assert_eq!(
        find(&m.graph, "MatMul").len(),
        1,
        "the refused node stays float"
    );
    assert!(m.graph.find_value("w3").is_some());
    // Weights come out in graph order, whatever order the threads finished in.
    let names: Vec<&str> = s.weights.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["w0", "w1", "w2", "w4", "w5", "w6", "w7", "shared"]
    );
}

#[test]
fn linear_inputs_name_each_weight_with_its_activation() {
    let m = mlp(17, 64, 8);
    let c = BlockwiseConfig::default();
    assert_eq!(
        linear_inputs(&m, &c),
        vec![LinearInput {
            node: "fc".into(),
            weight: "fc.weight".into(),
            activation: "x".into(),
            k: 64,
            k_axis: 0,
        }]
    );
    // Excluded nodes have no input to calibrate.
    let excluded = BlockwiseConfig {
        exclude_nodes: ["fc".to_string()].into(),
        ..Default::default()
    };
    assert!(linear_inputs(&m, &excluded).is_empty());
    // Gemm with transB reads W as [N, K]: K is its axis 1.
    for trans_b in [false, true] {
        let g = gemm_model(trans_b, 1.0, 1.0, &[4]);
        let li = linear_inputs(&g, &c);
        assert_eq!(li.len(), 1);
        assert_eq!((li[0].weight.as_str(), li[0].k), ("W", 64));
    }
}

#[test]
fn gptq_goes_through_a_quantizer_with_statistics() {
    let mut m = mlp(17, 64, 8);
    let c = BlockwiseConfig {
        method: WeightMethod::Gptq,
        ..Default::default()
    };
    let err = quantize_blockwise(&mut m, &c).unwrap_err();
    assert!(err.to_string().contains("Hessians"), "{err}");
    // Without statistics for the weight the quantizer rounds to nearest, and says so.
    let gptq = Gptq::new(GptqOptions::default());
    let s = quantize_blockwise_with(&mut m, &c, &gptq).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(s.nodes, vec!["fc"]);
    assert_eq!(gptq.fallbacks().len(), 1);
    assert_eq!(gptq.fallbacks()[0].weight, "fc.weight");
}
