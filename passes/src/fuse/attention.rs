//! `find-attention`: recognizes scaled dot-product attention blocks and notes them; the
//! computation is unchanged.
//!
//! The block is `MatMul(Q, Kᵀ)` → optional scaling (`Div` / `Mul` by a one-element constant)
//! → optional masking (`Add` of any value, `Where(cond, scores, fill)`) or `Cast`, in any
//! order, at most four such steps → `Softmax` over the last axis → optional `Cast` →
//! `MatMul(probabilities, V)`. Every value between the two MatMuls must be private to the
//! block.
//!
//! # Convention
//!
//! The Softmax node gets `metadata_props` entry `kiln.attention` (see [`ATTENTION_KEY`]):
//! `;`-separated `role=value` pairs naming the output value of each node of the block, in
//! order: `qk=…;scale=…;mask=…;softmax=…;av=…` (`scale` / `mask` / `cast` only when present,
//! repeated if there are several).

use crate::ir::{Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};

use super::pattern::{dims, each_graph, is_op, operators, out, scalar, set_mark, sole_consumer};

/// Metadata key on the Softmax of an attention block listing the block's values by role.
pub const ATTENTION_KEY: &str = "kiln.attention";

/// How many scale / mask steps may sit between the QK MatMul and the Softmax.
const MAX_STEPS: usize = 4;

/// Recognizes attention blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct FindAttention;

impl Pass for FindAttention {
    fn name(&self) -> &'static str {
        "find-attention"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let opset = model.opset("").unwrap_or(0);
        let n = each_graph(&mut model.graph, &mut |g| {
            let mut n = 0;
            for sm in operators(g) {
                let Some(roles) = block(g, sm, opset) else {
                    continue;
                };
                let desc: Vec<String> = roles
                    .iter()
                    .map(|(role, v)| format!("{role}={}", g.value_name(*v)))
                    .collect();
                if g.node_mut(sm)
                    .is_some_and(|node| set_mark(node, ATTENTION_KEY, &desc.join(";")))
                {
                    n += 1;
                }
            }
            Ok(n)
        })?;
        let mut changes = Changes::none();
        changes.add("attention blocks", n);
        Ok(changes)
    }
}

/// The block around Softmax `sm`, as (role, value) pairs from QK to AV.
fn block(g: &Graph, sm: NodeIndex, opset: i64) -> Option<Vec<(&'static str, ValueRef)>> {
    if !is_op(g, sm, "Softmax") {
        return None;
    }
    let default_axis = if opset >= 13 { -1 } else { 1 };
    let axis = g
        .node(sm)?
        .attr("axis")
        .and_then(|a| a.as_int())
        .unwrap_or(default_axis);
    let input = g.input(sm, 0)?;
    let rank = dims(g, input).map(|d| d.len() as i64);
    let last = axis == -1 || rank.is_some_and(|r| axis == r - 1);
    // Before opset 13 Softmax flattens from `axis`; only the last axis is the per-row softmax.
    if !last {
        return None;
    }
    let mut roles = chain_up(g, input, sm, MAX_STEPS)?;
    roles.push(("softmax", out(sm)));
    // Exporters may cast the probabilities (often to the type they already have).
    let (mut av, mut slot) = sole_consumer(g, out(sm))?;
    if is_op(g, av, "Cast") {
        roles.push(("cast", out(av)));
        (av, slot) = sole_consumer(g, out(av))?;
    }
    if !is_op(g, av, "MatMul") || slot != 0 {
        return None;
    }
    roles.push(("av", out(av)));
    Some(roles)
}

