//! MatMul (numpy semantics: 1-D promotion, broadcast batch dims) and Gemm.
//!
//! float32 and float64 multiply with ndarray's `dot` in their own type; float16/bfloat16 in
//! float32, rounded once; integers accumulate with wrapping, as ONNX Runtime's kernels do.

use half::{bf16, f16};
use ndarray::{Array2, ArrayD, ArrayView2, Ix2, IxDyn};

use super::array::Arr;
use super::context::{invalid, one};
use super::elementwise::broadcast_shape;
use super::scalar::Num;
use super::{Ctx, EvalError, Out};

/// Most multiply-adds one evaluation may cost, per allowed output element.
const WORK_PER_ELEMENT: u128 = 1024;

/// The operators this module evaluates.
pub(crate) const OPS: &[&str] = &["MatMul", "Gemm"];

/// True for the operators this module evaluates.
pub(crate) fn supports(op: &str) -> bool {
    OPS.contains(&op)
}

pub(crate) fn eval(ctx: &Ctx) -> Out {
    let (Some(a), Some(b)) = (ctx.arr(0)?, ctx.arr(1)?) else {
        return Ok(None);
    };
    if a.dtype() != b.dtype() {
        return Err(invalid!("{}: input types differ", ctx.op));
    }
    if ctx.op == "Gemm" {
        return gemm(ctx, a, b);
    }
    let r = match (&a, &b) {
        (Arr::F32(x), Arr::F32(y)) => Arr::F32(matmul(ctx, x, y, dot_f32)?),
        (Arr::F64(x), Arr::F64(y)) => Arr::F64(matmul(ctx, x, y, dot_f64)?),
        (Arr::F16(x), Arr::F16(y)) => Arr::F16(matmul(ctx, x, y, dot_half::<f16>)?),
        (Arr::Bf16(x), Arr::Bf16(y)) => Arr::Bf16(matmul(ctx, x, y, dot_half::<bf16>)?),
        (Arr::I32(x), Arr::I32(y)) => Arr::I32(matmul(ctx, x, y, dot_num)?),
        (Arr::I64(x), Arr::I64(y)) => Arr::I64(matmul(ctx, x, y, dot_num)?),
        (Arr::U32(x), Arr::U32(y)) => Arr::U32(matmul(ctx, x, y, dot_num)?),
        (Arr::U64(x), Arr::U64(y)) => Arr::U64(matmul(ctx, x, y, dot_num)?),
        _ => return Ok(None),
    };
    one(r)
}

fn dot_f32(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    a.dot(&b)
}

fn dot_f64(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
    a.dot(&b)
}

fn dot_half<T: Num + HalfLike>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let a32 = a.mapv(T::to_f32);
    let b32 = b.mapv(T::to_f32);
    a32.dot(&b32).mapv(T::from_f32)
}

/// float16 / bfloat16 ↔ float32.
trait HalfLike: Copy {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl HalfLike for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> f16 {
        f16::from_f32(v)
    }
}

impl HalfLike for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
}

fn dot_num<T: Num>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let (m, k) = a.dim();
    let n = b.dim().1;
    Array2::from_shape_fn((m, n), |(i, j)| {
        (0..k).fold(T::zero(), |acc, p| acc.add(a[(i, p)].mul(b[(p, j)])))
    })
}

fn check_work(ctx: &Ctx, work: u128) -> Result<(), EvalError> {
    let limit = ctx.options.max_elements as u128 * WORK_PER_ELEMENT;
    if work > limit {
        return Err(EvalError::TooLarge {
            elements: work / WORK_PER_ELEMENT,
            limit: ctx.options.max_elements,
        });
    }
    Ok(())
}

