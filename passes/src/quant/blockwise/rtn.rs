//! Block-wise round-to-nearest (RTN): a `[K, N]` float matrix is cut into blocks of
//! `block_size` consecutive rows (along K, the MatMul's reduction axis) per column; each block
//! gets its own scale (and, asymmetric, zero point) from its own min/max.
//!
//! The arithmetic is ONNX Runtime's (`onnxruntime/core/mlas/lib/q4_dq.cpp`, which
//! `matmul_nbits_quantizer` calls), in float32 as there:
//! - symmetric: the block's value of largest magnitude `m` (the minimum on a tie) gives
//!   `scale = -m / 2^(bits-1)`, so `m` itself lands exactly on the most negative integer
//!   (-8 for 4 bits, -128 for 8) and all `2^bits` levels are used; the scale is negative
//!   when `m` is positive. Zero point 0 (signed integers).
//! - asymmetric: `[min(lo, 0), max(hi, 0)]` over `2^bits - 1` steps, zero point
//!   `round(-min / scale)` clamped to the unsigned range.
//! - `q = clamp(round(x * (1 / scale)) + zero_point)`, `round` half away from zero (C's
//!   `roundf`), the reciprocal in float32. ORT's MatMulNBits path adds the zero point before
//!   rounding instead; the two differ only on exact ties of negative values.
//!
//! A last block shorter than `block_size` (K not a multiple) takes its range from the rows it
//! has, as ORT's does (its zero padding cannot change an asymmetric range, which includes 0,
//! nor a symmetric one). Non-finite values are left out of the ranges and quantize to the
//! zero point.

/// Bits per stored weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bits {
    /// int4 / uint4.
    Four,
    /// int8 / uint8.
    Eight,
}

impl Bits {
    /// The number of bits.
    pub fn count(self) -> u32 {
        match self {
            Bits::Four => 4,
            Bits::Eight => 8,
        }
    }
}

/// How a matrix is cut and rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockParams {
    /// Bits per weight.
    pub bits: Bits,
    /// Rows (along K) that share one scale.
    pub block_size: usize,
    /// Signed integers with zero point 0, else unsigned with a zero point per block.
    pub symmetric: bool,
}

impl BlockParams {
    /// The integer range: signed `[-2^(b-1), 2^(b-1) - 1]` when symmetric, else `[0, 2^b - 1]`.
    pub fn qrange(&self) -> (i32, i32) {
        let b = self.bits.count();
        if self.symmetric {
            (-(1 << (b - 1)), (1 << (b - 1)) - 1)
        } else {
            (0, (1 << b) - 1)
        }
    }

    /// Scale and zero point (in the integer range) of a block whose finite values span
    /// `[lo, hi]` (`lo > hi`: no finite value).
    pub fn scale_zero_point(&self, lo: f32, hi: f32) -> (f32, i32) {
        let (lo, hi) = if lo > hi { (0.0, 0.0) } else { (lo, hi) };
        let (qmin, qmax) = self.qrange();
        if self.symmetric {
            let extreme = if hi.abs() > lo.abs() { hi } else { lo };
            let scale = -extreme / (-qmin) as f32;
            // -0.0 (an all-zero block) is written as 0.
            (if scale == 0.0 { 0.0 } else { scale }, 0)
        } else {
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            let scale = (hi - lo) / (qmax - qmin) as f32;
            let zp = if scale != 0.0 {
                qmin as f32 - lo / scale
            } else {
                lo
            };
            let zp = if zp < qmin as f32 {
                qmin
            } else if zp > qmax as f32 {
                qmax
            } else {
                zp.round() as i32
            };
            (scale, zp)
        }
    }
}

