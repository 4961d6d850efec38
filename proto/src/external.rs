//! External data: confining locations to the model folder, mapping the files once, and
//! remembering which memory ranges belong to which file so saving can copy file to file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{ExternalDataError, ProtoError};
use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::{ModelProto, TensorProto};
use crate::walk::try_for_each_tensor_mut;

/// One external data file a loaded model reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFile {
    /// The file, canonicalized (symbolic links resolved).
    pub path: PathBuf,
    /// Bytes mapped (the whole file).
    pub size: u64,
    /// How many tensors take their data from it.
    pub tensors: usize,
}

/// Checks a `location` string without touching the file system.
///
/// Both `/` and `\` count as separators: a model is a portable file, and `a\..\b` escapes the
/// folder on Windows even though it is one odd file name on Linux.
pub fn check_location(location: &str) -> Result<(), ExternalDataError> {
    let owned = || location.to_string();
    if location.is_empty() {
        return Err(ExternalDataError::NoLocation);
    }
    if location.starts_with("\\\\") || location.starts_with("//") {
        return Err(ExternalDataError::Unc(owned()));
    }
    let bytes = location.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(ExternalDataError::WindowsDrive(owned()));
    }
    if location.starts_with('/') || location.starts_with('\\') || Path::new(location).is_absolute()
    {
        return Err(ExternalDataError::Absolute(owned()));
    }
    if location.split(['/', '\\']).any(|part| part == "..") {
        return Err(ExternalDataError::ParentComponent(owned()));
    }
    // Belt and braces: whatever Path itself considers a prefix, root or parent is refused too.
    for component in Path::new(location).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(ExternalDataError::ParentComponent(owned())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ExternalDataError::Absolute(owned()))
            }
        }
    }
    Ok(())
}

/// A file Kiln has memory-mapped, with an open handle for kernel-side copies.
pub(crate) struct Mapped {
    pub(crate) path: PathBuf,
    /// The whole file; slices of it are what tensors hold.
    pub(crate) bytes: Bytes,
    /// The handle the map was made from: same inode even if the path is replaced later (e.g.
    /// by saving over it). Behind a mutex because copies seek it.
    pub(crate) file: Mutex<File>,
}

impl Mapped {
    /// Opens and maps `path` read-only; an empty file maps to an empty `Bytes`.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let bytes = crate::pages::map_file(&file)?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            file: Mutex::new(file),
        })
    }

    /// Copies `len` bytes at `offset` of this file to `dst` inside the kernel (copy_file_range
    /// or sendfile on Linux), so the mapped pages are never touched and RSS stays flat.
    pub(crate) fn copy_range(&self, offset: u64, len: u64, dst: &mut File) -> io::Result<()> {
        let guard = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut src: &File = &guard;
        src.seek(SeekFrom::Start(offset))?;
        let copied = io::copy(&mut src.take(len), dst)?;
        if copied != len {
            // The file shrank since it was mapped: fail rather than write a short tensor.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "'{}' ended after {copied} of {len} bytes at offset {offset} (was it truncated?)",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }
}

/// Memory-mapped files whose bytes a loaded model's tensors point into.
///
/// Saving asks it where a tensor's `raw_data` comes from: if the bytes are a slice of a mapped
/// file, they are copied file to file by the kernel instead of through the mapping. Cloning is
/// cheap (shared handles); holding it keeps the maps alive.
#[derive(Clone, Default)]
pub struct MappedFiles {
    files: Vec<Arc<Mapped>>,
}

impl std::fmt::Debug for MappedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|m| (&m.path, m.bytes.len())))
            .finish()
    }
}

impl MappedFiles {
    pub(crate) fn push(&mut self, mapped: Arc<Mapped>) {
        self.files.push(mapped);
    }

    /// The mapped file containing all of `data`, and the offset of `data` in it.
    pub fn locate(&self, data: &[u8]) -> Option<(&Path, u64)> {
        self.find(data)
            .map(|(m, offset)| (m.path.as_path(), offset))
    }

