//! Known distributions for the methods' unit tests.

use super::histogram::DEFAULT_BINS;
use super::stats::TensorStats;
use super::Statistics;
use crate::validate::Rng;
use kiln_passes::quant::{QuantScheme, QuantType};

/// The two schemes the searching methods are tested with: asymmetric uint8, symmetric int8.
pub fn schemes() -> [QuantScheme; 2] {
    [
        QuantScheme::new(QuantType::Uint8, false),
        QuantScheme::new(QuantType::Int8, true),
    ]
}

/// Statistics of one tensor over `runs` (one slice per run), on `bins` bins.
pub fn stats_with(bins: usize, runs: &[&[f32]], moving: Option<f32>) -> TensorStats {
    let mut s = Statistics::new(&["t".to_string()], bins, moving).unwrap();
    for run in runs {
        s.add("t", run).unwrap();
        s.end_sample();
    }
    s.tensor("t").unwrap().clone()
}

/// Statistics of one tensor over `runs`, on the default number of bins.
pub fn stats_of(runs: &[&[f32]], moving: Option<f32>) -> TensorStats {
    stats_with(DEFAULT_BINS, runs, moving)
}

/// `n` values uniform in `[lo, hi)`.
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| lo + (hi - lo) * rng.next_unit()).collect()
}

/// `n` standard normal values (Box–Muller).
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let u = (1.0 - rng.next_unit() as f64).max(1e-12);
            let v = rng.next_unit() as f64;
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// `n` standard normal values, `2 · pairs` of them replaced by outliers at ±50, ±55, ….
pub fn gaussian_with_outliers(n: usize, pairs: usize, seed: u64) -> Vec<f32> {
    let mut v = gaussian(n, seed);
    for k in 0..pairs {
        let i = (k * 7919) % n;
        v[i] = 50.0 + 5.0 * k as f32;
        let j = (k * 104_729 + 1) % n;
        v[j] = -(50.0 + 5.0 * k as f32);
    }
    v
}

/// `n` values of ReLU(normal): half exact zeros.
pub fn relu_like(n: usize, seed: u64) -> Vec<f32> {
    gaussian(n, seed).into_iter().map(|x| x.max(0.0)).collect()
}
