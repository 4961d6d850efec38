//! Error metrics of one output: a candidate's tensor against the reference's, accumulated over
//! any number of samples in a single pass each, in `f64`.
//!
//! Float outputs get the full set (max / mean abs error, max rel error, RMSE, cosine, SQNR,
//! share outside the `allclose` tolerance, NaN / Inf counts, top-1 / top-5 agreement).
//! Integer, bool and string outputs are compared exactly: a count of differing elements.

use kiln_passes::tensor::{DataType, Tensor};
use serde::Serialize;

use super::histogram::Histogram;
use crate::compare::{is_close, Tolerance};

/// Floor of the denominator of the relative error, so an exact zero in the reference gives
/// a large finite relative error instead of a division by zero.
pub const REL_TINY: f64 = 1e-12;

/// Why a pair of tensors cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// The element types differ (or differ from earlier samples of this output).
    #[error("element type differs: reference {reference}, candidate {candidate}")]
    Dtype {
        /// Reference element type.
        reference: DataType,
        /// Candidate element type.
        candidate: DataType,
    },
    /// The shapes differ.
    #[error("shape differs: reference {reference:?}, candidate {candidate:?}")]
    Shape {
        /// Reference dims.
        reference: Vec<usize>,
        /// Candidate dims.
        candidate: Vec<usize>,
    },
    /// The chosen top-k axis is not an axis of the output.
    #[error("top-k axis {axis} is out of range for rank {rank}")]
    Axis {
        /// The axis asked for.
        axis: i64,
        /// The output's rank.
        rank: usize,
    },
}

/// Which axis top-1 / top-5 agreement is measured along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopkAxis {
    /// The last axis, for float outputs of rank ≥ 2 whose last dim is ≥ 2 (logits).
    #[default]
    Auto,
    /// This axis (negative counts from the end) for every float output; an error if out of range.
    Axis(i64),
    /// Never.
    Off,
}

/// Where the top-k rows of a sample lie: along `axis`, `len` scores `inner` elements apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopkRows {
    /// The (non-negative) axis.
    pub axis: usize,
    /// Scores per row (the axis' length).
    pub len: usize,
    /// Elements after the axis (the stride between a row's scores).
    pub inner: usize,
}

impl TopkRows {
    /// Elements of one outer index (`len · inner`): chunks of a multiple keep every row whole.
    pub fn block(&self) -> usize {
        self.len * self.inner
    }
}

/// Metrics of a float output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FloatMetrics {
    /// Elements compared (over all samples).
    pub elements: u64,
    /// Largest |candidate − reference| over pairs where both are finite.
    #[serde(serialize_with = "finite_or_text")]
    pub max_abs: f64,
    /// Mean |candidate − reference| over pairs where both are finite.
    #[serde(serialize_with = "finite_or_text")]
    pub mean_abs: f64,
    /// Largest |candidate − reference| / max(|reference|, [`REL_TINY`]).
    #[serde(serialize_with = "finite_or_text")]
    pub max_rel: f64,
    /// Root mean square error over pairs where both are finite.
    #[serde(serialize_with = "finite_or_text")]
    pub rmse: f64,
    /// Cosine similarity of the two (finite pairs) as flat vectors; 1 when both are all zeros.
    #[serde(serialize_with = "finite_or_text")]
    pub cosine: f64,
    /// Signal-to-quantization-noise ratio in dB: 10·log10(Σr² / Σ(r−c)²); `inf` when identical.
    #[serde(serialize_with = "finite_or_text")]
    pub sqnr_db: f64,
    /// Elements not close under the tolerance (numpy `allclose`, NaN equal to NaN).
    pub outside: u64,
    /// `outside / elements` (0 for an empty output).
    pub outside_share: f64,
    /// NaNs in the reference.
    pub nan_reference: u64,
    /// NaNs in the candidate.
    pub nan_candidate: u64,
    /// ±Inf in the reference.
    pub inf_reference: u64,
    /// ±Inf in the candidate.
    pub inf_candidate: u64,
    /// Share of rows along the top-k axis whose arg-max agrees, when measured.
    pub top1: Option<f64>,
    /// Share of rows whose reference arg-max is among the candidate's five largest, when the
    /// axis is longer than 5.
    pub top5: Option<f64>,
    /// The axis top-k was measured along (non-negative), when it was.
    pub topk_axis: Option<usize>,
}

