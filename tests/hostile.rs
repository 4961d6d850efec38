//! Hostile models: each is refused by `kiln inspect` and `kiln optimize` with exit 2 and one
//! line naming the limit (and how to raise it, where it can be raised), without a panic, and
//! within a bounded address space (`ulimit -v`), so "memory stays bounded" is checked, not
//! hoped. Models that are valid but costly (a huge Loop trip count, a huge ConstantOfShape)
//! must be optimized without executing them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kiln_proto::onnx::{
    attribute_proto::AttributeType, tensor_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TypeProto,
    ValueInfoProto,
};
use kiln_tests::{assert_one_line_refusal, kiln_bin};
use prost::Message;

/// Address-space cap for every run (KiB): far below what the hostile inputs would need if
/// they were believed, with room for the binary and its maps.
const ULIMIT_KIB: u64 = 1 << 20;

fn info(name: &str, elem: tensor_proto::DataType) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: None,
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

fn float_info(name: &str) -> ValueInfoProto {
    info(name, tensor_proto::DataType::Float)
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: format!("{op}_0"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn opset() -> Vec<OperatorSetIdProto> {
    vec![OperatorSetIdProto {
        domain: String::new(),
        version: 17,
    }]
}

fn model(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: opset(),
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
}

/// Runs `kiln ARGS` under `ulimit -v`, with `env` set, and a deadline.
fn kiln(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {ULIMIT_KIB}; exec \"$0\" \"$@\""))
        .arg(kiln_bin())
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd.output().expect("run kiln");
    (out, start.elapsed())
}

/// Writes `bytes` as `dir/name` and returns the path as a string.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

/// `inspect` and `optimize` both exit 2 with one `kiln: error:` line holding every `expect`,
/// naming the file, writing no output and no stdout.
fn assert_refused(path: &str, env: &[(&str, &str)], expect: &[&str]) {
    let out_path = PathBuf::from(path).with_extension("opt.onnx");
    let out_s = out_path.display().to_string();
    for args in [vec!["inspect", path], vec!["optimize", path, "-o", &out_s]] {
        let (out, took) = kiln(&args, env);
        // The ulimit turns a runaway allocation into an abort, which must not happen either.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("memory allocation"), "{args:?}: {stderr}");
        assert_one_line_refusal(&args, &out, path, expect);
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
    }
    assert!(
        !out_path.exists(),
        "optimize wrote output for a refused model"
    );
}

fn external(name: &str, location: &str, offset: Option<&str>, length: &str) -> TensorProto {
    let mut entries = vec![("location", location), ("length", length)];
    if let Some(o) = offset {
        entries.push(("offset", o));
    }
    TensorProto {
        name: name.into(),
        dims: vec![4],
        data_type: tensor_proto::DataType::Float as i32,
        data_location: tensor_proto::DataLocation::External as i32,
        external_data: entries
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.into(),
                value: v.into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn add_model(w: TensorProto) -> Vec<u8> {
    model(vec![node("Add", &["x", "w"], &["y"])], vec![w]).encode_to_vec()
}

#[test]
fn external_data_that_escapes_the_model_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(root.path().join("secret.bin"), [0u8; 16]).unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.bin"), dir.join("link.bin")).unwrap();
    let abs = root.path().join("secret.bin").display().to_string();
    for (location, expect) in [
        ("../secret.bin", "escapes the model folder"),
        (abs.as_str(), "is an absolute path"),
        ("C:\\secret.bin", "is a Windows drive path"),
        ("C:secret.bin", "is a Windows drive path"),
        ("\\\\server\\share\\secret.bin", "is a UNC network path"),
        ("//server/share/secret.bin", "is a UNC network path"),
        ("link.bin", "outside the model folder"),
    ] {
        let path = write(
            &dir,
            "escape.onnx",
            &add_model(external("w", location, None, "16")),
        );
        assert_refused(&path, &[], &["'w'", expect]);
    }
}

#[test]
fn external_data_offsets_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), [0u8; 16]).unwrap();
    for (offset, length, expect) in [
        (
            "100",
            "16",
            "offset 100 is past the end of 'w.bin' (16 bytes)",
        ),
        (
            "8",
            "16",
            "offset 8 + length 16 is past the end of 'w.bin' (16 bytes)",
        ),
        ("8", "18446744073709551610", "overflows"),
        ("-1", "16", "not a non-negative integer"),
    ] {
        let bytes = add_model(external("w", "w.bin", Some(offset), length));
        let path = write(dir.path(), "past_end.onnx", &bytes);
        assert_refused(&path, &[], &["'w'", expect]);
    }
}

