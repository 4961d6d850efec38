//! A model's input set (or outputs) as one path: an `.npz`, a single `.npy`/`.pb`, a folder of
//! `<name>.npy` / `<name>.pb` files, or an ONNX `test_data_set_N` folder of `input_K.pb`.
//!
//! File names cannot hold every tensor name (tf2onnx's `input:0`, paths like `a/b`), so a
//! folder file's stem matches an input either exactly or after [`sanitize_name`], which is
//! also how [`write_values`] names the files it writes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::{label, Result, TensorFileError};
use super::npy::{encode, is_numpy_type, read_npy};
use super::npz::{read_npz, write_npz};
use super::pb::{decode_pb, encode_pb, read_pb};
use super::{npy, Staged};
use crate::value::{NamedValues, Value};

/// What kind of value a model input or output is (ONNX `TypeProto`'s kinds Kiln tells apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A dense tensor.
    Tensor,
    /// A sequence (`seq(...)`).
    Sequence,
    /// An optional (`optional(...)`).
    Optional,
    /// A map (`map(k, v)`): recognised so it can be refused clearly.
    Map,
}

impl ValueKind {
    fn name(self) -> &'static str {
        match self {
            ValueKind::Tensor => "a tensor",
            ValueKind::Sequence => "a sequence",
            ValueKind::Optional => "an optional",
            ValueKind::Map => "a map",
        }
    }
}

/// One model input or output as tensor files see it: its name and kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IoSpec {
    /// The graph input or output name.
    pub name: String,
    /// What kind of value it takes.
    pub kind: ValueKind,
}

impl IoSpec {
    /// A spec of the given name and kind.
    pub fn new(name: impl Into<String>, kind: ValueKind) -> IoSpec {
        IoSpec {
            name: name.into(),
            kind,
        }
    }

    /// A tensor input or output.
    pub fn tensor(name: impl Into<String>) -> IoSpec {
        IoSpec::new(name, ValueKind::Tensor)
    }
}

