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

/// Runs both models on each sample and measures the candidate's output SQNR.
///
/// One session at a time (the reference's outputs are kept, then the candidate runs): for a
/// large model two live sessions would double the peak memory.
pub fn output_sqnr(
    reference: &ModelProto,
    candidate: &ModelProto,
    samples: &[NamedValues],
    options: &SessionOptions,
) -> Result<Sqnr, QuantizeError> {
    let expected = {
        let mut r = Session::from_model_with(reference, options)?;
        samples
            .iter()
            .map(|s| r.run(s))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut c = Session::from_model_with(candidate, options)?;
    let mut acc = Sqnr::default();
    for (s, want) in samples.iter().zip(&expected) {
        acc.add(want, &c.run(s)?);
    }
    Ok(acc)
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
