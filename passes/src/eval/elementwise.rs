//! Elementwise operators with numpy broadcasting: arithmetic, comparisons, logic, unary
//! math, variadic Max/Min/Sum/Mean, Where and Clip.

use ndarray::{ArrayD, IxDyn};

use super::array::{try_map_same, Arr};
use super::context::{invalid, one};
use super::scalar::{erf, Elem, Num, Real};
use super::{Ctx, EvalError, Out};

const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "Mod", "Pow"];
const COMPARE: &[&str] = &["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"];
const LOGIC: &[&str] = &["And", "Or", "Xor"];
const VARIADIC: &[&str] = &["Max", "Min", "Sum", "Mean"];
const UNARY_ANY: &[&str] = &["Neg", "Abs", "Sign", "Relu"];
const UNARY_REAL: &[&str] = &[
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Floor",
    "Ceil",
    "Round",
    "Erf",
    "Sigmoid",
    "Tanh",
    "Sin",
    "Cos",
];
const OTHER: &[&str] = &["Not", "IsNaN", "IsInf", "Where", "Clip"];

/// The operators this module evaluates, by kind.
pub(crate) const OPS: [&[&str]; 7] = [
    BINARY, COMPARE, LOGIC, VARIADIC, UNARY_ANY, UNARY_REAL, OTHER,
];

/// True for the operators this module evaluates.
pub(crate) fn supports(op: &str) -> bool {
    OPS.iter().any(|list| list.contains(&op))
}

pub(crate) fn eval(ctx: &Ctx) -> Out {
    let op = ctx.op;
    if BINARY.contains(&op) {
        binary(ctx)
    } else if COMPARE.contains(&op) {
        compare(ctx)
    } else if LOGIC.contains(&op) {
        logic(ctx)
    } else if VARIADIC.contains(&op) {
        variadic(ctx)
    } else if UNARY_ANY.contains(&op) || UNARY_REAL.contains(&op) {
        unary(ctx)
    } else {
        match op {
            "Not" => not(ctx),
            "IsNaN" | "IsInf" => is_special(ctx),
            "Where" => where_op(ctx),
            "Clip" => clip(ctx),
            _ => Ok(None),
        }
    }
}

/// The numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize], op: &str) -> Result<Vec<usize>, EvalError> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => Err(invalid!(
                "{op}: shapes {a:?} and {b:?} do not broadcast ({x} vs {y})"
            )),
        })
        .collect()
}

/// Applies `f` to broadcast pairs of elements.
pub(crate) fn zip2<A: Copy, B: Copy, C>(
    ctx: &Ctx,
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(A, B) -> Result<C, EvalError>,
) -> Result<ArrayD<C>, EvalError> {
    let shape = broadcast_shape(a.shape(), b.shape(), ctx.op)?;
    ctx.check(&shape)?;
    let bad = || invalid!("{}: cannot broadcast", ctx.op);
    let av = a.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let bv = b.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let v = av
        .iter()
        .zip(bv.iter())
        .map(|(&x, &y)| f(x, y))
        .collect::<Result<Vec<C>, EvalError>>()?;
    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| invalid!("{}: {e}", ctx.op))
}

/// Matches two arrays of the same numeric variant, binding them to `$x`, `$y`;
/// `$body` yields an array of the same element type. Other pairs give `None`.
macro_rules! numeric_pair {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Arr::U8($x), Arr::U8($y)) => Some(Arr::U8($body)),
            (Arr::I8($x), Arr::I8($y)) => Some(Arr::I8($body)),
            (Arr::U16($x), Arr::U16($y)) => Some(Arr::U16($body)),
            (Arr::I16($x), Arr::I16($y)) => Some(Arr::I16($body)),
            (Arr::U32($x), Arr::U32($y)) => Some(Arr::U32($body)),
            (Arr::I32($x), Arr::I32($y)) => Some(Arr::I32($body)),
            (Arr::U64($x), Arr::U64($y)) => Some(Arr::U64($body)),
            (Arr::I64($x), Arr::I64($y)) => Some(Arr::I64($body)),
            (Arr::F16($x), Arr::F16($y)) => Some(Arr::F16($body)),
            (Arr::Bf16($x), Arr::Bf16($y)) => Some(Arr::Bf16($body)),
            (Arr::F32($x), Arr::F32($y)) => Some(Arr::F32($body)),
            (Arr::F64($x), Arr::F64($y)) => Some(Arr::F64($body)),
            _ => None,
        }
    };
}

