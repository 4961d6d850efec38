//! Calibration end to end on `models/`: synthetic and real samples run through ONNX Runtime
//! give sane ranges by every method (min ≤ max, ReLU outputs from 0, percentile inside
//! MinMax), MinMax equals the values captured directly, shards merge into exactly one run,
//! statistics survive a save/load, and their size does not depend on the number of samples.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kiln_backends::calibrate::{
    collect, open_samples, open_samples_with, saturation, CalibrationData, CalibrationError,
    CalibrationOptions, Method, Progress, Samples, Statistics,
};
use kiln_backends::runtime::{capture, IoInfo, Session, SessionOptions};
use kiln_backends::tensors::{list_samples, read_values, write_values, IoSpec};
use kiln_backends::validate::SyntheticSpec;
use kiln_backends::{NamedValues, Value};
use kiln_passes::infer::InferShapes;
use kiln_passes::ir::Model;
use kiln_passes::pipeline::Pass;
use kiln_passes::quant::{QuantScheme, QuantType, Range};
use kiln_passes::tensor::{DataType, Tensor};
use kiln_proto::onnx::ModelProto;
use kiln_tests::repo_root;

const METHODS: [Method; 4] = [
    Method::MinMax,
    Method::Percentile(99.9),
    Method::Entropy,
    Method::Mse,
];

fn schemes() -> [QuantScheme; 3] {
    [
        QuantScheme::new(QuantType::Uint8, false),
        QuantScheme::new(QuantType::Int8, true),
        QuantScheme::new(QuantType::Uint16, false),
    ]
}

fn model_dir(name: &str) -> PathBuf {
    repo_root().join("models").join(name)
}

fn load(name: &str) -> ModelProto {
    let path = model_dir(name).join("model.onnx");
    kiln_proto::load_model(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .model
}

fn inputs(model: &ModelProto) -> Vec<IoInfo> {
    Session::from_model(model)
        .expect("ONNX Runtime loads the model")
        .inputs()
}

/// The float tensors the main graph computes (node outputs typed float32 by inference),
/// with the op type of the node producing each.
fn float_tensors(model: &ModelProto) -> Vec<(String, String)> {
    let mut ir = Model::from_proto(model).expect("model converts to the IR");
    InferShapes.run(&mut ir).expect("shape inference");
    let typed = ir.to_proto();
    let graph = typed.graph.as_ref().expect("a graph");
    let types: HashMap<&str, i32> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .filter_map(|v| match v.r#type.as_ref()?.value.as_ref()? {
            kiln_proto::onnx::type_proto::Value::TensorType(t) => {
                Some((v.name.as_str(), t.elem_type))
            }
            _ => None,
        })
        .collect();
    let tensors: Vec<(String, String)> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o, n)))
        .filter(|(o, n)| {
            !o.is_empty()
                && n.op_type != "Constant"
                && types.get(o.as_str()) == Some(&DataType::Float.onnx())
        })
        .map(|(o, n)| (o.clone(), n.op_type.clone()))
        .collect();
    assert!(
        tensors.len() > 5,
        "too few float tensors found: {tensors:?}"
    );
    tensors
}

fn names(tensors: &[(String, String)]) -> Vec<String> {
    tensors.iter().map(|(n, _)| n.clone()).collect()
}

/// BERT needs bounded integer inputs (two token types) and a real sequence length.
fn bert_spec() -> SyntheticSpec {
    let mut spec = SyntheticSpec::default();
    spec.dims.insert("sequence".into(), 16);
    spec.int_high.insert("token_type_ids".into(), 2);
    spec.int_high.insert("attention_mask".into(), 2);
    spec.default_int_high = 500;
    spec
}

fn synthetic(model: &ModelProto, count: usize, seed: u64, spec: &SyntheticSpec) -> Samples {
    open_samples_with(
        &CalibrationData::Synthetic { count, seed },
        &inputs(model),
        spec,
    )
    .expect("synthetic samples")
}

fn run(model: &ModelProto, tensors: &[String], samples: Samples) -> Statistics {
    let mut seen = Vec::new();
    let total = samples.len();
    let stats = collect(
        model,
        tensors,
        samples,
        &CalibrationOptions::default(),
        &mut |p: Progress| seen.push(p.done),
    )
    .unwrap_or_else(|e| panic!("calibration failed: {e}"));
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "progress after every sample"
    );
    assert_eq!(stats.samples(), total as u64);
    stats
}

