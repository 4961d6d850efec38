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

/// Rows (and columns) of the codes the scalar edges handle per tile, so their strided reads
/// stay in L1.
const TILE: usize = 64;

/// The 8 × 8 transposes go band by band, so reads and writes stay in L1.
const BAND_ROWS: usize = 128;
const BAND_COLUMNS: usize = 64;

/// The codes transposed to `[N, n_blocks × block_size]` (rows past K hold the last block's
/// zero point), 4-bit codes packed two per byte with the first in the low nibble. Column `c`'s
/// block `b` is then bytes `b × blob .. (b + 1) × blob` of row `c`: B's layout.
///
/// The bulk goes 8 × 8 codes at a time through a transpose in eight `u64`s (one load per
/// row, one store per column); the ragged edges (K or N not a multiple of 8, rows past K)
/// code by code.
fn transpose_packed(q: &BlockQuantized, four: bool) -> Vec<u8> {
    let (k, n, nb, bs) = (q.k, q.n, q.n_blocks(), q.params.block_size);
    let padded = nb * bs;
    let row_bytes = if four { padded / 2 } else { padded };
    let mut out = vec![0u8; n * row_bytes];
    let codes = &q.codes;
    let (k8, n8) = (k / 8 * 8, n / 8 * 8);
    // Bands of 128 rows × 64 columns: 8 KiB of codes in, one output cache line per column.
    let blocks = (0..k8)
        .step_by(BAND_ROWS)
        .flat_map(|rb| (0..n8).step_by(BAND_COLUMNS).map(move |cb| (rb, cb)))
        .flat_map(|(rb, cb)| {
            (rb..(rb + BAND_ROWS).min(k8))
                .step_by(8)
                .flat_map(move |r0| {
                    (cb..(cb + BAND_COLUMNS).min(n8))
                        .step_by(8)
                        .map(move |c0| (r0, c0))
                })
        });
    for (r0, c0) in blocks {
        let mut a = [0u64; 8];
        for (i, word) in a.iter_mut().enumerate() {
            let at = (r0 + i) * n + c0;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&codes[at..at + 8]);
            *word = u64::from_le_bytes(bytes);
        }
        transpose8(&mut a);
        for (j, &column) in a.iter().enumerate() {
            let at = (c0 + j) * row_bytes;
            if four {
                out[at + r0 / 2..at + r0 / 2 + 4].copy_from_slice(&pack_pairs(column));
            } else {
                out[at + r0..at + r0 + 8].copy_from_slice(&column.to_le_bytes());
            }
        }
    }
    // The columns past the last full 8, on the rows done above; then the rows after them.
    edges(q, four, 0..k8, n8..n, row_bytes, &mut out);
    edges(q, four, k8..k, 0..n, row_bytes, &mut out);
    // The padding rows after K.
    let last_zp = |c: usize| q.zero_points[(nb - 1) * n + c];
    let done = if four { k.div_ceil(2) } else { k };
    for c in 0..n {
        let zp = last_zp(c);
        let fill = if four { zp | (zp << 4) } else { zp };
        out[c * row_bytes + done..(c + 1) * row_bytes].fill(fill);
    }
    out
}

/// Transposes the 8 × 8 bytes of `a` (byte `j` of word `i` becomes byte `i` of word `j`), in
/// three rounds of swapping 4 × 4, 2 × 2 and 1 × 1 blocks.
fn transpose8(a: &mut [u64; 8]) {
    for i in 0..4 {
        let (x, y) = (a[i], a[i + 4]);
        a[i] = (x & 0x0000_0000_FFFF_FFFF) | (y << 32);
        a[i + 4] = (x >> 32) | (y & 0xFFFF_FFFF_0000_0000);
    }
    for i in [0, 1, 4, 5] {
        let (x, y) = (a[i], a[i + 2]);
        a[i] = (x & 0x0000_FFFF_0000_FFFF) | ((y & 0x0000_FFFF_0000_FFFF) << 16);
        a[i + 2] = ((x >> 16) & 0x0000_FFFF_0000_FFFF) | (y & 0xFFFF_0000_FFFF_0000);
    }
    for i in [0, 2, 4, 6] {
        let (x, y) = (a[i], a[i + 1]);
        a[i] = (x & 0x00FF_00FF_00FF_00FF) | ((y & 0x00FF_00FF_00FF_00FF) << 8);
        a[i + 1] = ((x >> 8) & 0x00FF_00FF_00FF_00FF) | (y & 0xFF00_FF00_FF00_FF00);
    }
}

/// Eight 4-bit codes (one per byte of `v`, low byte first) packed two per byte, the first of
/// each pair in the low nibble.
fn pack_pairs(v: u64) -> [u8; 4] {
    // Byte i becomes code i | code i+1 << 4; the even bytes are the pairs.
    let t = (v | (v >> 4)) & 0x00FF_00FF_00FF_00FF;
    let t = (t | (t >> 8)) & 0x0000_FFFF_0000_FFFF;
    (((t | (t >> 16)) & 0xFFFF_FFFF) as u32).to_le_bytes()
}

/// Writes the codes of `rows` × `columns` into `out` one by one (`rows` starts even). A
/// 4-bit pair whose second row is past K takes the last block's zero point there.
fn edges(
    q: &BlockQuantized,
    four: bool,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    row_bytes: usize,
    out: &mut [u8],
) {
    let (k, n, nb) = (q.k, q.n, q.n_blocks());
    let code = |r: usize, c: usize| {
        if r < k {
            q.codes[r * n + c]
        } else {
            q.zero_points[(nb - 1) * n + c]
        }
    };
    for r0 in rows.clone().step_by(TILE) {
        let r1 = (r0 + TILE).min(rows.end);
        for c in columns.clone() {
            let row = &mut out[c * row_bytes..(c + 1) * row_bytes];
            if four {
                for r in (r0..r1).step_by(2) {
                    row[r / 2] = code(r, c) | (code(r + 1, c) << 4);
                }
            } else {
                for (r, slot) in (r0..r1).zip(&mut row[r0..r1]) {
                    *slot = code(r, c);
                }
            }
        }
    }
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
