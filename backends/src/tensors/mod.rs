//! Tensor files: model inputs and outputs as `.npy`, `.npz` and ONNX `.pb` files.
//!
//! - [`npy`]: one tensor in numpy's format (versions 1.0–3.0, every numpy dtype ONNX has).
//! - [`npz`]: a zip of named `.npy` entries, as `np.savez` writes.
//! - [`pb`]: one `TensorProto` / `SequenceProto` / `OptionalProto`, as the ONNX test data holds.
//! - [`folder`]: a model's whole input set from any of those, matched to the model's inputs
//!   by name (or by position for `test_data_set_N/input_K.pb`), and writing outputs back.
//!
//! Types numpy lacks (bfloat16, float8, int4, …) are never written to `.npy`: ml_dtypes saves
//! them with an opaque `|V<n>` descr that does not say which type it was, so Kiln writes them
//! as `.pb` (a `TensorProto` carries its element type) and refuses `|V` on read.

pub mod error;
pub mod folder;
pub mod npy;
pub mod npz;
pub mod pb;

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use error::TensorFileError;
pub use folder::{
    list_samples, read_all_values, read_test_data_set, read_values, sanitize_name, write_values,
    IoSpec, ValueKind,
};
pub use npy::{is_numpy_type, read_npy, write_npy};
pub use npz::{read_npz, write_npz};
pub use pb::{read_pb, write_pb};

/// A file written under a temporary name next to its destination, renamed into place by
/// [`Staged::commit`] and deleted if dropped uncommitted, so no reader ever sees half a file.
#[derive(Debug)]
pub(crate) struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

/// Makes temporary names unique within this process (the pid separates processes).
static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Staged {
    /// Writes a temporary file in `dest`'s folder with `write`, flushed and synced.
    pub(crate) fn write(
        dest: &Path,
        write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
    ) -> Result<Staged, TensorFileError> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest
            .file_name()
            .map_or_else(|| "out".to_string(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{file_name}.{}-{}.kiln-tmp",
            std::process::id(),
            STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| TensorFileError::io(dest, e))?;
        // From here on the guard removes the temporary file on any failure.
        let staged = Staged {
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        };
        let mut w = BufWriter::new(file);
        let done = write(&mut w)
            .and_then(|()| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all());
        done.map_err(|e| TensorFileError::io(dest, e))?;
        Ok(staged)
    }

    /// Renames the temporary file onto the destination (atomic on one file system).
    pub(crate) fn commit(mut self) -> Result<(), TensorFileError> {
        fs::rename(&self.tmp, &self.dest).map_err(|e| TensorFileError::io(&self.dest, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `dest` atomically: a temporary file in the same folder, then a rename.
pub(crate) fn write_atomic(
    dest: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), TensorFileError> {
    Staged::write(dest, write)?.commit()
}
