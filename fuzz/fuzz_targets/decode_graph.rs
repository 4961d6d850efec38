//! Bytes → decode_model → Model::from_proto → verify → to_proto (body in kiln_tests::fuzz_bodies).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// An empty folder for the model's origin, so external data resolves nowhere real.
static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (_, origin) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let origin = dir.path().join("model.onnx");
        (dir, origin)
    });
    kiln_tests::fuzz_bodies::decode_graph(origin, data);
});
