//! The cleanup passes on real models: run to a fixed point on every ONNX backend test model
//! and `models/`, save, and check in ONNX Runtime that each computes what it did before
//! (rtol 1e-4, atol 1e-5) with the same interface.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_backends::compare::Tolerance;
use kiln_passes::cleanup::cleanup_passes;
use kiln_passes::ir::Model;
use kiln_passes::pipeline::{Changes, Pipeline};
use kiln_proto::onnx::ModelProto;
use kiln_proto::SaveOptions;
use kiln_tests::{backend_cases, check_cases, model_cases, Case, TransformError, BACKEND_FOLDERS};

const TOL: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

/// Input and output names in order: the interface no pass may change.
fn interface(p: &ModelProto) -> (Vec<String>, Vec<String>) {
    let g = p.graph.clone().unwrap_or_default();
    let names = |v: &[kiln_proto::onnx::ValueInfoProto]| v.iter().map(|i| i.name.clone()).collect();
    (names(&g.input), names(&g.output))
}

#[test]
fn cleanup_keeps_every_model_computing_the_same() {
    let mut cases = backend_cases(&BACKEND_FOLDERS);
    cases.extend(model_cases());
    let totals: Mutex<(Changes, usize, usize, usize)> = Mutex::default();
    let transform = |case: &Case, dir: &Path| -> Result<PathBuf, TransformError> {
        let loaded = kiln_proto::load_model(&case.model).map_err(|e| e.to_string())?;
        let mut model = Model::from_proto(&loaded.model).map_err(|e| e.to_string())?;
        let before = model.graph.stats().nodes;
        let records = Pipeline::new()
            .verify_each(true)
            .until_fixed_point(cleanup_passes())
            .run(&mut model)
            .map_err(|e| e.to_string())?;
        let proto = model.to_proto();
        if interface(&proto) != interface(&loaded.model) {
            return Err(TransformError::Failed(
                "the model's interface changed".into(),
            ));
        }
        if let Ok(mut t) = totals.lock() {
            for r in &records {
                t.0.merge(&r.changes);
            }
            let after = model.graph.stats().nodes;
            t.1 += usize::from(after != before || records.iter().any(|r| !r.changes.is_empty()));
            t.2 += before;
            t.3 += after;
        }
        let out = dir.join("model.onnx");
        kiln_proto::save_loaded(&loaded, &proto, &out, &SaveOptions::default())
            .map_err(|e| e.to_string())?;
        Ok(out)
    };
    let report = check_cases(&cases, TOL, &transform);
    println!(
        "{}",
        report.render("cleanup passes to a fixed point, run in ONNX Runtime")
    );
    if let Ok(t) = totals.lock() {
        println!(
            "models changed: {}; operators {} → {}; changes: {}",
            t.1, t.2, t.3, t.0
        );
        // Identity removal alone fires on hundreds of backend models; zero means the passes
        // were not run, not that there was nothing to do.
        assert!(t.0.get("identity") > 100, "identity removals: {}", t.0);
    }
    assert_eq!(report.failed(), 0, "{} cases failed", report.failed());
    assert!(
        report.passed() > 1500,
        "only {} cases passed",
        report.passed()
    );
}