/// Walks from `v` (read privately by `reader`) up to the QK MatMul through scale and mask steps.
fn chain_up(
    g: &Graph,
    v: ValueRef,
    reader: NodeIndex,
    steps: usize,
) -> Option<Vec<(&'static str, ValueRef)>> {
    if v.slot != 0 || sole_consumer(g, v).map(|c| c.0) != Some(reader) {
        return None;
    }
    let p = v.node;
    if is_op(g, p, "MatMul") {
        return Some(vec![("qk", v)]);
    }
    if steps == 0 {
        return None;
    }
    let ins = g.inputs(p);
    let step = |prev: ValueRef, role: &'static str| {
        chain_up(g, prev, p, steps - 1).map(|mut r| {
            r.push((role, v));
            r
        })
    };
    if is_op(g, p, "Div") {
        let (a, b) = (ins.first().copied()??, ins.get(1).copied()??);
        return scalar(g, b).and_then(|_| step(a, "scale"));
    }
    if is_op(g, p, "Mul") {
        let (a, b) = (ins.first().copied()??, ins.get(1).copied()??);
        return match (scalar(g, a), scalar(g, b)) {
            (None, Some(_)) => step(a, "scale"),
            (Some(_), None) => step(b, "scale"),
            _ => None,
        };
    }
    if is_op(g, p, "Add") {
        let (a, b) = (ins.first().copied()??, ins.get(1).copied()??);
        return step(a, "mask").or_else(|| step(b, "mask"));
    }
    if is_op(g, p, "Cast") {
        return step(ins.first().copied()??, "cast");
    }
    if is_op(g, p, "Where") {
        let (a, b) = (ins.get(1).copied()??, ins.get(2).copied()??);
        return step(a, "mask").or_else(|| step(b, "mask"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::testutil::{ints_attr, Builder};
    use crate::ir::AttrValue;

    /// q, k, v [1,2,4,8]; Transpose(k) → MatMul → Div → Add(mask) → Softmax → MatMul.
    fn build(scale: bool, mask: bool) -> Builder {
        let mut b = Builder::new(13);
        let q = b.input("q", &[1, 2, 4, 8]);
        let k = b.input("k", &[1, 2, 4, 8]);
        let v = b.input("v", &[1, 2, 4, 8]);
        let kt = b.op("Transpose", &[k], vec![("perm", ints_attr(&[0, 1, 3, 2]))]);
        let mut s = b.op("MatMul", &[q, kt], vec![]);
        if scale {
            let c = b.scalar(2.828427);
            s = b.op("Div", &[s, c], vec![]);
        }
        if mask {
            let m = b.input("mask", &[1, 1, 1, 4]);
            s = b.op("Add", &[m, s], vec![]);
        }
        b.shape(s, &[1, 2, 4, 4]);
        let p = b.op("Softmax", &[s], vec![("axis", AttrValue::Int(3))]);
        let y = b.op("MatMul", &[p, v], vec![]);
        b.output(y);
        b
    }

    #[test]
    fn finds_blocks_with_and_without_scale_and_mask() {
        for (scale, mask) in [(true, true), (true, false), (false, true), (false, false)] {
            let mut b = build(scale, mask);
            assert_eq!(b.run(&FindAttention).get("attention blocks"), 1);
            let (_, sm) = b
                .model
                .graph
                .nodes()
                .find(|(_, n)| n.op_type() == "Softmax")
                .unwrap();
            let note = &sm.metadata_props[0].value;
            assert!(note.starts_with("qk=MatMul_"), "{note}");
            assert_eq!(note.contains("scale="), scale);
            assert_eq!(note.contains("mask="), mask);
            assert!(note.contains(";av=MatMul_"));
            assert!(b.run(&FindAttention).is_empty());
        }
    }

    #[test]
    fn a_cast_after_softmax_is_part_of_the_block() {
        let mut b = Builder::new(13);
        let q = b.input("q", &[2, 4, 8]);
        let kt = b.input("kt", &[2, 8, 4]);
        let v = b.input("v", &[2, 4, 8]);
        let s = b.op("MatMul", &[q, kt], vec![]);
        let p = b.op("Softmax", &[s], vec![]);
        let c = b.op("Cast", &[p], vec![("to", AttrValue::Int(1))]);
        let y = b.op("MatMul", &[c, v], vec![]);
        b.output(y);
        assert_eq!(b.run(&FindAttention).get("attention blocks"), 1);
    }

    #[test]
    fn ignores_softmax_not_between_matmuls_or_with_shared_scores() {
        let mut b = build(true, true);
        let g = &b.model.graph;
        let (sm, _) = g.nodes().find(|(_, n)| n.op_type() == "Softmax").unwrap();
        let scores = g.input(sm, 0).unwrap();
        b.output(scores);
        assert!(b.run(&FindAttention).is_empty());

        let mut b = Builder::new(13);
        let x = b.input("x", &[2, 4]);
        let p = b.op("Softmax", &[x], vec![]);
        let w = b.input("w", &[4, 4]);
        let y = b.op("MatMul", &[p, w], vec![]);
        b.output(y);
        assert!(b.run(&FindAttention).is_empty());
    }
}
