//! GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers") on the block-wise grid of [`rtn`](super::rtn): the rows of a
//! `[K, N]` weight (one per input feature) are quantized in order, and the error each row
//! makes is spread over the rows not yet quantized, weighted by the inverse of the layer
//! Hessian `H = XᵀX` of the MatMul's calibration inputs, so that `‖XW − XŴ‖²` — the error
//! of the layer's output on that data — is small rather than `‖W − Ŵ‖²`.
//!
//! As the reference implementation does:
//! - inputs never seen (`H_ii = 0`) are decoupled (`H_ii = 1`) and their weights set to 0;
//! - `damp` × the mean of the diagonal is added to it; the upper Cholesky factor `U` of
//!   `H⁻¹` (`H⁻¹ = UᵀU`, in f64) gives the update: after row `j` is rounded,
//!   `e = (w_j − ŵ_j) / U_jj` and every later row `r` takes `w_r −= U_jr · e`;
//! - updates are applied lazily, one block of rows at a time (the same result, read once);
//! - each block's scale and zero point are those RTN would give the block's *current*
//!   (already updated) weights, computed when the block starts, with RTN's exact rounding
//!   (ONNX Runtime's, in float32), so `H = I` gives RTN's integers;
//! - with `act_order`, rows go in decreasing order of `H_ii`; blocks must stay contiguous
//!   along K for the stored form, so each block's grid is fixed up front from the original
//!   weights (AutoGPTQ's "static groups").
//!
//! With `clip`, each block's range is also shrunk (AWQ's clip search, [`awq`](super::awq)):
//! when a block starts, every ratio from 1.0 down to 0.5 is tried by running the block's own
//! GPTQ steps on a copy, and each column keeps the ratio whose rows add the least to GPTQ's
//! loss `Σ_j ((w_j − ŵ_j) / U_jj)²` (the output error left once the later rows have
//! compensated). Not with act-order: its static grids are fixed before any update, and grids
//! clipped for the original weights measured worse than RTN's once the rows move (a third
//! more error on the test below), so the two are refused together.
//!
//! When the factorization fails the dampening is raised tenfold (up to [`DAMP_TRIES`] times).
//! [`Gptq`], the [`BlockQuantizer`], falls back to RTN for a weight without statistics, and
//! when GPTQ's result is not better than RTN's on the calibration data itself (compared on
//! up to 64 evenly spaced columns), and says so. Columns are independent given `U`, so a
//! large weight's columns are split over rayon's pool.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::awq::{clip_ratios, shrunk_grid};
use super::hessian::Hessian;
use super::linalg::{dot, upper_cholesky_of_inverse};
use super::rtn::{
    quantize_rtn, reciprocal, round_to_grid, BlockParams, BlockQuantized, BlockQuantizer,
};
use super::scale_refit::refit_scales;

/// Factorizations tried, each with ten times the dampening of the last.
pub const DAMP_TRIES: usize = 4;

/// GPTQ's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqOptions {
    /// Added to the Hessian's diagonal, as a fraction of its mean (GPTQ's `percdamp`, 0.01).
    pub damp: f64,
    /// Quantize inputs in decreasing order of `H_ii` (GPTQ's act-order), block grids fixed
    /// from the original weights.
    pub act_order: bool,
    /// Shrink each block's range by the ratio (1.0 down to 0.5) of least output error (AWQ's
    /// clip search under H, see [`awq`](super::awq)), instead of taking RTN's range.
    pub clip: bool,
    /// Once the integers are chosen, refit each column's block scales by least squares under
    /// the (dampened) Hessian ([`scale_refit`](super::scale_refit)).
    pub refit_scales: bool,
}

impl Default for GptqOptions {
    fn default() -> GptqOptions {
        GptqOptions {
            damp: 0.01,
            act_order: false,
            clip: false,
            refit_scales: true,
        }
    }
}

/// A weight [`Gptq`] rounded to nearest instead, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptqFallback {
    /// The weight's name.
    pub weight: String,
    /// Why.
    pub reason: String,
}

/// The weights a calibrated quantizer rounded to nearest instead, noted from any of the
/// threads quantizing in parallel.
#[derive(Debug, Default)]
pub struct FallbackLog(Mutex<Vec<GptqFallback>>);

impl FallbackLog {
    /// Notes that `weight` was rounded to nearest, and why.
    pub fn note(&self, weight: &str, reason: impl Into<String>) {
        if let Ok(mut f) = self.0.lock() {
            f.push(GptqFallback {
                weight: weight.to_string(),
                reason: reason.into(),
            });
        }
    }

