//! Load/save tests across modules: round trips, refused external data, failing saves.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, SparseTensorProto,
    StringStringEntryProto, TensorProto,
};
use crate::save::save_impl;
use crate::*;

fn floats(name: &str, n: usize, seed: f32) -> TensorProto {
    let mut raw = Vec::with_capacity(n * 4);
    for i in 0..n {
        raw.extend_from_slice(&(i as f32 * seed).to_le_bytes());
    }
    TensorProto {
        name: name.to_string(),
        dims: vec![n as i64],
        data_type: DataType::Float as i32,
        raw_data: Bytes::from(raw),
        ..Default::default()
    }
}

fn constant(output: &str, t: TensorProto) -> NodeProto {
    NodeProto {
        op_type: "Constant".into(),
        output: vec![output.into()],
        attribute: vec![AttributeProto {
            name: "value".into(),
            r#type: 4,
            t: Some(t),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 5,
        g: Some(g),
        ..Default::default()
    }
}

/// Tensors of every size class in every place: a big one (kernel copy, page alignment),
/// small ones that stay inside, Constant nodes, If/Loop bodies, a sparse initializer.
fn sample_model() -> ModelProto {
    let then_branch = GraphProto {
        name: "then".into(),
        initializer: vec![floats("then_w", 512, 0.5)],
        node: vec![constant("then_c", floats("", 300, 1.5))],
        ..Default::default()
    };
    let loop_body = GraphProto {
        name: "body".into(),
        node: vec![constant("body_c", floats("", 400, 2.5))],
        ..Default::default()
    };
    let mut indices = Vec::new();
    for i in 0..300i64 {
        indices.extend_from_slice(&(i * 3).to_le_bytes());
    }
    let graph = GraphProto {
        name: "main".into(),
        initializer: vec![
            floats("w_big", 65536, 0.25),
            floats("w_small", 8, 1.0),
            floats("w_mid", 300, 3.0),
        ],
        sparse_initializer: vec![SparseTensorProto {
            values: Some(floats("sp", 300, 4.0)),
            indices: Some(TensorProto {
                name: "sp_idx".into(),
                dims: vec![300],
                data_type: DataType::Int64 as i32,
                raw_data: Bytes::from(indices),
                ..Default::default()
            }),
            dims: vec![900],
        }],
        node: vec![
            constant("c", floats("", 1000, 5.0)),
            NodeProto {
                name: "if".into(),
                op_type: "If".into(),
                input: vec!["cond".into()],
                attribute: vec![graph_attr("then_branch", then_branch)],
                ..Default::default()
            },
            NodeProto {
                name: "loop".into(),
                op_type: "Loop".into(),
                attribute: vec![graph_attr("body", loop_body)],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    ModelProto {
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 21,
        }],
        producer_name: "kiln-test".into(),
        graph: Some(graph),
        ..Default::default()
    }
}

/// (description, raw_data) of every tensor, in walk order.
fn payloads(model: &ModelProto) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for_each_tensor(model, |t, site| {
        out.push((site.describe(t), t.raw_data.clone()))
    });
    out
}

fn external_count(model: &ModelProto) -> usize {
    let mut n = 0;
    for_each_tensor(model, |t, _| {
        n += usize::from(t.data_location == DataLocation::External as i32)
    });
    n
}

/// Decodes a saved file as is, without resolving external data.
fn raw_decode(path: &Path) -> ModelProto {
    ModelProto::decode(Bytes::from(fs::read(path).unwrap())).unwrap()
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".kiln-"))
        .collect()
}

fn external(location: Option<&str>, size_threshold: u64) -> SaveOptions {
    SaveOptions {
        external: ExternalData::External {
            location: location.map(str::to_string),
            size_threshold,
        },
    }
}

// ---------------------------------------------------------------- garbage is not a model

fn load_bytes(bytes: &[u8]) -> ProtoError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    fs::write(&path, bytes).unwrap();
    let err = load_model(&path).unwrap_err();
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "error does not name the file: {err}"
    );
    err
}

#[test]
fn empty_file_is_not_a_model() {
    let err = load_bytes(&[]);
    assert!(matches!(err, ProtoError::NotAModel { .. }), "{err}");
    assert!(err.to_string().contains("does not look like an ONNX model"));
}

#[test]
fn png_is_not_a_model() {
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend_from_slice(&[0, 0, 0, 13]);
    png.extend_from_slice(b"IHDR");
    png.extend_from_slice(&[
        0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
    ]);
    let err = load_bytes(&png);
    assert!(
        matches!(
            err,
            ProtoError::Decode { .. } | ProtoError::NotAModel { .. }
        ),
        "{err}"
    );
}

