//! Encoding and saving models, with tensors embedded or moved to an external data file.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::atomic::{folder_of, BackgroundSync, PendingFile, StreamBuf};
use crate::digest::Hashing;
use crate::error::{ExternalDataError, ProtoError};
use crate::external::{check_location, location_of, write_payload, MappedFiles};
use crate::load::LoadedModel;
use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::{ModelProto, StringStringEntryProto, TensorProto};
use crate::walk::{for_each_tensor_mut, try_for_each_tensor};

/// The most bytes a protobuf message may have: readers (C++ protobuf, hence onnx and ORT)
/// use a signed 32-bit size.
pub const PROTOBUF_LIMIT: u64 = i32::MAX as u64;

/// Default `size_threshold`: tensors of at least this many bytes go to the data file (as in
/// the onnx Python package).
pub const DEFAULT_SIZE_THRESHOLD: u64 = 1024;

/// Tensors of at least this many bytes start on a 4096-byte boundary (page size, what ORT
/// needs to map them directly); smaller ones on a 64-byte boundary (cache line / SIMD).
const PAGE_ALIGN_MIN: u64 = 64 * 1024;
const PAGE_ALIGN: u64 = 4096;
const SMALL_ALIGN: u64 = 64;

/// Where tensor data goes when saving.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ExternalData {
    /// Everything inside the model file (switches to `External` by itself past 2 GiB).
    #[default]
    Embed,
    /// Tensors of at least `size_threshold` bytes go to one data file next to the model.
    External {
        /// The data file, relative to the model's folder; default `<model file name>.data`.
        location: Option<String>,
        /// Tensors with at least this many bytes of data go out.
        size_threshold: u64,
    },
}

impl ExternalData {
    /// `External` with the default location and threshold.
    pub fn external() -> Self {
        ExternalData::External {
            location: None,
            size_threshold: DEFAULT_SIZE_THRESHOLD,
        }
    }
}

/// How to save a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// Embedded or external tensor data.
    pub external: ExternalData,
}

/// What `save_model` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveSummary {
    /// The model file.
    pub model_path: PathBuf,
    /// Its size in bytes.
    pub model_bytes: u64,
    /// The external data file, if one was written.
    pub data_path: Option<PathBuf>,
    /// Its size in bytes (0 when none).
    pub data_bytes: u64,
    /// Tensors whose data went to the data file (tensors sharing one buffer count each).
    pub external_tensors: usize,
    /// True when `Embed` was asked for but the model would pass 2 GiB, so data went external.
    pub switched_to_external: bool,
    /// Things the caller should tell the user.
    pub warnings: Vec<String>,
    /// SHA-256 (hex) of the model file, computed while writing (only by [`prepare_save`]).
    pub model_sha256: Option<String>,
    /// SHA-256 (hex) of the data file, computed while writing (only by [`prepare_save`]).
    pub data_sha256: Option<String>,
}

/// A save written and flushed to temporary files beside its destinations, not yet renamed
/// into place: [`PendingSave::commit`] renames (data file first), dropping it deletes them.
/// Lets a caller writing several files rename them all only once every one is written.
pub struct PendingSave {
    data: Option<PendingFile>,
    model: PendingFile,
    summary: SaveSummary,
}

impl std::fmt::Debug for PendingSave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSave")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl PendingSave {
    /// What will be in place after `commit` (sizes and digests are final).
    pub fn summary(&self) -> &SaveSummary {
        &self.summary
    }

    /// Renames the files into place: the data file first, so a model file never points at
    /// data that is not there yet.
    pub fn commit(self) -> Result<SaveSummary, ProtoError> {
        if let Some(data) = self.data {
            data.commit()?;
        }
        self.model.commit()?;
        Ok(self.summary)
    }
}

/// Encodes `model` in memory; fails past the 2 GiB protobuf limit.
pub fn encode_model(model: &ModelProto) -> Result<Vec<u8>, ProtoError> {
    let size = model.encoded_len() as u64;
    if size > PROTOBUF_LIMIT {
        return Err(ProtoError::TooLarge {
            path: PathBuf::from("<memory>"),
            size,
            limit: PROTOBUF_LIMIT,
            hint: "; save it with external data instead",
        });
    }
    Ok(model.encode_to_vec())
}

