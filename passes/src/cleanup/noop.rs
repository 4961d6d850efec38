//! `remove-noop`: operators that provably return their input unchanged.

use crate::ir::{Dim, Graph, Model, Node, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::DataType;

use super::bypass::bypass;
use super::util::{const_ints, each_graph, elem_type_of, shape_of};

/// Removes Cast/CastLike to the input's own type, Reshape to the input's own shape,
/// identity Transpose, all-zero Pad, whole-tensor Slice, neutral Expand, Mul/Div by one,
/// Add/Sub of zero (when broadcasting cannot change the shape), single-input
/// Concat/Sum/Max/Min/Mean, and a Squeeze/Unsqueeze that undoes the one before it. Shapes and types come from ValueInfo and constants; what is not
/// known is not removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoveNoop;

impl Pass for RemoveNoop {
    fn name(&self) -> &'static str {
        "remove-noop"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let opset = model.opset("").unwrap_or(1);
        each_graph(&mut model.graph, &mut |g| Ok(remove_in(g, opset)))
    }
}

fn remove_in(graph: &mut Graph, opset: i64) -> Changes {
    let mut changes = Changes::none();
    for idx in graph.topo_order() {
        let Some(node) = graph.node(idx) else {
            continue;
        };
        if node.outputs.len() != 1 || !node.domain().is_empty() && node.domain() != "ai.onnx" {
            continue;
        }
        let Some(input) = noop_input(graph, idx, node, opset) else {
            continue;
        };
        let what = node.op_type().to_ascii_lowercase();
        if bypass(graph, idx, 0, input) {
            changes.add(&what, 1);
        }
    }
    changes
}

/// The input the node's output equals, if the node is a no-op.
fn noop_input(graph: &Graph, idx: NodeIndex, node: &Node, opset: i64) -> Option<ValueRef> {
    let x = graph.input(idx, 0)?;
    let ok = match node.op_type() {
        "Cast" => cast_is_noop(graph, x, node),
        "CastLike" => {
            let to = elem_type_of(graph, graph.input(idx, 1)?)?;
            elem_type_of(graph, x) == Some(to)
        }
        "Reshape" => reshape_is_noop(graph, idx, x, node),
        "Transpose" => transpose_is_noop(graph, x, node),
        "Pad" => pad_is_noop(graph, idx, node, opset),
        "Slice" => slice_is_noop(graph, idx, x, node, opset),
        "Expand" => {
            let shape = const_ints(graph, idx, 1)?;
            broadcast_keeps_shape(&shape_of(graph, x)?, &shape)
        }
        "Add" | "Mul" => {
            // Commutative: the neutral constant may be either operand.
            let neutral = if node.op_type() == "Add" { 0.0 } else { 1.0 };
            if is_neutral_for(graph, idx, 1, 0, neutral) {
                true
            } else if is_neutral_for(graph, idx, 0, 1, neutral) {
                return graph.input(idx, 1);
            } else {
                false
            }
        }
        "Sub" => is_neutral_for(graph, idx, 1, 0, 0.0),
        "Div" => is_neutral_for(graph, idx, 1, 0, 1.0),
        "Concat" | "Sum" | "Max" | "Min" | "Mean" => node.input_arity == 1,
        "Squeeze" | "Unsqueeze" => return undone_squeeze(graph, idx, x, opset),
        _ => false,
    };
    ok.then_some(x)
}

