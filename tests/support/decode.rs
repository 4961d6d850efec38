//! A decode loop over a decoder in the Hugging Face Optimum export form (inputs `input_ids`,
//! `attention_mask`, `position_ids`, `past_key_values.{i}.key/value`; outputs `logits`,
//! `present.{i}.key/value`), run in ONNX Runtime with the KV cache fed back: a prefill of the
//! prompt, then one token per step. Greedy (each step feeds the arg-max of the last logits)
//! or teacher-forced (the tokens are given, e.g. the float model's), and the per-step
//! comparison of two runs: logits SQNR and whether the next-token choice agrees.

use std::path::Path;

use kiln_backends::compare::Tolerance;
use kiln_backends::runtime::{Dim, IoKind, Session, SessionOptions};
use kiln_backends::validate::{Accumulator, Metrics, TopkAxis};
use kiln_backends::value::{NamedValues, Value};
use kiln_passes::tensor::Tensor;

/// The prefix of the KV-cache inputs; outputs carry `present.` instead.
const PAST: &str = "past_key_values.";
/// The prefix of the KV-cache outputs.
const PRESENT: &str = "present.";

/// One KV-cache tensor: the input fed, the output read back, and its fixed dims.
#[derive(Debug, Clone)]
struct Cache {
    input: String,
    output: String,
    /// KV heads (axis 1).
    heads: usize,
    /// Head dim (axis 3).
    head_dim: usize,
}

/// A decoder loaded into ONNX Runtime.
pub struct Decoder {
    session: Session,
    caches: Vec<Cache>,
    has_mask: bool,
    has_positions: bool,
}

/// What one decode run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The `logits` output of each run: the prefill's `[1, prompt, vocab]`, then each step's
    /// `[1, 1, vocab]`.
    pub logits: Vec<Tensor>,
    /// The token fed at each step after the prefill.
    pub tokens: Vec<i64>,
}

/// One step of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMetrics {
    /// SQNR (dB) of the candidate's logits against the reference's, over the whole output.
    pub sqnr_db: f64,
    /// Whether both pick the same next token (arg-max of the last position).
    pub top1: bool,
}

impl Decoder {
    /// Loads `path` (external data next to it) with `options`; fails unless it has
    /// `input_ids`, `logits` and a `present.*` output for every `past_key_values.*` input with
    /// fixed heads and head dim.
    pub fn load(path: &Path, options: &SessionOptions) -> Result<Decoder, String> {
        let session = Session::from_path_with(path, options)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let inputs = session.inputs();
        let outputs = session.outputs();
        let has = |name: &str| inputs.iter().any(|i| i.name == name);
        if !has("input_ids") || !outputs.iter().any(|o| o.name == "logits") {
            return Err(format!(
                "{}: no input_ids input or logits output",
                path.display()
            ));
        }
        let mut caches = Vec::new();
        for i in inputs.iter().filter(|i| i.name.starts_with(PAST)) {
            let output = format!("{PRESENT}{}", &i.name[PAST.len()..]);
            if !outputs.iter().any(|o| o.name == output) {
                return Err(format!("{}: {} has no {output}", path.display(), i.name));
            }
            let dims = match &i.kind {
                IoKind::Tensor { dims, .. } if dims.len() == 4 => dims,
                k => {
                    return Err(format!(
                        "{}: {} is {k:?}, not rank 4",
                        path.display(),
                        i.name
                    ))
                }
            };
            let (Dim::Fixed(heads), Dim::Fixed(head_dim)) = (&dims[1], &dims[3]) else {
                return Err(format!(
                    "{}: {} has free heads or head dim: {dims:?}",
                    path.display(),
                    i.name
                ));
            };
            caches.push(Cache {
                input: i.name.clone(),
                output,
                heads: *heads,
                head_dim: *head_dim,
            });
        }
        if caches.is_empty() {
            return Err(format!("{}: no {PAST}* inputs", path.display()));
        }
        Ok(Decoder {
            has_mask: has("attention_mask"),
            has_positions: has("position_ids"),
            session,
            caches,
        })
    }

