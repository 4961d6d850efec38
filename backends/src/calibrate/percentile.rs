//! Percentile: clip the rarest values, read off the histogram.
//!
//! Symmetric schemes cut the `p`-th percentile of |x| (ONNX Runtime histograms |x| for
//! them); asymmetric ones cut `(100 − p) / 2` percent on each side. A cut is taken at the
//! outer edge of the bin where the cumulative count crosses it, so it never clips more than
//! asked (within a bin), and the result is clipped to the observed `[min, max]`, as ORT does.

use kiln_passes::quant::{QuantScheme, Range};

use super::stats::TensorStats;

/// The range keeping `p` percent of the values (`p` is clamped to `[0, 100]`; NaN is 100).
pub fn range(stats: &TensorStats, p: f64, scheme: &QuantScheme) -> Range {
    let Some((min, max)) = stats.min_max() else {
        return Range::new(0.0, 0.0);
    };
    let p = if p.is_nan() {
        100.0
    } else {
        p.clamp(0.0, 100.0)
    };
    let Some(h) = stats.histogram() else {
        return super::minmax::range(stats);
    };
    let counts = h.counts();
    let total = stats.count() as f64;
    let half = h.zero_bin();
    let (lo, hi) = if scheme.symmetric {
        // |x| in [k·w, (k+1)·w) is bin half+k on the right and half−1−k on the left.
        let keep = total * p / 100.0;
        let mut seen = 0.0;
        let mut k = 0;
        while k < half {
            seen += (counts[half + k] + counts[half - 1 - k]) as f64;
            if seen >= keep {
                break;
            }
            k += 1;
        }
        let t = h.edge(half + (k + 1).min(half));
        (-t, t)
    } else {
        let cut = total * (100.0 - p) / 200.0;
        // Lower cut: the lower edge of the first bin whose cumulative count exceeds `cut`.
        let mut seen = 0.0;
        let mut lo_bin = 0;
        for (i, &c) in counts.iter().enumerate() {
            seen += c as f64;
            if seen > cut {
                lo_bin = i;
                break;
            }
        }
        let mut seen = 0.0;
        let mut hi_bin = counts.len() - 1;
        for (i, &c) in counts.iter().enumerate().rev() {
            seen += c as f64;
            if seen > cut {
                hi_bin = i;
                break;
            }
        }
        (h.edge(lo_bin), h.edge(hi_bin + 1))
    };
    Range::new((lo as f32).max(min), (hi as f32).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::testing::{gaussian_with_outliers, relu_like, stats_of, uniform};
    use kiln_passes::quant::QuantType;

    fn asym() -> QuantScheme {
        QuantScheme::new(QuantType::Uint8, false)
    }
    fn sym() -> QuantScheme {
        QuantScheme::new(QuantType::Int8, true)
    }

    #[test]
    fn uniform_keeps_about_the_full_range() {
        let s = stats_of(&[&uniform(100_000, -2.0, 2.0, 1)], None);
        for scheme in [asym(), sym()] {
            let r = range(&s, 99.99, &scheme);
            assert!(r.min < -1.99 && r.max > 1.99, "{r:?}");
        }
        assert_eq!(
            range(&s, 100.0, &asym()),
            crate::calibrate::minmax::range(&s)
        );
    }

    #[test]
    fn gaussian_outliers_are_clipped() {
        let s = stats_of(&[&gaussian_with_outliers(200_000, 10, 2)], None);
        let (min, max) = s.min_max().unwrap();
        assert!(max >= 50.0 && min <= -50.0);
        for scheme in [asym(), sym()] {
            let r = range(&s, 99.9, &scheme);
            // 99.9% of a unit gaussian lies within ±3.3; the 20 outliers at ±50..100 go.
            assert!(r.max > 3.0 && r.max < 4.5, "{r:?}");
            assert!(r.min < -3.0 && r.min > -4.5, "{r:?}");
        }
    }

    #[test]
    fn one_sided_keeps_min_zero() {
        let s = stats_of(&[&relu_like(100_000, 3)], None);
        for scheme in [asym(), sym()] {
            let r = range(&s, 99.99, &scheme);
            assert_eq!(r.min, 0.0);
            assert!(r.max > 2.0 && r.max <= s.min_max().unwrap().1, "{r:?}");
        }
    }

    #[test]
    fn stays_inside_the_observed_range() {
        let s = stats_of(&[&[0.3, 0.4, 0.5]], None);
        let r = range(&s, 99.0, &sym());
        assert!(r.min >= 0.3 && r.max <= 0.5, "{r:?}");
        let r = range(&s, f64::NAN, &asym());
        assert_eq!(r, Range::new(0.3, 0.5));
    }
}
