//! `kiln quantize MODEL -o OUT --calibration DATA [options]`: static QDQ quantization with
//! calibrated ranges (or `--dynamic`), sensitive ops pinned to a 16-bit float; or
//! `--weight-only int4|int8`: block-wise weights, float activations (RTN, or GPTQ or AWQ with
//! calibration data).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use kiln_backends::calibrate::{CalibrationData, CalibrationOptions, Method};
use kiln_backends::quantize::{
    quantize, read_overrides, AwqReport, AwqWeightReport, MixedPrecisionOptions,
    MixedPrecisionReport, Mode, QuantizeError, QuantizeOptions, QuantizeReport, RangeSource, Stage,
    WeightOnlyReport,
};
use kiln_backends::runtime::SessionOptions;
use kiln_passes::optimize::OptimizeOptions;
use kiln_passes::quant::blockwise::awq::AwqOptions;
use kiln_passes::quant::blockwise::{
    Bits, BlockwiseConfig, ConfigError, GptqOptions, WeightFormat, WeightMethod,
};
use kiln_passes::quant::{PinFloat, QuantConfig, QuantScheme, QuantType, WeightConfig};

use super::Outcome;
use crate::error::CliError;
use crate::progress::ProgressBar;
use crate::{model_file, render};

/// Op types pinned to a 16-bit float unless told otherwise.
const DEFAULT_PINNED: &str = "LayerNormalization,Softmax";

