//! `quantize`: optimize, calibrate, insert QDQ (or quantize dynamically), pin sensitive ops
//! to a 16-bit float, and report — the library behind `kiln quantize`.
//!
//! The stages are the passes' and the calibrator's; this module only sequences them, picks
//! the opset they need, and gathers what each did into a [`QuantizeReport`].

mod accuracy;
mod bias_correction;
mod error;
mod hessian;
mod index_bounds;
pub mod mixed_precision;
mod overrides;
mod ranges;
mod report;
mod sensitivity;
mod sequential;
mod weight_only;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln_passes::ir::Model;
use kiln_passes::opset::UpgradeOpset;
use kiln_passes::optimize::{optimize, OptimizeOptions};
use kiln_passes::pipeline::{Changes, Pass};
use kiln_passes::precision::{CancelCasts, PinPrecision};
use kiln_passes::quant::blockwise::{
    awq, linear_inputs, BlockQuantizer, BlockwiseConfig, Gptq, Rtn, WeightMethod,
};
use kiln_passes::quant::{dynamic, qdq, PinFloat, QuantConfig, QuantType};

use crate::calibrate::{
    open_samples_with, saturation, CalibrationData, CalibrationOptions, Method, Progress,
};
use crate::runtime::{capturable_names, declared_inputs, SessionOptions};
use crate::validate::SyntheticSpec;
use crate::value::NamedValues;

pub use accuracy::{output_sqnr, Reference, Sqnr};
pub use bias_correction::{BiasCorrectionReport, CorrectedLayer};
pub use error::QuantizeError;
pub use index_bounds::index_bounds;
pub use mixed_precision::{FrontPoint, MixedPrecisionOptions, MixedPrecisionReport};
pub use overrides::{parse_overrides, read_overrides};
pub use report::{
    Accuracy, AwqGroupReport, AwqReport, AwqWeightReport, Before, BlockWeightReport,
    CalibrationSummary, PassSummary, QuantizeReport, SaturationReport, Settings, SkippedNode,
    TensorReport, WeightOnlyReport,
};
pub use sensitivity::{sensitivity, LayerSensitivity};

/// A warning when some weight's input was seen in fewer calibration rows (tokens) than it has
/// channels: its Hessian is then singular, and GPTQ/AWQ fit those rows rather than the input
/// distribution (measured on llama_tiny compiled from its own 9-token test data: 34 dB on
/// the prompt, a worse decode than RTN).
fn thin_calibration(
    hessians: &BTreeMap<String, kiln_passes::quant::blockwise::Hessian>,
    method: WeightMethod,
) -> Option<String> {
    let thin: Vec<_> = hessians
        .iter()
        .filter(|(_, h)| h.rows() < h.k() as u64)
        .collect();
    let (name, h) = thin.iter().min_by_key(|(_, h)| h.rows())?;
    Some(format!(
        "{method}: {} of {} weight input(s) were seen in fewer calibration rows than they have \
         channels (fewest: '{name}', {} rows for {} channels); the method then fits the \
         calibration tokens, not the model's inputs: give more or longer samples (at least {} \
         tokens in all)",
        thin.len(),
        hessians.len(),
        h.rows(),
        h.k(),
        thin.iter().map(|(_, h)| h.k()).max().unwrap_or(0),
    ))
}

/// Op types that mean a model already carries quantization.
const QUANTIZED_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "QLinearMul",
    "QGemm",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearSoftmax",
    "QLinearReduceMean",
    "QLinearWhere",
    "QAttention",
    "DynamicQuantizeMatMul",
    "MatMulInteger",
    "ConvInteger",
    "MatMulNBits",
];

/// The weight-only stage's quantizer, with what it needs to report.
enum Quantizer {
    Rtn(Rtn),
    Gptq(Gptq),
    Awq(Vec<awq::AwqGroup>, awq::Awq),
    /// Chosen stage by stage (`--sequential`), with AWQ's groups when AWQ scaled first.
    Staged(sequential::Staged, Option<Vec<awq::AwqGroup>>),
}

