//! A histogram on a fixed power-of-two grid, so that histograms of shards merge exactly.
//!
//! The grid is `bins` equal bins over `[-2^e, 2^e)`, `bins` a power of two and `2^e` the
//! smallest power of two above every value seen. Because every edge is a dyadic number, the
//! bin of a value is computed exactly (`floor(x · bins/2 / 2^e)`, a power-of-two scaling),
//! and doubling the grid merges bin pairs exactly: the histogram of some values is the same
//! whatever order they came in and however they were split, which is what makes
//! [`Statistics::merge`](super::Statistics::merge) equal one run over all the data.

use super::CalibrationError;

/// Bins of a histogram unless the options say otherwise: fine enough that the entropy search
/// has about as many candidate thresholds as TensorRT's (2048 over `[0, absmax]`).
pub const DEFAULT_BINS: usize = 4096;
/// Fewest bins allowed.
pub const MIN_BINS: usize = 16;
/// Most bins allowed (8 MiB of counts per tensor).
pub const MAX_BINS: usize = 1 << 20;
/// Exponent of the smallest grid, `[-2^-126, 2^-126)`: the smallest normal float32, above
/// every subnormal.
pub const MIN_EXPONENT: i32 = -126;
/// Exponent of the largest grid: `2^128` is above every finite float32.
pub const MAX_EXPONENT: i32 = 128;

/// Counts of values by bin over `[-2^exponent, 2^exponent)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    exponent: i32,
    counts: Vec<u64>,
}

/// The smallest exponent `e ≥ MIN_EXPONENT` with `2^e > absmax` (`absmax` finite, ≥ 0).
pub fn exponent_for(absmax: f32) -> i32 {
    let biased = ((absmax.abs().to_bits() >> 23) & 0xff) as i32;
    // A normal value m·2^E (1 ≤ m < 2) lies below 2^(E+1) and not below 2^E; zero and
    // subnormals (biased 0) lie below 2^-126.
    if biased == 0 {
        MIN_EXPONENT
    } else {
        (biased - 127 + 1).max(MIN_EXPONENT)
    }
}

/// `2^k` as an f64, exactly (for |k| ≤ 1022).
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

impl Histogram {
    /// An empty histogram of `bins` bins (a power of two in `[MIN_BINS, MAX_BINS]`).
    pub fn new(bins: usize) -> Result<Histogram, CalibrationError> {
        check_bins(bins)?;
        Ok(Histogram {
            exponent: MIN_EXPONENT,
            counts: vec![0; bins],
        })
    }

    /// Rebuilds a histogram from its parts (a statistics file); `offset` is the index of
    /// `counts[0]`, the bins outside `offset..offset + counts.len()` are empty.
    pub fn from_parts(
        bins: usize,
        exponent: i32,
        offset: usize,
        counts: &[u64],
    ) -> Result<Histogram, String> {
        check_bins(bins).map_err(|e| e.to_string())?;
        if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
            return Err(format!(
                "histogram exponent {exponent} is outside [{MIN_EXPONENT}, {MAX_EXPONENT}]"
            ));
        }
        if offset
            .checked_add(counts.len())
            .is_none_or(|end| end > bins)
        {
            return Err(format!(
                "histogram counts at offset {offset} (length {}) overrun its {bins} bins",
                counts.len()
            ));
        }
        let mut all = vec![0; bins];
        all[offset..offset + counts.len()].copy_from_slice(counts);
        Ok(Histogram {
            exponent,
            counts: all,
        })
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// The grid covers `[-2^exponent, 2^exponent)`.
    pub fn exponent(&self) -> i32 {
        self.exponent
    }