    /// The weights noted, in the order met.
    pub fn list(&self) -> Vec<GptqFallback> {
        self.0.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// GPTQ as a [`BlockQuantizer`]: a Hessian per weight name (the sum over the MatMuls that
/// read it); a weight without one is rounded to nearest and listed in [`Gptq::fallbacks`].
#[derive(Debug, Default)]
pub struct Gptq {
    options: GptqOptions,
    hessians: BTreeMap<String, Arc<Hessian>>,
    fallbacks: FallbackLog,
}

impl Gptq {
    /// A quantizer with `options` and no statistics yet.
    pub fn new(options: GptqOptions) -> Gptq {
        Gptq {
            options,
            ..Gptq::default()
        }
    }

    /// Uses `hessian` for the weight named `weight` (shared between weights that read the
    /// same input).
    pub fn insert(&mut self, weight: impl Into<String>, hessian: Arc<Hessian>) {
        self.hessians.insert(weight.into(), hessian);
    }

    /// The Hessian of `weight`, if any.
    pub fn hessian(&self, weight: &str) -> Option<&Hessian> {
        self.hessians.get(weight).map(|h| &**h)
    }

    /// The settings.
    pub fn options(&self) -> GptqOptions {
        self.options
    }

    /// The weights rounded to nearest instead, in the order met.
    pub fn fallbacks(&self) -> Vec<GptqFallback> {
        self.fallbacks.list()
    }
}

impl BlockQuantizer for Gptq {
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        k: usize,
        n: usize,
        params: BlockParams,
    ) -> Result<BlockQuantized, String> {
        let rtn = quantize_rtn(w, k, n, params)?;
        let Some(h) = self.hessians.get(name) else {
            self.fallbacks
                .note(name, "no calibration statistics for its input");
            return Ok(rtn);
        };
        match quantize_gptq(w, k, n, params, h, &self.options) {
            Ok(q) => {
                // Checked on a sample of columns (each column's error is its own): the full
                // sum costs K² N, as much as GPTQ itself.
                let cols = sample_columns(n, CHECKED_COLUMNS);
                let hd = h.dense();
                let gptq_err = error_of_columns(w, &q, &hd, &cols);
                let rtn_err = error_of_columns(w, &rtn, &hd, &cols);
                if gptq_err <= rtn_err {
                    Ok(q)
                } else {
                    self.fallbacks.note(
                        name,
                        format!(
                            "GPTQ's output error on the calibration data ({gptq_err:.4e}) is not below RTN's ({rtn_err:.4e}) on {} of its columns",
                            cols.len()
                        ),
                    );
                    Ok(rtn)
                }
            }
            Err(e) => {
                self.fallbacks.note(name, e);
                Ok(rtn)
            }
        }
    }
}

/// Columns on which [`Gptq`] compares GPTQ's error with RTN's.
const CHECKED_COLUMNS: usize = 64;

/// Up to `count` of the `n` columns, evenly spaced (all of them when fewer).
pub(super) fn sample_columns(n: usize, count: usize) -> Vec<usize> {
    if n <= count {
        (0..n).collect()
    } else {
        (0..count).map(|i| i * n / count).collect()
    }
}

/// `Σ_c (w_c − ŵ_c)ᵀ H (w_c − ŵ_c)` over the columns `cols`, `hd` the dense `H`.
pub(super) fn error_of_columns(w: &[f32], q: &BlockQuantized, hd: &[f64], cols: &[usize]) -> f64 {
    let (k, n) = (q.k, q.n);
    let deq = q.dequantized();
    let mut d = vec![0f64; k];
    cols.iter()
        .map(|&c| {
            for (r, x) in d.iter_mut().enumerate() {
                *x = f64::from(w[r * n + c]) - f64::from(deq[r * n + c]);
            }
            (0..k)
                .map(|i| d[i] * dot(&hd[i * k..(i + 1) * k], &d))
                .sum::<f64>()
        })
        .sum()
}

/// Quantizes the row-major `[k, n]` matrix `w` block-wise along k with GPTQ, given the
/// Hessian `h` (`XᵀX`) of the inputs it multiplies; see the module doc.
pub fn quantize_gptq(
    w: &[f32],
    k: usize,
    n: usize,
    params: BlockParams,
    h: &Hessian,
    options: &GptqOptions,
) -> Result<BlockQuantized, String> {
    if w.len() != k * n {
        return Err(format!("{} values cannot be a [{k}, {n}] matrix", w.len()));
    }
    let bs = params.block_size;
    if bs == 0 {
        return Err("block size 0".into());
    }
    if h.k() != k {
        return Err(format!(
            "its calibration Hessian is {0} × {0} but the weight's K is {k}",
            h.k()
        ));
    }
    if h.rows() == 0 {
        return Err("no calibration rows reached its input".into());
    }
    if !w.iter().all(|v| v.is_finite()) {
        return Err("the weight holds non-finite values".into());
    }
    if options.clip && options.act_order {
        return Err("GPTQ's clip search needs K order (not act-order)".into());
    }
    let mut hd = h.dense();
    let mut dead = vec![false; k];
    for (i, d) in dead.iter_mut().enumerate() {
        if hd[i * k + i] == 0.0 {
            hd[i * k + i] = 1.0;
            *d = true;
        }
    }
    let mean = (0..k).map(|i| hd[i * k + i]).sum::<f64>() / k as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        return Err(format!("the Hessian's mean diagonal is {mean}"));
    }
    let perm: Vec<usize> = if options.act_order {
        let mut p: Vec<usize> = (0..k).collect();
        // Stable: equal diagonals keep their order along K.
        p.sort_by(|&a, &b| hd[b * k + b].total_cmp(&hd[a * k + a]));
        p
    } else {
        (0..k).collect()
    };
    let damp = options.damp.max(0.0) * mean;
    let u = factor(&hd, &perm, k, damp, mean)?;
    // The refit minimizes the loss GPTQ did: its Hessian, dampened as for the factorization.
    let refit_hessian = options.refit_scales.then(|| {
        for i in 0..k {
            hd[i * k + i] += damp;
        }
        hd
    });

