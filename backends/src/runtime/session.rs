//! A loaded model ready to run: inputs and outputs described, values checked before ORT sees them.

use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use kiln_passes::tensor::DataType;
use kiln_proto::onnx::{GraphProto, ModelProto, TensorProto};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::ValueType;
use ort::AsPointer;

use super::convert::{data_type_from_ort, from_ort, to_ort};
use super::ffi::{self, OwnedValue};
use super::large_model;
use super::{environment, RuntimeError};
use crate::value::{NamedValues, Value};

/// Which of ONNX Runtime's graph rewrites run when a session is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optimization {
    /// Whatever ONNX Runtime does by default (all rewrites).
    #[default]
    Default,
    /// No rewrites: the run reflects the graph as written (what validation wants).
    DisableAll,
    /// Constant folding and redundant-node removal.
    Basic,
    /// Basic plus complex fusions.
    Extended,
    /// Everything, including layout changes.
    All,
}

/// How a [`Session`] is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads used inside one operator; `None` lets ONNX Runtime decide, 1 for determinism.
    pub intra_threads: Option<usize>,
    /// Graph rewrites ONNX Runtime applies.
    pub optimization: Optimization,
}

impl SessionOptions {
    /// One thread and no graph rewrites: reproducible results for the graph exactly as written.
    pub fn as_written() -> SessionOptions {
        SessionOptions {
            intra_threads: Some(1),
            optimization: Optimization::DisableAll,
        }
    }

    /// Sets the intra-op thread count.
    pub fn with_intra_threads(mut self, threads: usize) -> SessionOptions {
        self.intra_threads = Some(threads);
        self
    }

    /// Sets the optimization level.
    pub fn with_optimization(mut self, optimization: Optimization) -> SessionOptions {
        self.optimization = optimization;
        self
    }
}

/// One axis of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A free axis with a name (`batch`, `N`).
    Symbolic(String),
    /// A free axis without a name.
    Unknown,
}

/// What kind of value a model input or output is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoKind {
    /// A tensor; `dtype` is `None` only if ONNX Runtime reports an undefined element type.
    Tensor {
        /// Element type.
        dtype: Option<DataType>,
        /// Declared dims.
        dims: Vec<Dim>,
    },
    /// A sequence of values of the inner kind.
    Sequence(Box<IoKind>),
    /// An optional value of the inner kind.
    Optional(Box<IoKind>),
    /// A map (ONNX-ML); Kiln values cannot hold these.
    Map {
        /// Key element type.
        key: Option<DataType>,
        /// Value element type.
        value: Option<DataType>,
    },
    /// Not known (items of a sequence read without a declared type).
    Unknown,
}

/// A model input or output as ONNX Runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoInfo {
    /// The value's name.
    pub name: String,
    /// Its kind, element type and dims.
    pub kind: IoKind,
}