impl Quantizer {
    fn as_dyn(&self) -> &(dyn BlockQuantizer + Sync) {
        match self {
            Quantizer::Rtn(r) => r,
            Quantizer::Gptq(g) => g,
            Quantizer::Awq(_, a) => a,
            Quantizer::Staged(s, _) => &s.chosen,
        }
    }
}

/// Samples used to measure accuracy when no held-out inputs are given.
const IN_SAMPLE_ACCURACY: usize = 8;

/// Where activation ranges come from.
#[derive(Debug, Clone)]
pub enum RangeSource {
    /// Calibrate on these samples.
    Calibrate(CalibrationData),
    /// Statistics saved by earlier runs (merged when several: shards).
    Saved(Vec<PathBuf>),
}

/// Static (calibrated QDQ), dynamic, or weight-only quantization.
#[derive(Debug, Clone)]
pub enum Mode {
    /// QDQ with calibrated activation ranges.
    Static {
        /// Where ranges come from.
        source: RangeSource,
        /// How statistics become ranges.
        method: Method,
        /// Calibration settings.
        calibration: CalibrationOptions,
        /// Save the statistics here.
        save_stats: Option<PathBuf>,
        /// Shift Conv/Gemm/MatMul+Add biases by their weights' mean quantization error,
        /// measured on the calibration samples (needs `RangeSource::Calibrate`).
        bias_correction: bool,
    },
    /// Integer weights, activations quantized at run time.
    Dynamic {
        /// Samples to measure accuracy on, if any.
        samples: Option<CalibrationData>,
    },
    /// Block-wise int4/int8 weights, float activations (MatMul/Gemm, optionally embeddings).
    /// `QuantizeOptions::config` is not used: this mode has its own settings, and pins
    /// nothing (no activation is quantized).
    WeightOnly {
        /// Bits, block size, form, method, which weights.
        config: BlockwiseConfig,
        /// Samples to measure accuracy on, if any.
        samples: Option<CalibrationData>,
    },
}

/// Everything `quantize` needs besides the model.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// Types, granularity, which ops, overrides, pinning.
    pub config: QuantConfig,
    /// The optimization pipeline's options; `None` skips it (`--no-optimize`).
    pub optimize: Option<OptimizeOptions>,
    /// Static or dynamic.
    pub mode: Mode,
    /// Held-out inputs: saturation per tensor and output SQNR.
    pub check: Option<CalibrationData>,
    /// Measure per-layer sensitivity on this many samples.
    pub sensitivity: Option<usize>,
    /// Search which layers to keep at 16-bit (static and weight-only modes).
    pub mixed_precision: Option<MixedPrecisionOptions>,
    /// How ONNX Runtime sessions are made.
    pub session: SessionOptions,
    /// Shapes and bounds of synthetic inputs; integer inputs that index a table get the
    /// table's length unless set here.
    pub synthetic: SyntheticSpec,
}

/// The float model calibration runs: proto, ONNX Runtime inputs, and the synthetic-input
/// spec.
pub(crate) struct FloatModel<'a> {
    /// The optimized float model's protobuf, what ONNX Runtime runs.
    pub proto: &'a kiln_proto::onnx::ModelProto,
    /// Its inputs as ONNX Runtime sees them.
    pub inputs: &'a [crate::runtime::IoInfo],
    /// Shapes and bounds of synthetic samples.
    pub spec: &'a SyntheticSpec,
}

/// What is running, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Running the float model over calibration samples.
    Calibrating,
    /// Running the float model over held-out samples.
    Checking,
    /// Quantizing one layer at a time.
    Sensitivity,
    /// Evaluating mixed-precision points (whole models with some layers at 16-bit).
    Search,
}

