//! GPTQ's and AWQ's statistics: the float model runs over the calibration samples in ONNX
//! Runtime with the input of every selected MatMul/Gemm exposed, and each run's values are
//! folded into the `XᵀX` of that activation (f64, `K × K`) and, for AWQ, its per-channel
//! `Σ|x|`, and dropped, so memory is one matrix per distinct activation (q/k/v projections
//! share one) per worker, whatever the number of samples. Workers' sums add up exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_passes::quant::blockwise::awq::{ActivationStats, MeanAbs};
use kiln_passes::quant::blockwise::sequential::CrossMoment;
use kiln_passes::quant::blockwise::{Gptq, GptqOptions, Hessian, LinearInput};
use kiln_proto::onnx::ModelProto;

use super::error::QuantizeError;
use crate::calibrate::run::{fold_runs, Accumulate};
use crate::calibrate::{CalibrationError, CalibrationOptions, Progress, Samples};

/// The Hessians (and, when asked, mean magnitudes) of a set of activations, by name.
struct Hessians {
    by_activation: BTreeMap<String, Hessian>,
    magnitudes: BTreeMap<String, MeanAbs>,
    samples: u64,
}

impl Accumulate for Hessians {
    fn fold(&mut self, name: &str, values: &[f32]) -> Result<(), CalibrationError> {
        if let Some(m) = self.magnitudes.get_mut(name) {
            m.add_rows(values)
                .map_err(|e| CalibrationError::layout(name, e))?;
        }
        match self.by_activation.get_mut(name) {
            Some(h) => h
                .add_rows(values)
                .map_err(|e| CalibrationError::layout(name, e)),
            None => Ok(()),
        }
    }

    fn end_sample(&mut self) {
        self.samples += 1;
    }
}

/// What [`collect`] gathered.
pub(super) struct Collected {
    /// `XᵀX` of each activation.
    pub hessians: BTreeMap<String, Hessian>,
    /// `Σ|x_i|` of each activation (when asked).
    pub magnitudes: BTreeMap<String, MeanAbs>,
    /// Samples run.
    pub samples: u64,
}

impl Collected {
    /// AWQ's statistics: each activation's Hessian with its mean magnitudes.
    pub fn activation_stats(self) -> BTreeMap<String, ActivationStats> {
        let mut magnitudes = self.magnitudes;
        self.hessians
            .into_iter()
            .filter_map(|(name, hessian)| {
                let mean_abs = magnitudes.remove(&name)?.mean();
                Some((name, ActivationStats { hessian, mean_abs }))
            })
            .collect()
    }
}

