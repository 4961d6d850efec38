//! ONNX Runtime's `com.microsoft.MatMulNBits` layout (contrib op spec,
//! `docs/ContribOperators.md`): `Y = A × dequantize(B)` with B stored transposed and packed.
//!
//! - `B`: uint8 `[N, n_blocks, blob]`, `blob = block_size × bits / 8`; column `n`'s block `b`
//!   holds rows `b·block .. (b+1)·block` of K, 4-bit values two per byte, the first in the low
//!   nibble. Rows past K in the last block hold the block's zero point (they dequantize to 0).
//! - `scales`: float32 `[N × n_blocks]`, column-major over blocks (`scales[n·n_blocks + b]`).
//! - `zero_points` (asymmetric only): uint8 `[N × ceil(n_blocks × bits / 8)]`, packed like B
//!   per column. Without it the kernel uses `2^(bits-1)` (8 or 128), which is where the
//!   symmetric signed integers sit once offset to unsigned codes, so both forms hold the same
//!   numbers.
//! - attributes `K`, `N`, `bits`, `block_size`; `accuracy_level` is left unset (0: float
//!   compute).

use crate::tensor::{pack_nibbles, Tensor, TensorError};

use super::rtn::{Bits, BlockQuantized};

/// The initializers of one weight in MatMulNBits form.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NBitsTensors {
    /// Packed integers, uint8 `[N, n_blocks, blob]`.
    pub b: Tensor,
    /// float32 `[N × n_blocks]`.
    pub scales: Tensor,
    /// Packed zero points (asymmetric only).
    pub zero_points: Option<Tensor>,
}

/// Writes `q` (a `[K, N]` matrix) in MatMulNBits' layout.
pub(super) fn encode(q: &BlockQuantized) -> Result<NBitsTensors, TensorError> {
    let (k, n, nb, bs) = (q.k, q.n, q.n_blocks(), q.params.block_size);
    let four = q.params.bits == Bits::Four;
    let blob = if four { bs / 2 } else { bs };
    let mut b = Vec::with_capacity(n * nb * blob);
    let mut column_block = Vec::with_capacity(bs);
    for c in 0..n {
        for blk in 0..nb {
            let zp = q.zero_points[blk * n + c];
            column_block.clear();
            column_block.extend((blk * bs..(blk + 1) * bs).map(|r| {
                if r < k {
                    q.codes[r * n + c]
                } else {
                    zp
                }
            }));
            if four {
                b.extend(pack_nibbles(&column_block));
            } else {
                b.extend_from_slice(&column_block);
            }
        }
    }
    let scales: Vec<f32> = (0..n * nb)
        .map(|i| q.scales[(i % nb) * n + i / nb])
        .collect();
    let zero_points = if q.params.symmetric {
        None
    } else {
        let mut z = Vec::new();
        for c in 0..n {
            let col: Vec<u8> = (0..nb).map(|blk| q.zero_points[blk * n + c]).collect();
            if four {
                z.extend(pack_nibbles(&col));
            } else {
                z.extend(col);
            }
        }
        let len = z.len();
        Some(Tensor::from_vec(vec![len], z)?)
    };
    Ok(NBitsTensors {
        b: Tensor::from_vec(vec![n, nb, blob], b)?,
        scales: Tensor::from_vec(vec![n * nb], scales)?,
        zero_points,
    })
}

#[cfg(test)]
mod tests {
    use super::super::rtn::{quantize_rtn, BlockParams};
    use super::*;
    use crate::tensor::unpack_nibbles;

    fn q(symmetric: bool, bits: Bits, k: usize, n: usize, bs: usize) -> BlockQuantized {
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        quantize_rtn(
            &w,
            k,
            n,
            BlockParams {
                bits,
                block_size: bs,
                symmetric,
            },
        )
        .unwrap()
    }

    /// Reads B back as MatMulNBits does: `(code - zp) * scale` per column and block.
    fn dequantize(t: &NBitsTensors, k: usize, n: usize, bs: usize, bits: Bits) -> Vec<f32> {
        let nb = k.div_ceil(bs);
        let raw = t.b.to_vec::<u8>().unwrap();
        let codes: Vec<u8> = match bits {
            Bits::Four => unpack_nibbles(&raw, n * nb * bs),
            Bits::Eight => raw,
        };
        let scales = t.scales.to_vec::<f32>().unwrap();
        let zps: Vec<u8> = match &t.zero_points {
            None => vec![1 << (bits.count() - 1); n * nb],
            Some(z) => {
                let z = z.to_vec::<u8>().unwrap();
                let per_col = z.len() / n;
                (0..n * nb)
                    .map(|i| {
                        let (c, blk) = (i / nb, i % nb);
                        match bits {
                            Bits::Four => unpack_nibbles(&z[c * per_col..], nb)[blk],
                            Bits::Eight => z[c * per_col + blk],
                        }
                    })
                    .collect()
            }
        };
        let mut out = vec![0f32; k * n];
        for c in 0..n {
            for r in 0..k {
                let (blk, j) = (r / bs, r % bs);
                let m = c * nb + blk;
                let code = codes[m * bs + j] as i32;
                out[r * n + c] = (code - zps[m] as i32) as f32 * scales[m];
            }
        }
        out
    }

    #[test]
    fn layout_dequantizes_to_the_same_numbers() {
        for (symmetric, bits) in [
            (true, Bits::Four),
            (false, Bits::Four),
            (true, Bits::Eight),
            (false, Bits::Eight),
        ] {
            // K = 70 is not a multiple of 32: the last block is padded; 3 blocks make the
            // 4-bit zero points of a column odd in count.
            let (k, n, bs) = (70, 5, 32);
            let q = q(symmetric, bits, k, n, bs);
            let t = encode(&q).unwrap();
            let blob = if bits == Bits::Four { 16 } else { 32 };
            assert_eq!(t.b.shape(), &[5, 3, blob]);
            assert_eq!(t.scales.shape(), &[15]);
            if let Some(z) = &t.zero_points {
                let per_col = if bits == Bits::Four { 2 } else { 3 };
                assert_eq!(z.shape(), &[5 * per_col]);
            }
            assert_eq!(
                dequantize(&t, k, n, bs, bits),
                q.dequantized(),
                "{symmetric} {bits:?}"
            );
        }
    }

    #[test]
    fn padding_holds_the_zero_point() {
        let q = q(false, Bits::Four, 33, 1, 32);
        let t = encode(&q).unwrap();
        let codes = unpack_nibbles(t.b.raw().unwrap(), 64);
        assert!(codes[33..].iter().all(|&c| c == q.zero_points[1]));
    }
}
