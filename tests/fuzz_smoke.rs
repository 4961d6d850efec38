//! CI smoke test of the `cargo fuzz` targets: replays every seed in `fuzz/corpus/<target>/`
//! and every kept crash in `fuzz/regressions/<target>/` through the targets' own bodies
//! (`kiln_tests::fuzz_bodies`), so a regression panics here in seconds without nightly.

use std::path::PathBuf;

use kiln_tests::fuzz_bodies::{self, ExternalSandbox};
use kiln_tests::repo_root;

/// The inputs of `target`: its seed corpus and kept regressions, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = repo_root().join("fuzz").join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    files.sort();
    files
}

/// Runs `body` on every input of `target`, asserting there is a seed corpus to run.
fn replay(target: &str, mut body: impl FnMut(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target}/ has no seeds");
    for file in files {
        let data = std::fs::read(&file).expect("read fuzz input");
        eprintln!("{target}: {}", file.display());
        body(&data);
    }
}

#[test]
fn decode_graph_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("model.onnx");
    replay("decode_graph", |d| fuzz_bodies::decode_graph(&origin, d));
}

#[test]
fn external_data_corpus() {
    let sandbox = ExternalSandbox::new().unwrap();
    replay("external_data", |d| fuzz_bodies::external_data(&sandbox, d));
}

#[test]
fn thresholds_yaml_corpus() {
    replay("thresholds_yaml", fuzz_bodies::thresholds_yaml);
}

#[test]
fn profile_yaml_corpus() {
    replay("profile_yaml", fuzz_bodies::profile_yaml);
}

#[test]
fn tensor_files_corpus() {
    replay("tensor_files", fuzz_bodies::tensor_files);
}

#[test]
fn evaluator_corpus() {
    replay("evaluator", fuzz_bodies::evaluator);
}

#[test]
fn evaluator_op_list_is_the_evaluators() {
    for op in fuzz_bodies::eval_ops() {
        assert_eq!(
            kiln_passes::eval::is_supported(op),
            *op != "Unknown",
            "{op}"
        );
    }
}