    // Columns are independent given U: they are split over threads (the result does not
    // depend on how).
    let job = Columns {
        w,
        k,
        n,
        dead: &dead,
        perm: &perm,
        u: &u,
        params,
        act_order: options.act_order,
        clip: options.clip,
    };
    let parts = in_column_chunks(k, n, |cols| job.run(cols));
    let (qmin, _) = params.qrange();
    let nb = k.div_ceil(bs);
    let mut codes = vec![0u8; k * n];
    let mut scales = vec![0f32; nb * n];
    let mut zero_points = vec![0u8; nb * n];
    for (cols, part) in parts {
        let nc = cols.len();
        for r in 0..k {
            codes[r * n + cols.start..r * n + cols.end]
                .copy_from_slice(&part.codes[r * nc..(r + 1) * nc]);
        }
        for b in 0..nb {
            let row = b * n + cols.start..b * n + cols.end;
            scales[row.clone()].copy_from_slice(&part.grid.scales[b * nc..(b + 1) * nc]);
            for (z, &g) in zero_points[row]
                .iter_mut()
                .zip(&part.grid.zps[b * nc..(b + 1) * nc])
            {
                *z = (g - qmin) as u8;
            }
        }
    }
    let mut q = BlockQuantized {
        params,
        k,
        n,
        codes,
        scales,
        zero_points,
    };
    if let Some(hd) = refit_hessian {
        refit_scales(w, &mut q, &hd);
    }
    Ok(q)
}

/// Column chunks of at least this many columns, when split.
const MIN_CHUNK_COLUMNS: usize = 64;
/// Below this many multiply-adds (`K² N`) a weight is done on the calling thread.
const MIN_PARALLEL_WORK: usize = 1 << 24;

/// Runs `f` on chunks of the `n` columns, in parallel on rayon's pool when the work (`K² N`)
/// is worth it (nested in the pass's own parallelism over weights, rayon shares the cores);
/// the results in column order.
pub(super) fn in_column_chunks<T: Send>(
    k: usize,
    n: usize,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<(std::ops::Range<usize>, T)> {
    let chunks = if k.saturating_mul(k).saturating_mul(n) < MIN_PARALLEL_WORK {
        1
    } else {
        rayon::current_num_threads()
            .min(n / MIN_CHUNK_COLUMNS)
            .max(1)
    };
    (0..chunks)
        .into_par_iter()
        .map(|t| {
            let cols = t * n / chunks..(t + 1) * n / chunks;
            (cols.clone(), f(cols))
        })
        .collect()
}

/// What every column chunk of one GPTQ run shares.
struct Columns<'a> {
    w: &'a [f32],
    k: usize,
    n: usize,
    dead: &'a [bool],
    perm: &'a [usize],
    u: &'a [f64],
    params: BlockParams,
    act_order: bool,
    clip: bool,
}

/// The integers and grids of a chunk of columns.
struct Part {
    /// `[k, chunk]` codes, rows in K order.
    codes: Vec<u8>,
    grid: Grid,
}

