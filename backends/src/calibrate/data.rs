//! Calibration samples, read one at a time: from `test_data_set_*` folders, a folder or
//! `.npz` of arrays named after the inputs (one sample, or many stacked along a new first
//! axis), a folder of one file per sample (single-input models), or seeded synthetic inputs.
//!
//! Stacked arrays in `.npy` files (and in `.npz` entries stored uncompressed, as `np.savez`
//! writes them) are read a row at a time from the file, so the memory a sample source needs
//! does not grow with the number of samples; a compressed `.npz` entry or a `.pb` file is
//! decoded whole once.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kiln_passes::tensor::{DataType, Tensor};
use zip::{CompressionMethod, ZipArchive};

use super::CalibrationError;
use crate::runtime::{Dim, IoInfo, IoKind};
use crate::tensors::error::label;
use crate::tensors::npy::{read_layout, read_npy_from};
use crate::tensors::{
    list_samples, read_npy, read_pb, read_values, sanitize_name, IoSpec, TensorFileError, ValueKind,
};
use crate::validate::{synthetic_inputs, Rng, SyntheticSpec};
use crate::value::{NamedValues, Value};

type Result<T, E = CalibrationError> = std::result::Result<T, E>;

/// Where calibration samples come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalibrationData {
    /// A folder of `test_data_set_*` (one sample each), a folder of `.npy`/`.pb` files, an
    /// `.npz`, or a single `.npy`/`.pb` (single-input models).
    Path(PathBuf),
    /// `count` seeded random samples (floats uniform in [0, 1), integers in [0, 10) unless
    /// a [`SyntheticSpec`] says otherwise): a placeholder when no data is at hand.
    Synthetic {
        /// Number of samples.
        count: usize,
        /// Seed of the generator.
        seed: u64,
    },
}

/// One sample: the model's inputs, and where they came from (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// A path, `file[i]` for a row of stacked arrays, or `synthetic sample i (seed s)`.
    pub label: String,
    /// The inputs, in the model's order.
    pub values: NamedValues,
}

/// The samples of a [`CalibrationData`], read one at a time; the count is known up front.
#[derive(Debug)]
pub struct Samples {
    source: Source,
    next: usize,
    end: usize,
}

#[derive(Debug)]
enum Source {
    /// Each path is one sample, read whole by `read_values`.
    Paths {
        paths: Vec<PathBuf>,
        inputs: Vec<IoInfo>,
    },
    /// Each file is one sample of the model's only input.
    Files { files: Vec<PathBuf>, input: IoInfo },
    /// Row `i` of every column is sample `i`.
    Stacked { label: String, columns: Vec<Column> },
    Synthetic {
        inputs: Vec<IoInfo>,
        spec: SyntheticSpec,
        rng: Rng,
        seed: u64,
        generated: usize,
    },
}

/// One input's stacked samples.
#[derive(Debug)]
struct Column {
    input: String,
    file: String,
    dtype: DataType,
    row_shape: Vec<usize>,
    row_bytes: usize,
    count: usize,
    rows: Rows,
}

/// Where a column's rows are.
#[derive(Debug)]
enum Rows {
    /// In a file at `data_offset`, `row_bytes` apiece.
    File { file: File, data_offset: u64 },
    /// In memory.
    Memory(Bytes),
}

/// Opens the samples of `data` for a model with `session_inputs`
/// ([`Session::inputs`](crate::runtime::Session::inputs)); synthetic samples use
/// [`SyntheticSpec::default`].
pub fn open_samples(data: &CalibrationData, session_inputs: &[IoInfo]) -> Result<Samples> {
    open_samples_with(data, session_inputs, &SyntheticSpec::default())
}

