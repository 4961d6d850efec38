//! Calibration throughput and memory.
//!
//! `cargo bench -p kiln-backends --bench calibrate` calibrates every float tensor of
//! `bert_tiny_op17` and `mobilenetv2_tiny` on 256 seeded synthetic samples and prints samples/s
//! (collection, and choosing the ranges by each method), then measures the peak RSS of a fresh
//! process calibrating 64 and 1024 samples.
//!
//! More modes:
//! - `calibrate rss MODEL N`: calibrates N synthetic samples and prints `peak_rss_bytes=…`.
//! - `calibrate ranges MODEL DATA DTYPE SYMMETRIC OUT.json`: calibrates on DATA (a path) and
//!   writes `{method: {tensor: [min, max]}}` for minmax, percentile (99.999), entropy and mse
//!   (used by `bench/calibrate_accuracy.py`).
//! - `calibrate collect MODEL N BINS`: times one collection (for profiling).
//! - `calibrate fold`: nanoseconds per value of folding one tensor's values into statistics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln_backends::calibrate::{
    collect, open_samples_with, CalibrationData, CalibrationOptions, Method, Statistics,
};
use kiln_backends::runtime::{peak_rss_bytes, IoInfo, Session};
use kiln_backends::validate::SyntheticSpec;
use kiln_passes::infer::InferShapes;
use kiln_passes::ir::Model;
use kiln_passes::pipeline::Pass;
use kiln_passes::quant::{QuantScheme, QuantType};
use kiln_proto::onnx::ModelProto;

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Fallible<()> {
    // `cargo bench` passes `--bench`; other flags are libtest's and mean nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["rss", model, n] => rss(model, n.parse()?),
        ["ranges", model, data, dtype, symmetric, out] => ranges(
            model,
            Path::new(data),
            dtype.parse()?,
            symmetric.parse()?,
            Path::new(out),
        ),
        ["fold"] => fold(),
        ["collect", model, n, bins] => {
            let model = load(model)?;
            let tensors = float_tensors(&model)?;
            let options = CalibrationOptions {
                histogram_bins: bins.parse()?,
                ..CalibrationOptions::default()
            };
            let data = CalibrationData::Synthetic {
                count: n.parse()?,
                seed: 0,
            };
            let start = Instant::now();
            calibrate_with(&model, &tensors, data, &options)?;
            println!("{:.2} s", start.elapsed().as_secs_f64());
            Ok(())
        }
        [] => bench(),
        other => Err(format!("unknown arguments {other:?}").into()),
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// A model by name under `models/`, or a path.
fn load(model: &str) -> Fallible<ModelProto> {
    let named = repo().join("models").join(model).join("model.onnx");
    let path = if named.is_file() {
        named
    } else {
        PathBuf::from(model)
    };
    Ok(kiln_proto::load_model(&path)?.model)
}

/// Every float32 tensor the main graph computes (Constant outputs too: ONNX Runtime's quantizer
/// wants a range for a constant that feeds an operator it quantizes), and its float32 inputs.
fn float_tensors(model: &ModelProto) -> Fallible<Vec<String>> {
    let mut ir = Model::from_proto(model)?;
    InferShapes.run(&mut ir)?;
    let typed = ir.to_proto();
    let graph = typed.graph.as_ref().ok_or("no graph")?;
    let original = model.graph.as_ref().ok_or("no graph")?;
    // Constant nodes are typed by their value, not by inference.
    let float_constants: Vec<&str> = original
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .filter(|n| {
            n.attribute.iter().any(|a| {
                a.name == "value_float"
                    || a.name == "value_floats"
                    || a.t.as_ref().is_some_and(|t| t.data_type == 1)
            })
        })
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let float = |name: &str| {
        float_constants.contains(&name)
            || graph
                .value_info
                .iter()
                .chain(&graph.output)
                .chain(&graph.input)
                .any(|v| {
                    v.name == name
                        && matches!(
                            v.r#type.as_ref().and_then(|t| t.value.as_ref()),
                            Some(kiln_proto::onnx::type_proto::Value::TensorType(t)) if t.elem_type == 1
                        )
                })
    };
    let initializers: Vec<&str> = original
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let inputs = original
        .input
        .iter()
        .map(|i| &i.name)
        .filter(|n| !initializers.contains(&n.as_str()));
    let outputs = original.node.iter().flat_map(|n| n.output.iter());
    Ok(inputs
        .chain(outputs)
        .filter(|n| !n.is_empty() && float(n))
        .cloned()
        .collect())
}

/// Synthetic inputs that the models accept: two token types, a 16-token sequence.
fn spec() -> SyntheticSpec {
    let mut spec = SyntheticSpec::default();
    spec.dims.insert("sequence".into(), 16);
    spec.int_high.insert("token_type_ids".into(), 2);
    spec.int_high.insert("attention_mask".into(), 2);
    spec.default_int_high = 500;
    spec
}

fn inputs(model: &ModelProto) -> Fallible<Vec<IoInfo>> {
    Ok(Session::from_model(model)?.inputs())
}

fn calibrate(
    model: &ModelProto,
    tensors: &[String],
    data: CalibrationData,
) -> Fallible<Statistics> {
    calibrate_with(model, tensors, data, &CalibrationOptions::default())
}

fn calibrate_with(
    model: &ModelProto,
    tensors: &[String],
    data: CalibrationData,
    options: &CalibrationOptions,
) -> Fallible<Statistics> {
    let samples = open_samples_with(&data, &inputs(model)?, &spec())?;
    Ok(collect(model, tensors, samples, options, &mut |_| {})?)
}

fn bench() -> Fallible<()> {
    let n = 256;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "calibration of every float tensor, {n} synthetic samples, default options ({cores} workers)"
    );
    for name in ["bert_tiny_op17", "mobilenetv2_tiny"] {
        let model = load(name)?;
        let tensors = float_tensors(&model)?;
        let data = CalibrationData::Synthetic { count: n, seed: 0 };
        let minmax_only = CalibrationOptions {
            histogram_bins: 0,
            ..CalibrationOptions::default()
        };
        // Warm-up: ONNX Runtime's environment and first session.
        calibrate(
            &model,
            &tensors,
            CalibrationData::Synthetic { count: 4, seed: 1 },
        )?;
        let start = Instant::now();
        calibrate_with(&model, &tensors, data.clone(), &minmax_only)?;
        let minmax_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let stats = calibrate(&model, &tensors, data)?;
        let collect_s = start.elapsed().as_secs_f64();
        println!(
            "{name}: {} tensors; with histograms: {collect_s:.2} s = {:.1} samples/s \
             (statistics {} KiB); MinMax only: {minmax_s:.2} s = {:.1} samples/s",
            tensors.len(),
            n as f64 / collect_s,
            stats.byte_size() / 1024,
            n as f64 / minmax_s,
        );
        let file = std::env::temp_dir().join(format!("kiln-bench-{}.json", std::process::id()));
        let start = Instant::now();
        stats.save(&file)?;
        let save_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        Statistics::load(&file)?;
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let size = std::fs::metadata(&file)?.len();
        std::fs::remove_file(&file)?;
        println!(
            "  statistics file: {} KiB, saved in {save_ms:.0} ms, loaded in {load_ms:.0} ms",
            size / 1024
        );
        let scheme = |_: &str| QuantScheme::new(QuantType::Uint8, false);
        for method in [
            Method::MinMax,
            Method::Percentile(99.999),
            Method::Entropy,
            Method::Mse,
        ] {
            let start = Instant::now();
            let ranges = stats.ranges(method, &scheme);
            println!(
                "  ranges by {method:?}: {:.1} ms for {} tensors",
                start.elapsed().as_secs_f64() * 1e3,
                ranges.len()
            );
        }
    }
    println!("peak RSS of a process calibrating N samples (synthetic):");
    let exe = std::env::current_exe()?;
    for name in ["bert_tiny_op17", "mobilenetv2_tiny"] {
        for n in [0, 64, 1024] {
            let out = Command::new(&exe)
                .args(["rss", name, &n.to_string()])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let rss = text
                .lines()
                .find_map(|l| l.strip_prefix("peak_rss_bytes="))
                .ok_or_else(|| {
                    format!(
                        "no RSS from the child: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            let mib = rss.trim().parse::<f64>()? / (1024.0 * 1024.0);
            println!("  {name}: N = {n:>4}: {mib:.1} MiB");
        }
    }
    Ok(())
}

fn rss(model: &str, n: usize) -> Fallible<()> {
    let model = load(model)?;
    let tensors = float_tensors(&model)?;
    if n > 0 {
        calibrate(
            &model,
            &tensors,
            CalibrationData::Synthetic { count: n, seed: 0 },
        )?;
    } else {
        // The baseline: the model loaded in ONNX Runtime with the tensors exposed.
        let exposed = kiln_backends::runtime::expose_outputs(&model, &tensors);
        drop(Session::from_model(&exposed)?);
    }
    println!(
        "peak_rss_bytes={}",
        peak_rss_bytes().ok_or("no peak RSS on this system")?
    );
    Ok(())
}

fn ranges(model: &str, data: &Path, dtype: QuantType, symmetric: bool, out: &Path) -> Fallible<()> {
    let model = load(model)?;
    let tensors = float_tensors(&model)?;
    let start = Instant::now();
    let stats = calibrate(&model, &tensors, CalibrationData::Path(data.to_path_buf()))?;
    let collect_s = start.elapsed().as_secs_f64();
    let scheme = |_: &str| QuantScheme::new(dtype, symmetric);
    let mut all: BTreeMap<&str, BTreeMap<String, [f32; 2]>> = BTreeMap::new();
    for (key, method) in [
        ("minmax", Method::MinMax),
        ("percentile", Method::Percentile(99.999)),
        ("entropy", Method::Entropy),
        ("mse", Method::Mse),
    ] {
        let ranges = stats.ranges(method, &scheme);
        all.insert(
            key,
            ranges
                .iter()
                .map(|(n, r)| (n.to_string(), [r.min, r.max]))
                .collect(),
        );
    }
    std::fs::write(out, serde_json::to_vec(&all)?)?;
    eprintln!(
        "{} samples, {} tensors, collected in {collect_s:.2} s",
        stats.samples(),
        tensors.len()
    );
    Ok(())
}

fn fold() -> Fallible<()> {
    let mut rng = kiln_backends::validate::Rng::new(1);
    let values: Vec<f32> = (0..1_500_000)
        .map(|_| (rng.next_unit() - 0.3).max(0.0) * 6.0)
        .collect();
    let time = |what: &str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..20 {
            f();
        }
        let ns = start.elapsed().as_secs_f64() * 1e9 / (20.0 * values.len() as f64);
        println!("{what}: {ns:.2} ns/value");
    };
    let mut stats = Statistics::new(&["t".to_string()], 4096, None)?;
    time("fold", &mut || stats.add_values("t", &values).unwrap_or(()));
    let mut h = kiln_backends::calibrate::Histogram::new(4096)?;
    time("histogram", &mut || h.add(&values, 6.0));
    let mut m = 0.0f32;
    time("sum", &mut || m += values.iter().sum::<f32>());
    println!("{m}");
    Ok(())
}
