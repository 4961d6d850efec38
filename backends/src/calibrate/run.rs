//! Running the float model in ONNX Runtime with the calibrated tensors exposed, one sample at
//! a time, and handing each tensor's values to a fold.
//!
//! Samples are spread over worker threads, each with its own session and its own
//! statistics, merged at the end: statistics merge exactly, so the result does not depend on
//! which worker ran which sample. The moving-average range depends on the order of the
//! samples, so with it there is one worker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
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
    samples: Samples,
    options: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Statistics, CalibrationError> {
    let new = || Statistics::new(tensors, options.histogram_bins, options.moving_average);
    let parts = fold_runs(model, tensors, samples, options, progress, &new)?;
    let mut parts = parts.into_iter();
    let mut stats = parts.next().map_or_else(new, Ok)?;
    for part in parts {
        stats.merge(&part)?;
    }
    Ok(stats)
}

/// Worker threads for `options`: as asked, else one per core; one with a moving average.
fn workers(options: &CalibrationOptions, samples: usize) -> usize {
    if options.moving_average.is_some() {
        return 1;
    }
    let auto = || std::thread::available_parallelism().map_or(1, |n| n.get());
    options
        .workers
        .unwrap_or_else(auto)
        .clamp(1, samples.max(1))
}

/// What a worker folds runs into.
pub(crate) trait Accumulate: Send {
    /// Takes one run's values of tensor `name`.
    fn fold(&mut self, name: &str, values: &[f32]) -> Result<(), CalibrationError>;
    /// Closes one sample.
    fn end_sample(&mut self);
}

impl Accumulate for Statistics {
    fn fold(&mut self, name: &str, values: &[f32]) -> Result<(), CalibrationError> {
        self.add(name, values)
    }

    fn end_sample(&mut self) {
        Statistics::end_sample(self);
    }
}

/// Runs every sample through `model` on worker threads and folds the wanted tensors' values
/// into one state per worker (made by `new`, returned in worker order). The first failing
/// sample's error (in sample order) is returned.
pub(crate) fn fold_runs<S: Accumulate>(
    model: &ModelProto,
    tensors: &[String],
    mut samples: Samples,
    options: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress),
    new: &(dyn Fn() -> Result<S, CalibrationError> + Sync),
) -> Result<Vec<S>, CalibrationError> {
    let total = samples.len();
    let workers = workers(options, total);
    let mut session_options = options.clone();
    if workers > 1 && session_options.intra_threads.is_none() {
        // The workers already keep the cores busy.
        session_options.intra_threads = Some(1);
    }
    let start = Instant::now();
    if workers == 1 {
        let mut state = new()?;
        let mut runner = Runner::new(model, tensors, &session_options)?;
        let mut done = 0;
        while let Some(sample) = samples.next_sample() {
            runner.run(&sample?, &mut |name, values| state.fold(name, values))?;
            state.end_sample();
            done += 1;
            progress(Progress {
                done,
                total,
                elapsed: start.elapsed(),
            });
        }
        return Ok(vec![state]);
    }
    // Refuse bad tensor names once, before any thread starts.
    let first = Runner::new(model, tensors, &session_options)?;
    let queue = Mutex::new((samples, 0usize));
    let stop = AtomicBool::new(false);
    let (tick, ticks) = mpsc::channel::<()>();
    let results: Vec<Result<S, (usize, CalibrationError)>> = std::thread::scope(|scope| {
        let mut first = Some(first);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let tick = tick.clone();
                let runner = first.take();
                let (queue, stop, session_options) = (&queue, &stop, &session_options);
                scope.spawn(move || -> Result<S, (usize, CalibrationError)> {
                    let fail = |e| (usize::MAX, e);
                    let mut runner = match runner {
                        Some(r) => r,
                        None => Runner::new(model, tensors, session_options).map_err(fail)?,
                    };
                    let mut state = new().map_err(fail)?;
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(state);
                        }
                        // Samples are read under the lock, in order; runs happen outside it.
                        let (index, sample) = {
                            let Ok(mut q) = queue.lock() else {
                                return Ok(state);
                            };
                            let index = q.1;
                            q.1 += 1;
                            match q.0.next_sample() {
                                None => return Ok(state),
                                Some(s) => (index, s),
                            }
                        };
                        let ran = sample.and_then(|sample| {
                            runner.run(&sample, &mut |name, values| state.fold(name, values))
                        });
                        if let Err(e) = ran {
                            stop.store(true, Ordering::Relaxed);
                            return Err((index, e));
                        }
                        state.end_sample();
                        // The receiver outlives the workers; a send cannot fail.
                        let _ = tick.send(());
                    }
                })
            })
            .collect();
        drop(tick);
        for (k, ()) in ticks.into_iter().enumerate() {
            progress(Progress {
                done: k + 1,
                total,
                elapsed: start.elapsed(),
            });
        }
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let mut states = Vec::with_capacity(results.len());
    let mut error: Option<(usize, CalibrationError)> = None;
    for r in results {
        match r {
            Ok(s) => states.push(s),
            Err((i, e)) => {
                if error.as_ref().is_none_or(|(j, _)| i < *j) {
                    error = Some((i, e));
                }
            }
        }
    }
    match error {
        Some((_, e)) => Err(e),
        None => Ok(states),
    }
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
