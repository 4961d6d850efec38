//! Shape and type inference on real models: every ONNX backend test model (node, simple,
//! pytorch-converted, pytorch-operator, light) and every model in `models/` is inferred, saved
//! and run in ONNX Runtime; outputs must still match the reference outputs (rtol 1e-3,
//! atol 1e-7) wherever ONNX Runtime ran the original. ONNX Runtime checks the written
//! value_info against its own inference (a wrong element type fails the load; a wrong dim
//! only warns), so every written type is also compared with the tensor ORT computes for it.
//!
//! With `KILN_INFER_DUMP=<dir>`, each model is also written there with its value_info and
//! output types stripped and then inferred by Kiln (`<case>.kiln.onnx`) next to the stripped
//! original (`<case>.stripped.onnx`), for comparison with `onnx.shape_inference`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_backends::compare::{allclose, Tolerance};
use kiln_backends::runtime::{
    capturable_names, expose_outputs, IoInfo, IoKind, Session, SessionOptions,
};
use kiln_backends::tensors::{IoSpec, ValueKind};
use kiln_backends::{NamedValues, Value};
use kiln_passes::infer::InferShapes;
use kiln_passes::ir::Model;
use kiln_passes::pipeline::{Changes, Pass};
use kiln_proto::onnx::ModelProto;
use kiln_tests::{backend_cases, model_cases, read_set, Case, BACKEND_FOLDERS};

/// Every backend test model (all five folders) and every model in `models/`.
fn cases() -> Vec<Case> {
    let mut cases = backend_cases(&BACKEND_FOLDERS);
    cases.extend(model_cases());
    cases
}

/// `folder/name`, for messages.
fn id(case: &Case) -> String {
    format!("{}/{}", case.folder, case.name)
}

/// Inputs and reference outputs of a case's first data set.
fn read_data(
    case: &Case,
    session: &Session,
    ins: &[IoSpec],
    outs: &[IoSpec],
) -> Result<(NamedValues, NamedValues), String> {
    let data = case.data.first().ok_or("no test data")?;
    read_set(data, session, ins, outs)
}

fn spec(io: &IoInfo) -> IoSpec {
    let kind = match io.kind {
        IoKind::Sequence(_) => ValueKind::Sequence,
        IoKind::Optional(_) => ValueKind::Optional,
        IoKind::Map { .. } => ValueKind::Map,
        _ => ValueKind::Tensor,
    };
    IoSpec::new(io.name.clone(), kind)
}

enum Verdict {
    /// Passed; with how many inferred values were checked against their run-time tensors.
    Passed(Changes, Checked),
    NotRunnable(String),
    Failed(String),
}

fn infer(proto: &ModelProto) -> Result<(ModelProto, Changes), String> {
    let mut model = Model::from_proto(proto).map_err(|e| e.to_string())?;
    let changes = InferShapes.run(&mut model).map_err(|e| e.to_string())?;
    model.graph.verify().map_err(|e| e.to_string())?;
    Ok((model.to_proto(), changes))
}

type Dims = Vec<Option<kiln_proto::onnx::tensor_shape_proto::dimension::Value>>;

/// Every main-graph value of `model` with a tensor type and shape: name, element type, dims.
fn typed_values(model: &ModelProto) -> Vec<(String, i32, Dims)> {
    use kiln_proto::onnx::type_proto::Value as T;
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let mut wanted = Vec::new();
    for vi in graph
        .value_info
        .iter()
        .chain(&graph.input)
        .chain(&graph.output)
    {
        if let Some(T::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            if let Some(shape) = &t.shape {
                let dims = shape.dim.iter().map(|d| d.value.clone()).collect();
                wanted.push((vi.name.clone(), t.elem_type, dims));
            }
        }
    }
    wanted
}

/// Inferred values compared with the tensors ONNX Runtime computes for them.
#[derive(Default, Clone, Copy)]
struct Checked {
    values: usize,
    dims: usize,
}

