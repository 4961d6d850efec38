//! Opening a model file as the commands need it: decoded, external data mapped, as a graph.

use std::path::Path;

use kiln_passes::ir::Model;
use kiln_proto::LoadedModel;

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
