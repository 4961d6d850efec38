//! `kiln validate CANDIDATE --reference REF`: run both models in ONNX Runtime on the same
//! inputs and judge every output of the candidate against the reference's.

use std::path::PathBuf;

use kiln_backends::validate::{render_html, Comparer};

use super::check::{self, CheckArgs, InputArgs};
use super::Outcome;
use crate::error::CliError;
use crate::model_file;

/// Arguments of `kiln validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model under test.
    candidate: PathBuf,
    /// The model it must agree with.
    #[arg(long, value_name = "MODEL")]
    reference: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    check: CheckArgs,
    /// Also write a self-contained HTML report (SQNR chart, error histograms) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Save the outputs (and synthetic inputs) to DIR/{reference,candidate,inputs}, for
    /// `kiln diff` later.
    #[arg(long, value_name = "DIR")]
    save_outputs: Option<PathBuf>,
}

/// Runs both models on every sample, compares, reports.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let thresholds = args.check.thresholds()?;
    let topk = args.check.topk()?;
    let mut reference = check::open_model(&args.reference)?;
    let mut candidate = check::open_model(&args.candidate)?;
    let samples = check::input_samples(&args.inputs, &reference)?;
    let many = samples.len() > 1;
    let mut comparer = Comparer::new(thresholds, topk);
    for (i, sample) in samples.iter().enumerate() {
        let r = check::run_on(&mut reference, &args.reference, sample)?;
        let c = check::run_on(&mut candidate, &args.candidate, sample)?;
        if let Some(dir) = &args.save_outputs {
            check::save(dir, "reference", i, many, &r)?;
            check::save(dir, "candidate", i, many, &c)?;
            if args.inputs.inputs.is_none() {
                check::save(dir, "inputs", i, many, &sample.1)?;
            }
        }
        comparer.add_sample(&r, &c);
    }
    let report = comparer.finish();
    if let Some(path) = &args.html {
        // Per-layer plug-in point: pass the per-layer points instead of `&[]`.
        model_file::write_text(path, &render_html(&report, &[]))?;
    }
    args.check
        .finish(&report, "kiln validate", (&args.reference, &args.candidate))
}
