//! Symbolic folding of shape targets on small hand-built graphs.

use crate::fold::FoldConstants;
use crate::infer::InferShapes;
use crate::ir::{AttrValue, Dim, Graph, GraphOutput, Model, Node, NodeIndex, ValueInfo, ValueRef};
use crate::pipeline::Pass;
use crate::tensor::{DataType, Tensor};

fn v(node: NodeIndex) -> ValueRef {
    ValueRef::new(node, 0)
}

fn op(g: &mut Graph, node: Node, inputs: &[ValueRef]) -> NodeIndex {
    let idx = g.add_node(node);
    for (i, &src) in inputs.iter().enumerate() {
        g.connect(src, idx, i);
    }
    idx
}

fn ints(g: &mut Graph, name: &str, values: &[i64]) -> ValueRef {
    let t = Tensor::from_vec(vec![values.len()], values.to_vec()).unwrap();
    v(g.add_node(Node::initializer(name, t)))
}

fn input(g: &mut Graph, name: &str, dims: &[Dim]) -> ValueRef {
    v(g.add_node(Node::input(ValueInfo::tensor(name, DataType::Float, dims))))
}

fn output(g: &mut Graph, value: ValueRef) {
    let info = ValueInfo::new(g.value_name(value));
    g.outputs.push(GraphOutput { value, info });
}

/// `Unsqueeze(Gather(Shape(x), axis), [0])`: `x.size(axis)` as a 1-element vector.
fn size_of(g: &mut Graph, x: ValueRef, axis: i64, tag: &str) -> ValueRef {
    let shape = op(g, Node::op("Shape", "", &[&format!("{tag}_shape")]), &[x]);
    let i = v(g.add_node(Node::initializer(&format!("{tag}_i"), Tensor::scalar(axis))));
    let gather = op(
        g,
        Node::op("Gather", "", &[&format!("{tag}_d")]),
        &[v(shape), i],
    );
    let axes = ints(g, &format!("{tag}_axes"), &[0]);
    v(op(
        g,
        Node::op("Unsqueeze", "", &[&format!("{tag}_u")]),
        &[v(gather), axes],
    ))
}

fn concat(g: &mut Graph, name: &str, parts: &[ValueRef]) -> ValueRef {
    let node = Node::op("Concat", "", &[name]).with_attr("axis", AttrValue::Int(0));
    v(op(g, node, parts))
}

/// Runs infer-shapes and fold-constants; returns the constant now feeding `node`'s input 1.
fn folded_target(model: &mut Model, node: NodeIndex) -> Option<Vec<i64>> {
    InferShapes.run(model).unwrap();
    FoldConstants::default().run(model).unwrap();
    model.graph.verify().unwrap();
    model
        .graph
        .constant_input(node, 1)
        .map(|t| t.to_vec::<i64>().unwrap())
}

fn unknown3() -> Vec<Dim> {
    vec![Dim::Unknown, Dim::Unknown, Dim::Known(64)]
}

/// `x.view(x.size(0), x.size(1), heads, -1)`.
fn split_heads(model: &mut Model, dims: &[Dim], allowzero: Option<i64>) -> NodeIndex {
    let g = &mut model.graph;
    let x = input(g, "x", dims);
    let b = size_of(g, x, 0, "b");
    let s = size_of(g, x, 1, "s");
    let rest = ints(g, "heads_rest", &[4, -1]);
    let target = concat(g, "target", &[b, s, rest]);
    let mut node = Node::op("Reshape", "split", &["y"]);
    if let Some(a) = allowzero {
        node = node.with_attr("allowzero", AttrValue::Int(a));
    }
    let reshape = op(g, node, &[x, target]);
    output(g, v(reshape));
    reshape
}

#[test]
fn split_heads_target_becomes_zeros_and_minus_one() {
    let mut m = Model::new(14);
    let reshape = split_heads(&mut m, &unknown3(), None);
    assert_eq!(folded_target(&mut m, reshape), Some(vec![0, 0, 4, -1]));
}

#[test]
fn named_dims_match_by_name() {
    let mut m = Model::new(14);
    let dims = [
        Dim::Symbolic("batch".into()),
        Dim::Symbolic("seq".into()),
        Dim::Known(64),
    ];
    let reshape = split_heads(&mut m, &dims, None);
    assert_eq!(folded_target(&mut m, reshape), Some(vec![0, 0, 4, -1]));
}

#[test]
fn allowzero_leaves_the_target_alone() {
    let mut m = Model::new(14);
    let reshape = split_heads(&mut m, &unknown3(), Some(1));
    assert_eq!(folded_target(&mut m, reshape), None);
    assert_eq!(m.graph.stats().op_histogram.get("Shape"), Some(&2));
}

