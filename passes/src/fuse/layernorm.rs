//! `fuse-layernorm`: decomposed layer normalization → LayerNormalization (opset ≥ 17; with an
//! older default opset the graph is left alone).
//!
//! Recognized forms, anchored at `d = Sub(x, ReduceMean(x))`:
//! - PyTorch (`nn.LayerNorm` before opset 17): `Pow(d, 2)` or `Mul(d, d)` → `ReduceMean` →
//!   `Add(·, eps)` → `Sqrt` → `Div(d, ·)` or `Mul(d, Reciprocal(·))`, then optionally
//!   `Mul(·, gamma)` and `Add(·, beta)` with constant gamma / beta;
//! - TensorFlow / Keras (tf2onnx): `Mul(d, d)` → `ReduceMean` → `Add(·, eps)` → `Sqrt` →
//!   `Reciprocal` (Rsqrt) → optionally `Mul(·, gamma)` = `g`, then `Add(Mul(x, g),
//!   Sub(beta, Mul(mean, g)))`.
//!
//! Both ReduceMeans must reduce the same last `k` axes (attribute before opset 18, constant
//! input from 18) with `keepdims = 1`; the LayerNormalization gets `axis = -k`. Normalizing
//! dims must be known (declared shapes) so scale and bias can be given the normalized shape:
//! gamma / beta broadcast to it (rejected if they would broadcast over the leading axes),
//! a missing gamma becomes ones, a missing beta stays absent. Epsilon is read from the
//! constant. RMSNorm (no mean subtracted) has no such `Sub` and is not matched.

use crate::ir::{AttrValue, Attribute, Dim, Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::{DataType, Tensor};

use super::pattern::{
    add_initializer, broadcast_to, close, consumer_nodes, dims, each_graph, float_tensor, is_op,
    known, operand_uses, operands_of, operators, other_operand, out, producer, remove_nodes,
    rewrite_node, scalar, scalar_keeps_shape, sole_consumer,
};

/// Replaces decomposed LayerNorm with LayerNormalization.
#[derive(Debug, Clone, Copy, Default)]
pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse-layernorm"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        if model.opset("").unwrap_or(0) < 17 {
            return Ok(changes);
        }
        let (mut torch, mut tf) = (0, 0);
        each_graph(&mut model.graph, &mut |g| {
            for sub in operators(g) {
                let Some(m) = match_at(g, sub) else { continue };
                let Some(plan) = plan(g, &m) else { continue };
                apply(g, &m, plan);
                if m.tf {
                    tf += 1;
                } else {
                    torch += 1;
                }
            }
            Ok(0)
        })?;
        changes.add("layernorm", torch);
        changes.add("layernorm (tf form)", tf);
        Ok(changes)
    }
}

/// A matched pattern, before its constants are checked.
struct Match {
    x: ValueRef,
    axes: Vec<i64>,
    eps: ValueRef,
    gamma: Option<ValueRef>,
    beta: Option<ValueRef>,
    /// Every node of the pattern; the last one becomes the LayerNormalization.
    nodes: Vec<NodeIndex>,
    /// Values whose declared shape is x's (x, d, the output): where the rank comes from.
    same_shape: Vec<ValueRef>,
    tf: bool,
}

/// What the rewrite needs: the attributes and the scale / bias inputs.
struct Plan {
    axis: i64,
    eps: f32,
    scale: Operand,
    bias: Option<Operand>,
}

/// A scale / bias input: an existing constant of the right shape, or a new one.
enum Operand {
    Existing(ValueRef),
    New(String, Tensor),
}

fn apply(g: &mut Graph, m: &Match, plan: Plan) {
    let Some((&last, inner)) = m.nodes.split_last() else {
        return;
    };
    let attrs = vec![
        Attribute::new("axis", AttrValue::Int(plan.axis)),
        Attribute::new("epsilon", AttrValue::Float(plan.eps)),
    ];
    let existing = |o: &Operand| match o {
        Operand::Existing(v) => Some(*v),
        Operand::New(..) => None,
    };
    let old = operands_of(g, &m.nodes);
    let scale = existing(&plan.scale);
    let bias = plan.bias.as_ref().and_then(existing);
    let mut inputs = vec![Some(m.x), scale];
    if plan.bias.is_some() {
        inputs.push(bias);
    }
    rewrite_node(g, last, "LayerNormalization", "", attrs, &inputs, 1);
    remove_nodes(g, inner, &old);
    for (slot, o) in [(1, Some(plan.scale)), (2, plan.bias)] {
        if let Some(Operand::New(name, t)) = o {
            let v = add_initializer(g, &name, t);
            g.connect(v, last, slot);
        }
    }
}

/// The axes a ReduceMean with `keepdims = 1` reduces (`None` for all axes or no-op forms).
pub(super) fn reduce_axes(g: &Graph, r: NodeIndex) -> Option<Vec<i64>> {
    let node = g.node(r)?;
    if node.attr("keepdims").and_then(|a| a.as_int()).unwrap_or(1) != 1 {
        return None;
    }
    let axes = match node.attr("axes").and_then(|a| a.as_ints()) {
        Some(a) => a.to_vec(),
        None => g.constant_input(r, 1)?.to_vec::<i64>().ok()?,
    };
    (!axes.is_empty()).then_some(axes)
}

