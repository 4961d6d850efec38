//! `kiln compile MODEL --profile P -o OUT_DIR`: quantize, legalize and emit a model for one
//! device, validate it against the float model, and write `model.onnx`, `report.json` and
//! `report.md` (and `model.sim.onnx` when ONNX Runtime cannot run the emitted form).

use std::path::PathBuf;

use kiln_backends::calibrate::CalibrationData;
use kiln_backends::compile::{compile, CompileOptions, CompileReport};
use kiln_backends::runtime::SessionOptions;

use super::Outcome;
use crate::error::CliError;

/// Arguments of `kiln compile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The float model.
    model: PathBuf,
    /// A built-in profile name (`kiln profile list`) or a profile YAML file.
    #[arg(long, value_name = "NAME|FILE")]
    profile: String,
    /// The output folder.
    #[arg(short, long, value_name = "OUT_DIR")]
    output: PathBuf,
    /// Calibration samples (as for `kiln quantize`); default: the model's bundled
    /// `test_data_set_*` folders when there are any.
    #[arg(long, value_name = "DATA", conflicts_with = "synthetic")]
    calibration: Option<PathBuf>,
    /// Calibrate on N seeded random samples (a placeholder for real data).
    #[arg(long, value_name = "N")]
    synthetic: Option<usize>,
    /// Held-out inputs to validate on (default: a few calibration samples).
    #[arg(long, value_name = "DATA")]
    check_inputs: Option<PathBuf>,
    /// Do not validate the result.
    #[arg(long)]
    no_validate: bool,
}

/// Compiles, writes, prints a summary; exit 1 when validation fails.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let usage = |m: String| CliError::Usage(m);
    let profile = kiln_backends::profile::load(&args.profile).map_err(|e| usage(e.to_string()))?;
    if !args.model.is_file() {
        return Err(usage(format!(
            "{}: no such model file",
            args.model.display()
        )));
    }
    let calibration = match (&args.calibration, args.synthetic) {
        (Some(p), _) if !p.exists() => {
            return Err(usage(format!("{}: no such calibration data", p.display())))
        }
        (Some(p), _) => CalibrationData::Path(p.clone()),
        (None, Some(0)) => return Err(usage("--synthetic needs at least 1 sample".into())),
        (None, Some(n)) => CalibrationData::Synthetic { count: n, seed: 0 },
        (None, None) => match args.model.parent() {
            Some(dir) if has_test_data(dir) => CalibrationData::Path(dir.to_path_buf()),
            _ => {
                return Err(usage(
                    "compile needs calibration data: --calibration DATA or --synthetic N".into(),
                ))
            }
        },
    };
    if let Some(c) = &args.check_inputs {
        if !c.exists() {
            return Err(usage(format!("{}: no such check inputs", c.display())));
        }
    }
    let options = CompileOptions {
        profile,
        calibration,
        check: args.check_inputs.clone().map(CalibrationData::Path),
        validate: !args.no_validate,
        session: SessionOptions::default(),
    };
    let done = compile(&args.model, &options, &args.output)
        .map_err(|e| usage(format!("{}: {e}", args.model.display())))?;
    for w in &done.report.warnings {
        eprintln!("kiln: warning: {w}");
    }
    print!("{}", summary(&done.report));
    println!("wrote {}", args.output.display());
    Ok(match &done.report.validation {
        Some(v) if !v.passed => Outcome::CheckFailed,
        _ => Outcome::Success,
    })
}

/// Whether `dir` has `test_data_set_*` folders.
fn has_test_data(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("test_data_set_")
        })
    })
}

/// The terminal summary.
fn summary(r: &CompileReport) -> String {
    let p = &r.partition;
    let mut o = format!(
        "{} for {} ({})\npartition    {} nodes on the device, {} on the CPU ({}), {} device segment(s), {} transition(s)\n",
        r.model,
        r.profile,
        r.target,
        p.device.nodes,
        p.cpu.nodes,
        match p.device_mac_share {
            Some(s) => format!("{:.1} % of MACs on the device", s * 100.0),
            None if p.macs_unknown > 0 => format!("MAC share unknown: {} node(s) without shapes", p.macs_unknown),
            None => "no MACs".to_string(),
        },
        p.device_segments,
        p.transitions
    );
    if !p.fallback_ops.is_empty() {
        let ops: Vec<String> = p
            .fallback_ops
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        o.push_str(&format!("fallback     {}\n", ops.join(", ")));
    }
    if let Some(c) = &r.parameter_cache {
        o.push_str(&format!(
            "parameters   {} of {} cache bytes{}\n",
            c.parameter_bytes,
            c.cache_bytes,
            if c.fits { "" } else { " (does not fit)" }
        ));
    }
    o.push_str(&format!(
        "size         {} -> {} bytes\n",
        r.size.before, r.size.after
    ));
    match &r.validation {
        None => o.push_str("validation   skipped\n"),
        Some(v) => {
            o.push_str(&format!(
                "validation   {} ({} on {} {} sample(s))\n",
                if v.passed { "passed" } else { "FAILED" },
                v.validated,
                v.samples,
                v.on
            ));
            for c in &v.outputs {
                o.push_str(&format!(
                    "  {:<20} SQNR {:>7.2} dB  cosine {:.5}  top-1 {}{}\n",
                    c.name,
                    c.sqnr_db,
                    c.cosine,
                    c.top1.map_or("-".into(), |t| format!("{t:.3}")),
                    if c.passed {
                        String::new()
                    } else {
                        format!("  FAIL {}", c.failures.join("; "))
                    }
                ));
            }
        }
    }
    o
}
