//! Constant folding against reference results.
//!
//! 1. Every ONNX backend `node` test, with its graph inputs turned into initializers holding
//!    the test_data_set_0 inputs, is folded whole; where every output became a constant it
//!    must equal the reference output (rtol 1e-4, atol 1e-5). This checks the evaluator
//!    against ONNX's reference for every operator it claims.
//! 2. A shape subgraph as exporters write it folds, and the folded model runs the same in
//!    ONNX Runtime. (Folding on every real model is checked by `tests/optimize.rs`.)

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use kiln_backends::compare::{allclose, allclose_tensors, Tolerance};
use kiln_backends::runtime::Session;
use kiln_backends::tensors::{read_test_data_set, IoSpec};
use kiln_backends::Value;
use kiln_passes::fold::FoldConstants;
use kiln_passes::ir::Model;
use kiln_passes::pipeline::Pass;
use kiln_proto::onnx::ModelProto;
use kiln_tests::onnx_test_data;

const TOL: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.join("model.onnx").is_file() && p.join("test_data_set_0").is_dir());
    v.sort();
    v
}

/// The graph inputs a caller feeds (initializers listed as inputs excluded) and the outputs.
fn io_specs(proto: &ModelProto) -> (Vec<IoSpec>, Vec<IoSpec>) {
    let g = proto.graph.as_ref().expect("graph");
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let ins = g
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| IoSpec::tensor(&i.name))
        .collect();
    let outs = g.output.iter().map(|o| IoSpec::tensor(&o.name)).collect();
    (ins, outs)
}

#[derive(Default)]
struct Tally {
    matched: usize,
    mismatched: Vec<String>,
    not_folded: usize,
}

/// Folds one node test with its inputs made constant; `None` when the case cannot be set up.
fn fold_node_case(
    dir: &Path,
    left: &mut BTreeMap<String, usize>,
) -> Option<(String, Option<Result<(), String>>)> {
    let mut proto = kiln_proto::load_model(&dir.join("model.onnx")).ok()?.model;
    let (ins, outs) = io_specs(&proto);
    let (inputs, expected) = read_test_data_set(&dir.join("test_data_set_0"), &ins, &outs).ok()?;
    let g = proto.graph.as_mut()?;
    let op = match g.node.as_slice() {
        [n] => n.op_type.clone(),
        _ => "(several nodes)".to_string(),
    };
    for (name, value) in &inputs {
        let Value::Tensor(t) = value else {
            return None;
        };
        g.input.retain(|i| &i.name != name);
        g.initializer.push(t.to_proto(name));
    }
    let mut model = Model::from_proto(&proto).ok()?;
    FoldConstants {
        max_output_elements: 1 << 24,
    }
    .run(&mut model)
    .ok()?;
    model.graph.verify().expect("folding left a valid graph");
    let g = &model.graph;
    let mut result = Ok(());
    for (o, (name, want)) in g.outputs.iter().zip(&expected) {
        let Some(got) = g.constant(o.value) else {
            let ops: HashSet<&str> = g
                .nodes()
                .filter(|(_, n)| n.is_operator() && n.op_type() != "Constant")
                .map(|(_, n)| n.op_type())
                .collect();
            for op in ops {
                *left.entry(op.to_string()).or_default() += 1;
            }
            return Some((op, None));
        };
        let Value::Tensor(want) = want else {
            return None;
        };
        if let Err(e) = allclose_tensors(want, got, TOL) {
            result = Err(format!("{name}: {e}"));
        }
    }
    Some((op, Some(result)))
}

