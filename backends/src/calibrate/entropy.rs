//! Entropy: the clipping window whose quantized distribution loses the least information
//! (KL divergence), TensorRT's calibration generalised to any scheme.
//!
//! For each candidate window (see [`search`](super::search)) the reference distribution P is
//! the histogram inside the window with the clipped values added to its edge bins; Q is the
//! window's histogram (without the clipped values) quantized to the scheme's levels (bins
//! round to the nearest of `qmax − qmin + 1` levels) and spread back evenly over the bins of
//! each level that P uses. The window of least KL(P‖Q) wins.
//!
//! Differences from ONNX Runtime's `EntropyCalibrater`, on purpose:
//! - Windows follow the scheme: symmetric windows for symmetric schemes, windows that keep
//!   the observed sides' ratio (a ReLU output keeps 0 as its lower end) for asymmetric ones,
//!   with as many levels as the scheme has (ORT's defaults, 128 bins and 128 quantized bins,
//!   leave one candidate, the full range, so its "entropy" is MinMax).
//! - Only windows at least as many bins wide as the scheme has steps are candidates (narrower
//!   ones quantize losslessly on the histogram's grid and would look free), and ties go to
//!   the wider window.
//! - It does not over-clip. KL divergence weighs how much mass moves, not how far, and a
//!   calibration set's extremes already fall short of what unseen data holds, so every clip
//!   saturates more of it. A narrower window is taken only when it lowers the divergence by
//!   at least [`MIN_GAIN`] of the full range's (a real tail of outliers, not the noise of a
//!   smooth one), and never narrower than the one keeping [`KEEP_PERCENTILE`] of the values.
//!   On `models/` (`bench/calibrate_accuracy.py`, four calibration sets each), KL alone lost
//!   up to 1.6 dB of output SQNR to MinMax (which ORT's entropy amounts to) on one set and
//!   0.1 dB on the mean; with both guards the mean is above MinMax and the worst set 0.4 dB
//!   below it, within the spread of MinMax itself across sets.
//!
//! Each candidate costs O(levels) with prefix sums over the histogram, not O(bins), and at
//! most [`MAX_CANDIDATES`] evenly spaced windows are tried.

use kiln_passes::quant::{QuantScheme, Range};

use super::search::{steps, window_range, windows, xlogx, Prefix, Window};
use super::stats::TensorStats;
use super::{minmax, percentile};

/// Most windows tried per tensor.
pub const MAX_CANDIDATES: usize = 512;

/// How much less divergence (a share of the full range's) a narrower window must have to be
/// chosen over the full range.
pub const MIN_GAIN: f64 = 0.2;

/// The smallest share of values (in percent) the chosen window keeps: all but one in a
/// million. At 99.999 % the 256-sample bench lost 0.68 dB to MinMax on resnet_tiny (residual
/// adds carry rare large values that matter); at 99.9999 % no bench model is below MinMax by
/// more than 0.03 dB.
pub const KEEP_PERCENTILE: f64 = 99.9999;

/// The count given to a level that P uses but the window's own values leave empty (ONNX
/// Runtime's smoothing ε), so that clipping into an empty edge costs a lot but not ∞.
const EMPTY_LEVEL: f64 = 1e-4;

/// The range of least KL divergence for `scheme`, never narrower than the
/// [`KEEP_PERCENTILE`] range, clipped to the observed `[min, max]`.
pub fn range(stats: &TensorStats, scheme: &QuantScheme) -> Range {
    let chosen = least_divergence(stats, scheme);
    let floor = percentile::range(stats, KEEP_PERCENTILE, scheme);
    Range::new(chosen.min.min(floor.min), chosen.max.max(floor.max))
}

/// The window of least KL divergence (the full range unless it gains [`MIN_GAIN`]), clipped
/// to the observed `[min, max]`.
pub fn least_divergence(stats: &TensorStats, scheme: &QuantScheme) -> Range {
    let Some(h) = stats.histogram() else {
        return minmax::range(stats);
    };
    let all = windows(stats, h, scheme.symmetric);
    let levels = steps(scheme);
    let Some(&full) = all.first() else {
        return Range::new(0.0, 0.0);
    };
    if (full.len() as u64) < levels {
        // The grid is coarser than the levels: quantization loses nothing it can see.
        return minmax::range(stats);
    }
    let prefix = Prefix::of(h);
    let candidates: Vec<Window> = all
        .iter()
        .copied()
        .take_while(|w| w.len() as u64 >= levels)
        .collect();
    // Every k-th candidate, widest first (so the full window is always one): the divergence
    // changes slowly from one bin to the next, and each costs `levels` logarithms.
    let stride = candidates.len().div_ceil(MAX_CANDIDATES).max(1);
    let full_kl = divergence(&prefix, h.counts(), full, levels);
    let mut best = (full_kl, full);
    for &w in candidates.iter().step_by(stride).skip(1) {
        let kl = divergence(&prefix, h.counts(), w, levels);
        if kl < best.0 {
            best = (kl, w);
        }
    }
    if best.0 > (1.0 - MIN_GAIN) * full_kl {
        // Not worth clipping: values beyond what calibration saw would saturate too.
        best.1 = full;
    }
    window_range(stats, h, best.1)
}

