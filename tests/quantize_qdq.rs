//! Static QDQ insertion (`kiln_passes::quant::qdq`) on the models in `models/`: ranges by
//! min/max over the captured tensors of `test_data_set_0`, QDQ inserted, and both models run
//! in ONNX Runtime 1.31.1 on CPU. The quantized model must load and run, and its outputs must
//! stay within an SQNR floor of the float model's (per model, per scheme). The floors were
//! set a few dB under what was measured (the measured values are in the comments), so a rule
//! that adds error fails here. Also checks the structure ORT's tool writes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_backends::runtime::{capture, Session, SessionOptions};
use kiln_backends::tensors::{read_test_data_set, IoSpec};
use kiln_backends::value::{NamedValues, Value};
use kiln_passes::ir::Model;
use kiln_passes::opset::UpgradeOpset;
use kiln_passes::optimize::{optimize, OptimizeOptions};
use kiln_passes::pipeline::Pass;
use kiln_passes::quant::qdq::{insert_qdq, plan, required_opset, QdqSummary, TensorKind};
use kiln_passes::quant::{QuantConfig, QuantScheme, QuantType, Range, Ranges};
use kiln_passes::tensor::{DataType, Tensor};
use kiln_tests::repo_root;

/// The models quantized here, each with test_data_set_0.
const MODELS: [&str; 10] = [
    "tiny_cnn",
    "constant_weights",
    "legacy_opset9",
    "tf2onnx_names",
    "external_mlp",
    "resnet_tiny",
    "mobilenetv2_tiny",
    "bert_tiny_op17",
    "gpt2_tiny",
    "control_flow",
];

fn model_dir(name: &str) -> PathBuf {
    repo_root().join("models").join(name)
}

/// The float model as `kiln quantize` sees it: optimized (as ORT users must do by hand with
/// `quant_pre_process`), upgraded to the opset the QDQ form needs.
fn prepared(name: &str, config: &QuantConfig) -> Model {
    let loaded = kiln_proto::load_model(&model_dir(name).join("model.onnx")).expect("model loads");
    let mut model = Model::from_proto(&loaded.model).expect("graph builds");
    optimize(&mut model, &OptimizeOptions::default()).expect("optimize runs");
    let need = required_opset(config);
    if model.opset("").unwrap_or(0) < need {
        UpgradeOpset { target: need }
            .run(&mut model)
            .expect("opset upgrade");
    }
    model.graph.verify().expect("prepared graph verifies");
    model
}

fn specs(session: &Session) -> (Vec<IoSpec>, Vec<IoSpec>) {
    (
        session.inputs().iter().map(|i| i.spec()).collect(),
        session.outputs().iter().map(|i| i.spec()).collect(),
    )
}

/// Inputs of test_data_set_0.
fn inputs(name: &str, float: &kiln_proto::onnx::ModelProto) -> NamedValues {
    let session = Session::from_model(float).expect("float model loads in ORT");
    let (ins, outs) = specs(&session);
    read_test_data_set(&model_dir(name).join("test_data_set_0"), &ins, &outs)
        .expect("test data reads")
        .0
}

/// Min/max over the captured tensors (NaN ignored).
fn minmax_ranges(
    float: &kiln_proto::onnx::ModelProto,
    names: &[String],
    feed: &NamedValues,
) -> Ranges {
    let captured = capture(float, names, feed, &SessionOptions::as_written()).expect("capture");
    captured
        .into_iter()
        .map(|(name, value)| {
            let t = value.as_tensor().expect("captured tensors are tensors");
            let v = t.to_f64_vec().expect("captured tensor is numeric");
            let (lo, hi) = v
                .iter()
                .filter(|x| !x.is_nan())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                    (l.min(x), h.max(x))
                });
            let r = if lo <= hi {
                Range::new(lo as f32, hi as f32)
            } else {
                Range::new(0.0, 0.0)
            };
            (name, r)
        })
        .collect()
}

fn run(model: &kiln_proto::onnx::ModelProto, feed: &NamedValues) -> NamedValues {
    Session::from_model_with(model, &SessionOptions::as_written())
        .expect("model loads in ORT")
        .run(feed)
        .expect("model runs in ORT")
}

