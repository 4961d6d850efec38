//! The mean magnitude `mean |x_i|` of each input channel of a MatMul over calibration data:
//! what AWQ's scales are powers of. Accumulated in f64 beside the Hessian, with the same rows
//! (rows holding a NaN or infinity are left out, as the Hessian leaves them out).

/// `Σ |x_i|` per channel of the `[rows, K]` activations seen so far.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanAbs {
    sums: Vec<f64>,
    rows: u64,
}

impl MeanAbs {
    /// An empty accumulator for inputs of `k` features.
    pub fn new(k: usize) -> MeanAbs {
        MeanAbs {
            sums: vec![0.0; k],
            rows: 0,
        }
    }

    /// Features per row.
    pub fn k(&self) -> usize {
        self.sums.len()
    }

    /// Rows folded in.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Folds in the rows of `x`, a row-major `[rows, K]` block (the last dim must be K);
    /// rows with a non-finite value are skipped.
    pub fn add_rows(&mut self, x: &[f32]) -> Result<(), String> {
        let k = self.sums.len();
        if k == 0 || !x.len().is_multiple_of(k) {
            return Err(format!(
                "{} values are not rows of {k} features (the MatMul's K)",
                x.len()
            ));
        }
        for row in x.chunks_exact(k) {
            if !row.iter().all(|v| v.is_finite()) {
                continue;
            }
            for (s, &v) in self.sums.iter_mut().zip(row) {
                *s += f64::from(v.abs());
            }
            self.rows += 1;
        }
        Ok(())
    }

    /// Adds `other` (the same K): the statistics of both sets of rows.
    pub fn merge(&mut self, other: &MeanAbs) -> Result<(), String> {
        if other.k() != self.k() {
            return Err(format!(
                "cannot add magnitudes of {} features to ones of {}",
                other.k(),
                self.k()
            ));
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        self.rows += other.rows;
        Ok(())
    }

    /// `mean |x_i|` per channel (zeros when no row was seen).
    pub fn mean(&self) -> Vec<f64> {
        let n = self.rows.max(1) as f64;
        self.sums.iter().map(|s| s / n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_of_magnitudes_skipping_non_finite_rows() {
        let mut m = MeanAbs::new(2);
        m.add_rows(&[1.0, -2.0, -3.0, 4.0, f32::NAN, 100.0])
            .unwrap();
        assert_eq!(m.rows(), 2);
        assert_eq!(m.mean(), vec![2.0, 3.0]);
        let mut other = MeanAbs::new(2);
        other.add_rows(&[-5.0, 0.0]).unwrap();
        m.merge(&other).unwrap();
        assert_eq!(m.mean(), vec![3.0, 2.0]);
        assert!(m.add_rows(&[1.0]).is_err());
        assert!(m.merge(&MeanAbs::new(3)).is_err());
        assert_eq!(MeanAbs::new(3).mean(), vec![0.0; 3]);
    }
}
