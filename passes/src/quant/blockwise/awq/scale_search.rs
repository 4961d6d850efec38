//! AWQ's scale search (Lin et al., 2023, "AWQ: Activation-aware Weight Quantization for LLM
//! Compression and Acceleration"): the weights that read one activation are multiplied, row
//! by row (one row per input channel), by `s_i = mean|x_i|^α`, so channels that carry large
//! activations get a finer effective step; the activation is divided by `s` where it is
//! produced (see `fold.rs`), so the float model is unchanged.
//!
//! As AWQ does, `s` is clamped below at 1e-4 and normalized by `√(max s · min s)`, and `α`
//! runs over an even grid on `[0, 1]`; the α kept is the one whose round-to-nearest result
//! has the least output error over the calibration inputs, summed over the group's weights:
//! `Σ_j Δw_jᵀ H Δw_j` with `ΔW = W − diag(1/s)·Q(diag(s)·W)` and `H = XᵀX` — what AWQ
//! measures by running the layer, read off the Hessian instead. `α = 0` gives `s = 1`, RTN
//! itself, so the scale kept is never worse than RTN on that error. The error is summed over
//! up to [`SEARCH_COLUMNS`] evenly spaced columns of each weight (all of them in small
//! models): each column's error is its own, and the full sum costs `K² N` per point.

use rayon::prelude::*;

use super::super::gptq::sample_columns;
use super::super::hessian::Hessian;
use super::super::linalg::column_forms;
use super::super::rtn::{quantize_rtn, BlockParams};

/// Columns of each weight the error is summed over, at most.
pub const SEARCH_COLUMNS: usize = 512;
/// AWQ's lower clamp of `mean|x|^α`.
const MIN_SCALE: f64 = 1e-4;

/// One weight of a group: its `[k, n]` values as the quantizer reads them.
#[derive(Debug, Clone, Copy)]
pub struct GroupWeight<'a> {
    /// Row-major `[k, n]` values.
    pub data: &'a [f32],
    /// Rows (input channels).
    pub k: usize,
    /// Columns.
    pub n: usize,
}

/// The scale chosen for a group.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleChoice {
    /// The exponent kept.
    pub alpha: f64,
    /// `s`, one per input channel (all 1 when `alpha` is 0).
    pub scales: Vec<f32>,
    /// The group's output error with `s` (on the columns searched).
    pub error: f64,
    /// The same with RTN (`α = 0`).
    pub rtn_error: f64,
}

/// The `points` values of α searched: `0, 1/(points−1), …, 1` (just 0 when `points` < 2).
pub fn alpha_grid(points: usize) -> Vec<f64> {
    if points < 2 {
        return vec![0.0];
    }
    (0..points)
        .map(|i| i as f64 / (points - 1) as f64)
        .collect()
}

/// AWQ's `s` for `mean_abs` at exponent `alpha` (see the module doc).
pub fn awq_scales(mean_abs: &[f64], alpha: f64) -> Vec<f32> {
    let s: Vec<f64> = mean_abs
        .iter()
        .map(|&m| {
            if alpha == 0.0 {
                1.0
            } else {
                m.max(0.0).powf(alpha).max(MIN_SCALE)
            }
        })
        .collect();
    let (lo, hi) = s
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let norm = (lo * hi).sqrt();
    s.iter()
        .map(|&v| if norm > 0.0 { (v / norm) as f32 } else { 1.0 })
        .collect()
}

/// Searches α for the group `weights` (all reading the activation with Hessian `h` and mean
/// magnitudes `mean_abs`), over `points` grid points (see the module doc).
pub fn search_scales(
    weights: &[GroupWeight],
    h: &Hessian,
    mean_abs: &[f64],
    params: BlockParams,
    points: usize,
) -> Result<ScaleChoice, String> {
    let k = h.k();
    if mean_abs.len() != k {
        return Err(format!(
            "{} channel magnitudes for a Hessian of K {k}",
            mean_abs.len()
        ));
    }
    if !mean_abs.iter().all(|m| m.is_finite()) {
        return Err("the channel magnitudes hold non-finite values".into());
    }
    for w in weights {
        if w.k != k || w.data.len() != w.k * w.n {
            return Err(format!(
                "a [{}, {}] weight of {} values in a group of K {k}",
                w.k,
                w.n,
                w.data.len()
            ));
        }
        if !w.data.iter().all(|v| v.is_finite()) {
            return Err("a weight holds non-finite values".into());
        }
    }
    let hd = h.dense();
    // The searched columns of each weight, copied once: [k, nc] row-major.
    let picked: Vec<(Vec<f32>, usize)> = weights
        .iter()
        .map(|w| {
            let cols = sample_columns(w.n, SEARCH_COLUMNS);
            let nc = cols.len();
            let mut m = vec![0f32; k * nc];
            for r in 0..k {
                for (j, &c) in cols.iter().enumerate() {
                    m[r * nc + j] = w.data[r * w.n + c];
                }
            }
            (m, nc)
        })
        .collect();
    let grid = alpha_grid(points);
    let errors: Vec<Result<f64, String>> = grid
        .par_iter()
        .map(|&alpha| {
            let s = awq_scales(mean_abs, alpha);
            let mut total = 0.0;
            for (m, nc) in &picked {
                total += scaled_error(m, k, *nc, &s, params, &hd)?;
            }
            Ok(total)
        })
        .collect();
    let mut best: Option<(usize, f64)> = None;
    for (i, e) in errors.iter().enumerate() {
        let e = e.clone()?;
        // Strictly lower: α = 0 (first) wins a tie.
        if best.is_none_or(|(_, b)| e < b) {
            best = Some((i, e));
        }
    }
    let rtn_error = errors[0].clone()?;
    let (i, error) = best.unwrap_or((0, rtn_error));
    Ok(ScaleChoice {
        alpha: grid[i],
        scales: awq_scales(mean_abs, grid[i]),
        error,
        rtn_error,
    })
}