/// Arguments of `kiln quantize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The float model.
    model: PathBuf,
    /// Where to write the quantized model.
    #[arg(short, long)]
    output: PathBuf,
    /// Calibration samples: a folder of `test_data_set_*` (one sample each), a folder of
    /// `<input>.npy`/`.pb` (arrays with one more leading dim hold several samples), a folder
    /// of `.npy` files for a one-input model (one sample each), or an `.npz`.
    #[arg(long, value_name = "DATA", conflicts_with_all = ["synthetic", "ranges"])]
    calibration: Option<PathBuf>,
    /// Calibrate on N seeded random samples (a placeholder: ranges from random data are not
    /// the ranges of real inputs).
    #[arg(long, value_name = "N", conflicts_with = "ranges")]
    synthetic: Option<usize>,
    /// Seed of --synthetic.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Size of a free (symbolic) input dim for --synthetic, `NAME=SIZE` (default 1).
    #[arg(long = "dim", value_name = "NAME=SIZE")]
    dims: Vec<String>,
    /// Exclusive upper bound of --synthetic integer inputs, `N` or `INPUT:N` (default: the
    /// length of the table an input indexes, 2 for masks, else 10).
    #[arg(long, value_name = "[INPUT:]N")]
    int_high: Vec<String>,
    /// How statistics become ranges.
    #[arg(long, value_enum, default_value_t = MethodArg::Minmax)]
    method: MethodArg,
    /// Percentile kept by --method percentile.
    #[arg(long, value_name = "P", default_value_t = 99.999)]
    percentile: f64,
    /// MinMax with a moving average of per-sample min/max (ORT's CalibMovingAverage).
    #[arg(long)]
    moving_average: bool,
    /// The moving average's constant.
    #[arg(
        long,
        value_name = "C",
        default_value_t = 0.01,
        requires = "moving_average"
    )]
    averaging_constant: f32,
    /// Activation type.
    #[arg(long, value_name = "TYPE", default_value = "uint8")]
    activations: QuantType,
    /// Weight type (int8 is symmetric, uint8 asymmetric, as in ONNX Runtime).
    #[arg(long, value_name = "TYPE", default_value = "int8", value_parser = parse_weight_type)]
    weights: QuantType,
    /// One scale per output channel (the default).
    #[arg(long, conflicts_with = "per_tensor")]
    per_channel: bool,
    /// One scale per weight tensor.
    #[arg(long)]
    per_tensor: bool,
    /// Symmetric activations (zero point in the middle of the range).
    #[arg(long)]
    symmetric_activations: bool,
    /// Weights use one bit less of range (for CPUs without VNNI/dot-product instructions).
    #[arg(long)]
    reduce_range: bool,
    /// Quantize only these op types (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    op_types: Option<Vec<String>>,
    /// Leave these nodes in float (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    exclude_nodes: Vec<String>,
    /// Leave these op types in float.
    #[arg(long, value_delimiter = ',', value_name = "OPS")]
    exclude_op_types: Vec<String>,
    /// Per-tensor exceptions (dtype, symmetric, fixed range) from a YAML file.
    #[arg(long, value_name = "FILE.yaml")]
    overrides: Option<PathBuf>,
    /// Op types computed in a 16-bit float instead of integers [default: LayerNormalization,Softmax].
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "OPS",
        conflicts_with = "no_pin"
    )]
    pin_float: Option<Vec<String>>,
    /// The float pinned ops compute in.
    #[arg(long, value_enum, default_value_t = PinTypeArg::Float16)]
    pin_type: PinTypeArg,
    /// Pin nothing: every supported op is quantized.
    #[arg(long)]
    no_pin: bool,
    /// Save the calibration statistics (mergeable across shards) to FILE.
    #[arg(long, value_name = "FILE")]
    save_ranges: Option<PathBuf>,
    /// Use saved statistics instead of calibrating; several files (shards) merge.
    #[arg(long, value_name = "FILE", value_delimiter = ',', num_args = 1..)]
    ranges: Vec<PathBuf>,
    /// Shift each Conv/Gemm (and MatMul + Add) bias by the mean error its quantized weights
    /// make on the calibration samples (static mode).
    #[arg(long, conflicts_with_all = ["dynamic", "weight_only", "ranges"])]
    bias_correction: bool,
    /// Quantize weights only; activations are quantized at run time (DynamicQuantizeLinear).
    #[arg(long, conflicts_with_all = ["ranges", "save_ranges", "sensitivity"])]
    dynamic: bool,
    /// Weight-only quantization: MatMul/Gemm weights stored as 4- or 8-bit integers in blocks
    /// along K, activations left in float (RTN needs no calibration; GPTQ does).
    #[arg(
        long,
        value_enum,
        value_name = "BITS",
        conflicts_with_all = ["dynamic", "ranges", "save_ranges", "sensitivity", "overrides"]
    )]
    weight_only: Option<WeightBitsArg>,
    /// Weights along K sharing one scale (32, 64 or 128).
    #[arg(long, value_name = "N", default_value_t = 32, requires = "weight_only")]
    block_size: usize,
    /// How block-wise weights are written: `qdq` (DequantizeLinear with block_size, opset 21)
    /// or `matmulnbits` (ONNX Runtime's com.microsoft.MatMulNBits).
    #[arg(long, value_enum, default_value_t = WeightFormatArg::Qdq, requires = "weight_only")]
    weight_format: WeightFormatArg,
    /// How block-wise integers are chosen: rtn (round to nearest, no data), gptq (error
    /// compensation with the Hessians of calibration inputs) or awq (activation-aware scales
    /// folded into the model, then a clip search of each block's range); gptq and awq need
    /// --calibration or --synthetic.
    #[arg(long, value_enum, default_value_t = WeightMethodArg::Rtn, requires = "weight_only")]
    weight_method: WeightMethodArg,
    /// GPTQ: quantize the inputs with the largest Hessian diagonal first (act-order), each
    /// block's grid fixed from the original weights.
    #[arg(long, requires = "weight_only")]
    gptq_act_order: bool,
    /// GPTQ: dampening added to the Hessian's diagonal, as a fraction of its mean.
    #[arg(
        long,
        value_name = "F",
        default_value_t = 0.01,
        requires = "weight_only"
    )]
    gptq_damp: f64,
    /// GPTQ: shrink each block's range by the ratio (1.0 down to 0.5) of least output error on
    /// the calibration data (not with --gptq-act-order).
    #[arg(long, requires = "weight_only")]
    gptq_clip: bool,
    /// GPTQ: keep each block's scale from its range instead of refitting the scales by least
    /// squares once the integers are chosen (the refit is on by default).
    #[arg(long, requires = "weight_only")]
    gptq_no_refit: bool,
    /// AWQ: keep each block's full range (no clip search; scales only).
    #[arg(long, requires = "weight_only")]
    awq_no_clip: bool,
    /// AWQ: where no producer can take 1/s (an attention output projection, an activation read
    /// elsewhere too), insert a Mul by it in front of the group instead of leaving it unscaled.
    #[arg(long, requires = "weight_only")]
    awq_mul: bool,
    /// AWQ: choose the scaled weights' integers with GPTQ instead of rounding (the clip search
    /// then runs inside GPTQ; --gptq-act-order, which needs --awq-no-clip, and --gptq-damp
    /// apply).
    #[arg(long, requires = "weight_only")]
    awq_gptq: bool,
    /// GPTQ/AWQ: choose the integers stage by stage in graph order, each stage's statistics
    /// collected on the model with the earlier stages already quantized (one model run per
    /// stage; only one stage's Hessians held).
    #[arg(long, requires = "weight_only")]
    sequential: bool,
    /// With --sequential: each weight's integers aim at the float model's output rather than
    /// its own output on the partially quantized model (GPTAQ's asymmetric objective; one more
    /// float run per stage, its stage inputs held for all samples).
    #[arg(long, requires = "sequential")]
    float_target: bool,
    /// Block-wise weights unsigned with a zero point per block (default: signed, symmetric).
    #[arg(long, requires = "weight_only")]
    asymmetric_weights: bool,
    /// Keep the LM head (a MatMul/Gemm producing a graph output) in float.
    #[arg(long, requires = "weight_only")]
    exclude_lm_head: bool,
    /// Quantize embedding tables (Gather) too, block-wise along the embedding dim (QDQ form).
    #[arg(long, requires = "weight_only")]
    quantize_embeddings: bool,
    /// Held-out inputs: report the share of values that saturate per tensor, and the output SQNR.
    #[arg(long, value_name = "DATA")]
    check_inputs: Option<PathBuf>,
    /// Quantize one op at a time and report each op's output SQNR, worst first.
    #[arg(long)]
    sensitivity: bool,
    /// Samples each sensitivity run (and each mixed-precision point) uses.
    #[arg(long, value_name = "N", default_value_t = 8)]
    sensitivity_samples: usize,
    /// Mixed precision: keep the fewest, most sensitive layers at 16-bit (static: 16-bit
    /// activations and int16 weights; --weight-only: float16 weights) so that the output SQNR
    /// reaches DB; the smallest model that does is written (exit 1 when none does).
    #[arg(long, value_name = "DB", allow_negative_numbers = true)]
    target_sqnr: Option<f64>,
    /// Mixed precision: at most this share (0..1) of the candidate layers' weight elements at
    /// 16-bit; alone, the most accurate model within it is written.
    #[arg(
        long = "max-16bit-share",
        value_name = "S",
        allow_negative_numbers = true
    )]
    max_16bit_share: Option<f64>,
    /// Skip the optimization pipeline (folding, fusions, opset upgrade) that runs first.
    #[arg(long)]
    no_optimize: bool,
    /// ONNX Runtime intra-op threads during calibration (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    #[command(flatten)]
    storage: model_file::WeightsArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WeightBitsArg {
    Int4,
    Int8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WeightFormatArg {
    Qdq,
    Matmulnbits,
}

/// Methods on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WeightMethodArg {
    Rtn,
    Gptq,
    Awq,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PinTypeArg {
    Float16,
    Bfloat16,
}

fn parse_weight_type(s: &str) -> Result<QuantType, String> {
    match s {
        "int8" => Ok(QuantType::Int8),
        "uint8" => Ok(QuantType::Uint8),
        _ => Err(format!("'{s}': weights are int8 or uint8")),
    }
}

/// Quantizes, saves, and prints a summary.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let options = options(&args)?;
    let mut file = model_file::open(&args.model)?;
    let started = Instant::now();
    let mut calibrating = ProgressBar::new("calibrating");
    let mut checking = ProgressBar::new("checking");
    let mut layers = ProgressBar::new("sensitivity");
    let mut points = ProgressBar::new("mixed precision");
    let report = quantize(&mut file.model, &options, &mut |stage, p| {
        let bar = match stage {
            Stage::Calibrating => &mut calibrating,
            Stage::Checking => &mut checking,
            Stage::Sensitivity => &mut layers,
            Stage::Search => &mut points,
        };
        bar.update(p.done, p.total, p.elapsed);
    })
    .map_err(|e| quantize_error(&args.model, e))?;
    drop((calibrating, checking, layers, points));
    let seconds = started.elapsed().as_secs_f64();

    let saved = file.save(&args.output, args.storage.external(None))?;
    for w in saved.warnings.iter().chain(&report.warnings) {
        eprintln!("kiln: warning: {w}");
    }
    print!("{}", text(&report, seconds));
    println!(
        "wrote {} ({})",
        saved.model_path.display(),
        render::bytes(saved.model_bytes + saved.data_bytes)
    );
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        model_file::write_text(path, &json)?;
    }
    // The best point found was written; the target was an accuracy check, and it failed.
    Ok(match &report.mixed_precision {
        Some(m) if !m.target_reached => Outcome::CheckFailed,
        _ => Outcome::Success,
    })
}