#[test]
fn random_bytes_are_not_a_model() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [1usize, 2, 3, 7, 16, 100, 1000, 4096] {
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let err = decode_model(Bytes::from(bytes), Path::new("random.onnx")).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProtoError::Decode { .. } | ProtoError::NotAModel { .. }
                ),
                "{err}"
            );
        }
    }
}

#[test]
fn truncated_model_is_a_decode_error() {
    let full = sample_model().encode_to_vec();
    for cut in [full.len() / 2, full.len() - 1, 3] {
        let err = load_bytes(&full[..cut]);
        assert!(matches!(err, ProtoError::Decode { .. }), "{err}");
        assert!(
            err.to_string().contains("not a valid ONNX protobuf"),
            "{err}"
        );
    }
}

#[test]
fn model_without_graph_or_ir_version_is_refused() {
    let mut m = sample_model();
    m.ir_version = 0;
    let err = decode_model(Bytes::from(m.encode_to_vec()), Path::new("m.onnx")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.onnx: does not look like an ONNX model (no IR version)"
    );
    let mut m = sample_model();
    m.graph = None;
    let err = decode_model(Bytes::from(m.encode_to_vec()), Path::new("m.onnx")).unwrap_err();
    assert!(err.to_string().ends_with("(no graph)"), "{err}");
}

#[test]
fn missing_model_file_and_folder_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_model(&dir.path().join("nope.onnx")).unwrap_err();
    assert!(matches!(err, ProtoError::Io { .. }), "{err}");
    let err = load_model(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

// ---------------------------------------------------------------- round trips

#[test]
fn embed_external_embed_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let original = sample_model();
    let before = original.clone();

    let embedded = dir.path().join("embedded.onnx");
    let s = save_model(&original, &embedded, &SaveOptions::default()).unwrap();
    assert_eq!(original, before, "save must not mutate the model");
    assert!(s.data_path.is_none() && !s.switched_to_external);
    assert_eq!(s.model_bytes, fs::metadata(&embedded).unwrap().len());

    // Loaded embedded tensors are slices of the model file's map (zero copy).
    let loaded = load_model(&embedded).unwrap();
    assert_eq!(loaded.model, original);
    assert!(loaded.external_files.is_empty());
    let big = &loaded.model.graph.as_ref().unwrap().initializer[0].raw_data;
    assert_eq!(
        loaded.sources().locate(big).map(|(p, _)| p),
        Some(embedded.as_path())
    );

    // External: everything of >= 1024 bytes goes out, small tensors stay in.
    let ext = dir.path().join("ext.onnx");
    let s = save_loaded(&loaded, &loaded.model, &ext, &external(None, 1024)).unwrap();
    let data = dir.path().join("ext.onnx.data");
    assert_eq!(s.data_path.as_deref(), Some(data.as_path()));
    assert_eq!(s.data_bytes, fs::metadata(&data).unwrap().len());
    // w_big, w_mid, sp values, sp indices, Constant c, then_w, then_c, body_c.
    assert_eq!(s.external_tensors, 8);
    let on_disk = raw_decode(&ext);
    assert_eq!(external_count(&on_disk), 8);
    let mut small_inside = false;
    for_each_tensor(&on_disk, |t, _| {
        if t.data_location == DataLocation::External as i32 {
            assert!(t.raw_data.is_empty());
            let get = |k: &str| {
                t.external_data
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
            };
            assert_eq!(get("location").as_deref(), Some("ext.onnx.data"));
            let offset: u64 = get("offset").unwrap().parse().unwrap();
            let length: u64 = get("length").unwrap().parse().unwrap();
            assert_eq!(offset % 64, 0, "{} at {offset}", t.name);
            if length >= 64 * 1024 {
                assert_eq!(offset % 4096, 0, "{} at {offset}", t.name);
            }
        } else if t.name == "w_small" {
            small_inside = t.raw_data.len() == 32;
        }
    });
    assert!(small_inside);

    let reloaded = load_model(&ext).unwrap();
    assert_eq!(reloaded.model, original);
    assert_eq!(reloaded.external_files.len(), 1);
    assert_eq!(reloaded.external_files[0].tensors, 8);
    assert_eq!(
        reloaded.external_files[0].path,
        data.canonicalize().unwrap()
    );
    assert_eq!(reloaded.external_files[0].size, s.data_bytes);
    let big = &reloaded.model.graph.as_ref().unwrap().initializer[0].raw_data;
    let (src, offset) = reloaded.sources().locate(big).unwrap();
    assert_eq!(
        (src, offset % 4096),
        (data.canonicalize().unwrap().as_path(), 0)
    );

    // And back to embedded, from external data (kernel copies are not involved here).
    let back = dir.path().join("back.onnx");
    let s = save_loaded(&reloaded, &reloaded.model, &back, &SaveOptions::default()).unwrap();
    assert!(s.data_path.is_none());
    let on_disk = raw_decode(&back);
    assert_eq!(external_count(&on_disk), 0);
    assert_eq!(on_disk, original);
    assert_eq!(
        payloads(&load_model(&back).unwrap().model),
        payloads(&original)
    );
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn save_over_its_own_source_files() {
    // Load model + data, save to the very same paths: the maps keep the old inodes alive.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    save_model(&sample_model(), &path, &external(None, 1024)).unwrap();
    let loaded = load_model(&path).unwrap();
    save_loaded(&loaded, &loaded.model, &path, &external(None, 1024)).unwrap();
    drop(loaded);
    assert_eq!(load_model(&path).unwrap().model, sample_model());
}

#[test]
fn external_data_in_a_subfolder() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("weights")).unwrap();
    let path = dir.path().join("m.onnx");
    let s = save_model(&sample_model(), &path, &external(Some("weights/m.bin"), 0)).unwrap();
    assert_eq!(s.data_path, Some(dir.path().join("weights/m.bin")));
    // Threshold 0: every non-empty tensor goes out, w_small too.
    assert_eq!(s.external_tensors, 9);
    let loaded = load_model(&path).unwrap();
    assert_eq!(loaded.model, sample_model());
    assert_eq!(loaded.external_files[0].tensors, 9);
    assert!(temp_files(&dir.path().join("weights")).is_empty());
}

