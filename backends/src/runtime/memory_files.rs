//! Models past protobuf's 2 GiB limit, loaded without writing anything: the big initializers
//! leave the protobuf as external data in "files" that live in memory, which ONNX Runtime
//! reads through `AddExternalInitializersFromMemory` (the data stays where it is: a mapped
//! model file, or the heap for weights a pass made).

use bytes::Bytes;
use kiln_proto::onnx::tensor_proto::DataLocation;
use kiln_proto::onnx::{ModelProto, StringStringEntryProto};
use ort::session::builder::SessionBuilder;
use ort::AsPointer;

use super::ffi;

/// Initializers with at least this many bytes leave the protobuf on the memory route.
const MIN_BYTES: usize = 1024;

/// A model split for ONNX Runtime: the protobuf without its big initializers, and those as
/// in-memory files it refers to by name.
pub(crate) struct MemoryFiles {
    /// The encoded protobuf (small: big initializers are external references).
    pub model: Vec<u8>,
    /// One file per moved initializer: its name (the `location`) and its bytes. The session
    /// holds these for as long as it lives, since ONNX Runtime may keep reading them.
    pub files: Vec<(String, Bytes)>,
}

/// Whether a model whose protobuf has `encoded_len` bytes goes through [`split`] rather than
/// being encoded whole: past `limit` (the 2 GiB protobuf limit) it cannot be encoded.
pub(crate) fn needs_split(encoded_len: u64, limit: u64) -> bool {
    encoded_len > limit
}

/// Moves the main graph's initializers of at least [`MIN_BYTES`] bytes out of `model` into
/// in-memory files (no tensor bytes are copied) and encodes the rest.
pub(crate) fn split(model: &ModelProto) -> Result<MemoryFiles, String> {
    // Cheap: tensor bytes are reference counted.
    let mut out = model.clone();
    let mut files = Vec::new();
    if let Some(graph) = out.graph.as_mut() {
        for t in &mut graph.initializer {
            if t.raw_data.len() < MIN_BYTES || t.data_location == DataLocation::External as i32 {
                continue;
            }
            // A name that cannot be a path ORT would look for on disk.
            let location = format!("kiln-memory-{}.bin", files.len());
            let data = std::mem::take(&mut t.raw_data);
            let entry = |key: &str, value: String| StringStringEntryProto {
                key: key.to_string(),
                value,
            };
            t.data_location = DataLocation::External as i32;
            t.external_data = vec![
                entry("location", location.clone()),
                entry("offset", "0".into()),
                entry("length", data.len().to_string()),
            ];
            files.push((location, data));
        }
    }
    let model = kiln_proto::encode_model(&out).map_err(|e| {
        format!("{e} (even with every initializer of {MIN_BYTES} bytes or more moved out)")
    })?;
    Ok(MemoryFiles { model, files })
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
        let split = split(&model).unwrap();
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
