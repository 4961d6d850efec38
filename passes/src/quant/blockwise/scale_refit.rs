//! Least-squares block scales for integers already chosen: once GPTQ has fixed a column's
//! integers, its output error `(w − ŵ)ᵀ H (w − ŵ)` is a quadratic in that column's block
//! scales (`ŵ_r = s_b · (q_r − z_b)` for the rows `r` of block `b`), so the best scales solve
//! a `blocks × blocks` linear system. GPTQ sets each scale from the block's range before its
//! rows are rounded and compensated, and the integers it then picks are rarely best served
//! by that scale (AutoRound and OmniQuant tune scales by gradient descent; for one layer's
//! quadratic loss the optimum is closed-form). A column keeps its old scales unless the new
//! ones are finite, of the same sign, and lower the error as measured with the float32
//! scales actually stored.

use rayon::prelude::*;

use super::linalg::{dot, upper_cholesky_of_inverse};
use super::rtn::BlockQuantized;

/// Replaces the scales of every column of `q` (chosen for the row-major `[k, n]` weight `w`)
/// by the least-squares ones under the dense `k × k` `hd` where that lowers the column's
/// error; returns how many columns changed.
pub(super) fn refit_scales(w: &[f32], q: &mut BlockQuantized, hd: &[f64]) -> usize {
    let (k, n, bs) = (q.k, q.n, q.params.block_size);
    if bs == 0 || w.len() != k * n || hd.len() != k * k || n == 0 {
        return 0;
    }
    let nb = q.n_blocks();
    let fitted: Vec<Option<Vec<f32>>> = (0..n)
        .into_par_iter()
        .map(|c| refit_column(w, q, hd, c, nb))
        .collect();
    let mut changed = 0;
    for (c, scales) in fitted.into_iter().enumerate() {
        if let Some(s) = scales {
            for (b, v) in s.into_iter().enumerate() {
                q.scales[b * n + c] = v;
            }
            changed += 1;
        }
    }
    changed
}