#[test]
fn shared_buffers_are_written_once() {
    let mut m = sample_model();
    let g = m.graph.as_mut().unwrap();
    let mut twin = g.initializer[0].clone();
    twin.name = "w_big_twin".into();
    g.initializer.push(twin);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    let with_twin = save_model(&m, &path, &external(None, 1024)).unwrap();
    let without = save_model(
        &sample_model(),
        &dir.path().join("n.onnx"),
        &external(None, 1024),
    )
    .unwrap();
    assert_eq!(with_twin.data_bytes, without.data_bytes);
    assert_eq!(with_twin.external_tensors, 9);
    assert_eq!(load_model(&path).unwrap().model, m);
}

#[test]
fn typed_fields_are_externalized_as_raw_data() {
    let mut m = sample_model();
    let values: Vec<f32> = (0..512).map(|i| i as f32 - 0.5).collect();
    m.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: "typed".into(),
        dims: vec![512],
        data_type: DataType::Float as i32,
        float_data: values.clone(),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    save_model(&m, &path, &external(None, 1024)).unwrap();
    let loaded = load_model(&path).unwrap();
    let t = loaded
        .model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .last()
        .unwrap()
        .clone();
    assert!(t.float_data.is_empty());
    let expected: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(&t.raw_data[..], &expected[..]);
}

#[test]
fn embed_switches_to_external_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.onnx");
    // A limit of 100 KiB stands in for 2 GiB: the model is ~270 KiB.
    let s = save_impl(
        &sample_model(),
        &path,
        &SaveOptions::default(),
        None,
        100 * 1024,
    )
    .unwrap();
    assert!(s.switched_to_external);
    assert_eq!(s.warnings.len(), 1);
    assert!(s.warnings[0].contains("2 GiB"), "{}", s.warnings[0]);
    assert_eq!(s.data_path, Some(dir.path().join("big.onnx.data")));
    assert!(s.model_bytes < 100 * 1024);
    assert_eq!(load_model(&path).unwrap().model, sample_model());
}

