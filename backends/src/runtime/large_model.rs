//! Models past protobuf's 2 GiB limit, loaded without writing anything: the big initializers
//! leave the protobuf as external data. Where they are slices of files loading mapped (the
//! weights a pass did not change) and those files share a folder, the references point into
//! those files and ONNX Runtime maps them itself, as it does for a
//! model loaded from its path (one copy of the weights in memory); weights a pass made stay
//! inside the protobuf when it then fits. Otherwise they become
//! "files" that live in memory, read through `AddExternalInitializersFromMemory` (the data
//! stays where it is, but ONNX Runtime copies it while creating the session).

use std::path::PathBuf;

use bytes::Bytes;
use kiln_proto::onnx::tensor_proto::DataLocation;
use kiln_proto::onnx::{ModelProto, StringStringEntryProto, TensorProto};
use ort::session::builder::SessionBuilder;
use ort::AsPointer;

use super::ffi;

/// Initializers with at least this many bytes leave the protobuf.
const MIN_BYTES: usize = 1024;

/// The session config key naming the folder external data is resolved against when a model
/// is loaded from memory.
pub(crate) const FOLDER_KEY: &str = "session.model_external_initializers_file_folder_path";

/// A model split for ONNX Runtime: the protobuf without its big initializers, and where they
/// are.
pub(crate) struct Split {
    /// The encoded protobuf (small: big initializers are external references).
    pub model: Vec<u8>,
    /// The folder the references resolve against (the file route).
    pub folder: Option<PathBuf>,
    /// The memory route's files: one per moved initializer, its name (the `location`) and
    /// its bytes. The session holds these for as long as it lives.
    pub files: Vec<(String, Bytes)>,
}

/// Whether a model whose protobuf has `encoded_len` bytes goes through [`split`] rather than
/// being encoded whole: past `limit` (the 2 GiB protobuf limit) it cannot be encoded.
pub(crate) fn needs_split(encoded_len: u64, limit: u64) -> bool {
    encoded_len > limit
}

/// Moves the main graph's initializers of at least [`MIN_BYTES`] bytes out of `model` (no
/// tensor bytes are copied) and encodes the rest: by the file route when it can, else the
/// memory route.
pub(crate) fn split(model: &ModelProto) -> Result<Split, String> {
    if let Some(split) = split_to_files(model) {
        return Ok(split);
    }
    split_to_memory(model)
}

/// The big initializers of `model`'s main graph, mutably.
fn big_initializers(model: &mut ModelProto) -> impl Iterator<Item = &mut TensorProto> {
    model
        .graph
        .iter_mut()
        .flat_map(|g| g.initializer.iter_mut())
        .filter(|t| {
            t.raw_data.len() >= MIN_BYTES && t.data_location != DataLocation::External as i32
        })
}

/// Makes `t` an external reference to `length` bytes at `offset` of `location`.
fn refer(t: &mut TensorProto, location: String, offset: u64) -> Bytes {
    let data = std::mem::take(&mut t.raw_data);
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: key.to_string(),
        value,
    };
    t.data_location = DataLocation::External as i32;
    t.external_data = vec![
        entry("location", location),
        entry("offset", offset.to_string()),
        entry("length", data.len().to_string()),
    ];
    data
}

/// The file route: every big initializer mapped from a file refers to it (all such files in
/// one folder), the others stay inside; `None` when the files are in different folders or
/// what stays inside still passes the limit.
fn split_to_files(model: &ModelProto) -> Option<Split> {
    let mut out = model.clone();
    let mut folder: Option<PathBuf> = None;
    for t in big_initializers(&mut out) {
        // Weights a pass made (folded constants, say) stay in the protobuf.
        let Some((path, offset)) = kiln_proto::mapped_location(&t.raw_data) else {
            continue;
        };
        let path = path.canonicalize().ok()?;
        let (parent, name) = (path.parent()?, path.file_name()?.to_str()?);
        match &folder {
            Some(f) if f != parent => return None,
            Some(_) => {}
            None => folder = Some(parent.to_path_buf()),
        }
        refer(t, name.to_string(), offset);
    }
    let model = kiln_proto::encode_model(&out).ok()?;
    Some(Split {
        model,
        folder,
        files: Vec::new(),
    })
}

