//! Element-wise comparison of values with numpy `allclose` semantics.
//!
//! `|actual - expected| <= atol + rtol * |expected|`, NaN equal to NaN, infinities equal only to
//! the same infinity, as `numpy.testing.assert_allclose` (which the ONNX backend tests use).
//! Element types and shapes must match exactly; strings compare byte for byte.

use std::fmt;

use kiln_passes::tensor::Tensor;

use crate::value::Value;

/// Absolute and relative tolerance, as in numpy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Tolerance {
    /// The tolerances of the ONNX backend tests (rtol 1e-3, atol 1e-7).
    pub const ONNX_BACKEND: Tolerance = Tolerance {
        rtol: 1e-3,
        atol: 1e-7,
    };
}

/// Why two values are not close.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// Different kinds of value (tensor vs sequence …) or element types.
    Type {
        /// The expected value, described.
        expected: String,
        /// The actual value, described.
        actual: String,
    },
    /// Same element type, different shapes (or sequence lengths).
    Shape {
        /// Expected dims.
        expected: Vec<usize>,
        /// Actual dims.
        actual: Vec<usize>,
    },
    /// Some elements differ beyond the tolerance.
    Values {
        /// Elements outside tolerance.
        count: usize,
        /// Elements compared.
        total: usize,
        /// Flat index of the first such element.
        first_index: usize,
        /// Expected value there.
        expected: f64,
        /// Actual value there.
        actual: f64,
        /// Largest absolute difference over finite pairs.
        max_abs: f64,
    },
    /// Strings differ.
    Strings {
        /// Flat index of the first differing string.
        first_index: usize,
    },
    /// The mismatch is inside the `index`-th item of a sequence or an optional.
    Nested {
        /// Position in the sequence (0 for an optional's value).
        index: usize,
        /// The mismatch found there.
        inner: Box<Mismatch>,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Type { expected, actual } => {
                write!(f, "type differs: expected {expected}, got {actual}")
            }
            Mismatch::Shape { expected, actual } => {
                write!(f, "shape differs: expected {expected:?}, got {actual:?}")
            }
            Mismatch::Values {
                count,
                total,
                first_index,
                expected,
                actual,
                max_abs,
            } => write!(
                f,
                "{count} of {total} elements differ (first at {first_index}: expected {expected}, got {actual}; max abs diff {max_abs:e})"
            ),
            Mismatch::Strings { first_index } => {
                write!(f, "strings differ (first at {first_index})")
            }
            Mismatch::Nested { index, inner } => write!(f, "item {index}: {inner}"),
        }
    }
}

/// Whether one pair of elements is close (`expected` is the reference).
pub fn is_close(expected: f64, actual: f64, tol: Tolerance) -> bool {
    if expected.is_nan() || actual.is_nan() {
        return expected.is_nan() && actual.is_nan();
    }
    if expected.is_infinite() || actual.is_infinite() {
        return expected == actual;
    }
    (actual - expected).abs() <= tol.atol + tol.rtol * expected.abs()
}

/// Compares two values; `Ok` when they have the same type and shape and are close everywhere.
pub fn allclose(expected: &Value, actual: &Value, tol: Tolerance) -> Result<(), Mismatch> {
    match (expected, actual) {
        (Value::Tensor(e), Value::Tensor(a)) => allclose_tensors(e, a, tol),
        (Value::Sequence { items: e, .. }, Value::Sequence { items: a, .. }) => {
            if e.len() != a.len() {
                return Err(Mismatch::Shape {
                    expected: vec![e.len()],
                    actual: vec![a.len()],
                });
            }
            for (index, (ei, ai)) in e.iter().zip(a).enumerate() {
                allclose(ei, ai, tol).map_err(|inner| Mismatch::Nested {
                    index,
                    inner: Box::new(inner),
                })?;
            }
            Ok(())
        }
        (Value::Optional(None), Value::Optional(None)) => Ok(()),
        (Value::Optional(Some(e)), Value::Optional(Some(a))) => {
            allclose(e, a, tol).map_err(|inner| Mismatch::Nested {
                index: 0,
                inner: Box::new(inner),
            })
        }
        _ => Err(Mismatch::Type {
            expected: expected.describe(),
            actual: actual.describe(),
        }),
    }
}