#[test]
fn too_large_even_external_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    let err = save_impl(&sample_model(), &path, &external(None, 1024), None, 100).unwrap_err();
    assert!(matches!(err, ProtoError::TooLarge { .. }), "{err}");
    assert!(
        err.to_string().contains("(2 GiB); even with external data"),
        "{err}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn encode_model_refuses_past_2_gib_without_touching_the_data() {
    // A sparse file stands in for 2 GiB of weights; encoded_len never reads them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.bin");
    let file = fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.set_len(PROTOBUF_LIMIT + 1).unwrap();
    // SAFETY: test-only map of a file nobody else touches.
    let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
    let mut m = sample_model();
    m.graph.as_mut().unwrap().initializer[0].raw_data = Bytes::from_owner(map);
    let err = encode_model(&m).unwrap_err();
    assert!(matches!(err, ProtoError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("2 GiB"), "{err}");
    assert!(encode_model(&sample_model()).is_ok());
}

#[test]
fn decode_model_resolves_relative_to_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    save_model(&sample_model(), &path, &external(None, 1024)).unwrap();
    let bytes = Bytes::from(fs::read(&path).unwrap());
    let loaded = decode_model(bytes.clone(), &path).unwrap();
    assert_eq!(loaded.model, sample_model());
    // From elsewhere the data file is not found, and the error says which tensor.
    let err = decode_model(bytes, &dir.path().join("elsewhere/m.onnx")).unwrap_err();
    assert!(matches!(err, ProtoError::ExternalData { .. }), "{err}");
}

// ---------------------------------------------------------------- refused external data

/// Writes a model whose one initializer `w` (4 floats) refers to `entries`, and loads it.
fn load_with_reference(dir: &Path, entries: &[(&str, &str)]) -> Result<LoadedModel, ProtoError> {
    let mut m = sample_model();
    let g = m.graph.as_mut().unwrap();
    g.initializer = vec![TensorProto {
        name: "w".into(),
        dims: vec![4],
        data_type: DataType::Float as i32,
        data_location: DataLocation::External as i32,
        external_data: entries
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }];
    let path = dir.join("model.onnx");
    fs::write(&path, m.encode_to_vec()).unwrap();
    load_model(&path)
}

fn refused(dir: &Path, entries: &[(&str, &str)]) -> ExternalDataError {
    match load_with_reference(dir, entries) {
        Err(ProtoError::ExternalData {
            path,
            tensor,
            problem,
        }) => {
            assert_eq!(path, dir.join("model.onnx"));
            assert_eq!(tensor, "w");
            problem
        }
        other => panic!("expected an external data error, got {other:?}"),
    }
}

#[test]
fn valid_reference_with_offset_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..64u8).collect();
    fs::write(dir.path().join("w.bin"), &data).unwrap();
    let loaded = load_with_reference(
        dir.path(),
        &[("location", "w.bin"), ("offset", "16"), ("length", "16")],
    )
    .unwrap();
    let t = &loaded.model.graph.as_ref().unwrap().initializer[0];
    assert_eq!(&t.raw_data[..], &data[16..32]);
    assert!(t.external_data.is_empty());
    assert_eq!(t.data_location, DataLocation::Default as i32);
    // Without length: to the end of the file.
    let loaded =
        load_with_reference(dir.path(), &[("location", "./w.bin"), ("offset", "48")]).unwrap();
    assert_eq!(
        &loaded.model.graph.as_ref().unwrap().initializer[0].raw_data[..],
        &data[48..]
    );
}

#[test]
fn refuses_locations_outside_the_model_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    fs::create_dir(&dir).unwrap();
    let outside = root.path().join("secret.bin");
    fs::write(&outside, [0u8; 16]).unwrap();

    let abs = outside.to_str().unwrap();
    assert!(matches!(
        refused(&dir, &[("location", abs)]),
        ExternalDataError::Absolute(_)
    ));
    let err = load_with_reference(&dir, &[("location", "../secret.bin")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: external data for tensor 'w': location '../secret.bin' escapes the model folder",
            dir.join("model.onnx").display()
        )
    );
    assert!(matches!(
        refused(&dir, &[("location", "C:\\x.bin")]),
        ExternalDataError::WindowsDrive(_)
    ));
    assert!(matches!(
        refused(&dir, &[("location", "C:/x.bin")]),
        ExternalDataError::WindowsDrive(_)
    ));
    assert!(matches!(
        refused(&dir, &[("location", "\\\\srv\\share\\x")]),
        ExternalDataError::Unc(_)
    ));
    assert!(matches!(
        refused(&dir, &[("offset", "0")]),
        ExternalDataError::NoLocation
    ));

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, dir.join("link.bin")).unwrap();
        let problem = refused(&dir, &[("location", "link.bin")]);
        assert!(
            matches!(problem, ExternalDataError::OutsideFolder { .. }),
            "{problem}"
        );
        // A symlinked folder pointing outside is no better.
        std::os::unix::fs::symlink(root.path(), dir.join("up")).unwrap();
        let problem = refused(&dir, &[("location", "up/secret.bin")]);
        assert!(
            matches!(problem, ExternalDataError::OutsideFolder { .. }),
            "{problem}"
        );
        // A symlink that stays inside is fine.
        fs::write(dir.join("real.bin"), [0u8; 16]).unwrap();
        std::os::unix::fs::symlink(dir.join("real.bin"), dir.join("inside.bin")).unwrap();
        assert!(load_with_reference(&dir, &[("location", "inside.bin")]).is_ok());
    }
}

