//! Comparing two saved outputs without holding either whole: `.npy` files are read in chunks
//! of [`CHUNK_ELEMENTS`] and fed to the [`Accumulator`](super::Accumulator) as they come, so
//! the memory a diff needs does not grow with the outputs (a 100 MB output costs a few MB).
//!
//! Only samples made of `.npy` files stream ([`streamable`]); a file whose data only a whole
//! read decodes (strings, big-endian, Fortran order) is read whole within a streamed sample.
//! Everything else (`.pb`, `.npz`) goes through [`read_all_values`](crate::tensors::read_all_values).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kiln_passes::tensor::{DataType, Tensor};

use super::{mismatch, Accumulator, Comparer, Described, Status, TopkRows};
use crate::tensors::error::label;
use crate::tensors::npy::{read_layout, NpyLayout};
use crate::tensors::{read_npy, TensorFileError};
use crate::Value;

/// Elements read from each side at a time (rounded to whole top-k rows): 256 Ki, a few MB
/// of buffers per side, large enough that per-chunk overhead is lost in the arithmetic.
pub const CHUNK_ELEMENTS: usize = 1 << 18;

type Result<T> = std::result::Result<T, TensorFileError>;

/// Whether one sample of saved outputs at `path` (an `.npy` file, or a folder) is made of
/// `.npy` files only, and so can be compared chunk by chunk.
pub fn streamable(path: &Path) -> bool {
    npy_files(path).is_some_and(|files| !files.is_empty())
}

/// Compares one sample of saved outputs, `reference` against `candidate` (each an `.npy` file
/// or a folder of them, see [`streamable`]), into `comparer`, reading the data in chunks.
/// Outputs are named by file stem and matched by name, as a whole read would.
pub fn add_saved_sample(comparer: &mut Comparer, reference: &Path, candidate: &Path) -> Result<()> {
    let r = open_all(reference)?;
    let c = open_all(candidate)?;
    comparer.add_sample_with(&r, &c, feed)
}

/// The `(stem, path)` of every `.npy` in a sample, in the order a whole read lists them;
/// `None` when the sample holds other value files (`.pb`) or is not an `.npy` file.
fn npy_files(path: &Path) -> Option<Vec<(String, PathBuf)>> {
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    if path.is_file() {
        let is_npy = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        if !is_npy {
            return None;
        }
        return Some(vec![(stem(path)?, path.to_path_buf())]);
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    // Sorted like the folder reader, so names and their order match a whole read.
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        let name = p.file_name()?.to_str()?.to_string();
        if name.starts_with('.') && name.ends_with(".kiln-tmp") {
            continue;
        }
        if name.ends_with(".pb") {
            return None;
        }
        if let Some(stem) = name.strip_suffix(".npy") {
            files.push((stem.to_string(), p));
        }
    }
    Some(files)
}

/// One saved output: its layout to stream from, or the value read whole.
enum Saved {
    Stream { path: PathBuf, layout: NpyLayout },
    Whole(Tensor),
}

/// A named saved output of one sample.
struct Output {
    name: String,
    saved: Saved,
}

impl Described for Output {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        match &self.saved {
            Saved::Stream { layout, .. } => {
                let dims: Vec<String> = layout.shape.iter().map(|d| d.to_string()).collect();
                format!("{}[{}]", layout.dtype, dims.join(","))
            }
            Saved::Whole(t) => Value::Tensor(t.clone()).describe(),
        }
    }
}

impl Output {
    /// The whole tensor (read now when streamed).
    fn tensor(&self) -> Result<std::borrow::Cow<'_, Tensor>> {
        Ok(match &self.saved {
            Saved::Stream { path, .. } => std::borrow::Cow::Owned(read_npy(path)?),
            Saved::Whole(t) => std::borrow::Cow::Borrowed(t),
        })
    }
}

/// Opens every output of a sample: headers only for streamable files.
fn open_all(path: &Path) -> Result<Vec<Output>> {
    let files = npy_files(path)
        .ok_or_else(|| TensorFileError::unsupported(label(path), "not a folder of .npy files"))?;
    files
        .into_iter()
        .map(|(name, path)| {
            let mut file = File::open(&path).map_err(|e| TensorFileError::io(&path, e))?;
            let saved = match read_layout(&mut file, &label(&path))? {
                Some(layout) => Saved::Stream { path, layout },
                None => Saved::Whole(read_npy(&path)?),
            };
            Ok(Output { name, saved })
        })
        .collect()
}

/// Adds one matched pair to its accumulator; returns the mismatch, if any.
fn feed(r: &Output, c: &Output, acc: &mut Accumulator) -> Result<Option<(Status, String)>> {
    let (
        Saved::Stream {
            path: rp,
            layout: rl,
        },
        Saved::Stream {
            path: cp,
            layout: cl,
        },
    ) = (&r.saved, &c.saved)
    else {
        let (rt, ct) = (r.tensor()?, c.tensor()?);
        return Ok(acc.add(&rt, &ct).err().map(mismatch));
    };
    let rows = match acc.begin((rl.dtype, &rl.shape), (cl.dtype, &cl.shape)) {
        Ok(rows) => rows,
        Err(e) => return Ok(Some(mismatch(e))),
    };
    let n: usize = rl.shape.iter().product();
    let per = chunk_len(rows);
    let mut rr = ChunkReader::open(rp, rl, n)?;
    let mut cr = ChunkReader::open(cp, cl, n)?;
    let mut done = 0;
    while done < n {
        let k = per.min(n - done);
        let x = rr.next(k)?;
        let y = cr.next(k)?;
        acc.add_chunk(&x, &y, rows);
        done += k;
    }
    Ok(None)
}