/// `Σ_c Δw_cᵀ H Δw_c` of the row-major `[k, nc]` matrix `m` rounded to nearest after scaling
/// its rows by `s` (and back).
fn scaled_error(
    m: &[f32],
    k: usize,
    nc: usize,
    s: &[f32],
    params: BlockParams,
    hd: &[f64],
) -> Result<f64, String> {
    let scaled: Vec<f32> = m
        .chunks_exact(nc)
        .zip(s)
        .flat_map(|(row, &si)| row.iter().map(move |&v| v * si))
        .collect();
    let q = quantize_rtn(&scaled, k, nc, params)?;
    let deq = q.dequantized();
    let d: Vec<f64> = m
        .iter()
        .zip(&deq)
        .enumerate()
        .map(|(i, (&w, &v))| f64::from(w) - f64::from(v) / f64::from(s[i / nc]))
        .collect();
    Ok(column_forms(hd, &d, k, nc).iter().sum())
}

#[cfg(test)]
mod tests {
    use super::super::super::rtn::Bits;
    use super::*;
    use crate::quant::blockwise::test_support::values;

    fn params() -> BlockParams {
        BlockParams {
            bits: Bits::Four,
            block_size: 32,
            symmetric: true,
        }
    }

    /// Rows whose channel magnitudes span two decades: a few salient channels.
    fn salient_rows(rows: usize, k: usize) -> (Hessian, Vec<f64>) {
        let x = values(rows * k, 11);
        let gain = |i: usize| {
            if i % 16 == 3 {
                30.0
            } else {
                0.3 + (i % 5) as f32 * 0.1
            }
        };
        let x: Vec<f32> = x.iter().enumerate().map(|(j, v)| v * gain(j % k)).collect();
        let mut h = Hessian::new(k);
        h.add_rows(&x).unwrap();
        let mut mean = vec![0f64; k];
        for row in x.chunks_exact(k) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += f64::from(v.abs()) / rows as f64;
            }
        }
        (h, mean)
    }

    #[test]
    fn grid_and_normalization() {
        assert_eq!(alpha_grid(5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(alpha_grid(1), vec![0.0]);
        assert_eq!(awq_scales(&[4.0, 1.0, 0.0], 0.0), vec![1.0, 1.0, 1.0]);
        // √(max · min) = √(4 · 1) = 2.
        assert_eq!(awq_scales(&[4.0, 1.0], 1.0), vec![2.0, 0.5]);
        // A channel never seen is clamped, not zero.
        assert!(awq_scales(&[4.0, 0.0], 1.0).iter().all(|&s| s > 0.0));
    }

    #[test]
    fn salient_channels_pick_a_positive_alpha_that_beats_rtn() {
        let (k, n) = (64, 24);
        let (h, mean) = salient_rows(400, k);
        let w1 = values(k * n, 5);
        let w2 = values(k * 8, 6);
        let group = [
            GroupWeight { data: &w1, k, n },
            GroupWeight { data: &w2, k, n: 8 },
        ];
        let c = search_scales(&group, &h, &mean, params(), 21).unwrap();
        // Measured: α 0.45, error 0.35 of RTN's.
        assert!(c.alpha > 0.0, "{c:?}");
        assert!(
            c.error < 0.6 * c.rtn_error,
            "{} vs {}",
            c.error,
            c.rtn_error
        );
        assert_eq!(c.scales, awq_scales(&mean, c.alpha));
    }

    #[test]
    fn alpha_zero_is_rtn_and_flat_magnitudes_keep_it() {
        // Identical channels: scaling cannot help, α = 0 (s = 1) wins on a tie or outright.
        let (k, n) = (32, 8);
        let x: Vec<f32> = (0..k * k)
            .map(|i| if i % (k + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let mut h = Hessian::new(k);
        h.add_rows(&x).unwrap();
        let w = values(k * n, 9);
        let c = search_scales(
            &[GroupWeight { data: &w, k, n }],
            &h,
            &vec![0.5; k],
            params(),
            11,
        )
        .unwrap();
        assert_eq!(c.alpha, 0.0);
        assert!(c.scales.iter().all(|&s| s == 1.0));
        assert_eq!(c.error, c.rtn_error);
    }

    #[test]
    fn refusals() {
        let h = Hessian::new(4);
        let w = [0.0f32; 8];
        let g = [GroupWeight {
            data: &w,
            k: 4,
            n: 2,
        }];
        assert!(search_scales(&g, &h, &[1.0; 3], params(), 3).is_err());
        assert!(search_scales(&g, &h, &[1.0, 1.0, f64::NAN, 1.0], params(), 3).is_err());
        let bad = [GroupWeight {
            data: &w,
            k: 2,
            n: 4,
        }];
        assert!(search_scales(&bad, &h, &[1.0; 4], params(), 3).is_err());
    }
}
