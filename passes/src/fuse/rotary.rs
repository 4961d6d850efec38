//! `note-rotary`: recognizes rotary position embeddings (RoPE) in the rotate-half form
//! (Hugging Face Llama / Mistral / Qwen2 / GPT-NeoX, as the PyTorch exporters write them) and
//! notes them; the computation is unchanged.
//!
//! The pattern is `x·cos + rotate_half(x)·sin`, with
//! `rotate_half(x) = Concat(Neg(Slice(x, h:)), Slice(x, :h), axis = last)`:
//! `Add(Mul(x, cos), Mul(Concat(Neg(x2), x1), sin))`, every Mul and the Add in either operand
//! order. Both Slices read `x` along its last axis (`axes` a constant `-1` or `rank − 1`,
//! steps absent or 1); `x1` starts at 0 and `x2` ends at or past the end (≥ the last dim when
//! known, else at least 2³¹ − 1); `x1`'s end and `x2`'s start are the same split point: the
//! same value, `Unsqueeze`s of the same value, or equal constants (then half the last dim when
//! that is known). Every value between `x` and the Add is private to the pattern. The
//! interleaved (GPT-J) form is not matched.
//!
//! The Add gets `metadata_props` entries `kiln.pattern = Rotary` and `kiln.rotary`
//! (see [`ROTARY_KEY`]): `x=…;cos=…;sin=…`, the names of the rotated value and of the two
//! tables' values as the pattern reads them. The count reports patterns marked by this run.

use crate::ir::{AttrValue, Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};

use super::pattern::{
    dims, each_graph, is_op, known, operators, other_operand, out, producer, set_mark,
    sole_consumer,
};
use super::silu::SILU_KEY as PATTERN_KEY;

/// Metadata key on a rotary embedding's Add naming its input and tables by role.
pub const ROTARY_KEY: &str = "kiln.rotary";

/// Slice ends at least this large mean "to the end" when the dim is not known.
const TO_THE_END: i64 = i32::MAX as i64;

/// Notes rotary embeddings.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoteRotary;

impl Pass for NoteRotary {
    fn name(&self) -> &'static str {
        "note-rotary"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let n = each_graph(&mut model.graph, &mut |g| {
            let mut n = 0;
            for add in operators(g) {
                let Some(r) = rotary(g, add) else { continue };
                let roles = format!(
                    "x={};cos={};sin={}",
                    g.value_name(r.x),
                    g.value_name(r.cos),
                    g.value_name(r.sin)
                );
                if let Some(node) = g.node_mut(add) {
                    let a = set_mark(node, PATTERN_KEY, "Rotary");
                    let b = set_mark(node, ROTARY_KEY, &roles);
                    if a || b {
                        n += 1;
                    }
                }
            }
            Ok(n)
        })?;
        let mut changes = Changes::none();
        changes.add("rotary noted", n);
        Ok(changes)
    }
}

/// A recognized rotary embedding: the rotated value and the two tables.
struct Rotary {
    x: ValueRef,
    cos: ValueRef,
    sin: ValueRef,
}

/// The rotary embedding whose final Add is `add`.
fn rotary(g: &Graph, add: NodeIndex) -> Option<Rotary> {
    if !is_op(g, add, "Add") {
        return None;
    }
    let (a, b) = (g.input(add, 0)?, g.input(add, 1)?);
    [(a, b), (b, a)]
        .into_iter()
        .find_map(|(direct, rotated)| match_halves(g, add, direct, rotated))
}

/// `direct = Mul(x, cos)` and `rotated = Mul(rotate_half(x), sin)`, both private to `add`.
fn match_halves(g: &Graph, add: NodeIndex, direct: ValueRef, rotated: ValueRef) -> Option<Rotary> {
    let m1 = private_op(g, direct, "Mul", add)?;
    let m2 = private_op(g, rotated, "Mul", add)?;
    let (a, b) = (g.input(m2, 0)?, g.input(m2, 1)?);
    let (concat, sin) = [(a, b), (b, a)]
        .into_iter()
        .find_map(|(c, s)| producer(g, c, "Concat").map(|n| (n, s)))?;
    private_op(g, out(concat), "Concat", m2)?;
    let x = rotate_half_input(g, concat)?;
    let cos = other_operand(g, m1, x)?;
    (cos != x).then_some(Rotary { x, cos, sin })
}

