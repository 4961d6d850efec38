//! Saturation: on held-out samples, how many of each tensor's values fall outside the real
//! interval its quantization can represent, so a user sees where calibration data was too
//! narrow.

use std::collections::BTreeMap;

use kiln_proto::onnx::ModelProto;
use serde::Serialize;

use super::data::Samples;
use super::run::{fold_runs, Accumulate};
use super::{CalibrationError, CalibrationOptions, Progress};

/// Values of one tensor seen, and how many fell below and above its representable interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Saturation {
    /// Finite values seen.
    pub values: u64,
    /// Values below the interval's lower end.
    pub below: u64,
    /// Values above its upper end.
    pub above: u64,
}

impl Saturation {
    /// The share of values that saturate, in [0, 1] (0 when none were seen).
    pub fn share(&self) -> f64 {
        if self.values == 0 {
            0.0
        } else {
            (self.below + self.above) as f64 / self.values as f64
        }
    }

    /// Counts `values` against `[lo, hi]`.
    pub fn add(&mut self, values: &[f32], (lo, hi): (f32, f32)) {
        for &x in values {
            if x.is_finite() {
                self.values += 1;
                self.below += u64::from(x < lo);
                self.above += u64::from(x > hi);
            }
        }
    }
}

/// Share of values outside each tensor's representable interval `[lo, hi]` (`limits`), on
/// held-out samples: runs `model` once per sample with those tensors exposed.
pub fn saturation(
    model: &ModelProto,
    limits: &BTreeMap<String, (f32, f32)>,
    samples: Samples,
    options: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BTreeMap<String, Saturation>, CalibrationError> {
    let names: Vec<String> = limits.keys().cloned().collect();
    let new = || {
        Ok(Counts {
            limits,
            counts: BTreeMap::new(),
        })
    };
    let parts = fold_runs(model, &names, samples, options, progress, &new)?;
    let mut out: BTreeMap<String, Saturation> = names
        .iter()
        .map(|n| (n.clone(), Saturation::default()))
        .collect();
    for part in parts {
        for (name, s) in part.counts {
            let total = out.entry(name).or_default();
            total.values += s.values;
            total.below += s.below;
            total.above += s.above;
        }
    }
    Ok(out)
}

/// One worker's counts.
struct Counts<'a> {
    limits: &'a BTreeMap<String, (f32, f32)>,
    counts: BTreeMap<String, Saturation>,
}

impl Accumulate for Counts<'_> {
    fn fold(&mut self, name: &str, values: &[f32]) -> Result<(), CalibrationError> {
        if let Some(&limit) = self.limits.get(name) {
            self.counts
                .entry(name.to_string())
                .or_default()
                .add(values, limit);
        }
        Ok(())
    }

    fn end_sample(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_both_sides_and_skips_non_finite() {
        let mut s = Saturation::default();
        s.add(&[-2.0, -1.0, 0.0, 1.0, 1.5, f32::NAN], (-1.0, 1.0));
        assert_eq!(
            s,
            Saturation {
                values: 5,
                below: 1,
                above: 1
            }
        );
        assert!((s.share() - 0.4).abs() < 1e-12);
        assert_eq!(Saturation::default().share(), 0.0);
    }
}