    /// The files, in the order they were mapped.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|m| m.path.as_path())
    }

    pub(crate) fn find(&self, data: &[u8]) -> Option<(&Mapped, u64)> {
        if data.is_empty() {
            return None;
        }
        // Address comparison only: the maps are alive as long as `self`, so their ranges
        // cannot be reused by other allocations while we compare.
        let start = data.as_ptr() as usize;
        let end = start.checked_add(data.len())?;
        self.files.iter().find_map(|m| {
            let base = m.bytes.as_ptr() as usize;
            let limit = base + m.bytes.len();
            (start >= base && end <= limit).then(|| (m.as_ref(), (start - base) as u64))
        })
    }
}

/// Bits per element for fixed-size types; `None` for STRING, UNDEFINED and unknown types.
fn element_bits(data_type: i32) -> Option<u64> {
    use DataType as T;
    let t = DataType::try_from(data_type).ok()?;
    Some(match t {
        T::Undefined | T::String => return None,
        T::Uint2 | T::Int2 => 2,
        T::Uint4 | T::Int4 | T::Float4e2m1 => 4,
        T::Uint8 | T::Int8 | T::Bool => 8,
        T::Float8e4m3fn | T::Float8e4m3fnuz | T::Float8e5m2 | T::Float8e5m2fnuz | T::Float8e8m0 => {
            8
        }
        T::Uint16 | T::Int16 | T::Float16 | T::Bfloat16 => 16,
        T::Float | T::Int32 | T::Uint32 => 32,
        T::Int64 | T::Uint64 | T::Double | T::Complex64 => 64,
        T::Complex128 => 128,
    })
}

/// Bytes a tensor's data must have, when dims and type determine it (sub-byte types pack,
/// rounding up). `None` when unknown: strings, unknown types, negative or overflowing dims.
fn expected_bytes(tensor: &TensorProto) -> Option<u64> {
    let bits = element_bits(tensor.data_type)?;
    let mut count: u64 = 1;
    for &d in &tensor.dims {
        count = count.checked_mul(u64::try_from(d).ok()?)?;
    }
    Some(count.checked_mul(bits)?.div_ceil(8))
}

fn parse_number(key: &'static str, value: &str) -> Result<u64, ExternalDataError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| ExternalDataError::BadNumber {
            key,
            value: value.to_string(),
        })
}

/// The `location`, `offset` and `length` of a tensor's external data (last entry wins, as in
/// the onnx Python package).
struct Reference {
    location: String,
    offset: u64,
    length: Option<u64>,
}

fn reference(tensor: &TensorProto) -> Result<Reference, ExternalDataError> {
    let mut location = None;
    let mut offset = 0;
    let mut length = None;
    for entry in &tensor.external_data {
        match entry.key.as_str() {
            "location" => location = Some(entry.value.clone()),
            "offset" => offset = parse_number("offset", &entry.value)?,
            "length" => length = Some(parse_number("length", &entry.value)?),
            _ => {} // checksum and future keys: not needed to read the data
        }
    }
    let location = location.ok_or(ExternalDataError::NoLocation)?;
    Ok(Reference {
        location,
        offset,
        length,
    })
}

/// The location of an unresolved external tensor, for messages.
pub(crate) fn location_of(tensor: &TensorProto) -> String {
    tensor
        .external_data
        .iter()
        .rev()
        .find(|e| e.key == "location")
        .map(|e| e.value.clone())
        .unwrap_or_default()
}

/// Resolves locations against one model folder, mapping each file once.
struct Resolver<'a> {
    folder: &'a Path,
    /// The folder canonicalized, computed on first need: models without external data may
    /// come from a folder that does not exist (`decode_model` with a made-up origin).
    canonical_folder: Option<PathBuf>,
    /// Canonical path → (map, tensors read from it).
    maps: HashMap<PathBuf, (Arc<Mapped>, usize)>,
    order: Vec<PathBuf>,
}