/// Metrics of an integer, bool or string output: exact comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExactMetrics {
    /// Elements compared (over all samples).
    pub elements: u64,
    /// Elements that differ.
    pub mismatched: u64,
    /// `mismatched / elements` (0 for an empty output).
    pub mismatched_share: f64,
}

/// The metrics of one output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Metrics {
    /// A float (or complex, element-interleaved) output.
    Float(FloatMetrics),
    /// An output compared exactly.
    Exact(ExactMetrics),
}

/// JSON has no infinities or NaN: write them as the strings `inf`, `-inf`, `nan`.
/// Serializes a float as a JSON number, or as "inf"/"-inf"/"nan" (JSON has no such numbers).
pub fn finite_or_text<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("nan")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

/// Whether an element type gets float metrics (complex types do, element-interleaved).
fn is_float_like(dtype: DataType) -> bool {
    dtype.is_float()
        || matches!(
            dtype,
            DataType::Complex64
                | DataType::Complex128
                | DataType::Float8E4M3Fn
                | DataType::Float8E4M3Fnuz
                | DataType::Float8E5M2
                | DataType::Float8E5M2Fnuz
                | DataType::Float4E2M1
                | DataType::Float8E8M0
        )
}

/// Running sums of one output over samples; [`Accumulator::finish`] turns them into metrics.
#[derive(Debug, Clone)]
pub struct Accumulator {
    tol: Tolerance,
    topk: TopkAxis,
    dtype: Option<DataType>,
    elements: u64,
    finite_pairs: u64,
    sum_abs: f64,
    sum_sq_err: f64,
    sum_sq_ref: f64,
    sum_sq_cand: f64,
    sum_dot: f64,
    max_abs: f64,
    max_rel: f64,
    outside: u64,
    nan: [u64; 2],
    inf: [u64; 2],
    rows: u64,
    top1_hits: u64,
    top5_rows: u64,
    top5_hits: u64,
    topk_axis: Option<usize>,
    hist: Histogram,
}

impl Accumulator {
    /// An empty accumulator judging closeness with `tol` and measuring top-k per `topk`.
    pub fn new(tol: Tolerance, topk: TopkAxis) -> Accumulator {
        Accumulator {
            tol,
            topk,
            dtype: None,
            elements: 0,
            finite_pairs: 0,
            sum_abs: 0.0,
            sum_sq_err: 0.0,
            sum_sq_ref: 0.0,
            sum_sq_cand: 0.0,
            sum_dot: 0.0,
            max_abs: 0.0,
            max_rel: 0.0,
            outside: 0,
            nan: [0; 2],
            inf: [0; 2],
            rows: 0,
            top1_hits: 0,
            top5_rows: 0,
            top5_hits: 0,
            topk_axis: None,
            hist: Histogram::default(),
        }
    }

    /// Adds one sample's pair; types and shapes must match (and the type match earlier samples).
    pub fn add(&mut self, reference: &Tensor, candidate: &Tensor) -> Result<(), MetricsError> {
        let rows = self.begin(
            (reference.dtype(), reference.shape()),
            (candidate.dtype(), candidate.shape()),
        )?;
        if let (Some(r), Some(c)) = (reference.strings(), candidate.strings()) {
            self.elements += r.len() as u64;
            self.outside += r.iter().zip(c).filter(|(x, y)| x != y).count() as u64;
            return Ok(());
        }
        let (Some(r), Some(c)) = (reference.to_f64_vec(), candidate.to_f64_vec()) else {
            return Err(MetricsError::Dtype {
                reference: reference.dtype(),
                candidate: candidate.dtype(),
            });
        };
        self.add_chunk(&r, &c, rows);
        Ok(())
    }