/// The ReduceMean producing `mean` from `x`, and the axes it reduces.
fn mean_of(g: &Graph, mean: ValueRef, x: ValueRef) -> Option<(NodeIndex, Vec<i64>)> {
    let r = producer(g, mean, "ReduceMean")?;
    (g.input(r, 0)? == x).then_some(())?;
    Some((r, reduce_axes(g, r)?))
}

fn match_at(g: &Graph, sub: NodeIndex) -> Option<Match> {
    if !is_op(g, sub, "Sub") {
        return None;
    }
    let (x, mean) = (g.input(sub, 0)?, g.input(sub, 1)?);
    let (r1, axes) = mean_of(g, mean, x)?;
    let d = out(sub);
    let d_users = consumer_nodes(g, d)?;
    let sq = *d_users.iter().find(|&&n| squares(g, n, d))?;
    // var = ReduceMean(d²) over the same axes, eps added, square root taken.
    let (r2, _) = sole_consumer(g, out(sq))?;
    if !is_op(g, r2, "ReduceMean") || reduce_axes(g, r2)? != axes {
        return None;
    }
    let (add_eps, _) = sole_consumer(g, out(r2))?;
    if !is_op(g, add_eps, "Add") {
        return None;
    }
    let eps = other_operand(g, add_eps, out(r2))?;
    let (sqrt, _) = sole_consumer(g, out(add_eps))?;
    if !is_op(g, sqrt, "Sqrt") {
        return None;
    }
    let std = out(sqrt);
    let head = vec![r1, sub, sq, r2, add_eps, sqrt];
    let others: Vec<NodeIndex> = d_users.iter().copied().filter(|&n| n != sq).collect();
    let mean_uses = operand_uses(g, mean)?;
    match others.as_slice() {
        [norm] if mean_uses.len() == 1 => torch_tail(g, x, d, std, *norm, axes, eps, head),
        [] => tf_tail(g, x, mean, std, axes, eps, head),
        _ => None,
    }
}

/// True when `node` computes `d²` as `Pow(d, 2)` or `Mul(d, d)`.
fn squares(g: &Graph, node: NodeIndex, d: ValueRef) -> bool {
    if is_op(g, node, "Pow") {
        return g.input(node, 0) == Some(d)
            && g.input(node, 1)
                .and_then(|e| scalar(g, e))
                .is_some_and(|e| close(e, 2.0));
    }
    is_op(g, node, "Mul") && g.input(node, 0) == Some(d) && g.input(node, 1) == Some(d)
}

/// PyTorch: `d / std` (or `d · (1/std)`), then optional `· gamma` and `+ beta`.
#[allow(clippy::too_many_arguments)]
fn torch_tail(
    g: &Graph,
    x: ValueRef,
    d: ValueRef,
    std: ValueRef,
    norm: NodeIndex,
    axes: Vec<i64>,
    eps: ValueRef,
    mut nodes: Vec<NodeIndex>,
) -> Option<Match> {
    if is_op(g, norm, "Div") {
        if g.input(norm, 0)? != d || g.input(norm, 1)? != std || sole_consumer(g, std)? != (norm, 1)
        {
            return None;
        }
    } else if is_op(g, norm, "Mul") {
        let (rec, _) = sole_consumer(g, std)?;
        if !is_op(g, rec, "Reciprocal") || other_operand(g, norm, d)? != out(rec) {
            return None;
        }
        if sole_consumer(g, out(rec))?.0 != norm {
            return None;
        }
        nodes.push(rec);
    } else {
        return None;
    }
    nodes.push(norm);
    let mut cur = out(norm);
    let affine = |op: &str, nodes: &mut Vec<NodeIndex>, cur: &mut ValueRef| {
        let (next, _) = sole_consumer(g, *cur)?;
        if !is_op(g, next, op) {
            return None;
        }
        let c = other_operand(g, next, *cur)?;
        g.constant(c)?;
        nodes.push(next);
        *cur = out(next);
        Some(c)
    };
    let gamma = affine("Mul", &mut nodes, &mut cur);
    let beta = affine("Add", &mut nodes, &mut cur);
    Some(Match {
        x,
        axes,
        eps,
        gamma,
        beta,
        nodes,
        same_shape: vec![x, d, cur],
        tf: false,
    })
}

