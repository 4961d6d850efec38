//! Lossless I/O: every ONNX backend test model and every model in `models/` is loaded,
//! turned into Kiln's graph, saved, and run in ONNX Runtime; outputs must match the
//! reference outputs within the ONNX backend tests' tolerances (rtol 1e-3, atol 1e-7).

use std::path::{Path, PathBuf};

use kiln_backends::compare::Tolerance;
use kiln_passes::ir::Model;
use kiln_proto::SaveOptions;
use kiln_tests::{backend_cases, check_cases, model_cases, Case, BACKEND_FOLDERS};

/// Load → graph → verify → proto → save (weights stay where they were: embedded or external).
fn round_trip(case: &Case, dir: &Path) -> Result<PathBuf, String> {
    let loaded = kiln_proto::load_model(&case.model).map_err(|e| e.to_string())?;
    let model = Model::from_proto(&loaded.model).map_err(|e| e.to_string())?;
    model.graph.verify().map_err(|e| e.to_string())?;
    let out = dir.join("model.onnx");
    kiln_proto::save_loaded(&loaded, &model.to_proto(), &out, &SaveOptions::default())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn every_backend_and_bundled_model_survives_a_round_trip_through_the_graph() {
    let mut cases = backend_cases(&BACKEND_FOLDERS);
    cases.extend(model_cases());
    let report = check_cases(&cases, Tolerance::ONNX_BACKEND, &round_trip);
    println!(
        "{}",
        report.render("load → graph → save, run in ONNX Runtime 1.31.1")
    );
    assert_eq!(report.failed(), 0, "{} cases failed", report.failed());
    // The data has 1,800+ cases; far fewer passing means the harness lost them, not success.
    assert!(
        report.passed() > 1500,
        "only {} cases passed",
        report.passed()
    );
}
