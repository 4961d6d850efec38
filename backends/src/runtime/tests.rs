//! End-to-end tests against the real ONNX Runtime library (found by the normal search).

use bytes::Bytes;
use kiln_passes::tensor::{DataType, Tensor};
use kiln_proto::onnx::tensor_shape_proto::{dimension, Dimension};
use kiln_proto::onnx::{
    attribute_proto::AttributeType, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

use super::*;
use crate::value::Value;

// ---- hand-built models -------------------------------------------------------------------

fn tensor_type(elem: DataType, dims: &[&str]) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: elem.onnx(),
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| Dimension {
                        value: Some(match d.parse::<i64>() {
                            Ok(n) => dimension::Value::DimValue(n),
                            Err(_) => dimension::Value::DimParam(d.to_string()),
                        }),
                        ..Dimension::default()
                    })
                    .collect(),
            }),
        })),
        ..TypeProto::default()
    }
}

fn seq_type(inner: TypeProto) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::SequenceType(Box::new(
            type_proto::Sequence {
                elem_type: Some(Box::new(inner)),
            },
        ))),
        ..TypeProto::default()
    }
}

fn optional_type(inner: TypeProto) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::OptionalType(Box::new(
            type_proto::Optional {
                elem_type: Some(Box::new(inner)),
            },
        ))),
        ..TypeProto::default()
    }
}

fn vi(name: &str, ty: TypeProto) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(ty),
        ..ValueInfoProto::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..NodeProto::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: Some(i),
        ..AttributeProto::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    ModelProto {
        // ORT 1.31 reads up to IR 13 (DESIGN.md); 10 covers every type used here.
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "test".into(),
            node: nodes,
            input: inputs,
            output: outputs,
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    }
}

fn f32s(shape: Vec<usize>, v: &[f32]) -> Value {
    Value::Tensor(Tensor::from_vec(shape, v.to_vec()).unwrap())
}

fn named(items: Vec<(&str, Value)>) -> Vec<(String, Value)> {
    items.into_iter().map(|(n, v)| (n.to_string(), v)).collect()
}

fn add_model() -> ModelProto {
    model(
        17,
        vec![node("Add", &["a", "b"], &["c"], vec![])],
        vec![
            vi("a", tensor_type(DataType::Float, &["N", "3"])),
            vi("b", tensor_type(DataType::Float, &["N", "3"])),
        ],
        vec![vi("c", tensor_type(DataType::Float, &["N", "3"]))],
    )
}

// ---- tests -------------------------------------------------------------------------------

#[test]
fn add_two_floats_bit_exact_and_io_described() {
    let mut s = Session::from_model(&add_model()).unwrap();
    let ins = s.inputs();
    assert_eq!(ins.len(), 2);
    assert_eq!(ins[0].name, "a");
    assert_eq!(
        ins[0].kind,
        IoKind::Tensor {
            dtype: Some(DataType::Float),
            dims: vec![Dim::Symbolic("N".into()), Dim::Fixed(3)],
        }
    );
    assert_eq!(s.outputs()[0].name, "c");

    let a = [0.1f32, -2.5, 3.0e-39, f32::MAX, 1.0, -0.0];
    let b = [0.2f32, 2.5, 1.0e-39, f32::MAX, f32::EPSILON, 0.0];
    let out = s
        .run(&named(vec![
            ("a", f32s(vec![2, 3], &a)),
            ("b", f32s(vec![2, 3], &b)),
        ]))
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "c");
    let c = out[0].1.as_tensor().unwrap();
    assert_eq!(c.shape(), &[2, 3]);
    let expected: Vec<u32> = a.iter().zip(&b).map(|(x, y)| (x + y).to_bits()).collect();
    let got: Vec<u32> = c
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn loads_from_path_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("add.onnx");
    let bytes = kiln_proto::encode_model(&add_model()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let inputs = named(vec![
        ("a", f32s(vec![1, 3], &[1., 2., 3.])),
        ("b", f32s(vec![1, 3], &[1., 1., 1.])),
    ]);
    let opts = SessionOptions::as_written();
    let mut from_path = Session::from_path_with(&path, &opts).unwrap();
    let mut from_bytes = Session::from_bytes_with(&bytes, &opts).unwrap();
    let x = from_path.run(&inputs).unwrap();
    assert_eq!(x, from_bytes.run(&inputs).unwrap());
    assert_eq!(
        x[0].1.as_tensor().unwrap().to_vec::<f32>().unwrap(),
        vec![2., 3., 4.]
    );
    assert!(matches!(
        Session::from_path(&dir.path().join("missing.onnx")),
        Err(RuntimeError::Io { .. })
    ));
    let err = Session::from_bytes(b"not a model").unwrap_err();
    assert!(matches!(err, RuntimeError::Model { .. }), "{err}");
}