/// Errors about the model itself get its path; data and option errors name their own files.
fn quantize_error(model: &std::path::Path, e: QuantizeError) -> CliError {
    let about_model = matches!(
        e,
        QuantizeError::Pass(_)
            | QuantizeError::Optimize(_)
            | QuantizeError::AlreadyQuantized { .. }
    );
    CliError::Quantize {
        path: about_model.then(|| model.to_path_buf()),
        source: Box::new(e),
    }
}

fn options(args: &Args) -> Result<QuantizeOptions, CliError> {
    let usage = |m: &str| CliError::Usage(m.to_string());
    let mut config = QuantConfig {
        activations: QuantScheme::new(args.activations, args.symmetric_activations),
        weights: WeightConfig {
            scheme: QuantScheme {
                dtype: args.weights,
                symmetric: args.weights == QuantType::Int8,
                reduce_range: args.reduce_range,
            },
            per_channel: !args.per_tensor,
            per_op: Default::default(),
        },
        op_types: args
            .op_types
            .as_ref()
            .map(|v| v.iter().filter(|s| !s.is_empty()).cloned().collect()),
        exclude_nodes: args.exclude_nodes.iter().cloned().collect(),
        exclude_op_types: args.exclude_op_types.iter().cloned().collect(),
        ..QuantConfig::default()
    };
    if let Some(path) = &args.overrides {
        config.overrides = read_overrides(path).map_err(|e| CliError::Quantize {
            path: None,
            source: Box::new(e),
        })?;
    }
    config.pin_float = match args.pin_type {
        PinTypeArg::Float16 => PinFloat::Float16,
        PinTypeArg::Bfloat16 => PinFloat::Bfloat16,
    };
    config.pin_ops = if args.no_pin {
        BTreeSet::new()
    } else if let Some(ops) = &args.pin_float {
        let pinned: BTreeSet<String> = ops.iter().filter(|s| !s.is_empty()).cloned().collect();
        if let Some(both) = config
            .op_types
            .as_ref()
            .and_then(|q| pinned.iter().find(|p| q.contains(*p)))
        {
            return Err(usage(&format!(
                "{both} is in both --op-types (quantize it) and --pin-float (keep it in float)"
            )));
        }
        pinned
    } else {
        // The default pins give way to op types the user asked to quantize.
        DEFAULT_PINNED
            .split(',')
            .filter(|p| config.op_types.as_ref().is_none_or(|q| !q.contains(*p)))
            .map(String::from)
            .collect()
    };
    if !(0.0..=100.0).contains(&args.percentile) || args.percentile < 50.0 {
        return Err(usage(&format!(
            "--percentile {}: expected a value in [50, 100]",
            args.percentile
        )));
    }
    if args.sensitivity && args.sensitivity_samples == 0 {
        return Err(usage("--sensitivity-samples must be at least 1"));
    }
    let samples = match (&args.calibration, args.synthetic) {
        (Some(p), _) => Some(CalibrationData::Path(p.clone())),
        (None, Some(0)) => return Err(usage("--synthetic needs at least 1 sample")),
        (None, Some(n)) => Some(CalibrationData::Synthetic {
            count: n,
            seed: args.seed,
        }),
        (None, None) => None,
    };
    let mut session = SessionOptions::default();
    if let Some(t) = args.threads {
        session = session.with_intra_threads(t);
    }
    let mode = if let Some(bits) = args.weight_only {
        Mode::WeightOnly {
            config: weight_only_config(args, bits)?,
            samples,
        }
    } else if args.dynamic {
        Mode::Dynamic { samples }
    } else {
        let source = match samples {
            Some(s) => RangeSource::Calibrate(s),
            None if !args.ranges.is_empty() => RangeSource::Saved(args.ranges.clone()),
            None => {
                return Err(usage(
                    "static quantization needs ranges: give --calibration DATA, --synthetic N or --ranges FILE (or use --dynamic)",
                ))
            }
        };
        let method = match args.method {
            MethodArg::Minmax => Method::MinMax,
            MethodArg::Percentile => Method::Percentile(args.percentile),
            MethodArg::Entropy => Method::Entropy,
            MethodArg::Mse => Method::Mse,
        };
        Mode::Static {
            source,
            method,
            calibration: CalibrationOptions {
                moving_average: args.moving_average.then_some(args.averaging_constant),
                intra_threads: args.threads,
                ..CalibrationOptions::for_method(method, args.save_ranges.is_some())
            },
            save_stats: args.save_ranges.clone(),
            bias_correction: args.bias_correction,
        }
    };
    Ok(QuantizeOptions {
        config,
        optimize: (!args.no_optimize).then(OptimizeOptions::default),
        mode,
        check: args.check_inputs.clone().map(CalibrationData::Path),
        sensitivity: args.sensitivity.then_some(args.sensitivity_samples),
        mixed_precision: mixed_precision(args)?,
        session,
        synthetic: super::check::synthetic_spec(&args.dims, &args.int_high)?,
    })
}

