//! numpy's `.npz`: a zip archive of `<name>.npy` entries (`np.savez`, `np.savez_compressed`).
//!
//! Entry names are kept verbatim, so tensor names with `/` or `:` (tf2onnx's `input:0`)
//! round trip; `np.load` reads them back under the same keys.

use std::fs::File;
use std::io::{BufReader, Seek, Write};
use std::path::Path;

use kiln_passes::tensor::Tensor;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use super::error::{label, Result, TensorFileError};
use super::npy::{encode, read_npy_from};
use super::write_atomic;
use crate::value::{NamedValues, Value};

/// Reads every entry of an `.npz` in archive order; names lose their `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = File::open(path).map_err(|e| TensorFileError::io(path, e))?;
    read_npz_from(BufReader::new(file), &label(path))
}

/// Reads an `.npz` archive from `reader`; `file` names it in messages.
pub fn read_npz_from(
    reader: impl std::io::Read + Seek,
    file: &str,
) -> Result<Vec<(String, Tensor)>> {
    let zip_err = |source| TensorFileError::Zip {
        file: file.to_string(),
        source,
    };
    let mut archive = ZipArchive::new(reader).map_err(zip_err)?;
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(zip_err)?;
        if entry.is_dir() {
            continue;
        }
        let entry_name = entry.name().to_string();
        // np.load strips `.npy` and keeps other names as they are; so do we.
        let name = entry_name
            .strip_suffix(".npy")
            .unwrap_or(&entry_name)
            .to_string();
        let where_ = format!("{file}: entry '{entry_name}'");
        if out.iter().any(|(n, _)| *n == name) {
            return Err(TensorFileError::corrupt(
                file,
                format!("holds two entries named '{name}'"),
            ));
        }
        let tensor = read_npy_from(entry, &where_, None)?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// Writes tensors to an `.npz` (entries stored uncompressed, like `np.savez`), atomically.
///
/// Only tensors are accepted, of types numpy has; the error for others suggests a folder,
/// where they are written as `.pb`. Entry times are fixed (1980-01-01) so the same values
/// give the same bytes.
pub fn write_npz(path: &Path, values: &NamedValues) -> Result<()> {
    let file = label(path);
    let mut encoded = Vec::with_capacity(values.len());
    for (i, (name, value)) in values.iter().enumerate() {
        if values[..i].iter().any(|(n, _)| n == name) {
            return Err(TensorFileError::mismatch(
                &file,
                format!("two values are named '{name}'"),
            ));
        }
        let Value::Tensor(tensor) = value else {
            return Err(TensorFileError::unsupported(
                &file,
                format!(
                    "'{name}' is a {}, which .npz cannot hold; write to a folder instead \
                     (it is saved there as an ONNX .pb file)",
                    value.describe()
                ),
            ));
        };
        let (header, body) =
            encode(tensor, &format!("{file}: entry '{name}'")).map_err(|e| match e {
                TensorFileError::Unsupported { file, reason } => TensorFileError::Unsupported {
                    file,
                    reason: format!("{reason}; write to a folder instead of an .npz"),
                },
                other => other,
            })?;
        encoded.push((format!("{name}.npy"), header, body));
    }
    write_atomic(path, |w| {
        let mut zip = ZipWriter::new(w);
        for (entry, header, body) in &encoded {
            let size = (header.len() + body.len()) as u64;
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .last_modified_time(DateTime::default())
                .large_file(size >= u32::MAX as u64);
            zip.start_file(entry.as_str(), options)
                .map_err(std::io::Error::other)?;
            zip.write_all(header)?;
            zip.write_all(body)?;
        }
        zip.finish().map_err(std::io::Error::other)?.flush()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kiln_passes::tensor::DataType;
    use std::io::Cursor;

    #[test]
    fn numpy_archives_keep_names_and_order() {
        for bytes in [
            &include_bytes!("testdata/names.npz")[..],
            include_bytes!("testdata/names_deflated.npz"),
        ] {
            let values = read_npz_from(Cursor::new(bytes), "in.npz").unwrap();
            let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["input:0", "a/b", "mask"]);
            assert_eq!(values[0].1.to_vec::<f32>().unwrap(), [0.0, 1.0, 2.0, 3.0]);
            assert_eq!(values[1].1.to_vec::<i64>().unwrap(), [1, 2, 3]);
            assert_eq!(values[2].1.to_vec::<bool>().unwrap(), [true, false]);
        }
    }

    #[test]
    fn round_trip_with_awkward_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npz");
        let values: NamedValues = vec![
            (
                "input:0".into(),
                Value::Tensor(Tensor::from_vec(vec![2], vec![1.5f32, 2.5]).unwrap()),
            ),
            ("a/b".into(), Value::Tensor(Tensor::scalar(7i64))),
            (
                "s".into(),
                Value::Tensor(
                    Tensor::from_strings(vec![1], vec![Bytes::from_static(b"hi")]).unwrap(),
                ),
            ),
        ];
        write_npz(&path, &values).unwrap();
        let back = read_npz(&path).unwrap();
        let back: NamedValues = back
            .into_iter()
            .map(|(n, t)| (n, Value::Tensor(t)))
            .collect();
        assert_eq!(back, values);
        // Same values, same bytes.
        let first = std::fs::read(&path).unwrap();
        write_npz(&path, &values).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
    }

    #[test]
    fn values_npz_cannot_hold_are_refused_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npz");
        let bf16 =
            Tensor::from_raw(DataType::Bfloat16, vec![1], Bytes::from_static(&[0, 0])).unwrap();
        let e = write_npz(&path, &vec![("w".into(), Value::Tensor(bf16))]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: entry 'w': numpy has no bfloat16 type, so it cannot be saved as .npy; save it \
                 as an ONNX TensorProto .pb file (a folder output does this); write to a folder \
                 instead of an .npz",
                path.display()
            )
        );
        let seq = Value::Sequence {
            elem_type: None,
            items: vec![],
        };
        let e = write_npz(&path, &vec![("q".into(), seq)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("'q' is a seq(?)[0], which .npz cannot hold"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn damaged_archives_are_errors() {
        let good = include_bytes!("testdata/names_deflated.npz");
        for len in [0, 10, good.len() / 2, good.len() - 1] {
            let e = read_npz_from(Cursor::new(&good[..len]), "in.npz").unwrap_err();
            assert!(e.to_string().starts_with("in.npz: "), "{e}");
        }
        let mut flipped = good.to_vec();
        flipped[80] ^= 0xff; // inside the first entry's compressed data
        let e = read_npz_from(Cursor::new(&flipped[..]), "in.npz").unwrap_err();
        assert!(e.to_string().starts_with("in.npz: "), "{e}");
    }
}
