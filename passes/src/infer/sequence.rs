//! Sequence operators: element types only (a sequence's tensors have no one shape).

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::Ctx;
use super::ty::Ty;

fn seq_elem(ty: &Ty) -> Option<DataType> {
    match ty {
        Ty::Seq(e) => *e,
        _ => None,
    }
}

/// SequenceEmpty: a sequence of `dtype` (float by default).
pub fn empty(ctx: &Ctx) -> Option<Vec<Ty>> {
    let elem = match ctx.attr("dtype") {
        Some(_) => ctx.attr_dtype("dtype")?,
        None => DataType::Float,
    };
    Some(vec![Ty::Seq(Some(elem))])
}

/// SequenceConstruct, SplitToSequence: a sequence of input 0's element type.
pub fn of_input(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::Seq(ctx.elem(0))])
}

/// SequenceInsert, SequenceErase: the input sequence's type.
pub fn same_seq(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::Seq(seq_elem(ctx.ty(0)).or(ctx.elem(1)))])
}

/// SequenceAt, ConcatFromSequence: a tensor of the sequence's element type.
pub fn element(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(seq_elem(ctx.ty(0)), None)])
}

/// SequenceLength: an int64 scalar.
pub fn length(_ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::known(DataType::Int64, Vec::<Dim>::new())])
}
