//! Tests of the walk itself: declarations win, graph outputs, unknown operators, subgraphs.

use kiln_proto::onnx::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, ValueInfoProto,
};

use super::testutil::*;
use super::InferShapes;
use crate::ir::{describe_type, Dim, GraphOutput, Model, Node, ValueInfo, ValueRef};
use crate::pipeline::Pass;
use crate::tensor::DataType;

fn vi(name: &str, t: DataType, dims: &[&str]) -> ValueInfoProto {
    let d: Vec<Dim> = dims.iter().map(|s| dim(s)).collect();
    ValueInfo::tensor(name, t, &d).to_proto_named(name)
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..NodeProto::default()
    }
}

fn model(graph: GraphProto, opset: i64) -> Model {
    let p = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(graph),
        ..ModelProto::default()
    };
    Model::from_proto(&p).unwrap()
}

fn type_of(m: &Model, name: &str) -> String {
    let v = m.graph.find_value(name).unwrap();
    describe_type(m.graph.value_info(v).ty.as_ref())
}

#[test]
fn declared_types_win_and_conflicts_are_counted() {
    let g = GraphProto {
        node: vec![node("Relu", &["x"], &["r"]), node("Neg", &["r"], &["y"])],
        input: vec![vi("x", DataType::Float, &["n", "3"])],
        output: vec![vi("y", DataType::Float, &["?", "4"])],
        value_info: vec![vi("r", DataType::Float, &["?", "?"])],
        ..GraphProto::default()
    };
    let mut m = model(g, 13);
    let changes = InferShapes.run(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(
        type_of(&m, "r"),
        "float32[n,3]",
        "unknown declared dims are refined"
    );
    // The output declares 4 where inference says 3: the declaration is kept.
    assert_eq!(
        describe_type(m.graph.outputs[0].info.ty.as_ref()),
        "float32[n,4]"
    );
    assert_eq!(changes.get("conflicts"), 1);
    // A graph output gets no value_info entry of its own.
    let y = m.graph.find_value("y").unwrap();
    assert!(m.graph.value_info(y).ty.is_none());
    let proto = m.to_proto();
    assert!(proto
        .graph
        .unwrap()
        .value_info
        .iter()
        .all(|v| v.name != "y"));
}

#[test]
fn unknown_ops_leave_outputs_unknown_and_downstream_continues() {
    let mut custom = node("Mystery", &["x"], &["u"]);
    custom.domain = "com.example".to_string();
    let g = GraphProto {
        node: vec![
            custom,
            node("Relu", &["u"], &["r"]),
            node("Shape", &["u"], &["s"]),
        ],
        input: vec![vi("x", DataType::Float, &["2"])],
        output: vec![
            vi("r", DataType::Float, &[]),
            vi("s", DataType::Int64, &["?"]),
        ],
        ..GraphProto::default()
    };
    let mut m = model(g, 13);
    let changes = InferShapes.run(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(type_of(&m, "u"), "?");
    assert_eq!(changes.get("conflicts"), 0);
    assert_eq!(
        describe_type(m.graph.outputs[1].info.ty.as_ref()),
        "int64[?]"
    );
}

#[test]
fn second_run_changes_nothing() {
    let (mut m, first) = run_one(13, "Relu", &[f32_in(&["n"])], &[], 1);
    assert_eq!(first.get("typed"), 1);
    let again = InferShapes.run(&mut m).unwrap();
    assert!(again.is_empty(), "{again}");
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Graph as i32,
        g: Some(g),
        ..AttributeProto::default()
    }
}

#[test]
fn if_branches_merge_and_bodies_see_outer_types() {
    // then: Relu(x) of [n,3]; else: Transpose(x) of [3,n]; both read x from outside.
    let then_g = GraphProto {
        name: "then".into(),
        node: vec![node("Relu", &["x"], &["t"])],
        output: vec![ValueInfoProto {
            name: "t".into(),
            ..ValueInfoProto::default()
        }],
        ..GraphProto::default()
    };
    let else_g = GraphProto {
        name: "else".into(),
        node: vec![node("Transpose", &["x"], &["e"])],
        output: vec![ValueInfoProto {
            name: "e".into(),
            ..ValueInfoProto::default()
        }],
        ..GraphProto::default()
    };
    let mut if_node = node("If", &["c"], &["y"]);
    if_node.attribute = vec![
        graph_attr("then_branch", then_g),
        graph_attr("else_branch", else_g),
    ];
    let g = GraphProto {
        node: vec![if_node, node("Neg", &["y"], &["z"])],
        input: vec![
            vi("c", DataType::Bool, &[]),
            vi("x", DataType::Float, &["n", "3"]),
        ],
        output: vec![vi("z", DataType::Float, &[])],
        ..GraphProto::default()
    };
    let mut m = model(g, 13);
    InferShapes.run(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert_eq!(type_of(&m, "y"), "float32[?,?]");
    let if_idx = m.graph.find_value("y").unwrap().node;
    let then_body = m.graph[if_idx].subgraphs().next().unwrap();
    let t = then_body.outputs[0].value;
    assert_eq!(
        describe_type(then_body.outputs[0].info.ty.as_ref()),
        "float32[n,3]"
    );
    assert!(then_body.value_info(t).ty.is_none());
}

#[test]
fn loop_outputs_get_element_types() {
    let body = GraphProto {
        name: "body".into(),
        node: vec![
            node("Identity", &["cond_in"], &["cond_out"]),
            node("Add", &["acc_in", "w"], &["acc_out"]),
            node("Cast", &["i"], &["scan"]),
        ],
        input: vec![
            vi("i", DataType::Int64, &[]),
            vi("cond_in", DataType::Bool, &[]),
            ValueInfoProto {
                name: "acc_in".into(),
                ..ValueInfoProto::default()
            },
        ],
        output: ["cond_out", "acc_out", "scan"]
            .iter()
            .map(|n| ValueInfoProto {
                name: n.to_string(),
                ..ValueInfoProto::default()
            })
            .collect(),
        ..GraphProto::default()
    };
    let mut cast_attr = AttributeProto {
        name: "to".into(),
        r#type: AttributeType::Int as i32,
        i: Some(1),
        ..AttributeProto::default()
    };
    cast_attr.i = Some(DataType::Float.onnx() as i64);
    let mut body = body;
    body.node[2].attribute = vec![cast_attr];
    let mut lp = node("Loop", &["m", "", "acc0"], &["acc", "scans"]);
    lp.attribute = vec![graph_attr("body", body)];
    let g = GraphProto {
        node: vec![lp],
        input: vec![
            vi("m", DataType::Int64, &[]),
            vi("acc0", DataType::Float, &["2"]),
            vi("w", DataType::Float, &["2"]),
        ],
        output: vec![
            ValueInfoProto {
                name: "acc".into(),
                ..ValueInfoProto::default()
            },
            ValueInfoProto {
                name: "scans".into(),
                ..ValueInfoProto::default()
            },
        ],
        ..GraphProto::default()
    };
    let mut m = model(g, 13);
    InferShapes.run(&mut m).unwrap();
    m.graph.verify().unwrap();
    // The carried value may change shape between iterations: only its type is known.
    assert_eq!(
        describe_type(m.graph.outputs[0].info.ty.as_ref()),
        "float32"
    );
    assert_eq!(
        describe_type(m.graph.outputs[1].info.ty.as_ref()),
        "float32[?]"
    );
}

#[test]
fn outer_values_in_hand_built_bodies_resolve() {
    // A graph output that is a graph input: nothing to infer, nothing breaks.
    let mut m = Model::new(13);
    let x = m.graph.add_node(Node::input(ValueInfo::tensor(
        "x",
        DataType::Float,
        &[Dim::Known(1)],
    )));
    m.graph.outputs.push(GraphOutput {
        value: ValueRef::new(x, 0),
        info: ValueInfo::new("x"),
    });
    let changes = InferShapes.run(&mut m).unwrap();
    m.graph.verify().unwrap();
    assert!(changes.is_empty());
}

#[test]
fn listed_initializers_are_constants_only_before_ir_4() {
    use kiln_proto::onnx::TensorProto;
    let shape = TensorProto {
        name: "shape".into(),
        dims: vec![2],
        data_type: DataType::Int64.onnx(),
        int64_data: vec![2, 3],
        ..TensorProto::default()
    };
    for (ir, expected) in [(3, "float32[2,3]"), (8, "float32[?,?]")] {
        let g = GraphProto {
            node: vec![
                node("ConstantOfShape", &["shape"], &["w"]),
                node("Relu", &["w"], &["y"]),
            ],
            input: vec![vi("shape", DataType::Int64, &["2"])],
            initializer: vec![shape.clone()],
            output: vec![vi("y", DataType::Float, &[])],
            ..GraphProto::default()
        };
        let p = ModelProto {
            ir_version: ir,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(g),
            ..ModelProto::default()
        };
        let mut m = Model::from_proto(&p).unwrap();
        InferShapes.run(&mut m).unwrap();
        m.graph.verify().unwrap();
        // Before IR 4 every initializer is listed and cannot be overridden: its value counts.
        assert_eq!(type_of(&m, "w"), expected, "IR {ir}");
    }
}
