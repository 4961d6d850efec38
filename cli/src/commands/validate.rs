//! `kiln validate CANDIDATE --reference REF`: run both models in ONNX Runtime on the same
//! inputs and judge every output of the candidate against the reference's.

use std::path::PathBuf;

use kiln_backends::validate::Comparer;

use super::check::{self, CheckArgs, InputArgs};
use super::Outcome;
use crate::error::CliError;

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
    args.check
        .finish(&report, "kiln validate", (&args.reference, &args.candidate))
}
