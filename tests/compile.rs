//! `kiln compile` end to end: every model in models/ × every built-in profile, assertions that
//! read the emitted model, wrong profiles, determinism.

use std::path::{Path, PathBuf};

use kiln_passes::ir::{AttrValue, Model, ValueRef};
use kiln_passes::tensor::DataType;
use kiln_tests::{kiln, repo_root};

const PROFILES: &[&str] = &[
    "edgetpu",
    "hexagon",
    "ane",
    "ane-fp16",
    "neon",
    "neon-int4",
    "ane-int4",
];

fn models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("models"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("model.onnx"))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 10, "models/ has {} models", v.len());
    v
}

fn compile(model: &Path, profile: &str, out: &Path) -> (i32, String, String) {
    kiln(&[
        "compile",
        model.to_str().unwrap(),
        "--profile",
        profile,
        "--synthetic",
        "2",
        "-o",
        out.to_str().unwrap(),
    ])
}

fn load(path: &Path) -> Model {
    let loaded = kiln_proto::load_model(path).unwrap();
    Model::from_proto(&loaded.model).unwrap()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn every_model_compiles_for_every_profile_or_says_why_not() {
    let tmp = tempfile::tempdir().unwrap();
    for model in models() {
        let name = model
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for profile in PROFILES {
            let out = tmp.path().join(format!("{name}-{profile}"));
            let (code, stdout, stderr) = compile(&model, profile, &out);
            assert!(
                code == 0 || code == 1,
                "{name} {profile}: exit {code}: {stdout}{stderr}"
            );
            let r = report(&out);
            // A model that arrived quantized is legalized, and the report says so.
            let quantized = load(&model).graph.nodes().any(|(_, n)| {
                n.is_operator()
                    && matches!(
                        n.op_type(),
                        "QuantizeLinear" | "DequantizeLinear" | "DynamicQuantizeLinear"
                    )
            });
            assert_eq!(
                r["arrived_quantized"].is_string(),
                quantized,
                "{name} {profile}: arrived_quantized = {}",
                r["arrived_quantized"]
            );
            let v = &r["validation"];
            assert_eq!(v["passed"].as_bool(), Some(code == 0), "{name} {profile}");
            if code == 1 {
                let failing = v["outputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["passed"] == false)
                    .unwrap_or_else(|| panic!("{name} {profile}: no failing output"));
                assert!(
                    !failing["failures"].as_array().unwrap().is_empty(),
                    "{name} {profile}: no failing metric"
                );
            }
            assert!(out.join("model.onnx").is_file() && out.join("report.md").is_file());
        }
    }
}

/// Whether a node computes in float in QDQ form: a float input not from DQ (constants
/// aside), or a float output read by anything but QuantizeLinear.
fn computes_in_float(m: &Model, n: kiln_passes::ir::NodeIndex) -> bool {
    let g = &m.graph;
    let float = |v: ValueRef| {
        matches!(
            g.value_info(v).elem_type(),
            Some(DataType::Float | DataType::Float16)
        )
    };
    g.inputs(n)
        .into_iter()
        .flatten()
        .any(|v| float(v) && g.constant(v).is_none() && g[v.node].op_type() != "DequantizeLinear")
        || (0..g[n].outputs.len()).any(|s| {
            let v = ValueRef::new(n, s);
            float(v)
                && (g.outputs.iter().any(|o| o.value == v)
                    || g.consumers(v)
                        .iter()
                        .any(|(c, _)| g[*c].op_type() != "QuantizeLinear"))
        })
}

#[test]
fn edgetpu_has_no_float_op_outside_the_declared_fallbacks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("e");
    let (code, _, err) = compile(
        &repo_root().join("models/mobilenetv2_tiny/model.onnx"),
        "edgetpu",
        &out,
    );
    assert!(code == 0 || code == 1, "{err}");
    let fallbacks: Vec<String> = report(&out)["partition"]["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["node"].as_str().unwrap().to_string())
        .collect();
    let mut m = load(&out.join("model.onnx"));
    use kiln_passes::pipeline::Pass;
    kiln_passes::infer::InferShapes.run(&mut m).unwrap();
    let g = &m.graph;
    let mut ops = 0;
    for (n, node) in g.nodes() {
        if !node.is_operator()
            || matches!(
                node.op_type(),
                "QuantizeLinear" | "DequantizeLinear" | "Constant"
            )
        {
            continue;
        }
        ops += 1;
        if computes_in_float(&m, n) {
            assert!(
                fallbacks.contains(&node.name),
                "{} ({}) computes in float",
                node.name,
                node.op_type()
            );
        }
    }
    assert!(ops > 5);
    // The inputs are uint8 (io: quantize).
    let inp = g.graph_inputs[0];
    assert_eq!(g[inp].outputs[0].elem_type(), Some(DataType::Uint8));
}

#[test]
fn hexagon_conv_weights_are_int8_per_channel_symmetric_and_activations_8_or_16_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("h");
    let (code, _, err) = compile(
        &repo_root().join("models/resnet_tiny/model.onnx"),
        "hexagon",
        &out,
    );
    assert!(code == 0 || code == 1, "{err}");
    let m = load(&out.join("model.onnx"));
    let g = &m.graph;
    let mut convs = 0;
    for (n, node) in g.nodes() {
        match node.op_type() {
            "Conv" => {
                let dq = g.input(n, 1).unwrap().node;
                assert_eq!(g[dq].op_type(), "DequantizeLinear");
                let w = g.constant_input(dq, 0).unwrap();
                assert_eq!(w.dtype(), DataType::Int8);
                let scales = g.constant_input(dq, 1).unwrap();
                assert_eq!(scales.len(), w.shape()[0], "per-channel");
                let zp = g.constant_input(dq, 2).unwrap().to_f64_vec().unwrap();
                assert!(zp.iter().all(|&z| z == 0.0), "symmetric");
                convs += 1;
            }
            "QuantizeLinear" => {
                let zp = g.constant_input(n, 2).unwrap();
                assert!(
                    matches!(zp.dtype(), DataType::Uint8 | DataType::Uint16),
                    "{:?}",
                    zp.dtype()
                );
            }
            _ => {}
        }
    }
    assert!(convs > 0);
}

#[test]
fn ane_computes_in_bfloat16_and_validates_the_twin() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a");
    let (code, _, err) = compile(&repo_root().join("models/tiny_cnn/model.onnx"), "ane", &out);
    assert!(code == 0 || code == 1, "{err}");
    let m = load(&out.join("model.onnx"));
    let g = &m.graph;
    let bf16_into_conv = g.nodes().any(|(n, node)| {
        node.op_type() == "Conv"
            && g.inputs(n).into_iter().flatten().any(|v| {
                g[v.node].op_type() == "Cast"
                    && g[v.node].attr("to").and_then(AttrValue::as_int) == Some(16)
            })
    });
    assert!(bf16_into_conv, "no Conv reads a bfloat16 Cast");
    assert!(out.join("model.sim.onnx").is_file());
    assert_eq!(report(&out)["validation"]["validated"], "model.sim.onnx");
}

