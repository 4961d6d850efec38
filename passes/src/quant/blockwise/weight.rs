//! Reading a constant weight as the `[K, N]` matrix the quantizer works on.

use crate::tensor::{DataType, Tensor};

/// A row-major `[k, n]` float32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Matrix {
    /// Row-major values.
    pub data: Vec<f32>,
    /// Rows: the reduction dim, along which blocks run.
    pub k: usize,
    /// Columns.
    pub n: usize,
}

/// The 2-D float32 constant `t` as a `[K, N]` matrix whose K is `t`'s axis `k_axis`
/// (0: `t` is `[K, N]`; 1: `t` is `[N, K]` and is transposed), every value times `alpha`.
pub(super) fn matrix(t: &Tensor, k_axis: usize, alpha: f32) -> Result<Matrix, String> {
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
    let v: Vec<f32> = t.to_vec().map_err(|e| e.to_string())?;
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
                data,
                k: cols,
                n: rows,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_orientations() {
        let t = Tensor::from_vec(vec![2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let m = matrix(&t, 0, 1.0).unwrap();
        assert_eq!((m.k, m.n), (2, 3));
        let m = matrix(&t, 1, 2.0).unwrap();
        assert_eq!((m.k, m.n), (3, 2));
        assert_eq!(m.data, vec![2.0, 8.0, 4.0, 10.0, 6.0, 12.0]);
        let bad = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        assert!(matrix(&bad, 0, 1.0).unwrap_err().contains("int32"));
        let r3 = Tensor::from_vec(vec![1, 1, 2], vec![1.0f32, 2.0]).unwrap();
        assert!(matrix(&r3, 0, 1.0).unwrap_err().contains("rank 3"));
    }
}