/// [`open_samples`], with synthetic samples shaped and bounded by `spec` (free dims, integer
/// bounds such as 2 for a BERT `token_type_ids`).
pub fn open_samples_with(
    data: &CalibrationData,
    session_inputs: &[IoInfo],
    spec: &SyntheticSpec,
) -> Result<Samples> {
    let source = match data {
        CalibrationData::Synthetic { count, seed } => {
            let samples = Samples {
                source: Source::Synthetic {
                    inputs: session_inputs.to_vec(),
                    spec: spec.clone(),
                    rng: Rng::new(*seed),
                    seed: *seed,
                    generated: 0,
                },
                next: 0,
                end: *count,
            };
            return Ok(samples);
        }
        CalibrationData::Path(path) => open_path(path, session_inputs)?,
    };
    let end = match &source {
        Source::Paths { paths, .. } => paths.len(),
        Source::Files { files, .. } => files.len(),
        Source::Stacked { columns, .. } => columns.first().map_or(0, |c| c.count),
        Source::Synthetic { .. } => 0,
    };
    Ok(Samples {
        source,
        next: 0,
        end,
    })
}

impl Samples {
    /// Only the samples at positions `range` (of those not yet read), e.g. one shard of the
    /// data; nothing is read to skip the others but synthetic samples, which are generated
    /// in order.
    pub fn slice(mut self, range: Range<usize>) -> Samples {
        let start = self.next + range.start;
        self.end = self.end.min(self.next.saturating_add(range.end));
        self.next = start.min(self.end);
        self
    }

    /// The next sample with its label, or `None` after the last.
    pub fn next_sample(&mut self) -> Option<Result<Sample>> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let sample = self.read(i);
        if sample.is_err() {
            // A failed source is not read further.
            self.next = self.end;
        }
        Some(sample)
    }

    fn read(&mut self, i: usize) -> Result<Sample> {
        match &mut self.source {
            Source::Paths { paths, inputs } => {
                let path = &paths[i];
                let specs: Vec<IoSpec> = inputs.iter().map(IoInfo::spec).collect();
                let values = read_values(path, &specs)?;
                let label = label(path);
                for ((name, value), info) in values.iter().zip(inputs.iter()) {
                    if let Value::Tensor(t) = value {
                        check_fit(
                            &format!("{label}: input '{name}'"),
                            info,
                            t.dtype(),
                            t.shape(),
                            false,
                        )?;
                    }
                }
                Ok(Sample { label, values })
            }
            Source::Files { files, input } => {
                let path = &files[i];
                let file = label(path);
                let tensor = read_tensor(path)?;
                check_fit(&file, input, tensor.dtype(), tensor.shape(), false)?;
                Ok(Sample {
                    label: file,
                    values: vec![(input.name.clone(), Value::Tensor(tensor))],
                })
            }
            Source::Stacked { label, columns } => {
                let values = columns
                    .iter_mut()
                    .map(|c| Ok((c.input.clone(), Value::Tensor(c.row(i)?))))
                    .collect::<Result<NamedValues>>()?;
                Ok(Sample {
                    label: format!("{label}[{i}]"),
                    values,
                })
            }
            Source::Synthetic {
                inputs,
                spec,
                rng,
                seed,
                generated,
            } => {
                // Samples skipped by `slice` are generated and dropped, so sample i is
                // always the same whatever the slice.
                while *generated < i {
                    synthetic_inputs(inputs, spec, rng)?;
                    *generated += 1;
                }
                let values = synthetic_inputs(inputs, spec, rng)?;
                *generated += 1;
                Ok(Sample {
                    label: format!("synthetic sample {i} (seed {seed})"),
                    values,
                })
            }
        }
    }
}

