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
        remove_stale(&dir);
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
        // Tells `remove_stale` in other processes that this file is live; the kernel drops
        // the lock when the process dies. Best effort, as some file systems have no locks.
        let _ = file.try_lock();
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

/// The pid in a staged file's name `.<file>.<pid>-<n>.kiln-tmp`; `None` for other names.
fn staged_owner(name: &str) -> Option<u32> {
    let stem = name.strip_prefix('.')?.strip_suffix(".kiln-tmp")?;
    let (_, tail) = stem.rsplit_once('.')?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes staged files that killed processes left in `dir` (see
/// [`kiln_proto::remove_if_abandoned`]: never one whose writer may still be running).
fn remove_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(pid) = name.to_str().and_then(staged_owner) {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                kiln_proto::remove_if_abandoned(&entry.path(), pid);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn staged_names_carry_the_pid() {
        assert_eq!(staged_owner(".out.npz.123-4.kiln-tmp"), Some(123));
        assert_eq!(staged_owner(".a.b.7-0.kiln-tmp"), Some(7));
        assert_eq!(staged_owner("out.npz"), None);
        assert_eq!(staged_owner(".x.kiln-tmp"), None);
        assert_eq!(staged_owner(".x.12-y.kiln-tmp"), None);
    }

    #[test]
    fn a_killed_writers_staged_file_goes_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!(".o.npy.{}-0.kiln-tmp", dead_pid()));
        let live = dir.path().join(".o.npy.1-0.kiln-tmp");
        let own = dir
            .path()
            .join(format!(".p.npy.{}-99.kiln-tmp", std::process::id()));
        for p in [&stale, &live, &own] {
            fs::write(p, b"half").unwrap();
        }
        write_atomic(&dir.path().join("o.npy"), |w| {
            std::io::Write::write_all(w, b"done")
        })
        .unwrap();
        assert!(!stale.exists(), "stale staged file left behind");
        assert!(
            live.exists() && own.exists(),
            "a live writer's file was removed"
        );
        assert_eq!(fs::read(dir.path().join("o.npy")).unwrap(), b"done");
    }
}