/// Quantizes `model` in place and reports what was done.
pub fn quantize(
    model: &mut Model,
    options: &QuantizeOptions,
    progress: &mut dyn FnMut(Stage, Progress),
) -> Result<QuantizeReport, QuantizeError> {
    match options.mode {
        // Weight-only quantization touches float weights only: weights already behind a
        // DequantizeLinear and activation Q/DQ (a compile target legalizing a quantized
        // model) are left alone.
        Mode::WeightOnly { .. } if only_qdq(model) => {}
        _ => refuse_quantized(model)?,
    }
    if let Some(mp) = &options.mixed_precision {
        refuse_mixed(options, mp)?;
    }
    let config = &options.config;
    let nodes_before = operators(model);
    let opset_before = model.opset("").unwrap_or(0);
    let mut warnings = Vec::new();

    let optimize_summary = match &options.optimize {
        Some(o) => {
            let r = optimize(model, o).map_err(|e| QuantizeError::Optimize(Box::new(e)))?;
            Some(
                r.records
                    .iter()
                    .map(|rec| summary(rec.pass, &rec.changes))
                    .collect(),
            )
        }
        None => None,
    };
    let needed = match options.mode {
        Mode::Static { .. } => qdq::required_opset(config),
        Mode::Dynamic { .. } => dynamic::required_opset(),
        // The block-wise pass raises the opset itself when the form it writes needs it.
        Mode::WeightOnly { .. } => 0,
    };
    let pins = !config.pin_ops.is_empty() && !matches!(options.mode, Mode::WeightOnly { .. });
    // Pinned ops compute through Cast, whose bfloat16 form needs opset 13.
    let needed = if config.pin_float == PinFloat::Bfloat16 && pins {
        needed.max(13)
    } else {
        needed
    };
    if model.opset("").unwrap_or(0) < needed {
        UpgradeOpset { target: needed }.run(model)?;
    }
    if options.mixed_precision.is_some() && matches!(options.mode, Mode::WeightOnly { .. }) {
        // Candidates are left out of block-wise quantization by name.
        mixed_precision::name_linear_nodes(model);
    }
    let float = model.clone();

    let mut report = QuantizeReport {
        mode: "static",
        settings: settings(options),
        optimize: optimize_summary,
        opset: Before {
            before: opset_before,
            after: 0,
        },
        nodes: Before {
            before: nodes_before,
            after: 0,
        },
        calibration: None,
        tensors: Vec::new(),
        quantized_nodes: Vec::new(),
        skipped: Vec::new(),
        removed_activations: Vec::new(),
        saturated_bias: 0,
        pinning: None,
        accuracy: None,
        sensitivity: None,
        weight_only: None,
        bias_correction: None,
        mixed_precision: None,
        warnings: Vec::new(),
    };
    let mut spec = options.synthetic.clone();
    for (input, high) in index_bounds(&float) {
        spec.int_high.entry(input).or_insert(high);
    }
    let float_proto = float.to_proto();
    // The float model's inputs as ONNX Runtime sees them, for reading samples: read from the
    // protobuf, since a session made only to list them would load every weight.
    let float_inputs = declared_inputs(&float_proto);
    // Samples the accuracy is measured on when no held-out set is given.
    let mut in_sample: Option<CalibrationData> = None;

    match &options.mode {
        Mode::Static {
            source,
            method,
            calibration,
            save_stats,
            bias_correction,
        } => {
            let plan = qdq::plan(model, config)?;
            let float_side = FloatModel {
                proto: &float_proto,
                inputs: &float_inputs,
                spec: &spec,
            };
            // Tensors other plans need: one node at a time (sensitivity, and the ranking of
            // the mixed-precision search), every candidate promoted (the search's points).
            let mut extra = Vec::new();
            if options.sensitivity.is_some() || options.mixed_precision.is_some() {
                extra.extend(ranges::one_node_tensors(&float, config, &plan)?);
            }
            let all_promoted = options
                .mixed_precision
                .map(|_| mixed_precision::promote_qdq(config, &float, &plan, &plan.nodes));
            if let Some(all) = &all_promoted {
                extra.extend(qdq::plan(&float, all)?.tensors);
            }
            let gathered = ranges::gather(
                &float_side,
                config,
                &plan,
                &extra,
                source,
                *method,
                calibration,
                save_stats.as_deref(),
                &mut warnings,
                &mut |p| progress(Stage::Calibrating, p),
            )?;
            let ranges = gathered.ranges;
            report.calibration = Some(gathered.summary);
            if let RangeSource::Calibrate(data) = source {
                in_sample = Some(data.clone());
            }
            // The configuration written, and its ranges: the user's, or the chosen
            // mixed-precision point's.
            let (mut chosen, mut chosen_ranges) = (config.clone(), ranges.clone());
            if let (Some(mp), Some(all)) = (&options.mixed_precision, &all_promoted) {
                let (on, data) = search_samples(options, in_sample.as_ref())?;
                let samples = take(data, &float_inputs, &spec, mp.samples)?;
                let reference = Reference::new(&float_proto, &samples, &options.session)?;
                let promoted_ranges = ranges::ranges_under(&gathered.stats, *method, all, &plan);
                let search = mixed_precision::QdqSearch {
                    float: &float,
                    config,
                    plan: &plan,
                    ranges: &ranges,
                    promoted_ranges: &promoted_ranges,
                    reference: &reference,
                };
                let found = search.run(mp, on, progress)?;
                chosen = found.config;
                chosen_ranges = found.ranges;
                report.mixed_precision = Some(found.report);
            }

            if *bias_correction {
                let RangeSource::Calibrate(data) = source else {
                    return Err(QuantizeError::Options(
                        "--bias-correction measures mean errors on calibration samples: give --calibration DATA or --synthetic N, not saved ranges".into(),
                    ));
                };
                report.bias_correction = Some(bias_correction::correct(
                    model,
                    &float_proto,
                    config,
                    &ranges,
                    open_samples_with(data, &float_inputs, &spec)?,
                    &options.session,
                    &mut |p| progress(Stage::Calibrating, p),
                )?);
            }
            let done = build_qdq(model, &chosen, &chosen_ranges)?;
            report.tensors = done.tensors.iter().map(tensor_report).collect();
            report.quantized_nodes = done.nodes.clone();
            report.skipped = done
                .skipped
                .iter()
                .map(|s| SkippedNode::new(&s.node, &s.op_type, &s.reason))
                .collect();
            report.removed_activations = done.removed_activations.clone();
            report.saturated_bias = done.saturated_bias;
            if done.saturated_bias > 0 {
                warnings.push(format!(
                    "{} bias values saturated int32 (tiny input × weight scales)",
                    done.saturated_bias
                ));
            }

            if let Some(n) = options.sensitivity {
                let data = options
                    .check
                    .as_ref()
                    .or(in_sample.as_ref())
                    .ok_or_else(|| {
                        QuantizeError::Options(
                        "--sensitivity needs samples: --calibration, --synthetic or --check-inputs"
                            .into(),
                    )
                    })?;
                let samples = take(data, &float_inputs, &spec, n)?;
                let total = plan.nodes.len();
                report.sensitivity = Some(sensitivity(
                    &float,
                    config,
                    &ranges,
                    &plan.nodes,
                    &samples,
                    &options.session,
                    &mut |done, _| {
                        progress(
                            Stage::Sensitivity,
                            Progress {
                                done,
                                total,
                                elapsed: std::time::Duration::ZERO,
                            },
                        )
                    },
                )?);
            }
        }
        Mode::Dynamic { samples } => {
            report.mode = "dynamic";
            let done = dynamic::quantize_dynamic(model, config)?;
            report.quantized_nodes = done.nodes.clone();
            report.tensors = done
                .weights
                .iter()
                .map(|w| TensorReport {
                    name: w.name.clone(),
                    kind: "weight".into(),
                    dtype: w.dtype.name().into(),
                    symmetric: config.weights.scheme.symmetric,
                    axis: w.axis,
                    scale: w.scales.clone(),
                    zero_point: Vec::new(),
                    range: None,
                    shared_with: None,
                    saturation: None,
                })
                .collect();
            report.skipped = done
                .skipped
                .iter()
                .map(|s| SkippedNode::new(&s.node, &s.op_type, &s.reason))
                .collect();
            in_sample = samples.clone();
        }
        Mode::WeightOnly {
            config: blockwise,
            samples,
        } => {
            report.mode = "weight-only";
            let quantizer = match blockwise.method {
                WeightMethod::Rtn => Quantizer::Rtn(Rtn),
                method => {
                    let name = method.to_string().to_uppercase();
                    let data = samples.as_ref().ok_or_else(|| {
                        QuantizeError::Options(format!(
                            "{name} needs calibration data: give --calibration DATA or --synthetic N"
                        ))
                    })?;
                    if let CalibrationData::Synthetic { .. } = data {
                        warnings.push(format!(
                            "{name}'s statistics come from random inputs (--synthetic): calibrate on real data before shipping"
                        ));
                    }
                    let inputs = linear_inputs(model, blockwise);
                    // One worker (ORT's own threads use the cores): every worker holds a
                    // K × K matrix per activation, and a session with every weight.
                    let calibration = CalibrationOptions {
                        intra_threads: options.session.intra_threads,
                        workers: Some(1),
                        histogram_bins: 0,
                        ..CalibrationOptions::default()
                    };
                    let samples = || Ok(open_samples_with(data, &float_inputs, &spec)?);
                    // Sequential GPTQ needs no float statistics; AWQ's scales come from them
                    // either way (folding them keeps the float outputs).
                    let one_pass = if method == WeightMethod::Gptq && blockwise.sequential {
                        None
                    } else {
                        let collected = hessian::collect(
                            &float_proto,
                            &inputs,
                            method == WeightMethod::Awq,
                            samples()?,
                            &calibration,
                            &mut |p| progress(Stage::Calibrating, p),
                        )?;
                        report.calibration = Some(CalibrationSummary::of(
                            data,
                            collected.samples,
                            collected.hessians.len(),
                        ));
                        warnings.extend(thin_calibration(&collected.hessians, method));
                        Some(if method == WeightMethod::Gptq {
                            Quantizer::Gptq(hessian::quantizer(
                                &inputs,
                                collected.hessians,
                                blockwise.gptq,
                            ))
                        } else {
                            let stats = collected.activation_stats();
                            let (groups, awq) =
                                awq::apply_scales(model, blockwise, &stats, &blockwise.awq)?;
                            Quantizer::Awq(groups, awq)
                        })
                    };
                    match (blockwise.sequential, one_pass) {
                        (false, Some(q)) => q,
                        (_, one_pass) => {
                            // The one-pass quantizer's Hessians go before the stages' come.
                            let groups = match one_pass {
                                Some(Quantizer::Awq(groups, _)) => Some(groups),
                                _ => None,
                            };
                            let staged = sequential::quantize(
                                model,
                                blockwise,
                                &samples,
                                &calibration,
                                &mut |p| progress(Stage::Calibrating, p),
                            )?;
                            if report.calibration.is_none() {
                                report.calibration = Some(CalibrationSummary::of(
                                    data,
                                    staged.samples,
                                    staged.activations,
                                ));
                            }
                            Quantizer::Staged(staged, groups)
                        }
                    }
                }
            };
            in_sample = samples.clone();
            let mut chosen = blockwise.clone();
            let mut promoted = BTreeSet::new();
            if let Some(mp) = &options.mixed_precision {
                let (on, data) = search_samples(options, in_sample.as_ref())?;
                let samples = take(data, &float_inputs, &spec, mp.samples)?;
                let reference = Reference::new(&float_proto, &samples, &options.session)?;
                // AWQ has folded its scales into `model` by now: the search starts from there.
                let start = model.clone();
                let search = mixed_precision::BlockSearch {
                    float: &start,
                    config: blockwise,
                    quantizer: quantizer.as_dyn(),
                    reference: &reference,
                };
                let found = search.run(mp, on, progress)?;
                chosen = found.config;
                promoted = found.promoted;
                report.mixed_precision = Some(found.report);
            }
            let (mut done, nodes, mut skipped) =
                weight_only::run(model, &chosen, quantizer.as_dyn())?;
            // Promotions that cannot apply are in the search's report (`not_promoted`): it built
            // this same point.
            if !mixed_precision::keep_float16(model, &promoted)
                .weights
                .is_empty()
            {
                done.constant_bytes.after = weight_only::constant_bytes(&model.graph) as i64;
            }
            for s in skipped.iter_mut().filter(|s| promoted.contains(&s.node)) {
                s.reason = "kept as float16 by mixed precision".into();
            }
            let (label, fallbacks) = match &quantizer {
                Quantizer::Rtn(_) => ("", Vec::new()),
                Quantizer::Gptq(g) => ("GPTQ", g.fallbacks()),
                Quantizer::Awq(groups, a) => {
                    done.awq = Some(weight_only::awq_report(groups, a.chosen()));
                    ("AWQ", a.fallbacks())
                }
                Quantizer::Staged(s, groups) => {
                    let label = match groups {
                        Some(groups) => {
                            done.awq = Some(weight_only::awq_report(groups, s.awq.clone()));
                            "AWQ"
                        }
                        None => "GPTQ",
                    };
                    let mut all = s.fallbacks.clone();
                    all.extend(s.chosen.fallbacks());
                    (label, all)
                }
            };
            for f in fallbacks {
                warnings.push(format!(
                    "{label}: weight '{}' rounded to nearest instead: {}",
                    f.weight, f.reason
                ));
            }
            report.weight_only = Some(done);
            report.quantized_nodes = nodes;
            report.skipped = skipped;
        }
    }

    if pins {
        report.pinning = pin(model, config)?;
    }
    model
        .graph
        .verify()
        .map_err(kiln_passes::pipeline::PassError::from)?;

    // Held-out saturation: how much of each activation falls outside its quantized range.
    if let Some(check) = &options.check {
        let limits = activation_limits(&report.tensors, &float_proto);
        if !limits.is_empty() {
            let samples = open_samples_with(check, &float_inputs, &spec)?;
            let sat = saturation(
                &float_proto,
                &limits,
                samples,
                &CalibrationOptions::default(),
                &mut |p| progress(Stage::Checking, p),
            )?;
            for t in &mut report.tensors {
                if let Some(s) = sat.get(&t.name) {
                    t.saturation = Some(SaturationReport {
                        values: s.values,
                        below: s.below,
                        above: s.above,
                        share: s.share(),
                    });
                }
            }
        }
    }

    // Accuracy: held-out when given, else a few calibration samples (in-sample).
    let (on, data, limit) = match (&options.check, &in_sample) {
        (Some(c), _) => ("check-inputs", Some(c), usize::MAX),
        (None, Some(d)) => ("calibration", Some(d), IN_SAMPLE_ACCURACY),
        (None, None) => ("", None, 0),
    };
    if let Some(data) = data {
        let samples = take(data, &float_inputs, &spec, limit)?;
        let sqnr = output_sqnr(&float_proto, &model.to_proto(), &samples, &options.session)?;
        report.accuracy = Some(Accuracy {
            on: on.to_string(),
            samples: samples.len(),
            sqnr_db: sqnr.db(),
        });
    }

    report.opset.after = model.opset("").unwrap_or(0);
    report.nodes.after = operators(model);
    report.warnings = warnings;
    Ok(report)
}

