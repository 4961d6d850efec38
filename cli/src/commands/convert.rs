//! `kiln convert MODEL -o OUT [--external-data [--size-threshold BYTES]]`: load → graph → save.

use std::path::PathBuf;

use super::Outcome;
use crate::error::CliError;
use crate::model_file;
use crate::render;

/// Arguments of `kiln convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to read.
    model: PathBuf,
    /// Where to write the model.
    #[arg(short, long)]
    output: PathBuf,
    /// Weights embedded (default, unless the model would pass the 2 GiB protobuf limit) or in
    /// a data file beside the output.
    #[command(flatten)]
    weights: model_file::WeightsArgs,
    /// With --external-data: the data file's name, relative to the output's folder
    /// (default: `<output file name>.data`).
    #[arg(long, requires = "external_data", value_name = "NAME")]
    location: Option<String>,
}

/// Loads, converts to the graph and back, and saves.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let file = model_file::open(&args.model)?;
    let summary = file.save(&args.output, args.weights.external(args.location))?;
    for w in &summary.warnings {
        eprintln!("kiln: warning: {w}");
    }
    let mut line = format!(
        "wrote {} ({})",
        summary.model_path.display(),
        render::bytes(summary.model_bytes)
    );
    if let Some(data) = &summary.data_path {
        line.push_str(&format!(
            " + {} ({}, {} tensors)",
            data.display(),
            render::bytes(summary.data_bytes),
            summary.external_tensors
        ));
    }
    println!("{line}");
    Ok(Outcome::Success)
}
