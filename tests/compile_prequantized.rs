//! `kiln compile` on models that arrive already quantized (ORT's QOperator, QDQ and dynamic
//! forms, a PyTorch QAT export, ORT's com.microsoft 16-bit Q/DQ): the scales are kept and
//! legalized to the target. Every assertion reads the emitted model; validation runs the
//! emitted model against the model as it arrived in ONNX Runtime.

use std::collections::BTreeSet;
use std::path::Path;

use kiln_passes::ir::{Graph, Model, NodeIndex, ValueRef};
use kiln_passes::tensor::{DataType, Tensor};
use kiln_tests::{kiln, repo_root};

fn compile(model: &str, profile: &str, out: &Path) -> serde_json::Value {
    compile_with(model, profile, out, &["--synthetic", "4"])
}

/// `kiln compile` with the given data arguments; it must pass validation.
fn compile_with(model: &str, profile: &str, out: &Path, data: &[&str]) -> serde_json::Value {
    let path = repo_root().join("models").join(model).join("model.onnx");
    let mut args = vec![
        "compile",
        path.to_str().unwrap(),
        "--profile",
        profile,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(data);
    let (code, stdout, stderr) = kiln(&args);
    assert_eq!(code, 0, "{model} {profile}: {stdout}{stderr}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(
        r["arrived_quantized"].is_string(),
        "{model} {profile}: the report does not say it arrived quantized"
    );
    assert_eq!(r["validation"]["passed"], true, "{model} {profile}");
    r
}

fn load(path: &Path) -> Model {
    Model::from_proto(&kiln_proto::load_model(path).unwrap().model).unwrap()
}

fn ops(g: &Graph) -> BTreeSet<String> {
    g.nodes()
        .filter(|(_, n)| n.is_operator())
        .map(|(_, n)| n.op_type().to_string())
        .collect()
}

fn nodes<'a>(g: &'a Graph, op: &'a str) -> impl Iterator<Item = NodeIndex> + 'a {
    g.nodes()
        .filter(move |(_, n)| n.is_operator() && n.op_type() == op)
        .map(|(i, _)| i)
}

fn legalized(r: &serde_json::Value) -> String {
    r["legalized"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a Q/DQ node quantizes an activation (its data input is not a constant).
fn on_activation(g: &Graph, n: NodeIndex) -> bool {
    g.input(n, 0).is_some_and(|v| g.constant(v).is_none())
}

fn scales(g: &Graph, n: NodeIndex) -> Vec<f64> {
    g.constant_input(n, 1).and_then(Tensor::to_f64_vec).unwrap()
}

#[test]
fn ort_qoperator_int8_model_becomes_uint8_qdq_for_the_edge_tpu_with_its_scales() {
    let tmp = tempfile::tempdir().unwrap();
    let r = compile("resnet_tiny_qop", "edgetpu", tmp.path());
    let m = load(&tmp.path().join("model.onnx"));
    let g = &m.graph;
    let found = ops(g);
    assert!(
        !found
            .iter()
            .any(|o| o.starts_with("QLinear") || o == "QGemm"),
        "QOperator ops left: {found:?}"
    );
    // Every activation Q/DQ is uint8 now (the model arrived with int8 activations).
    for op in ["QuantizeLinear", "DequantizeLinear"] {
        for n in nodes(g, op).filter(|&n| on_activation(g, n)) {
            let zp = g.constant_input(n, 2).expect("a zero point");
            assert_eq!(zp.dtype(), DataType::Uint8, "{}", g[n].label(n.index()));
        }
    }
    // The scales are the model's own: each activation scale of the output is one of the input.
    let original = load(&repo_root().join("models/resnet_tiny_qop/model.onnx"));
    let had: BTreeSet<u64> = original
        .graph
        .nodes()
        .filter(|(_, n)| !n.is_operator())
        .filter_map(|(i, _)| original.graph.constant(ValueRef::new(i, 0)))
        .filter(|t| t.dtype() == DataType::Float)
        .flat_map(|t| t.to_f64_vec().unwrap())
        .map(|v| (v as f32).to_bits() as u64)
        .collect();
    for n in nodes(g, "QuantizeLinear") {
        for s in scales(g, n) {
            assert!(
                had.contains(&((s as f32).to_bits() as u64)),
                "new scale {s}"
            );
        }
    }
    // Inputs and outputs are uint8, and every Conv runs on the TPU.
    assert_eq!(r["quantized_io"].as_array().unwrap().len(), 2, "{r}");
    for io in r["quantized_io"].as_array().unwrap() {
        assert_eq!(io["dtype"], "uint8");
    }
    assert!(
        r["partition"]["fallbacks"].as_array().unwrap().is_empty(),
        "{}",
        r["partition"]["fallbacks"]
    );
    // The shift is exact: the legalized model computes what the original did.
    let sqnr = r["validation"]["outputs"][0]["sqnr_db"].as_f64();
    assert!(sqnr.is_none_or(|s| s > 60.0), "SQNR {sqnr:?}");
}

#[test]
fn pytorch_qat_export_folds_its_batchnorm_and_relu_for_hexagon() {
    let tmp = tempfile::tempdir().unwrap();
    let r = compile("cnn_qat", "hexagon", tmp.path());
    let m = load(&tmp.path().join("model.onnx"));
    let g = &m.graph;
    let found = ops(g);
    for gone in ["BatchNormalization", "Div", "Relu"] {
        assert!(!found.contains(gone), "{gone} left: {found:?}");
    }
    let text = legalized(&r);
    assert!(text.contains("BatchNormalization folded"), "{text}");
    // Conv weights: int8 integers (folded from the QAT float weights), per channel, symmetric.
    let mut convs = 0;
    for conv in nodes(g, "Conv") {
        let dq = g.input(conv, 1).unwrap().node;
        assert_eq!(g[dq].op_type(), "DequantizeLinear");
        let w = g.constant_input(dq, 0).expect("integer weight");
        assert_eq!(w.dtype(), DataType::Int8);
        assert!(scales(g, dq).len() > 1, "per channel");
        let zp = g.constant_input(dq, 2).unwrap().to_f64_vec().unwrap();
        assert!(zp.iter().all(|&z| z == 0.0));
        // The bias the fold made is int32.
        let b = g.input(conv, 2).unwrap().node;
        assert_eq!(g.constant_input(b, 0).unwrap().dtype(), DataType::Int32);
        convs += 1;
    }
    assert_eq!(convs, 4);
    // The Gemm's weight is per tensor on the HTP.
    let gemm = nodes(g, "Gemm").next().unwrap();
    assert_eq!(scales(g, g.input(gemm, 1).unwrap().node).len(), 1);
}

#[test]
fn ort_dynamic_model_is_calibrated_for_hexagon_and_keeps_int8_weights_on_the_ane() {
    let tmp = tempfile::tempdir().unwrap();
    let hex = tmp.path().join("hexagon");
    // Calibrated on the model's own sample (random token ids make a poor calibration set).
    let data = repo_root().join("models/bert_tiny_dyn");
    let r = compile_with(
        "bert_tiny_dyn",
        "hexagon",
        &hex,
        &["--calibration", data.to_str().unwrap()],
    );
    let m = load(&hex.join("model.onnx"));
    let found = ops(&m.graph);
    for gone in ["MatMulInteger", "DynamicQuantizeLinear", "ConvInteger"] {
        assert!(!found.contains(gone), "{gone} left");
    }
    assert!(
        r["quantize"].is_object(),
        "no activation scales to keep: calibrated"
    );
    assert!(legalized(&r).contains("MatMulInteger"), "{}", legalized(&r));

    let ane = tmp.path().join("ane");
    let r = compile_allowing_metrics("bert_tiny_dyn", "ane", &ane);
    let m = load(&ane.join("model.onnx"));
    let g = &m.graph;
    assert!(!ops(g).contains("DynamicQuantizeLinear"));
    // The 13 quantized MatMul weights keep their integers behind a DequantizeLinear (and the
    // Cast to the compute type).
    let int_weights = nodes(g, "MatMul")
        .filter(|&mm| {
            let through_cast = |v: ValueRef| match g[v.node].op_type() {
                "Cast" => g.input(v.node, 0),
                _ => Some(v),
            };
            g.input(mm, 1).and_then(through_cast).is_some_and(|v| {
                g[v.node].op_type() == "DequantizeLinear"
                    && g.constant_input(v.node, 0)
                        .is_some_and(|t| matches!(t.dtype(), DataType::Int8 | DataType::Uint8))
            })
        })
        .count();
    assert!(
        int_weights >= 13,
        "{int_weights} integer MatMul weights\n{r}"
    );
}

/// Like `compile`, but the validation may fail a threshold (exit 1): the ANE's top-1 on a
/// hidden-state output is not a meaningful metric; the output is still written.
fn compile_allowing_metrics(model: &str, profile: &str, out: &Path) -> serde_json::Value {
    let path = repo_root().join("models").join(model).join("model.onnx");
    let (code, stdout, stderr) = kiln(&[
        "compile",
        path.to_str().unwrap(),
        "--profile",
        profile,
        "--synthetic",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        code == 0 || code == 1,
        "{model} {profile}: {stdout}{stderr}"
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// The domains of the model's Q/DQ nodes, and its zero-point types.
fn qdq_forms(m: &Model) -> (BTreeSet<String>, BTreeSet<DataType>) {
    let g = &m.graph;
    let mut domains = BTreeSet::new();
    let mut types = BTreeSet::new();
    for (n, node) in g.nodes().filter(|(_, n)| n.is_operator()) {
        if matches!(node.op_type(), "QuantizeLinear" | "DequantizeLinear") && on_activation(g, n) {
            domains.insert(node.domain().to_string());
            types.insert(g.constant_input(n, 2).unwrap().dtype());
        }
    }
    (domains, types)
}

#[test]
fn microsoft_uint16_qdq_follows_the_profiles_qdq_domain() {
    // hexagon's `qdq_domain: auto`: 16-bit below opset 21 stays com.microsoft, as ORT's
    // get_qnn_qdq_config writes it; the opset is not raised.
    let tmp = tempfile::tempdir().unwrap();
    let auto = tmp.path().join("auto");
    compile("cnn_qdq16", "hexagon", &auto);
    let m = load(&auto.join("model.onnx"));
    assert!(m.opset("").unwrap() < 21);
    let (domains, types) = qdq_forms(&m);
    assert_eq!(domains, BTreeSet::from(["com.microsoft".to_string()]));
    assert_eq!(
        types,
        BTreeSet::from([DataType::Uint16]),
        "the 16-bit activations stay"
    );
    // A profile asking for the standard ops gets them at opset 21.
    let profile = tmp.path().join("standard.yaml");
    std::fs::write(
        &profile,
        "name: hexagon-standard\nextends: hexagon\nquantization:\n  qdq_domain: onnx\n",
    )
    .unwrap();
    let standard = tmp.path().join("standard");
    compile("cnn_qdq16", profile.to_str().unwrap(), &standard);
    let m = load(&standard.join("model.onnx"));
    assert!(m.opset("").unwrap() >= 21);
    let (domains, types) = qdq_forms(&m);
    assert_eq!(domains, BTreeSet::from([String::new()]));
    assert_eq!(types, BTreeSet::from([DataType::Uint16]));
}

#[test]
fn a_float_model_at_uint16_gets_microsoft_qdq_on_hexagon_below_opset_21() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("u16.yaml");
    std::fs::write(
        &profile,
        "name: hexagon-u16\nextends: hexagon\nquantization:\n  activations: {dtype: uint16}\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let path = repo_root().join("models/tiny_cnn/model.onnx");
    let (code, stdout, stderr) = kiln(&[
        "compile",
        path.to_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
        "--synthetic",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let m = load(&out.join("model.onnx"));
    assert!(m.opset("").unwrap() < 21, "opset {:?}", m.opset(""));
    let (domains, types) = qdq_forms(&m);
    assert_eq!(domains, BTreeSet::from(["com.microsoft".to_string()]));
    assert!(types.contains(&DataType::Uint16), "{types:?}");
}

#[test]
fn ort_qdq_model_gets_per_tensor_matmul_weights_for_hexagon() {
    let tmp = tempfile::tempdir().unwrap();
    let r = compile("bert_tiny_qdq", "hexagon", tmp.path());
    let m = load(&tmp.path().join("model.onnx"));
    let g = &m.graph;
    let mut checked = 0;
    for mm in nodes(g, "MatMul") {
        let Some(w) = g.input(mm, 1) else { continue };
        if g[w.node].op_type() == "DequantizeLinear" && g.constant_input(w.node, 0).is_some() {
            assert_eq!(scales(g, w.node).len(), 1, "{}", g[mm].label(mm.index()));
            checked += 1;
        }
    }
    assert!(checked >= 12, "{checked} quantized MatMul weights");
    assert!(legalized(&r).contains("per-tensor"), "{}", legalized(&r));
}
