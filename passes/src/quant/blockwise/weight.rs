//! Reading a constant weight as the `[K, N]` matrix the quantizer works on.

use std::borrow::Cow;

use crate::tensor::{DataType, Tensor};

/// A row-major `[k, n]` float32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Matrix<'a> {
    /// Row-major values: the tensor's own bytes when they can be read in place.
    pub data: Cow<'a, [f32]>,
    /// Rows: the reduction dim, along which blocks run.
    pub k: usize,
    /// Columns.
    pub n: usize,
}

/// The 2-D float32 constant `t` as a `[K, N]` matrix whose K is `t`'s axis `k_axis`
/// (0: `t` is `[K, N]`; 1: `t` is `[N, K]` and is transposed), every value times `alpha`.
///
/// A `[K, N]` weight with no factor is read in place (a memory-mapped weight is not copied;
/// the caller gives its pages back after quantizing, see `kiln_proto::release_pages`).
pub(super) fn matrix(t: &Tensor, k_axis: usize, alpha: f32) -> Result<Matrix<'_>, String> {
    match t.dtype() {
        DataType::Float => {}
        d => {
            return Err(format!(
                "weight is {}; only float32 weights are quantized",
                d.name()
            ))
        }
    }
    let [rows, cols] = *t.shape() else {
        return Err(format!(
            "weight has rank {}; only 2-D weights are quantized",
            t.shape().len()
        ));
    };
    if rows == 0 || cols == 0 {
        return Err("weight has no elements".into());
    }
    if k_axis == 0 && alpha == 1.0 {
        if let Some(data) = in_place(t) {
            return Ok(Matrix {
                data: Cow::Borrowed(data),
                k: rows,
                n: cols,
            });
        }
    }
    // Read once: a mapped weight's pages go back as they are converted, so quantizing a
    // model weight by weight never holds the whole data file resident.
    let v: Vec<f32> = t.read_once().map_err(|e| e.to_string())?;
    let scaled = |x: f32| if alpha == 1.0 { x } else { x * alpha };
    Ok(match k_axis {
        0 => Matrix {
            data: v.into_iter().map(scaled).collect(),
            k: rows,
            n: cols,
        },
        _ => {
            let mut data = vec![0f32; v.len()];
            for r in 0..rows {
                for c in 0..cols {
                    data[c * rows + r] = scaled(v[r * cols + c]);
                }
            }
            Matrix {
                data: Cow::Owned(data),
                k: cols,
                n: rows,
            }
        }
    })
}

/// The float32 tensor's little-endian bytes seen as `f32`s, when the target is
/// little-endian and the bytes are 4-aligned (weights in data files are: writers align them
/// for memory-mapping).
fn in_place(t: &Tensor) -> Option<&[f32]> {
    if cfg!(target_endian = "little") {
        use zerocopy::FromBytes;
        <[f32]>::ref_from_bytes(t.raw()?).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_orientations() {
        let t = Tensor::from_vec(vec![2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let m = matrix(&t, 0, 1.0).unwrap();
        assert_eq!((m.k, m.n), (2, 3));
        assert_eq!(m.data[..], [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
        if cfg!(target_endian = "little") {
            assert!(
                matches!(m.data, Cow::Borrowed(_)),
                "aligned bytes are read in place"
            );
        }
        // Unaligned bytes are copied rather than refused.
        let raw = bytes::Bytes::from(vec![0u8; 25]).slice(1..);
        let odd = Tensor::from_raw(DataType::Float, vec![2, 3], raw).unwrap();
        assert_eq!(matrix(&odd, 0, 1.0).unwrap().data[..], [0.0f32; 6]);
        assert_eq!(matrix(&t, 0, 2.0).unwrap().data[5], 12.0);
        let m = matrix(&t, 1, 2.0).unwrap();
        assert_eq!((m.k, m.n), (3, 2));
        assert_eq!(m.data, vec![2.0, 8.0, 4.0, 10.0, 6.0, 12.0]);
        let bad = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        assert!(matrix(&bad, 0, 1.0).unwrap_err().contains("int32"));
        let r3 = Tensor::from_vec(vec![1, 1, 2], vec![1.0f32, 2.0]).unwrap();
        assert!(matrix(&r3, 0, 1.0).unwrap_err().contains("rank 3"));
    }
}
