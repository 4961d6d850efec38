//! Output accuracy of a quantized model: SQNR of its float outputs against the float model's,
//! over the same samples.

use kiln_proto::onnx::ModelProto;

use crate::runtime::{Session, SessionOptions};
use crate::value::{NamedValues, Value};

use super::error::QuantizeError;

/// Squared signal and squared error, summed over every float output element of every sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sqnr {
    /// Σ reference².
    pub signal: f64,
    /// Σ (reference − candidate)².
    pub noise: f64,
}

impl Sqnr {
    /// Folds one sample's outputs in; outputs are matched by name, non-float ones ignored.
    pub fn add(&mut self, reference: &NamedValues, candidate: &NamedValues) {
        for (name, r) in reference {
            let Some((_, c)) = candidate.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let (Value::Tensor(r), Value::Tensor(c)) = (r, c) else {
                continue;
            };
            if !r.dtype().is_float() || r.shape() != c.shape() {
                continue;
            }
            let (Some(r), Some(c)) = (r.to_f64_vec(), c.to_f64_vec()) else {
                continue;
            };
            for (a, b) in r.iter().zip(&c) {
                if a.is_finite() && b.is_finite() {
                    self.signal += a * a;
                    self.noise += (a - b) * (a - b);
                }
            }
        }
    }

    /// 10·log10(signal / noise) in dB; infinite when the outputs are identical.
    pub fn db(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }
}

/// The float model's outputs on a fixed set of samples, kept to measure several candidates
/// against (per-layer sensitivity, the mixed-precision search) without running it again.
pub struct Reference<'a> {
    samples: &'a [NamedValues],
    outputs: Vec<NamedValues>,
    options: SessionOptions,
}

impl<'a> Reference<'a> {
    /// Runs `float` on every sample and keeps its outputs (the session is dropped before any
    /// candidate's is made: two live sessions of a large model would double the peak memory).
    pub fn new(
        float: &ModelProto,
        samples: &'a [NamedValues],
        options: &SessionOptions,
    ) -> Result<Reference<'a>, QuantizeError> {
        let mut r = Session::from_model_with(float, options)?;
        let outputs = samples
            .iter()
            .map(|s| r.run(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Reference {
            samples,
            outputs,
            options: options.clone(),
        })
    }

    /// Runs `candidate` on the samples and measures its output SQNR against the float outputs.
    pub fn measure(&self, candidate: &ModelProto) -> Result<Sqnr, QuantizeError> {
        let mut c = Session::from_model_with(candidate, &self.options)?;
        let mut acc = Sqnr::default();
        for (s, want) in self.samples.iter().zip(&self.outputs) {
            acc.add(want, &c.run(s)?);
        }
        Ok(acc)
    }

    /// How many samples the measurements use.
    pub fn samples(&self) -> usize {
        self.samples.len()
    }
}

/// Runs both models on each sample and measures the candidate's output SQNR.
pub fn output_sqnr(
    reference: &ModelProto,
    candidate: &ModelProto,
    samples: &[NamedValues],
    options: &SessionOptions,
) -> Result<Sqnr, QuantizeError> {
    Reference::new(reference, samples, options)?.measure(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_passes::tensor::Tensor;

    fn out(v: Vec<f32>) -> NamedValues {
        vec![(
            "y".to_string(),
            Value::Tensor(Tensor::from_vec(vec![v.len()], v).unwrap()),
        )]
    }

    #[test]
    fn sqnr_is_signal_over_noise_in_db() {
        let mut s = Sqnr::default();
        s.add(&out(vec![3.0, 4.0]), &out(vec![3.0, 4.0]));
        assert_eq!(s.db(), f64::INFINITY);
        s.add(&out(vec![0.0, 0.0]), &out(vec![0.5, 0.0]));
        // 25 / 0.25 = 100 -> 20 dB
        assert!((s.db() - 20.0).abs() < 1e-9);
    }
}
