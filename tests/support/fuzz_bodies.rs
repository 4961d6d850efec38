//! The bodies of the `cargo fuzz` targets in `fuzz/`, shared with the CI smoke test
//! (`tests/fuzz_smoke.rs`) so both run exactly the same code on an input.
//!
//! Each body takes the fuzzer's bytes and must return normally for every input: errors are
//! fine, panics (including the invariant assertions here) are findings.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use arbitrary::{Result as ArbResult, Unstructured};
use bytes::Bytes;
use kiln_backends::profile;
use kiln_backends::tensors::{npy::read_npy_from, npz::read_npz_from, pb::decode_pb, ValueKind};
use kiln_backends::validate::Thresholds;
use kiln_passes::eval::{evaluate_with, EvalOptions};
use kiln_passes::ir::{AttrValue, Attribute, Model};
use kiln_passes::quant::QuantType;
use kiln_passes::tensor::{DataType, Tensor};
use kiln_proto::onnx::{
    tensor_proto::DataLocation, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto,
};
use kiln_proto::{decode_model, LoadedModel};
use prost::Message;

/// Result size cap the evaluator target passes: anything bigger must be refused.
pub const EVAL_MAX_ELEMENTS: usize = 1 << 16;

/// `decode_graph`: bytes → `decode_model` → `Model::from_proto` → `verify` → `to_proto`.
///
/// `origin` is a model path in an empty folder (external data must resolve nowhere else).
pub fn decode_graph(origin: &Path, data: &[u8]) {
    let Ok(loaded) = decode_model(Bytes::copy_from_slice(data), origin) else {
        return;
    };
    let Ok(model) = Model::from_proto(&loaded.model) else {
        return;
    };
    // A graph built from a proto must satisfy the IR's invariants, and survive a round trip.
    if let Err(e) = model.graph.verify() {
        panic!("from_proto built a graph that fails verify: {e}");
    }
    let proto = model.to_proto();
    if let Err(e) = Model::from_proto(&proto) {
        panic!("to_proto wrote a model from_proto refuses: {e}");
    }
}

/// A folder for the `external_data` target: `model/` holds the model's origin and a small
/// data file, with a `sub/` folder and a symbolic link to a file outside `model/`.
#[derive(Debug)]
pub struct ExternalSandbox {
    _root: tempfile::TempDir,
    /// The model's folder; external data may be read from here and nowhere else.
    pub folder: PathBuf,
}

impl ExternalSandbox {
    /// Creates the sandbox in a fresh temporary folder.
    pub fn new() -> std::io::Result<ExternalSandbox> {
        let root = tempfile::tempdir()?;
        let folder = root.path().join("model");
        std::fs::create_dir_all(folder.join("sub"))?;
        let data: Vec<u8> = (0u8..64).collect();
        std::fs::write(folder.join("weights.bin"), &data)?;
        std::fs::write(folder.join("sub").join("w.bin"), &data[..16])?;
        std::fs::write(root.path().join("secret.bin"), [0xAAu8; 64])?;
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.path().join("secret.bin"), folder.join("link.bin"))?;
        let folder = folder.canonicalize()?;
        Ok(ExternalSandbox {
            _root: root,
            folder,
        })
    }
}

/// Locations the fuzzer picks from (plus arbitrary strings): real files, escapes, odd forms.
const LOCATIONS: &[&str] = &[
    "weights.bin",
    "./weights.bin",
    "sub/w.bin",
    "sub/../weights.bin",
    "../secret.bin",
    "link.bin",
    "sub",
    "/etc/passwd",
    "C:\\x.bin",
    "\\\\server\\share\\x.bin",
    "missing.bin",
    "",
];

/// `external_data`: a model whose initializers' `external_data` entries (keys, locations,
/// offsets, lengths, types, dims) come from the fuzzer, loaded from `sandbox.folder`.
///
/// Never panics, and every byte a tensor ends up holding comes from a file inside the folder.
pub fn external_data(sandbox: &ExternalSandbox, data: &[u8]) {
    let Ok(model) = arbitrary_external_model(&mut Unstructured::new(data)) else {
        return;
    };
    let origin = sandbox.folder.join("model.onnx");
    let Ok(loaded) = decode_model(Bytes::from(model.encode_to_vec()), &origin) else {
        return;
    };
    check_confined(&loaded, &sandbox.folder);
    let _ = Model::from_proto(&loaded.model);
}

fn check_confined(loaded: &LoadedModel, folder: &Path) {
    for file in &loaded.external_files {
        assert!(
            file.path.starts_with(folder),
            "read {} outside {}",
            file.path.display(),
            folder.display()
        );
    }
    for path in loaded.sources().paths() {
        assert!(path.starts_with(folder), "mapped {}", path.display());
    }
    let Some(graph) = &loaded.model.graph else {
        return;
    };
    for t in &graph.initializer {
        assert_ne!(
            t.data_location,
            DataLocation::External as i32,
            "left unresolved"
        );
        if let Some((path, offset)) = loaded.sources().locate(&t.raw_data) {
            let len = std::fs::metadata(path).map_or(0, |m| m.len());
            assert!(offset + t.raw_data.len() as u64 <= len, "slice past end");
        }
    }
}