/// The search of `--target-sqnr` / `--max-16bit-share`, when asked for.
fn mixed_precision(args: &Args) -> Result<Option<MixedPrecisionOptions>, CliError> {
    if args.target_sqnr.is_none() && args.max_16bit_share.is_none() {
        return Ok(None);
    }
    let options = MixedPrecisionOptions {
        target_sqnr: args.target_sqnr,
        max_16bit_share: args.max_16bit_share,
        samples: args.sensitivity_samples,
    };
    options
        .validate()
        .map_err(|e| CliError::Usage(format!("--target-sqnr/--max-16bit-share: {e}")))?;
    if args.dynamic {
        return Err(CliError::Usage(
            "--target-sqnr/--max-16bit-share search static or --weight-only quantization; --dynamic has no 16-bit form to promote layers to".into(),
        ));
    }
    Ok(Some(options))
}

/// The block-wise settings of `--weight-only`.
fn weight_only_config(args: &Args, bits: WeightBitsArg) -> Result<BlockwiseConfig, CliError> {
    let method = match args.weight_method {
        WeightMethodArg::Rtn => WeightMethod::Rtn,
        WeightMethodArg::Gptq => WeightMethod::Gptq,
        WeightMethodArg::Awq => WeightMethod::Awq,
    };
    let awq_flags = args.awq_no_clip || args.awq_mul || args.awq_gptq;
    if method != WeightMethod::Awq && awq_flags {
        return Err(CliError::Usage(
            "--awq-no-clip, --awq-mul and --awq-gptq need --weight-method awq".into(),
        ));
    }
    let gptq_runs = method == WeightMethod::Gptq || args.awq_gptq;
    let gptq_flags = args.gptq_act_order || args.gptq_damp != GptqOptions::default().damp;
    if !gptq_runs && gptq_flags {
        return Err(CliError::Usage(
            "--gptq-act-order and --gptq-damp need --weight-method gptq (or awq with --awq-gptq)"
                .into(),
        ));
    }
    if args.gptq_clip && method != WeightMethod::Gptq {
        return Err(CliError::Usage(
            "--gptq-clip needs --weight-method gptq (AWQ clips unless --awq-no-clip)".into(),
        ));
    }
    if args.gptq_no_refit && !(method == WeightMethod::Gptq || args.awq_gptq) {
        return Err(CliError::Usage(
            "--gptq-no-refit needs GPTQ: --weight-method gptq, or awq with --awq-gptq".into(),
        ));
    }
    if args.sequential && method == WeightMethod::Rtn {
        return Err(CliError::Usage(
            "--sequential needs --weight-method gptq or awq (rounding to nearest uses no statistics)"
                .into(),
        ));
    }
    if method != WeightMethod::Rtn && args.calibration.is_none() && args.synthetic.is_none() {
        return Err(CliError::Usage(format!(
            "--weight-method {method} needs calibration data: give --calibration DATA (or --synthetic N for a placeholder)"
        )));
    }
    let clips = args.gptq_clip || (args.awq_gptq && !args.awq_no_clip);
    if clips && args.gptq_act_order {
        return Err(CliError::Usage(
            "--gptq-act-order cannot be combined with the clip search, which needs K order (--gptq-clip, or --awq-gptq without --awq-no-clip)".into(),
        ));
    }
    if !(args.gptq_damp > 0.0 && args.gptq_damp.is_finite()) {
        return Err(CliError::Usage(format!(
            "--gptq-damp {}: expected a positive fraction of the mean diagonal (e.g. 0.01)",
            args.gptq_damp
        )));
    }
    let gptq = GptqOptions {
        damp: args.gptq_damp,
        act_order: args.gptq_act_order,
        clip: args.gptq_clip,
        refit_scales: !args.gptq_no_refit,
    };
    let config = BlockwiseConfig {
        bits: match bits {
            WeightBitsArg::Int4 => Bits::Four,
            WeightBitsArg::Int8 => Bits::Eight,
        },
        block_size: args.block_size,
        symmetric: !args.asymmetric_weights,
        format: match args.weight_format {
            WeightFormatArg::Qdq => WeightFormat::Qdq,
            WeightFormatArg::Matmulnbits => WeightFormat::MatMulNBits,
        },
        method,
        exclude_nodes: args.exclude_nodes.iter().cloned().collect(),
        lm_head: !args.exclude_lm_head,
        embeddings: args.quantize_embeddings,
        gptq,
        awq: AwqOptions {
            clip: !args.awq_no_clip,
            insert_mul: args.awq_mul,
            gptq: args.awq_gptq.then_some(gptq),
            ..AwqOptions::default()
        },
        sequential: args.sequential,
        float_target: args.float_target,
    };
    config.validate().map_err(|e| match e {
        ConfigError::BlockSize(_) => CliError::Usage(format!("--block-size: {e}")),
        e => CliError::Usage(e.to_string()),
    })?;
    Ok(config)
}

