use super::*;
use crate::ir::{GraphOutput, Node, ValueInfo, ValueRef};
use crate::tensor::{DataType, Tensor};

/// y = Identity(x + 0): cleanup removes both nodes' worth of work.
fn model_with_noops() -> Model {
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let x = g.add_node(Node::input(ValueInfo::tensor(
        "x",
        DataType::Float,
        &[crate::ir::Dim::Known(2)],
    )));
    let zero = g.add_node(Node::initializer("zero", Tensor::scalar(0.0f32)));
    let add = g.add_node(Node::op("Add", "add", &["s"]));
    g.connect(ValueRef::new(x, 0), add, 0);
    g.connect(ValueRef::new(zero, 0), add, 1);
    let id = g.add_node(Node::op("Identity", "id", &["t"]));
    g.connect(ValueRef::new(add, 0), id, 0);
    let relu = g.add_node(Node::op("Relu", "relu", &["y"]));
    g.connect(ValueRef::new(id, 0), relu, 0);
    g.outputs.push(GraphOutput {
        value: ValueRef::new(relu, 0),
        info: ValueInfo::new("y"),
    });
    m
}

#[test]
fn default_pipeline_simplifies_and_reports() {
    let mut m = model_with_noops();
    let report = optimize(&mut m, &OptimizeOptions::default()).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(report.nodes_before, 3);
    assert_eq!(report.nodes_after, 1);
    assert_eq!(report.opset.after, 13, "nothing here needs a newer opset");
    assert!(report.records.iter().any(|r| r.pass == "remove-identity"));
}

#[test]
fn disabled_passes_do_not_run() {
    let mut m = model_with_noops();
    let opts = OptimizeOptions {
        disable: vec!["remove-identity".into()],
        ..Default::default()
    };
    let report = optimize(&mut m, &opts).unwrap();
    assert!(report.records.iter().all(|r| r.pass != "remove-identity"));
    assert_eq!(m.graph.stats().op_histogram.get("Identity"), Some(&1));
}

#[test]
fn only_listed_passes_run() {
    let mut m = model_with_noops();
    let opts = OptimizeOptions {
        only: Some(vec!["remove-identity".into()]),
        ..Default::default()
    };
    let report = optimize(&mut m, &opts).unwrap();
    assert!(report.records.iter().all(|r| r.pass == "remove-identity"));
    assert_eq!(report.nodes_after, 2);
}

#[test]
fn unknown_pass_names_are_refused_with_the_known_ones() {
    let mut m = model_with_noops();
    let opts = OptimizeOptions {
        disable: vec!["fuse-everything".into()],
        ..Default::default()
    };
    let err = optimize(&mut m, &opts).unwrap_err().to_string();
    assert!(err.contains("unknown pass 'fuse-everything'"), "{err}");
    assert!(err.contains("fold-constants"), "{err}");
}

#[test]
fn explicit_downgrade_is_refused() {
    let mut m = model_with_noops();
    let opts = OptimizeOptions {
        target_opset: Some(11),
        ..Default::default()
    };
    let err = optimize(&mut m, &opts).unwrap_err().to_string();
    assert!(err.contains("never"), "{err}");
}

#[test]
fn explicit_upgrade_is_applied() {
    let mut m = model_with_noops();
    let opts = OptimizeOptions {
        target_opset: Some(17),
        ..Default::default()
    };
    let report = optimize(&mut m, &opts).unwrap();
    assert_eq!(report.opset.after, 17);
    assert_eq!(m.opset(""), Some(17));
}

/// y = Relu(x) with x: float[batch, 3] and y declared float[batch, 3].
fn model_with_batch() -> Model {
    use crate::ir::Dim;
    let mut m = Model::new(13);
    let g = &mut m.graph;
    let batch = || Dim::Symbolic("batch".into());
    let x = g.add_node(Node::input(ValueInfo::tensor(
        "x",
        DataType::Float,
        &[batch(), Dim::Known(3)],
    )));
    let relu = g.add_node(Node::op("Relu", "relu", &["y"]));
    g.connect(ValueRef::new(x, 0), relu, 0);
    g.outputs.push(GraphOutput {
        value: ValueRef::new(relu, 0),
        info: ValueInfo::tensor("y", DataType::Float, &[batch(), Dim::Known(3)]),
    });
    m
}

fn with_shape(name: &str, dims: &[i64]) -> OptimizeOptions {
    OptimizeOptions {
        input_shapes: vec![(name.to_string(), dims.to_vec())],
        ..Default::default()
    }
}

#[test]
fn input_shapes_fix_inputs_and_the_names_they_bind() {
    use crate::ir::Dim;
    let mut m = model_with_batch();
    optimize(&mut m, &with_shape("x", &[2, 3])).unwrap();
    m.graph.verify().unwrap();
    let x = m.graph.find_value("x").unwrap();
    assert_eq!(
        m.graph.value_info(x).shape(),
        Some(vec![Dim::Known(2), Dim::Known(3)])
    );
    assert_eq!(
        m.graph.outputs[0].info.shape(),
        Some(vec![Dim::Known(2), Dim::Known(3)])
    );
}

#[test]
fn input_shapes_that_do_not_fit_are_errors_naming_the_input() {
    for (opts, needle) in [
        (with_shape("z", &[2, 3]), "no input 'z'"),
        (with_shape("x", &[2, 3, 1]), "rank 3 given, 2 declared"),
        (with_shape("x", &[2, 4]), "axis 1 is fixed at 3"),
    ] {
        let mut m = model_with_batch();
        let err = optimize(&mut m, &opts).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
        assert!(err.contains("float32[batch,3]"), "{err}");
    }
}