#[test]
fn refuses_bad_ranges_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("w.bin"), [0u8; 16]).unwrap();
    let d = dir.path();
    assert!(matches!(
        refused(d, &[("location", "missing.bin")]),
        ExternalDataError::Missing { .. }
    ));
    assert!(matches!(
        refused(d, &[("location", "w.bin"), ("offset", "17")]),
        ExternalDataError::OffsetPastEnd {
            offset: 17,
            file_len: 16,
            ..
        }
    ));
    assert!(matches!(
        refused(
            d,
            &[("location", "w.bin"), ("offset", "8"), ("length", "16")]
        ),
        ExternalDataError::RangePastEnd { .. }
    ));
    assert!(matches!(
        refused(
            d,
            &[
                ("location", "w.bin"),
                ("offset", "8"),
                ("length", "18446744073709551615")
            ]
        ),
        ExternalDataError::Overflow { .. }
    ));
    assert!(matches!(
        refused(d, &[("location", "w.bin"), ("offset", "-1")]),
        ExternalDataError::BadNumber { key: "offset", .. }
    ));
    // 4 floats need 16 bytes, 8 are offered.
    assert!(matches!(
        refused(d, &[("location", "w.bin"), ("length", "8")]),
        ExternalDataError::LengthMismatch {
            actual: 8,
            expected: 16,
            ..
        }
    ));
    fs::create_dir(d.join("sub")).unwrap();
    assert!(matches!(
        refused(d, &[("location", "sub")]),
        ExternalDataError::NotAFile(_)
    ));
}

#[test]
fn constant_and_subgraph_tensors_are_resolved() {
    // Write by hand a model whose Constant inside an If branch refers to external data.
    let dir = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..16u8).collect();
    fs::write(dir.path().join("c.bin"), &payload).unwrap();
    let mut m = sample_model();
    let node = &mut m.graph.as_mut().unwrap().node[1];
    let then = node.attribute[0].g.as_mut().unwrap();
    let t = then.node[0].attribute[0].t.as_mut().unwrap();
    *t = TensorProto {
        dims: vec![4],
        data_type: DataType::Float as i32,
        data_location: DataLocation::External as i32,
        external_data: vec![StringStringEntryProto {
            key: "location".into(),
            value: "c.bin".into(),
        }],
        ..Default::default()
    };
    let path = dir.path().join("m.onnx");
    fs::write(&path, m.encode_to_vec()).unwrap();
    let loaded = load_model(&path).unwrap();
    let then = loaded.model.graph.as_ref().unwrap().node[1].attribute[0]
        .g
        .as_ref()
        .unwrap();
    assert_eq!(
        &then.node[0].attribute[0].t.as_ref().unwrap().raw_data[..],
        &payload[..]
    );

    // And a reference to a missing file there names the Constant node.
    fs::remove_file(dir.path().join("c.bin")).unwrap();
    let err = load_model(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("tensor '<node 'then_c' attribute 'value'>'"),
        "{err}"
    );
}

// ---------------------------------------------------------------- failing saves