/// KL(P‖Q) of window `w` quantized to `levels` steps.
fn divergence(prefix: &Prefix, counts: &[u64], w: Window, levels: u64) -> f64 {
    let total = prefix.count[counts.len()] as f64;
    let (a, b) = (w.lo, w.hi);
    let inside = (prefix.count[b] - prefix.count[a]) as f64;
    if inside == 0.0 {
        return f64::INFINITY;
    }
    let below = prefix.count[a] as f64;
    let above = total - prefix.count[b] as f64;
    let n = w.len() as u64;
    let l = levels;
    // Level m holds bins r (relative to a) with round((r + ½)·l/n) = m (halves up):
    // r ≥ (2nm − n − l) / 2l.
    let start = |m: u64| -> usize {
        let num = (2 * n * m) as i128 - n as i128 - l as i128;
        let r = if num <= 0 {
            0
        } else {
            (num as u128).div_ceil(2 * l as u128) as u64
        };
        r.min(n) as usize
    };
    let mut kl = 0.0;
    for m in 0..=l {
        let (s, e) = (a + start(m), a + start(m + 1));
        if s >= e {
            continue;
        }
        let mass = (prefix.count[e] - prefix.count[s]) as f64;
        let mut p_sum = mass;
        let mut nonzero = (prefix.nonzero[e] - prefix.nonzero[s]) as f64;
        let mut p_log_p = prefix.xlogx[e] - prefix.xlogx[s];
        // The clipped values join the window's edge bins in P.
        let mut fold = |bin: usize, extra: f64| {
            if extra > 0.0 {
                let c = counts[bin] as f64;
                p_sum += extra;
                p_log_p += xlogx(c + extra) - xlogx(c);
                if c == 0.0 {
                    nonzero += 1.0;
                }
            }
        };
        let (first, last) = (s == a, e == b);
        if first && last && a + 1 == b {
            fold(a, below + above);
        } else {
            if first {
                fold(a, below);
            }
            if last {
                fold(b - 1, above);
            }
        }
        if nonzero == 0.0 {
            continue;
        }
        // Q per used bin, normalised by the window's mass; P normalised by the total.
        let q = (if mass > 0.0 { mass } else { EMPTY_LEVEL }) / nonzero / inside;
        // Σ p̂ ln(p̂ / q̂) over the level's bins, p̂ = P / total.
        kl += (p_log_p - p_sum * total.ln()) / total - p_sum / total * q.ln();
    }
    kl
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::testing::{
        gaussian_with_outliers, relu_like, schemes, stats_of, uniform,
    };
    use kiln_passes::quant::QuantType;

    #[test]
    fn uniform_keeps_about_the_full_range() {
        let s = stats_of(&[&uniform(200_000, -1.0, 3.0, 4)], None);
        for scheme in schemes() {
            let r = range(&s, &scheme);
            assert!(r.min <= -0.97 && r.max >= 2.95, "{scheme:?}: {r:?}");
        }
    }

    #[test]
    fn gaussian_outliers_are_clipped() {
        // Outliers at the floor's 0.0001 %: two in two million.
        let s = stats_of(&[&gaussian_with_outliers(2_000_000, 1, 5)], None);
        for scheme in schemes() {
            let r = range(&s, &scheme);
            assert!(r.max < 20.0 && r.min > -20.0, "{scheme:?}: {r:?}");
            // ... but not into the body of the distribution.
            assert!(r.max > 3.5 && r.min < -3.5, "{scheme:?}: {r:?}");
        }
    }

    #[test]
    fn the_divergence_alone_clips_the_tail_not_the_body() {
        let s = stats_of(&[&gaussian_with_outliers(200_000, 10, 12)], None);
        for scheme in schemes() {
            let r = least_divergence(&s, &scheme);
            assert!(r.max < 20.0 && r.min > -20.0, "{scheme:?}: {r:?}");
            assert!(r.max > 2.0 && r.min < -2.0, "{scheme:?}: {r:?}");
            // The floor widens it to keep all but 0.0001 % (two values here).
            let floored = range(&s, &scheme);
            assert!(floored.max >= r.max && floored.max > 50.0, "{floored:?}");
        }
        let u = stats_of(&[&uniform(200_000, -1.0, 3.0, 13)], None);
        let r = least_divergence(&u, &schemes()[0]);
        assert!(r.min < -0.9 && r.max > 2.7, "{r:?}");
    }

    #[test]
    fn one_sided_keeps_min_zero() {
        let s = stats_of(&[&relu_like(200_000, 6)], None);
        for scheme in schemes() {
            let r = range(&s, &scheme);
            assert_eq!(r.min, 0.0, "{scheme:?}");
            assert!(r.max > 3.0 && r.max <= s.min_max().unwrap().1, "{r:?}");
        }
    }

    #[test]
    fn more_levels_than_bins_gives_minmax() {
        let s = crate::calibrate::testing::stats_with(
            64,
            &[&gaussian_with_outliers(10_000, 10, 1)],
            None,
        );
        let r = range(&s, &QuantScheme::new(QuantType::Int16, true));
        assert_eq!(r, minmax::range(&s));
    }
}