#[test]
fn inputs_are_checked_by_name_before_ort() {
    let mut s = Session::from_model(&add_model()).unwrap();
    let good = || f32s(vec![1, 3], &[1., 2., 3.]);
    let err = s
        .run(&named(vec![("a", good()), ("x", good())]))
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::UnknownInput { ref name, .. } if name == "x"),
        "{err}"
    );
    assert!(err.to_string().contains("a, b"), "{err}");

    let err = s.run(&named(vec![("a", good())])).unwrap_err();
    assert!(
        matches!(err, RuntimeError::MissingInput { ref name, .. } if name == "b"),
        "{err}"
    );

    let ints = Value::Tensor(Tensor::from_vec(vec![1, 3], vec![1i32, 2, 3]).unwrap());
    let err = s.run(&named(vec![("a", good()), ("b", ints)])).unwrap_err();
    assert!(
        matches!(err, RuntimeError::InputType { ref name, .. } if name == "b"),
        "{err}"
    );
    assert!(err.to_string().contains("float32[N,3]"), "{err}");

    let err = s
        .run(&named(vec![
            ("a", good()),
            ("b", f32s(vec![3], &[1., 2., 3.])),
        ]))
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::InputShape { ref name, .. } if name == "b"),
        "{err}"
    );
    let err = s
        .run(&named(vec![
            ("a", good()),
            ("b", f32s(vec![1, 2], &[1., 2.])),
        ]))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InputShape { .. }), "{err}");

    let err = s
        .run(&named(vec![("a", good()), ("a", good()), ("b", good())]))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::DuplicateInput { .. }), "{err}");

    // Shapes that do not broadcast are only ORT's to see: its message is wrapped.
    let err = s
        .run(&named(vec![
            ("a", f32s(vec![2, 3], &[0.; 6])),
            ("b", f32s(vec![3, 3], &[0.; 9])),
        ]))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Run(_)), "{err}");
}

/// Expected bytes of Cast(float [0, 1]) → `t`, as ONNX defines the conversion.
fn cast_0_1(t: DataType) -> Vec<u8> {
    use DataType::*;
    match t {
        Float => [0f32.to_le_bytes(), 1f32.to_le_bytes()].concat(),
        Double => [0f64.to_le_bytes(), 1f64.to_le_bytes()].concat(),
        Float16 => vec![0, 0, 0x00, 0x3c],
        Bfloat16 => vec![0, 0, 0x80, 0x3f],
        Uint8 | Int8 | Bool => vec![0, 1],
        Uint16 | Int16 => vec![0, 0, 1, 0],
        Uint32 | Int32 => [0u32.to_le_bytes(), 1u32.to_le_bytes()].concat(),
        Uint64 | Int64 => [0u64.to_le_bytes(), 1u64.to_le_bytes()].concat(),
        Float8E4M3Fn => vec![0x00, 0x38],
        Float8E4M3Fnuz => vec![0x00, 0x40],
        Float8E5M2 => vec![0x00, 0x3c],
        Float8E5M2Fnuz => vec![0x00, 0x40],
        // Packed low bits first: element 0 in the low nibble / low two bits.
        Uint4 | Int4 => vec![0x10],
        Float4E2M1 => vec![0x20],
        Uint2 | Int2 => vec![0x04],
        // e8m0 has no zero: 0 rounds to the smallest power, 2^-127 (0x00); 1.0 is 0x7f.
        Float8E8M0 => vec![0x00, 0x7f],
        String | Complex64 | Complex128 => unreachable!(),
    }
}