/// Every method's range is ordered, inside the observed range, from 0 for ReLU outputs, and finite.
fn assert_sane(stats: &Statistics, tensors: &[(String, String)]) {
    for scheme in schemes() {
        assert_eq!(
            stats.ranges(Method::MinMax, &|_| scheme).len(),
            tensors.len()
        );
        for method in METHODS {
            let ranges = stats.ranges(method, &|_| scheme);
            for (name, op) in tensors {
                let r = ranges
                    .get(name)
                    .unwrap_or_else(|| panic!("no range for {name}"));
                let (lo, hi) = stats.tensor(name).unwrap().min_max().unwrap();
                let m = Range::new(lo, hi);
                let at = format!("{name} ({op}) by {method:?} for {scheme:?}: {r:?}, minmax {m:?}");
                assert!(
                    r.min.is_finite() && r.max.is_finite() && r.min <= r.max,
                    "{at}"
                );
                assert!(r.min >= m.min && r.max <= m.max, "outside minmax: {at}");
                if op == "Relu" {
                    assert_eq!(r.min, 0.0, "ReLU output not from 0: {at}");
                    assert!(r.max > 0.0, "{at}");
                }
                if op == "Softmax" {
                    assert!(r.min >= 0.0 && r.max <= 1.0, "{at}");
                }
            }
        }
    }
}

#[test]
fn tiny_cnn_synthetic_ranges_are_sane() {
    let model = load("tiny_cnn");
    let tensors = float_tensors(&model);
    assert!(tensors.iter().any(|(_, op)| op == "Relu"), "{tensors:?}");
    let samples = synthetic(&model, 8, 1, &SyntheticSpec::default());
    let stats = run(&model, &names(&tensors), samples);
    assert_sane(&stats, &tensors);
}

#[test]
fn bert_synthetic_ranges_are_sane() {
    let model = load("bert_tiny_op17");
    let tensors = float_tensors(&model);
    assert!(tensors.iter().any(|(_, op)| op == "Softmax"), "{tensors:?}");
    let stats = run(
        &model,
        &names(&tensors),
        synthetic(&model, 6, 2, &bert_spec()),
    );
    assert_sane(&stats, &tensors);
    // Percentile clips something somewhere in a transformer's long-tailed activations.
    let scheme = |_: &str| QuantScheme::new(QuantType::Uint8, false);
    let minmax = stats.ranges(Method::MinMax, &scheme);
    let clipped = stats
        .ranges(Method::Percentile(99.0), &scheme)
        .iter()
        .filter(|(n, r)| *r != minmax.get(n).unwrap())
        .count();
    assert!(clipped > 0);
}

/// MinMax over a real sample equals the min and max of the values ONNX Runtime computes.
#[test]
fn real_folders_give_the_captured_extremes() {
    for name in ["tiny_cnn", "bert_tiny_op17"] {
        let model = load(name);
        let tensors = float_tensors(&model);
        let data = CalibrationData::Path(model_dir(name));
        let samples = open_samples(&data, &inputs(&model)).unwrap();
        assert_eq!(samples.len(), 1, "{name}: one test_data_set_0");
        let stats = run(&model, &names(&tensors), samples);
        assert_sane(&stats, &tensors);

        let specs: Vec<IoSpec> = inputs(&model).iter().map(IoInfo::spec).collect();
        let set = &list_samples(&model_dir(name)).unwrap()[0];
        let feeds = read_values(set, &specs).unwrap();
        let captured = capture(
            &model,
            &names(&tensors),
            &feeds,
            &SessionOptions::as_written(),
        )
        .expect("capture");
        for (tensor, value) in captured {
            let values = value.as_tensor().unwrap().to_vec::<f32>().unwrap();
            let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let t = stats.tensor(&tensor).unwrap();
            assert_eq!(t.min_max(), Some((lo, hi)), "{name}: {tensor}");
            assert_eq!(t.count(), values.len() as u64, "{name}: {tensor}");
        }
    }
}

/// Writes `count` synthetic samples of `model` as `test_data_set_*` folders.
fn write_sets(dir: &Path, model: &ModelProto, count: usize, spec: &SyntheticSpec) {
    let mut samples = synthetic(model, count, 7, spec);
    let mut k = 0;
    while let Some(s) = samples.next_sample() {
        let set = dir.join(format!("test_data_set_{k}"));
        write_values(&set, &s.unwrap().values).unwrap();
        k += 1;
    }
}