#[test]
fn folded_node_tests_match_the_reference_outputs() {
    let data = onnx_test_data();
    let mut by_op: BTreeMap<String, Tally> = BTreeMap::new();
    let mut skipped = 0;
    let mut left: BTreeMap<String, usize> = BTreeMap::new();
    for dir in cases(&data.join("node")) {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        match fold_node_case(&dir, &mut left) {
            None => skipped += 1,
            Some((op, outcome)) => {
                let t = by_op.entry(op).or_default();
                match outcome {
                    None => t.not_folded += 1,
                    Some(Ok(())) => t.matched += 1,
                    Some(Err(e)) => t.mismatched.push(format!("{name}: {e}")),
                }
            }
        }
    }
    let (mut matched, mut mismatched, mut not_folded) = (0, 0, 0);
    println!("op: folded and matched / mismatched / not folded");
    for (op, t) in &by_op {
        if t.matched + t.mismatched.len() > 0 {
            println!(
                "  {op}: {} / {} / {}",
                t.matched,
                t.mismatched.len(),
                t.not_folded
            );
        }
        matched += t.matched;
        mismatched += t.mismatched.len();
        not_folded += t.not_folded;
    }
    println!(
        "node tests: {matched} folded and matched, {mismatched} mismatched, {not_folded} not folded, {skipped} skipped"
    );
    println!("operators left in unfolded cases (cases): {left:?}");
    let failures: Vec<&String> = by_op.values().flat_map(|t| &t.mismatched).collect();
    for f in &failures {
        println!("MISMATCH {f}");
    }
    assert!(
        failures.is_empty(),
        "{} folded node tests differ",
        failures.len()
    );
    assert!(matched > 300, "only {matched} node tests folded");
}

/// ORT outputs of a model on the given inputs.
fn ort_outputs(proto: &ModelProto, inputs: &[(String, Value)]) -> Option<Vec<(String, Value)>> {
    let mut s = Session::from_model(proto).ok()?;
    s.run(inputs).ok()
}

/// `x.view(x.size(0), -1)` as exporters write it: Shape → Gather → Unsqueeze → Concat → Reshape.
fn shape_subgraph_model() -> Model {
    use kiln_passes::ir::{AttrValue, Dim, GraphOutput, Node, ValueInfo, ValueRef};
    use kiln_passes::tensor::{DataType, Tensor};
    let mut model = Model::new(13);
    let g = &mut model.graph;
    let v = |n| ValueRef::new(n, 0);
    let x = g.add_node(Node::input(ValueInfo::tensor(
        "x",
        DataType::Float,
        &[Dim::Known(2), Dim::Known(3), Dim::Known(4)],
    )));
    let add = |g: &mut kiln_passes::ir::Graph, node: Node, inputs: &[ValueRef]| {
        let idx = g.add_node(node);
        for (i, &src) in inputs.iter().enumerate() {
            g.connect(src, idx, i);
        }
        idx
    };
    let shape = add(g, Node::op("Shape", "shape", &["s"]), &[v(x)]);
    let zero = g.add_node(Node::initializer("zero", Tensor::scalar(0i64)));
    let gather = add(
        g,
        Node::op("Gather", "gather", &["d0"]),
        &[v(shape), v(zero)],
    );
    let axes = g.add_node(Node::initializer(
        "axes",
        Tensor::from_vec(vec![1], vec![0i64]).unwrap(),
    ));
    let unsq = add(
        g,
        Node::op("Unsqueeze", "unsq", &["d0u"]),
        &[v(gather), v(axes)],
    );
    let minus = g.add_node(Node::initializer(
        "minus_one",
        Tensor::from_vec(vec![1], vec![-1i64]).unwrap(),
    ));
    let concat = add(
        g,
        Node::op("Concat", "concat", &["target"]).with_attr("axis", AttrValue::Int(0)),
        &[v(unsq), v(minus)],
    );
    let reshape = add(
        g,
        Node::op("Reshape", "reshape", &["y"]),
        &[v(x), v(concat)],
    );
    g.outputs.push(GraphOutput {
        value: v(reshape),
        info: ValueInfo::tensor("y", DataType::Float, &[Dim::Known(2), Dim::Known(12)]),
    });
    model
}

#[test]
fn folded_shape_subgraph_runs_the_same_in_onnx_runtime() {
    let mut model = shape_subgraph_model();
    let before = model.to_proto();
    let changes = FoldConstants::default().run(&mut model).unwrap();
    model.graph.verify().unwrap();
    assert_eq!(changes.get("folded") + changes.get("folded from shapes"), 4);
    let after = model.to_proto();
    assert_eq!(after.graph.as_ref().unwrap().node.len(), 1);
    let x =
        kiln_passes::tensor::Tensor::from_vec(vec![2, 3, 4], (0..24).map(|i| i as f32).collect())
            .unwrap();
    let inputs = vec![("x".to_string(), Value::Tensor(x))];
    let want = ort_outputs(&before, &inputs).expect("ONNX Runtime runs the original");
    let got = ort_outputs(&after, &inputs).expect("ONNX Runtime runs the folded model");
    allclose(&want[0].1, &got[0].1, TOL).unwrap();
}