    /// Starts a sample's pair given as (element type, shape) each: checks them as [`add`]
    /// does and records the type. Feed the elements in order with [`Accumulator::add_chunk`];
    /// the returned layout (when top-k is measured) says which chunk sizes keep rows whole.
    ///
    /// [`add`]: Accumulator::add
    pub fn begin(
        &mut self,
        reference: (DataType, &[usize]),
        candidate: (DataType, &[usize]),
    ) -> Result<Option<TopkRows>, MetricsError> {
        let dtype_err = || MetricsError::Dtype {
            reference: reference.0,
            candidate: candidate.0,
        };
        if reference.0 != candidate.0 || self.dtype.is_some_and(|d| d != reference.0) {
            return Err(dtype_err());
        }
        if reference.1 != candidate.1 {
            return Err(MetricsError::Shape {
                reference: reference.1.to_vec(),
                candidate: candidate.1.to_vec(),
            });
        }
        self.dtype = Some(reference.0);
        if !is_float_like(reference.0) {
            return Ok(None);
        }
        let shape = reference.1;
        let Some(axis) = self.resolve_axis(reference.0, shape)? else {
            return Ok(None);
        };
        let rows = TopkRows {
            axis,
            len: shape[axis],
            inner: shape[axis + 1..].iter().product(),
        };
        Ok((rows.len > 0 && rows.inner > 0).then_some(rows))
    }

    /// Adds the next elements (as `f64`, in C order) of the pair started with
    /// [`Accumulator::begin`]; with top-k rows, every chunk must hold whole
    /// [`TopkRows::block`]s.
    pub fn add_chunk(&mut self, r: &[f64], c: &[f64], rows: Option<TopkRows>) {
        if !self.dtype.is_some_and(is_float_like) {
            self.elements += r.len() as u64;
            self.outside += r.iter().zip(c).filter(|(x, y)| x != y).count() as u64;
            return;
        }
        self.add_floats(r, c);
        if let Some(rows) = rows {
            self.add_topk(r, c, rows);
        }
    }

    /// The top-k axis for an output of this type and shape, if measured.
    fn resolve_axis(
        &self,
        dtype: DataType,
        shape: &[usize],
    ) -> Result<Option<usize>, MetricsError> {
        // Complex values are interleaved pairs: rows along an axis make no sense.
        if matches!(dtype, DataType::Complex64 | DataType::Complex128) {
            return Ok(None);
        }
        let rank = shape.len();
        match self.topk {
            TopkAxis::Off => Ok(None),
            TopkAxis::Auto => Ok((rank >= 2 && shape[rank - 1] >= 2).then(|| rank - 1)),
            TopkAxis::Axis(a) => {
                let resolved = if a < 0 { a + rank as i64 } else { a };
                if resolved < 0 || resolved >= rank as i64 {
                    return Err(MetricsError::Axis { axis: a, rank });
                }
                Ok(Some(resolved as usize))
            }
        }
    }

    fn add_floats(&mut self, r: &[f64], c: &[f64]) {
        self.elements += r.len() as u64;
        for (&x, &y) in r.iter().zip(c) {
            self.nan[0] += x.is_nan() as u64;
            self.nan[1] += y.is_nan() as u64;
            self.inf[0] += x.is_infinite() as u64;
            self.inf[1] += y.is_infinite() as u64;
            self.hist.add(x, y);
            if !is_close(x, y, self.tol) {
                self.outside += 1;
            }
            if !(x.is_finite() && y.is_finite()) {
                continue;
            }
            let d = y - x;
            let ad = d.abs();
            self.finite_pairs += 1;
            self.sum_abs += ad;
            self.sum_sq_err += d * d;
            self.sum_sq_ref += x * x;
            self.sum_sq_cand += y * y;
            self.sum_dot += x * y;
            self.max_abs = self.max_abs.max(ad);
            self.max_rel = self.max_rel.max(ad / x.abs().max(REL_TINY));
        }
    }