/// SQNR (dB) of `candidate` against `reference`: 10·log10(Σr² / Σ(r−c)²); ∞ when equal.
fn sqnr(reference: &Tensor, candidate: &Tensor) -> f64 {
    assert_eq!(reference.shape(), candidate.shape(), "output shapes differ");
    let r = reference.to_f64_vec().expect("numeric output");
    let c = candidate.to_f64_vec().expect("numeric output");
    let signal: f64 = r.iter().map(|x| x * x).sum();
    let noise: f64 = r.iter().zip(&c).map(|(a, b)| (a - b) * (a - b)).sum();
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// One quantization of one model.
struct Outcome {
    /// The lowest SQNR over the float outputs.
    sqnr: f64,
    nodes_before: usize,
    nodes_after: usize,
    float: kiln_proto::onnx::ModelProto,
    quantized: kiln_proto::onnx::ModelProto,
    summary: QdqSummary,
    calibrated: usize,
}

fn operators(model: &Model) -> usize {
    model.graph.nodes().filter(|(_, n)| n.is_operator()).count()
}

/// Quantizes `name` with `config` and compares it with the float model in ORT.
fn quantize(name: &str, config: &QuantConfig) -> Outcome {
    let mut model = prepared(name, config);
    let float = model.to_proto();
    let feed = inputs(name, &float);
    let p = plan(&model, config).expect("plan");
    let ranges = minmax_ranges(&float, &p.tensors, &feed);
    let nodes_before = operators(&model);
    let summary = insert_qdq(&mut model, config, &ranges).expect("insert_qdq");
    model.graph.verify().expect("quantized graph verifies");
    let nodes_after = operators(&model);
    let quantized = model.to_proto();
    let want = run(&float, &feed);
    let got = run(&quantized, &feed);
    assert_eq!(
        want.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        got.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "{name}: graph outputs changed"
    );
    let mut worst = f64::INFINITY;
    for ((_, w), (_, g)) in want.iter().zip(&got) {
        if let (Value::Tensor(w), Value::Tensor(g)) = (w, g) {
            if w.dtype() == DataType::Float {
                worst = worst.min(sqnr(w, g));
            }
        }
    }
    Outcome {
        sqnr: worst,
        nodes_before,
        nodes_after,
        float,
        quantized,
        summary,
        calibrated: p.tensors.len(),
    }
}

fn config(act: QuantType, per_channel: bool) -> QuantConfig {
    config_sym(act, false, per_channel)
}

fn config_sym(act: QuantType, symmetric: bool, per_channel: bool) -> QuantConfig {
    let mut c = QuantConfig {
        activations: QuantScheme::new(act, symmetric),
        ..QuantConfig::default()
    };
    c.weights.per_channel = per_channel;
    c
}

/// Quantizes every model, prints a table, and checks each SQNR against its floor.
fn check_floors(title: &str, config: &QuantConfig, floors: &BTreeMap<&str, f64>) {
    let mut table = format!(
        "{title}\n{:<18} {:>9} {:>7} {:>6} {:>6} {:>5}\n",
        "model", "SQNR dB", "floor", "before", "after", "calib"
    );
    let mut failures = Vec::new();
    for name in MODELS {
        let o = quantize(name, config);
        let floor = floors[name];
        table += &format!(
            "{name:<18} {:>9.2} {floor:>7.1} {:>6} {:>6} {:>5}\n",
            o.sqnr, o.nodes_before, o.nodes_after, o.calibrated
        );
        if o.sqnr.is_nan() || o.sqnr < floor {
            failures.push(format!("{name}: SQNR {:.2} dB < floor {floor} dB", o.sqnr));
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}

#[test]
fn uint8_activations_per_channel_weights() {
    // Measured on this machine (dB): tiny_cnn 41.28, constant_weights 38.77, legacy_opset9
    // 43.30, tf2onnx_names 41.75, external_mlp 39.73, resnet_tiny 46.89, mobilenetv2_tiny
    // 41.14, bert_tiny_op17 33.15, gpt2_tiny 32.33. ORT's quantize_static (QDQ, per channel,
    // MinMax on the same data, same optimized float model) gives the same on the CNNs and
    // 38.06 / 30.91 on constant_weights / bert_tiny_op17; it fails on gpt2_tiny.
    // control_flow has nothing quantizable in its main graph: its outputs stay exact.
    let floors = BTreeMap::from([
        ("tiny_cnn", 38.0),
        ("constant_weights", 35.5),
        ("legacy_opset9", 40.0),
        ("tf2onnx_names", 38.5),
        ("external_mlp", 36.5),
        ("resnet_tiny", 43.5),
        ("mobilenetv2_tiny", 38.0),
        ("bert_tiny_op17", 30.0),
        ("gpt2_tiny", 29.0),
        ("control_flow", f64::INFINITY),
    ]);
    check_floors(
        "uint8 asymmetric activations, int8 per-channel weights",
        &config(QuantType::Uint8, true),
        &floors,
    );
}

#[test]
fn int8_activations_per_tensor_weights() {
    // Measured (dB): tiny_cnn 38.35, constant_weights 39.26, legacy_opset9 51.92,
    // tf2onnx_names 41.70, external_mlp 37.66, resnet_tiny 48.17, mobilenetv2_tiny 36.31,
    // bert_tiny_op17 33.26, gpt2_tiny 31.82 (ORT: equal on the CNNs, 38.06 / 31.33 on
    // constant_weights / bert_tiny_op17).
    let floors = BTreeMap::from([
        ("tiny_cnn", 35.0),
        ("constant_weights", 36.0),
        ("legacy_opset9", 48.5),
        ("tf2onnx_names", 38.5),
        ("external_mlp", 34.5),
        ("resnet_tiny", 45.0),
        ("mobilenetv2_tiny", 33.0),
        ("bert_tiny_op17", 30.0),
        ("gpt2_tiny", 28.5),
        ("control_flow", f64::INFINITY),
    ]);
    check_floors(
        "int8 asymmetric activations, int8 per-tensor weights",
        &config(QuantType::Int8, false),
        &floors,
    );
}

#[test]
fn int8_symmetric_activations_per_tensor_weights() {
    // Symmetric activations keep every Relu (zero is mid-range); a Relu's input is then
    // quantized with the Relu output's range, as ORT's tool does. Measured (dB): tiny_cnn
    // 34.68, constant_weights 38.04, legacy_opset9 44.38, tf2onnx_names 40.53, external_mlp
    // 38.70, resnet_tiny 41.82, mobilenetv2_tiny 36.36, bert_tiny_op17 31.39, gpt2_tiny 31.31;
    // ORT's quantize_static (ActivationSymmetric) gives exactly the same on the CNNs.
    let floors = BTreeMap::from([
        ("tiny_cnn", 31.5),
        ("constant_weights", 35.0),
        ("legacy_opset9", 41.0),
        ("tf2onnx_names", 37.5),
        ("external_mlp", 35.5),
        ("resnet_tiny", 38.5),
        ("mobilenetv2_tiny", 33.0),
        ("bert_tiny_op17", 28.0),
        ("gpt2_tiny", 28.0),
        ("control_flow", f64::INFINITY),
    ]);
    check_floors(
        "int8 symmetric activations, int8 per-tensor weights",
        &config_sym(QuantType::Int8, true, false),
        &floors,
    );
}

#[test]
fn uint16_activations_gain_accuracy() {
    // 16-bit activations need opset 21; the model is upgraded to it. Measured: 51.58 dB
    // against 46.89 with uint8 (the int8 weights now dominate the error).
    let c16 = config(QuantType::Uint16, true);
    assert_eq!(required_opset(&c16), 21);
    let o16 = quantize("resnet_tiny", &c16);
    let o8 = quantize("resnet_tiny", &config(QuantType::Uint8, true));
    println!(
        "resnet_tiny: uint16 {:.2} dB, uint8 {:.2} dB",
        o16.sqnr, o8.sqnr
    );
    assert!(o16.sqnr >= 48.5, "uint16 SQNR {:.2} dB", o16.sqnr);
    assert!(
        o16.sqnr > o8.sqnr + 3.0,
        "uint16 {:.2} dB not 3 dB above uint8 {:.2} dB",
        o16.sqnr,
        o8.sqnr
    );
    let q = o16.quantized.graph.as_ref().unwrap();
    let zp_types: Vec<i32> = q
        .node
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .filter_map(|n| q.initializer.iter().find(|t| t.name == n.input[2]))
        .map(|t| t.data_type)
        .collect();
    assert!(!zp_types.is_empty());
    assert!(
        zp_types.iter().all(|&t| t == DataType::Uint16.onnx()),
        "{zp_types:?}"
    );
}

/// Initializers of a graph by name.
fn initializers(g: &kiln_proto::onnx::GraphProto) -> BTreeMap<&str, Tensor> {
    g.initializer
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                Tensor::from_proto(t).expect("initializer decodes"),
            )
        })
        .collect()
}