fn arbitrary_external_model(u: &mut Unstructured) -> ArbResult<ModelProto> {
    let mut initializer = Vec::new();
    for i in 0..u.int_in_range(1..=3)? {
        let mut entries = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let key = *u.choose(&["location", "offset", "length", "checksum", "other"])?;
            let value = match (key, u.ratio(1, 4)?) {
                (_, true) => u.arbitrary::<String>()?,
                ("location", false) => u.choose(LOCATIONS)?.to_string(),
                (_, false) => u.int_in_range(0u64..=80)?.to_string(),
            };
            entries.push(StringStringEntryProto {
                key: key.to_string(),
                value,
            });
        }
        let dims = (0..u.int_in_range(0..=3)?)
            .map(|_| match u.ratio(1, 8)? {
                true => u.arbitrary::<i64>(),
                false => u.int_in_range(0i64..=9),
            })
            .collect::<ArbResult<Vec<i64>>>()?;
        initializer.push(TensorProto {
            name: format!("w{i}"),
            dims,
            data_type: u.int_in_range(0..=26)?,
            data_location: if u.ratio(7, 8)? {
                DataLocation::External as i32
            } else {
                DataLocation::Default as i32
            },
            external_data: entries,
            ..TensorProto::default()
        });
    }
    Ok(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            initializer,
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    })
}

/// `thresholds_yaml`: bytes as a thresholds YAML file, then every query on the result.
pub fn thresholds_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Thresholds::from_yaml_str(text, "fuzz.yaml") else {
        return;
    };
    for name in t.outputs.keys().map(String::as_str).chain(["", "y"]) {
        let _ = t.for_output(name).tolerance();
    }
    let _ = t.overridden_by(&t);
}

/// `profile_yaml`: bytes as a hardware profile (it may extend built-ins only, so nothing
/// outside is read), then every query on the result. An accepted profile must survive
/// `profile show` (its YAML parses back to the same profile); a refused one must be one line,
/// and a located error must point inside the text.
pub fn profile_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = match profile::parse(text, "fuzz.yaml") {
        Ok(loaded) => loaded,
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.contains('\n'),
                "error is not one line: {message:?}"
            );
            if let Some(at) = e.location().filter(|at| at.file == "fuzz.yaml") {
                let lines = yaml_line_breaks(text) + 1;
                assert!(at.line <= lines, "line {} of {lines}: {message}", at.line);
            }
            return;
        }
    };
    let p = &loaded.profile;
    let shown = loaded.to_yaml();
    match profile::parse(&shown, "shown.yaml") {
        Ok(again) => assert_eq!(again.profile, *p, "show does not round-trip:\n{shown}"),
        Err(e) => panic!("show output does not parse: {e}\n{shown}"),
    }
    let _ = p.quant_config();
    if let Some(c) = p.blockwise_config() {
        assert!(
            c.validate().is_ok(),
            "a checked profile's block-wise settings: {c:?}"
        );
    }
    let _ = p.thresholds().for_output("y");
    let _ = p.calibration_percentile();
    let _ = p.contrib_qdq(13);
    let ops = p
        .ops
        .supported
        .keys()
        .chain(p.quantization.weights.per_op.keys());
    for op in ops.map(String::as_str).chain(["Conv", "Loop"]) {
        let _ = p.supports(op);
        let _ = p.weight_per_channel(op);
        for t in [QuantType::Uint8, QuantType::Uint16, QuantType::Int16] {
            if let Some(f) = p.fixed_output(op, t) {
                let _ = f.range(t);
            }
        }
    }
}

/// Line breaks as YAML counts them: LF, CR, CRLF (one), NEL, LS and PS.
fn yaml_line_breaks(text: &str) -> usize {
    let mut n = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                n += 1;
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => n += 1,
            _ => {}
        }
    }
    n
}

/// `tensor_files`: bytes as an `.npy`, an `.npz`, and a `.pb` of each kind.
pub fn tensor_files(data: &[u8]) {
    let _ = read_npy_from(Cursor::new(data), "fuzz.npy", Some(data.len() as u64));
    let _ = read_npy_from(Cursor::new(data), "fuzz.npy", None);
    let _ = read_npz_from(Cursor::new(data), "fuzz.npz");
    for kind in [
        ValueKind::Tensor,
        ValueKind::Sequence,
        ValueKind::Optional,
        ValueKind::Map,
    ] {
        let _ = decode_pb(Bytes::copy_from_slice(data), kind, "fuzz.pb");
    }
}

/// Every operator the evaluator implements, in its own order (kept fuzz inputs pick ops by
/// index), and one it does not.
pub fn eval_ops() -> &'static [&'static str] {
    static OPS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        let mut ops = kiln_passes::eval::supported_ops();
        ops.push("Unknown");
        ops
    })
}