/// Like `numeric_pair`, bool included, for bodies whose result type does not depend on
/// the element type.
macro_rules! any_pair {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Arr::Bool($x), Arr::Bool($y)) => Some($body),
            (Arr::U8($x), Arr::U8($y)) => Some($body),
            (Arr::I8($x), Arr::I8($y)) => Some($body),
            (Arr::U16($x), Arr::U16($y)) => Some($body),
            (Arr::I16($x), Arr::I16($y)) => Some($body),
            (Arr::U32($x), Arr::U32($y)) => Some($body),
            (Arr::I32($x), Arr::I32($y)) => Some($body),
            (Arr::U64($x), Arr::U64($y)) => Some($body),
            (Arr::I64($x), Arr::I64($y)) => Some($body),
            (Arr::F16($x), Arr::F16($y)) => Some($body),
            (Arr::Bf16($x), Arr::Bf16($y)) => Some($body),
            (Arr::F32($x), Arr::F32($y)) => Some($body),
            (Arr::F64($x), Arr::F64($y)) => Some($body),
            _ => None,
        }
    };
}

/// Both inputs decoded and of one type; `None` when a type is unsupported.
fn two(ctx: &Ctx) -> Result<Option<(Arr, Arr)>, EvalError> {
    let (Some(a), Some(b)) = (ctx.arr(0)?, ctx.arr(1)?) else {
        return Ok(None);
    };
    if a.dtype() != b.dtype() && ctx.op != "Pow" {
        return Err(invalid!(
            "{}: input types differ ({} vs {})",
            ctx.op,
            a.dtype(),
            b.dtype()
        ));
    }
    Ok(Some((a, b)))
}

fn arith<T: Num>(ctx: &Ctx, a: &ArrayD<T>, b: &ArrayD<T>) -> Result<ArrayD<T>, EvalError> {
    let fmod = ctx.int("fmod", 0)? != 0;
    if ctx.op == "Mod" && T::FLOAT && !fmod {
        return Err(invalid!("Mod: fmod must be 1 for floating-point inputs"));
    }
    match ctx.op {
        "Add" => zip2(ctx, a, b, |x, y| Ok(x.add(y))),
        "Sub" => zip2(ctx, a, b, |x, y| Ok(x.sub(y))),
        "Mul" => zip2(ctx, a, b, |x, y| Ok(x.mul(y))),
        "Div" => zip2(ctx, a, b, |x, y| x.div(y)),
        _ => zip2(ctx, a, b, |x, y| x.rem(y, fmod)),
    }
}

fn binary(ctx: &Ctx) -> Out {
    let Some((a, b)) = two(ctx)? else {
        return Ok(None);
    };
    if ctx.op == "Pow" {
        return pow(ctx, &a, &b);
    }
    match numeric_pair!(&a, &b, |x, y| arith(ctx, x, y)?) {
        Some(r) => one(r),
        None => Ok(None),
    }
}

/// `Pow`: the result has the base's type; float32-family bases compute in float32
/// (C `powf`), others in float64 and convert, as ONNX Runtime's `std::pow` does.
fn pow(ctx: &Ctx, a: &Arr, b: &Arr) -> Out {
    if matches!(a, Arr::Bool(_)) || matches!(b, Arr::Bool(_)) {
        return Ok(None);
    }
    let exp: ArrayD<f64> = super::array::with_arr!(b, e => e.mapv(Elem::to_f64));
    let f32_exp = matches!(b, Arr::F32(_) | Arr::F16(_) | Arr::Bf16(_));
    let r = try_map_same!(a, x => pow_typed(ctx, x, &exp, f32_exp));
    one(r)
}

fn pow_typed<T: Elem>(
    ctx: &Ctx,
    x: &ArrayD<T>,
    e: &ArrayD<f64>,
    f32_exp: bool,
) -> Result<ArrayD<T>, EvalError> {
    zip2(ctx, x, e, |v, p| {
        Ok(T::from_f64(if f32_in_f32::<T>() && f32_exp {
            (Elem::to_f64(v) as f32).powf(p as f32) as f64
        } else {
            Elem::to_f64(v).powf(p)
        }))
    })
}