/// A `[K, N]` matrix quantized block-wise along K.
///
/// Integers are kept as unsigned codes `q - qmin` (0..2^bits), the form MatMulNBits stores;
/// the QDQ form turns them back into signed integers when symmetric.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockQuantized {
    /// How it was cut and rounded.
    pub params: BlockParams,
    /// Rows (the reduction dim).
    pub k: usize,
    /// Columns (outputs).
    pub n: usize,
    /// Row-major `[K, N]` codes.
    pub codes: Vec<u8>,
    /// Row-major `[n_blocks, N]` scales.
    pub scales: Vec<f32>,
    /// Row-major `[n_blocks, N]` zero points as codes (`2^(bits-1)` everywhere when
    /// symmetric).
    pub zero_points: Vec<u8>,
}

impl BlockQuantized {
    /// Blocks per column: `ceil(K / block_size)`.
    pub fn n_blocks(&self) -> usize {
        self.k.div_ceil(self.params.block_size.max(1))
    }

    /// The integer at row `r`, column `c` (signed when symmetric).
    pub fn value(&self, r: usize, c: usize) -> i32 {
        self.codes[r * self.n + c] as i32 + self.params.qrange().0
    }

    /// The zero point of block `b`, column `c`, in the integer range.
    pub fn zero_point(&self, b: usize, c: usize) -> i32 {
        self.zero_points[b * self.n + c] as i32 + self.params.qrange().0
    }

    /// The real values the integers stand for, row-major `[K, N]`.
    pub fn dequantized(&self) -> Vec<f32> {
        let bs = self.params.block_size.max(1);
        (0..self.k * self.n)
            .map(|i| {
                let (r, c) = (i / self.n, i % self.n);
                let m = (r / bs) * self.n + c;
                (self.codes[i] as i32 - self.zero_points[m] as i32) as f32 * self.scales[m]
            })
            .collect()
    }
}

/// Chooses the integers of one weight: [`Rtn`], or an accuracy-aware method with the
/// calibration statistics it needs ([`Gptq`](super::Gptq)).
pub trait BlockQuantizer {
    /// Quantizes `w` (row-major `[k, n]`, float32) of the weight named `name`.
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        k: usize,
        n: usize,
        params: BlockParams,
    ) -> Result<BlockQuantized, String>;
}

/// Round to nearest, block by block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rtn;

impl BlockQuantizer for Rtn {
    fn quantize(
        &self,
        _name: &str,
        w: &[f32],
        k: usize,
        n: usize,
        params: BlockParams,
    ) -> Result<BlockQuantized, String> {
        quantize_rtn(w, k, n, params)
    }
}

