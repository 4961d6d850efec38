//! AWQ's clipping search, weighted by the layer Hessian: each block's range (per column) is
//! shrunk by a ratio from 1.0 down to [`CLIP_MIN`], trading the clipped extremes for a finer
//! step on the rest, and the ratio kept is the one with the least output error
//! `Σ_c Δw_cᵀ H Δw_c` on the calibration inputs — not the least weight error, which is what
//! a plain MSE clip search would minimize.
//!
//! The error couples blocks through H's off-diagonal terms, so the search is a coordinate
//! descent: blocks in turn, each with the others' current errors fixed (their cross term with
//! the block computed once per block), [`SWEEPS`] times over the weight. It starts from RTN's
//! grid (ratio 1.0, RTN's integers exactly) and only accepts a ratio that lowers the error, so
//! the result is never worse than RTN on the calibration data. Columns are independent and
//! are split over rayon's pool.
//!
//! A shrunk block's grid is `scale_zero_point(r·lo, r·hi)` of its range `[lo, hi]`, so ratio
//! 1.0 is RTN's grid and a symmetric block keeps the sign convention of [`rtn`](super::super::rtn).

use super::super::gptq::in_column_chunks;
use super::super::hessian::Hessian;
use super::super::linalg::column_forms;
use super::super::rtn::{reciprocal, round_to_grid, BlockParams, BlockQuantized};

/// The smallest ratio tried (AWQ's `max_shrink`).
pub const CLIP_MIN: f32 = 0.5;
/// Ratios tried, evenly spaced from 1.0 down to [`CLIP_MIN`].
pub const CLIP_STEPS: usize = 21;
/// Passes of the coordinate descent over the blocks.
pub const SWEEPS: usize = 2;

/// The ratios tried, 1.0 first.
pub fn clip_ratios() -> Vec<f32> {
    (0..CLIP_STEPS)
        .map(|i| 1.0 - (1.0 - CLIP_MIN) * i as f32 / (CLIP_STEPS - 1) as f32)
        .collect()
}

/// A weight quantized with clipped ranges, and what the search did.
#[derive(Debug, Clone, PartialEq)]
pub struct Clipped {
    /// The integers, scales and zero points.
    pub quantized: BlockQuantized,
    /// Blocks (× columns) whose range was shrunk.
    pub clipped: usize,
    /// Blocks (× columns) in all.
    pub blocks: usize,
    /// The mean ratio kept over every block.
    pub mean_ratio: f64,
    /// `Σ_c Δw_cᵀ H Δw_c` of RTN's integers.
    pub rtn_error: f64,
    /// The same of the result.
    pub error: f64,
}

/// Quantizes the row-major `[k, n]` weight `w` block-wise along k, each block's range shrunk
/// by the ratio of least calibration error under the Hessian `h` (see the module doc).
pub fn quantize_clipped(
    w: &[f32],
    k: usize,
    n: usize,
    params: BlockParams,
    h: &Hessian,
) -> Result<Clipped, String> {
    if h.k() != k {
        return Err(format!(
            "its calibration Hessian is {0} × {0} but the weight's K is {k}",
            h.k()
        ));
    }
    clip_dense(w, k, n, params, &h.dense())
}