/// The node producing `v` when it is operator `op` and `v` is read only by `reader`.
fn private_op(g: &Graph, v: ValueRef, op: &str, reader: NodeIndex) -> Option<NodeIndex> {
    let n = producer(g, v, op)?;
    (sole_consumer(g, v)?.0 == reader).then_some(n)
}

/// The `x` of `concat = Concat(Neg(Slice(x, h:)), Slice(x, :h))` along x's last axis.
fn rotate_half_input(g: &Graph, concat: NodeIndex) -> Option<ValueRef> {
    let node = g.node(concat)?;
    if node.input_arity != 2 {
        return None;
    }
    let axis = node.attr("axis").and_then(AttrValue::as_int)?;
    let neg = private_op(g, g.input(concat, 0)?, "Neg", concat)?;
    let x2 = private_op(g, g.input(neg, 0)?, "Slice", neg)?;
    let x1 = private_op(g, g.input(concat, 1)?, "Slice", concat)?;
    let x = g.input(x1, 0)?;
    if g.input(x2, 0)? != x {
        return None;
    }
    let shape = dims(g, x);
    let rank = shape.as_ref().map(|s| s.len() as i64);
    let last = |a: i64| a == -1 || rank.is_some_and(|r| a == r - 1);
    let dim = shape.as_ref().and_then(|s| s.last()).and_then(known);
    if !last(axis) || !last(slice_axis(g, x1)?) || !last(slice_axis(g, x2)?) {
        return None;
    }
    // x1 = x[..., 0:h], x2 = x[..., h:end].
    let start1 = g.input(x1, 1)?;
    let (end1, start2, end2) = (g.input(x1, 2)?, g.input(x2, 1)?, g.input(x2, 2)?);
    if one_int(g, start1)? != 0 {
        return None;
    }
    let to_end = one_int(g, end2)?;
    let reaches_end = match dim {
        Some(d) => to_end >= d as i64,
        None => to_end >= TO_THE_END,
    };
    if !reaches_end || !same_split(g, end1, start2, dim) {
        return None;
    }
    Some(x)
}

/// The one axis a Slice (opset ≥ 10 form) cuts, from its constant `axes` input, with steps
/// absent or 1.
fn slice_axis(g: &Graph, slice: NodeIndex) -> Option<i64> {
    if let Some(steps) = g.input(slice, 4) {
        if one_int(g, steps)? != 1 {
            return None;
        }
    }
    one_int(g, g.input(slice, 3)?)
}

/// The value of a one-element integer constant.
fn one_int(g: &Graph, v: ValueRef) -> Option<i64> {
    let t = g.constant(v)?;
    if t.len() != 1 || t.dtype().is_float() {
        return None;
    }
    let x = *t.to_f64_vec()?.first()?;
    Some(x as i64)
}

/// True when `a` and `b` hold the same split point: the same value, Unsqueezes of the same
/// value along the same constant axes, or equal constants (half of `dim` when it is known).
fn same_split(g: &Graph, a: ValueRef, b: ValueRef, dim: Option<usize>) -> bool {
    if a == b {
        return true;
    }
    if let (Some(x), Some(y)) = (one_int(g, a), one_int(g, b)) {
        return x == y && x > 0 && dim.is_none_or(|d| 2 * x == d as i64);
    }
    let unsqueezed = |v: ValueRef| {
        let n = producer(g, v, "Unsqueeze")?;
        let axes = match g.input(n, 1) {
            Some(c) => g.constant(c)?.to_f64_vec()?,
            None => g
                .node(n)?
                .attr("axes")?
                .as_ints()?
                .iter()
                .map(|&a| a as f64)
                .collect(),
        };
        Some((g.input(n, 0)?, axes))
    };
    matches!((unsqueezed(a), unsqueezed(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests;
