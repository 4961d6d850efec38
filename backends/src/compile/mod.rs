//! `compile`: turn an exported float model into what one device needs — the library behind
//! `kiln compile`. The driver loads the model, fixes input shapes for static-shape targets,
//! runs the profile's optimize pipeline, hands the graph to the family's target (which
//! quantizes, legalizes and emits), partitions the result, validates it against the float
//! model in ONNX Runtime, and writes `model.onnx` (+ `model.sim.onnx`), `report.json` and
//! `report.md` atomically.

mod error;
pub mod manifest;
pub mod partition;
pub mod report;
pub mod targets;

use std::path::{Path, PathBuf};

use kiln_passes::ir::Model;
use kiln_passes::optimize::{optimize, OptimizeOptions};
use kiln_proto::onnx::ModelProto;
use prost::Message;

pub use error::CompileError;
pub use report::CompileReport;

use crate::calibrate::{open_samples_with, CalibrationData};
use crate::profile::{fusion_names, LoadedProfile, Profile};
use crate::quantize::{index_bounds, PassSummary};
use crate::runtime::{Session, SessionOptions};
use crate::validate::{Comparer, SyntheticSpec, TopkAxis};
use crate::value::{NamedValues, Value};

/// Samples validation uses when none are held out.
const VALIDATION_SAMPLES: usize = 8;

/// Everything `compile` needs besides the model.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// The resolved profile.
    pub profile: LoadedProfile,
    /// Calibration samples (also the validation samples when no held-out set is given).
    pub calibration: CalibrationData,
    /// Held-out validation samples.
    pub check: Option<CalibrationData>,
    /// Validate the result.
    pub validate: bool,
    /// ONNX Runtime session options.
    pub session: SessionOptions,
}

/// What targets read.
pub struct Context {
    /// The profile.
    pub profile: Profile,
    /// Calibration samples.
    pub calibration: CalibrationData,
    /// Session options.
    pub session: SessionOptions,
    /// Synthetic input bounds.
    pub synthetic: SyntheticSpec,
}

/// A finished compile.
pub struct Compiled {
    /// The report (also written).
    pub report: CompileReport,
    /// Files written, in order.
    pub files: Vec<PathBuf>,
}