/// `y.round() as i32` (half away from zero, saturating, NaN to 0) without the libm call
/// `round` compiles to on baseline x86-64, so the loop over a weight vectorizes: truncate,
/// then step away from zero when the dropped fraction is at least one half. The fraction is
/// exact (`y` and its truncation are within a factor of two, or the truncation is 0).
#[inline]
pub fn round_half_away(y: f32) -> i32 {
    let t = y as i32;
    let frac = y - t as f32;
    if frac >= 0.5 {
        t.saturating_add(1)
    } else if frac <= -0.5 {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// The integer for `x` on the grid of reciprocal scale `recip` and zero point `zp`:
/// `clamp(round(x * recip) + zp)`, as ONNX Runtime rounds (half away from zero, float32).
pub(super) fn round_to_grid(x: f32, recip: f32, zp: i32, (qmin, qmax): (i32, i32)) -> i32 {
    // `as` saturates and maps NaN to 0, so a NaN lands on the zero point.
    round_half_away(x * recip)
        .saturating_add(zp)
        .clamp(qmin, qmax)
}

/// The reciprocal of `scale` that [`round_to_grid`] multiplies by (0 for a zero scale).
pub(super) fn reciprocal(scale: f32) -> f32 {
    if scale != 0.0 {
        1.0 / scale
    } else {
        0.0
    }
}

/// Quantizes the row-major `[k, n]` matrix `w` block-wise along k by rounding to nearest.
pub fn quantize_rtn(
    w: &[f32],
    k: usize,
    n: usize,
    params: BlockParams,
) -> Result<BlockQuantized, String> {
    if w.len() != k * n {
        return Err(format!("{} values cannot be a [{k}, {n}] matrix", w.len()));
    }
    if params.block_size == 0 {
        return Err("block size 0".into());
    }
    let (qmin, qmax) = params.qrange();
    let bs = params.block_size;
    let nb = k.div_ceil(bs);
    let mut codes = vec![0u8; k * n];
    let mut scales = vec![0f32; nb * n];
    let mut zero_points = vec![0u8; nb * n];
    let (mut lo, mut hi) = (vec![0f32; n], vec![0f32; n]);
    let mut recip = vec![0f32; n];
    let mut zps = vec![0i32; n];
    for b in 0..nb {
        let rows = b * bs..((b + 1) * bs).min(k);
        lo.fill(f32::MAX);
        hi.fill(f32::MIN);
        for r in rows.clone() {
            for (c, &v) in w[r * n..(r + 1) * n].iter().enumerate() {
                if v.is_finite() {
                    lo[c] = lo[c].min(v);
                    hi[c] = hi[c].max(v);
                }
            }
        }
        for c in 0..n {
            let (s, z) = params.scale_zero_point(lo[c], hi[c]);
            scales[b * n + c] = s;
            zero_points[b * n + c] = (z - qmin) as u8;
            recip[c] = reciprocal(s);
            zps[c] = z;
        }
        for r in rows {
            let row = &w[r * n..(r + 1) * n];
            let out = &mut codes[r * n..(r + 1) * n];
            for (c, (&x, code)) in row.iter().zip(out.iter_mut()).enumerate() {
                let q = round_half_away(x * recip[c])
                    .saturating_add(zps[c])
                    .clamp(qmin, qmax);
                *code = (q - qmin) as u8;
            }
        }
    }
    Ok(BlockQuantized {
        params,
        k,
        n,
        codes,
        scales,
        zero_points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(bits: Bits, block_size: usize, symmetric: bool) -> BlockParams {
        BlockParams {
            bits,
            block_size,
            symmetric,
        }
    }

    #[test]
    fn symmetric_int4_puts_the_extreme_on_minus_eight() {
        // One column, K = 4, one block: largest magnitude 2.0 (positive) → scale -0.25.
        let w = [2.0f32, -1.0, 0.3, 1.75];
        let q = quantize_rtn(&w, 4, 1, params(Bits::Four, 32, true)).unwrap();
        assert_eq!(q.scales, vec![-0.25]);
        // 2/-0.25 = -8; -1/-0.25 = 4; 0.3*-4 = -1.2 → -1; 1.75*-4 = -7.
        let v: Vec<i32> = (0..4).map(|r| q.value(r, 0)).collect();
        assert_eq!(v, vec![-8, 4, -1, -7]);
        assert_eq!(q.zero_point(0, 0), 0);
        assert_eq!(q.dequantized(), vec![2.0, -1.0, 0.25, 1.75]);
        // Largest magnitude negative → positive scale; a tie takes the minimum.
        let q = quantize_rtn(&[-2.0, 2.0], 2, 1, params(Bits::Four, 32, true)).unwrap();
        assert_eq!(q.scales, vec![0.25]);
        assert_eq!((q.value(0, 0), q.value(1, 0)), (-8, 7)); // 8 saturates to 7
    }

    #[test]
    fn round_half_away_is_round_as_i32() {
        let mut values = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -2.5,
            0.49999997,
            -0.49999997,
            1.4999999,
            8388607.5,
            8388608.0,
            -8388609.0,
            2147483520.0,
            2147483648.0,
            -2147483904.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1e-45,
        ];
        // A sweep of quarter steps and of the floats around every half up to 40.
        for i in -400..400 {
            let x = i as f32 * 0.25;
            values.extend([x, x.next_up(), x.next_down()]);
        }
        for x in values {
            assert_eq!(round_half_away(x), x.round() as i32, "{x:e}");
        }
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        // scale -0.25 from the 2.0; 0.625 * -4 = -2.5 → -3, -0.375 * -4 = 1.5 → 2.
        let q = quantize_rtn(&[2.0, 0.625, -0.375], 3, 1, params(Bits::Four, 32, true)).unwrap();
        assert_eq!((q.value(1, 0), q.value(2, 0)), (-3, 2));
    }

    #[test]
    fn asymmetric_uint4_range_includes_zero() {
        // [0.5, 3.5] widens to [0, 3.5]: scale 3.5/15, zero point 0.
        let q = quantize_rtn(&[0.5, 3.5], 2, 1, params(Bits::Four, 32, false)).unwrap();
        assert!((q.scales[0] - 3.5 / 15.0).abs() < 1e-7);
        assert_eq!(q.zero_point(0, 0), 0);
        assert_eq!((q.value(0, 0), q.value(1, 0)), (2, 15)); // 0.5/0.2333 = 2.14
                                                             // [-1, 2]: scale 0.2, zero point round(5) = 5.
        let q = quantize_rtn(&[-1.0, 2.0, 0.0], 3, 1, params(Bits::Four, 32, false)).unwrap();
        assert!((q.scales[0] - 0.2).abs() < 1e-7);
        assert_eq!(q.zero_point(0, 0), 5);
        let v: Vec<i32> = (0..3).map(|r| q.value(r, 0)).collect();
        assert_eq!(v, vec![0, 15, 5]);
    }

    #[test]
    fn blocks_run_along_k_per_column_and_pad_the_last() {
        // K = 5, N = 2, block 2 → 3 blocks, the last with one row.
        let w = [
            1.0f32, -8.0, //
            -2.0, 4.0, //
            0.5, 0.0, //
            0.25, 1.0, //
            -16.0, 3.0,
        ];
        let q = quantize_rtn(&w, 5, 2, params(Bits::Four, 2, true)).unwrap();
        assert_eq!(q.n_blocks(), 3);
        assert_eq!(q.scales, vec![0.25, 1.0, -0.0625, -0.125, 2.0, -0.375]);
        assert_eq!(q.value(0, 0), 4); // 1 / 0.25
        assert_eq!(q.value(4, 0), -8); // -16 / 2
        assert_eq!(q.value(4, 1), -8); // 3 / -0.375
    }

    #[test]
    fn int8_symmetric_and_asymmetric() {
        let q = quantize_rtn(&[1.28, -0.5], 2, 1, params(Bits::Eight, 32, true)).unwrap();
        assert!((q.scales[0] + 0.01).abs() < 1e-8);
        assert_eq!((q.value(0, 0), q.value(1, 0)), (-128, 50));
        let q = quantize_rtn(&[-1.0, 1.55], 2, 1, params(Bits::Eight, 32, false)).unwrap();
        assert!((q.scales[0] - 0.01).abs() < 1e-7);
        assert_eq!(q.zero_point(0, 0), 100);
        assert_eq!((q.value(0, 0), q.value(1, 0)), (0, 255));
    }

    #[test]
    fn degenerate_blocks_and_non_finite_values() {
        let q = quantize_rtn(&[0.0, 0.0], 2, 1, params(Bits::Four, 32, true)).unwrap();
        assert_eq!(q.scales, vec![0.0]);
        assert!(q.scales[0].is_sign_positive());
        assert_eq!(q.dequantized(), vec![0.0, 0.0]);
        let q = quantize_rtn(
            &[f32::NAN, 1.0, f32::INFINITY],
            3,
            1,
            params(Bits::Four, 32, false),
        )
        .unwrap();
        assert!((q.scales[0] - 1.0 / 15.0).abs() < 1e-8);
        assert_eq!(q.value(0, 0), q.zero_point(0, 0));
        assert_eq!(q.value(2, 0), 15);
        assert!(quantize_rtn(&[1.0], 2, 1, params(Bits::Four, 32, true)).is_err());
    }
}