/// Element types Cast reaches on ORT 1.31's CPU provider, with the opset that allows them.
fn castable() -> Vec<(DataType, i64)> {
    use DataType::*;
    let mut v: Vec<(DataType, i64)> = [
        Float, Double, Float16, Bfloat16, Uint8, Int8, Bool, Uint16, Int16, Uint32, Int32, Uint64,
        Int64,
    ]
    .into_iter()
    .map(|t| (t, 17))
    .collect();
    v.extend([Float8E4M3Fn, Float8E4M3Fnuz, Float8E5M2, Float8E5M2Fnuz].map(|t| (t, 19)));
    v.extend([Uint4, Int4].map(|t| (t, 21)));
    v.push((Float8E8M0, 24));
    v.extend([Uint2, Int2].map(|t| (t, 25)));
    // float4e2m1 is missing: ORT 1.31's CPU provider has no kernel (Cast, Identity, Reshape)
    // for it, so no model can carry one in or out; complex types are not registered at all.
    v
}

fn cast_model(to: DataType, opset: i64) -> ModelProto {
    model(
        opset,
        vec![node(
            "Cast",
            &["x"],
            &["y"],
            vec![int_attr("to", to.onnx() as i64)],
        )],
        vec![vi("x", tensor_type(DataType::Float, &["2"]))],
        vec![vi("y", tensor_type(to, &["2"]))],
    )
}

#[test]
fn cast_to_every_type_bit_exact() {
    for (t, opset) in castable() {
        let mut s =
            Session::from_model(&cast_model(t, opset)).unwrap_or_else(|e| panic!("{t}: {e}"));
        let out = s
            .run(&named(vec![("x", f32s(vec![2], &[0.0, 1.0]))]))
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        let y = out[0].1.as_tensor().unwrap();
        assert_eq!(y.dtype(), t);
        assert_eq!(y.shape(), &[2]);
        assert_eq!(y.raw().unwrap().as_ref(), cast_0_1(t).as_slice(), "{t}");
    }
}

#[test]
fn every_castable_type_is_read_by_ort_as_written() {
    // The other direction: Cast(t → float) of the bytes ONNX defines for [0, 1] must give [0, 1].
    for (t, opset) in castable() {
        let m = model(
            opset,
            vec![node(
                "Cast",
                &["x"],
                &["y"],
                vec![int_attr("to", DataType::Float.onnx() as i64)],
            )],
            vec![vi("x", tensor_type(t, &["2"]))],
            vec![vi("y", tensor_type(DataType::Float, &["2"]))],
        );
        let mut s = Session::from_model(&m).unwrap_or_else(|e| panic!("{t}: {e}"));
        let x = Tensor::from_raw(t, vec![2], Bytes::from(cast_0_1(t))).unwrap();
        let out = s
            .run(&named(vec![("x", Value::Tensor(x))]))
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        let first = if t == DataType::Float8E8M0 {
            2f32.powi(-127)
        } else {
            0.0
        };
        assert_eq!(out[0].1, f32s(vec![2], &[first, 1.0]), "{t}");
    }
}

#[test]
fn cast_to_string() {
    let mut s = Session::from_model(&cast_model(DataType::String, 17)).unwrap();
    let out = s
        .run(&named(vec![("x", f32s(vec![2], &[0.0, 1.5]))]))
        .unwrap();
    let y = out[0].1.as_tensor().unwrap();
    assert_eq!(
        y.strings().unwrap(),
        &[Bytes::from_static(b"0"), Bytes::from_static(b"1.5")]
    );
}

