//! `kiln quantize --target-sqnr / --max-16bit-share` end to end: the search on bundled models
//! (static QDQ and weight-only int4), the chosen model measured again in ONNX Runtime here,
//! independently of the search, and the choice's edges (unreachable target, zero share, a
//! target the all-8-bit model already meets), and what is refused.

use std::path::Path;

use kiln_backends::runtime::Session;
use kiln_backends::tensors::{read_test_data_set, IoSpec};
use kiln_backends::Value;
use kiln_tests::{kiln, repo_root};
use serde_json::Value as Json;

fn model_dir(name: &str) -> String {
    repo_root().join("models").join(name).display().to_string()
}

fn model(name: &str) -> String {
    format!("{}/model.onnx", model_dir(name))
}

/// Runs `kiln quantize ARGS` and returns (exit code, stdout, stderr).
fn quantize(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["quantize"];
    all.extend_from_slice(args);
    kiln(&all)
}

fn json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).unwrap()
}

/// Output SQNR of `candidate` against `float` on `models/NAME/test_data_set_0`, computed here
/// (every float output, both models run in ONNX Runtime), not by Kiln's accumulator.
fn independent_sqnr(name: &str, candidate: &Path) -> f64 {
    let float_path = repo_root().join("models").join(name).join("model.onnx");
    let mut float = Session::from_path(&float_path).expect("float model loads");
    let ins: Vec<_> = float
        .inputs()
        .iter()
        .map(|i| IoSpec::tensor(&i.name))
        .collect();
    let outs: Vec<_> = float
        .outputs()
        .iter()
        .map(|o| IoSpec::tensor(&o.name))
        .collect();
    let set = repo_root()
        .join("models")
        .join(name)
        .join("test_data_set_0");
    let (feeds, _) = read_test_data_set(&set, &ins, &outs).expect("test data");
    let want = float.run(&feeds).unwrap();
    let got = Session::from_path(candidate)
        .expect("the chosen model runs in ORT")
        .run(&feeds)
        .unwrap();
    let (mut signal, mut noise) = (0f64, 0f64);
    for (name, w) in &want {
        let (Value::Tensor(w), Some((_, Value::Tensor(g)))) =
            (w, got.iter().find(|(n, _)| n == name))
        else {
            continue;
        };
        let (Some(w), Some(g)) = (w.to_f64_vec(), g.to_f64_vec()) else {
            continue;
        };
        assert_eq!(w.len(), g.len(), "{name}");
        for (a, b) in w.iter().zip(&g) {
            signal += a * a;
            noise += (a - b) * (a - b);
        }
    }
    assert!(signal > 0.0, "no float output compared");
    10.0 * (signal / noise).log10()
}