/// The terminal summary.
fn text(r: &QuantizeReport, seconds: f64) -> String {
    if let Some(w) = &r.weight_only {
        return weight_only_text(r, w, seconds);
    }
    let mut out = String::new();
    let s = &r.settings;
    out.push_str(&format!(
        "{} quantization: activations {}{}, weights {} {}{}\n",
        r.mode,
        s.activations,
        if s.symmetric_activations {
            " symmetric"
        } else {
            ""
        },
        s.weights,
        if s.per_channel {
            "per-channel"
        } else {
            "per-tensor"
        },
        s.method
            .as_ref()
            .map(|m| format!(", {m} ranges"))
            .unwrap_or_default(),
    ));
    if let Some(c) = &r.calibration {
        out.push_str(&format!(
            "calibration  {} samples ({}), {} tensors\n",
            c.samples, c.source, c.tensors
        ));
    }
    if r.opset.after != r.opset.before {
        out.push_str(&format!(
            "opset        {} → {}\n",
            r.opset.before, r.opset.after
        ));
    }
    out.push_str(&format!(
        "nodes        {} → {} ({} quantized, {} left in float)\n",
        r.nodes.before,
        r.nodes.after,
        r.quantized_nodes.len(),
        r.skipped.len()
    ));
    let count = |k: &str| r.tensors.iter().filter(|t| t.kind == k).count();
    out.push_str(&format!(
        "tensors      {} activations, {} weights, {} biases\n",
        count("activation"),
        count("weight"),
        count("bias")
    ));
    if let Some(b) = &r.bias_correction {
        let largest = b
            .corrected
            .iter()
            .map(|c| c.max_abs_shift)
            .fold(0.0, f64::max);
        out.push_str(&format!(
            "bias         {} corrected ({} left alone), largest shift {largest:.3e}, means from {} samples\n",
            b.corrected.len(),
            b.skipped.len(),
            b.samples
        ));
    }
    if let Some(p) = &r.pinning {
        if !s.pin_ops.is_empty() {
            let changed: Vec<String> = p.changes.iter().map(|(k, v)| format!("{v} {k}")).collect();
            out.push_str(&format!(
                "pinned       {} to {}{}\n",
                s.pin_ops.join(", "),
                s.pin_type,
                if changed.is_empty() {
                    " (none in the model)".to_string()
                } else {
                    format!(" ({})", changed.join(", "))
                }
            ));
        }
    }
    let saturating: Vec<&_> = r
        .tensors
        .iter()
        .filter(|t| t.saturation.is_some_and(|s| s.share > 0.0))
        .collect();
    if r.tensors.iter().any(|t| t.saturation.is_some()) {
        let mut worst = saturating.clone();
        worst.sort_by(|a, b| {
            let (x, y) = (
                a.saturation.map_or(0.0, |s| s.share),
                b.saturation.map_or(0.0, |s| s.share),
            );
            y.total_cmp(&x).then_with(|| a.name.cmp(&b.name))
        });
        out.push_str(&format!(
            "saturation   {} of {} checked tensors saturate on held-out inputs\n",
            saturating.len(),
            r.tensors.iter().filter(|t| t.saturation.is_some()).count()
        ));
        for t in worst.iter().take(5) {
            let share = t.saturation.map_or(0.0, |s| s.share);
            out.push_str(&format!("  {:>8.4}%  {}\n", share * 100.0, t.name));
        }
    }
    if let Some(a) = &r.accuracy {
        out.push_str(&format!(
            "accuracy     output SQNR {:.2} dB vs float on {} {} sample(s)\n",
            a.sqnr_db, a.samples, a.on
        ));
    }
    if let Some(sens) = &r.sensitivity {
        out.push_str("sensitivity  (only this node quantized; lowest SQNR = most sensitive)\n");
        let mut rows = vec![vec![
            "node".to_string(),
            "op".to_string(),
            "SQNR dB".to_string(),
        ]];
        for l in sens.iter().take(10) {
            rows.push(vec![
                l.node.clone(),
                l.op_type.clone(),
                format!("{:.2}", l.sqnr_db),
            ]);
        }
        out.push_str(&render::table(&rows));
        if sens.len() > 10 {
            out.push_str(&format!(
                "  ... {} more in the JSON report\n",
                sens.len() - 10
            ));
        }
    }
    if let Some(m) = &r.mixed_precision {
        out.push_str(&mixed_precision_text(m));
    }
    out.push_str(&format!("time         {seconds:.2} s\n"));
    out
}