fn assert_same_ranges(a: &Statistics, b: &Statistics, what: &str) {
    for scheme in &schemes()[..2] {
        let scheme = *scheme;
        for method in METHODS {
            assert_eq!(
                a.ranges(method, &|_| scheme),
                b.ranges(method, &|_| scheme),
                "{what}: {method:?} for {scheme:?}"
            );
        }
    }
}

#[test]
fn shards_merge_into_one_run() {
    // BERT from test_data_set folders, tiny_cnn from one stacked .npy.
    let dir = tempfile::tempdir().unwrap();
    let bert = load("bert_tiny_op17");
    let bert_tensors = names(&float_tensors(&bert));
    write_sets(dir.path(), &bert, 6, &bert_spec());
    let open = || open_samples(&CalibrationData::Path(dir.path().into()), &inputs(&bert)).unwrap();
    let whole = run(&bert, &bert_tensors, open());
    let mut merged = run(&bert, &bert_tensors, open().slice(0..2));
    merged
        .merge(&run(&bert, &bert_tensors, open().slice(2..6)))
        .unwrap();
    assert_eq!(merged, whole);
    assert_same_ranges(&merged, &whole, "bert");

    let cnn = load("tiny_cnn");
    let cnn_tensors = names(&float_tensors(&cnn));
    let mut rows = Vec::new();
    let mut samples = synthetic(&cnn, 9, 3, &SyntheticSpec::default());
    while let Some(s) = samples.next_sample() {
        let t = s.unwrap().values[0].1.as_tensor().unwrap().clone();
        rows.extend(t.to_vec::<f32>().unwrap());
    }
    let stacked = dir.path().join("input.npy");
    let x = Tensor::from_vec(vec![9, 1, 3, 32, 32], rows).unwrap();
    write_values(&stacked, &vec![("input".into(), Value::Tensor(x))]).unwrap();
    let open = || open_samples(&CalibrationData::Path(stacked.clone()), &inputs(&cnn)).unwrap();
    assert_eq!(open().len(), 9);
    let whole = run(&cnn, &cnn_tensors, open());
    let mut merged = run(&cnn, &cnn_tensors, open().slice(5..9));
    for shard in [0..2, 2..5] {
        merged
            .merge(&run(&cnn, &cnn_tensors, open().slice(shard)))
            .unwrap();
    }
    assert_eq!(merged, whole);
    assert_same_ranges(&merged, &whole, "tiny_cnn");
}

