//! Checks a model transformation case by case: the original runs in ONNX Runtime, the
//! transformed model runs in ONNX Runtime, and both are compared with reference outputs.
//!
//! A case whose original ONNX Runtime cannot load or run is "not runnable" (nothing to
//! compare). Where ONNX Runtime's own output for the original deviates from the reference
//! (its kernels differ from the reference implementation), the transformed model is compared
//! with ONNX Runtime's output for the original instead, and the verdict says so.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_backends::compare::{allclose, Tolerance};
use kiln_backends::runtime::{Dim, IoKind, RuntimeError, Session, SessionOptions};
use kiln_backends::tensors::{self, IoSpec, ValueKind};
use kiln_backends::{NamedValues, Value};
use kiln_passes::tensor::Tensor;

/// One model with its test data.
#[derive(Debug, Clone)]
pub struct Case {
    /// Which collection it is from (`node`, `light`, `models`, …).
    pub folder: String,
    /// Its name within the collection.
    pub name: String,
    /// The model file.
    pub model: PathBuf,
    /// Its input/output sets.
    pub data: Vec<CaseData>,
}

/// Where a case's inputs and reference outputs come from.
#[derive(Debug, Clone)]
pub enum CaseData {
    /// A `test_data_set_N` folder of `input_K.pb` / `output_K.pb`.
    Folder(PathBuf),
    /// ONNX's `light` models: inputs are `arange(n).reshape(shape) / n` in float32 (unknown
    /// dims taken as 1), as the ONNX backend runner makes them; the reference is this file.
    LightDummy {
        /// The reference output file.
        output: PathBuf,
    },
}

/// The outcome for one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The transformed model matches the reference outputs.
    Passed,
    /// ONNX Runtime deviates from the reference on the original; the transformed model
    /// matches ONNX Runtime's output for the original.
    PassedAgainstOrt,
    /// ONNX Runtime cannot load or run the original (the reason).
    NotRunnable(String),
    /// Kiln's bridge to ONNX Runtime cannot pass this case's inputs (the reason), e.g. an
    /// empty sequence, which ONNX Runtime's C API cannot build.
    BridgeLimit(String),
    /// The transformation declined the model on purpose (the reason), e.g. an opset it
    /// does not convert from; nothing to compare.
    Declined(String),
    /// The transformation failed, or its result differs (the reason).
    Failed(String),
}

/// Why a transformation produced no model.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformError {
    /// It refuses this model by design (counted apart, not a failure).
    Declined(String),
    /// It broke.
    Failed(String),
}

impl From<String> for TransformError {
    fn from(why: String) -> TransformError {
        TransformError::Failed(why)
    }
}

/// Counts per collection and the reasons behind every non-pass.
#[derive(Debug, Default)]
pub struct Report {
    /// collection → counts of [passed, passed against ORT, not runnable, bridge limit,
    /// declined, failed].
    pub counts: BTreeMap<String, [usize; 6]>,
    /// Every failed case with its reason.
    pub failures: Vec<(String, String)>,
    /// Every case the original runtime could not run, with its reason.
    pub not_runnable: Vec<(String, String)>,
    /// Every case Kiln's runtime bridge could not feed, with its reason.
    pub bridge_limits: Vec<(String, String)>,
    /// Every case the transformation declined, with its reason.
    pub declined: Vec<(String, String)>,
}