/// Runs `model` (the float model) over `samples` and accumulates the Hessian of every
/// activation `inputs` name, and its mean magnitudes when `magnitudes` is set.
pub(super) fn collect(
    model: &ModelProto,
    inputs: &[LinearInput],
    magnitudes: bool,
    samples: Samples,
    options: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Collected, QuantizeError> {
    let ks = activation_ks(inputs)?;
    let names: Vec<String> = ks.keys().cloned().collect();
    let new = || {
        Ok(Hessians {
            by_activation: ks
                .iter()
                .map(|(name, &k)| (name.to_string(), Hessian::new(k)))
                .collect(),
            magnitudes: ks
                .iter()
                .filter(|_| magnitudes)
                .map(|(name, &k)| (name.to_string(), MeanAbs::new(k)))
                .collect(),
            samples: 0,
        })
    };
    let parts = fold_runs(model, &names, samples, options, progress, &new)?;
    let mut parts = parts.into_iter();
    let mut all = match parts.next() {
        Some(p) => p,
        None => new()?,
    };
    for part in parts {
        for (name, h) in part.by_activation {
            if let Some(mine) = all.by_activation.get_mut(&name) {
                mine.merge(&h).map_err(CalibrationError::Merge)?;
            }
        }
        for (name, m) in part.magnitudes {
            if let Some(mine) = all.magnitudes.get_mut(&name) {
                mine.merge(&m).map_err(CalibrationError::Merge)?;
            }
        }
        all.samples += part.samples;
    }
    Ok(Collected {
        hessians: all.by_activation,
        magnitudes: all.magnitudes,
        samples: all.samples,
    })
}

/// The float model's values of some activations, sample by sample (what [`collect_paired`]
/// pairs the other model's rows with).
struct Stash {
    values: BTreeMap<String, Vec<Vec<f32>>>,
}

impl Accumulate for Stash {
    fn fold(&mut self, name: &str, values: &[f32]) -> Result<(), CalibrationError> {
        self.values
            .entry(name.to_string())
            .or_default()
            .push(values.to_vec());
        Ok(())
    }

    fn end_sample(&mut self) {}
}

/// Hessians of one model's activations with their cross moments against the float model's.
struct Paired {
    hessians: Hessians,
    float: Stash,
    cross: BTreeMap<String, CrossMoment>,
    /// Values of each activation folded so far (the index into the stash).
    seen: BTreeMap<String, usize>,
}

impl Accumulate for Paired {
    fn fold(&mut self, name: &str, values: &[f32]) -> Result<(), CalibrationError> {
        self.hessians.fold(name, values)?;
        let Some(cross) = self.cross.get_mut(name) else {
            return Ok(());
        };
        let i = self.seen.entry(name.to_string()).or_default();
        let float = self
            .float
            .values
            .get(name)
            .and_then(|v| v.get(*i))
            .ok_or_else(|| {
                CalibrationError::layout(name, "the float model gave fewer values".to_string())
            })?;
        *i += 1;
        cross
            .add_pairs(values, float)
            .map_err(|e| CalibrationError::layout(name, e))
    }

    fn end_sample(&mut self) {
        self.hessians.end_sample();
    }
}

/// [`collect`] on `model` (the partially quantized model) with, for each activation, the
/// cross moment `X_qᵀX_f` against the same rows of `float` (the float model) on the same
/// samples. The float model's values are held for all samples in between: run with one
/// worker, so both runs see the samples in the same order.
pub(super) fn collect_paired(
    float: &ModelProto,
    model: &ModelProto,
    inputs: &[LinearInput],
    samples: &dyn Fn() -> Result<Samples, QuantizeError>,
    options: &CalibrationOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Collected, BTreeMap<String, CrossMoment>), QuantizeError> {
    let ks = activation_ks(inputs)?;
    let names: Vec<String> = ks.keys().cloned().collect();
    let one = CalibrationOptions {
        workers: Some(1),
        ..options.clone()
    };
    let stash = fold_runs(float, &names, samples()?, &one, progress, &|| {
        Ok(Stash {
            values: BTreeMap::new(),
        })
    })?;
    let stash = std::sync::Mutex::new(stash.into_iter().next());
    let new = || {
        let float = stash
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .ok_or_else(|| {
                CalibrationError::Merge("the float model's values were used twice".into())
            })?;
        Ok(Paired {
            hessians: Hessians {
                by_activation: ks
                    .iter()
                    .map(|(n, &k)| (n.clone(), Hessian::new(k)))
                    .collect(),
                magnitudes: BTreeMap::new(),
                samples: 0,
            },
            float,
            cross: ks
                .iter()
                .map(|(n, &k)| (n.clone(), CrossMoment::new(k)))
                .collect(),
            seen: BTreeMap::new(),
        })
    };
    let parts = fold_runs(model, &names, samples()?, &one, progress, &new)?;
    let mut parts = parts.into_iter();
    let (Some(p), None) = (parts.next(), parts.next()) else {
        return Err(QuantizeError::Options(
            "the paired statistics run needs exactly one worker".into(),
        ));
    };
    Ok((
        Collected {
            hessians: p.hessians.by_activation,
            magnitudes: BTreeMap::new(),
            samples: p.hessians.samples,
        },
        p.cross,
    ))
}

/// The K of each activation `inputs` names; an error when two weights disagree.
fn activation_ks(inputs: &[LinearInput]) -> Result<BTreeMap<String, usize>, QuantizeError> {
    let mut ks: BTreeMap<String, usize> = BTreeMap::new();
    for li in inputs {
        let k = *ks.entry(li.activation.clone()).or_insert(li.k);
        if k != li.k {
            return Err(QuantizeError::Options(format!(
                "'{}' is multiplied by weights of K {k} and {} (node '{}')",
                li.activation, li.k, li.node
            )));
        }
    }
    Ok(ks)
}

/// A [`Gptq`] quantizer with each weight's Hessian (see [`by_weight`]). A weight left
/// without one is rounded to nearest.
pub(super) fn quantizer(
    inputs: &[LinearInput],
    hessians: BTreeMap<String, Hessian>,
    options: GptqOptions,
) -> Gptq {
    let mut gptq = Gptq::new(options);
    for (weight, h) in by_weight(inputs, hessians) {
        gptq.insert(weight, h);
    }
    gptq
}

/// Each weight's Hessian: its activation's (shared, not copied, between weights reading the
/// same input), or the sum over the activations it multiplies when several nodes read it.
/// A weight whose activations' K differ gets none.
pub(super) fn by_weight(
    inputs: &[LinearInput],
    hessians: BTreeMap<String, Hessian>,
) -> BTreeMap<String, Arc<Hessian>> {
    let shared: BTreeMap<String, Arc<Hessian>> = hessians
        .into_iter()
        .map(|(name, h)| (name, Arc::new(h)))
        .collect();
    kiln_passes::quant::blockwise::hessian::per_weight(
        inputs
            .iter()
            .map(|li| (li.weight.as_str(), li.activation.as_str())),
        &shared,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn li(node: &str, weight: &str, activation: &str, k: usize) -> LinearInput {
        LinearInput {
            node: node.into(),
            weight: weight.into(),
            activation: activation.into(),
            k,
            k_axis: 0,
        }
    }

    fn hessian(k: usize, x: &[f32]) -> Hessian {
        let mut h = Hessian::new(k);
        h.add_rows(x).unwrap();
        h
    }

    #[test]
    fn awq_statistics_pair_each_hessian_with_its_magnitudes() {
        let mut m = MeanAbs::new(2);
        m.add_rows(&[1.0, -4.0, 3.0, 0.0]).unwrap();
        let c = Collected {
            hessians: BTreeMap::from([
                ("x".to_string(), hessian(2, &[1.0, -4.0, 3.0, 0.0])),
                ("y".to_string(), hessian(2, &[1.0, 1.0])),
            ]),
            magnitudes: BTreeMap::from([("x".to_string(), m)]),
            samples: 1,
        };
        let s = c.activation_stats();
        // Without magnitudes (not asked for) an activation has no AWQ statistics.
        assert_eq!(s.keys().collect::<Vec<_>>(), ["x"]);
        assert_eq!(s["x"].mean_abs, vec![2.0, 2.0]);
        assert_eq!(s["x"].hessian.dense(), [10.0, -4.0, -4.0, 16.0]);
    }

    #[test]
    fn weights_share_or_sum_their_activations_hessians() {
        let inputs = [
            li("q", "wq", "x", 2),
            li("k", "wk", "x", 2),
            li("a", "shared", "x", 2),
            li("b", "shared", "y", 2),
        ];
        let hs = BTreeMap::from([
            ("x".to_string(), hessian(2, &[1.0, 2.0])),
            ("y".to_string(), hessian(2, &[3.0, 0.0])),
        ]);
        let g = quantizer(&inputs, hs, GptqOptions::default());
        let x = [1.0, 2.0, 2.0, 4.0];
        assert_eq!(g.hessian("wq").unwrap().dense(), x);
        assert!(std::ptr::eq(
            g.hessian("wq").unwrap(),
            g.hessian("wk").unwrap()
        ));
        assert_eq!(g.hessian("shared").unwrap().dense(), [10.0, 2.0, 2.0, 4.0]);
        assert_eq!(g.hessian("shared").unwrap().rows(), 2);
        assert!(g.hessian("other").is_none());
    }
}
