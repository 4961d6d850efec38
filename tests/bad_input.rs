//! Bad input gets a one-line error naming the problem, exit code 2, no panic, and no output
//! file: truncated files, random bytes, a PNG renamed `.onnx`, cycles, dangling inputs,
//! duplicate names, absurd dims, short raw_data, missing files, bad tensor files.

use std::process::Command;

use bytes::Bytes;
use kiln_proto::onnx::{
    tensor_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TypeProto, ValueInfoProto,
};
use kiln_tests::{assert_one_line_refusal, kiln_bin, repo_root};
use prost::Message;

fn float_info(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tensor_proto::DataType::Float as i32,
                shape: None,
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            initializer: initializers,
            input: vec![float_info("x")],
            output: vec![float_info("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Runs `kiln inspect` and `kiln convert` on `bytes` saved as `name`; both must exit 2 with one
/// line on stderr containing every one of `expect`, and convert must write nothing.
fn assert_refused(name: &str, bytes: &[u8], expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let out_path = dir.path().join("out/converted.onnx");
    for args in [
        vec!["inspect".to_string(), path.display().to_string()],
        vec![
            "convert".to_string(),
            path.display().to_string(),
            "-o".to_string(),
            out_path.display().to_string(),
        ],
    ] {
        let out = Command::new(kiln_bin()).args(&args).output().unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_refusal(&args, &out, name, expect);
    }
    assert!(!out_path.exists(), "convert wrote output for a bad model");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp") || n.starts_with(".kiln"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn good_model() -> Vec<u8> {
    std::fs::read(repo_root().join("models/tiny_cnn/model.onnx")).unwrap()
}

#[test]
fn truncated_file() {
    let bytes = good_model();
    for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
        assert_refused(
            "truncated.onnx",
            &bytes[..cut],
            &["not a valid ONNX protobuf"],
        );
    }
}

#[test]
fn empty_file() {
    assert_refused("empty.onnx", b"", &["does not look like an ONNX model"]);
}

#[test]
fn random_bytes() {
    // A fixed xorshift stream: the same "random" file every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..8 {
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_refused("random.onnx", &bytes, &["ONNX"]);
    }
}

#[test]
fn png_renamed_onnx() {
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend_from_slice(&[
        0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0, 16, 0, 0, 0, 16, 8, 6, 0, 0, 0,
    ]);
    png.extend_from_slice(&[0x1f, 0xf3, 0xff, 0x61, 0, 0, 0, 0, b'I', b'E', b'N', b'D']);
    assert_refused("picture.onnx", &png, &["not a valid ONNX protobuf"]);
}

#[test]
fn graph_with_a_cycle() {
    let bytes = model(
        vec![
            node("Add", "a", &["x", "c"], &["b"]),
            node("Relu", "r", &["b"], &["c"]),
            node("Identity", "i", &["b"], &["y"]),
        ],
        vec![],
    );
    assert_refused("cycle.onnx", &bytes, &["cycle"]);
}

#[test]
fn node_reads_a_value_nobody_produces() {
    let bytes = model(vec![node("Add", "add", &["x", "ghost"], &["y"])], vec![]);
    assert_refused("dangling.onnx", &bytes, &["'ghost'", "add"]);
}

#[test]
fn duplicate_output_names() {
    let bytes = model(
        vec![
            node("Relu", "first", &["x"], &["y"]),
            node("Sigmoid", "second", &["x"], &["y"]),
        ],
        vec![],
    );
    assert_refused("duplicate.onnx", &bytes, &["'y'", "first", "second"]);
}

#[test]
fn dims_past_two_to_the_forty() {
    let huge = TensorProto {
        name: "w".into(),
        dims: vec![1 << 21, 1 << 21],
        data_type: tensor_proto::DataType::Float as i32,
        ..Default::default()
    };
    let bytes = model(vec![node("Add", "add", &["x", "w"], &["y"])], vec![huge]);
    assert_refused("huge.onnx", &bytes, &["'w'", "2^40"]);
}

#[test]
fn raw_data_shorter_than_its_shape() {
    let short = TensorProto {
        name: "w".into(),
        dims: vec![4, 4],
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: Bytes::from(vec![0u8; 60]),
        ..Default::default()
    };
    let bytes = model(vec![node("Add", "add", &["x", "w"], &["y"])], vec![short]);
    assert_refused(
        "short.onnx",
        &bytes,
        &[
            "'w'",
            "raw_data holds 60 bytes but shape [4, 4] of float32 needs 64",
        ],
    );
}

#[test]
fn missing_model_file() {
    let out = Command::new(kiln_bin())
        .args(["inspect", "no/such/model.onnx"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("no/such/model.onnx"), "{stderr}");
}

#[test]
fn inputs_of_the_wrong_shape_name_the_data_file() {
    let root = repo_root();
    let data = root.join("models/constant_weights/test_data_set_0");
    let out = Command::new(kiln_bin())
        .args(["run"])
        .arg(root.join("models/tiny_cnn/model.onnx"))
        .arg("--inputs")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&data.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("must have shape [batch,3,32,32]"),
        "{stderr}"
    );
}

#[test]
fn corrupt_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("inputs.npz");
    std::fs::write(&npz, b"PK\x03\x04 not really a zip").unwrap();
    let out = Command::new(kiln_bin())
        .args(["run"])
        .arg(repo_root().join("models/tiny_cnn/model.onnx"))
        .arg("--inputs")
        .arg(&npz)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("inputs.npz"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["frobnicate"],
        vec!["convert", "m.onnx"],
        vec!["inspect"],
    ] {
        let out = Command::new(kiln_bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// `kiln … | head`: a reader that goes away ends Kiln quietly (SIGPIPE), not with a panic.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let model = kiln_tests::repo_root().join("models/gpt2_tiny/model.onnx");
    let mut child = Command::new(kiln_tests::kiln_bin())
        .args(["inspect", model.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before Kiln writes its (long) listing.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "status {:?}: {stderr}",
        out.status
    );
}