fn f32_in_f32<T: 'static>() -> bool {
    use std::any::TypeId;
    let t = TypeId::of::<T>();
    t == TypeId::of::<f32>() || t == TypeId::of::<half::f16>() || t == TypeId::of::<half::bf16>()
}

// The generic body also serves bool, where `<` reads oddly to clippy but is what ONNX means.
#[allow(clippy::bool_comparison)]
fn compare(ctx: &Ctx) -> Out {
    let Some((a, b)) = two(ctx)? else {
        return Ok(None);
    };
    let op = ctx.op;
    let r = any_pair!(&a, &b, |x, y| zip2(ctx, x, y, |p, q| Ok(match op {
        "Equal" => p == q,
        "Less" => p < q,
        "Greater" => p > q,
        "LessOrEqual" => p <= q,
        _ => p >= q,
    }))?);
    match r {
        Some(r) => one(Arr::Bool(r)),
        None => Ok(None),
    }
}

fn logic(ctx: &Ctx) -> Out {
    let Some((a, b)) = two(ctx)? else {
        return Ok(None);
    };
    let (Arr::Bool(a), Arr::Bool(b)) = (a, b) else {
        return Err(invalid!("{}: inputs must be bool", ctx.op));
    };
    let r = match ctx.op {
        "And" => zip2(ctx, &a, &b, |x, y| Ok(x & y))?,
        "Or" => zip2(ctx, &a, &b, |x, y| Ok(x | y))?,
        _ => zip2(ctx, &a, &b, |x, y| Ok(x ^ y))?,
    };
    one(Arr::Bool(r))
}

fn not(ctx: &Ctx) -> Out {
    match ctx.arr(0)? {
        Some(Arr::Bool(a)) => one(Arr::Bool(a.mapv(|x| !x))),
        Some(_) => Err(invalid!("Not: input must be bool")),
        None => Ok(None),
    }
}

fn max_min<T: Num>(max: bool) -> impl Fn(T, T) -> Result<T, EvalError> {
    // NaN wins either way, as in ONNX Runtime.
    move |x: T, y: T| {
        Ok(if y.is_nan() || (!x.is_nan() && (y > x) == max) {
            y
        } else {
            x
        })
    }
}

fn variadic(ctx: &Ctx) -> Out {
    if ctx.inputs.is_empty() {
        return Err(invalid!("{}: needs at least one input", ctx.op));
    }
    let Some(mut acc) = ctx.arr(0)? else {
        return Ok(None);
    };
    if matches!(acc, Arr::Bool(_)) {
        return Ok(None);
    }
    for i in 1..ctx.inputs.len() {
        let Some(b) = ctx.arr(i)? else {
            return Ok(None);
        };
        if b.dtype() != acc.dtype() {
            return Err(invalid!("{}: input types differ", ctx.op));
        }
        let r = match ctx.op {
            "Max" => numeric_pair!(&acc, &b, |x, y| zip2(ctx, x, y, max_min(true))?),
            "Min" => numeric_pair!(&acc, &b, |x, y| zip2(ctx, x, y, max_min(false))?),
            _ => numeric_pair!(&acc, &b, |x, y| zip2(ctx, x, y, |p, q| Ok(p.add(q)))?),
        };
        acc = r.ok_or_else(|| invalid!("{}: unsupported input type", ctx.op))?;
    }
    if ctx.op == "Mean" {
        let n = ctx.inputs.len() as f64;
        acc = match acc {
            Arr::F16(a) => Arr::F16(a.mapv(|x| Num::div(x, Elem::from_f64(n)).unwrap_or(x))),
            Arr::Bf16(a) => Arr::Bf16(a.mapv(|x| Num::div(x, Elem::from_f64(n)).unwrap_or(x))),
            Arr::F32(a) => Arr::F32(a.mapv(|x| x / n as f32)),
            Arr::F64(a) => Arr::F64(a.mapv(|x| x / n)),
            _ => return Ok(None),
        };
    }
    one(acc)
}