#[test]
fn tiny_cnn_has_the_qdq_structure_ort_writes() {
    let o = quantize("tiny_cnn", &config(QuantType::Uint8, true));
    let g = o.quantized.graph.as_ref().unwrap();
    let inits = initializers(g);
    let producer = |name: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == name));
    let convs: Vec<_> = g.node.iter().filter(|n| n.op_type == "Conv").collect();
    assert_eq!(convs.len(), 2);
    for conv in convs {
        // Weight: int8 behind a DequantizeLinear, 1-D scales along axis 0.
        let dq = producer(&conv.input[1]).expect("weight producer");
        assert_eq!(dq.op_type, "DequantizeLinear");
        let w = &inits[dq.input[0].as_str()];
        assert_eq!(w.dtype(), DataType::Int8);
        let w_scale: Vec<f32> = inits[dq.input[1].as_str()].to_vec().unwrap();
        assert_eq!(inits[dq.input[1].as_str()].shape(), &[w.shape()[0]]);
        let axis = dq
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .and_then(|a| a.i);
        assert_eq!(axis, Some(0));
        // Input: one Q/DQ pair with a scalar scale.
        let x_dq = producer(&conv.input[0]).expect("input producer");
        assert_eq!(x_dq.op_type, "DequantizeLinear");
        let x_scale: Vec<f32> = inits[x_dq.input[1].as_str()].to_vec().unwrap();
        assert_eq!(x_scale.len(), 1);
        // Bias: int32, scale = x_scale * w_scale, zero point 0.
        let b_dq = producer(&conv.input[2]).expect("bias producer");
        assert_eq!(b_dq.op_type, "DequantizeLinear");
        assert_eq!(inits[b_dq.input[0].as_str()].dtype(), DataType::Int32);
        let b_scale: Vec<f32> = inits[b_dq.input[1].as_str()].to_vec().unwrap();
        assert_eq!(b_scale.len(), w_scale.len());
        for (b, w) in b_scale.iter().zip(&w_scale) {
            assert_eq!(*b, x_scale[0] * w, "bias scale");
        }
        let b_zp: Vec<i32> = inits[b_dq.input[2].as_str()].to_vec().unwrap();
        assert!(b_zp.iter().all(|&z| z == 0));
    }
    // One QuantizeLinear per tensor.
    let mut quantized: Vec<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .map(|n| n.input[0].as_str())
        .collect();
    let count = quantized.len();
    quantized.sort_unstable();
    quantized.dedup();
    assert_eq!(
        quantized.len(),
        count,
        "a tensor has two QuantizeLinear nodes"
    );
    // Graph inputs and outputs keep their names.
    let names = |g: &kiln_proto::onnx::GraphProto| {
        (
            g.input.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
            g.output.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(names(g), names(o.float.graph.as_ref().unwrap()));
    // The output is the DequantizeLinear of the last Gemm's quantized output.
    let out = &g.output[0].name;
    assert_eq!(
        producer(out).map(|n| n.op_type.as_str()),
        Some("DequantizeLinear")
    );
    // The Relu after the first Conv is folded into that Conv's quantization.
    assert_eq!(
        o.summary.removed_activations.len(),
        2,
        "{:?}",
        o.summary.removed_activations
    );
    assert!(g.node.iter().all(|n| n.op_type != "Relu"));
    assert_eq!(o.summary.saturated_bias, 0);
    let weights = o
        .summary
        .tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Weight)
        .count();
    assert_eq!(weights, 3);
}