/// Squeeze(Unsqueeze(x, a), a) or Unsqueeze(Squeeze(x, a), a): both normalize negative
/// axes against the same rank, so equal axis lists undo each other; the result is `x`.
fn undone_squeeze(graph: &Graph, idx: NodeIndex, mid: ValueRef, opset: i64) -> Option<ValueRef> {
    let node = graph.node(idx)?;
    let inner = graph.node(mid.node)?;
    let opposite = if node.op_type() == "Squeeze" {
        "Unsqueeze"
    } else {
        "Squeeze"
    };
    if inner.op_type() != opposite || inner.domain() != node.domain() || mid.slot != 0 {
        return None;
    }
    let axes = |n: NodeIndex| -> Option<Vec<i64>> {
        let mut a = if opset >= 13 {
            const_ints(graph, n, 1)?
        } else {
            graph.node(n)?.attr("axes")?.as_ints()?.to_vec()
        };
        a.sort_unstable();
        Some(a)
    };
    let (outer_axes, inner_axes) = (axes(idx)?, axes(mid.node)?);
    (!outer_axes.is_empty() && outer_axes == inner_axes)
        .then(|| graph.input(mid.node, 0))
        .flatten()
}

fn cast_is_noop(graph: &Graph, x: ValueRef, node: &Node) -> bool {
    let to = node
        .attr("to")
        .and_then(|a| a.as_int())
        .and_then(|t| i32::try_from(t).ok())
        .and_then(DataType::from_onnx);
    to.is_some() && elem_type_of(graph, x) == to
}

/// Every target entry copies (0), infers (-1, once) or equals the input's dimension.
fn reshape_is_noop(graph: &Graph, idx: NodeIndex, x: ValueRef, node: &Node) -> bool {
    let (Some(target), Some(dims)) = (const_ints(graph, idx, 1), shape_of(graph, x)) else {
        return false;
    };
    let allowzero = node.attr("allowzero").and_then(|a| a.as_int()) == Some(1);
    if target.len() != dims.len()
        || graph
            .constant_input(idx, 1)
            .is_some_and(|t| t.shape().is_empty())
    {
        return false;
    }
    let mut inferred = 0;
    for (&t, d) in target.iter().zip(&dims) {
        match (t, d) {
            (0, _) if !allowzero => {}
            (-1, _) => inferred += 1,
            (t, Dim::Known(n)) if t >= 0 && t == *n => {}
            _ => return false,
        }
    }
    // -1 is resolved from the element count, ambiguous when the tensor is empty.
    inferred <= 1 && (inferred == 0 || !dims.contains(&Dim::Known(0)))
}

fn transpose_is_noop(graph: &Graph, x: ValueRef, node: &Node) -> bool {
    match node.attr("perm").and_then(|a| a.as_ints()) {
        Some(perm) => perm.iter().enumerate().all(|(i, &p)| p == i as i64),
        // No perm reverses the axes: a no-op at rank 0 or 1.
        None => shape_of(graph, x).is_some_and(|s| s.len() <= 1),
    }
}

/// Zero padding on every side, whatever the mode.
fn pad_is_noop(graph: &Graph, idx: NodeIndex, node: &Node, opset: i64) -> bool {
    let pads = if opset >= 11 {
        const_ints(graph, idx, 1)
    } else {
        node.attr("pads")
            .or_else(|| node.attr("paddings"))
            .and_then(|a| a.as_ints())
            .map(<[i64]>::to_vec)
    };
    pads.is_some_and(|p| p.iter().all(|&v| v == 0))
}

/// Starts at 0, ends at or past the end, step 1, on every sliced axis.
fn slice_is_noop(graph: &Graph, idx: NodeIndex, x: ValueRef, node: &Node, opset: i64) -> bool {
    let attr = |n: &str| node.attr(n).and_then(|a| a.as_ints()).map(<[i64]>::to_vec);
    let (starts, ends, axes, steps) = if opset >= 10 {
        let optional = |slot: usize| match graph.input(idx, slot) {
            None => Some(None),
            Some(_) => const_ints(graph, idx, slot).map(Some),
        };
        let (Some(axes), Some(steps)) = (optional(3), optional(4)) else {
            return false;
        };
        (
            const_ints(graph, idx, 1),
            const_ints(graph, idx, 2),
            axes,
            steps,
        )
    } else {
        (attr("starts"), attr("ends"), attr("axes"), None)
    };
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return false;
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return false;
    }
    let dims = shape_of(graph, x);
    let dim = |axis: i64| -> Option<Dim> {
        let dims = dims.as_ref()?;
        let rank = dims.len() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        (0..rank).contains(&a).then(|| dims[a as usize].clone())
    };
    (0..starts.len()).all(|i| {
        let d = dim(axes[i]);
        if axes[i] < 0 && d.is_none() {
            return false;
        }
        let known = match d {
            Some(Dim::Known(n)) => Some(n),
            _ => None,
        };
        let start_ok = starts[i] == 0 || known.is_some_and(|n| starts[i] <= -n);
        let end_ok = ends[i] == i64::MAX || known.is_some_and(|n| ends[i] >= n);
        steps[i] == 1 && start_ok && end_ok
    })
}

