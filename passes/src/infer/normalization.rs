//! Normalizations whose extra outputs need more than the input's type: BatchNormalization
//! (training outputs), LayerNormalization (mean and inverse std dev) and ONNX Runtime's
//! SimplifiedLayerNormalization (inverse std dev).

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::Ctx;
use super::dims;
use super::ty::Ty;

/// BatchNormalization: Y like X; in training mode (opset 14+) the running mean and
/// variance like the given ones.
pub fn batch_norm(ctx: &Ctx) -> Option<Vec<Ty>> {
    let y = Ty::tensor(ctx.elem(0), ctx.shape(0).map(<[Dim]>::to_vec));
    if ctx.opset >= 14 {
        Some(vec![y, ctx.ty(3).clone(), ctx.ty(4).clone()])
    } else {
        Some(vec![y])
    }
}

/// LayerNormalization: Y like X; Mean and InvStdDev of `stash_type` (float by default)
/// with the normalized axes kept as 1.
pub fn layer_norm(ctx: &Ctx) -> Option<Vec<Ty>> {
    let y = Ty::tensor(ctx.elem(0), ctx.shape(0).map(<[Dim]>::to_vec));
    let stash = match ctx.attr("stash_type") {
        Some(_) => ctx.attr_dtype("stash_type")?,
        None => DataType::Float,
    };
    let stats = match ctx.shape(0) {
        Some(s) => {
            let a = dims::axis(ctx.attr_int_or("axis", -1), s.len())?;
            let mut o = s[..a].to_vec();
            o.extend(std::iter::repeat_n(Dim::Known(1), s.len() - a));
            Some(o)
        }
        None => None,
    };
    let stats = Ty::tensor(Some(stash), stats);
    Some(vec![y, stats.clone(), stats])
}

/// ONNX Runtime's SimplifiedLayerNormalization (registered in the default domain): Y shaped
/// like X, of the scale's type V (X's when unknown); the optional inv_std_var like
/// LayerNormalization's InvStdDev.
pub fn simplified_layer_norm(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = ctx.elem(1).or_else(|| ctx.elem(0));
    let y = Ty::tensor(elem, ctx.shape(0).map(<[Dim]>::to_vec));
    Some(vec![y, layer_norm(ctx)?.pop()?])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn layer_norm_statistics_and_batch_norm() {
        let (m, _) = run_one(
            17,
            "LayerNormalization",
            &[
                f32_in(&["b", "s", "768"]),
                f32_in(&["768"]),
                f32_in(&["768"]),
            ],
            &[],
            3,
        );
        assert_eq!(out_type(&m, 0), "float32[b,s,768]");
        assert_eq!(out_type(&m, 1), "float32[b,s,1]");
        let (m, _) = run_one(
            15,
            "BatchNormalization",
            &[
                f32_in(&["n", "3", "h", "w"]),
                f32_in(&["3"]),
                f32_in(&["3"]),
                f32_in(&["3"]),
                f32_in(&["3"]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n,3,h,w]");
        let (m, _) = run_one(
            17,
            "SimplifiedLayerNormalization",
            &[f32_in(&["b", "s", "64"]), f32_in(&["64"])],
            &[],
            2,
        );
        assert_eq!(out_type(&m, 0), "float32[b,s,64]");
        assert_eq!(out_type(&m, 1), "float32[b,s,1]");
        let (m, _) = run_one(
            23,
            "RMSNormalization",
            &[f32_in(&["b", "s", "64"]), f32_in(&["64"])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[b,s,64]");
    }
}