/// The memory route: every big initializer becomes an in-memory file of its own.
fn split_to_memory(model: &ModelProto) -> Result<Split, String> {
    let mut out = model.clone();
    let mut files = Vec::new();
    for t in big_initializers(&mut out) {
        // A name that cannot be a path ORT would look for on disk.
        let location = format!("kiln-memory-{}.bin", files.len());
        let data = refer(t, location.clone(), 0);
        files.push((location, data));
    }
    let model = kiln_proto::encode_model(&out).map_err(|e| {
        format!("{e} (even with every initializer of {MIN_BYTES} bytes or more moved out)")
    })?;
    Ok(Split {
        model,
        folder: None,
        files,
    })
}

/// Hands `files` to the session being built, so the external references made by [`split`]
/// resolve to them.
pub(crate) fn register(
    builder: &mut SessionBuilder,
    files: &[(String, Bytes)],
) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    let names = files
        .iter()
        .map(|(name, _)| os_string(name))
        .collect::<Result<Vec<_>, _>>()?;
    let name_ptrs: Vec<_> = names.iter().map(|n| n.as_ptr()).collect();
    // The C signature takes `char*`, but ORT only reads the buffers.
    let buffers: Vec<*mut std::ffi::c_char> = files
        .iter()
        .map(|(_, b)| b.as_ptr().cast_mut().cast())
        .collect();
    let lengths: Vec<usize> = files.iter().map(|(_, b)| b.len()).collect();
    // SAFETY: the options pointer is the live builder's; the three arrays have one entry per
    // file and outlive the call (ORT copies the names and the pointers); the buffers stay
    // valid for the session's life because the `Session` keeps the `Bytes`.
    ffi::check(unsafe {
        (ort::api().AddExternalInitializersFromMemory)(
            builder.ptr_mut(),
            name_ptrs.as_ptr(),
            buffers.as_ptr(),
            lengths.as_ptr(),
            files.len(),
        )
    })
}

/// `name` as ONNX Runtime's path characters, NUL-terminated.
#[cfg(not(windows))]
fn os_string(name: &str) -> Result<Vec<ort::sys::os_char>, String> {
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    Ok(c.as_bytes_with_nul()
        .iter()
        .map(|&b| b as ort::sys::os_char)
        .collect())
}

/// `name` as ONNX Runtime's path characters, NUL-terminated.
#[cfg(windows)]
fn os_string(name: &str) -> Result<Vec<ort::sys::os_char>, String> {
    if name.contains('\0') {
        return Err(format!("'{name}' contains a NUL character"));
    }
    Ok(name.encode_utf16().chain(std::iter::once(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_proto::onnx::{GraphProto, TensorProto};

    #[test]
    fn the_memory_route_starts_past_the_limit() {
        let limit = kiln_proto::PROTOBUF_LIMIT;
        assert!(!needs_split(1000, limit));
        assert!(!needs_split(limit, limit));
        assert!(needs_split(limit + 1, limit));
        assert!(needs_split(5 << 30, limit));
    }

    #[test]
    fn split_moves_big_initializers_without_copying() {
        let big = Bytes::from(vec![3u8; 4096]);
        let tensor = |name: &str, raw: Bytes| TensorProto {
            name: name.into(),
            data_type: 2, // uint8
            dims: vec![raw.len() as i64],
            raw_data: raw,
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: 8,
            graph: Some(GraphProto {
                initializer: vec![
                    tensor("big", big.clone()),
                    tensor("small", Bytes::from(vec![1u8; 8])),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        // Nothing mapped, and it fits: the file route keeps everything inside.
        let inside = split(&model).unwrap();
        assert_eq!((inside.folder, inside.files.len()), (None, 0));
        let split = split_to_memory(&model).unwrap();
        assert_eq!(split.files.len(), 1);
        assert_eq!(split.files[0].1.as_ptr(), big.as_ptr(), "bytes were copied");
        assert!(split.model.len() < 200, "{} bytes", split.model.len());
        let decoded = kiln_proto::decode_model(
            Bytes::from(split.model),
            std::path::Path::new("/nonexistent/m.onnx"),
        );
        // The external reference names a file that is nowhere on disk.
        assert!(decoded.is_err());
    }
}