impl Iterator for Samples {
    type Item = Result<NamedValues>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_sample().map(|s| s.map(|s| s.values))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Samples {}

impl Column {
    /// Row `i` as a tensor of the input's shape.
    fn row(&mut self, i: usize) -> Result<Tensor> {
        let bytes = match &mut self.rows {
            Rows::Memory(all) => all.slice(i * self.row_bytes..(i + 1) * self.row_bytes),
            Rows::File { file, data_offset } => {
                let at = *data_offset + (i * self.row_bytes) as u64;
                let mut buf = vec![0u8; self.row_bytes];
                file.seek(SeekFrom::Start(at))
                    .and_then(|_| file.read_exact(&mut buf))
                    .map_err(|e| {
                        TensorFileError::corrupt(&self.file, format!("reading row {i} failed: {e}"))
                    })?;
                if self.dtype == DataType::Bool {
                    // numpy writes 0/1; any other byte is "true", as a whole read takes it.
                    buf.iter_mut().for_each(|b| *b = u8::from(*b != 0));
                }
                Bytes::from(buf)
            }
        };
        Tensor::from_raw(self.dtype, self.row_shape.clone(), bytes)
            .map_err(|e| TensorFileError::tensor(&self.file, e).into())
    }

    /// A column over a whole tensor already in memory.
    fn from_tensor(input: &str, file: String, tensor: &Tensor) -> Result<Column> {
        let (rows, row_shape) = split_rows(tensor.shape());
        let row_bytes = row_bytes(&file, tensor.dtype(), &row_shape)?;
        let raw = tensor.raw().cloned().ok_or_else(|| {
            CalibrationError::layout(
                &file,
                format!("{} values cannot be stacked", tensor.dtype()),
            )
        })?;
        Ok(Column {
            input: input.to_string(),
            file,
            dtype: tensor.dtype(),
            row_shape,
            row_bytes,
            count: rows,
            rows: Rows::Memory(raw),
        })
    }

    /// A column over `.npy` data that starts at `start` in `path` (an `.npy` file, or an
    /// uncompressed `.npz` entry) and spans `len` bytes; read whole when its layout only
    /// a whole read decodes (big-endian, Fortran order, strings).
    fn from_npy(input: &str, path: &Path, file: String, start: u64, len: u64) -> Result<Column> {
        let io = |e| TensorFileError::io(path, e);
        let mut f = File::open(path).map_err(io)?;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let layout = read_layout(&mut (&mut f).take(len), &file)?;
        let Some(layout) = layout else {
            f.seek(SeekFrom::Start(start)).map_err(io)?;
            let t = read_npy_from(BufReader::new(f.take(len)), &file, Some(len))?;
            return Column::from_tensor(input, file, &t);
        };
        let (rows, row_shape) = split_rows(&layout.shape);
        let row_bytes = row_bytes(&file, layout.dtype, &row_shape)?;
        let data = len.saturating_sub(layout.data_offset);
        let expected = (rows as u64).saturating_mul(row_bytes as u64);
        if data != expected {
            return Err(TensorFileError::corrupt(
                &file,
                format!(
                    "header says {} of shape [{}] ({expected} bytes) but the file holds {data} bytes of data",
                    layout.dtype,
                    join(&layout.shape)
                ),
            )
            .into());
        }
        Ok(Column {
            input: input.to_string(),
            file,
            dtype: layout.dtype,
            row_shape,
            row_bytes,
            count: rows,
            rows: Rows::File {
                file: f,
                data_offset: start + layout.data_offset,
            },
        })
    }