#[test]
fn failing_save_leaves_old_files_and_no_temporaries() {
    let src_dir = tempfile::tempdir().unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("m.onnx");
    save_model(&sample_model(), &src, &external(None, 1024)).unwrap();
    let loaded = load_model(&src).unwrap();

    // Something already at the destination.
    let dst = dst_dir.path().join("out.onnx");
    let mut old = sample_model();
    old.producer_name = "old".into();
    save_model(&old, &dst, &external(None, 1024)).unwrap();
    let old_model = fs::read(&dst).unwrap();
    let old_data = fs::read(dst_dir.path().join("out.onnx.data")).unwrap();

    // The source data file shrinks after loading: the kernel copy of w_big comes up short.
    // (The mapped pages are never touched: that is the point of the kernel copy.)
    fs::File::options()
        .write(true)
        .open(src_dir.path().join("m.onnx.data"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let err = save_loaded(&loaded, &loaded.model, &dst, &external(None, 1024)).unwrap_err();
    assert!(matches!(err, ProtoError::Io { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    assert_eq!(fs::read(&dst).unwrap(), old_model);
    assert_eq!(
        fs::read(dst_dir.path().join("out.onnx.data")).unwrap(),
        old_data
    );
    assert!(temp_files(dst_dir.path()).is_empty());
    assert_eq!(fs::read_dir(dst_dir.path()).unwrap().count(), 2);
}

#[test]
fn unresolved_external_tensor_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("m.onnx");
    fs::write(&dst, b"old").unwrap();
    let mut m = sample_model();
    let t = &mut m.graph.as_mut().unwrap().initializer[1];
    t.data_location = DataLocation::External as i32;
    t.external_data = vec![StringStringEntryProto {
        key: "location".into(),
        value: "w.bin".into(),
    }];
    for opts in [SaveOptions::default(), external(None, 1024)] {
        let err = save_model(&m, &dst, &opts).unwrap_err();
        assert!(err.to_string().contains("w_small"), "{err}");
        assert!(matches!(
            err,
            ProtoError::ExternalData {
                problem: ExternalDataError::Unresolved(_),
                ..
            }
        ));
    }
    assert_eq!(fs::read(&dst).unwrap(), b"old");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn bad_save_locations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("m.onnx");
    for location in ["../x.data", "/tmp/x.data", "m.onnx", "./m.onnx"] {
        let err = save_model(&sample_model(), &dst, &external(Some(location), 1024)).unwrap_err();
        assert!(matches!(err, ProtoError::Save { .. }), "{location}: {err}");
    }
    // A subfolder that does not exist: an I/O error, nothing written.
    let err = save_model(&sample_model(), &dst, &external(Some("no/x.data"), 1024)).unwrap_err();
    assert!(matches!(err, ProtoError::Io { .. }), "{err}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[cfg(unix)]
#[test]
fn saved_files_get_normal_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("m.onnx");
    save_model(&sample_model(), &dst, &external(None, 1024)).unwrap();
    // Same mode as any file created the ordinary way (0666 minus the umask), not tempfile's 0600.
    let plain = dir.path().join("plain");
    fs::write(&plain, b"x").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dst), mode(&plain));
    assert_eq!(mode(&dir.path().join("m.onnx.data")), mode(&plain));
}

// ---------------------------------------------------------------- digests while writing

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    crate::digest::hex(&sha2::Sha256::digest(fs::read(path).unwrap()))
}

#[test]
fn prepared_saves_hash_while_writing_and_rename_only_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    // A loaded model, so the big weight is a slice of a mapped file (a kernel copy when not
    // hashing): its bytes must still reach the digest.
    let src = dir.path().join("src.onnx");
    save_model(&sample_model(), &src, &external(None, 1024)).unwrap();
    let loaded = load_model(&src).unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    for (name, opts) in [
        ("x.onnx", external(None, 1024)),
        ("e.onnx", SaveOptions::default()),
    ] {
        let path = out.join(name);
        let pending = prepare_save(&loaded.model, &path, &opts, Some(loaded.sources())).unwrap();
        assert!(!path.exists(), "nothing is in place before commit");
        let s = pending.commit().unwrap();
        assert_eq!(s.model_sha256, Some(sha256_file(&path)));
        assert_eq!(s.model_bytes, fs::metadata(&path).unwrap().len());
        match &s.data_path {
            Some(data) => {
                assert_eq!(s.data_sha256, Some(sha256_file(data)));
                assert_eq!(s.data_bytes, fs::metadata(data).unwrap().len());
            }
            None => assert_eq!(s.data_sha256, None),
        }
        // What was written is the model.
        assert_eq!(
            payloads(&load_model(&path).unwrap().model),
            payloads(&loaded.model)
        );
        assert!(temp_files(&out).is_empty());
    }
    // Dropped without commit: nothing left, not even temporaries.
    let other = out.join("n.onnx");
    drop(
        prepare_save(
            &loaded.model,
            &other,
            &external(None, 1024),
            Some(loaded.sources()),
        )
        .unwrap(),
    );
    assert!(!other.exists() && !out.join("n.onnx.data").exists());
    assert!(temp_files(&out).is_empty());
    // Plain saves compute no digest.
    let plain = save_model(&loaded.model, &out.join("p.onnx"), &external(None, 1024)).unwrap();
    assert_eq!((plain.model_sha256, plain.data_sha256), (None, None));
}