/// The quantization ops (Q/DQ, QLinear*, integer ops) in `model`'s main graph: how many, and
/// a description such as `3 DequantizeLinear, 2 QuantizeLinear`; `None` for a float model.
pub fn quantization_ops(model: &Model) -> Option<(usize, String)> {
    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, n) in model.graph.nodes() {
        if n.is_operator() && QUANTIZED_OPS.contains(&n.op_type()) {
            *ops.entry(n.op_type()).or_default() += 1;
        }
    }
    if ops.is_empty() {
        return None;
    }
    let described = ops
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some((ops.values().sum(), described))
}

/// Whether the model's only quantization ops are `QuantizeLinear`/`DequantizeLinear`.
fn only_qdq(model: &Model) -> bool {
    model
        .graph
        .nodes()
        .filter(|(_, n)| n.is_operator() && QUANTIZED_OPS.contains(&n.op_type()))
        .all(|(_, n)| matches!(n.op_type(), "QuantizeLinear" | "DequantizeLinear"))
}

/// Refuses a model that already has Q/DQ or integer ops: quantizing twice compounds error.
fn refuse_quantized(model: &Model) -> Result<(), QuantizeError> {
    match quantization_ops(model) {
        None => Ok(()),
        Some((nodes, ops)) => Err(QuantizeError::AlreadyQuantized { nodes, ops }),
    }
}