/// Compiles `model_path` for `options.profile` into `out_dir`.
pub fn compile(
    model_path: &Path,
    options: &CompileOptions,
    out_dir: &Path,
) -> Result<Compiled, CompileError> {
    let profile = options.profile.profile.clone();
    let loaded = kiln_proto::load_model(model_path)?;
    // The maps behind the weights: saving reads unchanged weights from them.
    let sources = loaded.sources().clone();
    let original = loaded.model;
    let mut model = Model::from_proto(&original)
        .map_err(|e| CompileError::Graph(format!("{}: {e}", model_path.display())))?;
    let arrived_quantized = crate::quantize::quantization_ops(&model).map(|(_, ops)| ops);
    let mut synthetic = SyntheticSpec::default();
    for (input, high) in index_bounds(&model) {
        synthetic.int_high.entry(input).or_insert(high);
    }
    // Read from the protobuf: a session made only to list the inputs would load every weight.
    let float_inputs = crate::runtime::declared_inputs(&original);
    let first = first_sample(&options.calibration, &float_inputs, &synthetic)?;
    let fixed = if profile.shapes.static_shapes {
        static_shapes(&model, &first, &profile)?
    } else {
        Vec::new()
    };

    let opt = OptimizeOptions {
        disable: fusion_names()
            .into_iter()
            .filter(|f| !profile.optimize.fusions.contains(f))
            .collect(),
        allow_contrib: profile.optimize.allow_contrib,
        input_shapes: fixed.clone(),
        ..OptimizeOptions::default()
    };
    let graph_error = |e: kiln_passes::optimize::OptimizeError| {
        CompileError::Graph(format!("{}: {e}", model_path.display()))
    };
    let mut records = optimize(&mut model, &opt).map_err(graph_error)?.records;
    // A quantized model is legalized after folding (QAT exports compute some scales with
    // ops that fold to constants), then optimized again when that made float ops.
    let prepared = match arrived_quantized {
        Some(_) => {
            let prepared = targets::prequantized::prepare(&mut model)?;
            if prepared.changed > 0 {
                records.extend(optimize(&mut model, &opt).map_err(graph_error)?.records);
            }
            Some(prepared)
        }
        None => None,
    };
    let optimize_summary: Vec<PassSummary> = records
        .iter()
        .map(|r| PassSummary {
            pass: r.pass.to_string(),
            changes: r.changes.iter().map(|(k, v)| (k.to_string(), v)).collect(),
        })
        .collect();

    let cx = Context {
        profile: profile.clone(),
        calibration: options.calibration.clone(),
        session: options.session.clone(),
        synthetic: synthetic.clone(),
    };
    let emitted = match prepared {
        Some(prepared) => targets::prequantized::compile(model, &cx, prepared)?,
        None => targets::run(model, &cx)?,
    };
    let view = emitted.partition_view.as_ref().unwrap_or(&emitted.model);
    let partition = partition::partition(view, &profile, emitted.integer_only);
    if profile.ops.unsupported == crate::profile::UnsupportedPolicy::Error {
        if let Some(f) = partition.fallbacks.first() {
            return Err(CompileError::Fallback {
                profile: profile.name.clone(),
                count: partition.fallbacks.len(),
                first: format!("{} ({}): {}", f.node, f.op_type, f.detail),
            });
        }
    }
    let parameter_cache = profile.memory.parameter_cache_bytes.map(|cache| {
        let bytes = partition::device_parameter_bytes(view, &partition);
        report::ParameterCache {
            parameter_bytes: bytes,
            cache_bytes: cache,
            fits: bytes <= cache,
        }
    });

    let validation = if options.validate {
        let (candidate, validated, why) = match (&emitted.sim, &emitted.validate_instead) {
            (Some(sim), _) => (
                sim.to_proto(),
                "model.sim.onnx".to_string(),
                "ONNX Runtime's CPU provider cannot run the emitted low-float ops; the simulated twin rounds to the same precision".to_string(),
            ),
            (None, Some((m, why))) => (m.to_proto(), "model.onnx (float-I/O form)".to_string(), why.clone()),
            (None, None) => (emitted.model.to_proto(), "model.onnx".to_string(), "the emitted model runs in ONNX Runtime".to_string()),
        };
        Some(validate(
            &original,
            &candidate,
            options,
            &float_inputs,
            &synthetic,
            &profile,
            validated,
            why,
        )?)
    } else {
        None
    };

    let (cal_text, cal_digest) = manifest::data_digest(&options.calibration)
        .map_err(|e| CompileError::Data(format!("cannot read the calibration data: {e}")))?;
    // The models are streamed to temporary files (external data past 2 GiB), hashed as they
    // are written; everything is renamed into place at the end.
    std::fs::create_dir_all(out_dir).map_err(|source| CompileError::Io {
        path: out_dir.display().to_string(),
        source,
    })?;
    let mut models = vec![save_model(
        &emitted.model,
        &out_dir.join("model.onnx"),
        &sources,
    )?];
    if let Some(sim) = &emitted.sim {
        models.push(save_model(sim, &out_dir.join("model.sim.onnx"), &sources)?);
    }
    let profile_yaml = options.profile.to_yaml();
    let mut warnings = options
        .profile
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>();
    if matches!(options.calibration, CalibrationData::Synthetic { .. }) {
        // Only calibrated activation ranges depend on the data; weight-only RTN reads none.
        let calibrated = emitted
            .quantize
            .as_ref()
            .is_some_and(|q| q.calibration.is_some());
        warnings.push(if calibrated {
            "calibrated on random inputs (--synthetic): a placeholder; calibrate on real data before shipping"
        } else {
            "validated on random inputs (--synthetic): validate on real data before shipping"
        }.into());
    }
    if let Some(q) = &emitted.quantize {
        warnings.extend(q.warnings.iter().cloned());
        if let Some(m) = q.mixed_precision.as_ref().filter(|m| !m.target_reached) {
            warnings.push(format!(
                "mixed precision: target {} dB not reached on the calibration samples; the best point found ({} of {} layers at 16-bit) was used",
                m.target_sqnr.unwrap_or(f64::NAN),
                m.promoted.len(),
                m.ranking.len()
            ));
        }
    }
    let report = CompileReport {
        model: model_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        profile: profile.name.clone(),
        target: profile.family.name().to_string(),
        profile_sources: options.profile.sources.clone(),
        fixed_input_shapes: fixed,
        optimize: optimize_summary,
        quantize: emitted.quantize,
        arrived_quantized,
        legalized: emitted.legalized,
        quantized_io: emitted.quantized_io,
        partition,
        parameter_cache,
        size: report::Sizes {
            before: original.encoded_len() as u64,
            after: models[0].summary().model_bytes + models[0].summary().data_bytes,
        },
        validation,
        manifest: manifest::Manifest {
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            files: models
                .iter()
                .flat_map(|m| manifest::entries(m.summary()))
                .collect(),
            profile_sha256: manifest::sha256(profile_yaml.as_bytes()),
            profile: profile_yaml,
            calibration: cal_text,
            calibration_sha256: cal_digest,
        },
        warnings,
    };
    let reports = [
        ("report.json", report.to_json().into_bytes()),
        ("report.md", report.to_markdown().into_bytes()),
    ];
    let files = write_all(out_dir, models, &reports)?;
    Ok(Compiled { report, files })
}