fn identity_model(ty: TypeProto, opset: i64) -> ModelProto {
    model(
        opset,
        vec![node("Identity", &["x"], &["y"], vec![])],
        vec![vi("x", ty.clone())],
        vec![vi("y", ty)],
    )
}

/// Some bytes that are a valid tensor of `t` with 5 elements.
fn sample(t: DataType) -> Tensor {
    let n = 5;
    let len = t.byte_len(n).unwrap();
    let mut raw: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(3))
        .collect();
    if t == DataType::Bool {
        raw.iter_mut().for_each(|b| *b &= 1);
    }
    if let Some(last) = raw.last_mut() {
        // Sub-byte types: the padding bits past the last element stay zero.
        let used = (n * t.bits()) % 8;
        if used != 0 {
            *last &= (1u8 << used) - 1;
        }
    }
    Tensor::from_raw(t, vec![n], Bytes::from(raw)).unwrap()
}

#[test]
fn every_numeric_type_passes_through_identity() {
    // Identity's CPU kernel in ORT 1.31 covers these (not the sub-byte ones: those are
    // checked through Cast both ways above); the bytes must come back unchanged, which checks
    // both directions of the conversion.
    use DataType::*;
    let types = [
        Float,
        Double,
        Float16,
        Bfloat16,
        Uint8,
        Int8,
        Bool,
        Uint16,
        Int16,
        Uint32,
        Int32,
        Uint64,
        Int64,
        Float8E4M3Fn,
        Float8E4M3Fnuz,
        Float8E5M2,
        Float8E5M2Fnuz,
    ];
    for t in types {
        let mut s = Session::from_model(&identity_model(tensor_type(t, &["5"]), 21))
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        let x = sample(t);
        let out = s
            .run(&named(vec![("x", Value::Tensor(x.clone()))]))
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(out[0].1, Value::Tensor(x), "{t}");
    }
}

#[test]
fn strings_pass_through_byte_exact() {
    let mut s = Session::from_model(&identity_model(
        tensor_type(DataType::String, &["2", "2"]),
        17,
    ))
    .unwrap();
    let strings = vec![
        Bytes::from_static(b"hello"),
        Bytes::new(),
        Bytes::from_static(b"\xff\xfe not utf-8"),
        Bytes::from("ünïcödé"),
    ];
    let x = Tensor::from_strings(vec![2, 2], strings).unwrap();
    let out = s
        .run(&named(vec![("x", Value::Tensor(x.clone()))]))
        .unwrap();
    assert_eq!(out[0].1, Value::Tensor(x));

    let bad = Tensor::from_strings(vec![2, 2], vec![Bytes::from_static(b"a\0b"); 4]).unwrap();
    let err = s.run(&named(vec![("x", Value::Tensor(bad))])).unwrap_err();
    assert!(matches!(err, RuntimeError::InputValue { .. }), "{err}");
}

#[test]
fn empty_tensors() {
    let mut s = Session::from_model(&add_model()).unwrap();
    let empty = || f32s(vec![0, 3], &[]);
    let out = s.run(&named(vec![("a", empty()), ("b", empty())])).unwrap();
    assert_eq!(out[0].1.as_tensor().unwrap().shape(), &[0, 3]);
}