/// Saves `model` to `path` atomically, as `opts` says.
///
/// Tensor bytes are written from memory; when they come from a loaded model's maps, prefer
/// `save_loaded`, which copies them file to file.
pub fn save_model(
    model: &ModelProto,
    path: &Path,
    opts: &SaveOptions,
) -> Result<SaveSummary, ProtoError> {
    save_impl(model, path, opts, None, PROTOBUF_LIMIT)
}

/// Saves `model` (usually `loaded.model` or a rewrite of it), copying tensor data that is
/// still a slice of `loaded`'s memory maps file to file inside the kernel.
pub fn save_loaded(
    loaded: &LoadedModel,
    model: &ModelProto,
    path: &Path,
    opts: &SaveOptions,
) -> Result<SaveSummary, ProtoError> {
    save_impl(model, path, opts, Some(loaded.sources()), PROTOBUF_LIMIT)
}

/// Like `save_loaded`, with the maps given directly (e.g. kept from `LoadedModel::sources`
/// after the `LoadedModel` itself was taken apart).
pub fn save_model_with_sources(
    model: &ModelProto,
    path: &Path,
    opts: &SaveOptions,
    sources: &MappedFiles,
) -> Result<SaveSummary, ProtoError> {
    save_impl(model, path, opts, Some(sources), PROTOBUF_LIMIT)
}

/// Writes `model` as `save_model_with_sources` would (`sources` may be `None`), computing the
/// SHA-256 of every file while writing it, and stops before renaming into place: the caller
/// commits the returned [`PendingSave`]. Weights still mapped from a loaded file are read
/// (to be hashed) rather than copied in the kernel, their pages released as they go.
pub fn prepare_save(
    model: &ModelProto,
    path: &Path,
    opts: &SaveOptions,
    sources: Option<&MappedFiles>,
) -> Result<PendingSave, ProtoError> {
    prepare_impl(model, path, opts, sources, PROTOBUF_LIMIT, true)
}

/// One tensor payload to append to the data file.
struct Job {
    offset: u64,
    data: Bytes,
}

pub(crate) fn save_impl(
    model: &ModelProto,
    path: &Path,
    opts: &SaveOptions,
    sources: Option<&MappedFiles>,
    limit: u64,
) -> Result<SaveSummary, ProtoError> {
    prepare_impl(model, path, opts, sources, limit, false)?.commit()
}

/// Writes the temporary files of a save; `hash` computes their SHA-256 on the way.
fn prepare_impl(
    model: &ModelProto,
    path: &Path,
    opts: &SaveOptions,
    sources: Option<&MappedFiles>,
    limit: u64,
    hash: bool,
) -> Result<PendingSave, ProtoError> {
    // A reference to external data we did not resolve would point relative to the wrong
    // folder after saving, or to nothing: refuse before writing anything.
    try_for_each_tensor(model, |tensor, site| {
        if tensor.data_location == DataLocation::External as i32 {
            return Err(ProtoError::ExternalData {
                path: path.to_path_buf(),
                tensor: site.describe(tensor),
                problem: ExternalDataError::Unresolved(location_of(tensor)),
            });
        }
        Ok(())
    })?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ProtoError::Save {
            path: path.to_path_buf(),
            reason: "the destination has no file name (or one that is not UTF-8)".to_string(),
        })?;

    let mut warnings = Vec::new();
    let mut switched = false;
    let (location, threshold) = match &opts.external {
        ExternalData::Embed => {
            let size = model.encoded_len() as u64;
            if size <= limit {
                let mut pending = PendingFile::create(path)?;
                let (model_bytes, model_sha256) = encode_into(model, &mut pending, hash)?;
                pending.sync()?;
                return Ok(PendingSave {
                    data: None,
                    model: pending,
                    summary: SaveSummary {
                        model_path: path.to_path_buf(),
                        model_bytes,
                        data_path: None,
                        data_bytes: 0,
                        external_tensors: 0,
                        switched_to_external: false,
                        warnings,
                        model_sha256,
                        data_sha256: None,
                    },
                });
            }
            switched = true;
            let location = format!("{file_name}.data");
            warnings.push(format!(
                "{}: the model is {size} bytes, over the 2 GiB protobuf limit; tensors of {DEFAULT_SIZE_THRESHOLD} bytes or more were saved to external data file '{location}'",
                path.display()
            ));
            (location, DEFAULT_SIZE_THRESHOLD)
        }
        ExternalData::External {
            location,
            size_threshold,
        } => (
            location
                .clone()
                .unwrap_or_else(|| format!("{file_name}.data")),
            *size_threshold,
        ),
    };

    check_location(&location).map_err(|problem| ProtoError::Save {
        path: path.to_path_buf(),
        reason: format!("bad external data location: {problem}"),
    })?;
    let data_path = folder_of(path).join(&location);
    if same_file_name(&location, file_name) {
        return Err(ProtoError::Save {
            path: path.to_path_buf(),
            reason: format!("the external data location '{location}' is the model file itself"),
        });
    }

    let Externalized {
        model: out,
        jobs,
        data_len,
        tensors,
    } = externalize(model, &location, threshold);
    let size = out.encoded_len() as u64;
    if size > limit {
        return Err(ProtoError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
            hint: "; even with external data (string tensors, small tensors and typed fields of uncommon types stay inside); lower the size threshold",
        });
    }

    let (pending_data, data_sha256) = if jobs.is_empty() {
        (None, None)
    } else {
        let (pending, digest) = write_data(&data_path, &jobs, data_len, sources, hash)?;
        (Some(pending), digest)
    };
    let mut pending_model = PendingFile::create(path)?;
    let (model_bytes, model_sha256) = encode_into(&out, &mut pending_model, hash)?;
    pending_model.sync()?;
    Ok(PendingSave {
        data: pending_data,
        model: pending_model,
        summary: SaveSummary {
            model_path: path.to_path_buf(),
            model_bytes,
            data_path: (!jobs.is_empty()).then_some(data_path),
            data_bytes: data_len,
            external_tensors: tensors,
            switched_to_external: switched,
            warnings,
            model_sha256,
            data_sha256,
        },
    })
}