impl Columns<'_> {
    /// GPTQ on the columns `cols` (see the module doc).
    fn run(&self, cols: std::ops::Range<usize>) -> Part {
        let (k, n, nc) = (self.k, self.n, cols.len());
        let (u, perm, params) = (self.u, self.perm, self.params);
        let bs = params.block_size;
        let (qmin, qmax) = params.qrange();
        let mut grid = Grid::new(k.div_ceil(bs), nc);
        // Rows in processing order, dead inputs' weights zeroed.
        let mut wp = vec![0f64; k * nc];
        for (j, &r) in perm.iter().enumerate() {
            if !self.dead[r] {
                let src = &self.w[r * n + cols.start..r * n + cols.end];
                for (x, &v) in wp[j * nc..(j + 1) * nc].iter_mut().zip(src) {
                    *x = f64::from(v);
                }
            }
        }
        if self.act_order {
            // Static grids from the original weights of each block (rows in K order).
            let mut at = vec![0usize; k];
            for (j, &r) in perm.iter().enumerate() {
                at[r] = j;
            }
            for b in 0..grid.blocks {
                let rows = b * bs..((b + 1) * bs).min(k);
                grid.set(b, params, rows.map(|r| &wp[at[r] * nc..(at[r] + 1) * nc]));
            }
        }
        let mut codes = vec![0u8; k * nc];
        let mut err = vec![0f64; bs * nc];
        for start in (0..k).step_by(bs) {
            let end = (start + bs).min(k);
            if !self.act_order {
                // The batch is block start / bs; its rows have every earlier update.
                grid.set(
                    start / bs,
                    params,
                    (start..end).map(|r| &wp[r * nc..(r + 1) * nc]),
                );
                if self.clip {
                    grid.clip(start / bs, params, &wp[start * nc..end * nc], start, u, k);
                }
            }
            for j in start..end {
                let orig = perm[j];
                let b = orig / bs;
                let d = u[j * k + j];
                let (head, below) = wp.split_at_mut((j + 1) * nc);
                let row = &head[j * nc..];
                let e = &mut err[(j - start) * nc..(j - start + 1) * nc];
                for c in 0..nc {
                    let m = b * nc + c;
                    let x = row[c];
                    let q = round_to_grid(x as f32, grid.recips[m], grid.zps[m], (qmin, qmax));
                    codes[orig * nc + c] = (q - qmin) as u8;
                    let deq = f64::from((q - grid.zps[m]) as f32 * grid.scales[m]);
                    e[c] = (x - deq) / d;
                }
                // Within the batch, at once.
                for r in j + 1..end {
                    let coef = u[j * k + r];
                    if coef != 0.0 {
                        let target = &mut below[(r - j - 1) * nc..(r - j) * nc];
                        for (t, &ec) in target.iter_mut().zip(e.iter()) {
                            *t -= coef * ec;
                        }
                    }
                }
            }
            // After the batch, the rows after it in one pass.
            for r in end..k {
                let target = &mut wp[r * nc..(r + 1) * nc];
                for j in start..end {
                    let coef = u[j * k + r];
                    if coef != 0.0 {
                        let e = &err[(j - start) * nc..(j - start + 1) * nc];
                        for (t, &ec) in target.iter_mut().zip(e) {
                            *t -= coef * ec;
                        }
                    }
                }
            }
        }
        Part { codes, grid }
    }
}

/// Scale, zero point and reciprocal scale of every block and column (`[blocks, n]`).
struct Grid {
    blocks: usize,
    n: usize,
    scales: Vec<f32>,
    zps: Vec<i32>,
    recips: Vec<f32>,
}

impl Grid {
    fn new(blocks: usize, n: usize) -> Grid {
        Grid {
            blocks,
            n,
            scales: vec![0.0; blocks * n],
            zps: vec![0; blocks * n],
            recips: vec![0.0; blocks * n],
        }
    }

    /// Block `b`'s grid from its rows' current values, as RTN computes it (float32 range).
    fn set<'a>(&mut self, b: usize, params: BlockParams, rows: impl Iterator<Item = &'a [f64]>) {
        let n = self.n;
        let (mut lo, mut hi) = (vec![f32::MAX; n], vec![f32::MIN; n]);
        for row in rows {
            for (c, &v) in row.iter().enumerate() {
                let v = v as f32;
                if v.is_finite() {
                    lo[c] = lo[c].min(v);
                    hi[c] = hi[c].max(v);
                }
            }
        }
        for c in 0..n {
            let (s, z) = params.scale_zero_point(lo[c], hi[c]);
            self.scales[b * n + c] = s;
            self.zps[b * n + c] = z;
            self.recips[b * n + c] = reciprocal(s);
        }
    }
}

