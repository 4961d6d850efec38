//! The QDQ form: the integers in an int4/uint4 (or int8/uint8) initializer of the weight's own
//! shape, and an opset-21 `DequantizeLinear` with `axis` (the K axis) and `block_size` in front
//! of the unchanged float consumer.
//!
//! Symmetric weights are signed with no zero-point input (zero point 0); asymmetric ones are
//! unsigned with a zero-point tensor. Scales and zero points have the weight's shape with the K
//! axis divided into blocks: `[ceil(K / block), N]` for `[K, N]`, `[N, ceil(K / block)]` for
//! `[N, K]`.

use crate::tensor::{DataType, Tensor, TensorError};

use super::rtn::{Bits, BlockQuantized};

/// The initializers of one weight in QDQ form.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct QdqTensors {
    /// The integers, shaped as the float weight.
    pub values: Tensor,
    /// float32 scales, blocked along `axis`.
    pub scale: Tensor,
    /// Zero points (asymmetric only), same type as `values`.
    pub zero_point: Option<Tensor>,
}

/// The element type the QDQ form stores `q` in.
pub(super) fn element_type(q: &BlockQuantized) -> DataType {
    match (q.params.bits, q.params.symmetric) {
        (Bits::Four, true) => DataType::Int4,
        (Bits::Four, false) => DataType::Uint4,
        (Bits::Eight, true) => DataType::Int8,
        (Bits::Eight, false) => DataType::Uint8,
    }
}

/// Writes `q` (a `[K, N]` matrix) for a weight stored with K along `k_axis`: 0 keeps
/// `[K, N]`, 1 writes `[N, K]`.
pub(super) fn encode(q: &BlockQuantized, k_axis: usize) -> Result<QdqTensors, TensorError> {
    let (k, n, nb) = (q.k, q.n, q.n_blocks());
    let qmin = q.params.qrange().0;
    // Integers in the stored orientation: signed values as two's complement bytes.
    let as_byte = |code: u8| (code as i32 + qmin) as i8 as u8;
    let (shape, values): (Vec<usize>, Vec<u8>) = if k_axis == 0 {
        (vec![k, n], q.codes.iter().map(|&c| as_byte(c)).collect())
    } else {
        (vec![n, k], transpose(&q.codes, k, n, as_byte))
    };
    let (pshape, scales, zps) = if k_axis == 0 {
        (vec![nb, n], q.scales.clone(), q.zero_points.clone())
    } else {
        (
            vec![n, nb],
            transpose(&q.scales, nb, n, |s| s),
            transpose(&q.zero_points, nb, n, |z| z),
        )
    };
    let dtype = element_type(q);
    let ints = |shape: Vec<usize>, v: Vec<u8>| -> Result<Tensor, TensorError> {
        match dtype {
            DataType::Int4 | DataType::Uint4 => Tensor::from_nibbles(dtype, shape, &v),
            DataType::Int8 => Tensor::from_vec(shape, v.into_iter().map(|b| b as i8).collect()),
            _ => Tensor::from_vec(shape, v),
        }
    };
    Ok(QdqTensors {
        values: ints(shape, values)?,
        scale: Tensor::from_vec(pshape.clone(), scales)?,
        zero_point: if q.params.symmetric {
            None
        } else {
            Some(ints(pshape, zps)?)
        },
    })
}

/// Row-major `[rows, cols]` → `[cols, rows]`, mapping each element.
fn transpose<T: Copy, U>(v: &[T], rows: usize, cols: usize, f: impl Fn(T) -> U) -> Vec<U> {
    (0..rows * cols)
        .map(|i| {
            let (c, r) = (i / rows, i % rows);
            f(v[r * cols + c])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::rtn::{quantize_rtn, BlockParams};
    use super::*;

    fn q(symmetric: bool, bits: Bits) -> BlockQuantized {
        // K = 3, N = 2, block 2: two blocks.
        let w = [2.0f32, -1.0, 1.0, 0.5, -0.5, 4.0];
        quantize_rtn(
            &w,
            3,
            2,
            BlockParams {
                bits,
                block_size: 2,
                symmetric,
            },
        )
        .unwrap()
    }

    #[test]
    fn symmetric_int4_is_signed_without_zero_point() {
        let q = q(true, Bits::Four);
        let t = encode(&q, 0).unwrap();
        assert_eq!(t.values.dtype(), DataType::Int4);
        assert_eq!(t.values.shape(), &[3, 2]);
        assert!(t.zero_point.is_none());
        let v = t.values.to_f64_vec().unwrap();
        let want: Vec<f64> = (0..6).map(|i| q.value(i / 2, i % 2) as f64).collect();
        assert_eq!(v, want);
        assert_eq!(t.scale.shape(), &[2, 2]);
        assert_eq!(t.scale.to_vec::<f32>().unwrap(), q.scales);
    }

    #[test]
    fn transposed_weights_block_along_axis_one() {
        let q = q(false, Bits::Eight);
        let t = encode(&q, 1).unwrap();
        assert_eq!(t.values.dtype(), DataType::Uint8);
        assert_eq!(t.values.shape(), &[2, 3]);
        let v = t.values.to_vec::<u8>().unwrap();
        for r in 0..3 {
            for c in 0..2 {
                assert_eq!(v[c * 3 + r] as i32, q.value(r, c));
            }
        }
        assert_eq!(t.scale.shape(), &[2, 2]);
        let s = t.scale.to_vec::<f32>().unwrap();
        assert_eq!(s[1], q.scales[2]); // column 0, block 1
        let z = t.zero_point.unwrap();
        assert_eq!(z.dtype(), DataType::Uint8);
        assert_eq!(z.to_vec::<u8>().unwrap()[1] as i32, q.zero_point(1, 0));
    }
}