    /// The count of each bin, lowest first.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The nonzero part of the counts: `(offset, counts[offset..end])`, for compact files.
    pub fn trimmed(&self) -> (usize, &[u64]) {
        let Some(first) = self.counts.iter().position(|&c| c != 0) else {
            return (0, &[]);
        };
        let last = self.counts.iter().rposition(|&c| c != 0).unwrap_or(first);
        (first, &self.counts[first..=last])
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Width of one bin.
    pub fn width(&self) -> f64 {
        pow2(self.exponent + 1) / self.bins() as f64
    }

    /// Index of the first bin at or above zero (`bins / 2`).
    pub fn zero_bin(&self) -> usize {
        self.bins() / 2
    }

    /// The real value of bin edge `i` (`0 ..= bins`): `(i − bins/2) · width`.
    pub fn edge(&self, i: usize) -> f64 {
        (i as f64 - self.zero_bin() as f64) * self.width()
    }

    /// The bin holding `x` (finite, |x| < 2^exponent), exactly.
    pub fn bin_of(&self, x: f32) -> usize {
        let half = self.zero_bin() as i64;
        bin_index(x, self.shift_base(), half).clamp(0, self.bins() as i64 - 1) as usize
    }

    /// `150 − log2(bins/2) + exponent`: a float32 of biased exponent `E` and significand `m`
    /// is `m · 2^(E − 150)`, so in bin units it is `m / 2^(shift_base − E)`.
    fn shift_base(&self) -> i32 {
        150 - self.zero_bin().trailing_zeros() as i32 + self.exponent
    }

    /// Widens the grid to `[-2^exponent, 2^exponent)` (no-op when already that wide), merging
    /// bins exactly.
    pub fn grow_to(&mut self, exponent: i32) {
        if exponent <= self.exponent {
            return;
        }
        let k = (exponent - self.exponent).min(63) as u32;
        let half = self.zero_bin() as i64;
        let mut grown = vec![0u64; self.bins()];
        for (i, &c) in self.counts.iter().enumerate() {
            if c != 0 {
                // floor((i − half) / 2^k) by an arithmetic shift, which rounds toward −∞.
                let j = half + ((i as i64 - half) >> k);
                grown[j as usize] += c;
            }
        }
        self.counts = grown;
        self.exponent = exponent;
    }

    /// Counts `values`, whose finite ones are all within `absmax`; non-finite ones are skipped.
    pub fn add(&mut self, values: &[f32], absmax: f32) {
        let zeros = values.iter().filter(|&&x| x == 0.0).count() as u64;
        self.add_counted(values, absmax, zeros);
    }

    /// [`add`](Histogram::add) for a caller that has counted the exact zeros (`zeros`) among
    /// `values`: they all go to one bin, and counting them one by one would make every
    /// increment wait for the one before (a ReLU output is often half zeros).
    pub(crate) fn add_counted(&mut self, values: &[f32], absmax: f32, zeros: u64) {
        self.grow_to(exponent_for(absmax));
        let bins = self.bins();
        let half = self.zero_bin() as i64;
        let shift = self.shift_base();
        // Branch-free: zeros and non-finite values (whichever way a prediction would go, a
        // miss costs more than the counting) go to four scratch slots past the end, taken in
        // turn so that a run of them does not make each increment wait for the previous one.
        let mut counts = std::mem::take(&mut self.counts);
        counts.resize(bins + SCRATCH, 0);
        let last = bins as i64 - 1;
        for (k, &x) in values.iter().enumerate() {
            let keep = x != 0.0 && x.abs() < f32::INFINITY;
            // In range by construction (|x| < 2^exponent); the clamp keeps a bug from
            // becoming a panic.
            let i = bin_index(x, shift, half).clamp(0, last) as usize;
            let slot = if keep { i } else { bins + (k % SCRATCH) };
            counts[slot] += 1;
        }
        counts.truncate(bins);
        counts[half as usize] += zeros;
        self.counts = counts;
    }

    /// Adds `other`'s counts (same number of bins), on the wider of the two grids.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), CalibrationError> {
        if other.bins() != self.bins() {
            return Err(CalibrationError::Merge(format!(
                "histograms of {} and {} bins",
                self.bins(),
                other.bins()
            )));
        }
        self.grow_to(other.exponent);
        let mut other = other.clone();
        other.grow_to(self.exponent);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }
}

/// Scratch slots [`Histogram::add_counted`] counts skipped values in.
const SCRATCH: usize = 4;

/// The bin of `x`: `half + floor(x · 2^(log2(half) − exponent))`, in integers from the bits of
/// `x` (exact, and no float-to-integer conversion). `shift` is [`Histogram::shift_base`].
/// Meaningless for NaN and ±Inf.
fn bin_index(x: f32, shift: i32, half: i64) -> i64 {
    let bits = x.to_bits();
    let biased = (bits >> 23) & 0xff;
    // Subnormals have no implicit leading one and the exponent of the smallest normals.
    let significand = u64::from((bits & 0x7f_ffff) | (u32::from(biased != 0) << 23));
    // |x| in bin units is significand / 2^s, s ≥ 0 because |x| < 2^exponent; above 63 every
    // significand shifts out.
    let s = (shift - biased.max(1) as i32).clamp(0, 63) as u32;
    let floor = (significand >> s) as i64;
    // For a negative value, floor(−a) = −ceil(a).
    let ceil = ((significand + (1u64 << s) - 1) >> s) as i64;
    if bits >> 31 == 0 {
        half + floor
    } else {
        half - ceil
    }
}

