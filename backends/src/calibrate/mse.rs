//! MSE: the clipping window of least expected squared quantization error.
//!
//! For a window `[lo, hi]` quantized in `s = (hi − lo) / steps` steps, a value inside costs
//! the rounding noise `s²/12` (exact zeros cost nothing: zero is always a level), a value
//! outside costs its distance to the edge squared (bin centre, plus the bin's own spread
//! `w²/12`). Sums run over the histogram with exact integer prefix sums, so each candidate
//! window costs O(1) and the choice is the same however the statistics were merged.

use kiln_passes::quant::{QuantScheme, Range};

use super::search::{steps, window_range, windows, Prefix, Window};
use super::stats::TensorStats;

/// The range of least expected squared error for `scheme`, clipped to the observed
/// `[min, max]`.
pub fn range(stats: &TensorStats, scheme: &QuantScheme) -> Range {
    let Some(h) = stats.histogram() else {
        return super::minmax::range(stats);
    };
    let all = windows(stats, h, scheme.symmetric);
    let Some(&full) = all.first() else {
        return Range::new(0.0, 0.0);
    };
    let prefix = Prefix::of(h);
    let levels = steps(scheme) as f64;
    let zeros = stats.zeros() as f64;
    let mut best = (f64::INFINITY, full);
    for &w in &all {
        let e = error(&prefix, w, levels, zeros);
        // Widest first and strictly better only: ties keep the wider window.
        if e < best.0 {
            best = (e, w);
        }
    }
    window_range(stats, h, best.1)
}

/// Expected squared error of window `w`, in squared bins, summed over the values.
fn error(p: &Prefix, w: Window, levels: f64, zeros: f64) -> f64 {
    let n = p.count.len() - 1;
    let (a, b) = (w.lo, w.hi);
    let inside = (p.count[b] - p.count[a]) as f64;
    let step = w.len() as f64 / levels;
    let noise = (inside - zeros).max(0.0) * step * step / 12.0;
    // Σ c · (2j + 1 − 2e)² over a range of bins, e the window edge, from the prefix sums:
    // Σc(2j+1)² − 4e·Σc(2j+1) + 4e²·Σc (exact: every term is an integer).
    let clip = |from: usize, to: usize, edge: usize| -> f64 {
        let c0 = p.count[to] - p.count[from];
        let c1 = p.first[to] - p.first[from];
        let c2 = p.second[to] - p.second[from];
        let e = edge as u128;
        let sum = c2 + 4 * e * e * c0 - 4 * e * c1;
        // Distances are in half-bins: divide by 4; each clipped value also spreads w²/12.
        sum as f64 / 4.0 + c0 as f64 / 12.0
    };
    noise + clip(0, a, a) + clip(b, n, b)
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
        let s = stats_of(&[&uniform(200_000, -1.0, 3.0, 7)], None);
        for scheme in schemes() {
            let r = range(&s, &scheme);
            assert!(r.min <= -0.95 && r.max >= 2.9, "{scheme:?}: {r:?}");
        }
    }

    #[test]
    fn rare_outliers_are_clipped() {
        // MSE clips an outlier only when it is rarer than the rounding noise it saves is
        // large: at 8 bits, about one in 200 000 values.
        let s = stats_of(&[&gaussian_with_outliers(2_000_000, 1, 8)], None);
        for scheme in schemes() {
            let r = range(&s, &scheme);
            assert!(r.max < 20.0 && r.min > -20.0, "{scheme:?}: {r:?}");
            assert!(r.max > 2.5 && r.min < -2.5, "{scheme:?}: {r:?}");
        }
    }

    #[test]
    fn one_sided_keeps_min_zero() {
        let s = stats_of(&[&relu_like(200_000, 9)], None);
        for scheme in schemes() {
            let r = range(&s, &scheme);
            assert_eq!(r.min, 0.0, "{scheme:?}");
            assert!(r.max > 2.0, "{r:?}");
        }
    }

    #[test]
    fn sixteen_bits_barely_clip() {
        let s = stats_of(&[&gaussian_with_outliers(50_000, 10, 10)], None);
        let r = range(&s, &QuantScheme::new(QuantType::Int16, true));
        let (min, max) = s.min_max().unwrap();
        assert!(r.max > 0.9 * max && r.min < 0.9 * min, "{r:?}");
    }

    #[test]
    fn mass_at_the_ends_is_not_clipped() {
        // Two bumps at ±1: clipping either costs far more than the rounding noise saves.
        let noise = crate::calibrate::testing::gaussian(100_000, 11);
        let values: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(i, n)| if i % 2 == 0 { 1.0 } else { -1.0 } + 0.05 * n)
            .collect();
        let s = stats_of(&[&values], None);
        let (min, max) = s.min_max().unwrap();
        for scheme in schemes() {
            let r = range(&s, &scheme);
            assert!(
                r.max > 0.95 * max && r.min < 0.95 * min,
                "{r:?} of [{min}, {max}]"
            );
        }
    }
}
