//! Opening a model file as the commands need it: decoded, external data mapped, as a graph.

use std::path::Path;

use kiln_passes::ir::Model;
use kiln_proto::{ExternalData, LoadedModel, SaveOptions, SaveSummary, DEFAULT_SIZE_THRESHOLD};

use crate::error::CliError;

/// A model file loaded and converted to Kiln's graph (which is verified).
pub struct ModelFile {
    /// The decoded protobuf and the maps that back its weights.
    pub loaded: LoadedModel,
    /// The graph.
    pub model: Model,
}

/// Loads `path`, resolves external data, builds and verifies the graph.
pub fn open(path: &Path) -> Result<ModelFile, CliError> {
    let loaded = kiln_proto::load_model(path)?;
    let model = Model::from_proto(&loaded.model).map_err(|e| CliError::graph(path, e))?;
    model.graph.verify().map_err(|e| CliError::graph(path, e))?;
    Ok(ModelFile { loaded, model })
}

/// Creates the folder an output file goes in, so `-o out/model.onnx` works on a fresh checkout.
pub fn create_parent(output: &Path) -> Result<(), CliError> {
    match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| CliError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Writes a small text file (a report) atomically: a temporary file beside it, then a rename.
pub fn write_text(path: &Path, text: &str) -> Result<(), CliError> {
    create_parent(path)?;
    // Same temporary names as model saves, so a killed run's leftovers are cleaned up too.
    kiln_proto::write_file(path, text.as_bytes())?;
    Ok(())
}

/// Where a written model's weights go: `--external-data [--size-threshold BYTES]`.
#[derive(Debug, Clone, clap::Args)]
pub struct WeightsArgs {
    /// Store weights in a data file beside the output.
    #[arg(long)]
    pub external_data: bool,
    /// With --external-data: tensors of at least this many bytes go to the data file.
    #[arg(long, requires = "external_data", value_name = "BYTES", default_value_t = DEFAULT_SIZE_THRESHOLD)]
    pub size_threshold: u64,
}

impl WeightsArgs {
    /// Embedded, or external with the threshold and the data file named `location` (default:
    /// beside the model, named after it).
    pub fn external(&self, location: Option<String>) -> ExternalData {
        if self.external_data {
            ExternalData::External {
                location,
                size_threshold: self.size_threshold,
            }
        } else {
            ExternalData::Embed
        }
    }
}

impl ModelFile {
    /// Writes the (rewritten) graph to `output` atomically, creating its folder; weights still
    /// mapped from the input are copied file to file.
    pub fn save(&self, output: &Path, external: ExternalData) -> Result<SaveSummary, CliError> {
        create_parent(output)?;
        Ok(kiln_proto::save_loaded(
            &self.loaded,
            &self.model.to_proto(),
            output,
            &SaveOptions { external },
        )?)
    }
}