fn check_bins(bins: usize) -> Result<(), CalibrationError> {
    if !bins.is_power_of_two() || !(MIN_BINS..=MAX_BINS).contains(&bins) {
        return Err(CalibrationError::Option(format!(
            "histogram bins must be a power of two between {MIN_BINS} and {MAX_BINS}, got {bins}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Rng;

    fn absmax(v: &[f32]) -> f32 {
        v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
    }

    fn filled(bins: usize, values: &[f32]) -> Histogram {
        let mut h = Histogram::new(bins).unwrap();
        h.add(values, absmax(values));
        h
    }

    #[test]
    fn exponents_are_the_next_power_of_two_above() {
        assert_eq!(exponent_for(0.0), MIN_EXPONENT);
        assert_eq!(exponent_for(1e-45), MIN_EXPONENT);
        assert_eq!(exponent_for(1.0), 1);
        assert_eq!(exponent_for(0.999), 0);
        assert_eq!(exponent_for(1.5), 1);
        assert_eq!(exponent_for(2.0), 2);
        assert_eq!(exponent_for(f32::MAX), 128);
        assert_eq!(exponent_for(-3.0), 2);
    }

    #[test]
    fn values_land_in_their_bins_and_edges_are_exact() {
        let h = filled(16, &[-1.0, -0.0, 0.0, 0.124, 0.125, 1.9]);
        // exponent 1: [-2, 2), width 0.25.
        assert_eq!(h.exponent(), 1);
        assert_eq!(h.width(), 0.25);
        assert_eq!(h.bin_of(-1.0), 4);
        assert_eq!(h.bin_of(-1e-30), 7);
        assert_eq!(h.bin_of(0.0), 8);
        assert_eq!(h.bin_of(0.25), 9);
        assert_eq!(h.bin_of(1.9), 15);
        assert_eq!(h.counts()[8], 4);
        assert_eq!(h.edge(0), -2.0);
        assert_eq!(h.edge(16), 2.0);
        assert_eq!(h.total(), 6);
        let t = filled(16, &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0]);
        assert_eq!(t.total(), 1);
    }

    #[test]
    fn integer_binning_is_the_exact_floor() {
        let mut rng = Rng::new(5);
        for exponent in [MIN_EXPONENT, -100, -3, 0, 7, 60, MAX_EXPONENT] {
            let mut h = Histogram::new(256).unwrap();
            h.grow_to(exponent);
            let limit = 2f64.powi(exponent);
            for _ in 0..2000 {
                // Values across many scales below the limit, both signs, subnormals included.
                let scale = 2f64.powi(-(rng.below(160) as i32));
                let v = ((rng.next_unit() as f64 * 2.0 - 1.0) * limit * scale) as f32;
                if v.abs() as f64 >= limit || !v.is_finite() {
                    continue;
                }
                let t = f64::from(v) * 128.0 / limit;
                let want = (t.floor() + 128.0) as usize;
                assert_eq!(h.bin_of(v), want, "{v:e} on 2^{exponent}");
            }
            assert_eq!(h.bin_of(-f32::from_bits(1)), 127);
            assert_eq!(h.bin_of(f32::from_bits(1)), 128);
        }
    }

    #[test]
    fn growing_equals_binning_on_the_wide_grid() {
        let mut rng = Rng::new(3);
        let small: Vec<f32> = (0..5000).map(|_| rng.next_unit() * 2.0 - 1.0).collect();
        let tiny: Vec<f32> = (0..100).map(|_| (rng.next_unit() - 0.5) * 1e-30).collect();
        let big: Vec<f32> = (0..5000).map(|_| (rng.next_unit() - 0.3) * 300.0).collect();
        let mut grown = Histogram::new(64).unwrap();
        for part in [&tiny, &small, &big] {
            grown.add(part, absmax(part));
        }
        let all: Vec<f32> = [tiny, small, big].concat();
        assert_eq!(grown, filled(64, &all));
    }

    #[test]
    fn merge_is_order_free_and_needs_equal_bins() {
        let mut rng = Rng::new(9);
        let a: Vec<f32> = (0..3000).map(|_| rng.next_unit() - 0.5).collect();
        let b: Vec<f32> = (0..3000).map(|_| (rng.next_unit() - 0.5) * 77.0).collect();
        let mut ab = filled(128, &a);
        ab.merge(&filled(128, &b)).unwrap();
        let mut ba = filled(128, &b);
        ba.merge(&filled(128, &a)).unwrap();
        assert_eq!(ab, ba);
        assert_eq!(ab, filled(128, &[a, b].concat()));
        assert!(ab.merge(&Histogram::new(64).unwrap()).is_err());
    }

    #[test]
    fn parts_round_trip_and_are_checked() {
        let h = filled(32, &[0.5, 0.75, -0.25]);
        let (offset, counts) = h.trimmed();
        assert_eq!(
            Histogram::from_parts(32, h.exponent(), offset, counts).unwrap(),
            h
        );
        assert!(Histogram::from_parts(32, 0, 30, &[1, 2, 3]).is_err());
        assert!(Histogram::from_parts(33, 0, 0, &[]).is_err());
        assert!(Histogram::from_parts(32, 500, 0, &[]).is_err());
        assert!(Histogram::new(100).is_err());
        assert_eq!(Histogram::new(16).unwrap().trimmed(), (0, &[][..]));
    }
}
