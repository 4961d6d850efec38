//! Running the float model in ONNX Runtime with the calibrated tensors exposed, one sample at
//! a time, and handing each tensor's values to a fold.

use std::collections::HashSet;
use std::time::Instant;

use kiln_passes::tensor::DataType;
use kiln_proto::onnx::ModelProto;

use super::data::{Sample, Samples};
use super::{CalibrationError, CalibrationOptions, Progress, Statistics};
use crate::runtime::{capturable_names, expose_outputs, Optimization, Session, SessionOptions};
use crate::value::Value;

/// Runs `model` in ONNX Runtime once per sample with `tensors` exposed as outputs and folds
/// each run into streaming statistics (then drops it: memory does not grow with the samples).
/// `progress` is called after every sample.
pub fn collect(
    model: &ModelProto,
    tensors: &[String],
    mut samples: Samples,
    options: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Statistics, CalibrationError> {
    let mut stats = Statistics::new(tensors, options.histogram_bins, options.moving_average)?;
    let mut runner = Runner::new(model, tensors, options)?;
    let total = samples.len();
    let start = Instant::now();
    let mut done = 0;
    while let Some(sample) = samples.next_sample() {
        runner.run(&sample?, &mut |name, values| stats.add(name, values))?;
        stats.end_sample();
        done += 1;
        progress(Progress {
            done,
            total,
            elapsed: start.elapsed(),
        });
    }
    Ok(stats)
}

/// Called with each wanted tensor's name and values of one run.
pub(crate) type Fold<'a> = dyn FnMut(&str, &[f32]) -> Result<(), CalibrationError> + 'a;

/// A session of the model with the wanted tensors exposed.
pub(crate) struct Runner {
    session: Session,
    /// Tensors read from the session's outputs.
    exposed: HashSet<String>,
    /// Tensors that are graph inputs, read from the sample itself.
    fed: Vec<String>,
    /// Scratch buffer for converting values to float32.
    buf: Vec<f32>,
}

impl Runner {
    /// Loads `model` with `tensors` exposed; refuses names the main graph does not produce.
    pub fn new(
        model: &ModelProto,
        tensors: &[String],
        options: &CalibrationOptions,
    ) -> Result<Runner, CalibrationError> {
        let known: HashSet<String> = capturable_names(model).into_iter().collect();
        let missing: Vec<String> = tensors
            .iter()
            .filter(|t| !known.contains(*t))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(CalibrationError::NotCapturable { names: missing });
        }
        let graph = model.graph.as_ref();
        let initializers: HashSet<&str> = graph
            .map(|g| g.initializer.iter().map(|t| t.name.as_str()).collect())
            .unwrap_or_default();
        let graph_inputs: HashSet<&str> = graph
            .map(|g| {
                g.input
                    .iter()
                    .map(|i| i.name.as_str())
                    .filter(|n| !initializers.contains(n))
                    .collect()
            })
            .unwrap_or_default();
        let (fed, exposed): (Vec<String>, Vec<String>) = tensors
            .iter()
            .cloned()
            .partition(|t| graph_inputs.contains(t.as_str()));
        // No ONNX Runtime rewrites: a fused-away value would read differently from the
        // graph as written, which is what gets quantized.
        let session_options = SessionOptions {
            intra_threads: options.intra_threads,
            optimization: Optimization::DisableAll,
        };
        let session = Session::from_model_with(&expose_outputs(model, &exposed), &session_options)
            .map_err(CalibrationError::Session)?;
        Ok(Runner {
            session,
            exposed: exposed.into_iter().collect(),
            fed,
            buf: Vec::new(),
        })
    }

    /// Runs one sample and calls `fold` with each wanted tensor's values as float32.
    pub fn run(&mut self, sample: &Sample, fold: &mut Fold<'_>) -> Result<(), CalibrationError> {
        let outputs = self
            .session
            .run(&sample.values)
            .map_err(|source| CalibrationError::Run {
                sample: sample.label.clone(),
                source,
            })?;
        for (name, value) in &outputs {
            if self.exposed.contains(name) {
                to_f32(name, value, &mut self.buf)?;
                fold(name, &self.buf)?;
            }
        }
        for name in &self.fed {
            if let Some((_, value)) = sample.values.iter().find(|(n, _)| n == name) {
                to_f32(name, value, &mut self.buf)?;
                fold(name, &self.buf)?;
            }
        }
        Ok(())
    }
}

/// A float tensor's values as float32 in `buf` (doubles narrowed, halves widened).
fn to_f32(name: &str, value: &Value, buf: &mut Vec<f32>) -> Result<(), CalibrationError> {
    let not_float = || CalibrationError::NotFloat {
        name: name.to_string(),
        got: value.describe(),
    };
    let Value::Tensor(t) = value else {
        return Err(not_float());
    };
    buf.clear();
    match t.dtype() {
        DataType::Float => {
            let raw = t.raw().ok_or_else(not_float)?;
            buf.extend(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        d if d.is_float() => {
            let values = t.to_f64_vec().ok_or(CalibrationError::UnsupportedType {
                name: name.to_string(),
                dtype: d,
            })?;
            buf.extend(values.into_iter().map(|v| v as f32));
        }
        _ => return Err(not_float()),
    }
    Ok(())
}
