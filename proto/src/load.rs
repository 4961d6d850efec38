//! Loading: memory-map, decode with prost (tensor payloads stay slices of the map), check that
//! what came out is a model, then resolve external data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::error::ProtoError;
use crate::external::{resolve_external_data, ExternalFile, Mapped, MappedFiles};
use crate::limits::{self, Limits};
use crate::onnx::ModelProto;

/// A decoded model with its external data resolved into `raw_data` slices of memory maps.
pub struct LoadedModel {
    /// The model; no tensor in it has `data_location == EXTERNAL` any more.
    pub model: ModelProto,
    /// The model file (or the origin given to `decode_model`).
    pub path: PathBuf,
    /// The external data files read, in first-use order.
    pub external_files: Vec<ExternalFile>,
    /// The maps behind the tensors, for `save_loaded`'s file-to-file copies.
    sources: MappedFiles,
}

impl std::fmt::Debug for LoadedModel {
    // The model itself is left out: its Debug form prints every weight byte.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .field("external_files", &self.external_files)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// The memory-mapped files (model file and external data) the tensors point into.
    pub fn sources(&self) -> &MappedFiles {
        &self.sources
    }
}

/// Loads `path`, memory-mapped, and resolves its external data relative to its folder.
pub fn load_model(path: &Path) -> Result<LoadedModel, ProtoError> {
    let io_err = |action| {
        move |source| ProtoError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    let meta = std::fs::metadata(path).map_err(io_err("cannot open"))?;
    if !meta.is_file() {
        return Err(ProtoError::Io {
            path: path.to_path_buf(),
            action: "cannot load",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let mapped = Arc::new(Mapped::open(path).map_err(io_err("cannot read"))?);
    let bytes = mapped.bytes.clone();
    let mut sources = MappedFiles::default();
    // The model file is a source too: saving its embedded tensors externally copies them
    // file to file.
    sources.push(mapped);
    decode_with_sources(bytes, path, sources)
}

/// Decodes a model from memory; external data is resolved relative to `origin`'s folder,
/// and `origin` names the model in errors.
pub fn decode_model(bytes: Bytes, origin: &Path) -> Result<LoadedModel, ProtoError> {
    decode_with_sources(bytes, origin, MappedFiles::default())
}

fn decode_with_sources(
    bytes: Bytes,
    origin: &Path,
    mut sources: MappedFiles,
) -> Result<LoadedModel, ProtoError> {
    let limits = Limits::from_env()?;
    // Measure before believing: counts and depth come from the wire, before prost allocates.
    limits.check_counts(&limits::scan(&bytes, &limits), origin)?;
    // Decoding from `Bytes` makes every bytes field a slice of it: no payload is copied.
    let mut model = ModelProto::decode(bytes).map_err(|source| decode_error(origin, source))?;
    check_is_model(&model, origin)?;
    let folder = match origin.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let external_files = resolve_external_data(&mut model, folder, origin, &mut sources)?;
    limits::check_tensors(&model, origin, &limits)?;
    Ok(LoadedModel {
        model,
        path: origin.to_path_buf(),
        external_files,
        sources,
    })
}

/// Protobuf decodes many byte strings (an empty file, for one) into a message of defaults;
/// a model has at least a graph and an IR version.
fn check_is_model(model: &ModelProto, path: &Path) -> Result<(), ProtoError> {
    let reason = match (model.graph.is_some(), model.ir_version > 0) {
        (true, true) => return Ok(()),
        (false, false) => "no graph, no IR version",
        (false, true) => "no graph",
        (true, false) => "no IR version",
    };
    Err(ProtoError::NotAModel {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })
}

/// prost's nesting limit is fixed at 100 messages; say so instead of "recursion limit reached".
fn decode_error(path: &Path, source: prost::DecodeError) -> ProtoError {
    if source.to_string().contains("recursion limit") {
        return ProtoError::Limit {
            path: path.to_path_buf(),
            message: "messages nested deeper than the protobuf decoder's fixed limit of 100 \
                      (about 30 nested subgraphs); this limit cannot be raised"
                .to_string(),
        };
    }
    ProtoError::Decode {
        path: path.to_path_buf(),
        source,
    }
}