impl Resolver<'_> {
    fn canonical_folder(&mut self, location: &str) -> Result<PathBuf, ExternalDataError> {
        if let Some(folder) = &self.canonical_folder {
            return Ok(folder.clone());
        }
        let folder =
            self.folder
                .canonicalize()
                .map_err(|source| ExternalDataError::Unreadable {
                    location: location.to_string(),
                    path: self.folder.to_path_buf(),
                    source,
                })?;
        self.canonical_folder = Some(folder.clone());
        Ok(folder)
    }

    /// Validates `location` and returns the mapped file it names.
    fn open(&mut self, location: &str) -> Result<Arc<Mapped>, ExternalDataError> {
        check_location(location)?;
        let folder = self.canonical_folder(location)?;
        let joined = folder.join(location);
        let resolved = joined.canonicalize().map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ExternalDataError::Missing {
                    location: location.to_string(),
                    path: joined.clone(),
                }
            } else {
                ExternalDataError::Unreadable {
                    location: location.to_string(),
                    path: joined.clone(),
                    source,
                }
            }
        })?;
        // Symbolic links can point anywhere; only the resolved path counts.
        if !resolved.starts_with(&folder) {
            return Err(ExternalDataError::OutsideFolder {
                location: location.to_string(),
                resolved,
                folder,
            });
        }
        if let Some((mapped, count)) = self.maps.get_mut(&resolved) {
            *count += 1;
            return Ok(mapped.clone());
        }
        let unreadable = |source| ExternalDataError::Unreadable {
            location: location.to_string(),
            path: resolved.clone(),
            source,
        };
        let meta = std::fs::metadata(&resolved).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(ExternalDataError::NotAFile(location.to_string()));
        }
        let mapped = Arc::new(Mapped::open(&resolved).map_err(unreadable)?);
        self.maps.insert(resolved.clone(), (mapped.clone(), 1));
        self.order.push(resolved);
        Ok(mapped)
    }

    fn resolve(&mut self, tensor: &mut TensorProto) -> Result<(), ExternalDataError> {
        if tensor.data_type == DataType::String as i32 {
            return Err(ExternalDataError::StringTensor);
        }
        let r = reference(tensor)?;
        let mapped = self.open(&r.location)?;
        let file_len = mapped.bytes.len() as u64;
        if r.offset > file_len {
            return Err(ExternalDataError::OffsetPastEnd {
                location: r.location,
                offset: r.offset,
                file_len,
            });
        }
        let length = r.length.unwrap_or(file_len - r.offset);
        let end = r
            .offset
            .checked_add(length)
            .ok_or(ExternalDataError::Overflow {
                offset: r.offset,
                length,
            })?;
        if end > file_len {
            return Err(ExternalDataError::RangePastEnd {
                location: r.location,
                offset: r.offset,
                length,
                file_len,
            });
        }
        // A segment tensor holds part of a larger tensor: dims do not describe its bytes.
        if tensor.segment.is_none() {
            if let Some(expected) = expected_bytes(tensor) {
                if expected != length {
                    return Err(ExternalDataError::LengthMismatch {
                        actual: length,
                        expected,
                        dims: tensor.dims.clone(),
                        data_type: tensor.data_type,
                    });
                }
            }
        }
        // Both bounds are <= file_len, which fits in usize because the file is mapped.
        tensor.raw_data = mapped.bytes.slice(r.offset as usize..end as usize);
        tensor.external_data.clear();
        tensor.data_location = DataLocation::Default as i32;
        Ok(())
    }
}