const ATTR_NAMES: &[&str] = &[
    "axis",
    "axes",
    "perm",
    "keepdims",
    "to",
    "transA",
    "transB",
    "alpha",
    "beta",
    "split",
    "num_outputs",
    "noop_with_empty_axes",
    "min",
    "max",
    "fmod",
    "start",
    "end",
    "value",
    "allowzero",
    "batch_dims",
    "saturate",
    "detect_negative",
    "detect_positive",
];

const DTYPES: &[DataType] = &[
    DataType::Float,
    DataType::Int64,
    DataType::Int32,
    DataType::Bool,
    DataType::Double,
    DataType::Float16,
    DataType::Uint8,
    DataType::Int8,
    DataType::Bfloat16,
    DataType::Uint64,
    DataType::Int4,
    DataType::String,
];

/// One evaluator call the fuzzer built.
#[derive(Debug)]
pub struct EvalCase {
    /// Operator type.
    pub op: &'static str,
    /// Default-domain opset.
    pub opset: i64,
    /// Attributes.
    pub attrs: Vec<Attribute>,
    /// Inputs (`None`: absent optional input).
    pub inputs: Vec<Option<Tensor>>,
    /// Output count.
    pub num_outputs: Option<usize>,
}

/// Builds an evaluator call from fuzzer bytes.
pub fn eval_case(u: &mut Unstructured) -> ArbResult<EvalCase> {
    let op = *u.choose(eval_ops())?;
    let opset = *u.choose(&[7i64, 9, 11, 12, 13, 17, 18, 21])?;
    let mut attrs = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let name = *u.choose(ATTR_NAMES)?;
        let value = match u.int_in_range(0..=3)? {
            0 => AttrValue::Int(small_int(u)?),
            1 => AttrValue::Ints(
                (0..u.int_in_range(0..=4)?)
                    .map(|_| small_int(u))
                    .collect::<ArbResult<_>>()?,
            ),
            2 => AttrValue::Float(some_float(u)?),
            _ => AttrValue::Tensor(small_tensor(u)?),
        };
        attrs.push(Attribute::new(name, value));
    }
    let mut inputs = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        inputs.push(if u.ratio(1, 10)? {
            None
        } else {
            Some(small_tensor(u)?)
        });
    }
    let num_outputs = if u.arbitrary()? {
        Some(u.int_in_range(0..=4)?)
    } else {
        None
    };
    Ok(EvalCase {
        op,
        opset,
        attrs,
        inputs,
        num_outputs,
    })
}

fn small_int(u: &mut Unstructured) -> ArbResult<i64> {
    if u.ratio(1, 8)? {
        u.arbitrary()
    } else {
        u.int_in_range(-3..=6)
    }
}

fn some_float(u: &mut Unstructured) -> ArbResult<f32> {
    let pool = [
        0.0,
        1.0,
        -1.0,
        0.5,
        2.0,
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
        1e30,
    ];
    if u.ratio(1, 4)? {
        u.arbitrary()
    } else {
        Ok(*u.choose(&pool)?)
    }
}

fn small_tensor(u: &mut Unstructured) -> ArbResult<Tensor> {
    let dtype = *u.choose(DTYPES)?;
    let shape: Vec<usize> = (0..u.int_in_range(0..=3)?)
        .map(|_| u.int_in_range(0..=4))
        .collect::<ArbResult<_>>()?;
    let n: usize = shape.iter().product();
    let built = match dtype {
        DataType::String => {
            let strings = (0..n)
                .map(|_| Ok(Bytes::from(u.arbitrary::<Vec<u8>>()?)))
                .collect::<ArbResult<_>>()?;
            Tensor::from_strings(shape, strings)
        }
        DataType::Int64 => {
            let v = (0..n).map(|_| small_int(u)).collect::<ArbResult<_>>()?;
            Tensor::from_vec::<i64>(shape, v)
        }
        DataType::Float => {
            let v = (0..n).map(|_| some_float(u)).collect::<ArbResult<_>>()?;
            Tensor::from_vec::<f32>(shape, v)
        }
        _ => {
            let len = dtype.byte_len(n).unwrap_or(0);
            let mut raw = vec![0u8; len];
            u.fill_buffer(&mut raw)?;
            Tensor::from_raw(dtype, shape, Bytes::from(raw))
        }
    };
    built.map_err(|_| arbitrary::Error::IncorrectFormat)
}

/// `evaluator`: one operator on small fuzzer-built constants under a small size cap.
///
/// Never panics, and a result over the cap is refused rather than returned.
pub fn evaluator(data: &[u8]) {
    let Ok(case) = eval_case(&mut Unstructured::new(data)) else {
        return;
    };
    let inputs: Vec<Option<&Tensor>> = case.inputs.iter().map(Option::as_ref).collect();
    let options = EvalOptions {
        max_elements: EVAL_MAX_ELEMENTS,
        num_outputs: case.num_outputs,
    };
    if let Ok(Some(outs)) = evaluate_with(case.op, "", case.opset, &case.attrs, &inputs, options) {
        for out in outs {
            assert!(
                out.len() <= EVAL_MAX_ELEMENTS,
                "{} returned {} elements",
                case.op,
                out.len()
            );
        }
    }
}
