//! `upgrade-opset` on real and hand-built models. Every ONNX backend test model and every
//! model in `models/` at opsets 7–16 is upgraded to 17 and to 21, run in ONNX Runtime on its
//! test data, and compared with the reference outputs (rtol 1e-4, atol 1e-5; where ONNX
//! Runtime's result for the original already differs from the reference, with that). The
//! backend data exercises few of the ops whose signature changed, so hand-built old-opset
//! models cover every adapter.

use std::path::{Path, PathBuf};

use kiln_backends::compare::{allclose, Tolerance};
use kiln_backends::runtime::{Session, SessionOptions};
use kiln_backends::NamedValues;
use kiln_passes::ir::Model;
use kiln_passes::opset::UpgradeOpset;
use kiln_passes::pipeline::{Pass, PassError};
use kiln_proto::onnx::ModelProto;
use kiln_proto::SaveOptions;
use kiln_tests::{backend_cases, check_cases, model_cases, Case, TransformError};

const TOL: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

/// The default-domain opset a model imports (`None` if it cannot be read).
fn opset_of(case: &Case) -> Option<i64> {
    let loaded = kiln_proto::load_model(&case.model).ok()?;
    loaded
        .model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

/// Upgrades the case's model to `target`; a refused conversion is a decline, not a failure.
fn upgrade(case: &Case, dir: &Path, target: i64) -> Result<PathBuf, TransformError> {
    let loaded = kiln_proto::load_model(&case.model).map_err(|e| e.to_string())?;
    let mut model = Model::from_proto(&loaded.model).map_err(|e| e.to_string())?;
    match (UpgradeOpset { target }).run(&mut model) {
        Ok(_) => {}
        Err(PassError::Unsupported(why)) => return Err(TransformError::Declined(why)),
        Err(e) => return Err(TransformError::Failed(e.to_string())),
    }
    model.graph.verify().map_err(|e| e.to_string())?;
    if model.opset("") != Some(target) {
        return Err(TransformError::Failed(format!(
            "opset import is {:?}, not {target}",
            model.opset("")
        )));
    }
    let out = dir.join("model.onnx");
    kiln_proto::save_loaded(&loaded, &model.to_proto(), &out, &SaveOptions::default())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn backend_models_upgraded_to_17_and_21_match_onnx_runtime() {
    let mut cases = backend_cases(&["node", "simple", "pytorch-converted", "pytorch-operator"]);
    cases.extend(model_cases());
    cases.retain(|c| opset_of(c).is_some_and(|v| v < 17));
    for target in [17, 21] {
        let report = check_cases(&cases, TOL, &|c: &Case, d: &Path| upgrade(c, d, target));
        println!(
            "{}",
            report.render(&format!("upgrade-opset to {target}, run in ONNX Runtime"))
        );
        assert_eq!(report.failed(), 0, "{} upgrades failed", report.failed());
        // 566 models below opset 17 upgrade and run; far fewer means cases were lost.
        assert!(report.passed() > 500, "only {} passed", report.passed());
    }
}

/// Runs `model` on `inputs` in ONNX Runtime.
fn run(model: &ModelProto, inputs: &NamedValues) -> Result<NamedValues, String> {
    let options = SessionOptions::default().with_intra_threads(1);
    let mut s = Session::from_model_with(model, &options).map_err(|e| format!("load: {e}"))?;
    s.run(inputs).map_err(|e| format!("run: {e}"))
}

/// Compares every output of `got` with `expected`, by name.
fn compare(expected: &NamedValues, got: &NamedValues) -> Result<(), String> {
    for (name, e) in expected {
        let Some((_, actual)) = got.iter().find(|(n, _)| n == name) else {
            return Err(format!("output '{name}' missing"));
        };
        allclose(e, actual, TOL).map_err(|m| format!("output '{name}': {m}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Hand-built old-opset models, one per adapter: the backend models below opset 17 rarely
// use an operator whose signature changed, so these make every adapter meet ONNX Runtime.

mod built {
    use kiln_passes::ir::ValueInfo;
    use kiln_passes::tensor::{DataType, Tensor};
    use kiln_proto::onnx::attribute_proto::AttributeType;
    use kiln_proto::onnx::{
        type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
        TensorProto, TypeProto, ValueInfoProto,
    };

    /// An attribute.
    pub enum A {
        I(i64),
        F(f32),
        S(&'static str),
        Is(Vec<i64>),
        Fs(Vec<f32>),
        G(Box<GraphProto>),
    }

    fn attr(name: &str, a: A) -> AttributeProto {
        let mut p = AttributeProto {
            name: name.to_string(),
            ..AttributeProto::default()
        };
        match a {
            A::I(i) => (p.i, p.r#type) = (Some(i), AttributeType::Int as i32),
            A::F(f) => (p.f, p.r#type) = (Some(f), AttributeType::Float as i32),
            A::S(s) => {
                (p.s, p.r#type) = (
                    Some(s.as_bytes().to_vec().into()),
                    AttributeType::String as i32,
                )
            }
            A::Is(v) => (p.ints, p.r#type) = (v, AttributeType::Ints as i32),
            A::Fs(v) => (p.floats, p.r#type) = (v, AttributeType::Floats as i32),
            A::G(g) => (p.g, p.r#type) = (Some(*g), AttributeType::Graph as i32),
        }
        p
    }

    /// A node.
    pub fn n(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, A)>) -> NodeProto {
        NodeProto {
            op_type: op.to_string(),
            name: format!("{op}_{}", outputs.first().copied().unwrap_or("")),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.into_iter().map(|(k, v)| attr(k, v)).collect(),
            ..NodeProto::default()
        }
    }

    /// A value of element type `ty` and unknown shape.
    pub fn any(name: &str, ty: DataType) -> ValueInfoProto {
        ValueInfoProto {
            name: name.to_string(),
            r#type: Some(TypeProto {
                denotation: String::new(),
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: ty.onnx(),
                    shape: None,
                })),
            }),
            ..ValueInfoProto::default()
        }
    }

    /// A float value of known shape.
    pub fn f(name: &str, dims: &[i64]) -> ValueInfoProto {
        let d: Vec<_> = dims
            .iter()
            .map(|&d| kiln_passes::ir::Dim::Known(d))
            .collect();
        ValueInfo::tensor(name, DataType::Float, &d).to_proto_named(name)
    }

    /// A constant tensor.
    pub fn t<T: kiln_passes::tensor::Element>(
        name: &str,
        dims: &[usize],
        v: Vec<T>,
    ) -> TensorProto {
        Tensor::from_vec(dims.to_vec(), v)
            .expect("tensor")
            .to_proto(name)
    }

    /// A graph.
    pub fn graph(
        nodes: Vec<NodeProto>,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        inits: Vec<TensorProto>,
    ) -> GraphProto {
        GraphProto {
            name: "g".into(),
            node: nodes,
            input: inputs,
            output: outputs,
            initializer: inits,
            ..GraphProto::default()
        }
    }

    /// A model at `opset`.
    pub fn model(opset: i64, g: GraphProto) -> ModelProto {
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            producer_name: "kiln-test".into(),
            graph: Some(g),
            ..ModelProto::default()
        }
    }
}

/// The old-opset models: (name, model).
fn built_cases() -> Vec<(&'static str, ModelProto)> {
    use built::*;
    use kiln_passes::tensor::DataType::{Float, Int64};
    let x4 = || f("x", &[1, 2, 4, 6]);
    let y = |name: &str| any(name, Float);
    let one = |opset, node, input, out: &str| {
        model(opset, graph(vec![node], vec![input], vec![y(out)], vec![]))
    };
    let mut cases = vec![
        (
            "upsample7_nearest",
            one(
                7,
                n(
                    "Upsample",
                    &["x"],
                    &["y"],
                    vec![("scales", A::Fs(vec![1.0, 1.0, 2.0, 3.0]))],
                ),
                x4(),
                "y",
            ),
        ),
        (
            "upsample7_linear",
            one(
                7,
                n(
                    "Upsample",
                    &["x"],
                    &["y"],
                    vec![
                        ("mode", A::S("linear")),
                        ("scales", A::Fs(vec![1.0, 1.0, 2.0, 2.0])),
                    ],
                ),
                x4(),
                "y",
            ),
        ),
        (
            "upsample9_input",
            model(
                9,
                graph(
                    vec![n("Upsample", &["x", "s"], &["y"], vec![])],
                    vec![x4()],
                    vec![y("y")],
                    vec![t("s", &[4], vec![1.0f32, 1.0, 3.0, 2.0])],
                ),
            ),
        ),
        (
            "resize10_down_nearest",
            model(
                10,
                graph(
                    vec![n("Resize", &["x", "s"], &["y"], vec![])],
                    vec![x4()],
                    vec![y("y")],
                    vec![t("s", &[4], vec![1.0f32, 1.0, 0.6, 0.7])],
                ),
            ),
        ),
        (
            "resize10_up_linear",
            model(
                10,
                graph(
                    vec![n(
                        "Resize",
                        &["x", "s"],
                        &["y"],
                        vec![("mode", A::S("linear"))],
                    )],
                    vec![x4()],
                    vec![y("y")],
                    vec![t("s", &[4], vec![1.0f32, 1.0, 2.0, 1.5])],
                ),
            ),
        ),
        (
            "resize11_sizes",
            model(
                11,
                graph(
                    vec![n(
                        "Resize",
                        &["x", "roi", "s", "sz"],
                        &["y"],
                        vec![("mode", A::S("linear"))],
                    )],
                    vec![x4()],
                    vec![y("y")],
                    vec![
                        t::<f32>("roi", &[0], vec![]),
                        t::<f32>("s", &[0], vec![]),
                        t("sz", &[4], vec![1i64, 2, 7, 9]),
                    ],
                ),
            ),
        ),
        (
            "slice1",
            one(
                7,
                n(
                    "Slice",
                    &["x"],
                    &["y"],
                    vec![
                        ("starts", A::Is(vec![1, -5])),
                        ("ends", A::Is(vec![3, 1000])),
                        ("axes", A::Is(vec![2, 3])),
                    ],
                ),
                x4(),
                "y",
            ),
        ),
        (
            "topk1",
            model(
                9,
                graph(
                    vec![n("TopK", &["x"], &["v", "i"], vec![("k", A::I(3))])],
                    vec![x4()],
                    vec![y("v"), any("i", Int64)],
                    vec![],
                ),
            ),
        ),
        (
            "pad2_constant",
            one(
                10,
                n(
                    "Pad",
                    &["x"],
                    &["y"],
                    vec![
                        ("pads", A::Is(vec![0, 0, 1, 2, 0, 1, 2, 0])),
                        ("value", A::F(1.5)),
                    ],
                ),
                x4(),
                "y",
            ),
        ),
        (
            "pad2_reflect",
            one(
                10,
                n(
                    "Pad",
                    &["x"],
                    &["y"],
                    vec![
                        ("mode", A::S("reflect")),
                        ("pads", A::Is(vec![0, 0, 1, 2, 0, 0, 2, 1])),
                    ],
                ),
                x4(),
                "y",
            ),
        ),
        (
            "clip6",
            model(
                7,
                graph(
                    vec![
                        n(
                            "Clip",
                            &["x"],
                            &["a"],
                            vec![("min", A::F(-0.5)), ("max", A::F(0.5))],
                        ),
                        n("Clip", &["a"], &["y"], vec![("max", A::F(0.25))]),
                    ],
                    vec![x4()],
                    vec![y("y")],
                    vec![],
                ),
            ),
        ),
        (
            "dropout7",
            model(
                9,
                graph(
                    vec![
                        n("Dropout", &["x"], &["d"], vec![("ratio", A::F(0.3))]),
                        n("Relu", &["d"], &["y"], vec![]),
                    ],
                    vec![x4()],
                    vec![y("y")],
                    vec![],
                ),
            ),
        ),
        (
            "dropout10_mask_unused",
            model(
                11,
                graph(
                    vec![n(
                        "Dropout",
                        &["x"],
                        &["y", "mask"],
                        vec![("ratio", A::F(0.3))],
                    )],
                    vec![x4()],
                    vec![y("y")],
                    vec![],
                ),
            ),
        ),
        (
            "squeeze_unsqueeze11",
            model(
                11,
                graph(
                    vec![
                        n(
                            "Unsqueeze",
                            &["x"],
                            &["u"],
                            vec![("axes", A::Is(vec![0, 3]))],
                        ),
                        n("Squeeze", &["u"], &["s"], vec![("axes", A::Is(vec![-3]))]),
                        n("Squeeze", &["s"], &["y"], vec![]),
                    ],
                    vec![x4()],
                    vec![y("y")],
                    vec![],
                ),
            ),
        ),
        (
            "split11",
            model(
                11,
                graph(
                    vec![
                        n(
                            "Split",
                            &["x"],
                            &["a", "b"],
                            vec![("axis", A::I(3)), ("split", A::Is(vec![2, 4]))],
                        ),
                        n("Split", &["x"], &["c", "d", "e"], vec![("axis", A::I(-1))]),
                    ],
                    vec![x4()],
                    vec![y("a"), y("b"), y("c"), y("e")],
                    vec![],
                ),
            ),
        ),
        (
            "batchnorm7",
            model(
                7,
                graph(
                    vec![n(
                        "BatchNormalization",
                        &["x", "sc", "b", "m", "v"],
                        &["y"],
                        vec![("spatial", A::I(1)), ("epsilon", A::F(1e-3))],
                    )],
                    vec![x4()],
                    vec![y("y")],
                    vec![
                        t("sc", &[2], vec![1.5f32, 0.5]),
                        t("b", &[2], vec![0.1f32, -0.2]),
                        t("m", &[2], vec![0.3f32, 0.1]),
                        t("v", &[2], vec![2.0f32, 0.5]),
                    ],
                ),
            ),
        ),
        (
            "scatter9",
            model(
                9,
                graph(
                    vec![n(
                        "Scatter",
                        &["x", "i", "u"],
                        &["y"],
                        vec![("axis", A::I(3))],
                    )],
                    vec![x4()],
                    vec![y("y")],
                    vec![
                        t("i", &[1, 2, 4, 1], vec![5i64, 0, 3, 1, 2, 2, 4, 0]),
                        t(
                            "u",
                            &[1, 2, 4, 1],
                            vec![9.0f32, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0],
                        ),
                    ],
                ),
            ),
        ),
        (
            "roialign10",
            model(
                10,
                graph(
                    vec![n(
                        "RoiAlign",
                        &["x", "r", "bi"],
                        &["y"],
                        vec![
                            ("output_height", A::I(2)),
                            ("output_width", A::I(3)),
                            ("sampling_ratio", A::I(2)),
                        ],
                    )],
                    vec![x4()],
                    vec![y("y")],
                    vec![
                        t(
                            "r",
                            &[2, 4],
                            vec![0.0f32, 0.0, 3.0, 2.0, 1.0, 0.5, 5.0, 3.5],
                        ),
                        t("bi", &[2], vec![0i64, 0]),
                    ],
                ),
            ),
        ),
        (
            "gridsample16",
            model(
                16,
                graph(
                    vec![
                        n(
                            "GridSample",
                            &["x", "grid"],
                            &["a"],
                            vec![("mode", A::S("bilinear"))],
                        ),
                        n(
                            "GridSample",
                            &["x", "grid"],
                            &["b"],
                            vec![("mode", A::S("bicubic")), ("align_corners", A::I(1))],
                        ),
                    ],
                    vec![x4()],
                    vec![y("a"), y("b")],
                    vec![t(
                        "grid",
                        &[1, 2, 3, 2],
                        vec![
                            -0.9f32, -0.5, 0.1, 0.3, 0.7, -0.2, 0.5, 0.9, -0.3, 0.0, 0.95, -0.95,
                        ],
                    )],
                ),
            ),
        ),
        (
            "groupnorm18",
            model(
                18,
                graph(
                    vec![n(
                        "GroupNormalization",
                        &["x", "sc", "b"],
                        &["y"],
                        vec![("num_groups", A::I(2))],
                    )],
                    vec![x4()],
                    vec![y("y")],
                    vec![
                        t("sc", &[2], vec![1.5f32, 0.5]),
                        t("b", &[2], vec![0.1f32, -0.2]),
                    ],
                ),
            ),
        ),
        (
            "dft17",
            model(
                17,
                graph(
                    vec![
                        n("Unsqueeze", &["x", "ax"], &["xc"], vec![]),
                        n("DFT", &["xc"], &["y"], vec![("axis", A::I(2))]),
                    ],
                    vec![x4()],
                    vec![y("y")],
                    vec![t("ax", &[1], vec![-1i64])],
                ),
            ),
        ),
    ];
    let reduce_ops = [
        ("ReduceSum", 11),
        ("ReduceMean", 13),
        ("ReduceMax", 13),
        ("ReduceMin", 13),
        ("ReduceProd", 13),
        ("ReduceL1", 13),
        ("ReduceL2", 13),
        ("ReduceLogSumExp", 13),
        ("ReduceSumSquare", 13),
    ];
    for (op, opset) in reduce_ops {
        let m = model(
            opset,
            graph(
                vec![
                    n(op, &["x"], &["a"], vec![("axes", A::Is(vec![1, -1]))]),
                    n(op, &["x"], &["b"], vec![("keepdims", A::I(0))]),
                    n(
                        op,
                        &["x"],
                        &["c"],
                        vec![("axes", A::Is(vec![2])), ("keepdims", A::I(0))],
                    ),
                ],
                vec![x4()],
                vec![y("a"), y("b"), y("c")],
                vec![],
            ),
        );
        cases.push((op, m));
    }
    // ReduceLogSum needs positive data.
    cases.push((
        "ReduceLogSum",
        model(
            13,
            graph(
                vec![
                    n("Abs", &["x"], &["p"], vec![]),
                    n(
                        "ReduceLogSum",
                        &["p"],
                        &["y"],
                        vec![("axes", A::Is(vec![0, 2]))],
                    ),
                ],
                vec![x4()],
                vec![y("y")],
                vec![],
            ),
        ),
    ));
    for (op, axis, name) in [
        ("Softmax", None, "softmax11_default_axis"),
        ("Softmax", Some(2), "softmax11_axis2"),
        ("Softmax", Some(-1), "softmax11_last"),
        ("Softmax", Some(3), "softmax11_last_positive"),
        ("LogSoftmax", Some(-2), "logsoftmax11_axis_neg2"),
        ("Hardmax", Some(0), "hardmax11_axis0"),
    ] {
        let attrs = axis.map(|a| vec![("axis", A::I(a))]).unwrap_or_default();
        cases.push((name, one(11, n(op, &["x"], &["y"], attrs), x4(), "y")));
    }
    // A softmax whose output is both a graph output and read by another node.
    cases.push((
        "softmax1_shared_output",
        model(
            7,
            graph(
                vec![
                    n("Softmax", &["x"], &["s"], vec![]),
                    n("Relu", &["s"], &["y"], vec![]),
                ],
                vec![x4()],
                vec![y("s"), y("y")],
                vec![],
            ),
        ),
    ));
    // Squeeze and Softmax inside If branches, reading the outer x.
    let branch = |name: &str, axis: i64| {
        graph(
            vec![
                n(
                    "Squeeze",
                    &["x"],
                    &[&format!("{name}_sq")],
                    vec![("axes", A::Is(vec![0]))],
                ),
                n(
                    "Softmax",
                    &[&format!("{name}_sq")],
                    &[&format!("{name}_y")],
                    vec![("axis", A::I(axis))],
                ),
            ],
            vec![],
            vec![y(&format!("{name}_y"))],
            vec![],
        )
    };
    cases.push((
        "if11_branches",
        model(
            11,
            graph(
                vec![
                    n("ReduceSum", &["x"], &["tot"], vec![("keepdims", A::I(0))]),
                    n("Constant", &[], &["zero"], vec![]),
                    n("Greater", &["tot", "zero"], &["cond"], vec![]),
                    n(
                        "If",
                        &["cond"],
                        &["y"],
                        vec![
                            ("then_branch", A::G(Box::new(branch("then", 1)))),
                            ("else_branch", A::G(Box::new(branch("else", 2)))),
                        ],
                    ),
                ],
                vec![x4()],
                vec![y("y")],
                vec![],
            ),
        ),
    ));
    // The Constant above needs its value.
    if let Some((_, m)) = cases.last_mut() {
        if let Some(node) = m.graph.as_mut().and_then(|g| g.node.get_mut(1)) {
            node.attribute.push(kiln_proto::onnx::AttributeProto {
                name: "value".into(),
                r#type: kiln_proto::onnx::attribute_proto::AttributeType::Tensor as i32,
                t: Some(t("", &[], vec![0.0f32])),
                ..Default::default()
            });
        }
    }
    cases
}

#[test]
fn hand_built_old_models_upgraded_match_onnx_runtime() {
    use kiln_backends::Value;
    use kiln_passes::tensor::Tensor;
    let n = 2 * 4 * 6;
    let xs: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.37).collect();
    let inputs: NamedValues = vec![(
        "x".to_string(),
        Value::Tensor(Tensor::from_vec(vec![1, 2, 4, 6], xs).expect("x")),
    )];
    let mut report = String::new();
    let mut failures = 0;
    let mut checked = 0;
    for (name, proto) in built_cases() {
        let original = match run(&proto, &inputs) {
            Ok(o) => o,
            Err(e) => panic!("{name}: ONNX Runtime cannot run the original: {e}"),
        };
        let opset = proto.opset_import[0].version;
        for target in [17, 21].into_iter().filter(|&t| t > opset) {
            let mut m = Model::from_proto(&proto).expect("load");
            let verdict = (UpgradeOpset { target })
                .run(&mut m)
                .map_err(|e| format!("pass: {e}"))
                .and_then(|_| m.graph.verify().map_err(|e| format!("verify: {e}")))
                .and_then(|_| run(&m.to_proto(), &inputs))
                .and_then(|got| compare(&original, &got));
            checked += 1;
            if let Err(e) = verdict {
                failures += 1;
                report += &format!("FAILED {name} → {target}: {e}\n");
            }
        }
    }
    eprintln!("hand-built: {checked} upgrades checked, {failures} failed\n{report}");
    assert_eq!(failures, 0, "{report}");
}
