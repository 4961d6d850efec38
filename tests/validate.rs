//! `kiln validate` and `kiln diff` end to end, with known answers: identical models give exact
//! zeros, a bias perturbed by 0.5 gives a max abs error of 0.5, NaNs and name mismatches are
//! reported, JUnit is written, and bad input exits 2 with one line.

use std::path::{Path, PathBuf};

use kiln_backends::tensors::write_values;
use kiln_backends::{NamedValues, Value};
use kiln_passes::tensor::Tensor;
use kiln_tests::{kiln, perturbed_tiny_cnn, repo_root};
use serde_json::Value as Json;

fn json(stdout: &str) -> Json {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn tiny_cnn() -> PathBuf {
    repo_root().join("models/tiny_cnn/model.onnx")
}

fn tiny_cnn_data() -> String {
    repo_root().join("models/tiny_cnn").display().to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn floats(name: &str, v: &[f32]) -> (String, Value) {
    (
        name.to_string(),
        Value::Tensor(Tensor::from_vec(vec![1, v.len()], v.to_vec()).unwrap()),
    )
}

/// Saves `values` as a folder of `.npy` files under `dir/name`.
fn saved(dir: &Path, name: &str, values: NamedValues) -> String {
    let path = dir.join(name);
    write_values(&path, &values).unwrap();
    s(&path)
}

#[test]
fn identical_models_give_exact_zeros() {
    let m = s(&tiny_cnn());
    let (code, out, err) = kiln(&[
        "validate",
        &m,
        "--reference",
        &m,
        "--inputs",
        &tiny_cnn_data(),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let r = json(&out);
    assert_eq!(r["passed"], true);
    let metrics = &r["outputs"][0]["metrics"];
    assert_eq!(r["outputs"][0]["name"], "logits");
    for key in ["max_abs", "mean_abs", "max_rel", "rmse", "outside_share"] {
        assert_eq!(metrics[key].as_f64(), Some(0.0), "{key}: {metrics}");
    }
    assert_eq!(metrics["sqnr_db"], "inf");
    assert_eq!(metrics["cosine"].as_f64(), Some(1.0));
    assert_eq!(metrics["top1"].as_f64(), Some(1.0));
}

#[test]
fn perturbed_bias_gives_its_delta_as_max_abs() {
    let dir = tempfile::tempdir().unwrap();
    let cand = s(&perturbed_tiny_cnn(dir.path(), 0.5));
    let m = s(&tiny_cnn());
    let data = tiny_cnn_data();
    let (code, out, err) = kiln(&[
        "validate",
        &cand,
        "--reference",
        &m,
        "--inputs",
        &data,
        "--json",
        "--max-abs",
        "0.1",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let o = &json(&out)["outputs"][0];
    let max_abs = o["metrics"]["max_abs"].as_f64().unwrap();
    // logits[0] + 0.5 in float32 differs from 0.5 by at most the rounding of the sum.
    assert!((max_abs - 0.5).abs() <= 1e-6, "max abs {max_abs}");
    // One of the ten logits moved, in each of the 2 rows.
    assert_eq!(o["metrics"]["outside"], 2);
    let failed: Vec<&str> = o["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["limit"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["max_outside_share", "max_abs"]);
    // The table says which limit failed; a loose per-output limit passes.
    let (code, out, _) = kiln(&[
        "validate",
        &cand,
        "--reference",
        &m,
        "--inputs",
        &data,
        "--max-abs",
        "0.1",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL") && out.contains("abs 0.5"), "{out}");
    let (code, out, err) = kiln(&[
        "validate",
        &cand,
        "--reference",
        &m,
        "--inputs",
        &data,
        "--atol",
        "logits:0.6",
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn synthetic_inputs_and_saved_outputs_round_trip_through_diff() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("saved");
    let m = s(&tiny_cnn());
    let cand = s(&perturbed_tiny_cnn(dir.path(), 0.25));
    let (code, out, err) = kiln(&[
        "validate",
        &cand,
        "--reference",
        &m,
        "--synthetic",
        "3",
        "--seed",
        "5",
        "--save-outputs",
        &s(&save),
        "--max-outside-share",
        "1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("over 3 sample(s)"), "{out}");
    // Golden outputs diffed without the models: the same verdict and numbers.
    let (code, out, err) = kiln(&[
        "diff",
        &s(&save.join("reference")),
        &s(&save.join("candidate")),
        "--json",
        "--max-abs",
        "0.1",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let r = json(&out);
    assert_eq!(r["samples"], 3);
    let max_abs = r["outputs"][0]["metrics"]["max_abs"].as_f64().unwrap();
    assert!((max_abs - 0.25).abs() <= 1e-6, "{max_abs}");
    // A model against saved outputs, on the saved synthetic inputs.
    let (code, out, err) = kiln(&[
        "diff",
        &s(&save.join("candidate")),
        &cand,
        "--inputs",
        &s(&save.join("inputs")),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        json(&out)["outputs"][0]["metrics"]["max_abs"].as_f64(),
        Some(0.0)
    );
}

#[test]
fn model_against_onnx_test_data_reference() {
    let data = repo_root().join("models/tiny_cnn/test_data_set_0");
    let (code, out, err) = kiln(&[
        "diff",
        &s(&data),
        &s(&tiny_cnn()),
        "--inputs",
        &s(&data),
        "--atol",
        "1e-4",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("logits") && out.contains("PASS"), "{out}");
}

#[test]
fn names_that_do_not_match_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let a = saved(
        dir.path(),
        "a",
        vec![floats("logits", &[1.0, 2.0]), floats("aux", &[0.0])],
    );
    let b = saved(
        dir.path(),
        "b",
        vec![floats("scores", &[1.0, 2.0]), floats("aux", &[0.0])],
    );
    let (code, out, err) = kiln(&["diff", &a, &b, "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let r = json(&out);
    let status = |name: &str| {
        r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .map(|o| (o["status"].clone(), o["passed"].clone()))
            .unwrap()
    };
    assert_eq!(status("aux"), ("compared".into(), true.into()));
    assert_eq!(
        status("logits"),
        ("missing_in_candidate".into(), false.into())
    );
    assert_eq!(
        status("scores"),
        ("missing_in_reference".into(), false.into())
    );
    let (_, table, _) = kiln(&["diff", &a, &b]);
    assert!(table.contains("only in the reference"), "{table}");
    assert!(table.contains("FAIL: 2 of 3"), "{table}");
}

#[test]
fn shape_and_type_mismatches_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let a = saved(dir.path(), "a", vec![floats("y", &[1.0, 2.0])]);
    let b = saved(dir.path(), "b", vec![floats("y", &[1.0, 2.0, 3.0])]);
    let (code, out, _) = kiln(&["diff", &a, &b, "--json"]);
    assert_eq!(code, 1);
    assert_eq!(json(&out)["outputs"][0]["status"], "shape_mismatch");
    let ints = (
        "y".to_string(),
        Value::Tensor(Tensor::from_vec(vec![1, 2], vec![1i64, 2]).unwrap()),
    );
    let c = saved(dir.path(), "c", vec![ints]);
    let (code, out, _) = kiln(&["diff", &a, &c, "--json"]);
    assert_eq!(code, 1);
    assert_eq!(json(&out)["outputs"][0]["status"], "type_mismatch");
}

#[test]
fn injected_nan_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let a = saved(dir.path(), "a", vec![floats("y", &[1.0, 2.0, 3.0, 4.0])]);
    let b = saved(
        dir.path(),
        "b",
        vec![floats("y", &[1.0, f32::NAN, 3.0, 4.0])],
    );
    let (code, out, err) = kiln(&["diff", &a, &b, "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let m = &json(&out)["outputs"][0]["metrics"];
    assert_eq!(
        (m["nan_reference"].as_u64(), m["nan_candidate"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(m["outside"], 1);
    let (_, table, _) = kiln(&["diff", &a, &b]);
    assert!(table.contains("NaN 0/1"), "{table}");
}

#[test]
fn junit_has_one_well_formed_case_per_output() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.npz");
    let b = dir.path().join("b.npz");
    write_values(&a, &vec![floats("x&<y>", &[1.0]), floats("ok", &[2.0])]).unwrap();
    write_values(&b, &vec![floats("x&<y>", &[1.5]), floats("ok", &[2.0])]).unwrap();
    let junit = dir.path().join("reports/junit.xml");
    let (code, _, err) = kiln(&["diff", &s(&a), &s(&b), "--junit", &s(&junit)]);
    assert_eq!(code, 1, "{err}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 2, "{xml}");
    assert_eq!(xml.matches("</testcase>").count(), 2, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert_eq!(xml.matches("</failure>").count(), 1, "{xml}");
    assert!(xml.contains("name=\"x&amp;&lt;y&gt;\""), "{xml}");
    assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
    assert!(xml.trim_end().ends_with("</testsuites>"), "{xml}");
    // Every '&' starts an entity: nothing unescaped slipped through.
    for (i, _) in xml.match_indices('&') {
        let rest = &xml[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#10;"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "unescaped & at {i}: {xml}"
        );
    }
}

#[test]
fn thresholds_file_applies_per_output() {
    let dir = tempfile::tempdir().unwrap();
    let a = saved(
        dir.path(),
        "a",
        vec![floats("y", &[1.0, 2.0]), floats("z", &[1.0])],
    );
    let b = saved(
        dir.path(),
        "b",
        vec![floats("y", &[1.0, 2.01]), floats("z", &[1.0])],
    );
    let yaml = dir.path().join("t.yaml");
    std::fs::write(
        &yaml,
        "default:\n  atol: 1.0e-6\noutputs:\n  y:\n    atol: 0.1\n",
    )
    .unwrap();
    let (code, out, err) = kiln(&["diff", &a, &b, "--thresholds", &s(&yaml)]);
    assert_eq!(code, 0, "{out}{err}");
    // Flags override the file.
    let (code, _, _) = kiln(&["diff", &a, &b, "--thresholds", &s(&yaml), "--atol", "y:0"]);
    assert_eq!(code, 1);
    std::fs::write(&yaml, "default:\n  atol: 1.0e-6\n  min_sqrn: 3\n").unwrap();
    let (code, _, err) = kiln(&["diff", &a, &b, "--thresholds", &s(&yaml)]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("t.yaml:3:3") && err.contains("min_sqrn"),
        "{err}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = saved(dir.path(), "a", vec![floats("y", &[1.0])]);
    let corrupt = dir.path().join("corrupt.npz");
    std::fs::write(&corrupt, b"PK\x03\x04 this is not a zip").unwrap();
    let missing = s(&dir.path().join("missing.onnx"));
    let m = s(&tiny_cnn());
    let data = tiny_cnn_data();
    let cases: Vec<Vec<&str>> = vec![
        vec!["diff", &a, "/no/such/outputs"],
        vec!["diff", &a, corrupt.to_str().unwrap()],
        vec!["validate", &missing, "--reference", &m, "--inputs", &data],
        vec!["validate", &m, "--reference", &m],
        vec![
            "validate",
            &m,
            "--reference",
            &m,
            "--inputs",
            &data,
            "--max-abs",
            "y:abc",
        ],
        vec!["diff", &a, &a, "--synthetic", "1"],
    ];
    for args in cases {
        let (code, out, err) = kiln(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("kiln: error: "), "{args:?}: {err}");
    }
}
