//! Multi-input operators with numpy broadcasting: arithmetic, comparisons, logic, Where.

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::Ctx;
use super::dims;
use super::ty::Ty;

/// The broadcast shape of the present inputs in `slots`, if every rank is known.
fn broadcast_inputs(ctx: &Ctx, slots: impl Iterator<Item = usize>) -> Option<Vec<Dim>> {
    let shapes: Option<Vec<&[Dim]>> = slots
        .filter(|&i| ctx.has(i))
        .map(|i| ctx.shape(i))
        .collect();
    dims::broadcast(&shapes?)
}

/// Add, Sub, Mul, Div, Pow, Mod, Max, Min, Sum, Mean, bitwise ops: input 0's element
/// type (Pow's exponent may differ), the broadcast shape of all inputs.
pub fn arithmetic(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        ctx.elem(0),
        broadcast_inputs(ctx, 0..ctx.n_inputs()),
    )])
}

/// Equal, Less, Greater, …, And, Or, Xor: bool, the broadcast shape.
pub fn comparison(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        Some(DataType::Bool),
        broadcast_inputs(ctx, 0..ctx.n_inputs()),
    )])
}

/// Where: the element type of the values, the broadcast of all three shapes.
pub fn where_(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        ctx.elem(1).or(ctx.elem(2)),
        broadcast_inputs(ctx, 0..3),
    )])
}

/// PRelu: the slope broadcasts to X one way, so the output is X.
pub fn prelu(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        ctx.elem(0),
        ctx.shape(0).map(<[Dim]>::to_vec),
    )])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::tensor::DataType;

    #[test]
    fn add_broadcasts_symbolic_dims() {
        let (m, _) = run_one(
            13,
            "Add",
            &[
                f32_in(&["batch", "1", "seq", "seq"]),
                f32_in(&["12", "seq", "1"]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[batch,12,seq,seq]");
        let (m, _) = run_one(13, "Mul", &[f32_in(&["a"]), f32_in(&["b"])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32[?]");
    }

    #[test]
    fn pow_keeps_the_base_type_and_comparisons_give_bool() {
        let (m, _) = run_one(
            15,
            "Pow",
            &[f32_in(&["4"]), typed_in(DataType::Int64, &[])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[4]");
        let (m, _) = run_one(13, "Less", &[f32_in(&["4", "1"]), f32_in(&["3"])], &[], 1);
        assert_eq!(out_type(&m, 0), "bool[4,3]");
        let (m, _) = run_one(
            16,
            "Where",
            &[
                typed_in(DataType::Bool, &["1", "s"]),
                typed_in(DataType::Int64, &[]),
                typed_in(DataType::Int64, &["b", "1"]),
            ],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "int64[b,s]");
    }

    #[test]
    fn incompatible_shapes_give_no_shape() {
        let (m, _) = run_one(13, "Add", &[f32_in(&["3"]), f32_in(&["4"])], &[], 1);
        assert_eq!(out_type(&m, 0), "float32");
    }
}