#[test]
fn a_user_profile_extending_hexagon_with_uint16_shows_in_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("hex16.yaml");
    std::fs::write(
        &p,
        "name: hex16\nextends: hexagon\nquantization:\n  activations:\n    dtype: uint16\n",
    )
    .unwrap();
    let out = tmp.path().join("o");
    let (code, _, err) = compile(
        &repo_root().join("models/tiny_cnn/model.onnx"),
        p.to_str().unwrap(),
        &out,
    );
    assert!(code == 0 || code == 1, "{err}");
    let m = load(&out.join("model.onnx"));
    let u16 = m.graph.nodes().filter(|(n, node)| {
        node.op_type() == "QuantizeLinear"
            && m.graph
                .constant_input(*n, 2)
                .is_some_and(|z| z.dtype() == DataType::Uint16)
    });
    assert!(u16.count() > 0, "no uint16 QuantizeLinear");
    // Shapes are inferred through the com.microsoft Q/DQ (before, every node after one had an
    // unknown shape and went to the CPU as "dynamic-shape").
    let r = report(&out);
    assert_eq!(r["partition"]["cpu"]["nodes"], 0, "{}", r["partition"]);
}

#[test]
fn wrong_profiles_exit_2_with_one_located_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = repo_root().join("models/tiny_cnn/model.onnx");
    for (text, expect) in [
        (
            "name: x\nextends: hexagon\nquantisation: {}\n",
            "quantisation",
        ),
        (
            "name: x\nextends: edgetpu\nops:\n  supported:\n    Conv2d: {}\n",
            "Conv2d",
        ),
        (
            "name: x\nextends: edgetpu\nquantization:\n  activations:\n    dtype: int4\n",
            "int4",
        ),
    ] {
        let p = tmp.path().join("bad.yaml");
        std::fs::write(&p, text).unwrap();
        let out = tmp.path().join("never");
        let (code, _, err) = compile(&model, p.to_str().unwrap(), &out);
        assert_eq!(code, 2, "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("bad.yaml:") && err.contains(expect), "{err}");
        assert!(!out.exists());
    }
    let (code, _, err) = compile(&model, "missing/profile.yaml", &tmp.path().join("never"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing/profile.yaml"), "{err}");
}

#[test]
fn compiling_twice_gives_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = repo_root().join("models/tiny_cnn/model.onnx");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert!(compile(&model, "neon", &a).0 <= 1);
    assert!(compile(&model, "neon", &b).0 <= 1);
    for f in ["model.onnx", "report.json", "report.md"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn the_manifest_lists_every_model_file_with_the_digest_of_its_bytes() {
    // neon writes one model, ane a simulated twin too; the digests were computed while the
    // files were written, and must be those of the files on disk.
    let tmp = tempfile::tempdir().unwrap();
    let model = repo_root().join("models/tiny_cnn/model.onnx");
    for (profile, files) in [
        ("neon", vec!["model.onnx"]),
        ("ane", vec!["model.onnx", "model.sim.onnx"]),
    ] {
        let out = tmp.path().join(profile);
        let (code, _, err) = compile(&model, profile, &out);
        assert!(code <= 1, "{profile}: {err}");
        let r = report(&out);
        let entries = r["manifest"]["files"].as_array().unwrap();
        let listed: Vec<&str> = entries
            .iter()
            .map(|e| e["file"].as_str().unwrap())
            .collect();
        assert_eq!(listed, files, "{profile}");
        for e in entries {
            let bytes = std::fs::read(out.join(e["file"].as_str().unwrap())).unwrap();
            assert_eq!(e["bytes"].as_u64().unwrap(), bytes.len() as u64);
            assert_eq!(
                e["sha256"].as_str().unwrap(),
                kiln_backends::compile::manifest::sha256(&bytes),
                "{profile} {}",
                e["file"]
            );
        }
        assert_eq!(
            r["size"]["after"].as_u64().unwrap(),
            std::fs::metadata(out.join("model.onnx")).unwrap().len()
        );
    }
}