/// The refitted scales of column `c` if they lower its error (see the module doc).
fn refit_column(
    w: &[f32],
    q: &BlockQuantized,
    hd: &[f64],
    c: usize,
    nb: usize,
) -> Option<Vec<f32>> {
    let (k, n, bs) = (q.k, q.n, q.params.block_size);
    let target: Vec<f64> = (0..k).map(|r| f64::from(w[r * n + c])).collect();
    // d_b: the block's integers less its zero point, zero outside the block.
    let levels: Vec<f64> = (0..k)
        .map(|r| f64::from(q.value(r, c) - q.zero_point(r / bs, c)))
        .collect();
    // v_b = H d_b, one K-vector per block.
    let mut v = vec![0f64; nb * k];
    for b in 0..nb {
        let rows = b * bs..((b + 1) * bs).min(k);
        let vb = &mut v[b * k..(b + 1) * k];
        for (i, x) in vb.iter_mut().enumerate() {
            let h = &hd[i * k..(i + 1) * k];
            *x = dot(&h[rows.clone()], &levels[rows.clone()]);
        }
    }
    // G s = r with G_ab = d_aᵀ H d_b and r_a = d_aᵀ H w.
    let mut g = vec![0f64; nb * nb];
    let mut rhs = vec![0f64; nb];
    for a in 0..nb {
        let va = &v[a * k..(a + 1) * k];
        rhs[a] = dot(va, &target);
        for b in 0..nb {
            let rows = b * bs..((b + 1) * bs).min(k);
            g[a * nb + b] = dot(&va[rows.clone()], &levels[rows]);
        }
    }
    // The error, less the constant wᵀHw, is sᵀGs − 2sᵀr: kept before G and r are adjusted
    // for solving, so comparing scales costs blocks², not K².
    let (g0, r0) = (g.clone(), rhs.clone());
    let ridge = 1e-12
        * (0..nb)
            .map(|a| g[a * nb + a])
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
    for a in 0..nb {
        if g[a * nb + a] == 0.0 {
            // A block of zero levels: its scale does not matter; keep it.
            g[a * nb + a] = 1.0;
            rhs[a] = f64::from(q.scales[a * n + c]);
        } else {
            g[a * nb + a] += ridge;
        }
    }
    let u = upper_cholesky_of_inverse(g, nb).ok()?;
    // s = G⁻¹ r = Uᵀ U r.
    let ur: Vec<f64> = (0..nb)
        .map(|i| (i..nb).map(|j| u[i * nb + j] * rhs[j]).sum())
        .collect();
    let fitted: Vec<f32> = (0..nb)
        .map(|i| (0..=i).map(|j| u[j * nb + i] * ur[j]).sum::<f64>() as f32)
        .collect();
    let old: Vec<f32> = (0..nb).map(|b| q.scales[b * n + c]).collect();
    let same_sign = fitted
        .iter()
        .zip(&old)
        .all(|(s, o)| s.is_finite() && *s != 0.0 && (s.signum() == o.signum() || *o == 0.0));
    if !same_sign {
        return None;
    }
    let error = |scales: &[f32]| -> f64 {
        let s: Vec<f64> = scales.iter().map(|&x| f64::from(x)).collect();
        (0..nb)
            .map(|a| s[a] * (dot(&g0[a * nb..(a + 1) * nb], &s) - 2.0 * r0[a]))
            .sum()
    };
    (error(&fitted) < error(&old)).then_some(fitted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blockwise::rtn::{quantize_rtn, Bits, BlockParams};

    fn params() -> BlockParams {
        BlockParams {
            bits: Bits::Four,
            block_size: 4,
            symmetric: true,
        }
    }

    fn identity(k: usize) -> Vec<f64> {
        let mut h = vec![0f64; k * k];
        for i in 0..k {
            h[i * k + i] = 1.0;
        }
        h
    }

    #[test]
    fn identity_hessian_gives_each_blocks_own_least_squares_scale() {
        // One column, two blocks: s_b = Σ w q / Σ q² within each block.
        let w = [0.9f32, -0.35, 0.2, 0.61, 1.7, 0.1, -0.44, 0.05];
        let mut q = quantize_rtn(&w, 8, 1, params()).unwrap();
        let before = q.scales.clone();
        assert_eq!(refit_scales(&w, &mut q, &identity(8)), 1);
        for (b, old) in before.iter().enumerate() {
            let (mut wq, mut qq) = (0f64, 0f64);
            for (r, &x) in w.iter().enumerate().skip(b * 4).take(4) {
                let l = f64::from(q.value(r, 0) - q.zero_point(b, 0));
                wq += f64::from(x) * l;
                qq += l * l;
            }
            let expect = (wq / qq) as f32;
            assert!(
                (q.scales[b] - expect).abs() <= 1e-6 * expect.abs(),
                "{b}: {q:?}"
            );
            assert_ne!(q.scales[b], *old);
        }
    }

    #[test]
    fn correlated_hessian_lowers_the_error_and_keeps_the_integers() {
        let (k, n) = (8, 3);
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.13)
            .collect();
        // H = AᵀA for a fixed A with correlated columns.
        let a: Vec<f64> = (0..16 * k)
            .map(|i| ((i * 7 % 5) as f64 - 2.0) + if i % k == 0 { 3.0 } else { 0.0 })
            .collect();
        let mut hd = vec![0f64; k * k];
        for row in a.chunks_exact(k) {
            for i in 0..k {
                for j in 0..k {
                    hd[i * k + j] += row[i] * row[j];
                }
            }
        }
        let mut q = quantize_rtn(&w, k, n, params()).unwrap();
        let codes = q.codes.clone();
        let err = |q: &BlockQuantized| -> f64 {
            let deq = q.dequantized();
            (0..n)
                .map(|c| {
                    let d: Vec<f64> = (0..k)
                        .map(|r| f64::from(w[r * n + c]) - f64::from(deq[r * n + c]))
                        .collect();
                    (0..k)
                        .map(|i| d[i] * dot(&hd[i * k..(i + 1) * k], &d))
                        .sum::<f64>()
                })
                .sum()
        };
        let before = err(&q);
        let changed = refit_scales(&w, &mut q, &hd);
        assert!(changed > 0);
        assert_eq!(q.codes, codes);
        assert!(err(&q) < before, "{} !< {before}", err(&q));
    }

    #[test]
    fn zero_blocks_and_mismatched_shapes_change_nothing() {
        let w = [0f32; 8];
        let mut q = quantize_rtn(&w, 8, 1, params()).unwrap();
        let before = q.scales.clone();
        assert_eq!(refit_scales(&w, &mut q, &identity(8)), 0);
        assert_eq!(q.scales, before);
        assert_eq!(refit_scales(&w[..4], &mut q, &identity(8)), 0);
    }
}