/// Compares every main-graph value_info entry of `inferred` with the tensor ONNX Runtime
/// computes for it: the element type must be the same and every fixed dim the actual size,
/// and each named dim must stand for one size throughout the model.
fn check_actual(inferred: &ModelProto, got: &NamedValues) -> Result<Checked, String> {
    use kiln_proto::onnx::tensor_shape_proto::dimension::Value as D;
    let mut checked = Checked::default();
    let mut bound: BTreeMap<String, usize> = BTreeMap::new();
    for (name, elem, dims) in typed_values(inferred) {
        let Some((_, Value::Tensor(t))) = got.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        let (elem, dims) = (&elem, &dims);
        if t.dtype().onnx() != *elem {
            return Err(format!(
                "'{name}' is {} at run time, inferred type {elem}",
                t.dtype()
            ));
        }
        if t.shape().len() != dims.len() {
            return Err(format!(
                "'{name}' has shape {:?} at run time, inferred rank {}",
                t.shape(),
                dims.len()
            ));
        }
        checked.values += 1;
        for (d, &actual) in dims.iter().zip(t.shape()) {
            match d {
                Some(D::DimValue(n)) => {
                    checked.dims += 1;
                    if *n != actual as i64 {
                        return Err(format!(
                            "'{name}' has shape {:?} at run time, inferred {dims:?}",
                            t.shape()
                        ));
                    }
                }
                Some(D::DimParam(p)) => {
                    checked.dims += 1;
                    if *bound.entry(p.clone()).or_insert(actual) != actual {
                        return Err(format!(
                            "'{name}': dim '{p}' is {actual} here, {} elsewhere",
                            bound[p]
                        ));
                    }
                }
                None => {}
            }
        }
    }
    Ok(checked)
}

/// Runs `proto` on the case's data (`Err` with the reason when ORT cannot load or run it).
///
/// With `expose`, the main graph's typed values are made outputs too (to check them).
fn run(
    case: &Case,
    proto: &ModelProto,
    expose: bool,
) -> Result<(NamedValues, NamedValues, NamedValues), String> {
    let options = SessionOptions::default().with_intra_threads(1);
    let n_outputs = proto.graph.as_ref().map_or(0, |g| g.output.len());
    let exposed;
    let proto = if expose {
        let known: std::collections::HashSet<String> =
            capturable_names(proto).into_iter().collect();
        let names: Vec<String> = typed_values(proto)
            .into_iter()
            .map(|v| v.0)
            .filter(|n| known.contains(n))
            .collect();
        exposed = expose_outputs(proto, &names);
        &exposed
    } else {
        proto
    };
    let mut session =
        Session::from_model_with(proto, &options).map_err(|e| format!("load: {e}"))?;
    let ins: Vec<IoSpec> = session.inputs().iter().map(spec).collect();
    let outs: Vec<IoSpec> = session.outputs().iter().take(n_outputs).map(spec).collect();
    let (inputs, reference) =
        read_data(case, &session, &ins, &outs).map_err(|e| format!("test data: {e}"))?;
    let got = session.run(&inputs).map_err(|e| format!("run: {e}"))?;
    Ok((inputs, reference, got))
}

/// The first output of `got` not close to `expected`.
fn mismatch(expected: &NamedValues, got: &NamedValues) -> Option<String> {
    for (k, (name, e)) in expected.iter().enumerate() {
        let actual = got.iter().find(|(n, _)| n == name).or(got.get(k));
        let Some((_, a)) = actual else {
            return Some(format!("output '{name}' missing"));
        };
        if let Err(m) = allclose(e, a, Tolerance::ONNX_BACKEND) {
            return Some(format!("output '{name}': {m:?}"));
        }
    }
    None
}

