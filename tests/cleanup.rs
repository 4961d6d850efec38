//! The cleanup passes on real models: run to a fixed point, save, and check in ONNX Runtime
//! that every model computes what it did before, with the same interface.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_backends::compare::{allclose, Tolerance};
use kiln_backends::runtime::{Session, SessionOptions};
use kiln_backends::tensors::{read_test_data_set, IoSpec, ValueKind};
use kiln_backends::NamedValues;
use kiln_passes::cleanup::cleanup_passes;
use kiln_passes::ir::Model;
use kiln_passes::pipeline::{Changes, Pipeline};
use kiln_proto::onnx::{type_proto, ModelProto, ValueInfoProto};

const TOL: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

/// Operators whose outputs differ from run to run: such models are not compared.
const RANDOM: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

/// The ONNX backend test data of the installed `onnx` package.
fn onnx_test_data() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import onnx,os;print(os.path.dirname(onnx.__file__))"])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()).join("backend/test/data");
    dir.is_dir().then_some(dir)
}

/// Every folder holding a `model.onnx` under the backend test data and `models/`.
fn model_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(data) = onnx_test_data() {
        for sub in ["node", "simple", "pytorch-converted", "pytorch-operator"] {
            roots.push(data.join(sub));
        }
    }
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    let mut dirs = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("model.onnx").is_file())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    dirs
}

fn kind(v: &ValueInfoProto) -> ValueKind {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::SequenceType(_)) => ValueKind::Sequence,
        Some(type_proto::Value::OptionalType(_)) => ValueKind::Optional,
        Some(type_proto::Value::MapType(_)) => ValueKind::Map,
        _ => ValueKind::Tensor,
    }
}

/// (inputs a caller must feed, outputs), as the test data files see them.
fn io_specs(p: &ModelProto) -> (Vec<IoSpec>, Vec<IoSpec>) {
    let g = p.graph.clone().unwrap_or_default();
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let ins = g
        .input
        .iter()
        .filter(|i| !inits.contains(&i.name.as_str()))
        .map(|i| IoSpec::new(i.name.clone(), kind(i)))
        .collect();
    let outs = g
        .output
        .iter()
        .map(|o| IoSpec::new(o.name.clone(), kind(o)))
        .collect();
    (ins, outs)
}

fn names(v: &[ValueInfoProto]) -> Vec<String> {
    v.iter().map(|x| x.name.clone()).collect()
}

fn run_ort(p: &ModelProto, inputs: &NamedValues) -> Result<NamedValues, String> {
    let bytes = kiln_proto::encode_model(p).map_err(|e| e.to_string())?;
    let mut s = Session::from_bytes_with(&bytes, &SessionOptions::as_written())
        .map_err(|e| e.to_string())?;
    s.run(inputs).map_err(|e| e.to_string())
}

/// Compares `actual` with `expected` output by output; the first difference, if any.
fn differ(expected: &NamedValues, actual: &NamedValues) -> Option<String> {
    for (name, e) in expected {
        let Some((_, a)) = actual.iter().find(|(n, _)| n == name) else {
            return Some(format!("output '{name}' missing"));
        };
        if let Err(m) = allclose(e, a, TOL) {
            return Some(format!("output '{name}': {m:?}"));
        }
    }
    None
}

#[derive(Default)]
struct Tally {
    models: usize,
    unloadable: usize,
    changed: usize,
    compared: usize,
    ort_cannot_run: usize,
    random: usize,
    no_data: usize,
    ops_before: usize,
    ops_after: usize,
    by_pass: BTreeMap<&'static str, Changes>,
    failures: Vec<String>,
}

