//! Folding on small hand-built graphs.

use crate::ir::{AttrValue, Dim, Graph, GraphOutput, Model, Node, NodeIndex, ValueInfo, ValueRef};
use crate::pipeline::Pass;
use crate::tensor::{DataType, Tensor};

use super::FoldConstants;

fn v(node: NodeIndex) -> ValueRef {
    ValueRef::new(node, 0)
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

fn op(g: &mut Graph, node: Node, inputs: &[ValueRef]) -> NodeIndex {
    let idx = g.add_node(node);
    for (i, &src) in inputs.iter().enumerate() {
        g.connect(src, idx, i);
    }
    idx
}

fn output(g: &mut Graph, value: ValueRef) {
    let info = ValueInfo::new(g.value_name(value));
    g.outputs.push(GraphOutput { value, info });
}

fn operators(g: &Graph) -> Vec<String> {
    g.nodes()
        .filter(|(_, n)| n.is_operator() && n.op_type() != "Constant")
        .map(|(_, n)| n.op_type().to_string())
        .collect()
}

fn run(model: &mut Model) -> crate::pipeline::Changes {
    let changes = FoldConstants::default().run(model).unwrap();
    model.graph.verify().unwrap();
    changes
}

/// Shape → Gather → Unsqueeze → Concat → Reshape, as exporters write `x.view(x.size(0), -1)`.
fn reshape_by_shape(model: &mut Model, batch: Dim) -> NodeIndex {
    let g = &mut model.graph;
    let x = g.add_node(Node::input(ValueInfo::tensor(
        "x",
        DataType::Float,
        &[batch, Dim::Known(3), Dim::Known(4)],
    )));
    let shape = op(g, Node::op("Shape", "shape", &["s"]), &[v(x)]);
    let zero = g.add_node(Node::initializer("zero", Tensor::scalar(0i64)));
    let gather = op(
        g,
        Node::op("Gather", "gather", &["d0"]),
        &[v(shape), v(zero)],
    );
    let axes = g.add_node(Node::initializer("axes", i64s(&[0])));
    let unsq = op(
        g,
        Node::op("Unsqueeze", "unsq", &["d0u"]),
        &[v(gather), v(axes)],
    );
    let minus = g.add_node(Node::initializer("minus_one", i64s(&[-1])));
    let concat = op(
        g,
        Node::op("Concat", "concat", &["target"]).with_attr("axis", AttrValue::Int(0)),
        &[v(unsq), v(minus)],
    );
    let reshape = op(
        g,
        Node::op("Reshape", "reshape", &["y"]),
        &[v(x), v(concat)],
    );
    output(g, v(reshape));
    reshape
}

#[test]
fn shape_subgraph_of_a_static_input_folds_to_a_constant_target() {
    let mut model = Model::new(13);
    let reshape = reshape_by_shape(&mut model, Dim::Known(2));
    let changes = run(&mut model);
    let g = &model.graph;
    assert_eq!(operators(g), vec!["Reshape"]);
    let target = g.constant_input(reshape, 1).expect("constant target");
    assert_eq!(target.to_vec::<i64>().unwrap(), vec![2, -1]);
    assert_eq!(g.value_name(g.input(reshape, 1).unwrap()), "target");
    assert_eq!(changes.get("folded from shapes"), 1);
    assert_eq!(changes.get("folded"), 3);
    // Intermediate constants made by the pass are gone; the original initializers stay.
    let constants = g.nodes().filter(|(_, n)| n.op_type() == "Constant").count();
    assert_eq!(constants, 4);
    // The model still saves and loads.
    Model::from_proto(&model.to_proto()).unwrap();
}

#[test]
fn symbolic_dims_are_not_folded_to_numbers_but_the_target_is_made_static() {
    let mut model = Model::new(13);
    let reshape = reshape_by_shape(&mut model, Dim::Symbolic("batch".into()));
    let changes = run(&mut model);
    // Nothing evaluates to a number; the target means [0, -1] (copy dim 0) instead.
    assert_eq!(changes.iter().count(), 1, "{changes}");
    assert_eq!(
        model
            .graph
            .constant_input(reshape, 1)
            .map(|t| t.to_vec::<i64>().unwrap()),
        Some(vec![0, -1])
    );
    // The Shape chain is left to dead-code.
    assert_eq!(operators(&model.graph).len(), 5);
}

#[test]
fn gather_of_a_known_dim_of_a_partly_known_shape_folds() {
    let mut model = Model::new(13);
    let g = &mut model.graph;
    let x = g.add_node(Node::input(ValueInfo::tensor(
        "x",
        DataType::Float,
        &[Dim::Symbolic("batch".into()), Dim::Known(3), Dim::Unknown],
    )));
    let shape = op(g, Node::op("Shape", "shape", &["s"]), &[v(x)]);
    let one = g.add_node(Node::initializer("one", Tensor::scalar(1i64)));
    let zero = g.add_node(Node::initializer("zero", Tensor::scalar(0i64)));
    let known = op(g, Node::op("Gather", "g1", &["d1"]), &[v(shape), v(one)]);
    let unknown = op(g, Node::op("Gather", "g0", &["d0"]), &[v(shape), v(zero)]);
    let starts = g.add_node(Node::initializer("starts", i64s(&[1])));
    let ends = g.add_node(Node::initializer("ends", i64s(&[2])));
    let slice = op(
        g,
        Node::op("Slice", "sl", &["d1s"]),
        &[v(shape), v(starts), v(ends)],
    );
    let wide_end = g.add_node(Node::initializer("wide_end", i64s(&[3])));
    let wide = op(
        g,
        Node::op("Slice", "sl2", &["d12"]),
        &[v(shape), v(starts), v(wide_end)],
    );
    for n in [known, unknown, slice, wide] {
        output(g, v(n));
    }
    let changes = run(&mut model);
    assert_eq!(changes.get("folded from shapes"), 2);
    let g = &model.graph;
    let d1 = g.outputs[0].value;
    assert_eq!(g.value_name(d1), "d1");
    assert_eq!(g.constant(d1).unwrap().to_vec::<i64>().unwrap(), vec![3]);
    assert_eq!(
        g.constant(g.outputs[2].value)
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        vec![3]
    );
    assert!(g.constant(g.outputs[1].value).is_none());
    assert!(g.constant(g.outputs[3].value).is_none());
    assert_eq!(operators(g), vec!["Shape", "Gather", "Slice"]);
}

#[test]
fn size_of_a_static_shape_folds_and_dead_shape_nodes_go() {
    let mut model = Model::new(13);
    let g = &mut model.graph;
    let x = g.add_node(Node::input(ValueInfo::tensor(
        "x",
        DataType::Float,
        &[Dim::Known(2), Dim::Known(5)],
    )));
    let size = op(g, Node::op("Size", "size", &["n"]), &[v(x)]);
    output(g, v(size));
    run(&mut model);
    let g = &model.graph;
    assert_eq!(
        g.constant(g.outputs[0].value)
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        vec![10]
    );
    assert!(operators(g).is_empty());
}

#[test]
fn overridable_initializers_and_random_ops_are_not_folded() {
    let mut model = Model::new(13);
    let g = &mut model.graph;
    let mut listed = Node::initializer("w", i64s(&[1, 2]));
    if let crate::ir::NodeKind::Constant {
        origin: crate::ir::ConstantOrigin::Initializer {
            listed_as_input, ..
        },
        ..
    } = &mut listed.kind
    {
        *listed_as_input = true;
    }
    let w = g.add_node(listed);
    let neg = op(g, Node::op("Neg", "neg", &["y"]), &[v(w)]);
    output(g, v(neg));
    let c = g.add_node(Node::initializer("c", Tensor::scalar(1f32)));
    let rnd = op(g, Node::op("RandomNormalLike", "rnd", &["r"]), &[v(c)]);
    output(g, v(rnd));
    let changes = run(&mut model);
    assert!(changes.is_empty());
    assert_eq!(operators(&model.graph), vec!["Neg", "RandomNormalLike"]);
}

#[test]
fn folded_graph_outputs_stay_outputs_under_their_names() {
    let mut model = Model::new(13);
    let g = &mut model.graph;
    let a = g.add_node(Node::initializer("a", i64s(&[1, 2, 3, 4])));
    let sizes = g.add_node(Node::initializer("sizes", i64s(&[1, 3])));
    let split = op(
        g,
        Node::op("Split", "split", &["p", "q"]),
        &[v(a), v(sizes)],
    );
    g.outputs.push(GraphOutput {
        value: ValueRef::new(split, 1),
        info: ValueInfo::tensor("q", DataType::Int64, &[Dim::Known(3)]),
    });
    let changes = run(&mut model);
    assert_eq!(changes.get("folded"), 1);
    let proto = model.to_proto();
    let gp = proto.graph.unwrap();
    assert_eq!(gp.output[0].name, "q");
    assert!(gp.initializer.iter().any(|t| t.name == "q"));
    assert!(gp.node.is_empty());
}

#[test]
fn the_size_cap_stops_large_results() {
    let mut model = Model::new(13);
    let g = &mut model.graph;
    let shape = g.add_node(Node::initializer("shape", i64s(&[1 << 20, 1 << 10])));
    let big = op(g, Node::op("ConstantOfShape", "big", &["z"]), &[v(shape)]);
    output(g, v(big));
    let small = g.add_node(Node::initializer("small", i64s(&[4])));
    let ok = op(g, Node::op("ConstantOfShape", "ok", &["o"]), &[v(small)]);
    output(g, v(ok));
    let pass = FoldConstants {
        max_output_elements: 1000,
    };
    let changes = pass.run(&mut model).unwrap();
    model.graph.verify().unwrap();
    assert_eq!(changes.get("folded"), 1);
    assert_eq!(operators(&model.graph), vec!["ConstantOfShape"]);
}

#[test]
fn subgraph_bodies_are_folded_but_control_flow_is_not_executed() {
    let mut body = Graph::new("then");
    let a = body.add_node(Node::initializer("a", Tensor::scalar(2f32)));
    let add = op(&mut body, Node::op("Add", "add", &["b_out"]), &[v(a), v(a)]);
    output(&mut body, v(add));
    let mut other = Graph::new("else");
    let c = other.add_node(Node::initializer("c", Tensor::scalar(5f32)));
    output(&mut other, v(c));

    let mut model = Model::new(13);
    let g = &mut model.graph;
    let cond = g.add_node(Node::initializer("cond", Tensor::scalar(true)));
    let if_node = op(
        g,
        Node::op("If", "if", &["y"])
            .with_attr("then_branch", AttrValue::Graph(Box::new(body)))
            .with_attr("else_branch", AttrValue::Graph(Box::new(other))),
        &[v(cond)],
    );
    output(g, v(if_node));
    let changes = run(&mut model);
    assert_eq!(changes.get("folded"), 1);
    let g = &model.graph;
    assert_eq!(operators(g), vec!["If"]);
    let then = g[if_node].subgraphs().next().unwrap();
    assert!(operators(then).is_empty());
    let out = then.outputs[0].value;
    assert_eq!(then.value_name(out), "b_out");
    assert_eq!(
        then.constant(out).unwrap().to_vec::<f32>().unwrap(),
        vec![4.0]
    );
    Model::from_proto(&model.to_proto()).unwrap();
}

#[test]
fn invalid_constant_arithmetic_is_left_for_the_runtime() {
    let mut model = Model::new(13);
    let g = &mut model.graph;
    let a = g.add_node(Node::initializer("a", i64s(&[1])));
    let z = g.add_node(Node::initializer("z", i64s(&[0])));
    let div = op(g, Node::op("Div", "div", &["q"]), &[v(a), v(z)]);
    output(g, v(div));
    assert!(run(&mut model).is_empty());
    assert_eq!(operators(&model.graph), vec!["Div"]);
}
