//! The second moment `XᵀX` of a MatMul's input over calibration data, accumulated in f64 a
//! chunk of rows at a time: GPTQ's layer Hessian (`2·XᵀX`, up to a factor GPTQ's relative
//! dampening makes irrelevant). Memory is `K × K` whatever the number of rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::linalg::dot;

/// Rows folded together (their values copied column-major so each pair of inputs is one
/// contiguous dot product).
const CHUNK: usize = 32;

/// `XᵀX` of the `[rows, K]` activations seen so far (the upper triangle is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Hessian {
    k: usize,
    /// Row-major `K × K`; only `j ≥ i` is filled.
    upper: Vec<f64>,
    rows: u64,
    skipped: u64,
}

impl Hessian {
    /// An empty accumulator for inputs of `k` features.
    pub fn new(k: usize) -> Hessian {
        Hessian {
            k,
            upper: vec![0.0; k * k],
            rows: 0,
            skipped: 0,
        }
    }

    /// A Hessian from a full symmetric row-major `k × k` matrix (its upper triangle is read),
    /// counted as `rows` rows.
    pub fn from_dense(k: usize, dense: &[f64], rows: u64) -> Result<Hessian, String> {
        if dense.len() != k * k {
            return Err(format!(
                "{} values cannot be a {k} × {k} matrix",
                dense.len()
            ));
        }
        let mut h = Hessian::new(k);
        for i in 0..k {
            h.upper[i * k + i..(i + 1) * k].copy_from_slice(&dense[i * k + i..(i + 1) * k]);
        }
        h.rows = rows;
        Ok(h)
    }

    /// Features per row (the MatMul's K).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows folded in.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows left out because they held a non-finite value.
    pub fn skipped_rows(&self) -> u64 {
        self.skipped
    }

    /// Folds in the rows of `x`, a row-major `[rows, K]` block (any leading shape flattened;
    /// the last dim must be K). Rows with a NaN or infinity are left out and counted.
    pub fn add_rows(&mut self, x: &[f32]) -> Result<(), String> {
        let k = self.k;
        if k == 0 || !x.len().is_multiple_of(k) {
            return Err(format!(
                "{} values are not rows of {k} features (the MatMul's K)",
                x.len()
            ));
        }
        let mut cols = vec![0f64; k * CHUNK];
        for chunk in x.chunks(k * CHUNK) {
            let mut r = 0;
            for row in chunk.chunks_exact(k) {
                if !row.iter().all(|v| v.is_finite()) {
                    self.skipped += 1;
                    continue;
                }
                for (i, &v) in row.iter().enumerate() {
                    cols[i * CHUNK + r] = f64::from(v);
                }
                r += 1;
            }
            if r == 0 {
                continue;
            }
            for i in 0..k {
                let ci = &cols[i * CHUNK..i * CHUNK + r];
                if ci.iter().all(|&v| v == 0.0) {
                    continue;
                }
                for j in i..k {
                    let cj = &cols[j * CHUNK..j * CHUNK + r];
                    self.upper[i * k + j] += dot(ci, cj);
                }
            }
            self.rows += r as u64;
        }
        Ok(())
    }

    /// Adds `other` (the same K): the Hessian of both sets of rows.
    pub fn merge(&mut self, other: &Hessian) -> Result<(), String> {
        if other.k != self.k {
            return Err(format!(
                "cannot add a Hessian of {} features to one of {}",
                other.k, self.k
            ));
        }
        for (a, b) in self.upper.iter_mut().zip(&other.upper) {
            *a += b;
        }
        self.rows += other.rows;
        self.skipped += other.skipped;
        Ok(())
    }

    /// Entry `(i, j)` of the symmetric matrix.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        let (i, j) = if i <= j { (i, j) } else { (j, i) };
        self.upper[i * self.k + j]
    }

    /// The full symmetric row-major `K × K` matrix.
    pub fn dense(&self) -> Vec<f64> {
        let k = self.k;
        let mut d = self.upper.clone();
        for i in 0..k {
            for j in 0..i {
                d[i * k + j] = self.upper[j * k + i];
            }
        }
        d
    }
}

/// Each weight's Hessian from its activations' (`reads`: weight → activation pairs, in any
/// order, repeats allowed): the activation's own when one node reads the weight, shared; the
/// sum when several read it through different activations. A weight whose activations differ
/// in K, or have no Hessian, gets none (its quantizer then says so and rounds to nearest).
pub fn per_weight<'a>(
    reads: impl IntoIterator<Item = (&'a str, &'a str)>,
    by_activation: &BTreeMap<String, Arc<Hessian>>,
) -> BTreeMap<String, Arc<Hessian>> {
    let mut acts_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (weight, act) in reads {
        let acts = acts_of.entry(weight).or_default();
        if !acts.contains(&act) {
            acts.push(act);
        }
    }
    let mut out = BTreeMap::new();
    for (weight, acts) in acts_of {
        let mut hs = acts.iter().filter_map(|a| by_activation.get(*a));
        let Some(first) = hs.next() else {
            continue;
        };
        let mut sum: Option<Hessian> = None;
        let mut ok = true;
        for h in hs {
            ok &= sum
                .get_or_insert_with(|| (**first).clone())
                .merge(h)
                .is_ok();
        }
        let h = match (sum, ok) {
            (None, _) => first.clone(),
            (Some(s), true) => Arc::new(s),
            (Some(_), false) => continue,
        };
        out.insert(weight.to_string(), h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XᵀX computed directly.
    fn direct(x: &[f32], k: usize) -> Vec<f64> {
        let rows = x.len() / k;
        let mut h = vec![0f64; k * k];
        for r in 0..rows {
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += f64::from(x[r * k + i]) * f64::from(x[r * k + j]);
                }
            }
        }
        h
    }

    #[test]
    fn accumulates_xtx_across_chunks_and_calls() {
        let k = 3;
        // 70 rows: more than two chunks, in two calls of different lengths.
        let x: Vec<f32> = (0..70 * k)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.25)
            .collect();
        let mut h = Hessian::new(k);
        h.add_rows(&x[..40 * k]).unwrap();
        h.add_rows(&x[40 * k..]).unwrap();
        assert_eq!(h.rows(), 70);
        let want = direct(&x, k);
        let got = h.dense();
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-9));
        assert_eq!(h.get(2, 0), h.get(0, 2));
    }

    #[test]
    fn merges_and_skips_non_finite_rows() {
        let mut a = Hessian::new(2);
        a.add_rows(&[1.0, 2.0, f32::NAN, 1.0]).unwrap();
        assert_eq!((a.rows(), a.skipped_rows()), (1, 1));
        let mut b = Hessian::new(2);
        b.add_rows(&[3.0, -1.0]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.dense(), vec![10.0, -1.0, -1.0, 5.0]);
        assert_eq!(a.rows(), 2);
        assert!(a.merge(&Hessian::new(3)).is_err());
        assert!(a.add_rows(&[1.0, 2.0, 3.0]).is_err());
    }

    #[test]
    fn from_dense_reads_the_upper_triangle() {
        let h = Hessian::from_dense(2, &[2.0, 1.0, 9.0, 3.0], 4).unwrap();
        assert_eq!(h.dense(), vec![2.0, 1.0, 1.0, 3.0]);
        assert!(Hessian::from_dense(2, &[1.0], 1).is_err());
    }
}