impl IoInfo {
    /// The input or output as tensor files see it (name and kind), for reading value files.
    pub fn spec(&self) -> crate::tensors::IoSpec {
        use crate::tensors::ValueKind;
        let kind = match self.kind {
            IoKind::Sequence(_) => ValueKind::Sequence,
            IoKind::Optional(_) => ValueKind::Optional,
            IoKind::Map { .. } => ValueKind::Map,
            IoKind::Tensor { .. } | IoKind::Unknown => ValueKind::Tensor,
        };
        crate::tensors::IoSpec::new(self.name.clone(), kind)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

impl fmt::Display for IoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = |t: &Option<DataType>| t.map_or("?".to_string(), |t| t.to_string());
        match self {
            IoKind::Tensor { dtype, dims } => write!(f, "{}[{}]", ty(dtype), join(dims)),
            IoKind::Sequence(inner) => write!(f, "seq({inner})"),
            IoKind::Optional(inner) => write!(f, "optional({inner})"),
            IoKind::Map { key, value } => write!(f, "map({}, {})", ty(key), ty(value)),
            IoKind::Unknown => f.write_str("?"),
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl IoKind {
    fn from_ort(ty: &ValueType) -> IoKind {
        match ty {
            ValueType::Tensor {
                ty,
                shape,
                dimension_symbols,
            } => IoKind::Tensor {
                dtype: data_type_from_ort(*ty),
                dims: shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match usize::try_from(d) {
                        Ok(n) => Dim::Fixed(n),
                        Err(_) => match dimension_symbols.get(i) {
                            Some(s) if !s.is_empty() => Dim::Symbolic(s.clone()),
                            _ => Dim::Unknown,
                        },
                    })
                    .collect(),
            },
            ValueType::Sequence(inner) => IoKind::Sequence(Box::new(IoKind::from_ort(inner))),
            ValueType::Optional(inner) => IoKind::Optional(Box::new(IoKind::from_ort(inner))),
            ValueType::Map { key, value } => IoKind::Map {
                key: data_type_from_ort(*key),
                value: data_type_from_ort(*value),
            },
        }
    }
}

/// Where the external data of a model loaded from memory is (see `large_model`).
#[derive(Default)]
struct External {
    /// The folder its references resolve against.
    folder: Option<std::path::PathBuf>,
    /// In-memory files its references name.
    files: Vec<(String, bytes::Bytes)>,
}

/// A model loaded into ONNX Runtime.
pub struct Session {
    inner: ort::session::Session,
    // Weights ONNX Runtime reads from memory (models past 2 GiB); declared after `inner` so
    // they outlive it.
    _memory_files: Vec<(String, bytes::Bytes)>,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
    // Initializers that are also graph inputs: may be fed, need not be.
    overridable: Vec<IoInfo>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Loads a model file with default options (external data is found next to it).
    pub fn from_path(path: &Path) -> Result<Session, RuntimeError> {
        Session::from_path_with(path, &SessionOptions::default())
    }

    /// Loads a model file.
    pub fn from_path_with(path: &Path, options: &SessionOptions) -> Result<Session, RuntimeError> {
        if !path.is_file() {
            return Err(RuntimeError::Io {
                path: path.to_path_buf(),
                message: "no such model file".into(),
            });
        }
        let origin = path.display().to_string();
        Session::commit(&origin, options, External::default(), |b| {
            b.commit_from_file(path)
        })
    }

    /// Loads a serialized model with default options; its weights must be embedded.
    pub fn from_bytes(bytes: &[u8]) -> Result<Session, RuntimeError> {
        Session::from_bytes_with(bytes, &SessionOptions::default())
    }

    /// Loads a serialized model. ONNX Runtime has no folder to resolve external data against
    /// here, so a model with external data must be loaded with [`Session::from_path`].
    pub fn from_bytes_with(
        bytes: &[u8],
        options: &SessionOptions,
    ) -> Result<Session, RuntimeError> {
        Session::commit("<memory>", options, External::default(), |b| {
            b.commit_from_memory(bytes)
        })
    }

    /// Loads Kiln's graph of a model (weights travel in memory; nothing is written).
    pub fn from_graph(model: &kiln_passes::ir::Model) -> Result<Session, RuntimeError> {
        Session::from_model_with(&model.to_proto(), &SessionOptions::default())
    }

    /// Loads Kiln's graph of a model with the given options.
    pub fn from_graph_with(
        model: &kiln_passes::ir::Model,
        options: &SessionOptions,
    ) -> Result<Session, RuntimeError> {
        Session::from_model_with(&model.to_proto(), options)
    }

    /// Encodes and loads a model with default options; its weights must be embedded.
    pub fn from_model(model: &ModelProto) -> Result<Session, RuntimeError> {
        Session::from_model_with(model, &SessionOptions::default())
    }

    /// Encodes and loads a model. Tensors whose data is still external are refused (save the
    /// model and use [`Session::from_path`]); [`kiln_proto::load_model`] resolves them to bytes.
    ///
    /// A model past protobuf's 2 GiB limit is loaded too: its big initializers are handed to
    /// ONNX Runtime as external data living in memory (mapped or not), nothing is written.
    pub fn from_model_with(
        model: &ModelProto,
        options: &SessionOptions,
    ) -> Result<Session, RuntimeError> {
        Session::from_model_routed(model, options, kiln_proto::PROTOBUF_LIMIT)
    }

    /// [`Session::from_model_with`], taking the memory route past `limit` bytes.
    pub(crate) fn from_model_routed(
        model: &ModelProto,
        options: &SessionOptions,
        limit: u64,
    ) -> Result<Session, RuntimeError> {
        if let Some(example) = first_external(model) {
            return Err(RuntimeError::ExternalData {
                model: "<memory>".into(),
                example,
            });
        }
        let model_err = |message: String| RuntimeError::Model {
            model: "<memory>".into(),
            message,
        };
        if large_model::needs_split(prost::Message::encoded_len(model) as u64, limit) {
            let split = large_model::split(model).map_err(model_err)?;
            let bytes = split.model;
            let external = External {
                folder: split.folder,
                files: split.files,
            };
            return Session::commit("<memory>", options, external, |b| {
                b.commit_from_memory(&bytes)
            });
        }
        let bytes = kiln_proto::encode_model(model)
            .map_err(|e| model_err(format!("{e}; save it and use Session::from_path")))?;
        Session::from_bytes_with(&bytes, options)
    }

    fn commit(
        origin: &str,
        options: &SessionOptions,
        external: External,
        load: impl FnOnce(&mut SessionBuilder) -> ort::Result<ort::session::Session>,
    ) -> Result<Session, RuntimeError> {
        let memory_files = external.files;
        let env = environment()?;
        let model_err = |message: String| RuntimeError::Model {
            model: origin.to_string(),
            message,
        };
        let mut builder =
            ort::session::Session::builder(env).map_err(|e| model_err(e.to_string()))?;
        if let Some(threads) = options.intra_threads {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| model_err(e.to_string()))?;
        }
        let level = match options.optimization {
            Optimization::Default => None,
            Optimization::DisableAll => Some(GraphOptimizationLevel::Disable),
            Optimization::Basic => Some(GraphOptimizationLevel::Level1),
            Optimization::Extended => Some(GraphOptimizationLevel::Level2),
            Optimization::All => Some(GraphOptimizationLevel::All),
        };
        if let Some(level) = level {
            builder = builder
                .with_optimization_level(level)
                .map_err(|e| model_err(e.to_string()))?;
        }
        if let Some(folder) = &external.folder {
            // The external references name files of this folder: ORT maps them itself.
            builder = builder
                .with_config_entry(large_model::FOLDER_KEY, folder.to_string_lossy())
                .map_err(|e| model_err(e.to_string()))?;
        }
        large_model::register(&mut builder, &memory_files).map_err(model_err)?;
        // `ort` describes inputs and outputs while committing and panics on type shapes it
        // does not expect (a sequence of optionals, say); a bad model must not take Kiln down.
        let inner = catch_unwind(AssertUnwindSafe(|| load(&mut builder)))
            .map_err(|_| model_err("ort could not describe the model's inputs or outputs".into()))?
            .map_err(|e| model_err(e.to_string()))?;
        let describe = |outlets: &[ort::value::Outlet]| -> Vec<IoInfo> {
            outlets
                .iter()
                .map(|o| IoInfo {
                    name: o.name().to_string(),
                    kind: IoKind::from_ort(o.dtype()),
                })
                .collect()
        };
        // ONNX Runtime copies the initializers it was given from memory while it creates the
        // session (TinyLlama: process RSS grows by their size), so mapped ones have been read
        // once and can go; should it read them again they fault back in from the file.
        for (_, bytes) in &memory_files {
            kiln_proto::release_pages(bytes);
        }
        let inputs = describe(inner.inputs());
        let outputs = describe(inner.outputs());
        let overridable = inner
            .overridable_initializers()
            .iter()
            .map(|o| IoInfo {
                name: o.name().to_string(),
                kind: IoKind::from_ort(o.dtype()),
            })
            .collect();
        Ok(Session {
            inner,
            _memory_files: memory_files,
            inputs,
            outputs,
            overridable,
        })
    }

    /// The weights handed to ONNX Runtime from memory (the memory route's files).
    #[cfg(test)]
    pub(crate) fn memory_files(&self) -> &[(String, bytes::Bytes)] {
        &self._memory_files
    }

    /// The model's inputs (initializers that are also inputs are not listed).
    pub fn inputs(&self) -> Vec<IoInfo> {
        self.inputs.clone()
    }

    /// The model's outputs, in model order.
    pub fn outputs(&self) -> Vec<IoInfo> {
        self.outputs.clone()
    }

    /// Runs the model and returns every output by name, in model order.
    ///
    /// Inputs are checked first (name, kind, element type, rank, fixed dims) so a mistake is
    /// reported by input name; an absent optional input may be left out or given as
    /// `Value::Optional(None)`. Initializers that are also graph inputs may be overridden.
    pub fn run(&mut self, inputs: &[(String, Value)]) -> Result<NamedValues, RuntimeError> {
        self.check_inputs(inputs)?;

        let mut names = Vec::with_capacity(inputs.len());
        let mut values: Vec<OwnedValue> = Vec::with_capacity(inputs.len());
        for (name, value) in inputs {
            if let Some(v) = to_ort(name, value)? {
                names.push(c_name(name)?);
                values.push(v);
            }
        }
        let output_names = self
            .outputs
            .iter()
            .map(|o| c_name(&o.name))
            .collect::<Result<Vec<_>, _>>()?;

        let in_name_ptrs: Vec<_> = names.iter().map(|n| n.as_ptr()).collect();
        let in_value_ptrs: Vec<_> = values.iter().map(|v| v.as_ptr().cast_const()).collect();
        let out_name_ptrs: Vec<_> = output_names.iter().map(|n| n.as_ptr()).collect();
        let mut out_ptrs = vec![std::ptr::null_mut(); output_names.len()];
        // SAFETY: the session pointer is valid while `self.inner` lives; every name and value
        // pointer is alive for the call; `out_ptrs` has one slot per requested output. `&mut
        // self` keeps runs of one session from overlapping (ORT's Run is not thread-safe).
        let status = unsafe {
            (ort::api().Run)(
                self.inner.ptr().cast_mut(),
                std::ptr::null(),
                in_name_ptrs.as_ptr(),
                in_value_ptrs.as_ptr(),
                in_value_ptrs.len(),
                out_name_ptrs.as_ptr(),
                out_name_ptrs.len(),
                out_ptrs.as_mut_ptr(),
            )
        };
        // Take ownership of whatever ORT handed out before anything can return early.
        let owned: Vec<Option<OwnedValue>> = out_ptrs
            .into_iter()
            // SAFETY: Run hands each non-null output to the caller to release.
            .map(|p| unsafe { OwnedValue::from_raw(p) })
            .collect();
        ffi::check(status).map_err(RuntimeError::Run)?;

        self.outputs
            .iter()
            .zip(owned)
            .map(|(info, value)| Ok((info.name.clone(), from_ort(&info.name, value, &info.kind)?)))
            .collect()
    }

    fn check_inputs(&self, inputs: &[(String, Value)]) -> Result<(), RuntimeError> {
        let mut seen = HashSet::new();
        for (name, value) in inputs {
            let info = self
                .inputs
                .iter()
                .chain(&self.overridable)
                .find(|i| &i.name == name)
                .ok_or_else(|| RuntimeError::UnknownInput {
                    name: name.clone(),
                    expected: self.inputs.iter().map(|i| i.name.clone()).collect(),
                })?;
            if !seen.insert(name.as_str()) {
                return Err(RuntimeError::DuplicateInput { name: name.clone() });
            }
            check_value(name, &info.kind, value)?;
        }
        for info in &self.inputs {
            if !seen.contains(info.name.as_str()) && !matches!(info.kind, IoKind::Optional(_)) {
                return Err(RuntimeError::MissingInput {
                    name: info.name.clone(),
                    expected: info.kind.to_string(),
                });
            }
        }
        Ok(())
    }
}

fn c_name(name: &str) -> Result<CString, RuntimeError> {
    CString::new(name).map_err(|_| RuntimeError::InputValue {
        name: name.to_string(),
        message: "a value name cannot contain a NUL byte".into(),
    })
}

/// Checks a value against the declared kind, cheaply (no data is read).
fn check_value(name: &str, kind: &IoKind, value: &Value) -> Result<(), RuntimeError> {
    let mismatch = || RuntimeError::InputType {
        name: name.to_string(),
        expected: kind.to_string(),
        got: value.describe(),
    };
    match (kind, value) {
        (IoKind::Unknown, _) => Ok(()),
        (IoKind::Tensor { dtype, dims }, Value::Tensor(t)) => {
            if dtype.is_some_and(|d| d != t.dtype()) {
                return Err(mismatch());
            }
            // ORT reports "no shape declared" as zero dims, like a scalar: no rank to check.
            let fits = dims.is_empty()
                || dims.len() == t.shape().len()
                    && dims
                        .iter()
                        .zip(t.shape())
                        .all(|(d, &n)| !matches!(d, Dim::Fixed(m) if *m != n));
            if !fits {
                return Err(RuntimeError::InputShape {
                    name: name.to_string(),
                    expected: join(dims),
                    got: join(t.shape()),
                });
            }
            Ok(())
        }
        (IoKind::Sequence(inner), Value::Sequence { items, .. }) => items
            .iter()
            .try_for_each(|item| check_value(name, inner, item)),
        (IoKind::Optional(_), Value::Optional(None)) => Ok(()),
        (IoKind::Optional(inner), Value::Optional(Some(v))) => check_value(name, inner, v),
        (IoKind::Map { .. }, _) => Err(RuntimeError::Unsupported(format!(
            "input {name:?} is a map ({kind}), which Kiln values cannot hold"
        ))),
        _ => Err(mismatch()),
    }
}

/// The location of the first tensor whose data is external, if any.
fn first_external(model: &ModelProto) -> Option<String> {
    fn tensor(t: &TensorProto) -> Option<String> {
        // data_location 1 is EXTERNAL.
        (t.data_location == 1).then(|| {
            t.external_data
                .iter()
                .find(|e| e.key == "location")
                .map_or_else(|| t.name.clone(), |e| format!("{} in {}", t.name, e.value))
        })
    }
    fn graph(g: &GraphProto) -> Option<String> {
        g.initializer
            .iter()
            .find_map(tensor)
            .or_else(|| {
                g.sparse_initializer.iter().find_map(|s| {
                    s.values
                        .as_ref()
                        .and_then(tensor)
                        .or_else(|| s.indices.as_ref().and_then(tensor))
                })
            })
            .or_else(|| {
                g.node
                    .iter()
                    .find_map(|n| n.attribute.iter().find_map(attr))
            })
    }
    fn attr(a: &kiln_proto::onnx::AttributeProto) -> Option<String> {
        a.t.as_ref()
            .and_then(tensor)
            .or_else(|| a.tensors.iter().find_map(tensor))
            .or_else(|| a.g.as_ref().and_then(graph))
            .or_else(|| a.graphs.iter().find_map(graph))
    }
    model.graph.as_ref().and_then(graph).or_else(|| {
        model.functions.iter().find_map(|f| {
            f.node
                .iter()
                .find_map(|n| n.attribute.iter().find_map(attr))
        })
    })
}