/// Checks the model at `path` against the test data set in `dir`.
fn check(path: &Path, dir: &Path, t: &mut Tally) {
    let Ok(loaded) = kiln_proto::load_model(path) else {
        t.unloadable += 1;
        return;
    };
    let original = loaded.model;
    let Ok(mut model) = Model::from_proto(&original) else {
        t.unloadable += 1;
        return;
    };
    t.models += 1;
    let before = model.graph.stats().nodes;
    let records = match Pipeline::new()
        .verify_each(true)
        .until_fixed_point(cleanup_passes())
        .run(&mut model)
    {
        Ok(r) => r,
        Err(e) => {
            t.failures.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    let after = model.graph.stats().nodes;
    t.ops_before += before;
    t.ops_after += after;
    if records.iter().all(|r| r.changes.is_empty()) {
        return;
    }
    t.changed += 1;
    for r in &records {
        t.by_pass.entry(r.pass).or_default().merge(&r.changes);
    }
    let optimized = model.to_proto();
    let (og, ng) = (
        original.graph.clone().unwrap_or_default(),
        optimized.graph.clone().unwrap_or_default(),
    );
    if names(&og.input) != names(&ng.input) || names(&og.output) != names(&ng.output) {
        t.failures
            .push(format!("{}: interface names changed", dir.display()));
        return;
    }
    let random = og.node.iter().any(|n| RANDOM.contains(&n.op_type.as_str()));
    if random {
        t.random += 1;
        return;
    }
    let (ins, outs) = io_specs(&original);
    let Ok((inputs, reference)) = read_test_data_set(&dir.join("test_data_set_0"), &ins, &outs)
    else {
        t.no_data += 1;
        return;
    };
    let Ok(orig_out) = run_ort(&original, &inputs) else {
        t.ort_cannot_run += 1;
        return;
    };
    t.compared += 1;
    let new_out = match run_ort(&optimized, &inputs) {
        Ok(o) => o,
        Err(e) => {
            t.failures.push(format!(
                "{}: optimized model fails in ORT: {e}",
                dir.display()
            ));
            return;
        }
    };
    // Close to the reference outputs, or (where ORT's own result for the original is off the
    // reference, as for some fp16 models) close to what ORT computed for the original.
    let off_both =
        differ(&reference, &new_out).and_then(|d| differ(&orig_out, &new_out).map(|_| d));
    if let Some(d) = off_both {
        t.failures.push(format!("{}: {d}", dir.display()));
        // For debugging: KILN_CLEANUP_DUMP=folder keeps the optimized models that differ.
        if let Some(out) = std::env::var_os("KILN_CLEANUP_DUMP") {
            let name = dir.file_name().unwrap_or_default();
            let target = Path::new(&out).join(name).with_extension("onnx");
            let _ = kiln_proto::encode_model(&optimized).map(|b| std::fs::write(target, b));
        }
    }
}

/// Runs every model, as given or as `models` maps it (`None`: skipped), and prints the tally.
fn check_all(label: &str, models: impl Fn(usize, &Path) -> Option<PathBuf>) {
    let dirs = model_dirs();
    let mut t = Tally::default();
    for (i, dir) in dirs.iter().enumerate() {
        if let Some(path) = models(i, dir) {
            check(&path, dir, &mut t);
        }
    }
    println!(
        "{label}: {} models ({} unloadable), {} changed; operators {} -> {}",
        t.models, t.unloadable, t.changed, t.ops_before, t.ops_after
    );
    println!(
        "  compared in ORT: {} (skipped: {} random, {} ORT cannot run original, {} no data)",
        t.compared, t.random, t.ort_cannot_run, t.no_data
    );
    for (pass, c) in &t.by_pass {
        println!("  {pass}: {c}");
    }
    for f in &t.failures {
        println!("FAIL {f}");
    }
    assert!(t.models > 0, "no models found");
    assert!(t.failures.is_empty(), "{} failures", t.failures.len());
}

#[test]
fn cleanup_keeps_outputs_of_real_models() {
    check_all("cleanup", |_, dir| Some(dir.join("model.onnx")));
}

/// Models as given carry few shapes; with `onnx.shape_inference`'s value_info the rewrites
/// that need shapes and types (no-op Reshape, Slice, Cast, …) get their chance.
#[test]
fn cleanup_keeps_outputs_of_shape_inferred_models() {
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    let list: Vec<String> = model_dirs()
        .iter()
        .map(|d| d.join("model.onnx").display().to_string())
        .collect();
    let script = "import onnx,sys\n\
        from onnx import shape_inference\n\
        out=sys.argv[1]\n\
        for i,p in enumerate(sys.stdin.read().splitlines()):\n\
        \x20 try:\n\
        \x20   onnx.save(shape_inference.infer_shapes(onnx.load(p)), f'{out}/{i}.onnx')\n\
        \x20 except Exception:\n\
        \x20   pass\n";
    let child = Command::new("python3")
        .args(["-c", script])
        .arg(tmp.path())
        .stdin(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(list.join("\n").as_bytes());
    }
    if !child.wait().is_ok_and(|s| s.success()) {
        println!("shape inference unavailable; skipped");
        return;
    }
    check_all("cleanup with inferred shapes", |i, _| {
        let p = tmp.path().join(format!("{i}.onnx"));
        p.is_file().then_some(p)
    });
}

/// The `light` zoo models have no test data: the passes must only leave them valid.
#[test]
fn cleanup_leaves_light_models_valid() {
    let Some(data) = onnx_test_data() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(data.join("light")) else {
        return;
    };
    let mut n = 0;
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let proto = kiln_proto::load_model(&path).expect("loads").model;
        let mut model = Model::from_proto(&proto).expect("converts");
        Pipeline::new()
            .verify_each(true)
            .until_fixed_point(cleanup_passes())
            .run(&mut model)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let back = model.to_proto();
        let g = back.graph.unwrap_or_default();
        let og = proto.graph.unwrap_or_default();
        assert_eq!(names(&g.input), names(&og.input), "{}", path.display());
        assert_eq!(names(&g.output), names(&og.output), "{}", path.display());
        n += 1;
    }
    println!("light: {n} models cleaned and valid");
}
