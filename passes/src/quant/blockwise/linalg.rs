//! The dense linear algebra GPTQ and AWQ need, in f64 on row-major `n × n` matrices: Cholesky
//! factorization, the inverse of a triangular factor, from them the upper Cholesky factor of a
//! matrix's inverse, and the quadratic form `dᵀ H d` of many columns at once; loops read rows
//! contiguously and dot products keep four partial sums, so they vectorize.

/// `Σ a_i b_i` over the shorter of the two, with four partial sums.
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `d_cᵀ H d_c` of every column `c` of the row-major `[k, nc]` matrix `d`, `hd` the dense
/// symmetric `k × k` H (the diagonal once, each pair above it twice: `k² nc / 2` multiply-adds).
pub(super) fn column_forms(hd: &[f64], d: &[f64], k: usize, nc: usize) -> Vec<f64> {
    let mut out = vec![0f64; nc];
    let mut acc = vec![0f64; nc];
    for i in 0..k {
        acc.fill(0.0);
        for j in i + 1..k {
            let hij = hd[i * k + j];
            if hij != 0.0 {
                for (a, &x) in acc.iter_mut().zip(&d[j * nc..(j + 1) * nc]) {
                    *a += hij * x;
                }
            }
        }
        let hii = hd[i * k + i];
        for ((o, &di), &a) in out.iter_mut().zip(&d[i * nc..(i + 1) * nc]).zip(&acc) {
            *o += di * (hii * di + 2.0 * a);
        }
    }
    out
}

/// Why a factorization failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct NotPositiveDefinite {
    /// The pivot that was not positive.
    pub index: usize,
}

/// The lower Cholesky factor `L` of the symmetric `a` (`a = L Lᵀ`, only the lower triangle of
/// `a` read), written over `a` (each entry is read before it is replaced), the upper triangle
/// zeroed; fails on a pivot that is not positive and finite.
fn cholesky_in_place(a: &mut [f64], n: usize) -> Result<(), NotPositiveDefinite> {
    for i in 0..n {
        for j in 0..=i {
            let (done, row) = a.split_at_mut(i * n);
            let row = &mut row[..n];
            let prev = if j < i {
                &done[j * n..j * n + j]
            } else {
                &row[..j]
            };
            let v = row[j] - dot(&row[..j], prev);
            if i == j {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(NotPositiveDefinite { index: i });
                }
                row[i] = v.sqrt();
            } else {
                row[j] = v / done[j * n + j];
            }
        }
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    Ok(())
}

/// The inverse of the lower-triangular `l` with a nonzero diagonal (lower-triangular too).
pub(super) fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0f64; n * n];
    // Row by row (contiguous access): row i of L⁻¹ is (e_i − Σ_{p<i} L[i][p] · row p) / L[i][i].
    for i in 0..n {
        let (done, rest) = inv.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for p in 0..i {
            let c = l[i * n + p];
            if c != 0.0 {
                for (x, &m) in row[..=p].iter_mut().zip(&done[p * n..p * n + p + 1]) {
                    *x -= c * m;
                }
            }
        }
        let d = l[i * n + i];
        for x in &mut row[..=i] {
            *x /= d;
        }
    }
    inv
}

