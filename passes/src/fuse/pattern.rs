//! Small questions and edits every fusion pattern needs: which node produces a value, whether
//! an intermediate value is private to the pattern, what a constant holds, and how the last
//! node of a matched pattern becomes the fused operator.

use half::{bf16, f16};
use kiln_proto::onnx::StringStringEntryProto;

use crate::ir::{Attribute, Dim, Graph, InputSlot, Node, NodeIndex, NodeKind, ValueRef};
use crate::pipeline::PassError;
use crate::tensor::{DataType, Tensor};

/// Relative tolerance for matching the literal constants of a pattern (0.5, √2, 0.044715 …).
pub const CONST_RTOL: f64 = 1e-4;

/// True when `node` is operator `op` of the default domain.
pub fn is_op(g: &Graph, node: NodeIndex, op: &str) -> bool {
    g.node(node).is_some_and(|n| {
        matches!(n.kind, NodeKind::Op { .. })
            && n.op_type() == op
            && matches!(n.domain(), "" | "ai.onnx")
    })
}

/// The node producing `value`, when it is operator `op` of the default domain.
pub fn producer(g: &Graph, value: ValueRef, op: &str) -> Option<NodeIndex> {
    is_op(g, value.node, op).then_some(value.node)
}

/// Output 0 of `node`.
pub fn out(node: NodeIndex) -> ValueRef {
    ValueRef::new(node, 0)
}

/// True when `value` is one of the graph's outputs.
pub fn is_graph_output(g: &Graph, value: ValueRef) -> bool {
    g.outputs.iter().any(|o| o.value == value)
}

/// The nodes reading `value` as an operand, with the slot, when that is its only use
/// (`None` when it is a graph output or a subgraph captures it).
pub fn operand_uses(g: &Graph, value: ValueRef) -> Option<Vec<(NodeIndex, usize)>> {
    if is_graph_output(g, value) {
        return None;
    }
    g.consumers(value)
        .into_iter()
        .map(|(n, s)| match s {
            InputSlot::Operand(i) => Some((n, i)),
            InputSlot::Captured => None,
        })
        .collect()
}

/// The one node reading `value`, when the value is private to it: read once, by one operand
/// slot, not a graph output, not captured by a subgraph.
pub fn sole_consumer(g: &Graph, value: ValueRef) -> Option<(NodeIndex, usize)> {
    match operand_uses(g, value)?.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The distinct nodes reading `value` when every use is an operand and it is no graph output.
pub fn consumer_nodes(g: &Graph, value: ValueRef) -> Option<Vec<NodeIndex>> {
    let mut nodes: Vec<NodeIndex> = operand_uses(g, value)?.into_iter().map(|u| u.0).collect();
    nodes.dedup();
    Some(nodes)
}

/// The other operand of a binary node `node` that reads `value` (when both operands are
/// `value`, `value` itself).
pub fn other_operand(g: &Graph, node: NodeIndex, value: ValueRef) -> Option<ValueRef> {
    let ins = g.inputs(node);
    match ins.as_slice() {
        [Some(a), Some(b)] if *a == value => Some(*b),
        [Some(a), Some(b)] if *b == value => Some(*a),
        _ => None,
    }
}

/// The value of a one-element floating-point constant.
pub fn scalar(g: &Graph, value: ValueRef) -> Option<f64> {
    let t = g.constant(value)?;
    if t.len() != 1 || !t.dtype().is_float() {
        return None;
    }
    t.to_f64_vec()?.first().copied()
}

/// True when `a` and `b` agree within [`CONST_RTOL`].
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= CONST_RTOL * b.abs().max(a.abs())
}

/// A one-element floating-point constant close to `expected`, whose rank does not make the
/// result of broadcasting it against `against` larger than `against`.
pub fn scalar_near(g: &Graph, value: ValueRef, expected: f64, against: ValueRef) -> bool {
    let Some(v) = scalar(g, value) else {
        return false;
    };
    close(v, expected) && scalar_keeps_shape(g, value, against)
}

/// True when broadcasting a one-element constant against `against` keeps `against`'s shape:
/// the constant is rank 0, or `against`'s rank is known and at least the constant's.
pub fn scalar_keeps_shape(g: &Graph, constant: ValueRef, against: ValueRef) -> bool {
    let rank = g.constant(constant).map_or(usize::MAX, |t| t.shape().len());
    rank == 0 || dims(g, against).is_some_and(|d| d.len() >= rank)
}