/// A function in float32 and float64.
type RealFn = (fn(f32) -> f32, fn(f64) -> f64);

fn real_fn(op: &str) -> Option<RealFn> {
    Some(match op {
        "Sqrt" => (f32::sqrt, f64::sqrt),
        "Reciprocal" => (|x| 1.0 / x, |x| 1.0 / x),
        "Exp" => (f32::exp, f64::exp),
        "Log" => (f32::ln, f64::ln),
        "Floor" => (f32::floor, f64::floor),
        "Ceil" => (f32::ceil, f64::ceil),
        "Round" => (f32::round_ties_even, f64::round_ties_even),
        "Erf" => (|x| erf(x as f64) as f32, erf),
        "Sigmoid" => (|x| 1.0 / (1.0 + (-x).exp()), |x| 1.0 / (1.0 + (-x).exp())),
        "Tanh" => (f32::tanh, f64::tanh),
        "Sin" => (f32::sin, f64::sin),
        "Cos" => (f32::cos, f64::cos),
        _ => return None,
    })
}

fn unary_real<T: Real>(a: &ArrayD<T>, op: &str) -> Option<ArrayD<T>> {
    let (f, g) = real_fn(op)?;
    Some(a.mapv(|x| x.map_real(f, g)))
}

fn unary_num<T: Num>(a: &ArrayD<T>, op: &str) -> Option<ArrayD<T>> {
    Some(match op {
        "Neg" => a.mapv(Num::neg),
        "Abs" => a.mapv(Num::abs),
        "Relu" => a.mapv(|x| {
            if x > T::zero() || x.is_nan() {
                x
            } else {
                T::zero()
            }
        }),
        "Sign" => a.mapv(|x| {
            if x > T::zero() {
                T::one()
            } else if x < T::zero() {
                T::one().neg()
            } else if x.is_nan() {
                x
            } else {
                T::zero()
            }
        }),
        _ => return None,
    })
}

fn unary(ctx: &Ctx) -> Out {
    let Some(a) = ctx.arr(0)? else {
        return Ok(None);
    };
    let op = ctx.op;
    let r = match &a {
        Arr::F16(x) => unary_num(x, op).or_else(|| unary_real(x, op)).map(Arr::F16),
        Arr::Bf16(x) => unary_num(x, op)
            .or_else(|| unary_real(x, op))
            .map(Arr::Bf16),
        Arr::F32(x) => unary_num(x, op).or_else(|| unary_real(x, op)).map(Arr::F32),
        Arr::F64(x) => unary_num(x, op).or_else(|| unary_real(x, op)).map(Arr::F64),
        Arr::Bool(_) => None,
        Arr::U8(x) => unary_num(x, op).map(Arr::U8),
        Arr::I8(x) => unary_num(x, op).map(Arr::I8),
        Arr::U16(x) => unary_num(x, op).map(Arr::U16),
        Arr::I16(x) => unary_num(x, op).map(Arr::I16),
        Arr::U32(x) => unary_num(x, op).map(Arr::U32),
        Arr::I32(x) => unary_num(x, op).map(Arr::I32),
        Arr::U64(x) => unary_num(x, op).map(Arr::U64),
        Arr::I64(x) => unary_num(x, op).map(Arr::I64),
    };
    match r {
        Some(r) => one(r),
        None => Ok(None),
    }
}

fn is_special(ctx: &Ctx) -> Out {
    let Some(a) = ctx.arr(0)? else {
        return Ok(None);
    };
    let pos = ctx.int("detect_positive", 1)? != 0;
    let neg = ctx.int("detect_negative", 1)? != 0;
    let nan = ctx.op == "IsNaN";
    let test = move |v: f64| {
        if nan {
            v.is_nan()
        } else {
            (pos && v == f64::INFINITY) || (neg && v == f64::NEG_INFINITY)
        }
    };
    let r = match &a {
        Arr::F16(x) => x.mapv(|v| test(Elem::to_f64(v))),
        Arr::Bf16(x) => x.mapv(|v| test(Elem::to_f64(v))),
        Arr::F32(x) => x.mapv(|v| test(v as f64)),
        Arr::F64(x) => x.mapv(test),
        _ => return Ok(None),
    };
    one(Arr::Bool(r))
}