impl Report {
    /// Cases that passed either way.
    pub fn passed(&self) -> usize {
        self.counts.values().map(|c| c[0] + c[1]).sum()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// A table of counts, then the not-runnable reasons grouped, then every failure.
    pub fn render(&self, title: &str) -> String {
        let header = [
            "cases",
            "passed",
            "passed(ORT)",
            "not runnable",
            "bridge limit",
            "declined",
            "failed",
        ];
        let row = |name: &str, c: &[usize; 6]| {
            let mut line = format!("{name:<20} {:>6}", c.iter().sum::<usize>());
            for (n, h) in c.iter().zip(&header[1..]) {
                line.push_str(&format!(" {n:>w$}", w = h.len()));
            }
            line + "\n"
        };
        let mut out = format!("{title}\n{:<20} {}\n", "collection", header.join(" "));
        let mut total = [0usize; 6];
        for (folder, c) in &self.counts {
            out.push_str(&row(folder, c));
            for (t, n) in total.iter_mut().zip(c) {
                *t += n;
            }
        }
        out.push_str(&row("total", &total));
        for (title, list) in [
            (
                "not runnable by ONNX Runtime originally",
                &self.not_runnable,
            ),
            (
                "inputs Kiln's runtime bridge cannot pass",
                &self.bridge_limits,
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            let mut reasons: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for (case, why) in list {
                reasons
                    .entry(short_reason(why))
                    .or_default()
                    .push(case.as_str());
            }
            out.push_str(&format!("{title}:\n"));
            for (why, cases) in reasons {
                out.push_str(&format!(
                    "  {:>4} × {why}  (e.g. {})\n",
                    cases.len(),
                    cases[0]
                ));
            }
        }
        for (case, why) in &self.failures {
            out.push_str(&format!("FAILED {case}: {why}\n"));
        }
        out
    }
}

/// The gist of an ONNX Runtime message, for grouping: its first line, without the model's
/// path (which makes every message unique) and cut before node names.
fn short_reason(why: &str) -> String {
    let line = why.lines().next().unwrap_or(why);
    let line = match line.rfind(".onnx") {
        Some(i) => line[i + ".onnx".len()..].trim_start_matches([':', ' ']),
        None => line,
    };
    let cut = line
        .find(" node")
        .or_else(|| line.find(" for "))
        .unwrap_or(line.len());
    line.chars().take(cut.min(140)).collect()
}

/// A transformation under test: reads the case's model and writes the transformed model
/// into the given (empty, temporary) folder, returning its path.
pub type Transform<'a> = dyn Fn(&Case, &Path) -> Result<PathBuf, TransformError> + Sync + 'a;

/// Checks every case on all cores and returns the report.
pub fn check_cases(cases: &[Case], tol: Tolerance, transform: &Transform<'_>) -> Report {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Verdict)>> = Mutex::new(Vec::with_capacity(cases.len()));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else {
                    break;
                };
                // A panic in the code under test fails that case, not the whole run.
                let verdict =
                    std::panic::catch_unwind(AssertUnwindSafe(|| check_case(case, tol, transform)))
                        .unwrap_or_else(|p| {
                            let msg = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Verdict::Failed(format!("panicked: {msg}"))
                        });
                if let Ok(mut r) = results.lock() {
                    r.push((i, verdict));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut report = Report::default();
    for (i, verdict) in results {
        let case = &cases[i];
        let id = format!("{}/{}", case.folder, case.name);
        let slot = match &verdict {
            Verdict::Passed => 0,
            Verdict::PassedAgainstOrt => 1,
            Verdict::NotRunnable(why) => {
                report.not_runnable.push((id.clone(), why.clone()));
                2
            }
            Verdict::BridgeLimit(why) => {
                report.bridge_limits.push((id.clone(), why.clone()));
                3
            }
            Verdict::Declined(why) => {
                report.declined.push((id.clone(), why.clone()));
                4
            }
            Verdict::Failed(why) => {
                report.failures.push((id.clone(), why.clone()));
                5
            }
        };
        report.counts.entry(case.folder.clone()).or_default()[slot] += 1;
    }
    report
}

/// Checks one case.
pub fn check_case(case: &Case, tol: Tolerance, transform: &Transform<'_>) -> Verdict {
    // One thread inside ORT: the harness already runs one case per core.
    let options = SessionOptions::default().with_intra_threads(1);
    let mut original = match Session::from_path_with(&case.model, &options) {
        Ok(s) => s,
        Err(e) => return Verdict::NotRunnable(format!("cannot load: {e}")),
    };
    let in_specs: Vec<IoSpec> = original.inputs().iter().map(|i| i.spec()).collect();
    let out_specs: Vec<IoSpec> = original.outputs().iter().map(|o| o.spec()).collect();
    let mut sets = Vec::new();
    for data in &case.data {
        match read_set(data, &original, &in_specs, &out_specs) {
            Ok(set) => sets.push(set),
            Err(e) => return Verdict::Failed(format!("cannot read test data: {e}")),
        }
    }
    let mut original_outputs = Vec::new();
    for (inputs, _) in &sets {
        match original.run(inputs) {
            Ok(o) => original_outputs.push(o),
            Err(e @ RuntimeError::Unsupported(_)) => return Verdict::BridgeLimit(e.to_string()),
            Err(e) => return Verdict::NotRunnable(format!("cannot run: {e}")),
        }
    }
    drop(original);

    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return Verdict::Failed(format!("no temp dir: {e}")),
    };
    let path = match transform(case, dir.path()) {
        Ok(p) => p,
        Err(TransformError::Declined(why)) => return Verdict::Declined(why),
        Err(TransformError::Failed(why)) => return Verdict::Failed(format!("transform: {why}")),
    };
    let mut transformed = match Session::from_path_with(&path, &options) {
        Ok(s) => s,
        Err(e) => return Verdict::Failed(format!("ONNX Runtime refuses the result: {e}")),
    };
    let mut against_ort = false;
    for (n, ((inputs, reference), ort_out)) in sets.iter().zip(&original_outputs).enumerate() {
        let got = match transformed.run(inputs) {
            Ok(o) => o,
            Err(e) => return Verdict::Failed(format!("set {n}: the result does not run: {e}")),
        };
        for (k, (name, expected)) in reference.iter().enumerate() {
            let pick = |outs: &NamedValues| {
                outs.iter()
                    .find(|(n, _)| n == name)
                    .or_else(|| outs.get(k))
                    .map(|(_, v)| v.clone())
            };
            let (Some(ort), Some(actual)) = (pick(ort_out), pick(&got)) else {
                return Verdict::Failed(format!("set {n}: output '{name}' missing"));
            };
            let baseline = if allclose(expected, &ort, tol).is_ok() {
                expected
            } else {
                against_ort = true;
                &ort
            };
            if let Err(m) = allclose(baseline, &actual, tol) {
                let what = if std::ptr::eq(baseline, expected) {
                    "reference"
                } else {
                    "ONNX Runtime's output for the original"
                };
                return Verdict::Failed(format!("set {n}: output '{name}' vs {what}: {m}"));
            }
        }
    }
    if against_ort {
        Verdict::PassedAgainstOrt
    } else {
        Verdict::Passed
    }
}

/// Inputs and reference outputs of one data set.
pub fn read_set(
    data: &CaseData,
    session: &Session,
    in_specs: &[IoSpec],
    out_specs: &[IoSpec],
) -> Result<(NamedValues, NamedValues), String> {
    match data {
        CaseData::Folder(dir) => {
            tensors::read_test_data_set(dir, in_specs, out_specs).map_err(|e| e.to_string())
        }
        CaseData::LightDummy { output } => {
            let inputs = session
                .inputs()
                .iter()
                .map(|info| Ok((info.name.clone(), light_dummy(&info.kind)?)))
                .collect::<Result<NamedValues, String>>()?;
            let (_, value) =
                tensors::read_pb(output, ValueKind::Tensor).map_err(|e| e.to_string())?;
            let name = out_specs
                .first()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            Ok((inputs, vec![(name, value)]))
        }
    }
}

/// `(np.arange(n).reshape(shape) / n).astype(np.float32)` with unknown dims as 1.
fn light_dummy(kind: &IoKind) -> Result<Value, String> {
    let IoKind::Tensor { dims, .. } = kind else {
        return Err(format!("light model input is {kind}, not a tensor"));
    };
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            _ => 1,
        })
        .collect();
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (i as f64 / n as f64) as f32).collect();
    Tensor::from_vec(shape, values)
        .map(Value::Tensor)
        .map_err(|e| e.to_string())
}