/// A tensor name as a file stem: `/ \ : * ? " < > |` and control characters become `_`, and
/// an empty name or one of only dots becomes underscores (so `input:0` → `input_0`).
pub fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.chars().all(|c| c == '.') {
        // "", "." and ".." are not usable file names.
        "_".repeat(s.len().max(1))
    } else {
        s
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

fn expected_list(expected: &[IoSpec]) -> String {
    if expected.is_empty() {
        return "none".into();
    }
    expected
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The expected input `name` refers to: exact, else the one whose sanitized name it is.
fn find_spec(expected: &[IoSpec], name: &str) -> std::result::Result<Option<usize>, String> {
    if let Some(i) = expected.iter().position(|s| s.name == name) {
        return Ok(Some(i));
    }
    let hits: Vec<usize> = (0..expected.len())
        .filter(|&i| sanitize_name(&expected[i].name) == name)
        .collect();
    match hits.as_slice() {
        [] => Ok(None),
        [i] => Ok(Some(*i)),
        _ => Err(format!(
            "'{name}' could stand for several inputs ({}); name the files exactly",
            hits.iter()
                .map(|&i| expected[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Makes a value read from a file fit the kind the model expects, or says why it cannot.
fn fit(value: Value, spec: &IoSpec, file: &str) -> Result<Value> {
    match (spec.kind, value) {
        (ValueKind::Map, _) => Err(TensorFileError::unsupported(
            file,
            format!("'{}' is a map, which Kiln does not support", spec.name),
        )),
        (ValueKind::Tensor, v @ Value::Tensor(_))
        | (ValueKind::Sequence, v @ Value::Sequence { .. })
        | (ValueKind::Optional, v @ Value::Optional(_)) => Ok(v),
        // A present value for an optional input: `.npy` files cannot say "optional".
        (ValueKind::Optional, v) => Ok(Value::Optional(Some(Box::new(v)))),
        (kind, v) => Err(TensorFileError::mismatch(
            file,
            format!(
                "'{}' is {} in the model but the file holds {}",
                spec.name,
                kind.name(),
                v.describe()
            ),
        )),
    }
}

/// Values found for the expected names, in the model's order, with where each came from.
struct Collected<'a> {
    expected: &'a [IoSpec],
    found: Vec<Option<(Value, String)>>,
    file: String,
}

impl<'a> Collected<'a> {
    fn new(expected: &'a [IoSpec], file: String) -> Collected<'a> {
        Collected {
            expected,
            found: vec![None; expected.len()],
            file,
        }
    }

    /// Stores `value` for input `index`; `source` names where it came from.
    fn put(&mut self, index: usize, value: Value, source: String) -> Result<()> {
        let spec = &self.expected[index];
        let value = fit(value, spec, &source)?;
        if let Some((_, first)) = &self.found[index] {
            return Err(TensorFileError::mismatch(
                &self.file,
                format!(
                    "input '{}' is given twice ({first} and {source})",
                    spec.name
                ),
            ));
        }
        self.found[index] = Some((value, source));
        Ok(())
    }

    /// The values in the model's order; an error lists any that are missing.
    fn finish(self) -> Result<NamedValues> {
        let missing: Vec<&str> = self
            .found
            .iter()
            .zip(self.expected)
            .filter(|(f, _)| f.is_none())
            .map(|(_, s)| s.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(TensorFileError::mismatch(
                &self.file,
                format!(
                    "no value for {} (expected: {})",
                    missing
                        .iter()
                        .map(|m| format!("'{m}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    expected_list(self.expected)
                ),
            ));
        }
        Ok(self
            .found
            .into_iter()
            .zip(self.expected)
            .filter_map(|(f, s)| f.map(|(v, _)| (s.name.clone(), v)))
            .collect())
    }
}

/// Reads the values for a model's inputs (`expected`, in model order) from `path`.
///
/// `path` may be an `.npz` (entries matched by name), an `.npy` or `.pb` (single-input models
/// only), a folder of `<name>.npy` / `<name>.pb` (stem = name, or the name after
/// [`sanitize_name`]), or a `test_data_set_N` folder of `input_K.pb` (the K-th input, unless
/// the proto's name is another input's). A folder is read the second way when it holds
/// `input_<K>.pb` files and no input of the model is called `input_<K>`.
/// Every expected input must be given, and nothing else.
pub fn read_values(path: &Path, expected: &[IoSpec]) -> Result<NamedValues> {
    let meta = fs::metadata(path).map_err(|e| TensorFileError::io(path, e))?;
    let file = label(path);
    if meta.is_dir() {
        return read_folder(path, expected);
    }
    match extension(path).as_deref() {
        Some("npz") => {
            let mut c = Collected::new(expected, file.clone());
            for (name, tensor) in read_npz(path)? {
                let index = find_spec(expected, &name)
                    .map_err(|reason| TensorFileError::mismatch(&file, reason))?
                    .ok_or_else(|| {
                        TensorFileError::mismatch(
                            &file,
                            format!(
                                "entry '{name}' is not an input of the model (expected: {})",
                                expected_list(expected)
                            ),
                        )
                    })?;
                c.put(
                    index,
                    Value::Tensor(tensor),
                    format!("{file}: entry '{name}'"),
                )?;
            }
            c.finish()
        }
        Some(ext @ ("npy" | "pb")) => {
            let [spec] = expected else {
                return Err(TensorFileError::mismatch(
                    &file,
                    format!(
                        "a single .{ext} holds one input but the model has {} ({}); \
                         use an .npz or a folder",
                        expected.len(),
                        expected_list(expected)
                    ),
                ));
            };
            let value = if ext == "npy" {
                Value::Tensor(read_npy(path)?)
            } else {
                read_pb(path, spec.kind)?.1
            };
            let mut c = Collected::new(expected, file.clone());
            c.put(0, value, file)?;
            c.finish()
        }
        _ => Err(TensorFileError::unsupported(
            file,
            "not a tensor file: expected an .npz, .npy or .pb file, or a folder of them",
        )),
    }
}

/// The files of a folder that matter here, by role.
#[derive(Default)]
struct FolderFiles {
    /// `input_<K>.pb`, by K.
    inputs: BTreeMap<u64, PathBuf>,
    /// `output_<K>.pb`, by K.
    outputs: BTreeMap<u64, PathBuf>,
    /// Other `<stem>.npy` / `<stem>.pb`, with the stem.
    named: Vec<(String, PathBuf)>,
}

/// `input_12.pb` → 12 for prefix `input`.
fn numbered(file_name: &str, prefix: &str) -> Option<u64> {
    let digits = file_name
        .strip_prefix(prefix)?
        .strip_prefix('_')?
        .strip_suffix(".pb")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn scan_folder(dir: &Path) -> Result<FolderFiles> {
    let mut files = FolderFiles::default();
    let entries = fs::read_dir(dir).map_err(|e| TensorFileError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TensorFileError::io(dir, e))?;
        let path = entry.path();
        if path.is_file() {
            paths.push(path);
        }
    }
    // read_dir's order is the file system's; sorting makes messages and results stable.
    paths.sort();
    for path in paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Leftovers of an interrupted write are never inputs.
        if name.starts_with('.') && name.ends_with(".kiln-tmp") {
            continue;
        }
        if let Some(k) = numbered(name, "input") {
            files.inputs.insert(k, path.clone());
        } else if let Some(k) = numbered(name, "output") {
            files.outputs.insert(k, path.clone());
        } else if let Some(stem) = name
            .strip_suffix(".npy")
            .or_else(|| name.strip_suffix(".pb"))
        {
            files.named.push((stem.to_string(), path.clone()));
        }
    }
    Ok(files)
}

fn read_folder(dir: &Path, expected: &[IoSpec]) -> Result<NamedValues> {
    let files = scan_folder(dir)?;
    let file = label(dir);
    // `input_0.pb` is ambiguous: test-data position 0, or an input called "input_0".
    let positional = !files.inputs.is_empty()
        && files
            .inputs
            .keys()
            .all(|k| matches!(find_spec(expected, &format!("input_{k}")), Ok(None)));
    if positional {
        if let Some((_, p)) = files.named.first() {
            return Err(TensorFileError::mismatch(
                file,
                format!(
                    "mixes ONNX test data files (input_<K>.pb) with named files such as {}; \
                     use one layout",
                    label(p)
                ),
            ));
        }
        return read_positional(dir, &files.inputs, expected, "input");
    }
    let mut c = Collected::new(expected, file.clone());
    let mut named = files.named;
    // Named mode: `input_<K>.pb` files are inputs called that; `output_<K>.pb` files are
    // reference outputs and skipped, unless the model has an input of that name.
    named.extend(
        files
            .inputs
            .into_iter()
            .map(|(k, p)| (format!("input_{k}"), p)),
    );
    named.extend(
        files
            .outputs
            .into_iter()
            .map(|(k, p)| (format!("output_{k}"), p))
            .filter(|(stem, _)| matches!(find_spec(expected, stem), Ok(Some(_)))),
    );
    for (stem, path) in named {
        let index = find_spec(expected, &stem)
            .map_err(|reason| TensorFileError::mismatch(&file, reason))?
            .ok_or_else(|| {
                TensorFileError::mismatch(
                    &file,
                    format!(
                        "file '{}' is not an input of the model (expected: {})",
                        path.file_name()
                            .map_or(stem.clone(), |n| n.to_string_lossy().into()),
                        expected_list(expected)
                    ),
                )
            })?;
        let value = if extension(&path).as_deref() == Some("npy") {
            Value::Tensor(read_npy(&path)?)
        } else {
            read_pb(&path, expected[index].kind)?.1
        };
        c.put(index, value, label(&path))?;
    }
    c.finish()
}

/// Reads `<prefix>_K.pb` files as the K-th of `specs`, or the spec the proto's name names.
fn read_positional(
    dir: &Path,
    numbered_files: &BTreeMap<u64, PathBuf>,
    specs: &[IoSpec],
    prefix: &str,
) -> Result<NamedValues> {
    let file = label(dir);
    for (i, k) in numbered_files.keys().enumerate() {
        if *k != i as u64 {
            return Err(TensorFileError::mismatch(
                &file,
                format!("has {prefix}_{k}.pb but no {prefix}_{i}.pb"),
            ));
        }
    }
    if numbered_files.len() > specs.len() {
        return Err(TensorFileError::mismatch(
            &file,
            format!(
                "holds {} {prefix}_<K>.pb files but the model has {} {prefix}s ({})",
                numbered_files.len(),
                specs.len(),
                expected_list(specs)
            ),
        ));
    }
    let mut c = Collected::new(specs, file);
    for (k, path) in numbered_files.values().enumerate() {
        let bytes = fs::read(path).map_err(|e| TensorFileError::io(path, e))?;
        let bytes = Bytes::from(bytes);
        let source = label(path);
        let (name, mut value) = decode_pb(bytes.clone(), specs[k].kind, &source)?;
        let mut index = k;
        if !name.is_empty() {
            if let Ok(Some(j)) = find_spec(specs, &name) {
                index = j;
                // The proto names another input, of another kind: decode it as that kind.
                if specs[j].kind != specs[k].kind {
                    value = decode_pb(bytes, specs[j].kind, &source)?.1;
                }
            }
        }
        c.put(index, value, source)?;
    }
    c.finish()
}

/// Reads an ONNX test data set folder: `input_K.pb` for `inputs` and `output_K.pb` (the
/// reference results) for `outputs`, each K-th spec unless the proto names another.
pub fn read_test_data_set(
    dir: &Path,
    inputs: &[IoSpec],
    outputs: &[IoSpec],
) -> Result<(NamedValues, NamedValues)> {
    let files = scan_folder(dir)?;
    let ins = read_positional(dir, &files.inputs, inputs, "input")?;
    let outs = read_positional(dir, &files.outputs, outputs, "output")?;
    Ok((ins, outs))
}

/// The samples under `path`: each `test_data_set_*` subfolder (in numeric order) when it has
/// any, else `path` itself as the only sample.
pub fn list_samples(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = fs::metadata(path).map_err(|e| TensorFileError::io(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut sets: Vec<(Option<u64>, String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| TensorFileError::io(path, e))? {
        let entry = entry.map_err(|e| TensorFileError::io(path, e))?;
        let p = entry.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if let Some(suffix) = name.strip_prefix("test_data_set_") {
            if p.is_dir() {
                sets.push((suffix.parse().ok(), name.clone(), p));
            }
        }
    }
    if sets.is_empty() {
        return Ok(vec![path.to_path_buf()]);
    }
    // Numbered sets first, by number (test_data_set_2 before test_data_set_10), then others.
    sets.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.1.cmp(&b.1)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1),
    });
    Ok(sets.into_iter().map(|(_, _, p)| p).collect())
}

/// Reads every value stored at `path`, with no model to say what to expect (saved outputs):
/// an `.npz` (every entry), an `.npy` or `.pb` (one value, named by the stem or the proto's
/// name), or a folder. In a folder, `output_K.pb` files (an ONNX test data set's reference
/// outputs) are read when there are any, named by their proto name or `output_K`; otherwise
/// every `<stem>.npy` / `<stem>.pb`, named by the stem (or a `.pb`'s own name).
pub fn read_all_values(path: &Path) -> Result<NamedValues> {
    let meta = fs::metadata(path).map_err(|e| TensorFileError::io(path, e))?;
    let stem = |p: &Path| {
        p.file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
    };
    if !meta.is_dir() {
        return match extension(path).as_deref() {
            Some("npz") => Ok(read_npz(path)?
                .into_iter()
                .map(|(n, t)| (n, Value::Tensor(t)))
                .collect()),
            Some("npy") => Ok(vec![(stem(path), Value::Tensor(read_npy(path)?))]),
            Some("pb") => Ok(vec![read_any_pb(path, stem(path))?]),
            _ => Err(TensorFileError::unsupported(
                label(path),
                "not a tensor file: expected an .npz, .npy or .pb file, or a folder of them",
            )),
        };
    }
    let files = scan_folder(path)?;
    let mut values: NamedValues = Vec::new();
    if !files.outputs.is_empty() {
        for (k, p) in &files.outputs {
            values.push(read_any_pb(p, format!("output_{k}"))?);
        }
    } else {
        let mut named = files.named;
        named.extend(
            files
                .inputs
                .into_iter()
                .map(|(k, p)| (format!("input_{k}"), p)),
        );
        for (stem, p) in named {
            if extension(&p).as_deref() == Some("npy") {
                values.push((stem, Value::Tensor(read_npy(&p)?)));
            } else {
                values.push(read_any_pb(&p, stem)?);
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in &values {
        if !seen.insert(name.as_str()) {
            return Err(TensorFileError::mismatch(
                label(path),
                format!("holds two values named '{name}'"),
            ));
        }
    }
    Ok(values)
}

/// A `.pb` value of unknown kind: a tensor, else a sequence, else an optional (protobuf cannot
/// tell them apart, but a sequence or optional never decodes as a valid tensor of a known type).
fn read_any_pb(path: &Path, fallback_name: String) -> Result<(String, Value)> {
    let bytes = Bytes::from(fs::read(path).map_err(|e| TensorFileError::io(path, e))?);
    let file = label(path);
    let first = decode_pb(bytes.clone(), ValueKind::Tensor, &file);
    let (name, value) = match first {
        Ok(v) => v,
        Err(e) => decode_pb(bytes.clone(), ValueKind::Sequence, &file)
            .or_else(|_| decode_pb(bytes, ValueKind::Optional, &file))
            .map_err(|_| e)?,
    };
    Ok((if name.is_empty() { fallback_name } else { name }, value))
}

/// Writes values to `path`: an `.npz` (tensors of numpy types only), a single `.npy` / `.pb`
/// (one value), or otherwise a folder with one `<sanitized name>.npy` per numpy-typed tensor
/// and `<sanitized name>.pb` for everything else (bfloat16, float8, int4, …, sequences,
/// optionals).
///
/// Every file is written to a temporary name and renamed into place only once all of them
/// are written, so a failure leaves no partial file. In a folder, a stale file of the same
/// name with the other extension (`x.pb` when writing `x.npy`) is removed, since reading the
/// folder back would find two values for one name.
pub fn write_values(path: &Path, values: &NamedValues) -> Result<()> {
    let file = label(path);
    match extension(path).as_deref() {
        Some("npz") if !path.is_dir() => return write_npz(path, values),
        Some(ext @ ("npy" | "pb")) if !path.is_dir() => {
            let [(name, value)] = values.as_slice() else {
                return Err(TensorFileError::mismatch(
                    &file,
                    format!(
                        "a single .{ext} holds one value but there are {}; write to a folder",
                        values.len()
                    ),
                ));
            };
            return match (ext, value) {
                ("npy", Value::Tensor(t)) => npy::write_npy(path, t),
                ("npy", v) => Err(TensorFileError::unsupported(
                    &file,
                    format!(
                        "'{name}' is {}, which .npy cannot hold; use .pb",
                        v.describe()
                    ),
                )),
                _ => super::pb::write_pb(path, name, value),
            };
        }
        _ => {}
    }
    fs::create_dir_all(path).map_err(|e| TensorFileError::io(path, e))?;
    let mut stems: BTreeMap<String, &str> = BTreeMap::new();
    let mut staged = Vec::with_capacity(values.len());
    for (name, value) in values {
        let stem = sanitize_name(name);
        // Case-folded, because macOS and Windows folders do not tell `A.npy` from `a.npy`.
        if let Some(other) = stems.insert(stem.to_lowercase(), name) {
            return Err(TensorFileError::mismatch(
                &file,
                format!("'{other}' and '{name}' would be written to the same file name '{stem}'"),
            ));
        }
        let tensor = value.as_tensor().filter(|t| is_numpy_type(t.dtype()));
        let (ext, stale) = if tensor.is_some() {
            ("npy", "pb")
        } else {
            ("pb", "npy")
        };
        let dest = path.join(format!("{stem}.{ext}"));
        let stage = match tensor {
            Some(t) => {
                let (header, body) = encode(t, &label(&dest))?;
                Staged::write(&dest, |w| {
                    use std::io::Write;
                    w.write_all(&header)?;
                    w.write_all(&body)
                })?
            }
            None => {
                let bytes = encode_pb(name, value, &label(&dest))?;
                Staged::write(&dest, |w| std::io::Write::write_all(w, &bytes))?
            }
        };
        staged.push((stage, path.join(format!("{stem}.{stale}"))));
    }
    for (stage, stale) in staged {
        stage.commit()?;
        match fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(TensorFileError::io(&stale, e))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_passes::tensor::{DataType, Tensor};

    fn t(v: &[f32]) -> Value {
        Value::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    fn specs(names: &[&str]) -> Vec<IoSpec> {
        names.iter().map(|n| IoSpec::tensor(*n)).collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sanitized_names() {
        assert_eq!(sanitize_name("input:0"), "input_0");
        assert_eq!(sanitize_name("a/b\\c"), "a_b_c");
        assert_eq!(sanitize_name(""), "_");
        assert_eq!(sanitize_name(".."), "__");
        assert_eq!(sanitize_name("x.y"), "x.y");
    }

    #[test]
    fn folder_round_trip_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let bf16 = Tensor::from_raw(
            DataType::Bfloat16,
            vec![2],
            bytes::Bytes::from_static(&[1, 2, 3, 4]),
        )
        .unwrap();
        let values: NamedValues = vec![
            ("input:0".into(), t(&[1.0, 2.0])),
            ("w".into(), Value::Tensor(bf16)),
            (
                "seq".into(),
                Value::Sequence {
                    elem_type: Some(DataType::Float),
                    items: vec![t(&[3.0])],
                },
            ),
            ("opt".into(), Value::Optional(None)),
        ];
        write_values(&out, &values).unwrap();
        assert_eq!(files(&out), ["input_0.npy", "opt.pb", "seq.pb", "w.pb"]);
        let expected = vec![
            IoSpec::tensor("input:0"),
            IoSpec::tensor("w"),
            IoSpec::new("seq", ValueKind::Sequence),
            IoSpec::new("opt", ValueKind::Optional),
        ];
        assert_eq!(read_values(&out, &expected).unwrap(), values);

        // Writing again with other types replaces the stale file of the other extension.
        let values2: NamedValues = vec![("w".into(), t(&[5.0]))];
        write_values(&out, &values2).unwrap();
        assert!(!out.join("w.pb").exists());
        assert_eq!(
            read_values(&out.join("w.npy"), &specs(&["w"])).unwrap(),
            values2
        );
    }

    #[test]
    fn npz_inputs_are_matched_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.npz");
        let values: NamedValues = vec![
            ("attention_mask".into(), t(&[1.0])),
            ("input_ids".into(), t(&[2.0])),
        ];
        write_values(&path, &values).unwrap();
        // Returned in the model's order, not the archive's.
        let got = read_values(&path, &specs(&["input_ids", "attention_mask"])).unwrap();
        assert_eq!(got[0], values[1]);
        assert_eq!(got[1], values[0]);

        let e = read_values(&path, &specs(&["input_ids"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: entry 'attention_mask' is not an input of the model (expected: input_ids)",
                path.display()
            )
        );
        let e = read_values(&path, &specs(&["input_ids", "attention_mask", "pos"])).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("no value for 'pos' (expected: input_ids, attention_mask, pos)"),
            "{e}"
        );
        let e = read_values(
            &path,
            &[
                IoSpec::tensor("input_ids"),
                IoSpec::new("attention_mask", ValueKind::Sequence),
            ],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "'attention_mask' is a sequence in the model but the file holds float32[1]"
            ),
            "{e}"
        );
    }

    #[test]
    fn single_files_and_optionals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        write_values(&path, &vec![("x".into(), t(&[1.0]))]).unwrap();
        assert_eq!(
            read_values(&path, &specs(&["data"])).unwrap(),
            vec![("data".into(), t(&[1.0]))]
        );
        let opt = read_values(&path, &[IoSpec::new("o", ValueKind::Optional)]).unwrap();
        assert_eq!(opt[0].1, Value::Optional(Some(Box::new(t(&[1.0])))));
        let e = read_values(&path, &specs(&["a", "b"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("a single .npy holds one input but the model has 2 (a, b)"),
            "{e}"
        );
        let e = read_values(&dir.path().join("x.txt"), &specs(&["a"])).unwrap_err();
        assert!(matches!(e, TensorFileError::Io { .. }), "{e}");
    }

    #[test]
    fn test_data_set_folders_are_positional_unless_named() {
        let root = tempfile::tempdir().unwrap();
        for k in [10, 2, 0] {
            let set = root.path().join(format!("test_data_set_{k}"));
            fs::create_dir(&set).unwrap();
            // input_0.pb has no name (so it is the first input), input_1.pb names "b".
            super::super::pb::write_pb(&set.join("input_0.pb"), "", &t(&[0.0])).unwrap();
            super::super::pb::write_pb(&set.join("input_1.pb"), "b", &t(&[1.0])).unwrap();
            super::super::pb::write_pb(&set.join("output_0.pb"), "", &t(&[9.0])).unwrap();
        }
        fs::create_dir(root.path().join("other")).unwrap();
        let samples = list_samples(root.path()).unwrap();
        let names: Vec<_> = samples
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["test_data_set_0", "test_data_set_2", "test_data_set_10"]
        );
        assert_eq!(list_samples(&samples[0]).unwrap(), vec![samples[0].clone()]);

        let got = read_values(&samples[0], &specs(&["a", "b"])).unwrap();
        assert_eq!(got, vec![("a".into(), t(&[0.0])), ("b".into(), t(&[1.0]))]);
        // A name in the proto picks the input whatever the position; an unnamed file takes
        // its position, which here "b" already claimed.
        let e = read_values(&samples[0], &specs(&["b", "a"])).unwrap_err();
        assert!(e.to_string().contains("input 'b' is given twice"), "{e}");
        super::super::pb::write_pb(&samples[0].join("input_0.pb"), "a", &t(&[0.0])).unwrap();
        let got = read_values(&samples[0], &specs(&["b", "a"])).unwrap();
        assert_eq!(got, vec![("b".into(), t(&[1.0])), ("a".into(), t(&[0.0]))]);
        let (ins, outs) =
            read_test_data_set(&samples[1], &specs(&["a", "b"]), &specs(&["y"])).unwrap();
        assert_eq!((ins.len(), outs), (2, vec![("y".into(), t(&[9.0]))]));
        let e = read_values(&samples[0], &specs(&["a"])).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("holds 2 input_<K>.pb files but the model has 1 inputs (a)"),
            "{e}"
        );
        // A model whose input is called input_0 reads the same folder by name.
        let e = read_values(&samples[0], &specs(&["input_0"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("file 'input_1.pb' is not an input of the model (expected: input_0)"),
            "{e}"
        );
    }

    #[test]
    fn folder_name_conflicts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_values(
            dir.path(),
            &vec![("a:0".into(), t(&[1.0])), ("a_0".into(), t(&[2.0]))],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("'a:0' and 'a_0' would be written to the same file name 'a_0'"),
            "{e}"
        );
        assert!(files(dir.path()).is_empty());
        write_npy_and_pb(dir.path());
        let e = read_values(dir.path(), &specs(&["x"])).unwrap_err();
        assert!(e.to_string().contains("input 'x' is given twice"), "{e}");
        // Sanitized stems that fit two inputs are ambiguous.
        let other = tempfile::tempdir().unwrap();
        super::super::npy::write_npy(&other.path().join("x_.npy"), &Tensor::scalar(1.0f32))
            .unwrap();
        let e = read_values(other.path(), &specs(&["x:", "x/"])).unwrap_err();
        assert!(
            e.to_string().contains("could stand for several inputs"),
            "{e}"
        );
    }

    fn write_npy_and_pb(dir: &Path) {
        super::super::npy::write_npy(&dir.join("x.npy"), &Tensor::scalar(1.0f32)).unwrap();
        super::super::pb::write_pb(
            &dir.join("x.pb"),
            "x",
            &Value::Tensor(Tensor::scalar(1.0f32)),
        )
        .unwrap();
    }
}

#[cfg(test)]
mod read_all_tests {
    use super::*;
    use kiln_passes::tensor::{DataType, Tensor};

    #[test]
    fn reads_back_what_write_values_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let t = |v: &[f32]| Value::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap());
        let bf16 = Value::Tensor(
            Tensor::from_raw(DataType::Bfloat16, vec![1], Bytes::from_static(&[1, 2])).unwrap(),
        );
        let seq = Value::Sequence {
            elem_type: Some(DataType::Float),
            items: vec![t(&[1.0]), t(&[2.0, 3.0])],
        };
        let values: NamedValues = vec![
            ("logits".into(), t(&[1.0, 2.0])),
            ("input:0".into(), bf16),
            ("seq".into(), seq),
        ];
        let folder = dir.path().join("out");
        write_values(&folder, &values).unwrap();
        let mut back = read_all_values(&folder).unwrap();
        back.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = values.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
        let npz = dir.path().join("out.npz");
        write_values(&npz, &values[..1].to_vec()).unwrap();
        assert_eq!(read_all_values(&npz).unwrap(), values[..1].to_vec());
    }
}