    fn add_topk(&mut self, r: &[f64], c: &[f64], rows: TopkRows) {
        let TopkRows { axis, len, inner } = rows;
        let outer = r.len() / rows.block();
        self.topk_axis = Some(axis);
        for o in 0..outer {
            for i in 0..inner {
                let base = o * len * inner + i;
                let at = |v: &[f64], k: usize| v[base + k * inner];
                let best_ref = argmax(len, |k| at(r, k));
                let best_cand = argmax(len, |k| at(c, k));
                self.rows += 1;
                self.top1_hits += (best_ref == best_cand) as u64;
                if len > 5 {
                    // The reference's winner is in the candidate's top 5 when fewer than 5
                    // candidate scores beat the candidate's score for it.
                    let score = at(c, best_ref);
                    let better = (0..len).filter(|&k| greater(at(c, k), score)).count();
                    self.top5_rows += 1;
                    self.top5_hits += (better < 5) as u64;
                }
            }
        }
    }

    /// The histogram of |candidate − reference| so far, for float outputs.
    pub fn histogram(&self) -> Option<&Histogram> {
        self.dtype.is_some_and(is_float_like).then_some(&self.hist)
    }

    /// The metrics of everything added so far.
    pub fn finish(&self) -> Metrics {
        let share = |n: u64| {
            if self.elements == 0 {
                0.0
            } else {
                n as f64 / self.elements as f64
            }
        };
        let float = self.dtype.is_some_and(is_float_like);
        if !float {
            return Metrics::Exact(ExactMetrics {
                elements: self.elements,
                mismatched: self.outside,
                mismatched_share: share(self.outside),
            });
        }
        let n = self.finite_pairs as f64;
        let (mean_abs, rmse) = if self.finite_pairs == 0 {
            (0.0, 0.0)
        } else {
            (self.sum_abs / n, (self.sum_sq_err / n).sqrt())
        };
        let norms = self.sum_sq_ref.sqrt() * self.sum_sq_cand.sqrt();
        let cosine = if norms > 0.0 {
            self.sum_dot / norms
        } else if self.sum_sq_ref == self.sum_sq_cand {
            1.0 // both all zeros
        } else {
            0.0
        };
        let sqnr_db = if self.sum_sq_err == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.sum_sq_ref / self.sum_sq_err).log10()
        };
        let ratio = |hits: u64, rows: u64| (rows > 0).then(|| hits as f64 / rows as f64);
        Metrics::Float(FloatMetrics {
            elements: self.elements,
            max_abs: self.max_abs,
            mean_abs,
            max_rel: self.max_rel,
            rmse,
            cosine,
            sqnr_db,
            outside: self.outside,
            outside_share: share(self.outside),
            nan_reference: self.nan[0],
            nan_candidate: self.nan[1],
            inf_reference: self.inf[0],
            inf_candidate: self.inf[1],
            top1: ratio(self.top1_hits, self.rows),
            top5: ratio(self.top5_hits, self.top5_rows),
            topk_axis: self.topk_axis,
        })
    }
}

/// NaN sorts below everything, so a NaN score never wins.
fn greater(a: f64, b: f64) -> bool {
    !a.is_nan() && (b.is_nan() || a > b)
}

/// Index of the first largest of `len` scores.
fn argmax(len: usize, score: impl Fn(usize) -> f64) -> usize {
    let mut best = 0;
    for k in 1..len {
        if greater(score(k), score(best)) {
            best = k;
        }
    }
    best
}