/// What is known of a value's shape: a constant's dims, else its declared shape.
pub fn dims(g: &Graph, value: ValueRef) -> Option<Vec<Dim>> {
    if let Some(t) = g.constant(value) {
        return Some(t.shape().iter().map(|&d| Dim::Known(d as i64)).collect());
    }
    g.node(value.node)?.outputs.get(value.slot)?.shape()
}

/// The element type of a value: a constant's, else the declared one.
pub fn elem_type(g: &Graph, value: ValueRef) -> Option<DataType> {
    if let Some(t) = g.constant(value) {
        return Some(t.dtype());
    }
    g.node(value.node)?.outputs.get(value.slot)?.elem_type()
}

/// A known dimension as `usize`.
pub fn known(d: &Dim) -> Option<usize> {
    match d {
        Dim::Known(n) if *n >= 0 => usize::try_from(*n).ok(),
        _ => None,
    }
}

/// True when a tensor of shape `small` broadcasts onto `target` without growing it: its rank
/// is at most `target`'s and each of its dims (right-aligned) is 1 or the known target dim.
pub fn fits_onto(small: &[usize], target: &[Dim]) -> bool {
    small.len() <= target.len()
        && small
            .iter()
            .rev()
            .zip(target.iter().rev())
            .all(|(&s, t)| s == 1 || known(t) == Some(s))
}

/// Numpy broadcasting of `values` (shape `from`) to shape `to`; `None` if it does not broadcast.
pub fn broadcast_to(values: &[f64], from: &[usize], to: &[usize]) -> Option<Vec<f64>> {
    if from.len() > to.len() || values.len() != from.iter().product::<usize>() {
        return None;
    }
    let pad = to.len() - from.len();
    let full: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(from.iter().copied())
        .collect();
    if full.iter().zip(to).any(|(&f, &t)| f != 1 && f != t) {
        return None;
    }
    // Strides of the source, zero along broadcast axes.
    let mut strides = vec![0usize; to.len()];
    let mut acc = 1;
    for i in (0..to.len()).rev() {
        strides[i] = if full[i] == 1 { 0 } else { acc };
        acc *= full[i];
    }
    let total: usize = to.iter().product();
    let mut outv = Vec::with_capacity(total);
    for flat in 0..total {
        let (mut rem, mut src) = (flat, 0);
        for i in (0..to.len()).rev() {
            src += (rem % to[i]) * strides[i];
            rem /= to[i];
        }
        outv.push(values[src]);
    }
    Some(outv)
}

/// Numpy's broadcast shape of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        (i + s.len())
            .checked_sub(n)
            .map_or(1, |j| s.get(j).copied().unwrap_or(1))
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// A floating-point tensor of `dtype` from `f64` values (rounded to nearest).
pub fn float_tensor(dtype: DataType, shape: Vec<usize>, v: &[f64]) -> Option<Tensor> {
    let t = match dtype {
        DataType::Float => Tensor::from_vec(shape, v.iter().map(|&x| x as f32).collect()),
        DataType::Double => Tensor::from_vec(shape, v.to_vec()),
        DataType::Float16 => Tensor::from_vec(shape, v.iter().map(|&x| f16::from_f64(x)).collect()),
        DataType::Bfloat16 => {
            Tensor::from_vec(shape, v.iter().map(|&x| bf16::from_f64(x)).collect())
        }
        _ => return None,
    };
    t.ok()
}

/// Adds a new initializer named after `base` (made unique) and returns its value.
pub fn add_initializer(g: &mut Graph, base: &str, t: Tensor) -> ValueRef {
    let name = g.fresh_name(base);
    out(g.add_node(Node::initializer(&name, t)))
}

