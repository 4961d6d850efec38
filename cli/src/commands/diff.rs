//! `kiln diff A B`: compare two models, a model and saved outputs, or two saved outputs (no
//! ONNX Runtime needed), with the metrics and thresholds of `kiln validate`. A is the reference.

use std::path::{Path, PathBuf};

use kiln_backends::runtime::Session;
use kiln_backends::tensors;
use kiln_backends::validate::{render_html, stream, Comparer};
use kiln_backends::NamedValues;

use super::check::{self, CheckArgs, InputArgs};
use super::Outcome;
use crate::error::CliError;
use crate::model_file;

/// Arguments of `kiln diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The reference: a model (`.onnx`) or saved outputs (`.npz`, `.npy`, `.pb`, a folder, or a
    /// folder of `test_data_set_*`).
    a: PathBuf,
    /// The candidate, likewise.
    b: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    #[command(flatten)]
    check: CheckArgs,
    /// Also write a self-contained HTML report (SQNR chart, error histograms) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// One side of the diff.
enum Side {
    Model(Session),
    /// Saved outputs, one path per sample.
    Outputs(Vec<PathBuf>),
}

impl Side {
    fn open(path: &Path) -> Result<Side, CliError> {
        if check::is_model(path) {
            Ok(Side::Model(check::open_model(path)?))
        } else {
            Ok(Side::Outputs(tensors::list_samples(path)?))
        }
    }

    fn samples(&self) -> Option<usize> {
        match self {
            Side::Model(_) => None,
            Side::Outputs(s) => Some(s.len()),
        }
    }

    /// This side's values for sample `i`.
    fn values(
        &mut self,
        path: &Path,
        i: usize,
        inputs: &[(String, NamedValues)],
    ) -> Result<NamedValues, CliError> {
        match self {
            Side::Model(session) => check::run_on(session, path, &inputs[i]),
            Side::Outputs(samples) => Ok(tensors::read_all_values(&samples[i])?),
        }
    }
}

/// Compares A and B sample by sample and reports.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let thresholds = args.check.thresholds()?;
    let topk = args.check.topk()?;
    let mut a = Side::open(&args.a)?;
    let mut b = Side::open(&args.b)?;
    let model = match (&a, &b) {
        (Side::Model(s), _) | (_, Side::Model(s)) => Some(s),
        _ => None,
    };
    let inputs = match model {
        Some(session) => check::input_samples(&args.inputs, session)?,
        None => {
            if args.inputs.inputs.is_some() || args.inputs.synthetic.is_some() {
                return Err(CliError::Usage(
                    "--inputs / --synthetic need a model; both sides are saved outputs".into(),
                ));
            }
            Vec::new()
        }
    };
    // Every side must have the same number of samples (a model has one per input sample).
    let counts: Vec<(&Path, usize)> = [(&args.a, &a), (&args.b, &b)]
        .into_iter()
        .map(|(p, s)| (p.as_path(), s.samples().unwrap_or(inputs.len())))
        .collect();
    let n = counts[0].1;
    if counts[1].1 != n {
        return Err(CliError::Usage(format!(
            "{} has {} sample(s) but {} has {}",
            counts[0].0.display(),
            n,
            counts[1].0.display(),
            counts[1].1
        )));
    }
    let mut comparer = Comparer::new(thresholds, topk);
    for i in 0..n {
        // Two folders of .npy outputs are compared chunk by chunk, never held whole.
        if let (Side::Outputs(sa), Side::Outputs(sb)) = (&a, &b) {
            if stream::streamable(&sa[i]) && stream::streamable(&sb[i]) {
                stream::add_saved_sample(&mut comparer, &sa[i], &sb[i])?;
                continue;
            }
        }
        let ra = a.values(&args.a, i, &inputs)?;
        let rb = b.values(&args.b, i, &inputs)?;
        comparer.add_sample(&ra, &rb);
    }
    let report = comparer.finish();
    if let Some(path) = &args.html {
        // Per-layer plug-in point: pass the per-layer points instead of `&[]`.
        model_file::write_text(path, &render_html(&report, &[]))?;
    }
    args.check.finish(&report, "kiln diff", (&args.a, &args.b))
}
