//! `kiln convert MODEL -o OUT [--external-data [--size-threshold BYTES]]`: load → graph → save.

use std::path::PathBuf;

use kiln_proto::{ExternalData, SaveOptions, DEFAULT_SIZE_THRESHOLD};

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
    /// Store weights in a separate data file beside the output (default: embedded, unless the
    /// model would pass the 2 GiB protobuf limit).
    #[arg(long)]
    external_data: bool,
    /// With --external-data: tensors of at least this many bytes go to the data file.
    #[arg(long, requires = "external_data", value_name = "BYTES", default_value_t = DEFAULT_SIZE_THRESHOLD)]
    size_threshold: u64,
    /// With --external-data: the data file's name, relative to the output's folder
    /// (default: `<output file name>.data`).
    #[arg(long, requires = "external_data", value_name = "NAME")]
    location: Option<String>,
}

/// Loads, converts to the graph and back, and saves.
pub fn run(args: Args) -> Result<Outcome, CliError> {
    let file = model_file::open(&args.model)?;
    let proto = file.model.to_proto();
    let external = if args.external_data {
        ExternalData::External {
            location: args.location,
            size_threshold: args.size_threshold,
        }
    } else {
        ExternalData::Embed
    };
    crate::model_file::create_parent(&args.output)?;
    let summary = kiln_proto::save_loaded(
        &file.loaded,
        &proto,
        &args.output,
        &SaveOptions { external },
    )?;
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