/// Replaces every external reference in `model` by a zero-copy slice of the mapped file.
///
/// `folder` is the model's folder; `model_path` names the model in errors. Maps made are
/// added to `sources`; returns the files read, in first-use order.
pub(crate) fn resolve_external_data(
    model: &mut ModelProto,
    folder: &Path,
    model_path: &Path,
    sources: &mut MappedFiles,
) -> Result<Vec<ExternalFile>, ProtoError> {
    let mut resolver = Resolver {
        folder,
        canonical_folder: None,
        maps: HashMap::new(),
        order: Vec::new(),
    };
    try_for_each_tensor_mut(model, |tensor, site| {
        if tensor.data_location != DataLocation::External as i32 {
            return Ok(());
        }
        resolver
            .resolve(tensor)
            .map_err(|problem| ProtoError::ExternalData {
                path: model_path.to_path_buf(),
                tensor: site.describe(tensor),
                problem,
            })
    })?;
    let mut files = Vec::with_capacity(resolver.order.len());
    for path in resolver.order {
        if let Some((mapped, tensors)) = resolver.maps.remove(&path) {
            files.push(ExternalFile {
                path,
                size: mapped.bytes.len() as u64,
                tensors,
            });
            sources.push(mapped);
        }
    }
    Ok(files)
}

/// Writes `data` to `dst`: by a kernel copy from its source file when `sources` knows it and
/// it is big enough for the syscalls to pay off, else from memory.
pub(crate) fn write_payload(
    data: &Bytes,
    sources: Option<&MappedFiles>,
    dst: &mut io::BufWriter<File>,
) -> io::Result<()> {
    /// Below this, copying from memory is cheaper than seek + copy_file_range.
    const KERNEL_COPY_MIN: usize = 64 * 1024;
    if data.len() >= KERNEL_COPY_MIN {
        if let Some((mapped, offset)) = sources.and_then(|s| s.find(data)) {
            dst.flush()?;
            return mapped.copy_range(offset, data.len() as u64, dst.get_mut());
        }
    }
    dst.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_refused_without_touching_disk() {
        use ExternalDataError as E;
        assert!(matches!(check_location(""), Err(E::NoLocation)));
        assert!(matches!(check_location("/etc/passwd"), Err(E::Absolute(_))));
        assert!(matches!(check_location("\\x.bin"), Err(E::Absolute(_))));
        assert!(matches!(
            check_location("../x.bin"),
            Err(E::ParentComponent(_))
        ));
        assert!(matches!(
            check_location("a/../../x"),
            Err(E::ParentComponent(_))
        ));
        assert!(matches!(
            check_location("a\\..\\x"),
            Err(E::ParentComponent(_))
        ));
        assert!(matches!(
            check_location("C:\\x.bin"),
            Err(E::WindowsDrive(_))
        ));
        assert!(matches!(
            check_location("c:/x.bin"),
            Err(E::WindowsDrive(_))
        ));
        assert!(matches!(
            check_location("\\\\srv\\share\\x"),
            Err(E::Unc(_))
        ));
        assert!(matches!(check_location("//srv/share/x"), Err(E::Unc(_))));
        assert!(check_location("w.bin").is_ok());
        assert!(check_location("./sub/w.bin").is_ok());
        assert!(check_location("..w.bin").is_ok());
    }

    #[test]
    fn expected_bytes_of_types() {
        let t = |data_type: DataType, dims: Vec<i64>| TensorProto {
            data_type: data_type as i32,
            dims,
            ..Default::default()
        };
        assert_eq!(expected_bytes(&t(DataType::Float, vec![2, 3])), Some(24));
        assert_eq!(expected_bytes(&t(DataType::Int4, vec![3])), Some(2));
        assert_eq!(expected_bytes(&t(DataType::Float, vec![])), Some(4));
        assert_eq!(expected_bytes(&t(DataType::String, vec![2])), None);
        assert_eq!(expected_bytes(&t(DataType::Float, vec![-1])), None);
        assert_eq!(
            expected_bytes(&t(DataType::Double, vec![i64::MAX, 4])),
            None
        );
    }

    #[test]
    fn locate_finds_slices_of_maps_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, vec![7u8; 100]).unwrap();
        let mapped = Arc::new(Mapped::open(&path).unwrap());
        let slice = mapped.bytes.slice(10..30);
        let mut files = MappedFiles::default();
        files.push(mapped);
        assert_eq!(files.locate(&slice), Some((path.as_path(), 10)));
        assert_eq!(files.locate(&[7u8; 20]), None);
        assert_eq!(files.locate(&[]), None);
    }
}
