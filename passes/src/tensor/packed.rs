//! 4-bit tensors (`int4`, `uint4`): two elements per byte, the first in the low nibble, as
//! ONNX stores them in `raw_data` (an odd count leaves the last high nibble zero).

use bytes::Bytes;

use super::{DataType, Tensor, TensorError};

/// Packs 4-bit values (each in the low nibble of a byte; higher bits ignored) two per byte,
/// the first element in the low nibble.
pub fn pack_nibbles(nibbles: &[u8]) -> Vec<u8> {
    nibbles
        .chunks(2)
        .map(|pair| (pair[0] & 0x0F) | (pair.get(1).copied().unwrap_or(0) << 4))
        .collect()
}

/// The `n` nibbles of packed bytes, first element from the low nibble (inverse of
/// [`pack_nibbles`]); missing bytes read as zero.
pub fn unpack_nibbles(packed: &[u8], n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let byte = packed.get(i / 2).copied().unwrap_or(0);
            if i % 2 == 0 {
                byte & 0x0F
            } else {
                byte >> 4
            }
        })
        .collect()
}

impl Tensor {
    /// An `int4` or `uint4` tensor from one value per byte in the low nibble (two's
    /// complement for `int4`: -1 is `0x0F` or `0xFF`).
    pub fn from_nibbles(
        dtype: DataType,
        shape: Vec<usize>,
        nibbles: &[u8],
    ) -> Result<Tensor, TensorError> {
        if !matches!(dtype, DataType::Int4 | DataType::Uint4) {
            return Err(TensorError::WrongType {
                actual: dtype,
                requested: DataType::Int4,
            });
        }
        let n: usize = shape.iter().product();
        if nibbles.len() != n {
            return Err(TensorError::DataLength {
                what: "nibbles",
                unit: "values",
                dims: shape.iter().map(|&d| d as i64).collect(),
                dtype,
                expected: n,
                got: nibbles.len(),
            });
        }
        Tensor::from_raw(dtype, shape, Bytes::from(pack_nibbles(nibbles)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_like_onnx_helper() {
        // onnx.helper.make_tensor(INT4, [3], [1, -2, 3]) packs to bytes [225, 3].
        let t = Tensor::from_nibbles(DataType::Int4, vec![3], &[1, (-2i8) as u8, 3]).unwrap();
        assert_eq!(t.raw().unwrap().as_ref(), &[225, 3]);
        assert_eq!(t.to_f64_vec().unwrap(), vec![1.0, -2.0, 3.0]);
        let u = Tensor::from_nibbles(DataType::Uint4, vec![2, 2], &[15, 0, 8, 7]).unwrap();
        assert_eq!(u.raw().unwrap().as_ref(), &[0x0F, 0x78]);
        assert_eq!(u.to_f64_vec().unwrap(), vec![15.0, 0.0, 8.0, 7.0]);
    }

    #[test]
    fn round_trip_and_errors() {
        let values: Vec<u8> = (0..9).map(|i| (i * 7 % 16) as u8).collect();
        assert_eq!(unpack_nibbles(&pack_nibbles(&values), 9), values);
        assert!(matches!(
            Tensor::from_nibbles(DataType::Int8, vec![1], &[1]),
            Err(TensorError::WrongType { .. })
        ));
        assert!(matches!(
            Tensor::from_nibbles(DataType::Int4, vec![3], &[1, 2]),
            Err(TensorError::DataLength { expected: 3, .. })
        ));
    }
}