#[test]
fn statistics_round_trip_through_a_file() {
    let model = load("tiny_cnn");
    let tensors = float_tensors(&model);
    let options = CalibrationOptions {
        moving_average: Some(0.01),
        ..CalibrationOptions::default()
    };
    let samples = synthetic(&model, 4, 5, &SyntheticSpec::default());
    let stats = collect(&model, &names(&tensors), samples, &options, &mut |_| {}).unwrap();
    assert_eq!(stats.moving_average(), Some(0.01));
    assert_sane(&stats, &tensors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ranges.json");
    stats.save(&path).unwrap();
    let back = Statistics::load(&path).unwrap();
    assert_eq!(back, stats);
    assert_same_ranges(&back, &stats, "reloaded");
    assert_eq!(back.tensor_names().collect::<Vec<_>>().len(), tensors.len());
}

/// The statistics' size depends on the tensors and the histogram, not on the samples.
#[test]
fn memory_does_not_grow_with_samples() {
    let model = load("tiny_cnn");
    let tensors = names(&float_tensors(&model));
    let few = run(
        &model,
        &tensors,
        synthetic(&model, 2, 1, &SyntheticSpec::default()),
    );
    let many = run(
        &model,
        &tensors,
        synthetic(&model, 24, 1, &SyntheticSpec::default()),
    );
    assert_eq!(few.byte_size(), many.byte_size());
    let per_tensor = many.byte_size() / tensors.len();
    assert!(
        per_tensor < 8 * many.histogram_bins() + 1024,
        "{per_tensor} bytes per tensor"
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("few.json"), dir.path().join("many.json"));
    few.save(&a).unwrap();
    many.save(&b).unwrap();
    let (sa, sb) = (
        std::fs::metadata(&a).unwrap().len(),
        std::fs::metadata(&b).unwrap().len(),
    );
    // Counts get longer, the records do not get more numerous.
    assert!(sb < 2 * sa + 4096, "{sa} → {sb} bytes");
}

#[test]
fn saturation_counts_values_outside_the_limits() {
    let model = load("tiny_cnn");
    let tensors = float_tensors(&model);
    let stats = run(
        &model,
        &names(&tensors),
        synthetic(&model, 3, 1, &SyntheticSpec::default()),
    );
    let scheme = |_: &str| QuantScheme::new(QuantType::Uint8, false);
    let (relu, _) = tensors.iter().find(|(_, op)| op == "Relu").unwrap();
    let minmax = stats.ranges(Method::MinMax, &scheme);
    let mut limits: BTreeMap<String, (f32, f32)> = minmax
        .iter()
        .map(|(n, r)| (n.to_string(), (r.min, r.max)))
        .collect();
    // Held-out samples of the same distribution saturate little; a zero-width range for a
    // ReLU output saturates every positive value.
    limits.insert(relu.clone(), (0.0, 0.0));
    let samples = synthetic(&model, 3, 1, &SyntheticSpec::default());
    let sat = saturation(
        &model,
        &limits,
        samples,
        &CalibrationOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let t = stats.tensor(relu).unwrap();
    let positive = t.count() - t.zeros();
    assert_eq!(sat[relu].values, t.count());
    assert_eq!((sat[relu].below, sat[relu].above), (0, positive));
    for (name, s) in &sat {
        if name != relu {
            assert_eq!(s.below + s.above, 0, "{name}: same samples as calibration");
        }
    }
    let held_out = synthetic(&model, 3, 99, &SyntheticSpec::default());
    let sat = saturation(
        &model,
        &limits,
        held_out,
        &CalibrationOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(sat.values().all(|s| s.values > 0 && s.share() <= 1.0));
    let r: Range = minmax.get(relu).unwrap();
    assert!(r.max > 0.0);
}

#[test]
fn refusals_name_what_is_wrong() {
    let model = load("control_flow");
    let samples = open_samples(
        &CalibrationData::Synthetic { count: 1, seed: 0 },
        &inputs(&model),
    )
    .unwrap();
    let e = collect(
        &model,
        &["x".into(), "acc_out".into(), "nowhere".into()],
        samples,
        &CalibrationOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, CalibrationError::NotCapturable { .. }), "{e}");
    assert!(e.to_string().contains("'acc_out', 'nowhere'"), "{e}");

    let bert = load("bert_tiny_op17");
    let samples = open_samples(
        &CalibrationData::Synthetic { count: 2, seed: 0 },
        &inputs(&bert),
    )
    .unwrap();
    let tensors = names(&float_tensors(&bert));
    let e = collect(
        &bert,
        &tensors,
        samples,
        &CalibrationOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    // Token types up to 9 for an embedding of two: ONNX Runtime's error, with the sample.
    assert!(
        e.to_string()
            .starts_with("calibration sample synthetic sample 0 (seed 0): "),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad: NamedValues = vec![(
        "input".into(),
        Value::Tensor(Tensor::from_vec(vec![1, 3, 8, 8], vec![0f32; 192]).unwrap()),
    )];
    write_values(dir.path(), &bad).unwrap();
    let cnn = load("tiny_cnn");
    let e = open_samples(&CalibrationData::Path(dir.path().into()), &inputs(&cnn))
        .and_then(|mut s| s.next().unwrap())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("input.npy: has shape [1,3,8,8] but input 'input' is float32[batch,3,32,32]"),
        "{e}"
    );
}

/// Samples spread over worker threads give the statistics of one sequential run, whatever
/// the number of workers (and with a moving average, which depends on order, one is used).
#[test]
fn workers_do_not_change_the_statistics() {
    let model = load("tiny_cnn");
    let tensors = names(&float_tensors(&model));
    let with = |workers: usize, moving_average: Option<f32>| {
        let options = CalibrationOptions {
            workers: Some(workers),
            moving_average,
            ..CalibrationOptions::default()
        };
        let mut ticks = 0;
        let samples = synthetic(&model, 7, 4, &SyntheticSpec::default());
        let stats = collect(&model, &tensors, samples, &options, &mut |p| {
            ticks += 1;
            assert_eq!((p.done, p.total), (ticks, 7));
        })
        .unwrap();
        assert_eq!(ticks, 7);
        stats
    };
    let one = with(1, None);
    assert_eq!(with(3, None), one);
    assert_eq!(with(2, Some(0.1)), with(1, Some(0.1)));
}