    /// The full shape of the stored array.
    fn shape(&self) -> Vec<usize> {
        std::iter::once(self.count)
            .chain(self.row_shape.iter().copied())
            .collect()
    }
}

/// `[n, rest…]` → `(n, rest)`; a scalar is one row of a scalar.
fn split_rows(shape: &[usize]) -> (usize, Vec<usize>) {
    match shape.split_first() {
        Some((&n, rest)) => (n, rest.to_vec()),
        None => (1, Vec::new()),
    }
}

fn row_bytes(file: &str, dtype: DataType, row_shape: &[usize]) -> Result<usize> {
    let n: usize = row_shape.iter().product();
    match dtype.bits() {
        bits if bits > 0 && bits % 8 == 0 => Ok(n * bits / 8),
        _ => Err(CalibrationError::layout(
            file,
            format!("{dtype} values cannot be split into samples; give one file per sample"),
        )),
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The declared dims of a tensor input, `None` when it is not a tensor or has no shape.
fn declared_dims(info: &IoInfo) -> Option<&[Dim]> {
    match &info.kind {
        IoKind::Tensor { dims, .. } if !dims.is_empty() => Some(dims),
        _ => None,
    }
}

/// Checks an array (or, `stacked`, an array of samples) against a model input; the error
/// names `file` and says what the model expects.
fn check_fit(
    file: &str,
    info: &IoInfo,
    dtype: DataType,
    shape: &[usize],
    stacked: bool,
) -> Result<()> {
    let IoKind::Tensor { dtype: want, dims } = &info.kind else {
        return Err(CalibrationError::layout(
            file,
            format!(
                "input '{}' is {}; calibration data can only feed tensors",
                info.name, info.kind
            ),
        ));
    };
    if want.is_some_and(|w| w != dtype) {
        return Err(CalibrationError::layout(
            file,
            format!(
                "holds {dtype} values but input '{}' takes {}",
                info.name, info.kind
            ),
        ));
    }
    let sample = if stacked { &shape[1..] } else { shape };
    // ORT reports "no shape declared" as zero dims: no rank to check.
    let fits = dims.is_empty()
        || dims.len() == sample.len()
            && dims
                .iter()
                .zip(sample)
                .all(|(d, &n)| !matches!(d, Dim::Fixed(m) if *m != n));
    if !fits {
        let what = if stacked {
            "each sample has shape"
        } else {
            "has shape"
        };
        return Err(CalibrationError::layout(
            file,
            format!(
                "{what} [{}] but input '{}' is {}",
                join(sample),
                info.name,
                info.kind
            ),
        ));
    }
    Ok(())
}

/// A tensor from an `.npy` or `.pb` file.
fn read_tensor(path: &Path) -> Result<Tensor> {
    if has_extension(path, "npy") {
        return Ok(read_npy(path)?);
    }
    match read_pb(path, ValueKind::Tensor)?.1 {
        Value::Tensor(t) => Ok(t),
        other => Err(CalibrationError::layout(
            label(path),
            format!("holds {}, not a tensor", other.describe()),
        )),
    }
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// The input an array named `name` (a file stem or `.npz` key) is for: the exact name, else
/// the one whose file-safe name it is.
fn input_index(inputs: &[IoInfo], name: &str) -> Option<usize> {
    inputs
        .iter()
        .position(|i| i.name == name)
        .or_else(|| inputs.iter().position(|i| sanitize_name(&i.name) == name))
}

fn names(inputs: &[IoInfo]) -> String {
    inputs
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The source for a path.
fn open_path(path: &Path, inputs: &[IoInfo]) -> Result<Source> {
    let meta = fs::metadata(path).map_err(|e| TensorFileError::io(path, e))?;
    let paths = |paths: Vec<PathBuf>| Source::Paths {
        paths,
        inputs: inputs.to_vec(),
    };
    if meta.is_dir() {
        let sets = list_samples(path)?;
        if sets.as_slice() != [path.to_path_buf()] {
            return Ok(paths(sets));
        }
        return open_folder(path, inputs);
    }
    let file = label(path);
    if has_extension(path, "npz") {
        return open_npz(path, inputs);
    }
    if !(has_extension(path, "npy") || has_extension(path, "pb")) {
        return Err(CalibrationError::layout(
            file,
            "not calibration data: expected a folder, an .npz, or an .npy or .pb file",
        ));
    }
    let [input] = inputs else {
        return Err(CalibrationError::layout(
            file,
            format!(
                "a single file holds one input but the model has {} ({}); give a folder or an .npz",
                inputs.len(),
                names(inputs)
            ),
        ));
    };
    let column = open_column(&input.name, path)?;
    match stacking(&[(input, &column)])? {
        true => Ok(Source::Stacked {
            label: file,
            columns: vec![column],
        }),
        false => Ok(paths(vec![path.to_path_buf()])),
    }
}

/// A column over a folder's `.npy` or `.pb` file.
fn open_column(input: &str, path: &Path) -> Result<Column> {
    let file = label(path);
    if has_extension(path, "npy") {
        let len = fs::metadata(path)
            .map_err(|e| TensorFileError::io(path, e))?
            .len();
        Column::from_npy(input, path, file, 0, len)
    } else {
        Column::from_tensor(input, file, &read_tensor(path)?)
    }
}

/// Whether arrays are stacked samples: every one has one more dim than its input's rank
/// (and they agree on how many samples), or none has. Checks them against the inputs.
fn stacking(columns: &[(&IoInfo, &Column)]) -> Result<bool> {
    let stacked = |(info, c): &(&IoInfo, &Column)| {
        declared_dims(info).is_some_and(|d| d.len() + 1 == c.shape().len())
    };
    let Some(first) = columns.iter().find(|c| stacked(c)) else {
        for (info, c) in columns {
            check_fit(&c.file, info, c.dtype, &c.shape(), false)?;
        }
        return Ok(false);
    };
    for (info, c) in columns {
        if !stacked(&(info, c)) {
            return Err(CalibrationError::layout(
                &c.file,
                format!(
                    "has shape [{}] for input '{}' ({}), but {} holds samples stacked along a new first axis; stack every input or none",
                    join(&c.shape()),
                    info.name,
                    info.kind,
                    first.1.file
                ),
            ));
        }
        check_fit(&c.file, info, c.dtype, &c.shape(), true)?;
        if c.count != first.1.count {
            return Err(CalibrationError::layout(
                &c.file,
                format!(
                    "holds {} samples but {} holds {}",
                    c.count, first.1.file, first.1.count
                ),
            ));
        }
    }
    if first.1.count == 0 {
        return Err(CalibrationError::layout(
            &first.1.file,
            "holds no samples (its first axis is 0)",
        ));
    }
    Ok(true)
}

/// A folder with no `test_data_set_*` in it.
fn open_folder(dir: &Path, inputs: &[IoInfo]) -> Result<Source> {
    let folder = label(dir);
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| TensorFileError::io(dir, e))? {
        let p = entry.map_err(|e| TensorFileError::io(dir, e))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let hidden = name.starts_with('.');
        if p.is_file() && !hidden && (has_extension(&p, "npy") || has_extension(&p, "pb")) {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(CalibrationError::layout(
            folder,
            "holds no .npy or .pb files and no test_data_set_* folders",
        ));
    }
    let stem = |p: &Path| {
        p.file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
    };
    // Named after the inputs: one array per input.
    let mut named: Vec<Option<&PathBuf>> = vec![None; inputs.len()];
    let mut others = Vec::new();
    for f in &files {
        let Some(k) = input_index(inputs, &stem(f)) else {
            others.push(f);
            continue;
        };
        let info = &inputs[k];
        {
            if let Some(other) = named[k] {
                return Err(CalibrationError::layout(
                    &folder,
                    format!(
                        "input '{}' is given twice ({} and {})",
                        info.name,
                        label(other),
                        label(f)
                    ),
                ));
            }
            named[k] = Some(f);
        }
    }
    if named.iter().all(Option::is_some) {
        if let Some(extra) = others.first() {
            return Err(CalibrationError::layout(
                label(extra),
                format!(
                    "is not an input of the model (its inputs: {})",
                    names(inputs)
                ),
            ));
        }
        let columns = inputs
            .iter()
            .zip(&named)
            .map(|(info, f)| open_column(&info.name, f.map_or(dir, |f| f.as_path())))
            .collect::<Result<Vec<_>>>()?;
        let pairs: Vec<(&IoInfo, &Column)> = inputs.iter().zip(&columns).collect();
        if stacking(&pairs)? {
            return Ok(Source::Stacked {
                label: folder,
                columns,
            });
        }
        return Ok(Source::Paths {
            paths: vec![dir.to_path_buf()],
            inputs: inputs.to_vec(),
        });
    }
    // A test data set given directly: input_0.pb, input_1.pb, …
    let positional = files.iter().any(|f| {
        has_extension(f, "pb")
            && stem(f)
                .strip_prefix("input_")
                .is_some_and(|k| k.parse::<usize>().is_ok())
    });
    if positional {
        return Ok(Source::Paths {
            paths: vec![dir.to_path_buf()],
            inputs: inputs.to_vec(),
        });
    }
    match inputs {
        [input] => Ok(Source::Files {
            files,
            input: input.clone(),
        }),
        _ => {
            let stems: Vec<String> = files.iter().take(5).map(|f| stem(f)).collect();
            let missing: Vec<&str> = inputs
                .iter()
                .zip(&named)
                .filter(|(_, f)| f.is_none())
                .map(|(i, _)| i.name.as_str())
                .collect();
            Err(CalibrationError::layout(
                folder,
                format!(
                    "no file for {} {} (files: {}{}; the model's inputs: {}); name one file per input (one sample, or samples stacked along a new first axis), or give test_data_set_* folders",
                    if missing.len() > 1 { "inputs" } else { "input" },
                    missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
                    stems.join(", "),
                    if files.len() > 5 { ", …" } else { "" },
                    names(inputs)
                ),
            ))
        }
    }
}

/// An `.npz` whose keys are the input names.
fn open_npz(path: &Path, inputs: &[IoInfo]) -> Result<Source> {
    let file = label(path);
    let zip_err = |source| TensorFileError::Zip {
        file: file.clone(),
        source,
    };
    let f = File::open(path).map_err(|e| TensorFileError::io(path, e))?;
    let mut archive = ZipArchive::new(BufReader::new(f)).map_err(zip_err)?;
    let mut columns: Vec<Option<Column>> = (0..inputs.len()).map(|_| None).collect();
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(zip_err)?;
        if entry.is_dir() {
            continue;
        }
        let key = entry
            .name()
            .strip_suffix(".npy")
            .unwrap_or(entry.name())
            .to_string();
        let where_ = format!("{file}: entry '{}'", entry.name());
        let Some(k) = input_index(inputs, &key) else {
            return Err(CalibrationError::layout(
                file,
                format!(
                    "entry '{key}' is not an input of the model (its inputs: {})",
                    names(inputs)
                ),
            ));
        };
        let info = &inputs[k];
        if columns[k].is_some() {
            return Err(CalibrationError::layout(
                file,
                format!("input '{}' is given twice", info.name),
            ));
        }
        let column = if entry.compression() == CompressionMethod::Stored {
            let (start, len) = (entry.data_start(), entry.size());
            drop(entry);
            Column::from_npy(&info.name, path, where_, start, len)?
        } else {
            // A compressed entry cannot be read at an offset: decode it whole, once.
            let len = entry.size();
            let t = read_npy_from(entry, &where_, Some(len))?;
            Column::from_tensor(&info.name, where_, &t)?
        };
        columns[k] = Some(column);
    }
    let missing: Vec<String> = inputs
        .iter()
        .zip(&columns)
        .filter(|(_, c)| c.is_none())
        .map(|(i, _)| format!("'{}'", i.name))
        .collect();
    if !missing.is_empty() {
        return Err(CalibrationError::layout(
            file,
            format!(
                "no entry for {} (the model's inputs: {})",
                missing.join(", "),
                names(inputs)
            ),
        ));
    }
    let columns: Vec<Column> = columns.into_iter().flatten().collect();
    let pairs: Vec<(&IoInfo, &Column)> = inputs.iter().zip(&columns).collect();
    if stacking(&pairs)? {
        Ok(Source::Stacked {
            label: file,
            columns,
        })
    } else {
        Ok(Source::Paths {
            paths: vec![path.to_path_buf()],
            inputs: inputs.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::{write_npy, write_npz, write_pb, write_values};

    fn info(name: &str, dtype: DataType, dims: &[Option<usize>]) -> IoInfo {
        IoInfo {
            name: name.into(),
            kind: IoKind::Tensor {
                dtype: Some(dtype),
                dims: dims
                    .iter()
                    .map(|d| d.map_or(Dim::Symbolic("batch".into()), Dim::Fixed))
                    .collect(),
            },
        }
    }

    fn image() -> IoInfo {
        info("x", DataType::Float, &[None, Some(2)])
    }

    fn floats(shape: &[usize], start: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(shape.to_vec(), (0..n).map(|i| start + i as f32).collect()).unwrap()
    }

    fn all(samples: Samples) -> Vec<Sample> {
        let mut s = samples;
        let mut out = Vec::new();
        while let Some(x) = s.next_sample() {
            out.push(x.unwrap());
        }
        out
    }

    fn err(data: &Path, inputs: &[IoInfo]) -> String {
        match open_samples(&CalibrationData::Path(data.to_path_buf()), inputs) {
            Ok(mut s) => match s.find_map(Result::err) {
                Some(e) => e.to_string(),
                None => panic!("{} was accepted", data.display()),
            },
            Err(e) => e.to_string(),
        }
    }

    fn open(data: &Path, inputs: &[IoInfo]) -> Samples {
        open_samples(&CalibrationData::Path(data.to_path_buf()), inputs).unwrap()
    }

    #[test]
    fn stacked_npy_is_read_a_row_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let x = floats(&[3, 1, 2], 0.0);
        write_npy(&dir.path().join("x.npy"), &x).unwrap();
        let s = open(dir.path(), &[image()]);
        assert_eq!(s.len(), 3);
        let got = all(s);
        assert_eq!(got[2].label, format!("{}[2]", dir.path().display()));
        assert_eq!(got[2].values[0].1, Value::Tensor(floats(&[1, 2], 4.0)));
        // A slice skips without reading.
        let got = all(open(dir.path(), &[image()]).slice(1..2));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].values[0].1, Value::Tensor(floats(&[1, 2], 2.0)));
        // The same array at the input's rank is one sample of batch 3.
        write_npy(&dir.path().join("x.npy"), &floats(&[3, 2], 0.0)).unwrap();
        assert_eq!(open(dir.path(), &[image()]).len(), 1);
    }

    #[test]
    fn npz_stored_and_compressed_entries_stack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calib.npz");
        let ids = info("ids", DataType::Int64, &[None, Some(2)]);
        let values = vec![
            ("x".to_string(), Value::Tensor(floats(&[2, 1, 2], 0.0))),
            (
                "ids".to_string(),
                Value::Tensor(Tensor::from_vec(vec![2, 1, 2], vec![1i64, 2, 3, 4]).unwrap()),
            ),
        ];
        write_npz(&path, &values).unwrap();
        let got = all(open(&path, &[image(), ids.clone()]));
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1].values[1].1,
            Value::Tensor(Tensor::from_vec(vec![1, 2], vec![3i64, 4]).unwrap())
        );
        let e = err(&path, &[image()]);
        assert!(
            e.contains("entry 'ids' is not an input of the model"),
            "{e}"
        );
        let e = err(&path, &[image(), ids, info("m", DataType::Int64, &[None])]);
        assert!(e.contains("no entry for 'm'"), "{e}");
    }

    #[test]
    fn test_data_sets_and_named_folders_are_one_sample_each() {
        let dir = tempfile::tempdir().unwrap();
        for k in 0..3 {
            let set = dir.path().join(format!("test_data_set_{k}"));
            fs::create_dir(&set).unwrap();
            write_pb(
                &set.join("input_0.pb"),
                "x",
                &Value::Tensor(floats(&[1, 2], k as f32)),
            )
            .unwrap();
        }
        let got = all(open(dir.path(), &[image()]));
        assert_eq!(got.len(), 3);
        assert!(
            got[1].label.ends_with("test_data_set_1"),
            "{}",
            got[1].label
        );
        // One set given directly is one sample, even for a single-input model.
        assert_eq!(
            all(open(&dir.path().join("test_data_set_2"), &[image()])).len(),
            1
        );
        let named = tempfile::tempdir().unwrap();
        write_values(
            named.path(),
            &vec![("x".to_string(), Value::Tensor(floats(&[4, 2], 0.0)))],
        )
        .unwrap();
        assert_eq!(all(open(named.path(), &[image()])).len(), 1);
    }

    #[test]
    fn a_folder_of_files_is_one_sample_per_file_for_one_input() {
        let dir = tempfile::tempdir().unwrap();
        for (k, name) in ["b.npy", "a.npy", "c.pb"].iter().enumerate() {
            let t = floats(&[1, 2], k as f32);
            if name.ends_with("pb") {
                write_pb(&dir.path().join(name), "", &Value::Tensor(t)).unwrap();
            } else {
                write_npy(&dir.path().join(name), &t).unwrap();
            }
        }
        let got = all(open(dir.path(), &[image()]));
        let labels: Vec<&str> = got
            .iter()
            .map(|s| s.label.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(labels, ["a.npy", "b.npy", "c.pb"]);
        let two = [image(), info("y", DataType::Float, &[None])];
        let e = err(dir.path(), &two);
        assert!(e.contains("no file for inputs 'x', 'y'"), "{e}");
    }

    #[test]
    fn mismatches_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = err(dir.path(), &[image()]);
        assert!(e.contains("holds no .npy or .pb files"), "{e}");
        let x = dir.path().join("x.npy");
        write_npy(&x, &floats(&[2, 1, 3], 0.0)).unwrap();
        let e = err(dir.path(), &[image()]);
        assert!(
            e.starts_with(&x.display().to_string())
                && e.contains("each sample has shape [1,3] but input 'x' is float32[batch,2]"),
            "{e}"
        );
        write_npy(&x, &Tensor::from_vec(vec![1, 2], vec![1i32, 2]).unwrap()).unwrap();
        let e = err(dir.path(), &[image()]);
        assert!(
            e.contains("holds int32 values but input 'x' takes float32"),
            "{e}"
        );
        // Stacked counts must agree, and every input must be stacked or none.
        write_npy(&x, &floats(&[2, 1, 2], 0.0)).unwrap();
        let y = info("y", DataType::Float, &[None]);
        write_npy(&dir.path().join("y.npy"), &floats(&[3, 1], 0.0)).unwrap();
        let e = err(dir.path(), &[image(), y.clone()]);
        assert!(e.contains("holds 3 samples but"), "{e}");
        write_npy(&dir.path().join("y.npy"), &floats(&[3], 0.0)).unwrap();
        let e = err(dir.path(), &[image(), y]);
        assert!(e.contains("stack every input or none"), "{e}");
        // A truncated stacked file is caught before any sample is read.
        let bytes = fs::read(&x).unwrap();
        fs::write(&x, &bytes[..bytes.len() - 4]).unwrap();
        let e = err(&x, &[image()]);
        assert!(e.contains("bytes of data"), "{e}");
        let e = err(&dir.path().join("nothing.npz"), &[image()]);
        assert!(e.contains("nothing.npz"), "{e}");
    }

    #[test]
    fn synthetic_samples_are_seeded_and_sliceable() {
        let data = CalibrationData::Synthetic { count: 5, seed: 3 };
        let a = all(open_samples(&data, &[image()]).unwrap());
        let b = all(open_samples(&data, &[image()]).unwrap().slice(3..5));
        assert_eq!(a.len(), 5);
        assert_eq!(b[0].values, a[3].values);
        assert_eq!(b[1].label, "synthetic sample 4 (seed 3)");
        assert_ne!(a[0].values, a[1].values);
    }
}