#[test]
fn sequences_both_ways() {
    let elem = tensor_type(DataType::Float, &["K"]);
    // SequenceConstruct builds a sequence output from tensors.
    let m = model(
        17,
        vec![node("SequenceConstruct", &["a", "b"], &["s"], vec![])],
        vec![vi("a", elem.clone()), vi("b", elem.clone())],
        vec![vi("s", seq_type(elem.clone()))],
    );
    let mut s = Session::from_model(&m).unwrap();
    assert_eq!(
        s.outputs()[0].kind,
        IoKind::Sequence(Box::new(IoKind::Tensor {
            dtype: Some(DataType::Float),
            dims: vec![Dim::Symbolic("K".into())],
        }))
    );
    let a = f32s(vec![2], &[1.0, 2.0]);
    let b = f32s(vec![3], &[3.0, 4.0, 5.0]);
    let out = s
        .run(&named(vec![("a", a.clone()), ("b", b.clone())]))
        .unwrap();
    let seq = Value::Sequence {
        elem_type: Some(DataType::Float),
        items: vec![a, b],
    };
    assert_eq!(out[0].1, seq);

    // A sequence input comes back through Identity unchanged.
    let mut s = Session::from_model(&identity_model(seq_type(elem), 17)).unwrap();
    let out = s.run(&named(vec![("x", seq.clone())])).unwrap();
    assert_eq!(out[0].1, seq);

    // An empty sequence cannot be built through the C API: said plainly.
    let empty = Value::Sequence {
        elem_type: Some(DataType::Float),
        items: vec![],
    };
    let err = s.run(&named(vec![("x", empty)])).unwrap_err();
    assert!(matches!(err, RuntimeError::Unsupported(_)), "{err}");
}

#[test]
fn optional_outputs_present_and_absent() {
    let elem = tensor_type(DataType::Float, &["2"]);
    let type_attr = AttributeProto {
        name: "type".into(),
        r#type: AttributeType::TypeProto as i32,
        tp: Some(elem.clone()),
        ..AttributeProto::default()
    };
    let m = model(
        18,
        vec![
            node("Optional", &["x"], &["some"], vec![]),
            node("Optional", &[], &["none"], vec![type_attr]),
        ],
        vec![vi("x", elem.clone())],
        vec![
            vi("some", optional_type(elem.clone())),
            vi("none", optional_type(elem)),
        ],
    );
    let mut s = Session::from_model(&m).unwrap();
    assert!(matches!(s.outputs()[1].kind, IoKind::Optional(_)));
    let x = f32s(vec![2], &[1.0, -1.0]);
    let out = s.run(&named(vec![("x", x.clone())])).unwrap();
    assert_eq!(
        out[0],
        ("some".to_string(), Value::Optional(Some(Box::new(x))))
    );
    assert_eq!(out[1], ("none".to_string(), Value::Optional(None)));
}

fn chain_model(with_value_info: bool) -> ModelProto {
    let t = tensor_type(DataType::Float, &["3"]);
    let mut m = model(
        17,
        vec![
            node("Add", &["x", "w"], &["t"], vec![]),
            node("Mul", &["t", "x"], &["z"], vec![]),
        ],
        vec![vi("x", t.clone())],
        vec![vi("z", t.clone())],
    );
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(TensorProto {
        name: "w".into(),
        dims: vec![3],
        data_type: DataType::Float.onnx(),
        raw_data: Bytes::from(
            [1f32, 2., 3.]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        ),
        ..TensorProto::default()
    });
    if with_value_info {
        g.value_info.push(vi("t", t));
    }
    m
}

#[test]
fn intermediate_values_are_captured() {
    let x = f32s(vec![3], &[0.5, -1.0, 2.0]);
    let inputs = named(vec![("x", x.clone())]);
    for with_value_info in [true, false] {
        let m = chain_model(with_value_info);
        let names: Vec<String> = ["t", "z", "x", "w"].map(String::from).to_vec();
        let got = capture(&m, &names, &inputs, &SessionOptions::as_written()).unwrap();
        let order: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(order, ["t", "z", "x", "w"]);
        assert_eq!(
            got[0].1,
            f32s(vec![3], &[1.5, 1.0, 5.0]),
            "value_info: {with_value_info}"
        );
        assert_eq!(got[1].1, f32s(vec![3], &[0.75, -1.0, 10.0]));
        assert_eq!(got[2].1, x);
        assert_eq!(got[3].1, f32s(vec![3], &[1., 2., 3.]));
    }

    let m = chain_model(false);
    assert_eq!(capturable_names(&m), ["x", "w", "t", "z"]);
    let exposed = expose_outputs(&m, &["t".to_string(), "z".to_string()]);
    assert_eq!(exposed.graph.as_ref().unwrap().output.len(), 2);
    let err = capture(
        &m,
        &["inside_a_loop".to_string()],
        &inputs,
        &SessionOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RuntimeError::NotCapturable { .. }), "{err}");
    assert!(err.to_string().contains("If/Loop"), "{err}");
}