/// The upper-triangular `U` with `a⁻¹ = Uᵀ U`, for a symmetric positive definite `a` (what
/// GPTQ propagates errors with: row `i` of `U` over its diagonal is how the error of input
/// `i` spreads to the inputs after it).
///
/// One factorization: with `J` the order reversal, `J a J = L Lᵀ` gives `a = Ũ Ũᵀ` for the
/// upper-triangular `Ũ = J L J`, so `a⁻¹ = Ũ⁻ᵀ Ũ⁻¹` and `U = Ũ⁻¹ = J L⁻¹ J` (the Cholesky
/// factor is unique, so this is the factor GPTQ computes as `chol(chol_inverse(a))ᵀ`).
///
/// Reversing the row-major storage of an `n × n` matrix is `J · J` on it, so this takes `a` by
/// value and needs one more `n × n` buffer (the inverse).
pub(super) fn upper_cholesky_of_inverse(
    mut a: Vec<f64>,
    n: usize,
) -> Result<Vec<f64>, NotPositiveDefinite> {
    a.reverse();
    cholesky_in_place(&mut a, n).map_err(|e| NotPositiveDefinite {
        index: n - 1 - e.index,
    })?;
    let mut u = invert_lower(&a, n);
    drop(a);
    u.reverse();
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cholesky_lower(a: &[f64], n: usize) -> Result<Vec<f64>, NotPositiveDefinite> {
        let mut l = a.to_vec();
        cholesky_in_place(&mut l, n)?;
        Ok(l)
    }

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                c[i * n + j] = (0..n).map(|p| a[i * n + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        let mut t = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                t[j * n + i] = a[i * n + j];
            }
        }
        t
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    /// A symmetric positive definite 4 × 4 matrix: Bᵀ B + I.
    fn spd() -> Vec<f64> {
        let b = [
            1.0, 2.0, 0.5, -1.0, //
            0.0, 1.5, -0.3, 2.0, //
            0.7, 0.1, 3.0, 0.2, //
            -0.4, 0.9, 0.0, 1.1,
        ];
        let mut a = matmul(&transpose(&b, 4), &b, 4);
        for i in 0..4 {
            a[i * 4 + i] += 1.0;
        }
        a
    }

    #[test]
    fn cholesky_reconstructs() {
        let a = spd();
        let l = cholesky_lower(&a, 4).unwrap();
        assert!(close(&matmul(&l, &transpose(&l, 4), 4), &a, 1e-12));
        // Upper triangle of L is zero.
        assert!((0..4).all(|i| (i + 1..4).all(|j| l[i * 4 + j] == 0.0)));
    }

    #[test]
    fn lower_inverse_is_an_inverse() {
        let l = cholesky_lower(&spd(), 4).unwrap();
        let m = invert_lower(&l, 4);
        let id: Vec<f64> = (0..16)
            .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
            .collect();
        assert!(close(&matmul(&l, &m, 4), &id, 1e-12));
    }

    #[test]
    fn upper_factor_of_the_inverse() {
        let a = spd();
        let u = upper_cholesky_of_inverse(a.clone(), 4).unwrap();
        // Uᵀ U a = I, and U is upper-triangular with a positive diagonal.
        let inv = matmul(&transpose(&u, 4), &u, 4);
        let id: Vec<f64> = (0..16)
            .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
            .collect();
        assert!(close(&matmul(&inv, &a, 4), &id, 1e-10));
        assert!((0..4).all(|i| u[i * 4 + i] > 0.0 && (0..i).all(|j| u[i * 4 + j] == 0.0)));
    }

    #[test]
    fn column_forms_are_dt_h_d() {
        let h = spd();
        // Three columns of a [4, 3] matrix.
        let d = [
            1.0, 0.0, -2.0, //
            0.5, 1.0, 0.0, //
            -1.0, 2.0, 0.25, //
            0.0, -0.5, 1.0,
        ];
        let got = column_forms(&h, &d, 4, 3);
        for c in 0..3 {
            let want: f64 = (0..4)
                .flat_map(|i| (0..4).map(move |j| (i, j)))
                .map(|(i, j)| d[i * 3 + c] * h[i * 4 + j] * d[j * 3 + c])
                .sum();
            assert!((got[c] - want).abs() < 1e-9 * want.abs().max(1.0), "{c}");
        }
    }

    #[test]
    fn dot_of_any_length() {
        for len in 0..11 {
            let a: Vec<f64> = (0..len).map(|i| i as f64 + 0.5).collect();
            let b: Vec<f64> = (0..len).map(|i| 2.0 - i as f64).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - want).abs() < 1e-12, "{len}");
        }
    }

    #[test]
    fn refuses_what_is_not_positive_definite() {
        // Eigenvalues 3 and -1.
        let a = [1.0, 2.0, 2.0, 1.0];
        assert_eq!(cholesky_lower(&a, 2), Err(NotPositiveDefinite { index: 1 }));
        assert!(cholesky_lower(&[0.0], 1).is_err());
        assert!(cholesky_lower(&[f64::NAN], 1).is_err());
    }
}