    /// Runs `prompt` (batch 1, empty cache), then `steps` single-token steps; the token of step
    /// `i` is `forced[i]` when given, else the arg-max of the previous logits' last position.
    pub fn decode(
        &mut self,
        prompt: &[i64],
        steps: usize,
        forced: Option<&[i64]>,
    ) -> Result<Trace, String> {
        if prompt.is_empty() {
            return Err("empty prompt".into());
        }
        if let Some(f) = forced.filter(|f| f.len() < steps) {
            return Err(format!("{} forced tokens for {steps} steps", f.len()));
        }
        let mut past: Vec<Tensor> = self
            .caches
            .iter()
            .map(|c| Tensor::from_vec(vec![1, c.heads, 0, c.head_dim], Vec::<f32>::new()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut trace = Trace {
            logits: Vec::new(),
            tokens: Vec::new(),
        };
        let mut ids = prompt.to_vec();
        let mut done = 0; // positions already in the cache
        for step in 0..=steps {
            if step > 0 {
                let next = match forced {
                    Some(f) => f[step - 1],
                    None => last_argmax(&trace.logits[step - 1])? as i64,
                };
                trace.tokens.push(next);
                ids = vec![next];
            }
            let out = self.run(&ids, done, &past)?;
            done += ids.len();
            trace.logits.push(take(&out, "logits")?);
            for (c, p) in self.caches.iter().zip(past.iter_mut()) {
                *p = take(&out, &c.output)?;
            }
        }
        Ok(trace)
    }

    /// One run: `ids` at positions `done..`, the cache holding `done` positions.
    fn run(&mut self, ids: &[i64], done: usize, past: &[Tensor]) -> Result<NamedValues, String> {
        let n = ids.len();
        let int = |v: Vec<i64>| -> Result<Value, String> {
            let len = v.len();
            Tensor::from_vec(vec![1, len], v)
                .map(Value::Tensor)
                .map_err(|e| e.to_string())
        };
        let mut feeds = vec![("input_ids".to_string(), int(ids.to_vec())?)];
        if self.has_mask {
            feeds.push(("attention_mask".into(), int(vec![1; done + n])?));
        }
        if self.has_positions {
            let positions = (done..done + n).map(|p| p as i64).collect();
            feeds.push(("position_ids".into(), int(positions)?));
        }
        for (c, p) in self.caches.iter().zip(past) {
            feeds.push((c.input.clone(), Value::Tensor(p.clone())));
        }
        self.session
            .run(&feeds)
            .map_err(|e| format!("run at position {done}: {e}"))
    }
}

/// Compares `candidate` with `reference` step by step (both decoded from the same tokens).
pub fn compare(reference: &Trace, candidate: &Trace) -> Result<Vec<StepMetrics>, String> {
    if reference.logits.len() != candidate.logits.len() {
        return Err(format!(
            "{} steps against {}",
            candidate.logits.len(),
            reference.logits.len()
        ));
    }
    // Only the SQNR is read; the tolerance judges nothing here.
    let tol = Tolerance::ONNX_BACKEND;
    reference
        .logits
        .iter()
        .zip(&candidate.logits)
        .map(|(r, c)| {
            let mut acc = Accumulator::new(tol, TopkAxis::Off);
            acc.add(r, c).map_err(|e| e.to_string())?;
            let Metrics::Float(m) = acc.finish() else {
                return Err("logits are not float".to_string());
            };
            Ok(StepMetrics {
                sqnr_db: m.sqnr_db,
                top1: last_argmax(r)? == last_argmax(c)?,
            })
        })
        .collect()
}

/// The arg-max over the last axis at the last position of `[1, seq, vocab]` logits (the
/// first on a tie).
pub fn last_argmax(logits: &Tensor) -> Result<usize, String> {
    let vocab = *logits.shape().last().ok_or("scalar logits")?;
    let v: Vec<f32> = logits.to_vec().map_err(|e| e.to_string())?;
    if vocab == 0 || v.len() < vocab {
        return Err(format!("logits of shape {:?}", logits.shape()));
    }
    let row = &v[v.len() - vocab..];
    let mut best = 0;
    for (i, x) in row.iter().enumerate() {
        if *x > row[best] {
            best = i;
        }
    }
    Ok(best)
}

/// The tensor output `name` of a run.
fn take(out: &NamedValues, name: &str) -> Result<Tensor, String> {
    match out.iter().find(|(n, _)| n == name) {
        Some((_, Value::Tensor(t))) => Ok(t.clone()),
        Some((_, v)) => Err(format!("{name} is {}", v.describe())),
        None => Err(format!("no output {name}")),
    }
}