#[test]
fn quantizing_is_deterministic() {
    use prost::Message;
    let c = config(QuantType::Uint8, true);
    let a = quantize("mobilenetv2_tiny", &c).quantized.encode_to_vec();
    let b = quantize("mobilenetv2_tiny", &c).quantized.encode_to_vec();
    assert!(a == b, "two runs wrote different bytes");
}

#[test]
fn control_flow_bodies_stay_float_and_are_reported() {
    let c = config(QuantType::Uint8, true);
    let model = prepared("control_flow", &c);
    let p = plan(&model, &c).unwrap();
    assert!(p.nodes.is_empty(), "{:?}", p.nodes);
    let body: Vec<_> = p
        .skipped
        .iter()
        .filter(|s| s.reason.contains("bodies stay float"))
        .map(|s| s.op_type.as_str())
        .collect();
    // Mul (then branch), Add and Identity (loop body); Sub has no rule.
    assert!(
        body.contains(&"Mul") && body.contains(&"Add"),
        "{:?}",
        p.skipped
    );
}

#[test]
fn an_already_quantized_model_is_not_quantized_again() {
    let c = config(QuantType::Uint8, true);
    let loaded = kiln_proto::load_model(&model_dir("bert_tiny_qdq").join("model.onnx")).unwrap();
    let mut model = Model::from_proto(&loaded.model).unwrap();
    let p = plan(&model, &c).unwrap();
    let already = p
        .skipped
        .iter()
        .filter(|s| s.reason.starts_with("already quantized"))
        .count();
    assert!(already >= 16, "{:?}", p.skipped);
    for s in &p.skipped {
        assert!(
            s.op_type != "MatMul" || s.reason.starts_with("already"),
            "{s:?}"
        );
    }
    let q_before = count_op(&model, "QuantizeLinear");
    let ranges = minmax_ranges(
        &loaded.model,
        &p.tensors,
        &inputs("bert_tiny_qdq", &loaded.model),
    );
    insert_qdq(&mut model, &c, &ranges).unwrap();
    model.graph.verify().unwrap();
    // No tensor that already had Q/DQ gets a second pair.
    let proto = model.to_proto();
    let g = proto.graph.as_ref().unwrap();
    let mut q_inputs: Vec<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .map(|n| n.input[0].as_str())
        .collect();
    let n = q_inputs.len();
    q_inputs.sort_unstable();
    q_inputs.dedup();
    assert_eq!(n, q_inputs.len());
    println!(
        "bert_tiny_qdq: {} QuantizeLinear before, {} after, plan nodes {:?}",
        q_before, n, p.nodes
    );
    let feed = inputs("bert_tiny_qdq", &loaded.model);
    run(&proto, &feed);
}