/// Metrics of one pair of tensors (a one-sample [`Accumulator`]).
pub fn metrics(
    reference: &Tensor,
    candidate: &Tensor,
    tol: Tolerance,
    topk: TopkAxis,
) -> Result<Metrics, MetricsError> {
    let mut acc = Accumulator::new(tol, topk);
    acc.add(reference, candidate)?;
    Ok(acc.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        atol: 1e-5,
        rtol: 1e-5,
    };

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn float(m: Metrics) -> FloatMetrics {
        match m {
            Metrics::Float(f) => f,
            Metrics::Exact(e) => panic!("expected float metrics, got {e:?}"),
        }
    }

    #[test]
    fn identical_gives_zeros_and_infinite_sqnr() {
        let a = t(&[2, 3], &[1.0, -2.0, 3.0, 0.5, 0.0, 7.0]);
        let m = float(metrics(&a, &a, TOL, TopkAxis::Auto).unwrap());
        assert_eq!(m.max_abs, 0.0);
        assert_eq!(m.mean_abs, 0.0);
        assert_eq!(m.max_rel, 0.0);
        assert_eq!(m.rmse, 0.0);
        assert_eq!(m.outside, 0);
        assert_eq!(m.sqnr_db, f64::INFINITY);
        assert!((m.cosine - 1.0).abs() < 1e-15);
        assert_eq!(m.top1, Some(1.0));
        assert_eq!(m.top5, None);
        let json = serde_json::to_value(Metrics::Float(m)).unwrap();
        assert_eq!(json["sqnr_db"], "inf");
        assert_eq!(json["kind"], "float");
    }

    #[test]
    fn known_perturbation() {
        // Two elements off by 0.5 and 1.0 (exact in f32): max abs 1, mean abs 0.375,
        // RMSE sqrt((0.25 + 1) / 4), SQNR 10·log10(Σr² / 1.25).
        let r = t(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let c = t(&[4], &[1.0, 2.5, 3.0, 5.0]);
        let m = float(metrics(&r, &c, TOL, TopkAxis::Auto).unwrap());
        assert_eq!(m.max_abs, 1.0);
        assert_eq!(m.mean_abs, 0.375);
        assert_eq!(m.rmse, (1.25f64 / 4.0).sqrt());
        assert_eq!(m.max_rel, 0.25);
        assert_eq!(m.outside, 2);
        assert_eq!(m.outside_share, 0.5);
        assert!((m.sqnr_db - 10.0 * (30.0f64 / 1.25).log10()).abs() < 1e-12);
        let dot = 1.0 + 5.0 + 9.0 + 20.0;
        let cos = dot / (30.0f64.sqrt() * (1.0f64 + 6.25 + 9.0 + 25.0).sqrt());
        assert!((m.cosine - cos).abs() < 1e-15);
        // Rank 1: no top-k by default.
        assert_eq!(m.top1, None);
    }

    #[test]
    fn nan_and_inf_are_counted_and_outside() {
        let r = t(&[4], &[1.0, f32::NAN, 3.0, f32::INFINITY]);
        let c = t(
            &[4],
            &[f32::NAN, f32::NAN, f32::NEG_INFINITY, f32::INFINITY],
        );
        let m = float(metrics(&r, &c, TOL, TopkAxis::Auto).unwrap());
        assert_eq!((m.nan_reference, m.nan_candidate), (1, 2));
        assert_eq!((m.inf_reference, m.inf_candidate), (1, 2));
        // NaN==NaN and inf==inf are close; 1 vs NaN and 3 vs -inf are not.
        assert_eq!(m.outside, 2);
        // No finite pair: error stats stay zero rather than NaN.
        assert_eq!(m.max_abs, 0.0);
    }

    #[test]
    fn top1_flip_and_top5() {
        // Two rows of 6 logits; the candidate swaps the winner of row 1 with its runner-up.
        let r = t(&[2, 6], &[0., 1., 2., 3., 4., 5., 5., 4., 3., 2., 1., 0.]);
        let c = t(&[2, 6], &[0., 1., 2., 3., 4., 5., 4., 5., 3., 2., 1., 0.]);
        let m = float(metrics(&r, &c, TOL, TopkAxis::Auto).unwrap());
        assert_eq!(m.top1, Some(0.5));
        assert_eq!(m.top5, Some(1.0));
        assert_eq!(m.topk_axis, Some(1));
        // Along axis 0 (six columns of 2) the swap changes no column's winner.
        let m = float(metrics(&r, &c, TOL, TopkAxis::Axis(0)).unwrap());
        assert_eq!(m.top1, Some(1.0));
        assert_eq!(m.top5, None);
        assert!(matches!(
            metrics(&r, &c, TOL, TopkAxis::Axis(2)),
            Err(MetricsError::Axis { axis: 2, rank: 2 })
        ));
    }

    #[test]
    fn reference_winner_pushed_out_of_top5() {
        let r = t(&[1, 6], &[9., 0., 0., 0., 0., 0.]);
        let c = t(&[1, 6], &[0., 1., 2., 3., 4., 5.]);
        let m = float(metrics(&r, &c, TOL, TopkAxis::Auto).unwrap());
        assert_eq!((m.top1, m.top5), (Some(0.0), Some(0.0)));
    }

    #[test]
    fn integers_compare_exactly() {
        let r = Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap();
        let c = Tensor::from_vec(vec![3], vec![1i64, 0, 3]).unwrap();
        let Metrics::Exact(m) = metrics(&r, &c, TOL, TopkAxis::Auto).unwrap() else {
            panic!("int64 must compare exactly");
        };
        assert_eq!((m.elements, m.mismatched), (3, 1));
    }

    #[test]
    fn mismatched_type_or_shape_is_typed() {
        let f = t(&[2], &[1.0, 2.0]);
        let i = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        assert!(matches!(
            metrics(&f, &i, TOL, TopkAxis::Auto),
            Err(MetricsError::Dtype { .. })
        ));
        assert!(matches!(
            metrics(&f, &t(&[1, 2], &[1.0, 2.0]), TOL, TopkAxis::Auto),
            Err(MetricsError::Shape { .. })
        ));
    }

    #[test]
    fn chunks_give_the_metrics_of_the_whole() {
        // Three rows of 6 logits, fed as one row then two: same metrics as one add.
        let r: Vec<f32> = (0..18).map(|i| ((i * 7) % 11) as f32).collect();
        let c: Vec<f32> = r
            .iter()
            .enumerate()
            .map(|(i, x)| x + (i % 4) as f32 * 0.3)
            .collect();
        let (rt, ct) = (t(&[3, 6], &r), t(&[3, 6], &c));
        let whole = metrics(&rt, &ct, TOL, TopkAxis::Auto).unwrap();
        let mut acc = Accumulator::new(TOL, TopkAxis::Auto);
        let rows = acc
            .begin((DataType::Float, &[3, 6]), (DataType::Float, &[3, 6]))
            .unwrap();
        assert_eq!(rows.map(|r| r.block()), Some(6));
        let (r64, c64) = (rt.to_f64_vec().unwrap(), ct.to_f64_vec().unwrap());
        acc.add_chunk(&r64[..6], &c64[..6], rows);
        acc.add_chunk(&r64[6..], &c64[6..], rows);
        assert_eq!(acc.finish(), whole);
        assert!(matches!(
            acc.begin((DataType::Float, &[3, 6]), (DataType::Float, &[6, 3])),
            Err(MetricsError::Shape { .. })
        ));
    }

    #[test]
    fn accumulates_over_samples() {
        let mut acc = Accumulator::new(TOL, TopkAxis::Auto);
        acc.add(&t(&[2], &[1.0, 1.0]), &t(&[2], &[1.0, 1.0]))
            .unwrap();
        acc.add(&t(&[2], &[1.0, 1.0]), &t(&[2], &[1.0, 3.0]))
            .unwrap();
        let m = float(acc.finish());
        assert_eq!((m.elements, m.outside, m.max_abs), (4, 1, 2.0));
        assert_eq!(m.mean_abs, 0.5);
    }
}