/// Turns `node` into operator `op_type` of `domain` with `attributes` and `inputs`, keeping its
/// outputs (names, types, uses), name and documentation; extra outputs are dropped.
///
/// This is how a pattern is replaced: its last node becomes the fused operator, so the
/// pattern's output keeps its name and every reader.
pub fn rewrite_node(
    g: &mut Graph,
    node: NodeIndex,
    op_type: &str,
    domain: &str,
    attributes: Vec<Attribute>,
    inputs: &[Option<ValueRef>],
    outputs: usize,
) {
    let arity = g.node(node).map_or(0, |n| n.input_arity);
    for slot in 0..arity {
        g.disconnect(node, slot);
    }
    if let Some(n) = g.node_mut(node) {
        n.kind = NodeKind::Op {
            op_type: op_type.to_string(),
            domain: domain.to_string(),
            overload: String::new(),
        };
        n.attributes = attributes;
        n.input_arity = inputs.len();
        n.outputs.truncate(outputs);
    }
    for (slot, v) in inputs.iter().enumerate() {
        if let Some(v) = v {
            g.connect(*v, node, slot);
        }
    }
}

/// Removes `nodes`, then every constant among `maybe_dead` that nothing reads any more
/// (listed initializers are graph inputs and stay).
pub fn remove_nodes(g: &mut Graph, nodes: &[NodeIndex], maybe_dead: &[ValueRef]) {
    for &n in nodes {
        g.remove_node(n);
    }
    for v in maybe_dead {
        let dead = g
            .node(v.node)
            .is_some_and(|n| matches!(n.kind, NodeKind::Constant { .. }) && !n.is_listed_input())
            && (0..g.node(v.node).map_or(0, |n| n.outputs.len()))
                .all(|s| !g.is_used(ValueRef::new(v.node, s)));
        if dead {
            g.remove_node(v.node);
        }
    }
}

/// The operand values of `nodes` (candidates for [`remove_nodes`]'s dead-constant sweep).
pub fn operands_of(g: &Graph, nodes: &[NodeIndex]) -> Vec<ValueRef> {
    nodes
        .iter()
        .flat_map(|&n| g.inputs(n).into_iter().flatten())
        .collect()
}

/// Sets node metadata `key` to `value`; true when that changed something.
pub fn set_mark(node: &mut Node, key: &str, value: &str) -> bool {
    match node.metadata_props.iter_mut().find(|e| e.key == key) {
        Some(e) if e.value == value => false,
        Some(e) => {
            e.value = value.to_string();
            true
        }
        None => {
            node.metadata_props.push(StringStringEntryProto {
                key: key.to_string(),
                value: value.to_string(),
            });
            true
        }
    }
}

/// Runs `f` on `g` and on every subgraph inside it (innermost first), summing the counts.
pub fn each_graph(
    g: &mut Graph,
    f: &mut dyn FnMut(&mut Graph) -> Result<usize, PassError>,
) -> Result<usize, PassError> {
    let mut n = 0;
    g.try_for_each_graph_mut::<PassError>(&mut |g| {
        n += f(g)?;
        Ok(())
    })?;
    Ok(n)
}

/// The operators of `g` in topological order (a snapshot; matchers skip removed nodes).
pub fn operators(g: &Graph) -> Vec<NodeIndex> {
    g.topo_order()
        .into_iter()
        .filter(|&i| {
            g.node(i)
                .is_some_and(|n| matches!(n.kind, NodeKind::Op { .. }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_expands_and_refuses() {
        assert_eq!(
            broadcast_to(&[1.0, 2.0], &[2, 1], &[2, 3]),
            Some(vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
        );
        assert_eq!(
            broadcast_to(&[1.0, 2.0, 3.0], &[3], &[2, 3]),
            Some(vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
        );
        assert_eq!(broadcast_to(&[1.0, 2.0], &[2], &[3]), None);
        assert_eq!(broadcast_shape(&[1, 4], &[3, 1]), Some(vec![3, 4]));
        assert_eq!(broadcast_shape(&[4], &[3, 4]), Some(vec![3, 4]));
        assert_eq!(broadcast_shape(&[2], &[3]), None);
    }

    #[test]
    fn fits_onto_needs_known_dims() {
        let t = [Dim::Symbolic("m".into()), Dim::Known(4)];
        assert!(fits_onto(&[4], &t));
        assert!(fits_onto(&[1, 4], &t));
        assert!(!fits_onto(&[2, 4], &t));
        assert!(!fits_onto(&[1, 1, 4], &t));
        assert!(!fits_onto(&[3], &t));
    }

    #[test]
    #[allow(clippy::approx_constant)]
    fn constants_match_within_tolerance() {
        assert!(close(1.4142135, std::f64::consts::SQRT_2));
        assert!(close(0.70710677, std::f64::consts::FRAC_1_SQRT_2));
        assert!(!close(0.5001, 0.5));
    }
}