fn matmul<T: Copy>(
    ctx: &Ctx,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    dot: fn(ArrayView2<T>, ArrayView2<T>) -> Array2<T>,
) -> Result<ArrayD<T>, EvalError> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err(invalid!("MatMul: scalar input"));
    }
    // 1-D operands are promoted to matrices, and the promoted dim is dropped afterwards.
    let a_shape: Vec<usize> = if a.ndim() == 1 {
        vec![1, a.len()]
    } else {
        a.shape().to_vec()
    };
    let b_shape: Vec<usize> = if b.ndim() == 1 {
        vec![b.len(), 1]
    } else {
        b.shape().to_vec()
    };
    let (ra, rb) = (a_shape.len(), b_shape.len());
    let (m, k) = (a_shape[ra - 2], a_shape[ra - 1]);
    let (k2, n) = (b_shape[rb - 2], b_shape[rb - 1]);
    if k != k2 {
        return Err(invalid!("MatMul: {:?} × {:?}", a.shape(), b.shape()));
    }
    let batch = broadcast_shape(&a_shape[..ra - 2], &b_shape[..rb - 2], ctx.op)?;
    let nb: usize = batch.iter().product();
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    ctx.check(&out_shape)?;
    check_work(ctx, nb as u128 * m as u128 * n as u128 * k as u128)?;
    let bad = |e: ndarray::ShapeError| invalid!("MatMul: {e}");
    let mut a_full = batch.clone();
    a_full.extend([m, k]);
    let mut b_full = batch.clone();
    b_full.extend([k, n]);
    let av = a
        .view()
        .into_shape_with_order(IxDyn(&a_shape))
        .map_err(bad)?;
    let bv = b
        .view()
        .into_shape_with_order(IxDyn(&b_shape))
        .map_err(bad)?;
    let av = av
        .broadcast(IxDyn(&a_full))
        .ok_or_else(|| invalid!("MatMul: batch dims do not broadcast"))?;
    let bv = bv
        .broadcast(IxDyn(&b_full))
        .ok_or_else(|| invalid!("MatMul: batch dims do not broadcast"))?;
    let a3 = av
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((nb, m, k))
        .map_err(bad)?;
    let b3 = bv
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((nb, k, n))
        .map_err(bad)?;
    let mut out = Vec::with_capacity(nb * m * n);
    for i in 0..nb {
        let c = dot(
            a3.index_axis(ndarray::Axis(0), i),
            b3.index_axis(ndarray::Axis(0), i),
        );
        out.extend(c.iter().copied());
    }
    let mut final_shape = batch;
    if a.ndim() > 1 {
        final_shape.push(m);
    }
    if b.ndim() > 1 {
        final_shape.push(n);
    }
    ArrayD::from_shape_vec(IxDyn(&final_shape), out).map_err(bad)
}

fn gemm(ctx: &Ctx, a: Arr, b: Arr) -> Out {
    let c = match ctx.input(2) {
        Some(t) => match Arr::from_tensor(t)? {
            Some(c) if c.dtype() == a.dtype() => Some(c),
            Some(_) => return Err(invalid!("Gemm: C has another type")),
            None => return Ok(None),
        },
        None => None,
    };
    let r = match (a, b, c) {
        (Arr::F32(a), Arr::F32(b), c) => Arr::F32(gemm_typed(ctx, a, b, c.and_then(f32_of))?),
        (Arr::F64(a), Arr::F64(b), c) => {
            let c = c.and_then(|c| match c {
                Arr::F64(c) => Some(c),
                _ => None,
            });
            Arr::F64(gemm_typed(ctx, a, b, c)?)
        }
        (Arr::F16(a), Arr::F16(b), c) => {
            let c = c.and_then(|c| match c {
                Arr::F16(c) => Some(c.mapv(f16::to_f32)),
                _ => None,
            });
            let y = gemm_typed(ctx, a.mapv(f16::to_f32), b.mapv(f16::to_f32), c)?;
            Arr::F16(y.mapv(f16::from_f32))
        }
        _ => return Ok(None),
    };
    one(r)
}

fn f32_of(c: Arr) -> Option<ArrayD<f32>> {
    match c {
        Arr::F32(c) => Some(c),
        _ => None,
    }
}

/// float32 / float64 Gemm: `alpha · A' · B' + beta · C`.
fn gemm_typed<T>(
    ctx: &Ctx,
    a: ArrayD<T>,
    b: ArrayD<T>,
    c: Option<ArrayD<T>>,
) -> Result<ArrayD<T>, EvalError>
where
    T: ndarray::LinalgScalar + num_like::FromF32,
{
    let to2 = |x: ArrayD<T>| {
        x.into_dimensionality::<Ix2>()
            .map_err(|_| invalid!("Gemm: A and B must be 2-D"))
    };
    let (mut a, mut b) = (to2(a)?, to2(b)?);
    if ctx.int("transA", 0)? != 0 {
        a = a.reversed_axes();
    }
    if ctx.int("transB", 0)? != 0 {
        b = b.reversed_axes();
    }
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    if k != k2 {
        return Err(invalid!("Gemm: {:?} × {:?}", a.dim(), b.dim()));
    }
    ctx.check(&[m, n])?;
    check_work(ctx, m as u128 * n as u128 * k as u128)?;
    let alpha = T::from_f32(ctx.float("alpha", 1.0)?);
    let beta = T::from_f32(ctx.float("beta", 1.0)?);
    let mut y = a.dot(&b).mapv(|v| v * alpha);
    if let Some(c) = c {
        let cv = c
            .broadcast(IxDyn(&[m, n]))
            .ok_or_else(|| invalid!("Gemm: C does not broadcast to ({m}, {n})"))?;
        for (yv, &cv) in y.iter_mut().zip(cv.iter()) {
            *yv = *yv + beta * cv;
        }
    }
    Ok(y.into_dyn())
}

mod num_like {
    /// The Gemm scalars from their float attributes.
    pub trait FromF32 {
        fn from_f32(v: f32) -> Self;
    }
    impl FromF32 for f32 {
        fn from_f32(v: f32) -> f32 {
            v
        }
    }
    impl FromF32 for f64 {
        fn from_f32(v: f32) -> f64 {
            v as f64
        }
    }
}