/// Infers the case's model and runs it; the original runs only when needed (to tell a
/// model ORT never could run from a failure, and where ORT's kernels differ from the
/// reference outputs, as the baseline).
fn check(case: &Case) -> Verdict {
    let loaded = match kiln_proto::load_model(&case.model) {
        Ok(l) => l,
        Err(e) => return Verdict::NotRunnable(format!("load: {e}")),
    };
    let (inferred, changes) = match infer(&loaded.model) {
        Ok(r) => r,
        Err(e) => return Verdict::Failed(format!("inference: {e}")),
    };
    if let Ok(dir) = std::env::var("KILN_INFER_DUMP") {
        dump(case, &loaded.model, Path::new(&dir));
    }
    let result = run(case, &inferred, true);
    if let Ok((_, reference, got)) = &result {
        if mismatch(reference, got).is_none() {
            return match check_actual(&inferred, got) {
                Ok(checked) => Verdict::Passed(changes, checked),
                Err(e) => Verdict::Failed(e),
            };
        }
    }
    let original = match run(case, &loaded.model, false) {
        Ok(o) => o,
        Err(e) => return Verdict::NotRunnable(e),
    };
    match result {
        Err(e) => Verdict::Failed(format!("the inferred model fails in ONNX Runtime: {e}")),
        Ok((_, _, got)) => match mismatch(&original.2, &got) {
            // ORT's kernels differ from the reference here, on both models alike.
            None => match check_actual(&inferred, &got) {
                Ok(checked) => Verdict::Passed(changes, checked),
                Err(e) => Verdict::Failed(e),
            },
            Some(m) => Verdict::Failed(m),
        },
    }
}

/// Writes the stripped model and Kiln's inference of it, for the Python comparison.
fn dump(case: &Case, proto: &ModelProto, dir: &Path) {
    let mut stripped = proto.clone();
    if let Some(g) = stripped.graph.as_mut() {
        g.value_info.clear();
        for o in &mut g.output {
            o.r#type = None;
        }
    }
    let stem = id(case).replace('/', "__");
    let Ok((inferred, _)) = infer(&stripped) else {
        return;
    };
    let opts = Default::default();
    let _ = kiln_proto::save_model(&stripped, &dir.join(format!("{stem}.stripped.onnx")), &opts);
    let _ = kiln_proto::save_model(&inferred, &dir.join(format!("{stem}.kiln.onnx")), &opts);
}

#[test]
fn inferred_models_still_run_and_match_in_onnx_runtime() {
    let cases = cases();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Verdict)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let v = std::panic::catch_unwind(|| check(case))
                    .unwrap_or_else(|_| Verdict::Failed("panicked".into()));
                results.lock().unwrap().push((i, v));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut per_folder: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut total = Changes::none();
    let mut failures = Vec::new();
    let mut conflicts = Vec::new();
    let mut not_runnable = Vec::new();
    let mut checked = Checked::default();
    for (i, v) in &results {
        let case = &cases[*i];
        let folder = id(case).split('/').next().unwrap_or("").to_string();
        let c = per_folder.entry(folder).or_default();
        match v {
            Verdict::Passed(ch, k) => {
                c[0] += 1;
                checked.values += k.values;
                checked.dims += k.dims;
                total.merge(ch);
                if ch.get("conflicts") > 0 {
                    conflicts.push(format!("{} ({})", id(case), ch.get("conflicts")));
                }
            }
            Verdict::NotRunnable(why) => {
                c[1] += 1;
                let short: String = why.chars().take(90).collect();
                not_runnable.push(format!("{}: {short}", id(case)));
            }
            Verdict::Failed(why) => {
                c[2] += 1;
                failures.push(format!("{}: {why}", id(case)));
            }
        }
    }
    println!("infer-shapes, then ONNX Runtime 1.31.1 (passed / not runnable originally / failed)");
    for (f, c) in &per_folder {
        println!("  {f:<20} {:>5} {:>5} {:>5}", c[0], c[1], c[2]);
    }
    println!("changes over passed models: {total}");
    println!(
        "checked against run-time tensors: {} typed values, {} fixed or named dims",
        checked.values, checked.dims
    );
    println!(
        "models with declared types inference disagrees with: {}",
        conflicts.len()
    );
    for c in &conflicts {
        println!("  conflict: {c}");
    }
    if std::env::var("KILN_INFER_VERBOSE").is_ok() {
        for n in &not_runnable {
            println!("  not runnable: {n}");
        }
    }
    for f in &failures {
        println!("FAILED {f}");
    }
    assert!(failures.is_empty(), "{} models failed", failures.len());
    let passed: usize = per_folder.values().map(|c| c[0]).sum();
    assert!(
        passed > 1000,
        "only {passed} models passed: test data missing?"
    );
}
