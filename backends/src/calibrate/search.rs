//! Candidate clipping windows for the searching methods (entropy, MSE).
//!
//! A window is a run of histogram bins `[lo, hi)` that always holds zero (quantization keeps
//! zero exact). Windows shrink the observed range toward zero, keeping the ratio of its two
//! sides, so a one-sided (ReLU) tensor keeps its lower end at zero; for a symmetric scheme
//! both sides are the larger one, as `QuantScheme::params` will make them.

use kiln_passes::quant::{QuantScheme, Range};

use super::histogram::Histogram;
use super::stats::TensorStats;

/// Bins `[lo, hi)` of the histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// First bin inside.
    pub lo: usize,
    /// One past the last bin inside.
    pub hi: usize,
}

impl Window {
    /// Number of bins.
    pub fn len(&self) -> usize {
        self.hi - self.lo
    }
}

/// Every candidate window, widest first; the first one holds every value seen.
/// Empty when no finite value was seen.
pub(crate) fn windows(stats: &TensorStats, h: &Histogram, symmetric: bool) -> Vec<Window> {
    let Some((min, max)) = stats.min_max() else {
        return Vec::new();
    };
    let half = h.zero_bin();
    let mut below = if min < 0.0 { half - h.bin_of(min) } else { 0 };
    let mut above = if max >= 0.0 {
        h.bin_of(max) + 1 - half
    } else {
        0
    };
    if symmetric {
        let side = below.max(above);
        (below, above) = (side, side);
    }
    let d = below.max(above);
    let mut out: Vec<Window> = Vec::with_capacity(d);
    for t in (1..=d).rev() {
        let w = Window {
            lo: half - (t * below).div_ceil(d),
            hi: half + (t * above).div_ceil(d),
        };
        if out.last() != Some(&w) {
            out.push(w);
        }
    }
    out
}

/// The range a window stands for, clipped to the observed `[min, max]`.
pub(crate) fn window_range(stats: &TensorStats, h: &Histogram, w: Window) -> Range {
    let (min, max) = stats.min_max().unwrap_or((0.0, 0.0));
    Range::new(
        (h.edge(w.lo) as f32).max(min).min(max),
        (h.edge(w.hi) as f32).min(max).max(min),
    )
}

/// Quantization steps across a window: `qmax − qmin` of the scheme.
pub(crate) fn steps(scheme: &QuantScheme) -> u64 {
    let (qmin, qmax) = scheme.qrange();
    (qmax - qmin).max(1) as u64
}

/// Exact prefix sums of a histogram's counts (`sum[j]` = Σ of bins before `j`).
pub(crate) struct Prefix {
    /// Σ count.
    pub count: Vec<u128>,
    /// Σ count · (2j + 1): bin centres in half-bins.
    pub first: Vec<u128>,
    /// Σ count · (2j + 1)².
    pub second: Vec<u128>,
    /// Number of nonzero bins.
    pub nonzero: Vec<u64>,
    /// Σ count · ln(count), in bin order.
    pub xlogx: Vec<f64>,
}

impl Prefix {
    /// The prefix sums of `h`.
    pub fn of(h: &Histogram) -> Prefix {
        let n = h.bins();
        let mut p = Prefix {
            count: Vec::with_capacity(n + 1),
            first: Vec::with_capacity(n + 1),
            second: Vec::with_capacity(n + 1),
            nonzero: Vec::with_capacity(n + 1),
            xlogx: Vec::with_capacity(n + 1),
        };
        let (mut c0, mut c1, mut c2, mut nz, mut xl) = (0u128, 0u128, 0u128, 0u64, 0f64);
        for (j, &c) in h.counts().iter().enumerate() {
            p.count.push(c0);
            p.first.push(c1);
            p.second.push(c2);
            p.nonzero.push(nz);
            p.xlogx.push(xl);
            let c = u128::from(c);
            let centre = 2 * j as u128 + 1;
            c0 += c;
            c1 += c * centre;
            c2 += c * centre * centre;
            nz += u64::from(c != 0);
            xl += xlogx(c as f64);
        }
        p.count.push(c0);
        p.first.push(c1);
        p.second.push(c2);
        p.nonzero.push(nz);
        p.xlogx.push(xl);
        p
    }
}

/// `x · ln x`, 0 at 0.
pub(crate) fn xlogx(x: f64) -> f64 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::testing::stats_with;

    #[test]
    fn windows_shrink_toward_zero_keeping_the_sides() {
        // [-1, 3) on 16 bins of [-4, 4): width 0.5.
        let s = stats_with(16, &[&[-1.0, 2.9]], None);
        let h = s.histogram().unwrap();
        let all = windows(&s, h, false);
        assert_eq!(all[0], Window { lo: 6, hi: 14 });
        assert_eq!(*all.last().unwrap(), Window { lo: 7, hi: 9 });
        assert!(all.windows(2).all(|p| p[1].len() < p[0].len()));
        let r = window_range(&s, h, all[0]);
        assert_eq!(r, Range::new(-1.0, 2.9));
        let sym = windows(&s, h, true);
        assert_eq!(sym[0], Window { lo: 2, hi: 14 });
        // A one-sided tensor keeps its windows at zero.
        let relu = stats_with(16, &[&[0.0, 1.0, 3.5]], None);
        let h = relu.histogram().unwrap();
        assert!(windows(&relu, h, false).iter().all(|w| w.lo == 8));
    }

    #[test]
    fn prefix_sums_are_exact() {
        let s = stats_with(16, &[&[-1.0, 2.9, 2.9, 0.0]], None);
        let p = Prefix::of(s.histogram().unwrap());
        assert_eq!(p.count[16], 4);
        assert_eq!(p.nonzero[16], 3);
        // Bins 6, 8, 13, 13: Σ (2j+1) = 13 + 17 + 27 + 27.
        assert_eq!(p.first[16], 84);
        assert!((p.xlogx[16] - 2.0 * 2f64.ln()).abs() < 1e-12);
    }
}
