//! `kiln validate --html` and `kiln diff --html` (no browser here: bench/html_report_check.py
//! opens the page in Chromium): the page has the SQNR chart and one histogram per output,
//! escapes a hostile output name, loads nothing from outside, draws the threshold line, and
//! the JSON report carries the histogram with known counts.

use std::path::{Path, PathBuf};

use kiln_proto::onnx::{
    tensor_proto, tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use kiln_tests::{kiln, perturbed_tiny_cnn, repo_root};
use prost::Message;
use serde_json::Value as Json;

const HOSTILE: &str = "<script>alert(1)</script>";

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn float_info(name: &str, dims: Option<&[i64]>) -> ValueInfoProto {
    let shape = dims.map(|d| TensorShapeProto {
        dim: d
            .iter()
            .map(|&v| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tensor_proto::DataType::Float as i32,
                shape,
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

fn node(op: &str, input: &str, output: &str) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: format!("{op}_node"),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        ..Default::default()
    }
}

/// x[1,8] → Relu → `<script>alert(1)</script>`, and x → Neg → `plain`.
fn hostile_model(dir: &Path) -> PathBuf {
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: vec![node("Relu", "x", HOSTILE), node("Neg", "x", "plain")],
            input: vec![float_info("x", Some(&[1, 8]))],
            output: vec![float_info(HOSTILE, None), float_info("plain", None)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join("hostile.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

fn tiny_cnn() -> PathBuf {
    repo_root().join("models/tiny_cnn/model.onnx")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn hostile_names_are_escaped_and_every_output_has_a_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let m = s(&hostile_model(dir.path()));
    let html = dir.path().join("out/report.html");
    let (code, out, err) = kiln(&[
        "validate",
        &m,
        "--reference",
        &m,
        "--synthetic",
        "2",
        "--html",
        &s(&html),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let page = read(&html);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("id=\"sqnr-chart\""), "no chart");
    assert!(page.contains("id=\"hist-0\"") && page.contains("id=\"hist-1\""));
    assert!(!page.contains("id=\"hist-2\""), "one histogram per output");
    assert!(!page.contains("<script"), "hostile name not escaped");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // Self-contained: no URL, no linked resource of any kind.
    for bad in ["http", "src=", "href=", "url(", "@import"] {
        assert!(!page.contains(bad), "page contains {bad}");
    }
    // Identical outputs: infinite SQNR drawn clipped and labelled, verdict PASS.
    assert!(page.contains(">∞<"));
    assert!(page.contains("<title>Kiln validation: PASS</title>"));
}

#[test]
fn perturbed_model_shows_threshold_failure_and_counts_errors_by_decade() {
    let dir = tempfile::tempdir().unwrap();
    let cand = s(&perturbed_tiny_cnn(dir.path(), 0.5));
    let m = s(&tiny_cnn());
    let data = s(&repo_root().join("models/tiny_cnn"));
    let html = dir.path().join("report.html");
    let (code, out, err) = kiln(&[
        "validate",
        &cand,
        "--reference",
        &m,
        "--inputs",
        &data,
        "--min-sqnr",
        "30",
        "--json",
        "--html",
        &s(&html),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let report: Json = serde_json::from_str(&out).unwrap();
    let h = &report["outputs"][0]["histogram"];
    // 2 rows × 10 logits: one logit per row is off by 0.5 (decade [0.1, 1) is bin 11), the
    // other 18 are exactly equal.
    assert_eq!(h["lowest_decade"], -12);
    assert_eq!(h["decades"][11], 2, "{h}");
    assert_eq!(h["zero"], 18, "{h}");
    assert_eq!(h["non_finite"], 0);
    let page = read(&html);
    assert!(page.contains("<title>Kiln validation: FAIL</title>"));
    assert!(page.contains("min SQNR 30 dB"), "no threshold line");
    assert!(
        page.contains("class=\"bad\""),
        "failed metric not highlighted"
    );

    // kiln diff writes the same kind of page.
    let diff_html = dir.path().join("diff.html");
    let (code, out, err) = kiln(&[
        "diff",
        &m,
        &cand,
        "--inputs",
        &data,
        "--html",
        &s(&diff_html),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let page = read(&diff_html);
    assert!(page.contains("id=\"sqnr-chart\"") && page.contains("id=\"hist-0\""));
}

#[test]
fn unwritable_html_path_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let m = s(&tiny_cnn());
    let data = s(&repo_root().join("models/tiny_cnn"));
    let target = file.join("report.html");
    let (code, _, err) = kiln(&[
        "validate",
        &m,
        "--reference",
        &m,
        "--inputs",
        &data,
        "--html",
        &s(&target),
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!target.exists());
}