fn data_error(e: impl std::fmt::Display) -> CompileError {
    CompileError::Data(e.to_string())
}

/// The first calibration sample (its shapes fix a static-shape target's inputs).
fn first_sample(
    data: &CalibrationData,
    inputs: &[crate::runtime::IoInfo],
    spec: &SyntheticSpec,
) -> Result<NamedValues, CompileError> {
    let mut samples = open_samples_with(data, inputs, spec).map_err(data_error)?;
    match samples.next() {
        Some(s) => s.map_err(data_error),
        None => Err(CompileError::Data(
            "the calibration data has no samples".into(),
        )),
    }
}

/// Input shapes for a static-shape target: the first sample's, checked against the batch.
fn static_shapes(
    model: &Model,
    sample: &NamedValues,
    profile: &Profile,
) -> Result<Vec<(String, Vec<i64>)>, CompileError> {
    let mut out = Vec::new();
    for &inp in &model.graph.graph_inputs {
        let info = &model.graph[inp].outputs[0];
        let dynamic = info.shape().is_none_or(|d| {
            d.iter()
                .any(|d| !matches!(d, kiln_passes::ir::Dim::Known(_)))
        });
        if !dynamic || model.graph[inp].outputs.is_empty() {
            continue;
        }
        let Some((_, Value::Tensor(t))) = sample.iter().find(|(n, _)| *n == info.name) else {
            continue;
        };
        let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        if let (Some(b), Some(&first)) = (profile.shapes.batch, shape.first()) {
            if first != b as i64 {
                return Err(CompileError::Data(format!(
                    "profile '{}' runs batch {b}, but the data's input '{}' has batch {first}",
                    profile.name, info.name
                )));
            }
        }
        out.push((info.name.clone(), shape));
    }
    Ok(out)
}

