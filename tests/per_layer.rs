//! `kiln validate --per-layer` end to end on ONNX Runtime's QDQ quantization of bert_tiny:
//! a deliberately badly-quantized tensor (scale forced 1000× too small, named in
//! models/bert_tiny_qdq_bad/bad_tensor.txt) is reported as the first jump; the well-quantized
//! model has no jump there; rows follow the reference's topological order; identical models
//! give SQNR inf everywhere and no jump.

use kiln_tests::{kiln, repo_root};
use serde_json::Value as Json;

fn model(name: &str) -> String {
    repo_root()
        .join("models")
        .join(name)
        .join("model.onnx")
        .display()
        .to_string()
}

/// The tensor generate_qdq.py quantized badly.
fn bad_tensor() -> String {
    let path = repo_root().join("models/bert_tiny_qdq_bad/bad_tensor.txt");
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// `kiln validate CANDIDATE --reference bert_tiny_op17 --per-layer --json` on the reference's
/// test inputs, plus `extra` flags: (exit code, report).
fn per_layer(candidate: &str, extra: &[&str]) -> (i32, Json) {
    let inputs = repo_root().join("models/bert_tiny_op17/test_data_set_0");
    let reference = model("bert_tiny_op17");
    let inputs = inputs.display().to_string();
    let candidate = model(candidate);
    let mut args = vec![
        "validate",
        &candidate,
        "--reference",
        &reference,
        "--inputs",
        &inputs,
        "--per-layer",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = kiln(&args);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, json)
}

fn rows(report: &Json) -> &Vec<Json> {
    report["per_layer"]["rows"]
        .as_array()
        .expect("per_layer.rows")
}

fn row<'a>(report: &'a Json, name: &str) -> &'a Json {
    rows(report)
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

fn position(report: &Json, name: &str) -> usize {
    rows(report)
        .iter()
        .position(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

#[test]
fn badly_quantized_tensor_is_the_first_jump() {
    let bad = bad_tensor();
    let (code, report) = per_layer("bert_tiny_qdq_bad", &[]);
    assert_eq!(code, 1, "outputs differ beyond the default tolerance");
    assert_eq!(report["per_layer"]["first_jump"], bad.as_str());
    let r = row(&report, &bad);
    assert_eq!(r["jump"], true);
    // Matched through the QDQ pair: the value the candidate's consumers see.
    assert_eq!(r["candidate"], format!("{bad}_DequantizeLinear_Output"));
    assert_eq!(r["op_type"], "MatMul");
    let sqnr = r["sqnr_db"].as_f64().unwrap();
    let baseline = r["baseline_db"].as_f64().unwrap();
    assert!(sqnr < 5.0, "saturated tensor should have ~0 dB, got {sqnr}");
    assert!(
        baseline > 20.0,
        "its input is well quantized, got {baseline}"
    );
    // No earlier layer jumps.
    let at = position(&report, &bad);
    assert!(rows(&report)[..at].iter().all(|r| r["jump"] == false));
}

#[test]
fn well_quantized_model_has_no_jump_there() {
    let bad = bad_tensor();
    let (_, report) = per_layer("bert_tiny_qdq", &[]);
    assert_ne!(report["per_layer"]["first_jump"], bad.as_str());
    let r = row(&report, &bad);
    assert_eq!(r["jump"], false);
    assert!(r["sqnr_db"].as_f64().unwrap() > 20.0, "{r}");
    // The same quantization error everywhere: 8-bit, 25-50 dB, on the outputs too.
    let out = row(&report, "last_hidden_state");
    assert_eq!(
        out["candidate"], "last_hidden_state",
        "ORT's DQ writes graph outputs"
    );
    let s = out["sqnr_db"].as_f64().unwrap();
    assert!((25.0..50.0).contains(&s), "{out}");
}

#[test]
fn rows_follow_the_reference_topological_order() {
    let (_, report) = per_layer("bert_tiny_qdq", &[]);
    let names = [
        "/model/embeddings/LayerNorm/LayerNormalization_output_0",
        "/model/encoder/layer.0/attention/self/Softmax_output_0",
        "/model/encoder/layer.0/output/LayerNorm/LayerNormalization_output_0",
        "/model/encoder/layer.1/attention/output/dense/MatMul_output_0",
        "/model/encoder/layer.1/intermediate/dense/MatMul_output_0",
        "last_hidden_state",
        "/model/pooler/dense/Gemm_output_0",
        "pooler_output",
    ];
    let at: Vec<usize> = names.iter().map(|n| position(&report, n)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{names:?} at {at:?}");
}

#[test]
fn min_sqnr_makes_the_first_layer_below_it_jump() {
    let (_, report) = per_layer("bert_tiny_qdq", &["--min-sqnr", "35"]);
    let first_below = rows(&report)
        .iter()
        .find(|r| r["sqnr_db"].as_f64().is_some_and(|s| s < 35.0))
        .expect("8-bit layers are below 35 dB");
    assert_eq!(report["per_layer"]["first_jump"], first_below["name"]);
    assert_eq!(report["per_layer"]["min_sqnr"], 35.0);
}

#[test]
fn identical_models_have_no_error_and_no_jump() {
    let (code, report) = per_layer("bert_tiny_op17", &[]);
    assert_eq!(code, 0);
    assert_eq!(report["per_layer"]["first_jump"], Json::Null);
    let rows = rows(&report);
    assert!(rows.len() > 50, "every float layer: {}", rows.len());
    for r in rows {
        assert_eq!(r["sqnr_db"], "inf", "{r}");
        assert_eq!(r["max_abs"], 0.0, "{r}");
        assert_eq!(r["name"], r["candidate"]);
    }
}

#[test]
fn table_marks_the_first_jump() {
    let inputs = repo_root().join("models/bert_tiny_op17/test_data_set_0");
    let (code, stdout, _) = kiln(&[
        "validate",
        &model("bert_tiny_qdq_bad"),
        "--reference",
        &model("bert_tiny_op17"),
        "--inputs",
        &inputs.display().to_string(),
        "--per-layer",
    ]);
    assert_eq!(code, 1);
    let bad = bad_tensor();
    let marked: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("<< first jump"))
        .collect();
    assert_eq!(marked.len(), 1, "{stdout}");
    assert!(marked[0].contains(&bad), "{}", marked[0]);
    assert!(
        stdout.contains(&format!("first jump: {bad} (MatMul")),
        "{stdout}"
    );
    // The output table still follows.
    assert!(stdout.contains("last_hidden_state  FAIL"), "{stdout}");
}

#[test]
fn bad_jump_db_is_a_usage_error() {
    let (code, _, stderr) = kiln(&[
        "validate",
        &model("bert_tiny_qdq"),
        "--reference",
        &model("bert_tiny_op17"),
        "--synthetic",
        "1",
        "--per-layer",
        "--jump-db=-3",
    ]);
    assert_eq!(code, 2);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--jump-db"), "{stderr}");
}