/// Elements per chunk: about [`CHUNK_ELEMENTS`], a whole number of top-k blocks.
fn chunk_len(rows: Option<TopkRows>) -> usize {
    let block = rows.map_or(1, |r| r.block()).max(1);
    block * (CHUNK_ELEMENTS / block).max(1)
}

/// Reads an `.npy` file's elements in order, a chunk at a time, as `f64`.
struct ChunkReader {
    file: File,
    dtype: DataType,
    label: String,
}

impl ChunkReader {
    /// Opens `path` at its data, checking the file holds exactly `n` elements.
    fn open(path: &Path, layout: &NpyLayout, n: usize) -> Result<ChunkReader> {
        let label = label(path);
        let mut file = File::open(path).map_err(|e| TensorFileError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| TensorFileError::io(path, e))?
            .len();
        let expected = layout.dtype.byte_len(n).ok_or_else(|| {
            TensorFileError::corrupt(&label, format!("{n} elements are too many"))
        })?;
        let available = len.saturating_sub(layout.data_offset);
        if available != expected as u64 {
            return Err(TensorFileError::corrupt(
                &label,
                format!(
                    "header says {n} elements of {} ({expected} bytes) but the file holds \
                     {available} bytes of data",
                    layout.dtype
                ),
            ));
        }
        file.seek(SeekFrom::Start(layout.data_offset))
            .map_err(|e| TensorFileError::io(path, e))?;
        Ok(ChunkReader {
            file,
            dtype: layout.dtype,
            label,
        })
    }

    /// The next `k` elements.
    fn next(&mut self, k: usize) -> Result<Vec<f64>> {
        let bytes = self.dtype.byte_len(k).unwrap_or(0);
        let mut buf = vec![0u8; bytes];
        self.file.read_exact(&mut buf).map_err(|e| {
            TensorFileError::corrupt(&self.label, format!("reading the data failed: {e}"))
        })?;
        if self.dtype == DataType::Bool {
            // numpy writes 0/1; any other byte is "true", as a whole read takes it.
            buf.iter_mut().for_each(|b| *b = (*b != 0) as u8);
        }
        Tensor::from_raw(self.dtype, vec![k], Bytes::from(buf))
            .map_err(|e| TensorFileError::tensor(&self.label, e))?
            .to_f64_vec()
            .ok_or_else(|| {
                TensorFileError::unsupported(
                    &self.label,
                    format!("{} elements cannot be compared as numbers", self.dtype),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::write_values;
    use crate::validate::{Thresholds, TopkAxis};

    fn floats(shape: &[usize], f: impl Fn(usize) -> f32) -> Value {
        let n = shape.iter().product();
        Value::Tensor(Tensor::from_vec(shape.to_vec(), (0..n).map(f).collect()).unwrap())
    }

    #[test]
    fn streamed_report_equals_whole_report() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than a chunk, with logits rows, an int output and a name only on one side.
        let big = [3, CHUNK_ELEMENTS / 1000, 1000];
        let a = vec![
            ("big".to_string(), floats(&big, |i| (i % 977) as f32 * 0.5)),
            (
                "ids".to_string(),
                Value::Tensor(Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap()),
            ),
            ("only_a".to_string(), floats(&[2], |i| i as f32)),
        ];
        let b = vec![
            (
                "big".to_string(),
                floats(&big, |i| (i % 977) as f32 * 0.5 + (i % 5) as f32 * 0.01),
            ),
            (
                "ids".to_string(),
                Value::Tensor(Tensor::from_vec(vec![3], vec![1i64, 0, 3]).unwrap()),
            ),
        ];
        let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
        write_values(&pa, &a).unwrap();
        write_values(&pb, &b).unwrap();
        assert!(streamable(&pa) && streamable(&pb));
        let mut streamed = Comparer::new(Thresholds::default(), TopkAxis::Auto);
        add_saved_sample(&mut streamed, &pa, &pb).unwrap();
        let mut whole = Comparer::new(Thresholds::default(), TopkAxis::Auto);
        whole.add_sample(&a, &b);
        assert_eq!(streamed.finish(), whole.finish());
    }

    #[test]
    fn pb_files_and_truncated_data_do_not_stream() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        write_values(&p, &vec![("y".to_string(), floats(&[4], |i| i as f32))]).unwrap();
        let npy = p.join("y.npy");
        let len = fs::metadata(&npy).unwrap().len();
        let f = File::options().write(true).open(&npy).unwrap();
        f.set_len(len - 4).unwrap();
        let mut c = Comparer::new(Thresholds::default(), TopkAxis::Auto);
        let err = add_saved_sample(&mut c, &p, &p).unwrap_err();
        assert!(err.to_string().contains("bytes of data"), "{err}");
        fs::write(p.join("z.pb"), b"").unwrap();
        assert!(!streamable(&p));
    }
}
