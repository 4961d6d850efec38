//! MinMax: the observed range, or ONNX Runtime's moving average of per-run ranges.

use kiln_passes::quant::Range;

use super::stats::TensorStats;

/// The moving-average range when one was collected, else the observed `[min, max]`.
/// Symmetry is left to the scheme (`QuantScheme::params` makes the range ±absmax).
pub fn range(stats: &TensorStats) -> Range {
    let (min, max) = stats
        .moving_range()
        .or(stats.min_max())
        .unwrap_or((0.0, 0.0));
    Range::new(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::testing::stats_of;

    #[test]
    fn uniform_gives_the_full_range() {
        let s = stats_of(&[&[-1.0, 0.5, 3.0], &[2.0, -0.25]], None);
        assert_eq!(range(&s), Range::new(-1.0, 3.0));
    }

    #[test]
    fn moving_average_follows_ort() {
        // First run's range, then old + 0.5 · (new − old).
        let s = stats_of(&[&[-2.0, 2.0], &[-1.0, 4.0], &[0.0, 0.0]], Some(0.5));
        // (-2, 2) → (-1.5, 3) → (-0.75, 1.5)
        assert_eq!(range(&s), Range::new(-0.75, 1.5));
    }
}