/// Whether `location` names the model file itself (`model.onnx`, `./model.onnx`).
fn same_file_name(location: &str, file_name: &str) -> bool {
    let mut parts = location
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".");
    parts.next() == Some(file_name) && parts.next().is_none()
}

/// A copy of a model with big tensors pointing into the data file.
struct Externalized {
    model: ModelProto,
    /// Payloads to write, in file order.
    jobs: Vec<Job>,
    /// Length of the data file.
    data_len: u64,
    /// Tensors that now refer to the data file.
    tensors: usize,
}

fn externalize(model: &ModelProto, location: &str, threshold: u64) -> Externalized {
    // Cloning is cheap for raw_data (Bytes are reference counted), and the caller's model
    // stays untouched.
    let mut out = model.clone();
    let mut jobs: Vec<Job> = Vec::new();
    // Tensors sharing one buffer (same address and length) are written once.
    let mut written: HashMap<(usize, usize), u64> = HashMap::new();
    let mut end: u64 = 0;
    let mut count = 0;
    for_each_tensor_mut(&mut out, |tensor, _| {
        if tensor.data_type == DataType::String as i32 {
            return; // ONNX forbids external string data
        }
        let data = if !tensor.raw_data.is_empty() {
            if (tensor.raw_data.len() as u64) < threshold {
                return;
            }
            std::mem::take(&mut tensor.raw_data)
        } else {
            // Typed fields only for plain little-endian types, and only when big enough.
            if typed_len(tensor).is_none_or(|len| len == 0 || len < threshold) {
                return;
            }
            let Some(bytes) = typed_as_raw(tensor) else {
                return;
            };
            clear_typed(tensor);
            Bytes::from(bytes)
        };
        let len = data.len() as u64;
        let key = (data.as_ptr() as usize, data.len());
        let offset = match written.get(&key) {
            Some(&offset) => offset,
            None => {
                let align = if len >= PAGE_ALIGN_MIN {
                    PAGE_ALIGN
                } else {
                    SMALL_ALIGN
                };
                let offset = end.next_multiple_of(align);
                end = offset + len;
                written.insert(key, offset);
                jobs.push(Job { offset, data });
                offset
            }
        };
        count += 1;
        tensor.data_location = DataLocation::External as i32;
        tensor.external_data = vec![
            entry("location", location.to_string()),
            entry("offset", offset.to_string()),
            entry("length", len.to_string()),
        ];
    });
    Externalized {
        model: out,
        jobs,
        data_len: end,
        tensors: count,
    }
}

fn entry(key: &str, value: String) -> StringStringEntryProto {
    StringStringEntryProto {
        key: key.to_string(),
        value,
    }
}

