//! `kiln bench` end to end on tiny_cnn (fields present, JSON well formed, percentiles ordered,
//! `--vs`, bad input → exit 2; timings themselves are never asserted), and `kiln diff` of two
//! saved-output folders large enough to be streamed in several chunks, with a known answer.

use std::path::Path;

use kiln_backends::tensors::write_values;
use kiln_backends::validate::stream::CHUNK_ELEMENTS;
use kiln_backends::Value;
use kiln_passes::tensor::Tensor;
use kiln_tests::{kiln, repo_root};
use serde_json::Value as Json;

fn tiny_cnn() -> String {
    repo_root()
        .join("models/tiny_cnn/model.onnx")
        .display()
        .to_string()
}

fn json(stdout: &str) -> Json {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The latency statistics of one model in the JSON report, checked for order.
fn check_latency(m: &Json) {
    let l = &m["latency_ms"];
    let f = |k: &str| {
        l[k].as_f64()
            .unwrap_or_else(|| panic!("latency_ms.{k} missing: {l}"))
    };
    assert_eq!(l["runs"], 5);
    assert!(f("min") <= f("p50"), "{l}");
    assert!(f("p50") <= f("p90") && f("p90") <= f("p99"), "{l}");
    assert!(f("p99") <= f("max"), "{l}");
    assert!(f("min") <= f("mean") && f("mean") <= f("max"), "{l}");
    assert!(f("min") > 0.0, "{l}");
}

#[test]
fn text_report_has_every_field() {
    let (code, out, err) = kiln(&["bench", &tiny_cnn(), "--runs", "5", "--warmup", "1"]);
    assert_eq!(code, 0, "{err}");
    for field in ["p50 ms", "p90 ms", "p99 ms", "mean ms", "min ms", "max ms"] {
        assert!(out.contains(field), "no {field} in:\n{out}");
    }
    assert!(out.contains("nearest-rank"), "{out}");
    assert!(out.contains("peak memory (VmHWM): "), "{out}");
    #[cfg(target_os = "linux")]
    assert!(out.contains(" MiB"), "{out}");
}

#[test]
fn json_report_parses_and_percentiles_are_ordered() {
    let data = repo_root().join("models/tiny_cnn").display().to_string();
    let (code, out, err) = kiln(&[
        "bench",
        &tiny_cnn(),
        "--inputs",
        &data,
        "--runs",
        "5",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    check_latency(&j["a"]);
    assert_eq!(j["threads"], 1);
    assert!(j["b"].is_null() && j["versus"].is_null(), "{j}");
    #[cfg(target_os = "linux")]
    assert!(j["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0), "{j}");
}

#[test]
fn vs_reports_both_and_the_ratio() {
    let (code, out, err) = kiln(&[
        "bench",
        &tiny_cnn(),
        "--vs",
        &tiny_cnn(),
        "--synthetic",
        "2",
        "--runs",
        "5",
        "--warmup",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    check_latency(&j["a"]);
    check_latency(&j["b"]);
    let v = &j["versus"];
    let ratio = v["ratio_p50_b_over_a"].as_f64().unwrap();
    let expect = j["b"]["latency_ms"]["p50"].as_f64().unwrap()
        / j["a"]["latency_ms"]["p50"].as_f64().unwrap();
    assert!((ratio - expect).abs() < 1e-12, "{v}");
    let share = v["b_faster_share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{v}");
    let verdict = v["verdict"].as_str().unwrap_or_default();
    assert!(
        ["b_faster", "b_slower", "no_clear_difference"].contains(&verdict),
        "{v}"
    );
    // Text form names the ratio.
    let (code, out, _) = kiln(&["bench", &tiny_cnn(), "--vs", &tiny_cnn(), "--runs", "5"]);
    assert_eq!(code, 0);
    assert!(out.contains("B/A p50 ratio: "), "{out}");
    assert!(out.contains("alternating pairs"), "{out}");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx").display().to_string();
    let not_inputs = dir.path().display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["bench", &missing, "--runs", "5"],
        vec!["bench", "", "--runs", "0"],
        vec!["bench", "", "--threads", "0"],
        vec!["bench", "", "--inputs", &not_inputs, "--runs", "5"],
        vec!["bench", "", "--vs", &missing, "--runs", "5"],
    ];
    let model = tiny_cnn();
    for mut args in cases {
        if args[1].is_empty() {
            args[1] = &model;
        }
        let (code, out, err) = kiln(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

fn floats(shape: &[usize], f: impl Fn(usize) -> f32) -> Value {
    let n = shape.iter().product();
    Value::Tensor(Tensor::from_vec(shape.to_vec(), (0..n).map(f).collect()).unwrap())
}

fn save(dir: &Path, name: &str, v: Value) -> String {
    let p = dir.join(name);
    write_values(&p, &vec![("y".to_string(), v)]).unwrap();
    p.display().to_string()
}

#[test]
fn streamed_diff_of_saved_outputs_has_the_known_answer() {
    // Several chunks' worth; the candidate has +0.5 on one element in the last chunk.
    let n = CHUNK_ELEMENTS * 3 + 17;
    let last = n - 3;
    let dir = tempfile::tempdir().unwrap();
    let a = save(dir.path(), "a", floats(&[n], |i| (i % 101) as f32));
    let b = save(
        dir.path(),
        "b",
        floats(&[n], |i| {
            (i % 101) as f32 + if i == last { 0.5 } else { 0.0 }
        }),
    );
    let (code, out, err) = kiln(&["diff", &a, &b, "--json"]);
    assert_eq!(code, 1, "{err}");
    let m = &json(&out)["outputs"][0]["metrics"];
    assert_eq!(m["elements"], n as u64);
    assert_eq!(m["max_abs"], 0.5);
    assert_eq!(m["outside"], 1);
    let (code, _, err) = kiln(&["diff", &a, &b, "--max-abs", "0.5", "--atol", "0.5"]);
    assert_eq!(code, 0, "{err}");
}