/// Reads up to `limit` samples into memory (for runs that reuse them).
fn take(
    data: &CalibrationData,
    inputs: &[crate::runtime::IoInfo],
    spec: &SyntheticSpec,
    limit: usize,
) -> Result<Vec<NamedValues>, QuantizeError> {
    let mut out = Vec::new();
    for s in open_samples_with(data, inputs, spec)? {
        if out.len() >= limit {
            break;
        }
        out.push(s?);
    }
    Ok(out)
}

/// The representable interval of each quantized activation that the float model can expose.
fn activation_limits(
    tensors: &[TensorReport],
    float: &kiln_proto::onnx::ModelProto,
) -> BTreeMap<String, (f32, f32)> {
    let capturable: std::collections::HashSet<String> =
        capturable_names(float).into_iter().collect();
    tensors
        .iter()
        .filter(|t| t.kind == "activation" && capturable.contains(&t.name))
        .filter_map(|t| {
            let dtype: QuantType = t.dtype.parse().ok()?;
            let (qmin, qmax) = dtype.qrange(t.symmetric, false);
            let (scale, zp) = (*t.scale.first()?, *t.zero_point.first()?);
            Some((
                t.name.clone(),
                ((qmin - zp) as f32 * scale, (qmax - zp) as f32 * scale),
            ))
        })
        .collect()
}

