//! `upgrade-opset` on the ONNX backend test models and Kiln's `models/` below opset 17: each is upgraded to 17 and
//! to 21, run in ONNX Runtime on `test_data_set_0`, and compared with the reference outputs
//! (or, where ONNX Runtime's result for the original differs from the reference, with that).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_backends::compare::{allclose, Tolerance};
use kiln_backends::runtime::{IoKind, Session, SessionOptions};
use kiln_backends::tensors::{read_test_data_set, IoSpec, ValueKind};
use kiln_backends::NamedValues;
use kiln_passes::ir::Model;
use kiln_passes::opset::UpgradeOpset;
use kiln_passes::pipeline::{Pass, PassError};
use kiln_proto::onnx::ModelProto;

const FOLDERS: [&str; 4] = ["node", "simple", "pytorch-converted", "pytorch-operator"];
const TARGETS: [i64; 2] = [17, 21];
const TOL: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

/// The backend test data of the installed `onnx` package.
fn test_data() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import onnx,os;print(os.path.dirname(onnx.__file__))"])
        .output()
        .expect("python3 with onnx");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    PathBuf::from(dir).join("backend/test/data")
}

/// What happened to one model at one target.
#[derive(Debug)]
enum Outcome {
    Passed,
    Unsupported(String),
    Failed(String),
}

/// One model: its default opset and, when ONNX Runtime ran the original, the outcome per target.
struct Checked {
    id: String,
    opset: i64,
    original: Result<(), String>,
    outcomes: Vec<(i64, Vec<String>, Outcome)>,
}

fn spec(name: &str, kind: &IoKind) -> IoSpec {
    let kind = match kind {
        IoKind::Sequence(_) => ValueKind::Sequence,
        IoKind::Optional(_) => ValueKind::Optional,
        IoKind::Map { .. } => ValueKind::Map,
        _ => ValueKind::Tensor,
    };
    IoSpec::new(name, kind)
}

/// Runs `model` on `inputs`.
fn run(model: &ModelProto, inputs: &NamedValues) -> Result<NamedValues, String> {
    let options = SessionOptions::default().with_intra_threads(1);
    let mut s = Session::from_model_with(model, &options).map_err(|e| format!("load: {e}"))?;
    s.run(inputs).map_err(|e| format!("run: {e}"))
}

/// Compares `got` with the reference, or with ORT's output for the original where ORT and
/// the reference disagree.
fn compare(reference: &NamedValues, ort: &NamedValues, got: &NamedValues) -> Result<(), String> {
    for (k, (name, expected)) in reference.iter().enumerate() {
        let pick = |outs: &NamedValues| {
            outs.iter()
                .find(|(n, _)| n == name)
                .or_else(|| outs.get(k))
                .map(|(_, v)| v.clone())
        };
        let (Some(o), Some(actual)) = (pick(ort), pick(got)) else {
            return Err(format!("output '{name}' missing"));
        };
        let baseline = if allclose(expected, &o, TOL).is_ok() {
            expected
        } else {
            &o
        };
        allclose(baseline, &actual, TOL).map_err(|m| format!("output '{name}': {m}"))?;
    }
    Ok(())
}

fn check(dir: &Path, id: String) -> Option<Checked> {
    let proto = kiln_proto::load_model(&dir.join("model.onnx")).ok()?.model;
    let model = Model::from_proto(&proto).ok()?;
    let opset = model.opset("")?;
    if opset >= 17 {
        return None;
    }
    let mut c = Checked {
        id,
        opset,
        original: Ok(()),
        outcomes: Vec::new(),
    };
    let options = SessionOptions::default().with_intra_threads(1);
    let session = match Session::from_model_with(&proto, &options) {
        Ok(s) => s,
        Err(e) => {
            c.original = Err(format!("load: {e}"));
            return Some(c);
        }
    };
    let ins: Vec<IoSpec> = session
        .inputs()
        .iter()
        .map(|i| spec(&i.name, &i.kind))
        .collect();
    let outs: Vec<IoSpec> = session
        .outputs()
        .iter()
        .map(|o| spec(&o.name, &o.kind))
        .collect();
    drop(session);
    let data = match read_test_data_set(&dir.join("test_data_set_0"), &ins, &outs) {
        Ok(d) => d,
        Err(e) => {
            c.original = Err(format!("test data: {e}"));
            return Some(c);
        }
    };
    let ort = match run(&proto, &data.0) {
        Ok(o) => o,
        Err(e) => {
            c.original = Err(e);
            return Some(c);
        }
    };
    for target in TARGETS {
        let mut m = model.clone();
        let outcome = match (UpgradeOpset { target }).run(&mut m) {
            Err(PassError::Unsupported(why)) => (Vec::new(), Outcome::Unsupported(why)),
            Err(e) => (Vec::new(), Outcome::Failed(format!("pass: {e}"))),
            Ok(changes) => {
                let adapted: Vec<String> = changes
                    .iter()
                    .filter(|(k, _)| k.contains(" adapted to "))
                    .map(|(k, _)| k.to_string())
                    .collect();
                let result = m
                    .graph
                    .verify()
                    .map_err(|e| format!("verify: {e}"))
                    .and_then(|_| run(&m.to_proto(), &data.0))
                    .and_then(|got| compare(&data.1, &ort, &got));
                match result {
                    Ok(()) => (adapted, Outcome::Passed),
                    Err(e) => (adapted, Outcome::Failed(e)),
                }
            }
        };
        c.outcomes.push((target, outcome.0, outcome.1));
    }
    Some(c)
}

