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
    let io = |source| CliError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
    // The temporary file is private (0600); a report is for others to read too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
