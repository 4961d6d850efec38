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

use bytes::Bytes;

use crate::tensor::{pack_nibbles, DataType, Tensor, TensorError};

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
    let (n, nb, bs) = (q.n, q.n_blocks(), q.params.block_size);
    let four = q.params.bits == Bits::Four;
    let b = transpose_packed(q, four);
    let blob = if four { bs / 2 } else { bs };
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
        // The packed bytes become the tensor as they are (no copy: B is most of the model).
        b: Tensor::from_raw(DataType::Uint8, vec![n, nb, blob], Bytes::from(b))?,
        scales: Tensor::from_vec(vec![n * nb], scales)?,
        zero_points,
    })
}

/// Rows (and columns) of the codes handled per tile: the reads of a tile are 64 rows of 64
/// contiguous codes and its writes 64 short runs, all in L1, instead of one cache miss per
/// code for a column-by-column walk of a row-major matrix.
const TILE: usize = 64;

/// The codes transposed to `[N, n_blocks × block_size]` (rows past K hold the last block's
/// zero point), 4-bit codes packed two per byte with the first in the low nibble. Column `c`'s
/// block `b` is then bytes `b × blob .. (b + 1) × blob` of row `c`: B's layout.
fn transpose_packed(q: &BlockQuantized, four: bool) -> Vec<u8> {
    let (k, n, nb, bs) = (q.k, q.n, q.n_blocks(), q.params.block_size);
    let padded = nb * bs;
    let row_bytes = if four { padded / 2 } else { padded };
    let mut out = vec![0u8; n * row_bytes];
    // The zero point of the last block, which padding rows take.
    let last_zp = |c: usize| q.zero_points[(nb - 1) * n + c];
    // Rows up to K rounded up to even, so 4-bit pairs are whole; block sizes are even, so a
    // pair never straddles two blocks, and its padded second row is the last block's.
    let k_even = k.next_multiple_of(2).min(padded);
    let rows = if four { k_even } else { k };
    let codes = &q.codes;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        // Only the very last pair can read past K (odd K): the fast loop stops before it.
        let full = if r1 > k { r1 - 2 } else { r1 };
        for c0 in (0..n).step_by(TILE) {
            let c1 = (c0 + TILE).min(n);
            for c in c0..c1 {
                let row = &mut out[c * row_bytes..(c + 1) * row_bytes];
                if four {
                    for r in (r0..full).step_by(2) {
                        row[r / 2] = codes[r * n + c] | (codes[(r + 1) * n + c] << 4);
                    }
                    if full < r1 {
                        row[full / 2] = codes[full * n + c] | (last_zp(c) << 4);
                    }
                } else {
                    for r in r0..r1 {
                        row[r] = codes[r * n + c];
                    }
                }
            }
        }
    }
    // The padding rows after those.
    let done = if four { k_even / 2 } else { k };
    for c in 0..n {
        let zp = last_zp(c);
        let fill = if four { zp | (zp << 4) } else { zp };
        out[c * row_bytes + done..(c + 1) * row_bytes].fill(fill);
    }
    out
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

    /// B as the contrib op spec describes it, column by column and block by block.
    fn reference_b(q: &BlockQuantized) -> Vec<u8> {
        let (k, n, nb, bs) = (q.k, q.n, q.n_blocks(), q.params.block_size);
        let mut b = Vec::new();
        for c in 0..n {
            for blk in 0..nb {
                let zp = q.zero_points[blk * n + c];
                let codes: Vec<u8> = (blk * bs..(blk + 1) * bs)
                    .map(|r| if r < k { q.codes[r * n + c] } else { zp })
                    .collect();
                if q.params.bits == Bits::Four {
                    b.extend(pack_nibbles(&codes));
                } else {
                    b.extend(codes);
                }
            }
        }
        b
    }

    #[test]
    fn tiled_transpose_matches_the_spec_walk() {
        // Shapes around the tile size, odd K and N, K below one block, all block sizes.
        for (k, n) in [(1, 1), (7, 3), (64, 64), (65, 129), (200, 70), (33, 300)] {
            for bs in [32, 64, 128] {
                for (symmetric, bits) in [
                    (true, Bits::Four),
                    (false, Bits::Four),
                    (false, Bits::Eight),
                ] {
                    let q = q(symmetric, bits, k, n, bs);
                    let t = encode(&q).unwrap();
                    assert!(
                        t.b.raw().unwrap()[..] == reference_b(&q)[..],
                        "k {k} n {n} block {bs} {bits:?} symmetric {symmetric}"
                    );
                }
            }
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