#[test]
fn backend_models_upgraded_to_17_and_21_match_onnx_runtime() {
    let root = test_data();
    let mut dirs: Vec<(PathBuf, String)> = Vec::new();
    let kiln_models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let roots = FOLDERS
        .iter()
        .map(|f| (root.join(f), *f))
        .chain([(kiln_models, "models")]);
    for (dir, folder) in roots {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.join("model.onnx").is_file() {
                let id = format!("{folder}/{}", e.file_name().to_string_lossy());
                dirs.push((p, id));
            }
        }
    }
    dirs.sort();
    assert!(
        dirs.len() > 1000,
        "backend test data not found under {}",
        root.display()
    );

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Checked>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((dir, id)) = dirs.get(i) else { break };
                if let Some(c) = check(dir, id.clone()) {
                    results.lock().expect("lock").push(c);
                }
            });
        }
    });
    let mut results = results.into_inner().expect("lock");
    results.sort_by(|a, b| a.id.cmp(&b.id));

    let below7 = results.iter().filter(|c| c.opset < 7).count();
    let not_runnable = results.iter().filter(|c| c.original.is_err()).count();
    let mut report = format!(
        "{} models below opset 17 ({below7} below opset 7); {not_runnable} not runnable by ONNX Runtime originally\n",
        results.len()
    );
    let mut failures = Vec::new();
    for target in TARGETS {
        let (mut passed, mut upgraded) = (0, 0);
        let mut unsupported: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        let mut failed_by_op: BTreeMap<String, usize> = BTreeMap::new();
        let mut exercised: BTreeMap<&str, usize> = BTreeMap::new();
        for c in results.iter().filter(|c| c.original.is_ok()) {
            for (t, adapted, outcome) in &c.outcomes {
                if *t != target {
                    continue;
                }
                match outcome {
                    Outcome::Passed => {
                        upgraded += 1;
                        passed += 1;
                        for a in adapted {
                            *exercised.entry(a.as_str()).or_default() += 1;
                        }
                    }
                    Outcome::Unsupported(why) => {
                        let short = why.split(": ").last().unwrap_or(why).to_string();
                        unsupported.entry(short).or_default().push(&c.id);
                    }
                    Outcome::Failed(why) => {
                        upgraded += 1;
                        let key = if adapted.is_empty() {
                            "(no adapter)".to_string()
                        } else {
                            adapted.join("+")
                        };
                        *failed_by_op.entry(key).or_default() += 1;
                        failures.push(format!("{} → {target}: {why}", c.id));
                    }
                }
            }
        }
        report += &format!(
            "target {target}: upgraded {upgraded}, passed {passed}, failed {}, unsupported {}\n",
            upgraded - passed,
            unsupported.values().map(Vec::len).sum::<usize>()
        );
        let used: Vec<String> = exercised.iter().map(|(a, n)| format!("{a} ×{n}")).collect();
        report += &format!(
            "  adapters exercised by passing models: {}\n",
            used.join(", ")
        );
        for (op, n) in &failed_by_op {
            report += &format!("  failed {n} × {op}\n");
        }
        for (why, ids) in &unsupported {
            report += &format!("  unsupported {} × {why} (e.g. {})\n", ids.len(), ids[0]);
        }
    }
    for f in &failures {
        report += &format!("FAILED {f}\n");
    }
    eprintln!("{report}");
    assert!(failures.is_empty(), "{report}");
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
            A::I(i) => (p.i, p.r#type) = (i, AttributeType::Int as i32),
            A::F(f) => (p.f, p.r#type) = (f, AttributeType::Float as i32),
            A::S(s) => {
                (p.s, p.r#type) = (s.as_bytes().to_vec().into(), AttributeType::String as i32)
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
                .and_then(|got| compare(&original, &original, &got));
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
