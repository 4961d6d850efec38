//! A log-scale histogram of |candidate − reference| over one output's elements: one bin per
//! decade from 1e-12 to 1e3, plus exact zeros, errors below and above that range, and pairs
//! where either side is NaN or ±Inf. Filled element by element by the metrics'
//! [`Accumulator`](super::Accumulator) in its single pass.

use serde::Serialize;

/// Exponent of the lowest decade's lower edge (1e-12).
pub const LOWEST_DECADE: i32 = -12;
/// Number of decade bins: [1e-12, 1e-11) … [1e2, 1e3).
pub const DECADES: usize = 15;

/// Decade edges 1e-12 … 1e3.
const EDGES: [f64; DECADES + 1] = [
    1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3,
];

/// Counts of |candidate − reference| by decade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// Pairs that are exactly equal.
    pub zero: u64,
    /// Errors in (0, 1e-12).
    pub under: u64,
    /// `decades[i]` counts errors in [10^(LOWEST_DECADE+i), 10^(LOWEST_DECADE+i+1)).
    pub decades: Vec<u64>,
    /// Errors ≥ 1e3.
    pub over: u64,
    /// Pairs where either side is NaN or ±Inf (their difference is not a finite error).
    pub non_finite: u64,
    /// The exponent of `decades[0]`'s lower edge, so the JSON describes itself.
    pub lowest_decade: i32,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            zero: 0,
            under: 0,
            decades: vec![0; DECADES],
            over: 0,
            non_finite: 0,
            lowest_decade: LOWEST_DECADE,
        }
    }
}

/// Where one error falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Exactly zero.
    Zero,
    /// Below 1e-12.
    Under,
    /// In decade bin `i`.
    Decade(usize),
    /// 1e3 or more.
    Over,
    /// NaN or ±Inf on either side.
    NonFinite,
}

/// The bucket of the pair (`reference`, `candidate`).
pub fn bucket(reference: f64, candidate: f64) -> Bucket {
    if !(reference.is_finite() && candidate.is_finite()) {
        return Bucket::NonFinite;
    }
    let d = (candidate - reference).abs();
    if d == 0.0 {
        return Bucket::Zero;
    }
    // Binary search over 16 edges: cheaper than log10 on every element of a large output.
    match EDGES.partition_point(|&e| e <= d) {
        0 => Bucket::Under,
        i if i > DECADES => Bucket::Over,
        i => Bucket::Decade(i - 1),
    }
}

impl Histogram {
    /// Counts one pair.
    #[inline]
    pub fn add(&mut self, reference: f64, candidate: f64) {
        match bucket(reference, candidate) {
            Bucket::Zero => self.zero += 1,
            Bucket::Under => self.under += 1,
            Bucket::Decade(i) => self.decades[i] += 1,
            Bucket::Over => self.over += 1,
            Bucket::NonFinite => self.non_finite += 1,
        }
    }

    /// Pairs counted.
    pub fn total(&self) -> u64 {
        self.zero + self.under + self.decades.iter().sum::<u64>() + self.over + self.non_finite
    }

    /// Every bucket in display order with a short label: `0`, `<1e-12`, `1e-12` … `1e2`,
    /// `≥1e3`, `NaN/Inf`.
    pub fn labelled(&self) -> Vec<(String, u64)> {
        let mut out = vec![("0".to_string(), self.zero), ("<1e-12".into(), self.under)];
        for (i, &n) in self.decades.iter().enumerate() {
            out.push((format!("1e{}", self.lowest_decade + i as i32), n));
        }
        out.push(("≥1e3".into(), self.over));
        out.push(("NaN/Inf".into(), self.non_finite));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_fall_in_their_decade() {
        assert_eq!(bucket(1.0, 1.0), Bucket::Zero);
        assert_eq!(bucket(0.0, 1e-13), Bucket::Under);
        assert_eq!(bucket(0.0, 1e-12), Bucket::Decade(0));
        assert_eq!(bucket(0.0, 5e-12), Bucket::Decade(0));
        assert_eq!(bucket(0.0, 0.5), Bucket::Decade(11));
        assert_eq!(bucket(1.0, 0.0), Bucket::Decade(12));
        assert_eq!(bucket(0.0, 999.0), Bucket::Decade(14));
        assert_eq!(bucket(0.0, 1e3), Bucket::Over);
        assert_eq!(bucket(f64::NAN, 0.0), Bucket::NonFinite);
        assert_eq!(bucket(0.0, f64::INFINITY), Bucket::NonFinite);
        assert_eq!(bucket(f64::INFINITY, f64::INFINITY), Bucket::NonFinite);
    }

    #[test]
    fn counts_add_up_and_label() {
        let mut h = Histogram::default();
        for (r, c) in [
            (0.0, 0.0),
            (0.0, 0.5),
            (0.0, 0.25),
            (f64::NAN, 1.0),
            (0.0, 1e9),
        ] {
            h.add(r, c);
        }
        assert_eq!(h.total(), 5);
        assert_eq!(h.decades[11], 2);
        let labels = h.labelled();
        assert_eq!(labels.len(), DECADES + 4);
        assert_eq!(labels[2 + 11], ("1e-1".to_string(), 2));
        assert_eq!(labels.last().unwrap().1, 1);
    }
}