/// Broadcasting `dims` with a tensor of shape `other` gives back `dims`.
fn broadcast_keeps_shape(dims: &[Dim], other: &[i64]) -> bool {
    if other.len() > dims.len() {
        return false;
    }
    let offset = dims.len() - other.len();
    other
        .iter()
        .zip(&dims[offset..])
        .all(|(&o, d)| o == 1 || *d == Dim::Known(o))
}

/// Input `c_slot` is a constant of only `neutral` values and broadcasting it against input
/// `x_slot` keeps that input's shape.
fn is_neutral_for(
    graph: &Graph,
    idx: NodeIndex,
    c_slot: usize,
    x_slot: usize,
    neutral: f64,
) -> bool {
    let (Some(c), Some(x)) = (graph.constant_input(idx, c_slot), graph.input(idx, x_slot)) else {
        return false;
    };
    if !c
        .to_f64_vec()
        .is_some_and(|v| v.iter().all(|&e| e == neutral))
    {
        return false;
    }
    if elem_type_of(graph, x).is_some_and(|t| t != c.dtype()) {
        return false;
    }
    if c.shape().is_empty() {
        return true;
    }
    let other: Vec<i64> = c.shape().iter().map(|&d| d as i64).collect();
    shape_of(graph, x).is_some_and(|dims| broadcast_keeps_shape(&dims, &other))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::test_util::*;
    use crate::ir::AttrValue;
    use crate::tensor::Tensor;

    /// x (float [2,3]) → node → Neg → output; returns the model and the Neg's input after
    /// running the pass.
    fn run_one(node: Node, extra: &[(usize, Tensor)], opset: i64) -> (Changes, bool) {
        let mut m = Model::new(opset);
        let x = input(&mut m.graph, "x");
        let mut ins = vec![x];
        for (slot, t) in extra {
            let c = init(&mut m.graph, &format!("c{slot}"), t.clone());
            ins.push(c);
        }
        let n = op_node(&mut m.graph, node, &ins);
        let neg = op(&mut m.graph, "Neg", &[n], "neg");
        output(&mut m.graph, neg);
        let c = run(&RemoveNoop, &mut m);
        let removed = m.graph.input(neg.node, 0) == Some(x);
        assert_eq!(removed, m.graph.node(n.node).is_none());
        (c, removed)
    }

    fn ints(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn cast_to_same_type_only() {
        let same = Node::op("Cast", "", &["y"]).with_attr("to", AttrValue::Int(1));
        let (c, removed) = run_one(same, &[], 17);
        assert!(removed);
        assert_eq!(c.get("cast"), 1);
        let other = Node::op("Cast", "", &["y"]).with_attr("to", AttrValue::Int(10));
        assert!(!run_one(other, &[], 17).1);
    }

    #[test]
    fn reshape_to_same_shape() {
        let r = || Node::op("Reshape", "", &["y"]);
        assert!(run_one(r(), &[(1, ints(&[2, 3]))], 17).1);
        assert!(run_one(r(), &[(1, ints(&[0, -1]))], 17).1);
        assert!(!run_one(r(), &[(1, ints(&[3, 2]))], 17).1);
        assert!(!run_one(r(), &[(1, ints(&[6]))], 17).1);
        assert!(!run_one(r(), &[(1, ints(&[-1, -1]))], 17).1);
        let allowzero = r().with_attr("allowzero", AttrValue::Int(1));
        assert!(!run_one(allowzero, &[(1, ints(&[0, 3]))], 17).1);
    }

    #[test]
    fn reshape_with_symbolic_dims_copied_by_zero() {
        let mut m = Model::new(17);
        let x = ValueRef::new(
            m.graph.add_node(Node::input(crate::ir::ValueInfo::tensor(
                "x",
                DataType::Float,
                &[Dim::Symbolic("batch".into()), Dim::Known(3)],
            ))),
            0,
        );
        let s = init(&mut m.graph, "s", ints(&[0, 3]));
        let s2 = init(&mut m.graph, "s2", ints(&[-1, 3]));
        let s3 = init(&mut m.graph, "s3", ints(&[4, 3]));
        let r1 = op(&mut m.graph, "Reshape", &[x, s], "r1");
        let r2 = op(&mut m.graph, "Reshape", &[r1, s2], "r2");
        let r3 = op(&mut m.graph, "Reshape", &[r2, s3], "r3");
        output(&mut m.graph, r3);
        let c = run(&RemoveNoop, &mut m);
        assert_eq!(c.get("reshape"), 2);
        assert_eq!(m.graph.input(r3.node, 0), Some(x));
    }

    #[test]
    fn transpose_pad_slice_expand() {
        let t = Node::op("Transpose", "", &["y"]).with_attr("perm", AttrValue::Ints(vec![0, 1]));
        assert!(run_one(t, &[], 17).1);
        let t = Node::op("Transpose", "", &["y"]).with_attr("perm", AttrValue::Ints(vec![1, 0]));
        assert!(!run_one(t, &[], 17).1);
        // Default perm reverses: not a no-op at rank 2.
        assert!(!run_one(Node::op("Transpose", "", &["y"]), &[], 17).1);

        let pad = || Node::op("Pad", "", &["y"]);
        assert!(run_one(pad(), &[(1, ints(&[0, 0, 0, 0]))], 17).1);
        assert!(!run_one(pad(), &[(1, ints(&[0, 1, 0, 0]))], 17).1);
        let old = pad().with_attr("pads", AttrValue::Ints(vec![0, 0, 0, 0]));
        assert!(run_one(old, &[], 9).1);

        let slice = || Node::op("Slice", "", &["y"]);
        let all = [
            (1, ints(&[0, 0])),
            (2, ints(&[i64::MAX, 3])),
            (3, ints(&[0, -1])),
        ];
        assert!(run_one(slice(), &all, 17).1);
        let some = [(1, ints(&[0])), (2, ints(&[2])), (3, ints(&[1]))];
        assert!(!run_one(slice(), &some, 17).1);
        let step2 = [
            (1, ints(&[0])),
            (2, ints(&[9])),
            (3, ints(&[0])),
            (4, ints(&[2])),
        ];
        assert!(!run_one(slice(), &step2, 17).1);
        let old = slice()
            .with_attr("starts", AttrValue::Ints(vec![-5]))
            .with_attr("ends", AttrValue::Ints(vec![3]))
            .with_attr("axes", AttrValue::Ints(vec![1]));
        assert!(run_one(old, &[], 9).1);

        let expand = || Node::op("Expand", "", &["y"]);
        assert!(run_one(expand(), &[(1, ints(&[1, 3]))], 17).1);
        assert!(run_one(expand(), &[(1, ints(&[1]))], 17).1);
        assert!(!run_one(expand(), &[(1, ints(&[1, 2, 3]))], 17).1);
        assert!(!run_one(expand(), &[(1, ints(&[4, 3]))], 17).1);
    }

    #[test]
    fn neutral_arithmetic_only_when_broadcast_keeps_shape() {
        let mul = || Node::op("Mul", "", &["y"]);
        assert!(run_one(mul(), &[(1, Tensor::scalar(1.0f32))], 17).1);
        assert!(!run_one(mul(), &[(1, Tensor::scalar(2.0f32))], 17).1);
        let ones = Tensor::from_vec(vec![1, 3], vec![1.0f32; 3]).unwrap();
        assert!(run_one(mul(), &[(1, ones)], 17).1);
        let grows = Tensor::from_vec(vec![2, 1, 1], vec![1.0f32; 2]).unwrap();
        assert!(!run_one(mul(), &[(1, grows)], 17).1);
        let add = || Node::op("Add", "", &["y"]);
        assert!(run_one(add(), &[(1, Tensor::scalar(0.0f32))], 17).1);
        let sub = || Node::op("Sub", "", &["y"]);
        assert!(run_one(sub(), &[(1, Tensor::scalar(0.0f32))], 17).1);
        let div = || Node::op("Div", "", &["y"]);
        assert!(!run_one(div(), &[(1, Tensor::scalar(0.0f32))], 17).1);
    }

    #[test]
    fn neutral_constant_first_and_single_input_concat() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let one = init(&mut m.graph, "one", Tensor::scalar(1.0f32));
        let a = op(&mut m.graph, "Mul", &[one, x], "a");
        let cat = op_node(
            &mut m.graph,
            Node::op("Concat", "", &["cat"]).with_attr("axis", AttrValue::Int(0)),
            &[a],
        );
        let neg = op(&mut m.graph, "Neg", &[cat], "neg");
        output(&mut m.graph, neg);
        let c = run(&RemoveNoop, &mut m);
        assert_eq!((c.get("mul"), c.get("concat")), (1, 1));
        assert_eq!(m.graph.input(neg.node, 0), Some(x));
    }

    #[test]
    fn noop_between_input_and_output_stays() {
        let mut m = Model::new(17);
        let x = input(&mut m.graph, "x");
        let cast = op_node(
            &mut m.graph,
            Node::op("Cast", "", &["y"]).with_attr("to", AttrValue::Int(1)),
            &[x],
        );
        output(&mut m.graph, cast);
        assert!(run(&RemoveNoop, &mut m).is_empty());
        assert_eq!(output_names(&m), vec!["y"]);
    }

    #[test]
    fn squeeze_undoing_unsqueeze() {
        for opset in [11, 13] {
            let mut m = Model::new(opset);
            let x = input(&mut m.graph, "x");
            let with_axes = |n: Node, g: &mut Graph, v: ValueRef, axes: &[i64]| {
                if opset >= 13 {
                    let a = init(g, &g.fresh_name("axes"), ints(axes));
                    op_node(g, n, &[v, a])
                } else {
                    op_node(g, n.with_attr("axes", AttrValue::Ints(axes.to_vec())), &[v])
                }
            };
            let u = with_axes(Node::op("Unsqueeze", "", &["u"]), &mut m.graph, x, &[0, -1]);
            let s = with_axes(Node::op("Squeeze", "", &["s"]), &mut m.graph, u, &[-1, 0]);
            let n = op(&mut m.graph, "Neg", &[s], "n");
            // Different axes: stays.
            let u2 = with_axes(Node::op("Unsqueeze", "", &["u2"]), &mut m.graph, n, &[0]);
            let s2 = with_axes(Node::op("Squeeze", "", &["s2"]), &mut m.graph, u2, &[1]);
            output(&mut m.graph, s2);
            let c = run(&RemoveNoop, &mut m);
            assert_eq!(c.get("squeeze"), 1, "opset {opset}");
            assert_eq!(m.graph.input(n.node, 0), Some(x));
            assert!(m.graph.node(s2.node).is_some());
        }
    }
}
