//! `kiln run MODEL --inputs DATA [--save-outputs PATH]`: run a model in ONNX Runtime.

use std::path::{Path, PathBuf};

use kiln_backends::runtime::{Session, SessionOptions};
use kiln_backends::tensors::{self, IoSpec};
use kiln_backends::NamedValues;

use super::Outcome;
use crate::error::CliError;
use crate::render;

/// Arguments of `kiln run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to run.
    model: PathBuf,
    /// Inputs: an `.npz`, an `.npy` (one-input models), a folder of `<input>.npy`/`.pb` files,
    /// a `test_data_set_N` folder of `input_K.pb`, or a folder of `test_data_set_*` folders
    /// (each is run).
    #[arg(long, value_name = "DATA")]
    inputs: PathBuf,
    /// Save the outputs: an `.npz`, or a folder (one `.npy`/`.pb` per output; with several
    /// samples, one `test_data_set_N` subfolder each).
    #[arg(long, value_name = "PATH")]
    save_outputs: Option<PathBuf>,
    /// Threads ONNX Runtime may use inside one operator (default: its own choice).
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs the model on every sample and prints (and optionally saves) the outputs.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let mut options = SessionOptions::default();
    if let Some(t) = args.threads {
        options = options.with_intra_threads(t);
    }
    let mut session = Session::from_path_with(&args.model, &options)?;
    let specs: Vec<IoSpec> = session.inputs().iter().map(|i| i.spec()).collect();
    let samples = tensors::list_samples(&args.inputs)?;
    let many = samples.len() > 1;
    for (n, sample) in samples.iter().enumerate() {
        let inputs = tensors::read_values(sample, &specs)?;
        let outputs = session.run(&inputs).map_err(|source| CliError::Inputs {
            path: sample.clone(),
            source,
        })?;
        if many {
            println!("{}:", sample.display());
        }
        print!("{}", summary(&outputs));
        if let Some(dest) = &args.save_outputs {
            let path = if many {
                dest.join(format!("test_data_set_{n}"))
            } else {
                dest.clone()
            };
            save(&path, &outputs)?;
        }
    }
    if let Some(dest) = &args.save_outputs {
        println!("saved outputs to {}", dest.display());
    }
    Ok(Outcome::Success)
}

fn save(path: &Path, outputs: &NamedValues) -> Result<(), CliError> {
    let is_file = path.extension().is_some_and(|e| e == "npz");
    if !is_file {
        std::fs::create_dir_all(path).map_err(|source| CliError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    tensors::write_values(path, outputs)?;
    Ok(())
}

/// One line per output: name, type and shape, and for numbers min / mean / max.
fn summary(outputs: &NamedValues) -> String {
    let rows: Vec<Vec<String>> = outputs
        .iter()
        .map(|(name, value)| {
            let mut row = vec![format!("  {name}"), value.describe()];
            if let Some(stats) = value.as_tensor().and_then(|t| t.to_f64_vec()) {
                row.push(stats_text(&stats));
            }
            row
        })
        .collect();
    render::table(&rows)
}

fn stats_text(values: &[f64]) -> String {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let non_finite = values.len() - finite.len();
    let mut text = if finite.is_empty() {
        "no finite values".to_string()
    } else {
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        format!("min {min:.6}  mean {mean:.6}  max {max:.6}")
    };
    if non_finite > 0 {
        text.push_str(&format!("  ({non_finite} NaN/Inf)"));
    }
    text
}