/// Bytes the typed field would take as raw_data, for the types whose conversion is plain
/// little-endian packing; `None` for the others (they stay inside the model).
fn typed_len(t: &TensorProto) -> Option<u64> {
    use DataType as T;
    let (count, width) = match DataType::try_from(t.data_type).ok()? {
        T::Float | T::Complex64 => (t.float_data.len(), 4),
        T::Double | T::Complex128 => (t.double_data.len(), 8),
        T::Int64 => (t.int64_data.len(), 8),
        T::Int32 => (t.int32_data.len(), 4),
        T::Uint64 => (t.uint64_data.len(), 8),
        T::Uint32 => (t.uint64_data.len(), 4),
        _ => return None,
    };
    Some(count as u64 * width)
}

/// The typed field as raw_data bytes (see `typed_len` for which types).
fn typed_as_raw(t: &TensorProto) -> Option<Vec<u8>> {
    use DataType as T;
    let mut out = Vec::with_capacity(usize::try_from(typed_len(t)?).ok()?);
    match DataType::try_from(t.data_type).ok()? {
        T::Float | T::Complex64 => t
            .float_data
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        T::Double | T::Complex128 => t
            .double_data
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        T::Int64 => t
            .int64_data
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        T::Int32 => t
            .int32_data
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        T::Uint64 => t
            .uint64_data
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        // UINT32 values live in uint64_data, one per entry.
        T::Uint32 => t
            .uint64_data
            .iter()
            .for_each(|v| out.extend((*v as u32).to_le_bytes())),
        _ => return None,
    }
    Some(out)
}

fn clear_typed(t: &mut TensorProto) {
    t.float_data = Vec::new();
    t.double_data = Vec::new();
    t.int64_data = Vec::new();
    t.int32_data = Vec::new();
    t.uint64_data = Vec::new();
}

/// Writes the payloads into a temporary data file, synced but not yet renamed; with `hash`,
/// also returns its SHA-256.
fn write_data(
    data_path: &Path,
    jobs: &[Job],
    data_len: u64,
    sources: Option<&MappedFiles>,
    hash: bool,
) -> Result<(PendingFile, Option<String>), ProtoError> {
    let mut pending = PendingFile::create(data_path)?;
    let io_err = |source| ProtoError::Io {
        path: data_path.to_path_buf(),
        action: "cannot write",
        source,
    };
    let file = pending.file().try_clone().map_err(io_err)?;
    let mut syncer = BackgroundSync::start(file.try_clone().map_err(io_err)?);
    let mut out = BufWriter::with_capacity(1 << 20, Hashing::new(file, hash));
    let mut pos: u64 = 0;
    for job in jobs {
        // Padding up to the aligned offset (< PAGE_ALIGN); offsets were computed in this order.
        const ZEROS: [u8; PAGE_ALIGN as usize] = [0; PAGE_ALIGN as usize];
        let pad = (job.offset - pos) as usize;
        out.write_all(&ZEROS[..pad]).map_err(io_err)?;
        write_payload(&job.data, sources, &mut out).map_err(io_err)?;
        pos = job.offset + job.data.len() as u64;
        syncer.wrote(pad as u64 + job.data.len() as u64);
    }
    out.flush().map_err(io_err)?;
    debug_assert_eq!(pos, data_len);
    let digest = out
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .finish();
    syncer.finish().map_err(|source| ProtoError::Io {
        path: data_path.to_path_buf(),
        action: "cannot flush to disk",
        source,
    })?;
    pending.sync()?;
    Ok((pending, digest))
}

/// Streams the encoded model into the pending file; returns its size, and with `hash` its
/// SHA-256.
fn encode_into(
    model: &ModelProto,
    pending: &mut PendingFile,
    hash: bool,
) -> Result<(u64, Option<String>), ProtoError> {
    let dest = pending.dest.clone();
    let mut stream = StreamBuf::with_digest(pending.file(), hash);
    // Cannot fail: StreamBuf reports unbounded room; write errors come out of `finish`.
    model.encode(&mut stream).map_err(|e| ProtoError::Save {
        path: dest.clone(),
        reason: format!("protobuf encoding failed: {e}"),
    })?;
    stream
        .finish_with_digest()
        .map_err(|source| ProtoError::Io {
            path: dest,
            action: "cannot write",
            source,
        })
}