/// TensorFlow: `r = 1/std`, `g = r · gamma`, `x·g + (beta − mean·g)`.
fn tf_tail(
    g: &Graph,
    x: ValueRef,
    mean: ValueRef,
    std: ValueRef,
    axes: Vec<i64>,
    eps: ValueRef,
    mut nodes: Vec<NodeIndex>,
) -> Option<Match> {
    let (rec, _) = sole_consumer(g, std)?;
    if !is_op(g, rec, "Reciprocal") {
        return None;
    }
    nodes.push(rec);
    let mut gv = out(rec);
    let mut gamma = None;
    if let Some((m, _)) = sole_consumer(g, gv) {
        let c = other_operand(g, m, gv).filter(|_| is_op(g, m, "Mul"))?;
        g.constant(c)?;
        gamma = Some(c);
        nodes.push(m);
        gv = out(m);
    }
    let users = consumer_nodes(g, gv)?;
    let [a, b] = users.as_slice() else {
        return None;
    };
    let pick = |want: ValueRef| {
        [*a, *b]
            .into_iter()
            .find(|&n| is_op(g, n, "Mul") && other_operand(g, n, gv) == Some(want))
    };
    let (t1, t2) = (pick(x)?, pick(mean)?);
    if t1 == t2 || operand_uses(g, gv)?.len() != 2 {
        return None;
    }
    // mean is read by the Sub computing d and by t2, nothing else.
    let mean_readers: Vec<NodeIndex> = operand_uses(g, mean)?.into_iter().map(|u| u.0).collect();
    if mean_readers.len() != 2 || !mean_readers.contains(&t2) {
        return None;
    }
    let (t3, _) = sole_consumer(g, out(t2))?;
    if !is_op(g, t3, "Sub") || g.input(t3, 1)? != out(t2) {
        return None;
    }
    let beta = g.input(t3, 0)?;
    g.constant(beta)?;
    let (fin, _) = sole_consumer(g, out(t1))?;
    if !is_op(g, fin, "Add")
        || sole_consumer(g, out(t3))?.0 != fin
        || other_operand(g, fin, out(t1))? != out(t3)
    {
        return None;
    }
    nodes.extend([t1, t2, t3, fin]);
    Some(Match {
        x,
        axes,
        eps,
        gamma,
        beta: Some(beta),
        nodes,
        same_shape: vec![x, out(fin)],
        tf: true,
    })
}

/// The known sizes of the normalized dims, when `axes` are exactly the trailing dims of
/// `shape` (the only form LayerNormalization's `axis` and RMSNormalization's can express).
pub(super) fn trailing_shape(shape: &[Dim], axes: &[i64]) -> Option<Vec<usize>> {
    let rank = shape.len() as i64;
    let k = axes.len();
    let mut axes: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + rank } else { a })
        .collect();
    axes.sort_unstable();
    let expected: Vec<i64> = (rank - k as i64..rank).collect();
    if k == 0 || axes != expected {
        return None;
    }
    shape[shape.len() - k..].iter().map(known).collect()
}

/// Checks shapes, types and constants; the rewrite's inputs and attributes.
fn plan(g: &Graph, m: &Match) -> Option<Plan> {
    let shape: Vec<Dim> = m.same_shape.iter().find_map(|&v| dims(g, v))?;
    let norm = trailing_shape(&shape, &m.axes)?;
    let k = norm.len();

    let eps_t = g.constant(m.eps)?;
    let dtype = eps_t.dtype();
    let eps = scalar(g, m.eps)?;
    if !dtype.is_float() || !scalar_keeps_shape(g, m.eps, m.x) || !(0.0..1.0).contains(&eps) {
        return None;
    }
    let operand = |v: Option<ValueRef>, fill: f64, suffix: &str| -> Option<Option<Operand>> {
        let Some(v) = v else {
            if fill == 0.0 {
                return Some(None);
            }
            let ones = vec![fill; norm.iter().product()];
            let name = format!("{}_{suffix}", g.value_name(out(*m.nodes.last()?)));
            return Some(Some(Operand::New(
                name,
                float_tensor(dtype, norm.clone(), &ones)?,
            )));
        };
        let t = g.constant(v)?;
        if t.dtype() != dtype {
            return None;
        }
        if t.shape() == norm.as_slice() {
            return Some(Some(Operand::Existing(v)));
        }
        let vals = to_normalized(t, &norm, shape.len())?;
        let name = format!("{}_{suffix}", g.value_name(v));
        Some(Some(Operand::New(
            name,
            float_tensor(dtype, norm.clone(), &vals)?,
        )))
    };
    let scale = operand(m.gamma, 1.0, "scale")??;
    let bias = operand(m.beta, 0.0, "bias")?;
    if !matches!(
        dtype,
        DataType::Float | DataType::Float16 | DataType::Double | DataType::Bfloat16
    ) {
        return None;
    }
    Some(Plan {
        axis: -(k as i64),
        eps: eps as f32,
        scale,
        bias,
    })
}

/// A gamma / beta broadcast against `[…, norm]` (rank `rank`) as a tensor of shape `norm`;
/// `None` when it would vary over the leading axes or grow the result.
pub(super) fn to_normalized(t: &Tensor, norm: &[usize], rank: usize) -> Option<Vec<f64>> {
    let ts = t.shape();
    if ts.len() > rank {
        return None;
    }
    let lead = ts.len().saturating_sub(norm.len());
    if ts[..lead].iter().any(|&d| d != 1) {
        return None;
    }
    broadcast_to(&t.to_f64_vec()?, &ts[lead..], norm)
}

#[cfg(test)]
mod tests;