#[test]
fn dims_whose_product_overflows() {
    let dir = tempfile::tempdir().unwrap();
    for dims in [
        vec![1 << 62, 4],
        vec![i64::MAX, i64::MAX],
        vec![1 << 21, 1 << 21],
    ] {
        let w = TensorProto {
            name: "w".into(),
            dims,
            data_type: tensor_proto::DataType::Float as i32,
            ..Default::default()
        };
        let path = write(dir.path(), "overflow.onnx", &add_model(w));
        assert_refused(&path, &[], &["'w'", "2^40", "fixed"]);
    }
}

#[test]
fn dims_that_need_more_memory_than_the_data_holds() {
    // 2^39 float32 elements declared (2 TiB) with 4 bytes of data: refused without allocating.
    let dir = tempfile::tempdir().unwrap();
    let w = TensorProto {
        name: "w".into(),
        dims: vec![1 << 20, 1 << 19],
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: Bytes::from_static(&[0, 0, 0, 0]),
        ..Default::default()
    };
    let path = write(dir.path(), "huge_dims.onnx", &add_model(w));
    assert_refused(&path, &[], &["'w'", "raw_data holds 4 bytes"]);
}

#[test]
fn tensor_bytes_over_the_configured_cap() {
    let dir = tempfile::tempdir().unwrap();
    let w = TensorProto {
        name: "w".into(),
        dims: vec![1 << 16],
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: Bytes::from(vec![0u8; 1 << 18]),
        ..Default::default()
    };
    let path = write(dir.path(), "big.onnx", &add_model(w));
    assert_refused(
        &path,
        &[("KILN_MAX_TENSOR_BYTES", "65536")],
        &[
            "tensor data of 262144 bytes exceeds the limit of 65536",
            "(raise it with KILN_MAX_TENSOR_BYTES=262144)",
        ],
    );
    // Under the default cap the same model loads.
    let (out, _) = kiln(&["inspect", &path], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn typed_fields_that_decode_past_the_cap() {
    // One byte per int64 varint on the wire, eight in memory: 1 MB of file, 8 MB decoded.
    let dir = tempfile::tempdir().unwrap();
    let w = TensorProto {
        name: "w".into(),
        dims: vec![1 << 20],
        data_type: tensor_proto::DataType::Int64 as i32,
        int64_data: vec![1; 1 << 20],
        ..Default::default()
    };
    let path = write(dir.path(), "varints.onnx", &add_model(w));
    assert_refused(
        &path,
        &[("KILN_MAX_DECODED_BYTES", "1000000")],
        &[
            "typed tensor data decoding to 8388608 bytes exceeds the limit of 1000000",
            "(raise it with KILN_MAX_DECODED_BYTES=8388608)",
        ],
    );
}

/// Protobuf wire helpers for models too large or too deep to build as structs.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> u64 {
    let mut buf = Vec::new();
    varint(v, &mut buf);
    buf.len() as u64
}

/// Header of a length-delimited field `field` whose body is `len` bytes.
fn field_header(field: u64, len: u64, out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(len, out);
}

/// A model whose graph is `depth` If nodes, each the then_branch of the one above, written
/// outside-in so neither the test nor the encoder recurses.
fn nested_ifs(depth: usize) -> Vec<u8> {
    let inner = GraphProto {
        name: "leaf".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let graph_prefix = GraphProto {
        name: "b".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let node_prefix = node("If", &["c"], &["o"]).encode_to_vec();
    let attr_prefix = AttributeProto {
        name: "then_branch".into(),
        r#type: AttributeType::Graph as i32,
        ..Default::default()
    }
    .encode_to_vec();
    // Lengths from the inside out: graph_k = P + [1] node_k, node_k = N + [5] attr_k,
    // attr_k = A + [6] graph_{k+1}.
    let mut graph_len = inner.len() as u64;
    let mut headers = Vec::with_capacity(depth);
    for _ in 0..depth {
        let attr_len = attr_prefix.len() as u64 + 1 + varint_len(graph_len) + graph_len;
        let node_len = node_prefix.len() as u64 + 1 + varint_len(attr_len) + attr_len;
        let mut h = graph_prefix.clone();
        field_header(1, node_len, &mut h);
        h.extend_from_slice(&node_prefix);
        field_header(5, attr_len, &mut h);
        h.extend_from_slice(&attr_prefix);
        field_header(6, graph_len, &mut h);
        graph_len += h.len() as u64;
        headers.push(h);
    }
    let mut out = ModelProto {
        ir_version: 8,
        opset_import: opset(),
        ..Default::default()
    }
    .encode_to_vec();
    field_header(7, graph_len, &mut out);
    for h in headers.iter().rev() {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(&inner);
    out
}

#[test]
fn ten_thousand_nested_subgraphs() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = nested_ifs(10_000);
    // The hand-written wire format is what prost would write: check on a shallow one.
    let shallow = ModelProto::decode(nested_ifs(3).as_slice()).unwrap();
    let mut depth = 0;
    let mut g = shallow.graph.as_ref();
    while let Some(graph) = g {
        g = graph
            .node
            .first()
            .and_then(|n| n.attribute.first())
            .and_then(|a| a.g.as_ref());
        depth += 1;
    }
    assert_eq!(depth, 4);
    let path = write(dir.path(), "deep.onnx", &bytes);
    assert_refused(
        &path,
        &[],
        &[
            "a subgraph nesting depth of more than 16 exceeds the limit of 16",
            "(raise it with KILN_MAX_SUBGRAPH_DEPTH=32)",
        ],
    );
    // Raised past what protobuf decoding allows: the decoder's fixed limit, said plainly.
    assert_refused(
        &path,
        &[("KILN_MAX_SUBGRAPH_DEPTH", "100000")],
        &["fixed limit of 100", "cannot be raised"],
    );
    // Lowered: a shallow nest is refused too.
    let path = write(dir.path(), "three.onnx", &nested_ifs(3));
    assert_refused(
        &path,
        &[("KILN_MAX_SUBGRAPH_DEPTH", "2")],
        &["nesting depth of more than 2", "KILN_MAX_SUBGRAPH_DEPTH=4"],
    );
}

/// A model with `count` Relu nodes in a chain, written as wire bytes.
fn relu_chain(count: usize) -> Vec<u8> {
    let mut graph = Vec::new();
    for i in 0..count {
        let input = if i == 0 {
            "x".to_string()
        } else {
            format!("v{}", i - 1)
        };
        let output = if i + 1 == count {
            "y".to_string()
        } else {
            format!("v{i}")
        };
        let n = node("Relu", &[&input], &[&output]).encode_to_vec();
        field_header(1, n.len() as u64, &mut graph);
        graph.extend_from_slice(&n);
    }
    for (field, name) in [(11, "x"), (12, "y")] {
        let vi = float_info(name).encode_to_vec();
        field_header(field, vi.len() as u64, &mut graph);
        graph.extend_from_slice(&vi);
    }
    let mut out = ModelProto {
        ir_version: 8,
        opset_import: opset(),
        ..Default::default()
    }
    .encode_to_vec();
    field_header(7, graph.len() as u64, &mut out);
    out.extend_from_slice(&graph);
    out
}

#[test]
fn millions_of_nodes() {
    let dir = tempfile::tempdir().unwrap();
    // Six million empty nodes: 12 MB on disk, gigabytes once decoded. Refused from the wire.
    let mut graph = Vec::with_capacity(12_000_000);
    for _ in 0..6_000_000 {
        graph.extend_from_slice(&[0x0a, 0x00]);
    }
    let mut bytes = ModelProto {
        ir_version: 8,
        ..Default::default()
    }
    .encode_to_vec();
    field_header(7, graph.len() as u64, &mut bytes);
    bytes.extend_from_slice(&graph);
    let path = write(dir.path(), "six_million.onnx", &bytes);
    assert_refused(
        &path,
        &[],
        &[
            "a node count of 6000000 exceeds the limit of 1000000",
            "(raise it with KILN_MAX_NODES=6000000)",
        ],
    );
    // Two million real nodes against a lowered cap.
    let path = write(dir.path(), "two_million.onnx", &relu_chain(2_000_000));
    assert_refused(
        &path,
        &[("KILN_MAX_NODES", "1000000")],
        &[
            "a node count of 2000000 exceeds the limit of 1000000",
            "KILN_MAX_NODES=2000000",
        ],
    );
}

#[test]
fn a_long_chain_under_the_cap_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "chain.onnx", &relu_chain(20_000));
    let (out, _) = kiln(&["inspect", &path], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("20,000") || stdout.contains("20000"),
        "{stdout}"
    );
}

#[test]
fn string_tensor_elements_of_huge_length() {
    let dir = tempfile::tempdir().unwrap();
    let s = TensorProto {
        name: "s".into(),
        dims: vec![2],
        data_type: tensor_proto::DataType::String as i32,
        string_data: vec![Bytes::from_static(b"ok"), Bytes::from(vec![b'a'; 2 << 20])],
        ..Default::default()
    };
    let m = model(vec![node("Identity", &["s"], &["y"])], vec![s]);
    let path = write(dir.path(), "strings.onnx", &m.encode_to_vec());
    assert_refused(
        &path,
        &[("KILN_MAX_STRING_BYTES", "1048576")],
        &[
            "string tensor 's' has an element of 2097152 bytes, which exceeds the limit of 1048576",
            "(raise it with KILN_MAX_STRING_BYTES=2097152)",
        ],
    );
    let (out, _) = kiln(&["inspect", &path], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn repeated_fields_claiming_giant_sizes() {
    let dir = tempfile::tempdir().unwrap();
    // A packed float_data (TensorProto field 4) claiming 2^40 bytes, inside an initializer.
    let mut tensor = TensorProto {
        name: "w".into(),
        data_type: tensor_proto::DataType::Float as i32,
        dims: vec![4],
        ..Default::default()
    }
    .encode_to_vec();
    field_header(4, 1 << 40, &mut tensor);
    tensor.extend_from_slice(&[0u8; 16]);
    let mut graph = Vec::new();
    field_header(5, tensor.len() as u64, &mut graph);
    graph.extend_from_slice(&tensor);
    let mut bytes = ModelProto {
        ir_version: 8,
        ..Default::default()
    }
    .encode_to_vec();
    field_header(7, graph.len() as u64, &mut bytes);
    bytes.extend_from_slice(&graph);
    let path = write(dir.path(), "giant_claim.onnx", &bytes);
    assert_refused(&path, &[], &["not a valid ONNX protobuf"]);

    // A graph (ModelProto field 7) claiming 2^62 bytes, and 10^6 node headers each claiming
    // 2^31: decoding checks every length against the buffer, nothing is reserved up front.
    let mut bytes = vec![0x08, 0x08];
    field_header(7, 1 << 62, &mut bytes);
    for _ in 0..1_000_000 {
        field_header(1, 1 << 31, &mut bytes);
    }
    let path = write(dir.path(), "giant_graph.onnx", &bytes);
    assert_refused(&path, &[], &["not a valid ONNX protobuf"]);
}

fn scalar_i64(name: &str, v: i64) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: tensor_proto::DataType::Int64 as i32,
        raw_data: Bytes::from(v.to_le_bytes().to_vec()),
        ..Default::default()
    }
}

/// Optimizes `bytes` under the address-space cap; it must succeed quickly.
fn optimize_ok(name: &str, bytes: &[u8]) -> ModelProto {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, bytes);
    let out_path = dir.path().join("out.onnx");
    let out_s = out_path.display().to_string();
    let (out, took) = kiln(&["optimize", &path, "-o", &out_s], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(took < Duration::from_secs(20), "optimize took {took:?}");
    ModelProto::decode(std::fs::read(&out_path).unwrap().as_slice()).unwrap()
}

#[test]
fn loop_with_a_huge_trip_count_is_not_executed() {
    let body = GraphProto {
        name: "body".into(),
        node: vec![
            node("Identity", &["cond_in"], &["cond_out"]),
            NodeProto {
                name: "step".into(),
                ..node("Add", &["v_in", "one"], &["v_out"])
            },
        ],
        initializer: vec![TensorProto {
            name: "one".into(),
            dims: vec![],
            data_type: tensor_proto::DataType::Float as i32,
            raw_data: Bytes::from(1f32.to_le_bytes().to_vec()),
            ..Default::default()
        }],
        input: vec![
            info("i", tensor_proto::DataType::Int64),
            info("cond_in", tensor_proto::DataType::Bool),
            float_info("v_in"),
        ],
        output: vec![
            info("cond_out", tensor_proto::DataType::Bool),
            float_info("v_out"),
        ],
        ..Default::default()
    };
    let lp = NodeProto {
        attribute: vec![AttributeProto {
            name: "body".into(),
            r#type: AttributeType::Graph as i32,
            g: Some(body),
            ..Default::default()
        }],
        ..node("Loop", &["trips", "keep_going", "v0"], &["y"])
    };
    let v0 = TensorProto {
        name: "v0".into(),
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: Bytes::from(0f32.to_le_bytes().to_vec()),
        ..Default::default()
    };
    let keep = TensorProto {
        name: "keep_going".into(),
        data_type: tensor_proto::DataType::Bool as i32,
        raw_data: Bytes::from_static(&[1]),
        ..Default::default()
    };
    let mut m = model(vec![lp], vec![scalar_i64("trips", i64::MAX), keep, v0]);
    if let Some(g) = m.graph.as_mut() {
        g.input.clear();
    }
    let out = optimize_ok("loop.onnx", &m.encode_to_vec());
    let g = out.graph.unwrap();
    assert!(
        g.node.iter().any(|n| n.op_type == "Loop"),
        "the Loop was folded away"
    );
}

#[test]
fn constant_of_shape_past_the_fold_cap_is_not_materialized() {
    // 2^36 float32 elements (256 GiB) if folded; folding must leave it to the runtime.
    let shape = TensorProto {
        name: "shape".into(),
        dims: vec![2],
        data_type: tensor_proto::DataType::Int64 as i32,
        raw_data: Bytes::from(
            [1i64 << 18, 1 << 18]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        ),
        ..Default::default()
    };
    let mut m = model(
        vec![node("ConstantOfShape", &["shape"], &["y"])],
        vec![shape],
    );
    if let Some(g) = m.graph.as_mut() {
        g.input.clear();
    }
    let out = optimize_ok("cos.onnx", &m.encode_to_vec());
    let g = out.graph.unwrap();
    assert!(g.node.iter().any(|n| n.op_type == "ConstantOfShape"));
}

#[test]
fn attribute_types_that_contradict_the_op() {
    let w = TensorProto {
        name: "w".into(),
        dims: vec![1, 1, 3, 3],
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: Bytes::from(vec![0u8; 36]),
        ..Default::default()
    };
    let attr = |name: &str, f: fn(&mut AttributeProto)| {
        let mut a = AttributeProto {
            name: name.into(),
            ..Default::default()
        };
        f(&mut a);
        a
    };
    let wrong: Vec<AttributeProto> = vec![
        attr("kernel_shape", |a| {
            a.r#type = AttributeType::Float as i32;
            a.f = Some(3.0);
        }),
        attr("strides", |a| {
            a.r#type = AttributeType::String as i32;
            a.s = Some(Bytes::from_static(b"1,1"));
        }),
        attr("pads", |a| {
            a.r#type = AttributeType::Ints as i32;
            a.ints = vec![1, 2, 3];
        }),
        attr("group", |a| {
            a.r#type = AttributeType::Floats as i32;
            a.floats = vec![1.0, 2.0];
        }),
        attr("dilations", |a| {
            a.r#type = AttributeType::Ints as i32;
            a.ints = vec![i64::MIN, i64::MAX];
        }),
    ];
    for a in wrong {
        let label = a.name.clone();
        let conv = NodeProto {
            attribute: vec![a],
            ..node("Conv", &["x", "w"], &["y"])
        };
        let mut m = model(vec![conv], vec![w.clone()]);
        if let Some(g) = m.graph.as_mut() {
            g.input[0] = ValueInfoProto {
                r#type: Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: tensor_proto::DataType::Float as i32,
                        shape: Some(kiln_proto::onnx::TensorShapeProto {
                            dim: [1, 1, 8, 8]
                                .iter()
                                .map(|&d| kiln_proto::onnx::tensor_shape_proto::Dimension {
                                    value: Some(
                                        kiln_proto::onnx::tensor_shape_proto::dimension::Value::DimValue(d),
                                    ),
                                    denotation: String::new(),
                                })
                                .collect(),
                        }),
                    })),
                    denotation: String::new(),
                }),
                ..float_info("x")
            };
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "conv.onnx", &m.encode_to_vec());
        let out_s = dir.path().join("out.onnx").display().to_string();
        for args in [
            vec!["inspect", &path],
            vec!["optimize", &path, "-o", &out_s],
        ] {
            let (out, _) = kiln(&args, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("panicked"),
                "{label} {args:?} panicked: {stderr}"
            );
            match out.status.code() {
                Some(0) => {}
                Some(2) => {
                    assert_eq!(stderr.trim_end().lines().count(), 1, "{label}: {stderr}");
                    assert!(stderr.starts_with("kiln: error: "), "{label}: {stderr}");
                }
                other => panic!("{label} {args:?}: exit {other:?}: {stderr}"),
            }
        }
    }
}

#[test]
fn a_bad_limit_value_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.onnx", &relu_chain(3));
    let (out, _) = kiln(&["inspect", &path], &[("KILN_MAX_NODES", "lots")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable KILN_MAX_NODES is 'lots', not a whole number"),
        "{stderr}"
    );
}