fn count_op(model: &Model, op: &str) -> usize {
    model
        .graph
        .nodes()
        .filter(|(_, n)| n.op_type() == op)
        .count()
}

#[test]
fn softmax_and_layernorm_quantize_when_not_pinned() {
    // Measured on bert_tiny_op17 (uint8, per channel): 33.15 dB with LayerNormalization and
    // Softmax left float (pinned), 31.99 dB with them quantized (ORT's quantize_static, which
    // quantizes them by default: 30.91 dB).
    let mut c = config(QuantType::Uint8, true);
    c.pin_ops.clear();
    let o = quantize("bert_tiny_op17", &c);
    println!(
        "bert_tiny_op17 with LayerNormalization/Softmax quantized: {:.2} dB",
        o.sqnr
    );
    let q = o.quantized.graph.as_ref().unwrap();
    let producer = |name: &str| q.node.iter().find(|n| n.output.iter().any(|o| o == name));
    for n in q
        .node
        .iter()
        .filter(|n| n.op_type == "Softmax" || n.op_type == "LayerNormalization")
    {
        assert_eq!(
            producer(&n.input[0]).map(|p| p.op_type.as_str()),
            Some("DequantizeLinear"),
            "{}",
            n.name
        );
    }
    let softmax_out = o
        .summary
        .tensors
        .iter()
        .filter(|t| t.range == Some(Range::new(0.0, 1.0)))
        .count();
    assert_eq!(softmax_out, 2);
    assert!(o.sqnr >= 29.0, "{:.2} dB", o.sqnr);
}