/// The terminal summary of `--weight-only`.
/// AWQ's lines: groups scaled and how, and what the clip search did.
fn awq_text(a: &AwqReport) -> String {
    let count = |how: &str| a.groups.iter().filter(|g| g.scaled == how).count();
    let (folded, mul) = (count("folded"), count("mul"));
    let alphas: Vec<String> = a
        .groups
        .iter()
        .filter(|g| g.scaled != "none")
        .map(|g| format!("{:.2}", g.alpha))
        .collect();
    let mut out = format!(
        "awq          {} of {} groups scaled ({folded} folded, {mul} Mul){}\n",
        folded + mul,
        a.groups.len(),
        if alphas.is_empty() {
            String::new()
        } else {
            format!(", α {}", alphas.join(" "))
        }
    );
    let clipped: Vec<&AwqWeightReport> =
        a.weights.iter().filter(|w| w.integers == "clip").collect();
    if !clipped.is_empty() {
        let blocks: usize = clipped.iter().map(|w| w.blocks).sum();
        let shrunk: usize = clipped.iter().filter_map(|w| w.clipped_blocks).sum();
        let mean = clipped.iter().map(|w| w.error_ratio).sum::<f64>() / clipped.len() as f64;
        out.push_str(&format!(
            "clip         {shrunk} of {blocks} blocks shrunk in {} weights; output error {:.2} of RTN's (mean over weights)\n",
            clipped.len(),
            mean
        ));
    }
    out
}