#[test]
fn external_data_in_memory_is_refused_with_advice() {
    let mut m = chain_model(false);
    let w = &mut m.graph.as_mut().unwrap().initializer[0];
    w.raw_data = Bytes::new();
    w.data_location = 1;
    w.external_data = vec![StringStringEntryProto {
        key: "location".into(),
        value: "weights.bin".into(),
    }];
    let err = Session::from_model(&m).unwrap_err();
    assert!(matches!(err, RuntimeError::ExternalData { .. }), "{err}");
    assert!(err.to_string().contains("weights.bin"), "{err}");
    assert!(err.to_string().contains("from_path"), "{err}");
}

#[test]
fn environment_reports_the_library() {
    environment().unwrap();
    let path = library_path().unwrap();
    assert!(
        path.to_string_lossy().contains("1.31.1"),
        "{}",
        path.display()
    );
}

#[test]
fn runs_from_kiln_graph() {
    let graph = kiln_passes::ir::Model::from_proto(&add_model()).unwrap();
    let mut s = Session::from_graph(&graph).unwrap();
    let out = s
        .run(&named(vec![
            ("a", f32s(vec![1, 3], &[1.0, 2.0, 3.0])),
            ("b", f32s(vec![1, 3], &[0.5, 0.5, 0.5])),
        ]))
        .unwrap();
    assert_eq!(
        out[0].1.as_tensor().unwrap().to_vec::<f32>().unwrap(),
        vec![1.5, 2.5, 3.5]
    );
}

/// x[1, 256] → MatMul(W[256, 256]) → Add(b[256]) → y, deterministic weights.
fn matmul_model() -> ModelProto {
    let k = 256;
    let mut m = model(
        17,
        vec![
            node("MatMul", &["x", "W"], &["h"], vec![]),
            node("Add", &["h", "b"], &["y"], vec![]),
        ],
        vec![vi("x", tensor_type(DataType::Float, &["1", "256"]))],
        vec![vi("y", tensor_type(DataType::Float, &["1", "256"]))],
    );
    let floats = |n: usize, seed: usize| -> Bytes {
        (0..n)
            .flat_map(|i| ((((i * 31 + seed) % 97) as f32 - 48.0) / 97.0).to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    };
    let g = m.graph.as_mut().unwrap();
    for (name, dims, seed) in [("W", vec![k, k], 1), ("b", vec![k], 2)] {
        g.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float.onnx(),
            raw_data: floats(dims.iter().product(), seed),
            ..TensorProto::default()
        });
    }
    m
}