/// Heads split, transposed there and back, then `view(b, s, 64)` with b, s from `x`.
#[test]
fn merge_heads_target_follows_axes_through_transposes() {
    let mut m = Model::new(14);
    let g = &mut m.graph;
    let x = input(g, "x", &unknown3());
    let split = ints(g, "split", &[0, 0, 4, 16]);
    let z = op(g, Node::op("Reshape", "", &["z"]), &[x, split]);
    let perm = AttrValue::Ints(vec![0, 2, 1, 3]);
    let t = op(
        g,
        Node::op("Transpose", "", &["t"]).with_attr("perm", perm.clone()),
        &[v(z)],
    );
    let r = op(g, Node::op("Relu", "", &["r"]), &[v(t)]);
    let w = op(
        g,
        Node::op("Transpose", "", &["w"]).with_attr("perm", perm),
        &[v(r)],
    );
    let b = size_of(g, x, 0, "b");
    let s = size_of(g, x, 1, "s");
    let hidden = ints(g, "hidden", &[64]);
    let target = concat(g, "target", &[b, s, hidden]);
    let merge = op(g, Node::op("Reshape", "merge", &["y"]), &[v(w), target]);
    output(g, v(merge));
    assert_eq!(folded_target(&mut m, merge), Some(vec![0, 0, 64]));
}

/// `view(b, s * 64)`: the product is the one element left, so it becomes -1.
#[test]
fn one_computed_element_becomes_minus_one() {
    let mut m = Model::new(14);
    let g = &mut m.graph;
    let x = input(g, "x", &unknown3());
    let b = size_of(g, x, 0, "b");
    let s = size_of(g, x, 1, "s");
    let sixty_four = ints(g, "k", &[64]);
    let product = v(op(g, Node::op("Mul", "", &["sk"]), &[s, sixty_four]));
    let target = concat(g, "target", &[b, product]);
    let reshape = op(g, Node::op("Reshape", "flat", &["y"]), &[x, target]);
    output(g, v(reshape));
    assert_eq!(folded_target(&mut m, reshape), Some(vec![0, -1]));
}

/// The sizes come from another tensor `u`, which nothing ties to `x`.
#[test]
fn sizes_of_an_unrelated_tensor_leave_the_target_alone() {
    let mut m = Model::new(14);
    let g = &mut m.graph;
    let x = input(g, "x", &unknown3());
    let u = input(g, "u", &unknown3());
    let b = size_of(g, u, 0, "b");
    let s = size_of(g, u, 1, "s");
    let rest = ints(g, "heads_rest", &[4, -1]);
    let target = concat(g, "target", &[b, s, rest]);
    let reshape = op(g, Node::op("Reshape", "split", &["y"]), &[x, target]);
    output(g, v(reshape));
    assert_eq!(folded_target(&mut m, reshape), None);
}

/// `x.view(x.size(1), x.size(0), -1)` swaps dims: position 0 is not axis 0.
#[test]
fn sizes_at_other_positions_leave_the_target_alone() {
    let mut m = Model::new(14);
    let g = &mut m.graph;
    let x = input(g, "x", &unknown3());
    let b = size_of(g, x, 0, "b");
    let s = size_of(g, x, 1, "s");
    let rest = ints(g, "rest", &[-1]);
    let target = concat(g, "target", &[s, b, rest]);
    let reshape = op(g, Node::op("Reshape", "swap", &["y"]), &[x, target]);
    output(g, v(reshape));
    assert_eq!(folded_target(&mut m, reshape), None);
}

/// `x.expand(x.size(0), 5)` on x of shape [n, 1] keeps dim 0 with a 1.
#[test]
fn expand_keeps_its_own_dims_with_ones() {
    let mut m = Model::new(14);
    let g = &mut m.graph;
    let x = input(g, "x", &[Dim::Unknown, Dim::Known(1)]);
    let n = size_of(g, x, 0, "n");
    let five = ints(g, "five", &[5]);
    let shape = concat(g, "shape", &[n, five]);
    let expand = op(g, Node::op("Expand", "e", &["y"]), &[x, shape]);
    output(g, v(expand));
    assert_eq!(folded_target(&mut m, expand), Some(vec![1, 5]));
}

/// torch's `expand(b, -1)` export: `Where(Equal(shape, -1), 1, shape)`.
#[test]
fn expand_through_where_equal_minus_one() {
    let mut m = Model::new(14);
    let g = &mut m.graph;
    let x = input(g, "x", &[Dim::Unknown, Dim::Known(1)]);
    let n = size_of(g, x, 0, "n");
    let minus = ints(g, "minus", &[-1]);
    let shape = concat(g, "shape", &[n, minus]);
    let minus2 = ints(g, "minus2", &[-1, -1]);
    let eq = op(g, Node::op("Equal", "", &["eq"]), &[shape, minus2]);
    let ones = ints(g, "ones", &[1, 1]);
    let picked = op(g, Node::op("Where", "", &["picked"]), &[v(eq), ones, shape]);
    let expand = op(g, Node::op("Expand", "e", &["y"]), &[x, v(picked)]);
    output(g, v(expand));
    assert_eq!(folded_target(&mut m, expand), Some(vec![1, 1]));
}