fn weight_only_text(r: &QuantizeReport, w: &WeightOnlyReport, seconds: f64) -> String {
    let mut out = format!(
        "weight-only quantization: {} {}, block {}, {} form, {}\n",
        r.settings.weights,
        if w.symmetric {
            "symmetric"
        } else {
            "asymmetric"
        },
        w.block_size,
        w.format,
        w.method
    );
    if r.opset.after != r.opset.before {
        out.push_str(&format!(
            "opset        {} → {}\n",
            r.opset.before, r.opset.after
        ));
    }
    if let Some(c) = &r.calibration {
        out.push_str(&format!(
            "calibration  {} samples ({}), Hessians of {} MatMul inputs\n",
            c.samples,
            c.path.as_deref().unwrap_or(&c.source),
            c.tensors
        ));
    }
    out.push_str(&format!(
        "nodes        {} → {} ({} quantized, {} left in float)\n",
        r.nodes.before,
        r.nodes.after,
        r.quantized_nodes.len(),
        r.skipped.len()
    ));
    if let Some(a) = &w.awq {
        out.push_str(&awq_text(a));
    }
    out.push_str(&format!(
        "weights      {} quantized: {} → {}; all constants {} → {}\n",
        w.weights.len(),
        render::bytes(w.float_bytes),
        render::bytes(w.quantized_bytes),
        render::bytes(w.constant_bytes.before.max(0) as u64),
        render::bytes(w.constant_bytes.after.max(0) as u64),
    ));
    if let Some(a) = &r.accuracy {
        out.push_str(&format!(
            "accuracy     output SQNR {:.2} dB vs float on {} {} sample(s)\n",
            a.sqnr_db, a.samples, a.on
        ));
    }
    if let Some(m) = &r.mixed_precision {
        out.push_str(&mixed_precision_text(m));
    }
    out.push_str(&format!("time         {seconds:.2} s\n"));
    out
}