impl Grid {
    /// Shrinks block `b`'s grid (already set from `rows`, its `[m, n]` rows starting at row
    /// `start`) per column to the ratio whose GPTQ steps over the block add the least loss
    /// `Σ ((x − ŵ) / U_jj)²` (see the module doc); RTN's range wins a tie.
    fn clip(
        &mut self,
        b: usize,
        params: BlockParams,
        rows: &[f64],
        start: usize,
        u: &[f64],
        k: usize,
    ) {
        let n = self.n;
        let m = rows.len() / n.max(1);
        let range = params.qrange();
        let (mut lo, mut hi) = (vec![f32::MAX; n], vec![f32::MIN; n]);
        for row in rows.chunks_exact(n) {
            for (c, &v) in row.iter().enumerate() {
                let v = v as f32;
                if v.is_finite() {
                    lo[c] = lo[c].min(v);
                    hi[c] = hi[c].max(v);
                }
            }
        }
        let mut best = vec![f64::INFINITY; n];
        let mut keep = vec![1f32; n];
        let mut tmp = vec![0f64; m * n];
        let mut e = vec![0f64; n];
        for ratio in clip_ratios() {
            let cells: Vec<(f32, i32, f32)> = (0..n)
                .map(|c| {
                    let (s, z) = shrunk_grid(params, lo[c], hi[c], ratio);
                    (s, z, reciprocal(s))
                })
                .collect();
            tmp.copy_from_slice(rows);
            let mut loss = vec![0f64; n];
            for jj in 0..m {
                let j = start + jj;
                let d = u[j * k + j];
                let (head, below) = tmp.split_at_mut((jj + 1) * n);
                let row = &head[jj * n..];
                for c in 0..n {
                    let (s, z, r) = cells[c];
                    let q = round_to_grid(row[c] as f32, r, z, range);
                    e[c] = (row[c] - f64::from((q - z) as f32 * s)) / d;
                    loss[c] += e[c] * e[c];
                }
                for rr in jj + 1..m {
                    let coef = u[j * k + start + rr];
                    if coef != 0.0 {
                        let target = &mut below[(rr - jj - 1) * n..(rr - jj) * n];
                        for (t, &ec) in target.iter_mut().zip(&e) {
                            *t -= coef * ec;
                        }
                    }
                }
            }
            for c in 0..n {
                if loss[c] < best[c] {
                    best[c] = loss[c];
                    keep[c] = ratio;
                }
            }
        }
        for c in 0..n {
            let (s, z) = shrunk_grid(params, lo[c], hi[c], keep[c]);
            self.scales[b * n + c] = s;
            self.zps[b * n + c] = z;
            self.recips[b * n + c] = reciprocal(s);
        }
    }
}

/// `U` (see the module doc) of `H` permuted by `perm` with `damp` on the diagonal, raising
/// the dampening tenfold (at least to 0.1% of the mean diagonal) when the factorization fails.
fn factor(hd: &[f64], perm: &[usize], k: usize, damp: f64, mean: f64) -> Result<Vec<f64>, String> {
    let mut damp = damp;
    for _ in 0..DAMP_TRIES {
        let mut hp = vec![0f64; k * k];
        for (a, &pa) in perm.iter().enumerate() {
            for (b, &pb) in perm.iter().enumerate() {
                hp[a * k + b] = hd[pa * k + pb];
            }
            hp[a * k + a] += damp;
        }
        if let Ok(u) = upper_cholesky_of_inverse(hp, k) {
            return Ok(u);
        }
        damp = (damp * 10.0).max(mean * 1e-3);
    }
    Err(format!(
        "the calibration Hessian is not positive definite even with dampening {:.3} × its mean diagonal",
        damp / 10.0 / mean
    ))
}

/// `Σ_c (w_c − ŵ_c)ᵀ H (w_c − ŵ_c)` over the columns of the `[k, n]` weight: the squared
/// error of the layer's output over the calibration rows `h` was built from.
pub fn calibration_error(w: &[f32], q: &BlockQuantized, h: &Hessian) -> f64 {
    let (k, n) = (q.k, q.n);
    if w.len() != k * n || h.k() != k {
        return f64::NAN;
    }
    let deq = q.dequantized();
    let hd = h.dense();
    let parts = in_column_chunks(k, n, |cols| {
        let nc = cols.len();
        let mut d = vec![0f64; k * nc];
        for r in 0..k {
            for (c, x) in d[r * nc..(r + 1) * nc].iter_mut().enumerate() {
                let i = r * n + cols.start + c;
                *x = f64::from(w[i]) - f64::from(deq[i]);
            }
        }
        // H is symmetric: the diagonal once, each pair above it twice.
        let mut total = 0.0;
        for i in 0..k {
            let di = &d[i * nc..(i + 1) * nc];
            total += hd[i * k + i] * dot(di, di);
            for j in i + 1..k {
                let hij = hd[i * k + j];
                if hij != 0.0 {
                    total += 2.0 * hij * dot(di, &d[j * nc..(j + 1) * nc]);
                }
            }
        }
        total
    });
    parts.into_iter().map(|(_, t)| t).sum()
}