fn where_typed<T: Copy>(
    ctx: &Ctx,
    c: &ArrayD<bool>,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
) -> Result<ArrayD<T>, EvalError> {
    let shape = broadcast_shape(c.shape(), x.shape(), ctx.op)?;
    let shape = broadcast_shape(&shape, y.shape(), ctx.op)?;
    ctx.check(&shape)?;
    let bad = || invalid!("Where: cannot broadcast");
    let cv = c.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let xv = x.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let yv = y.broadcast(IxDyn(&shape)).ok_or_else(bad)?;
    let v: Vec<T> = cv
        .iter()
        .zip(xv.iter().zip(yv.iter()))
        .map(|(&c, (&x, &y))| if c { x } else { y })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| invalid!("Where: {e}"))
}

fn where_op(ctx: &Ctx) -> Out {
    let (Some(c), Some(x), Some(y)) = (ctx.arr(0)?, ctx.arr(1)?, ctx.arr(2)?) else {
        return Ok(None);
    };
    let Arr::Bool(c) = c else {
        return Err(invalid!("Where: condition must be bool"));
    };
    let r = match (&x, &y) {
        (Arr::Bool(x), Arr::Bool(y)) => Some(Arr::Bool(where_typed(ctx, &c, x, y)?)),
        _ => numeric_pair!(&x, &y, |p, q| where_typed(ctx, &c, p, q)?),
    };
    match r {
        Some(r) => one(r),
        None => Err(invalid!("Where: X and Y types differ")),
    }
}

fn clip_typed<T: Num>(ctx: &Ctx, a: &ArrayD<T>) -> Result<ArrayD<T>, EvalError> {
    let bound = |i: usize, default: T| -> Result<T, EvalError> {
        match ctx.input(i) {
            None => Ok(default),
            Some(t) => match t.to_vec::<T>()?.as_slice() {
                [] => Ok(default),
                [v] => Ok(*v),
                _ => Err(invalid!("Clip: bounds must be scalars")),
            },
        }
    };
    let (lo, hi) = if ctx.opset < 11 {
        (
            T::from_f64(ctx.float("min", f32::MIN)? as f64),
            T::from_f64(ctx.float("max", f32::MAX)? as f64),
        )
    } else {
        (bound(1, T::lowest())?, bound(2, T::highest())?)
    };
    // min(max(x, lo), hi): with lo > hi every value becomes hi, as numpy and ORT do.
    Ok(a.mapv(|x| {
        let x = if x < lo { lo } else { x };
        if x > hi {
            hi
        } else {
            x
        }
    }))
}

fn clip(ctx: &Ctx) -> Out {
    let Some(a) = ctx.arr(0)? else {
        return Ok(None);
    };
    if matches!(a, Arr::Bool(_)) {
        return Ok(None);
    }
    if ctx.opset >= 11 {
        for i in [1, 2] {
            if ctx.input(i).is_some_and(|t| t.dtype() != a.dtype()) {
                return Err(invalid!("Clip: bound {i} has another type than the input"));
            }
        }
    }
    let r = match &a {
        Arr::Bool(_) => return Ok(None),
        Arr::U8(x) => Arr::U8(clip_typed(ctx, x)?),
        Arr::I8(x) => Arr::I8(clip_typed(ctx, x)?),
        Arr::U16(x) => Arr::U16(clip_typed(ctx, x)?),
        Arr::I16(x) => Arr::I16(clip_typed(ctx, x)?),
        Arr::U32(x) => Arr::U32(clip_typed(ctx, x)?),
        Arr::I32(x) => Arr::I32(clip_typed(ctx, x)?),
        Arr::U64(x) => Arr::U64(clip_typed(ctx, x)?),
        Arr::I64(x) => Arr::I64(clip_typed(ctx, x)?),
        Arr::F16(x) => Arr::F16(clip_typed(ctx, x)?),
        Arr::Bf16(x) => Arr::Bf16(clip_typed(ctx, x)?),
        Arr::F32(x) => Arr::F32(clip_typed(ctx, x)?),
        Arr::F64(x) => Arr::F64(clip_typed(ctx, x)?),
    };
    one(r)
}