/// Runs float and candidate on the validation samples and judges them with the profile.
#[allow(clippy::too_many_arguments)]
fn validate(
    float: &ModelProto,
    candidate: &ModelProto,
    options: &CompileOptions,
    inputs: &[crate::runtime::IoInfo],
    spec: &SyntheticSpec,
    profile: &Profile,
    validated: String,
    why: String,
) -> Result<report::Validation, CompileError> {
    let (on, data, limit) = match (&options.check, &options.calibration) {
        (Some(c), _) => ("check-inputs", c.clone(), usize::MAX),
        (None, CalibrationData::Synthetic { count, seed }) => (
            "synthetic held-out",
            CalibrationData::Synthetic {
                count: (*count).clamp(1, VALIDATION_SAMPLES),
                seed: seed.wrapping_add(0x9e37_79b9),
            },
            VALIDATION_SAMPLES,
        ),
        (None, d) => ("calibration", d.clone(), VALIDATION_SAMPLES),
    };
    let mut reference = Session::from_model_with(float, &options.session)?;
    let mut cand = Session::from_model_with(candidate, &options.session)?;
    let mut comparer = Comparer::new(profile.thresholds(), TopkAxis::Auto);
    for s in open_samples_with(&data, inputs, spec)
        .map_err(data_error)?
        .take(limit)
    {
        let s = s.map_err(data_error)?;
        let r = reference.run(&s)?;
        let c = cand.run(&s)?;
        comparer.add_sample(&r, &c);
    }
    let rep = comparer.finish();
    let outputs = rep
        .outputs
        .iter()
        .map(|o| {
            let m = match &o.metrics {
                Some(crate::validate::Metrics::Float(f)) => Some(f),
                _ => None,
            };
            report::OutputCheck {
                name: o.name.clone(),
                sqnr_db: m.map_or(f64::NAN, |m| m.sqnr_db),
                cosine: m.map_or(f64::NAN, |m| m.cosine),
                max_abs: m.map_or(f64::NAN, |m| m.max_abs),
                top1: m.and_then(|m| m.top1),
                failures: match (&o.problem, o.passed) {
                    (Some(p), _) => vec![p.clone()],
                    (None, _) => o
                        .failures
                        .iter()
                        .map(|f| format!("{}: {}", f.limit, f))
                        .collect(),
                },
                passed: o.passed,
            }
        })
        .collect();
    Ok(report::Validation {
        validated,
        why,
        on: on.to_string(),
        samples: rep.samples,
        passed: rep.passed,
        outputs,
    })
}

/// Writes `model` to temporary files for `path` (embedded, or external data past 2 GiB),
/// hashing them as they are written.
fn save_model(
    model: &Model,
    path: &Path,
    sources: &kiln_proto::MappedFiles,
) -> Result<kiln_proto::PendingSave, CompileError> {
    let opts = kiln_proto::SaveOptions::default();
    Ok(kiln_proto::prepare_save(
        &model.to_proto(),
        path,
        &opts,
        Some(sources),
    )?)
}

/// Writes the reports to temporary names in `dir`, then renames everything into place:
/// the models (data files first), then the reports.
fn write_all(
    dir: &Path,
    models: Vec<kiln_proto::PendingSave>,
    files: &[(&str, Vec<u8>)],
) -> Result<Vec<PathBuf>, CompileError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CompileError::Io { path, source }
    };
    let mut temps = Vec::new();
    for (name, bytes) in files {
        let tmp = dir.join(format!(".{name}.kiln-tmp"));
        if let Err(e) = std::fs::write(&tmp, bytes) {
            for (t, _) in &temps {
                let _ = std::fs::remove_file(t);
            }
            let _ = std::fs::remove_file(&tmp);
            // Dropping `models` deletes their temporary files.
            return Err(io(&tmp)(e));
        }
        temps.push((tmp, dir.join(name)));
    }
    let mut out = Vec::new();
    for m in models {
        let summary = m.commit()?;
        out.push(summary.model_path);
        out.extend(summary.data_path);
    }
    for (tmp, dst) in temps {
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        out.push(dst);
    }
    // Files of an earlier compile that no longer belong to this one: a twin that would not
    // match, data files of a model now embedded.
    let stale = ["model.sim.onnx", "model.onnx.data", "model.sim.onnx.data"];
    for name in stale {
        let path = dir.join(name);
        if !out.contains(&path) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(out)
}
