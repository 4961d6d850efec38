//! Shared helpers for the end-to-end tests: where things are (the `kiln` binary, `models/`,
//! the ONNX backend test data), and a harness that checks a model transformation against
//! reference outputs in ONNX Runtime.

pub mod decode;
pub mod fuzz_bodies;
pub mod harness;
pub mod proto_build;
pub mod testdata;
pub mod token_samples;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use harness::{check_cases, read_set, Case, CaseData, Report, TransformError, Verdict};
pub use testdata::{backend_cases, model_cases, onnx_test_data, BACKEND_FOLDERS};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The `kiln` binary of this build, built first if needed (integration tests of another
/// package do not get Cargo's `CARGO_BIN_EXE_*`).
pub fn kiln_bin() -> PathBuf {
    // target/<profile>/deps/<test binary> → target/<profile>/kiln
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("kiln{}", std::env::consts::EXE_SUFFIX));
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "kiln", "--bin", "kiln"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p kiln failed");
    });
    bin
}

/// Runs the `kiln` binary; returns the exit code (-1 if killed by a signal), stdout and stderr.
/// A panic message on stderr fails the calling test: bad input must never panic.
pub fn kiln(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(kiln_bin())
        .args(args)
        .output()
        .expect("run the kiln binary");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Asserts the bad-input contract on one finished `kiln` run: exit code 2, no panic, exactly
/// one `kiln: error:` line on stderr naming `file` and holding every string of `expect`, and
/// nothing on stdout.
pub fn assert_one_line_refusal(
    args: &[&str],
    out: &std::process::Output,
    file: &str,
    expect: &[&str],
) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} ({:?}): {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("kiln: error: "), "{stderr}");
    assert!(
        stderr.contains(file),
        "error does not name the file: {stderr}"
    );
    for e in expect {
        assert!(stderr.contains(e), "{args:?}: expected {e:?} in: {stderr}");
    }
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
}

/// tiny_cnn with `delta` added to the first element of `fc.bias` (the final Gemm's bias).
pub fn perturbed_tiny_cnn(dir: &Path, delta: f32) -> PathBuf {
    let mut loaded =
        kiln_proto::load_model(&repo_root().join("models/tiny_cnn/model.onnx")).unwrap();
    let graph = loaded.model.graph.as_mut().unwrap();
    let bias = graph
        .initializer
        .iter_mut()
        .find(|t| t.name == "fc.bias")
        .expect("tiny_cnn has fc.bias");
    if bias.raw_data.is_empty() {
        bias.float_data[0] += delta;
    } else {
        let mut raw = bias.raw_data.to_vec();
        let v = f32::from_le_bytes(raw[..4].try_into().unwrap()) + delta;
        raw[..4].copy_from_slice(&v.to_le_bytes());
        bias.raw_data = raw.into();
    }
    let path = dir.join("perturbed.onnx");
    kiln_proto::save_model(&loaded.model, &path, &kiln_proto::SaveOptions::default()).unwrap();
    path
}