/// The op types and initializer element types of a model file.
fn contents(path: &Path) -> (Vec<String>, Vec<i32>) {
    let m = kiln_proto::load_model(path).unwrap().model;
    let g = m.graph.unwrap();
    (
        g.node.into_iter().map(|n| n.op_type).collect(),
        g.initializer.into_iter().map(|t| t.data_type).collect(),
    )
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

const UINT16: i32 = 4;
const INT16: i32 = 5;
const FLOAT16: i32 = 10;

#[test]
fn static_target_is_reached_with_fewer_layers_than_all() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let target = 55.0;
    // In-sample on resnet_tiny's one sample: all 8-bit measures 47.7 dB, all 16-bit 89 dB.
    let (code, stdout, stderr) = quantize(&[
        &model("resnet_tiny"),
        "-o",
        out.to_str().unwrap(),
        "--calibration",
        &model_dir("resnet_tiny"),
        "--target-sqnr",
        "55",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&rep);
    let m = &r["mixed_precision"];
    assert_eq!(m["on"], "calibration");
    assert_eq!(m["target_reached"], true);
    let ranking = m["ranking"].as_array().unwrap();
    let promoted = strings(&m["promoted"]);
    assert!(
        !promoted.is_empty() && promoted.len() < ranking.len(),
        "{} of {} promoted",
        promoted.len(),
        ranking.len()
    );
    // The promoted layers are the most sensitive ones, in the ranking's order.
    let ranked: Vec<&str> = ranking
        .iter()
        .map(|l| l["node"].as_str().unwrap())
        .collect();
    assert_eq!(promoted, ranked[..promoted.len()]);
    // The chosen point reaches the target and is the smallest that does.
    let front = m["front"].as_array().unwrap();
    let chosen = &front[m["chosen"].as_u64().unwrap() as usize];
    let reported = chosen["sqnr_db"].as_f64().unwrap();
    assert!(reported >= target, "{reported}");
    assert_eq!(chosen["promoted"].as_u64(), Some(promoted.len() as u64));
    for p in front {
        if p["sqnr_db"].as_f64().unwrap() >= target {
            assert!(p["weight_bytes"].as_u64() >= chosen["weight_bytes"].as_u64());
        }
    }
    // k = 0 is on the front and falls short; the all-8-bit point is the smallest.
    assert_eq!(front[0]["promoted"], 0);
    assert_eq!(front[0]["share"], 0.0);
    assert!(front[0]["sqnr_db"].as_f64().unwrap() < target);
    assert!(front[0]["weight_bytes"].as_u64() < chosen["weight_bytes"].as_u64());
    // Measured again here, in ORT, on the same sample.
    let sqnr = independent_sqnr("resnet_tiny", &out);
    assert!(sqnr >= target, "independent SQNR {sqnr} < {target}");
    assert!((sqnr - reported).abs() < 0.05, "{sqnr} vs {reported}");
    // The model holds 16-bit activations and int16 weights beside the 8-bit ones.
    let (ops, dtypes) = contents(&out);
    assert!(ops.iter().any(|o| o == "QuantizeLinear"));
    assert!(
        dtypes.contains(&UINT16) && dtypes.contains(&INT16),
        "{dtypes:?}"
    );
    assert!(
        dtypes.contains(&2) && dtypes.contains(&3),
        "uint8 and int8 remain"
    );
    // The terminal shows the front and marks the chosen row.
    assert!(stdout.contains("16-bit share"), "{stdout}");
    assert!(stdout.contains(" >  "), "{stdout}");
    assert!(stdout.contains("target reached"), "{stdout}");
}

#[test]
fn unreachable_target_exits_1_and_writes_the_best_point() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    // tiny_cnn all at 16-bit measures 87 dB in-sample.
    let (code, stdout, stderr) = quantize(&[
        &model("tiny_cnn"),
        "-o",
        out.to_str().unwrap(),
        "--calibration",
        &model_dir("tiny_cnn"),
        "--target-sqnr",
        "200",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("NOT reached"), "{stdout}");
    let m = &json(&rep)["mixed_precision"];
    assert_eq!(m["target_reached"], false);
    let front = m["front"].as_array().unwrap();
    // Every candidate promoted was tried, and the best point was written.
    let candidates = m["ranking"].as_array().unwrap().len() as u64;
    assert_eq!(front.last().unwrap()["promoted"].as_u64(), Some(candidates));
    let best = front
        .iter()
        .map(|p| p["sqnr_db"].as_f64().unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    let chosen = &front[m["chosen"].as_u64().unwrap() as usize];
    assert_eq!(chosen["sqnr_db"].as_f64(), Some(best));
    let sqnr = independent_sqnr("tiny_cnn", &out);
    assert!((sqnr - best).abs() < 0.05, "{sqnr} vs {best}");
}

#[test]
fn zero_share_promotes_nothing_and_writes_the_all_8_bit_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let common = [
        model("tiny_cnn"),
        "--calibration".into(),
        model_dir("tiny_cnn"),
    ];
    let (code, stdout, stderr) = quantize(&[
        &common[0],
        "-o",
        &p("zero.onnx"),
        &common[1],
        &common[2],
        "--max-16bit-share",
        "0",
        "--report",
        &p("zero.json"),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let m = &json(Path::new(&p("zero.json")))["mixed_precision"];
    assert!(strings(&m["promoted"]).is_empty());
    assert_eq!(m["front"].as_array().unwrap().len(), 1);
    // The same bytes as quantizing without the search.
    let (code, _, stderr) = quantize(&[&common[0], "-o", &p("plain.onnx"), &common[1], &common[2]]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read(p("zero.onnx")).unwrap(),
        std::fs::read(p("plain.onnx")).unwrap()
    );
}

#[test]
fn a_target_the_all_8_bit_model_meets_promotes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    // tiny_cnn all 8-bit: 41.3 dB in-sample.
    let (code, stdout, stderr) = quantize(&[
        &model("tiny_cnn"),
        "-o",
        out.to_str().unwrap(),
        "--calibration",
        &model_dir("tiny_cnn"),
        "--target-sqnr",
        "30",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let m = &json(&rep)["mixed_precision"];
    assert_eq!(m["target_reached"], true);
    assert!(strings(&m["promoted"]).is_empty());
    let front = m["front"].as_array().unwrap();
    assert_eq!(front.len(), 1, "nothing evaluated past k = 0");
    assert_eq!(front[0]["promoted"], 0);
    let (_, dtypes) = contents(&out);
    assert!(!dtypes.contains(&UINT16) && !dtypes.contains(&INT16));
    assert!(independent_sqnr("tiny_cnn", &out) >= 30.0);
}

#[test]
fn weight_only_int4_keeps_the_most_sensitive_weights_in_float16() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let target = 25.0;
    // llama_tiny int4 block 32: 18.9 dB on test_data_set_0 with every weight in int4.
    let (code, stdout, stderr) = quantize(&[
        &model("llama_tiny"),
        "-o",
        out.to_str().unwrap(),
        "--weight-only",
        "int4",
        "--block-size",
        "32",
        "--check-inputs",
        &format!("{}/test_data_set_0", model_dir("llama_tiny")),
        "--target-sqnr",
        "25",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&rep);
    let m = &r["mixed_precision"];
    assert_eq!(m["on"], "check-inputs");
    assert_eq!(m["target_reached"], true);
    let candidates = m["ranking"].as_array().unwrap().len();
    let promoted = strings(&m["promoted"]);
    assert_eq!(candidates, 15, "14 projections and the LM head");
    assert!(!promoted.is_empty() && promoted.len() < candidates);
    let front = m["front"].as_array().unwrap();
    let chosen = &front[m["chosen"].as_u64().unwrap() as usize];
    assert!(front[0]["sqnr_db"].as_f64().unwrap() < target);
    let sqnr = independent_sqnr("llama_tiny", &out);
    assert!(sqnr >= target, "independent SQNR {sqnr} < {target}");
    assert!((sqnr - chosen["sqnr_db"].as_f64().unwrap()).abs() < 0.05);
    // One float16 weight and Cast per promoted node; the others stay block-wise int4.
    let (ops, dtypes) = contents(&out);
    let fp16 = dtypes.iter().filter(|&&d| d == FLOAT16).count();
    assert_eq!(fp16, promoted.len());
    assert_eq!(
        ops.iter().filter(|o| *o == "DequantizeLinear").count(),
        candidates - promoted.len()
    );
    assert_eq!(
        r["weight_only"]["weights"].as_array().unwrap().len(),
        candidates - promoted.len()
    );
    // Size: the int4 bytes plus 2 bytes per float16 element, and more than all-int4.
    assert!(chosen["weight_bytes"].as_u64() > front[0]["weight_bytes"].as_u64());
    let int4 = r["weight_only"]["quantized_bytes"].as_u64().unwrap();
    let g = kiln_proto::load_model(&out).unwrap().model.graph.unwrap();
    let fp16_elements: i64 = g
        .initializer
        .iter()
        .filter(|t| t.data_type == FLOAT16)
        .map(|t| t.dims.iter().product::<i64>())
        .sum();
    assert_eq!(
        chosen["weight_bytes"].as_u64(),
        Some(int4 + 2 * fp16_elements as u64)
    );
}

#[test]
fn weight_only_zero_share_promotes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let (code, stdout, stderr) = quantize(&[
        &model("llama_tiny"),
        "-o",
        out.to_str().unwrap(),
        "--weight-only",
        "int4",
        "--check-inputs",
        &format!("{}/test_data_set_0", model_dir("llama_tiny")),
        "--target-sqnr",
        "25",
        "--max-16bit-share",
        "0",
        "--report",
        rep.to_str().unwrap(),
    ]);
    // 25 dB needs float16 weights, which the share forbids: not reached, all-int4 written.
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let m = &json(&rep)["mixed_precision"];
    assert!(strings(&m["promoted"]).is_empty());
    assert_eq!(m["front"].as_array().unwrap().len(), 1);
    let (_, dtypes) = contents(&out);
    assert!(!dtypes.contains(&FLOAT16));
}

#[test]
fn dynamic_mode_bias_correction_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let out_s = out.to_str().unwrap().to_string();
    let m = model("tiny_cnn");
    let cal = model_dir("tiny_cnn");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![&m, "-o", &out_s, "--dynamic", "--target-sqnr", "30"],
            "--dynamic",
        ),
        (
            vec![
                &m,
                "-o",
                &out_s,
                "--calibration",
                &cal,
                "--bias-correction",
                "--target-sqnr",
                "30",
            ],
            "--bias-correction",
        ),
        (
            vec![
                &m,
                "-o",
                &out_s,
                "--calibration",
                &cal,
                "--max-16bit-share",
                "1.5",
            ],
            "between 0 and 1",
        ),
        (
            vec![
                &m,
                "-o",
                &out_s,
                "--calibration",
                &cal,
                "--max-16bit-share",
                "-0.5",
            ],
            "between 0 and 1",
        ),
    ];
    for (args, expect) in cases {
        let (code, stdout, stderr) = quantize(&args);
        assert_eq!(code, 2, "{args:?}\n{stdout}\n{stderr}");
        assert!(stdout.is_empty(), "{args:?} printed: {stdout}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("kiln: error: "), "{stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote an output");
    }
}

#[test]
fn a_profile_key_makes_compile_search_too() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("neon-mixed.yaml");
    std::fs::write(
        &profile,
        "extends: neon\nquantization:\n  mixed_precision: {target_sqnr: 55}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    // Calibrated (and searched) on resnet_tiny's bundled sample.
    let (code, stdout, stderr) = kiln(&[
        "compile",
        &model("resnet_tiny"),
        "--profile",
        profile.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&out.join("report.json"));
    let m = &r["quantize"]["mixed_precision"];
    assert_eq!(m["target_reached"], true, "{m}");
    let promoted = strings(&m["promoted"]);
    assert!(!promoted.is_empty() && promoted.len() < m["ranking"].as_array().unwrap().len());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("mixed precision:"), "{md}");
    assert!(independent_sqnr("resnet_tiny", &out.join("model.onnx")) >= 55.0);
    // A bad value is refused with its place in the file.
    std::fs::write(
        &profile,
        "extends: neon\nquantization:\n  mixed_precision: {max_16bit_share: 2}\n",
    )
    .unwrap();
    let (code, _, stderr) = kiln(&[
        "compile",
        &model("resnet_tiny"),
        "--profile",
        profile.to_str().unwrap(),
        "-o",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("neon-mixed.yaml:3:")
            && stderr.contains("quantization.mixed_precision.max_16bit_share"),
        "{stderr}"
    );
}