fn tensor_report(t: &qdq::QuantizedTensor) -> TensorReport {
    TensorReport {
        name: t.name.clone(),
        kind: match t.kind {
            qdq::TensorKind::Activation => "activation",
            qdq::TensorKind::Weight => "weight",
            qdq::TensorKind::Bias => "bias",
        }
        .to_string(),
        dtype: t.dtype.name().to_string(),
        symmetric: t.symmetric,
        axis: t.axis,
        scale: t.scales.clone(),
        zero_point: t.zero_points.clone(),
        range: t.range.map(|r| [r.min, r.max]),
        shared_with: t.shared_with.clone(),
        saturation: None,
    }
}

fn summary(pass: &str, changes: &Changes) -> PassSummary {
    PassSummary {
        pass: pass.to_string(),
        changes: changes.iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn settings(o: &QuantizeOptions) -> Settings {
    let c = &o.config;
    if let Mode::WeightOnly { config: b, .. } = &o.mode {
        // Activations stay float; nothing is pinned; weights are per block, not per channel.
        let sign = if b.symmetric { "int" } else { "uint" };
        return Settings {
            activations: "float32".into(),
            symmetric_activations: false,
            weights: format!("{sign}{}", b.bits.count()),
            symmetric_weights: b.symmetric,
            per_channel: false,
            reduce_range: false,
            method: None,
            pin_ops: Vec::new(),
            pin_type: "float16".into(),
            overrides: 0,
        };
    }
    Settings {
        activations: c.activations.dtype.name().into(),
        symmetric_activations: c.activations.symmetric,
        weights: c.weights.scheme.dtype.name().into(),
        symmetric_weights: c.weights.scheme.symmetric,
        per_channel: c.weights.per_channel,
        reduce_range: c.weights.scheme.reduce_range,
        method: match &o.mode {
            Mode::Static { method, .. } => Some(method_name(method)),
            Mode::Dynamic { .. } | Mode::WeightOnly { .. } => None,
        },
        pin_ops: c.pin_ops.iter().cloned().collect(),
        pin_type: match c.pin_float {
            PinFloat::Float16 => "float16",
            PinFloat::Bfloat16 => "bfloat16",
        }
        .into(),
        overrides: c.overrides.len(),
    }
}

/// `minmax`, `percentile 99.999`, `entropy`, `mse`.
fn method_name(m: &Method) -> String {
    match m {
        Method::MinMax => "minmax".to_string(),
        Method::Percentile(p) => format!("percentile {p}"),
        Method::Entropy => "entropy".to_string(),
        Method::Mse => "mse".to_string(),
    }
}

/// Operators of the main graph (what `kiln inspect` counts as nodes).
fn operators(model: &Model) -> i64 {
    model.graph.nodes().filter(|(_, n)| n.is_operator()).count() as i64
}

/// Refuses mixed precision where it is not built: dynamic mode, bias correction (each point
/// would need its own corrections), and values out of range.
fn refuse_mixed(
    options: &QuantizeOptions,
    mp: &MixedPrecisionOptions,
) -> Result<(), QuantizeError> {
    mp.validate()
        .map_err(|e| QuantizeError::Options(format!("--target-sqnr/--max-16bit-share: {e}")))?;
    match &options.mode {
        Mode::Dynamic { .. } => Err(QuantizeError::Options(
            "mixed precision (--target-sqnr, --max-16bit-share) is for static and --weight-only quantization, not --dynamic".into(),
        )),
        Mode::Static {
            bias_correction: true,
            ..
        } => Err(QuantizeError::Options(
            "--bias-correction with mixed precision is not supported (each point of the search would need its own corrections)".into(),
        )),
        _ => Ok(()),
    }
}

/// The samples the mixed-precision search measures on: held out when given, else the
/// calibration samples; with what they are called in the report.
fn search_samples<'a>(
    options: &'a QuantizeOptions,
    in_sample: Option<&'a CalibrationData>,
) -> Result<(&'static str, &'a CalibrationData), QuantizeError> {
    match (&options.check, in_sample) {
        (Some(c), _) => Ok(("check-inputs", c)),
        (None, Some(d)) => Ok(("calibration", d)),
        (None, None) => Err(QuantizeError::Options(
            "mixed precision measures the output SQNR on samples: give --calibration, --synthetic or --check-inputs".into(),
        )),
    }
}

/// QDQ insertion with `config` and `ranges`, the model first raised to the opset the
/// config needs (16-bit standard Q/DQ: 21). The mixed-precision search builds its points with
/// it, and the driver the model it writes.
fn build_qdq(
    model: &mut Model,
    config: &QuantConfig,
    ranges: &kiln_passes::quant::Ranges,
) -> Result<qdq::QdqSummary, QuantizeError> {
    let needed = qdq::required_opset(config);
    if model.opset("").unwrap_or(0) < needed {
        UpgradeOpset { target: needed }.run(model)?;
    }
    Ok(qdq::insert_qdq(model, config, ranges)?)
}

/// Pins `config.pin_ops` to their 16-bit float (nothing when there are none). Ops ORT's CPU
/// provider has no low-float kernel for are written as the simulated twin (float32 between
/// rounding casts), so the output runs faithfully in ORT.
fn pin(model: &mut Model, config: &QuantConfig) -> Result<Option<PassSummary>, QuantizeError> {
    if config.pin_ops.is_empty() {
        return Ok(None);
    }
    let pin = PinPrecision::for_ort_cpu(config.pin_ops.clone(), config.pin_float);
    let mut changes = pin.run(model)?;
    changes.merge(&CancelCasts.run(model)?);
    Ok(Some(summary(pin.name(), &changes)))
}