#[test]
fn past_the_limit_weights_reach_ort_from_their_files_or_from_memory() {
    // Saved with external data and loaded back, so the weights are slices of a mapped file;
    // a limit of 0 sends this small model down the route a > 2 GiB one takes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    let opts = kiln_proto::SaveOptions {
        external: kiln_proto::ExternalData::external(),
    };
    kiln_proto::save_model(&matmul_model(), &path, &opts).unwrap();
    let loaded = kiln_proto::load_model(&path).unwrap();
    let x: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) / 64.0).collect();
    let inputs = named(vec![("x", f32s(vec![1, 256], &x))]);
    let options = SessionOptions::as_written();
    let mut from_file = Session::from_path_with(&path, &options).unwrap();
    let want = from_file.run(&inputs).unwrap();

    // Every weight mapped from one file: ORT reads them from that file itself.
    let split = super::large_model::split(&loaded.model).unwrap();
    assert_eq!(
        split.folder,
        Some(dir.path().canonicalize().unwrap()),
        "the file route"
    );
    assert!(split.files.is_empty());
    let mut routed = Session::from_model_routed(&loaded.model, &options, 0).unwrap();
    assert!(routed.memory_files().is_empty());
    assert_eq!(routed.run(&inputs).unwrap(), want);

    // A weight a pass made (heap bytes) stays inside the protobuf, next to file references.
    let mut changed = loaded.model.clone();
    let b = &mut changed.graph.as_mut().unwrap().initializer[1];
    b.raw_data = Bytes::from(b.raw_data.to_vec());
    let split = super::large_model::split(&changed).unwrap();
    assert!(split.folder.is_some() && split.files.is_empty());
    assert!(split.model.len() > 1024, "the heap weight is inside");
    let mut routed = Session::from_model_routed(&changed, &options, 0).unwrap();
    assert_eq!(routed.run(&inputs).unwrap(), want);

    // Weights from files in two folders: every big weight goes to ORT from memory.
    let other = tempfile::tempdir().unwrap();
    let other_path = other.path().join("m.onnx");
    kiln_proto::save_model(&matmul_model(), &other_path, &opts).unwrap();
    let other_loaded = kiln_proto::load_model(&other_path).unwrap();
    let mut mixed = loaded.model.clone();
    mixed.graph.as_mut().unwrap().initializer[1] =
        other_loaded.model.graph.as_ref().unwrap().initializer[1].clone();
    let mut routed = Session::from_model_routed(&mixed, &options, 0).unwrap();
    assert_eq!(routed.memory_files().len(), 2, "the memory route");
    let (_, w) = &routed.memory_files()[0];
    assert!(
        loaded.sources().locate(w).is_some(),
        "the mapped bytes themselves are handed over"
    );
    assert_eq!(routed.run(&inputs).unwrap(), want);
    assert_eq!(routed.inputs(), from_file.inputs());

    // A small model is encoded whole.
    let mut encoded = Session::from_model_with(&loaded.model, &options).unwrap();
    assert!(encoded.memory_files().is_empty());
    assert_eq!(encoded.run(&inputs).unwrap(), want);
    // Results do not depend on Kiln's copy of the model staying around.
    drop(loaded);
    assert_eq!(routed.run(&inputs).unwrap(), want);
}

#[test]
fn declared_inputs_are_what_ort_reports() {
    let elem = tensor_type(DataType::Float, &["K"]);
    let mut with_initializer_input = matmul_model();
    // An initializer listed as an input too: ORT lists it as overridable, not as an input.
    let g = with_initializer_input.graph.as_mut().unwrap();
    g.input
        .push(vi("b", tensor_type(DataType::Float, &["256"])));
    let mut unnamed = identity_model(tensor_type(DataType::Int64, &["batch", "3", "?"]), 17);
    // A dim with neither value nor name.
    let dims = match &mut unnamed.graph.as_mut().unwrap().input[0].r#type {
        Some(TypeProto {
            value: Some(type_proto::Value::TensorType(t)),
            ..
        }) => &mut t.shape.as_mut().unwrap().dim,
        _ => unreachable!(),
    };
    dims[2].value = None;
    for m in [
        add_model(),
        chain_model(false),
        with_initializer_input,
        unnamed,
        identity_model(seq_type(elem.clone()), 17),
        identity_model(optional_type(elem), 18),
        identity_model(tensor_type(DataType::Float16, &["2", "N"]), 17),
    ] {
        let ort = Session::from_model(&m).unwrap().inputs();
        assert_eq!(declared_inputs(&m), ort);
    }
}