/// [`quantize_clipped`] with the dense `k × k` Hessian `hd`.
fn clip_dense(
    w: &[f32],
    k: usize,
    n: usize,
    params: BlockParams,
    hd: &[f64],
) -> Result<Clipped, String> {
    if w.len() != k * n {
        return Err(format!("{} values cannot be a [{k}, {n}] matrix", w.len()));
    }
    if params.block_size == 0 {
        return Err("block size 0".into());
    }
    if hd.len() != k * k {
        return Err(format!("a Hessian of {} values is not {k} × {k}", hd.len()));
    }
    if !w.iter().all(|v| v.is_finite()) {
        return Err("the weight holds non-finite values".into());
    }
    let ratios = clip_ratios();
    let parts = in_column_chunks(k, n, |cols| search(w, k, n, cols, params, hd, &ratios));
    let nb = k.div_ceil(params.block_size);
    let mut q = BlockQuantized {
        params,
        k,
        n,
        codes: vec![0u8; k * n],
        scales: vec![0f32; nb * n],
        zero_points: vec![0u8; nb * n],
    };
    let (mut clipped, mut ratio_sum, mut rtn_error, mut error) = (0, 0f64, 0f64, 0f64);
    for (cols, p) in parts {
        let nc = cols.len();
        for r in 0..k {
            q.codes[r * n + cols.start..r * n + cols.end]
                .copy_from_slice(&p.codes[r * nc..(r + 1) * nc]);
        }
        for b in 0..nb {
            let row = b * n + cols.start..b * n + cols.end;
            q.scales[row.clone()].copy_from_slice(&p.scales[b * nc..(b + 1) * nc]);
            q.zero_points[row].copy_from_slice(&p.zero_points[b * nc..(b + 1) * nc]);
        }
        clipped += p.chosen.iter().filter(|&&i| i != 0).count();
        ratio_sum += p.chosen.iter().map(|&i| f64::from(ratios[i])).sum::<f64>();
        rtn_error += p.rtn_error;
        error += p.error;
    }
    Ok(Clipped {
        quantized: q,
        clipped,
        blocks: nb * n,
        mean_ratio: ratio_sum / (nb * n).max(1) as f64,
        rtn_error,
        error,
    })
}

/// The search's result on a chunk of columns (`[k, nc]` codes, `[blocks, nc]` grids).
struct Part {
    codes: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<u8>,
    /// The ratio index kept per block and column.
    chosen: Vec<usize>,
    rtn_error: f64,
    error: f64,
}

/// One block's grid for one column.
#[derive(Clone, Copy)]
struct Cell {
    scale: f32,
    zp: i32,
}

/// Scale and zero point of a block whose finite values span `[lo, hi]`, the range shrunk by
/// `ratio` (RTN's grid at 1.0).
pub(in super::super) fn shrunk_grid(
    params: BlockParams,
    lo: f32,
    hi: f32,
    ratio: f32,
) -> (f32, i32) {
    if lo > hi || ratio == 1.0 {
        params.scale_zero_point(lo, hi)
    } else {
        params.scale_zero_point(lo * ratio, hi * ratio)
    }
}

impl Cell {
    fn of(params: BlockParams, lo: f32, hi: f32, ratio: f32) -> Cell {
        let (scale, zp) = shrunk_grid(params, lo, hi, ratio);
        Cell { scale, zp }
    }

    /// The integer of `x` and the value it stands for.
    fn round(self, x: f32, range: (i32, i32)) -> (i32, f32) {
        let q = round_to_grid(x, reciprocal(self.scale), self.zp, range);
        (q, (q - self.zp) as f32 * self.scale)
    }
}

