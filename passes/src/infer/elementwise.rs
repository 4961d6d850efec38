//! Operators whose output has the input's shape: activations, math, casts, Dropout, and the
//! random and `*Like` generators.

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::Ctx;
use super::ty::Ty;

/// Output 0 is exactly input 0 (any type: Identity also passes sequences through).
pub fn identity(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![ctx.ty(0).clone()])
}

/// Output 0 has input 0's element type and shape.
pub fn unary(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        ctx.elem(0),
        ctx.shape(0).map(<[Dim]>::to_vec),
    )])
}

/// Output 0 is bool with input 0's shape (IsNaN, IsInf).
pub fn predicate(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        Some(DataType::Bool),
        ctx.shape(0).map(<[Dim]>::to_vec),
    )])
}

/// Cast: the `to` type, input 0's shape.
pub fn cast(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        Some(ctx.attr_dtype("to")?),
        ctx.shape(0).map(<[Dim]>::to_vec),
    )])
}

/// CastLike: input 1's element type, input 0's shape.
pub fn cast_like(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        ctx.elem(1),
        ctx.shape(0).map(<[Dim]>::to_vec),
    )])
}

/// Dropout: output 0 like the input; the mask has the input's shape and is bool from
/// opset 10 (before, the input's type).
pub fn dropout(ctx: &Ctx) -> Option<Vec<Ty>> {
    let shape = ctx.shape(0).map(<[Dim]>::to_vec);
    let mask = if ctx.opset >= 10 {
        Some(DataType::Bool)
    } else {
        ctx.elem(0)
    };
    Some(vec![
        Ty::tensor(ctx.elem(0), shape.clone()),
        Ty::tensor(mask, shape),
    ])
}

/// EyeLike, RandomNormalLike, RandomUniformLike, Bernoulli: `dtype` if given, else the
/// input's type; the input's shape.
pub fn like_with_dtype(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = match ctx.attr("dtype") {
        Some(_) => Some(ctx.attr_dtype("dtype")?),
        None => ctx.elem(0),
    };
    Some(vec![Ty::tensor(elem, ctx.shape(0).map(<[Dim]>::to_vec))])
}

/// RandomNormal, RandomUniform: `dtype` (default float) and the `shape` attribute.
pub fn random(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = match ctx.attr("dtype") {
        Some(_) => ctx.attr_dtype("dtype")?,
        None => DataType::Float,
    };
    let shape = ctx
        .attr_ints("shape")?
        .iter()
        .map(|&d| (d >= 0).then_some(Dim::Known(d)))
        .collect::<Option<Vec<Dim>>>()?;
    Some(vec![Ty::known(elem, shape)])
}

/// Multinomial: `dtype` (default int32), shape `[batch, sample_size]`.
pub fn multinomial(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = match ctx.attr("dtype") {
        Some(_) => ctx.attr_dtype("dtype")?,
        None => DataType::Int32,
    };
    let batch = ctx.shape(0).and_then(|s| s.first().cloned());
    let shape = batch.map(|b| vec![b, Dim::Known(ctx.attr_int_or("sample_size", 1))]);
    Some(vec![Ty::tensor(Some(elem), shape)])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::tensor::DataType;

    #[test]
    fn activations_keep_type_and_named_dims() {
        for op in [
            "Relu",
            "Erf",
            "Tanh",
            "Sqrt",
            "Reciprocal",
            "Gelu",
            "Softmax",
            "HardSigmoid",
        ] {
            let (m, _) = run_one(17, op, &[f32_in(&["batch", "seq", "768"])], &[], 1);
            assert_eq!(out_type(&m, 0), "float32[batch,seq,768]", "{op}");
        }
    }

    #[test]
    fn cast_castlike_and_dropout_masks() {
        let (m, _) = run_one(13, "Cast", &[f32_in(&["n", "3"])], &[("to", int(7))], 1);
        assert_eq!(out_type(&m, 0), "int64[n,3]");
        let (m, _) = run_one(
            15,
            "CastLike",
            &[f32_in(&["n"]), typed_in(DataType::Float16, &["1"])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float16[n]");
        let (m, _) = run_one(13, "Dropout", &[f32_in(&["2", "k"])], &[], 2);
        assert_eq!(out_type(&m, 1), "bool[2,k]");
        let (m, _) = run_one(7, "Dropout", &[f32_in(&["2", "k"])], &[], 2);
        assert_eq!(out_type(&m, 1), "float32[2,k]");
    }
}