#[cfg(test)]
mod tests {
    use super::super::linalg::upper_cholesky_of_inverse;
    use super::super::rtn::Bits;
    use super::*;

    /// A seeded generator of values in [-1, 1).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }

        fn vec(&mut self, len: usize) -> Vec<f32> {
            (0..len).map(|_| self.next()).collect()
        }
    }

    fn params(bits: Bits, block_size: usize, symmetric: bool) -> BlockParams {
        BlockParams {
            bits,
            block_size,
            symmetric,
        }
    }

    /// Rows of `k` correlated features: a few shared factors plus a little noise, with
    /// feature scales that differ (what makes GPTQ beat rounding).
    fn correlated_rows(rows: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut g = Lcg(seed);
        let mix = g.vec(4 * k);
        let mut x = Vec::with_capacity(rows * k);
        for _ in 0..rows {
            let f = g.vec(4);
            for i in 0..k {
                let shared: f32 = (0..4).map(|p| f[p] * mix[p * k + i]).sum();
                let scale = 1.0 + (i % 5) as f32;
                x.push(scale * (shared + 0.1 * g.next()));
            }
        }
        x
    }

    fn hessian_of(x: &[f32], k: usize) -> Hessian {
        let mut h = Hessian::new(k);
        h.add_rows(x).unwrap();
        h
    }

    fn identity(k: usize, scale: f64) -> Hessian {
        let d: Vec<f64> = (0..k * k)
            .map(|i| if i % (k + 1) == 0 { scale } else { 0.0 })
            .collect();
        Hessian::from_dense(k, &d, 1).unwrap()
    }

    #[test]
    fn identity_hessian_gives_rtn() {
        // No correlation between inputs: nothing to compensate, so GPTQ is RTN exactly
        // (K = 70 leaves a short last block).
        let (k, n) = (70, 6);
        let w = Lcg(3).vec(k * n);
        for p in [
            params(Bits::Four, 32, true),
            params(Bits::Four, 32, false),
            params(Bits::Eight, 64, true),
            params(Bits::Four, 128, false),
        ] {
            for act_order in [false, true] {
                let o = GptqOptions {
                    act_order,
                    refit_scales: false,
                    ..Default::default()
                };
                let g = quantize_gptq(&w, k, n, p, &identity(k, 2.5), &o).unwrap();
                assert_eq!(g, quantize_rtn(&w, k, n, p).unwrap(), "{p:?} {act_order}");
            }
        }
    }

    #[test]
    fn beats_rtn_on_correlated_inputs() {
        let (k, n) = (64, 16);
        let w = Lcg(5).vec(k * n);
        let h = hessian_of(&correlated_rows(512, k, 9), k);
        for p in [params(Bits::Four, 32, true), params(Bits::Four, 64, false)] {
            let rtn = calibration_error(&w, &quantize_rtn(&w, k, n, p).unwrap(), &h);
            for act_order in [false, true] {
                let o = GptqOptions {
                    act_order,
                    ..Default::default()
                };
                let g = quantize_gptq(&w, k, n, p, &h, &o).unwrap();
                let e = calibration_error(&w, &g, &h);
                // Measured: 7 to 14 times lower in K order, 80 to 100 times with act-order
                // (the feature scales differ fivefold); a quarter is demanded.
                assert!(
                    e < 0.25 * rtn,
                    "{p:?} act_order {act_order}: {e} vs RTN {rtn}"
                );
            }
        }
    }

    /// GPTQ without lazy batches: every row's error applied to all later rows at once, each
    /// block's grid from its rows as they are when the block starts.
    fn reference(w: &[f32], k: usize, n: usize, p: BlockParams, h: &Hessian) -> Vec<u8> {
        let mut hd = h.dense();
        let mean = (0..k).map(|i| hd[i * k + i]).sum::<f64>() / k as f64;
        for i in 0..k {
            hd[i * k + i] += 0.01 * mean;
        }
        let u = upper_cholesky_of_inverse(hd.clone(), k).unwrap();
        let mut w: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
        let (qmin, qmax) = p.qrange();
        let bs = p.block_size;
        let mut codes = vec![0u8; k * n];
        let mut grid = vec![(0f32, 0i32); n];
        for j in 0..k {
            if j % bs == 0 {
                for (c, g) in grid.iter_mut().enumerate() {
                    let col = (j..(j + bs).min(k)).map(|r| w[r * n + c] as f32);
                    let lo = col.clone().fold(f32::MAX, f32::min);
                    let hi = col.fold(f32::MIN, f32::max);
                    *g = p.scale_zero_point(lo, hi);
                }
            }
            let mut e = vec![0f64; n];
            for c in 0..n {
                let (s, z) = grid[c];
                let q = round_to_grid(w[j * n + c] as f32, reciprocal(s), z, (qmin, qmax));
                codes[j * n + c] = (q - qmin) as u8;
                e[c] = (w[j * n + c] - f64::from((q - z) as f32 * s)) / u[j * k + j];
            }
            for r in j + 1..k {
                for c in 0..n {
                    w[r * n + c] -= u[j * k + r] * e[c];
                }
            }
        }
        codes
    }

    #[test]
    fn lazy_batches_change_nothing() {
        let (k, n) = (96, 5);
        let w = Lcg(11).vec(k * n);
        let h = hessian_of(&correlated_rows(300, k, 2), k);
        for p in [params(Bits::Four, 32, true), params(Bits::Eight, 64, false)] {
            let g = quantize_gptq(&w, k, n, p, &h, &GptqOptions::default()).unwrap();
            assert_eq!(g.codes, reference(&w, k, n, p, &h), "{p:?}");
        }
    }

    #[test]
    fn column_chunks_change_nothing() {
        // Big enough (K² N ≥ MIN_PARALLEL_WORK) to be split over the cores.
        let (k, n) = (256, 256);
        assert!(k * k * n >= MIN_PARALLEL_WORK);
        let w = Lcg(29).vec(k * n);
        let h = hessian_of(&correlated_rows(400, k, 8), k);
        let p = params(Bits::Four, 128, true);
        let g = quantize_gptq(&w, k, n, p, &h, &GptqOptions::default()).unwrap();
        assert_eq!(g.codes, reference(&w, k, n, p, &h));
        // The error, summed per chunk, is the error.
        let rtn = quantize_rtn(&w, k, n, p).unwrap();
        let direct: f64 = {
            let (deq, hd) = (rtn.dequantized(), h.dense());
            let d: Vec<f64> = w.iter().zip(&deq).map(|(a, b)| f64::from(a - b)).collect();
            (0..n)
                .map(|c| {
                    (0..k)
                        .flat_map(|i| (0..k).map(move |j| (i, j)))
                        .map(|(i, j)| d[i * n + c] * hd[i * k + j] * d[j * n + c])
                        .sum::<f64>()
                })
                .sum()
        };
        let got = calibration_error(&w, &rtn, &h);
        assert!((got - direct).abs() <= 1e-9 * direct, "{got} vs {direct}");
    }

    #[test]
    fn clipping_on_an_identity_hessian_is_the_clip_search() {
        // No correlation: GPTQ propagates nothing, and each block's ratio minimizes the same
        // squared error as the clip search does (the dampening scales H uniformly).
        let (k, n) = (64, 5);
        let w: Vec<f32> = Lcg(31).vec(k * n).iter().map(|v| v * v * v).collect();
        let h = identity(k, 1.0);
        // Without the refit, which moves the scales the clip search chose.
        let o = GptqOptions {
            clip: true,
            refit_scales: false,
            ..Default::default()
        };
        for p in [params(Bits::Four, 32, true), params(Bits::Four, 32, false)] {
            let g = quantize_gptq(&w, k, n, p, &h, &o).unwrap();
            let c = crate::quant::blockwise::awq::quantize_clipped(&w, k, n, p, &h).unwrap();
            assert_eq!(g, c.quantized, "{p:?}");
            assert_ne!(g, quantize_rtn(&w, k, n, p).unwrap());
        }
    }

    #[test]
    fn clipping_lowers_gptqs_error_here() {
        let (k, n) = (96, 16);
        let w: Vec<f32> = Lcg(37).vec(k * n).iter().map(|v| v * v * v).collect();
        let h = hessian_of(&correlated_rows(400, k, 12), k);
        let p = params(Bits::Four, 32, true);
        let plain = GptqOptions::default();
        let clip = GptqOptions {
            clip: true,
            ..plain
        };
        let e0 = calibration_error(&w, &quantize_gptq(&w, k, n, p, &h, &plain).unwrap(), &h);
        let e1 = calibration_error(&w, &quantize_gptq(&w, k, n, p, &h, &clip).unwrap(), &h);
        // Measured: 0.79 of GPTQ's error.
        assert!(e1 < 0.9 * e0, "{e1} vs {e0}");
        let both = GptqOptions {
            act_order: true,
            ..clip
        };
        assert!(quantize_gptq(&w, k, n, p, &h, &both)
            .unwrap_err()
            .contains("K order"));
    }

    #[test]
    fn act_order_keeps_blocks_contiguous_with_grids_from_the_original_weights() {
        let (k, n) = (64, 4);
        let w = Lcg(13).vec(k * n);
        let h = hessian_of(&correlated_rows(256, k, 4), k);
        let p = params(Bits::Four, 32, true);
        let o = GptqOptions {
            act_order: true,
            refit_scales: false,
            ..Default::default()
        };
        let g = quantize_gptq(&w, k, n, p, &h, &o).unwrap();
        let rtn = quantize_rtn(&w, k, n, p).unwrap();
        assert_eq!(g.scales, rtn.scales);
        assert_ne!(g.codes, rtn.codes);
    }

    #[test]
    fn dead_inputs_get_zero_weights() {
        // Input 1 is never nonzero in the calibration rows.
        let (k, n) = (4, 3);
        let x: Vec<f32> = (0..40)
            .flat_map(|r| {
                let r = r as f32;
                [r.sin(), 0.0, r.cos(), (r * 0.5).sin()]
            })
            .collect();
        let h = hessian_of(&x, k);
        assert_eq!(h.get(1, 1), 0.0);
        let w = Lcg(17).vec(k * n);
        let g = quantize_gptq(
            &w,
            k,
            n,
            params(Bits::Four, 32, false),
            &h,
            &Default::default(),
        )
        .unwrap();
        let deq = g.dequantized();
        assert!(deq.iter().all(|v| v.is_finite()));
        assert_eq!(&deq[n..2 * n], &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn refusals_and_fallbacks() {
        let p = params(Bits::Four, 32, true);
        let o = GptqOptions::default();
        let w = Lcg(19).vec(8);
        let h2 = identity(2, 1.0);
        assert!(quantize_gptq(&w, 4, 2, p, &h2, &o)
            .unwrap_err()
            .contains("K is 4"));
        assert!(quantize_gptq(&w, 4, 2, p, &Hessian::new(4), &o)
            .unwrap_err()
            .contains("no calibration rows"));
        let mut bad = w.clone();
        bad[3] = f32::NAN;
        assert!(quantize_gptq(&bad, 4, 2, p, &identity(4, 1.0), &o)
            .unwrap_err()
            .contains("non-finite"));
        // Strongly indefinite: no dampening tried makes it positive definite.
        let indefinite = Hessian::from_dense(2, &[1.0, 100.0, 100.0, 1.0], 1).unwrap();
        assert!(quantize_gptq(&w[..4], 2, 2, p, &indefinite, &o)
            .unwrap_err()
            .contains("not positive definite"));

        // The quantizer rounds to nearest instead, and says why.
        let mut q = Gptq::new(o);
        q.insert("w", Arc::new(indefinite));
        let rtn = quantize_rtn(&w, 4, 2, p).unwrap();
        assert_eq!(q.quantize("other", &w, 4, 2, p).unwrap(), rtn);
        assert_eq!(
            q.quantize("w", &w[..4], 2, 2, p).unwrap(),
            quantize_rtn(&w[..4], 2, 2, p).unwrap()
        );
        let f = q.fallbacks();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].weight, "other");
        assert!(f[0].reason.contains("no calibration statistics"));
        assert!(f[1].reason.contains("not positive definite"));
        assert!(q.quantize("w", &w, 3, 2, p).is_err());
    }

    #[test]
    fn the_quantizer_uses_gptq_when_it_helps() {
        let (k, n) = (64, 8);
        let w = Lcg(23).vec(k * n);
        let h = hessian_of(&correlated_rows(256, k, 6), k);
        let p = params(Bits::Four, 32, true);
        let mut q = Gptq::new(GptqOptions::default());
        q.insert("w", Arc::new(h.clone()));
        let got = q.quantize("w", &w, k, n, p).unwrap();
        assert_eq!(
            got,
            quantize_gptq(&w, k, n, p, &h, &GptqOptions::default()).unwrap()
        );
        assert!(q.fallbacks().is_empty());
    }
}