/// Compares two tensors element by element.
pub fn allclose_tensors(
    expected: &Tensor,
    actual: &Tensor,
    tol: Tolerance,
) -> Result<(), Mismatch> {
    if expected.dtype() != actual.dtype() {
        return Err(Mismatch::Type {
            expected: expected.dtype().to_string(),
            actual: actual.dtype().to_string(),
        });
    }
    if expected.shape() != actual.shape() {
        return Err(Mismatch::Shape {
            expected: expected.shape().to_vec(),
            actual: actual.shape().to_vec(),
        });
    }
    if let (Some(e), Some(a)) = (expected.strings(), actual.strings()) {
        return match e.iter().zip(a).position(|(x, y)| x != y) {
            Some(first_index) => Err(Mismatch::Strings { first_index }),
            None => Ok(()),
        };
    }
    let (Some(e), Some(a)) = (expected.to_f64_vec(), actual.to_f64_vec()) else {
        return Err(Mismatch::Type {
            expected: expected.dtype().to_string(),
            actual: actual.dtype().to_string(),
        });
    };
    let mut count = 0;
    let mut first = None;
    let mut max_abs: f64 = 0.0;
    for (i, (&x, &y)) in e.iter().zip(&a).enumerate() {
        if x.is_finite() && y.is_finite() {
            max_abs = max_abs.max((x - y).abs());
        }
        if !is_close(x, y, tol) {
            count += 1;
            first.get_or_insert(i);
        }
    }
    match first {
        None => Ok(()),
        Some(first_index) => Err(Mismatch::Values {
            count,
            total: e.len(),
            first_index,
            expected: e[first_index],
            actual: a[first_index],
            max_abs,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>) -> Value {
        let n = v.len();
        Value::Tensor(Tensor::from_vec(vec![n], v).unwrap())
    }

    #[test]
    fn numpy_semantics() {
        let tol = Tolerance::ONNX_BACKEND;
        assert!(is_close(1.0, 1.0009, tol));
        assert!(!is_close(1.0, 1.0011, tol));
        assert!(is_close(0.0, 1e-7, tol));
        assert!(!is_close(0.0, 2e-7, tol));
        assert!(is_close(f64::NAN, f64::NAN, tol));
        assert!(!is_close(f64::NAN, 0.0, tol));
        assert!(is_close(f64::INFINITY, f64::INFINITY, tol));
        assert!(!is_close(f64::INFINITY, f64::NEG_INFINITY, tol));
    }

    #[test]
    fn reports_count_and_first_index() {
        let err = allclose(
            &t(vec![1.0, 2.0, 3.0]),
            &t(vec![1.0, 2.5, 4.0]),
            Tolerance::ONNX_BACKEND,
        )
        .unwrap_err();
        assert_eq!(
            err,
            Mismatch::Values {
                count: 2,
                total: 3,
                first_index: 1,
                expected: 2.0,
                actual: 2.5,
                max_abs: 1.0
            }
        );
    }

    #[test]
    fn dtype_and_shape_must_match() {
        let i = Value::Tensor(Tensor::from_vec(vec![1], vec![1i32]).unwrap());
        assert!(matches!(
            allclose(&t(vec![1.0]), &i, Tolerance::ONNX_BACKEND),
            Err(Mismatch::Type { .. })
        ));
        assert!(matches!(
            allclose(&t(vec![1.0]), &t(vec![1.0, 1.0]), Tolerance::ONNX_BACKEND),
            Err(Mismatch::Shape { .. })
        ));
    }

    #[test]
    fn sequences_compare_item_by_item() {
        let seq = |v: Vec<Value>| Value::Sequence {
            elem_type: None,
            items: v,
        };
        let e = seq(vec![t(vec![1.0]), t(vec![2.0])]);
        assert!(allclose(&e, &e.clone(), Tolerance::ONNX_BACKEND).is_ok());
        let a = seq(vec![t(vec![1.0]), t(vec![3.0])]);
        assert!(matches!(
            allclose(&e, &a, Tolerance::ONNX_BACKEND),
            Err(Mismatch::Nested { index: 1, .. })
        ));
    }
}