/// The mixed-precision front as a table, the chosen row marked, and the verdict.
fn mixed_precision_text(m: &MixedPrecisionReport) -> String {
    let goal = match (m.target_sqnr, m.max_16bit_share) {
        (Some(t), Some(s)) => format!("target {t:.2} dB within {:.1} % at 16-bit", s * 100.0),
        (Some(t), None) => format!("target {t:.2} dB"),
        (None, Some(s)) => format!("best SQNR within {:.1} % at 16-bit", s * 100.0),
        (None, None) => String::new(),
    };
    let mut out = format!(
        "mixed        {goal}; {} candidate layers ranked alone, {} points on {} {} sample(s); promoted: {}\n",
        m.ranking.len(),
        m.front.len(),
        m.samples,
        m.on,
        m.promotion
    );
    let mut rows = vec![vec![
        String::new(),
        "layers".to_string(),
        "16-bit share".to_string(),
        "weight bytes".to_string(),
        "SQNR dB".to_string(),
    ]];
    for (i, p) in m.front.iter().enumerate() {
        rows.push(vec![
            if i == m.chosen { " >" } else { "  " }.to_string(),
            p.promoted.to_string(),
            format!("{:.1} %", p.share * 100.0),
            p.weight_bytes.to_string(),
            format!("{:.2}", p.sqnr_db),
        ]);
    }
    out.push_str(&render::table(&rows));
    let Some(chosen) = m.front.get(m.chosen) else {
        return out;
    };
    let shown: Vec<&str> = m.promoted.iter().take(5).map(String::as_str).collect();
    out.push_str(&format!(
        "  chosen: {} layer(s) at 16-bit{}{}\n",
        chosen.promoted,
        if shown.is_empty() {
            String::new()
        } else {
            format!(
                " ({}{})",
                shown.join(", "),
                if m.promoted.len() > 5 { ", …" } else { "" }
            )
        },
        match m.target_sqnr {
            Some(t) if !m.target_reached => format!(
                "; target {t:.2} dB NOT reached (best point written, {:.2} dB)",
                chosen.sqnr_db
            ),
            Some(_) => "; target reached".to_string(),
            None => String::new(),
        }
    ));
    for n in &m.not_promoted {
        out.push_str(&format!("  not promoted: {} ({})\n", n.node, n.reason));
    }
    out
}