/// The coordinate descent on columns `cols` of `w`.
fn search(
    w: &[f32],
    k: usize,
    n: usize,
    cols: std::ops::Range<usize>,
    params: BlockParams,
    hd: &[f64],
    ratios: &[f32],
) -> Part {
    let nc = cols.len();
    let bs = params.block_size;
    let nb = k.div_ceil(bs);
    let range = params.qrange();
    let wc: Vec<f32> = (0..k)
        .flat_map(|r| w[r * n + cols.start..r * n + cols.end].iter().copied())
        .collect();
    // Each block's range per column, as RTN takes it.
    let (mut lo, mut hi) = (vec![f32::MAX; nb * nc], vec![f32::MIN; nb * nc]);
    for r in 0..k {
        let b = r / bs;
        for c in 0..nc {
            let v = wc[r * nc + c];
            lo[b * nc + c] = lo[b * nc + c].min(v);
            hi[b * nc + c] = hi[b * nc + c].max(v);
        }
    }
    let mut chosen = vec![0usize; nb * nc];
    let mut codes = vec![0u8; k * nc];
    // The current error w − ŵ, row-major [k, nc].
    let mut d = vec![0f64; k * nc];
    let set = |b: usize, c: usize, ratio: f32, codes: &mut [u8], d: &mut [f64]| {
        let cell = Cell::of(params, lo[b * nc + c], hi[b * nc + c], ratio);
        for r in b * bs..((b + 1) * bs).min(k) {
            let x = wc[r * nc + c];
            let (q, deq) = cell.round(x, range);
            codes[r * nc + c] = (q - range.0) as u8;
            d[r * nc + c] = f64::from(x) - f64::from(deq);
        }
    };
    for b in 0..nb {
        for c in 0..nc {
            set(b, c, ratios[0], &mut codes, &mut d);
        }
    }
    let rtn_error: f64 = column_forms(hd, &d, k, nc).iter().sum();
    let mut cross = vec![0f64; bs * nc];
    let mut block = vec![0f64; bs * nc];
    let mut hb = vec![0f64; bs * bs];
    for _ in 0..SWEEPS {
        for b in 0..nb {
            let rows = b * bs..((b + 1) * bs).min(k);
            let m = rows.len();
            // cross[i] = Σ_{j outside the block} H[rows.start + i, j] · d[j].
            cross[..m * nc].fill(0.0);
            for (i, r) in rows.clone().enumerate() {
                let acc = &mut cross[i * nc..(i + 1) * nc];
                for j in (0..k).filter(|j| !rows.contains(j)) {
                    let h = hd[r * k + j];
                    if h != 0.0 {
                        for (a, &x) in acc.iter_mut().zip(&d[j * nc..(j + 1) * nc]) {
                            *a += h * x;
                        }
                    }
                }
            }
            for (i, r) in rows.clone().enumerate() {
                for (j, s) in rows.clone().enumerate() {
                    hb[i * m + j] = hd[r * k + s];
                }
            }
            let mut best = vec![f64::INFINITY; nc];
            let mut pick = vec![0usize; nc];
            // The current choice first: a tie keeps it.
            let current: Vec<usize> = (0..nc).map(|c| chosen[b * nc + c]).collect();
            let order = std::iter::once(None).chain((0..ratios.len()).map(Some));
            for t in order {
                for c in 0..nc {
                    let idx = t.unwrap_or(current[c]);
                    let cell = Cell::of(params, lo[b * nc + c], hi[b * nc + c], ratios[idx]);
                    for (i, r) in rows.clone().enumerate() {
                        let x = wc[r * nc + c];
                        block[i * nc + c] = f64::from(x) - f64::from(cell.round(x, range).1);
                    }
                }
                let forms = column_forms(&hb[..m * m], &block[..m * nc], m, nc);
                for c in 0..nc {
                    let idx = t.unwrap_or(current[c]);
                    let e = forms[c]
                        + 2.0
                            * (0..m)
                                .map(|i| block[i * nc + c] * cross[i * nc + c])
                                .sum::<f64>();
                    if e < best[c] {
                        best[c] = e;
                        pick[c] = idx;
                    }
                }
            }
            for c in 0..nc {
                chosen[b * nc + c] = pick[c];
                set(b, c, ratios[pick[c]], &mut codes, &mut d);
            }
        }
    }
    let error: f64 = column_forms(hd, &d, k, nc).iter().sum();
    let mut scales = vec![0f32; nb * nc];
    let mut zero_points = vec![0u8; nb * nc];
    for b in 0..nb {
        for c in 0..nc {
            let cell = Cell::of(
                params,
                lo[b * nc + c],
                hi[b * nc + c],
                ratios[chosen[b * nc + c]],
            );
            scales[b * nc + c] = cell.scale;
            zero_points[b * nc + c] = (cell.zp - range.0) as u8;
        }
    }
    Part {
        codes,
        scales,
        zero_points,
        chosen,
        rtn_error,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::gptq::calibration_error;
    use super::super::super::rtn::{quantize_rtn, Bits};
    use super::*;
    use crate::quant::blockwise::test_support::values;

    /// Heavy-tailed weights (a cube of uniforms): clipping their extremes pays.
    fn heavy(len: usize, seed: u64) -> Vec<f32> {
        values(len, seed).into_iter().map(|v| v * v * v).collect()
    }

    /// `XᵀX` of rows with channel scales that differ, and some correlation.
    fn hessian(k: usize, rows: usize, seed: u64) -> Hessian {
        let x = values(rows * k, seed);
        let mut shaped = Vec::with_capacity(rows * k);
        for r in 0..rows {
            for i in 0..k {
                let next = x[r * k + (i + 1) % k];
                shaped.push((1.0 + (i % 3) as f32) * (x[r * k + i] + 0.5 * next));
            }
        }
        let mut h = Hessian::new(k);
        h.add_rows(&shaped).unwrap();
        h
    }

    fn params(symmetric: bool, block_size: usize) -> BlockParams {
        BlockParams {
            bits: Bits::Four,
            block_size,
            symmetric,
        }
    }

    #[test]
    fn ratios_run_from_one_to_the_minimum() {
        let r = clip_ratios();
        assert_eq!(r.len(), CLIP_STEPS);
        assert_eq!(r[0], 1.0);
        assert!((r[CLIP_STEPS - 1] - CLIP_MIN).abs() < 1e-6);
        assert!(r.windows(2).all(|p| p[0] > p[1]));
    }

    #[test]
    fn never_increases_the_weighted_error_and_lowers_it_here() {
        let (k, n) = (70, 9);
        let h = hessian(k, 300, 4);
        for symmetric in [true, false] {
            for bs in [32, 64] {
                let p = params(symmetric, bs);
                let w = heavy(k * n, 7 + bs as u64);
                let c = quantize_clipped(&w, k, n, p, &h).unwrap();
                let rtn = quantize_rtn(&w, k, n, p).unwrap();
                let want_rtn = calibration_error(&w, &rtn, &h);
                let got = calibration_error(&w, &c.quantized, &h);
                assert!((c.rtn_error - want_rtn).abs() <= 1e-9 * want_rtn);
                assert!((c.error - got).abs() <= 1e-9 * got, "{} vs {got}", c.error);
                assert!(got <= want_rtn, "{symmetric} {bs}: {got} > RTN {want_rtn}");
                // Heavy tails: clipping pays on most blocks (measured: 15 to 35 % less).
                assert!(
                    got < 0.9 * want_rtn,
                    "{symmetric} {bs}: {got} vs {want_rtn}"
                );
                assert!(c.clipped > 0 && c.clipped <= c.blocks);
                assert!(c.mean_ratio < 1.0 && c.mean_ratio >= f64::from(CLIP_MIN));
            }
        }
    }

    #[test]
    fn a_block_left_unclipped_has_rtn_integers() {
        // Evenly spread weights on a diagonal Hessian: RTN's grid is already the best for most
        // blocks; every block the search kept at 1.0 holds RTN's integers and grid.
        let (k, n) = (64, 6);
        let w = values(k * n, 3);
        let mut h = Hessian::new(k);
        let eye: Vec<f32> = (0..k * k)
            .map(|i| if i % (k + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        h.add_rows(&eye).unwrap();
        let p = params(true, 32);
        let c = quantize_clipped(&w, k, n, p, &h).unwrap();
        let rtn = quantize_rtn(&w, k, n, p).unwrap();
        let mut kept = 0;
        for b in 0..2 {
            for col in 0..n {
                if c.quantized.scales[b * n + col] == rtn.scales[b * n + col] {
                    kept += 1;
                    for r in b * 32..(b + 1) * 32 {
                        assert_eq!(c.quantized.value(r, col), rtn.value(r, col));
                    }
                }
            }
        }
        assert_eq!(kept, c.blocks - c.clipped);
    }

    #[test]
    fn refusals() {
        let p = params(true, 32);
        let h = Hessian::new(4);
        assert!(quantize_clipped(&[0.0; 8], 4, 2, p, &Hessian::new(3))
            .unwrap_err()
            .contains("K is 4"));
        assert!(quantize_clipped(&[0.0; 7], 4, 2, p, &h).is_err());
        let mut bad = vec![0.5f32; 8];
        bad[1] = f32::INFINITY;
        assert!(quantize_clipped(&bad, 4, 2, p, &h)
            .unwrap_err()
            .contains("non-finite"));
    }
}
