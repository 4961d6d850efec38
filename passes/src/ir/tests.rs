//! Round-trip, error and editing tests on hand-built models.

use bytes::Bytes;
use kiln_proto::onnx::attribute_proto::AttributeType;
use kiln_proto::onnx::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TrainingInfoProto, TypeProto, ValueInfoProto,
};

use super::*;
use crate::tensor::{DataType, Tensor};

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..NodeProto::default()
    }
}

fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfo::tensor(
        name,
        DataType::Float,
        &dims.iter().map(|&d| Dim::Known(d)).collect::<Vec<_>>(),
    )
    .to_proto_named(name)
}

fn weight(name: &str, dims: &[i64], n: usize) -> TensorProto {
    let vals: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let shape = dims.iter().map(|&d| d as usize).collect();
    Tensor::from_vec(shape, vals).unwrap().to_proto(name)
}

fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Graph as i32,
        g: Some(g),
        ..AttributeProto::default()
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Int as i32,
        i: Some(i),
        ..AttributeProto::default()
    }
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "test".to_string(),
        graph: Some(graph),
        ..ModelProto::default()
    }
}

/// Loads, verifies, and checks that saving gives back exactly `p`.
fn round_trip(p: &ModelProto) -> Model {
    let m = Model::from_proto(p).unwrap_or_else(|e| panic!("load failed: {e}"));
    m.graph
        .verify()
        .unwrap_or_else(|e| panic!("verify failed: {e}"));
    assert_eq!(&m.to_proto(), p);
    m
}

fn err(p: &ModelProto) -> String {
    Model::from_proto(p).unwrap_err().to_string()
}

/// x → Conv(w, b) → Relu → y, with initializers w, b.
fn conv_relu() -> GraphProto {
    GraphProto {
        name: "main".to_string(),
        node: vec![
            node("Conv", "conv1", &["x", "w", "b"], &["c"]),
            node("Relu", "relu1", &["c"], &["y"]),
        ],
        initializer: vec![weight("w", &[2, 1, 1, 1], 2), weight("b", &[2], 2)],
        input: vec![vi("x", &[1, 1, 4, 4])],
        output: vec![vi("y", &[1, 2, 4, 4])],
        ..GraphProto::default()
    }
}

#[test]
fn sorted_model_with_initializers_round_trips() {
    let m = round_trip(&model(conv_relu()));
    let g = &m.graph;
    let conv = g.find_value("c").unwrap().node;
    let ins = g.inputs(conv);
    assert_eq!(ins.len(), 3);
    assert_eq!(g.value_name(ins[1].unwrap()), "w");
    assert!(matches!(
        g[ins[1].unwrap().node].kind,
        NodeKind::Constant {
            origin: ConstantOrigin::Initializer {
                listed_as_input: false,
                ..
            },
            ..
        }
    ));
    let s = g.stats();
    assert_eq!(s.nodes, 2);
    assert_eq!(s.constants, 2);
    assert_eq!(s.parameters, 4);
    assert_eq!(s.parameter_bytes, 16);
    assert_eq!(s.op_histogram.get("Conv"), Some(&1));
    assert_eq!(m.opset(""), Some(17));
    assert_eq!(m.opset("ai.onnx"), Some(17));
    assert_eq!(m.opset("com.microsoft"), None);
}

#[test]
fn constant_op_weights_round_trip_in_their_form() {
    let mut typed = TensorProto {
        name: "inner".to_string(),
        dims: vec![2],
        data_type: DataType::Float.onnx(),
        float_data: vec![1.5, -2.0],
        doc_string: "typed field, not raw_data".to_string(),
        ..TensorProto::default()
    };
    typed.metadata_props.push(StringStringEntryProto {
        key: "k".into(),
        value: "v".into(),
    });
    let mut c1 = node("Constant", "w_const", &[], &["w"]);
    c1.attribute.push(AttributeProto {
        name: "value".to_string(),
        r#type: AttributeType::Tensor as i32,
        t: Some(typed),
        ..AttributeProto::default()
    });
    let mut c2 = node("Constant", "", &[], &["shape"]);
    c2.attribute.push(AttributeProto {
        name: "value_ints".to_string(),
        r#type: AttributeType::Ints as i32,
        ints: vec![1, -1],
        ..AttributeProto::default()
    });
    let mut c3 = node("Constant", "", &[], &["alpha"]);
    c3.domain = "ai.onnx".to_string();
    c3.attribute.push(AttributeProto {
        name: "value_float".to_string(),
        r#type: AttributeType::Float as i32,
        f: Some(0.5),
        doc_string: "alpha".to_string(),
        ..AttributeProto::default()
    });
    let mut c4 = node("Constant", "", &[], &["labels"]);
    c4.attribute.push(AttributeProto {
        name: "value_strings".to_string(),
        r#type: AttributeType::Strings as i32,
        strings: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        ..AttributeProto::default()
    });
    let g = GraphProto {
        node: vec![
            c1,
            c2,
            c3,
            c4,
            node("Mul", "", &["x", "w"], &["m"]),
            node("Mul", "", &["m", "alpha"], &["m2"]),
            node("Reshape", "", &["m2", "shape"], &["y"]),
        ],
        input: vec![vi("x", &[2])],
        output: vec![vi("y", &[]), vi("labels", &[])],
        ..GraphProto::default()
    };
    let mut m = round_trip(&model(g));
    let shape = m.graph.find_value("shape").unwrap();
    match &m.graph[shape.node].kind {
        NodeKind::Constant {
            value,
            origin: ConstantOrigin::ConstantOp { attr, .. },
        } => {
            assert_eq!(*attr, ConstantAttr::ValueInts);
            assert_eq!(value.to_vec::<i64>().unwrap(), vec![1, -1]);
        }
        other => panic!("not a constant: {other:?}"),
    }
    assert_eq!(m.graph.stats().constants, 4);
    assert_eq!(m.graph.stats().nodes, 3);

    // A value that no longer fits `value_ints` is written as `value`.
    if let NodeKind::Constant { value, .. } = &mut m.graph[shape.node].kind {
        *value = Tensor::from_vec(vec![1, 2], vec![1i64, -1]).unwrap();
    }
    let out = m.to_proto();
    let c = &out.graph.as_ref().unwrap().node[1];
    assert_eq!(c.attribute[0].name, "value");
    assert_eq!(c.attribute[0].t.as_ref().unwrap().dims, vec![1, 2]);
}

#[test]
fn nan_constants_are_still_constant_ops() {
    let mut c = node("Constant", "nan", &[], &["k"]);
    c.attribute.push(AttributeProto {
        name: "value_float".to_string(),
        r#type: AttributeType::Float as i32,
        f: Some(f32::NAN),
        ..AttributeProto::default()
    });
    let g = GraphProto {
        node: vec![c],
        output: vec![vi("k", &[])],
        ..GraphProto::default()
    };
    let m = Model::from_proto(&model(g)).unwrap();
    let k = m.graph.find_value("k").unwrap();
    assert!(matches!(m.graph[k.node].kind, NodeKind::Constant { .. }));
    let out = m.to_proto();
    let a = &out.graph.unwrap().node[0].attribute[0];
    assert_eq!(
        (a.name.as_str(), a.f.map(f32::to_bits)),
        ("value_float", Some(f32::NAN.to_bits()))
    );
}

#[test]
fn changed_initializer_is_reencoded_keeping_its_doc() {
    let mut g = conv_relu();
    g.initializer[1].doc_string = "bias".to_string();
    let mut m = round_trip(&model(g));
    let b = m.graph.find_value("b").unwrap();
    if let NodeKind::Constant { value, .. } = &mut m.graph[b.node].kind {
        *value = Tensor::from_vec(vec![2], vec![7.0f32, 8.0]).unwrap();
    }
    let out = m.to_proto();
    let t = &out.graph.as_ref().unwrap().initializer[1];
    assert_eq!(t.name, "b");
    assert_eq!(t.doc_string, "bias");
    assert_eq!(t.raw_data.len(), 8);
}

#[test]
fn initializers_listed_as_inputs_keep_their_positions() {
    let mut g = conv_relu();
    // IR 3 style: every initializer is also an input, here interleaved with the real one.
    g.input = vec![
        vi("w", &[2, 1, 1, 1]),
        vi("x", &[1, 1, 4, 4]),
        vi("b", &[2]),
    ];
    let mut p = model(g);
    p.ir_version = 3;
    let m = round_trip(&p);
    assert_eq!(m.graph.graph_inputs.len(), 3);
    let w = &m.graph[m.graph.graph_inputs[0]];
    assert!(w.is_listed_input());
    assert_eq!(
        m.graph
            .value_info(ValueRef::new(m.graph.graph_inputs[0], 0))
            .elem_type(),
        Some(DataType::Float)
    );
    assert!(matches!(
        m.graph[m.graph.graph_inputs[1]].kind,
        NodeKind::Input
    ));
}

#[test]
fn absent_optional_inputs_and_unused_outputs_round_trip() {
    let g = GraphProto {
        node: vec![
            // Clip(x, "", max): absent in the middle; Resize(x, "", "", ""): trailing ones.
            node("Clip", "clip", &["x", "", "hi"], &["c"]),
            node("Resize", "resize", &["c", "", "scales", ""], &["r"]),
            // Dropout's mask output unused; LSTM-like middle output unused.
            node("Dropout", "drop", &["r"], &["d", ""]),
            node("Split", "split", &["d"], &["s0", "", "s2"]),
        ],
        initializer: vec![weight("hi", &[], 1), weight("scales", &[4], 4)],
        input: vec![vi("x", &[1, 1, 2, 2])],
        output: vec![vi("s0", &[]), vi("s2", &[])],
        ..GraphProto::default()
    };
    let m = round_trip(&model(g));
    let g = &m.graph;
    let resize = g.find_value("r").unwrap().node;
    let ins = g.inputs(resize);
    assert_eq!(ins.len(), 4);
    assert!(ins[1].is_none() && ins[3].is_none());
    assert_eq!(g.value_name(ins[2].unwrap()), "scales");
    let clip = g.find_value("c").unwrap().node;
    assert!(g.inputs(clip)[1].is_none());
    let split = g.find_value("s0").unwrap().node;
    assert_eq!(g[split].outputs.len(), 3);
    assert_eq!(g[split].outputs[1].name, "");
    assert_eq!(g.find_value(""), None);
}

/// Main graph: `If(cond)` whose branches read `a` and `b` from the main graph, then a `Loop`
/// whose body holds another `Loop` whose body reads `a` (two levels down).
fn nested_model() -> ModelProto {
    let then_g = GraphProto {
        name: "then".to_string(),
        node: vec![node("Add", "then_add", &["a", "b"], &["t"])],
        output: vec![vi("t", &[])],
        ..GraphProto::default()
    };
    let else_g = GraphProto {
        name: "else".to_string(),
        node: vec![node("Neg", "else_neg", &["a"], &["e"])],
        output: vec![vi("e", &[])],
        ..GraphProto::default()
    };
    let mut iff = node("If", "if1", &["cond"], &["r"]);
    iff.attribute = vec![
        attr_graph("then_branch", then_g),
        attr_graph("else_branch", else_g),
    ];

    let inner_body = GraphProto {
        name: "inner".to_string(),
        node: vec![
            node("Identity", "inner_cond", &["ic"], &["ic_out"]),
            node("Add", "inner_add", &["iv", "a"], &["iv_out"]),
        ],
        input: vec![vi("ii", &[]), vi("ic", &[]), vi("iv", &[])],
        output: vec![vi("ic_out", &[]), vi("iv_out", &[])],
        ..GraphProto::default()
    };
    let mut inner_loop = node("Loop", "inner_loop", &["n", "", "ov"], &["ov_out"]);
    inner_loop.attribute = vec![attr_graph("body", inner_body)];
    let outer_body = GraphProto {
        name: "outer".to_string(),
        node: vec![
            node("Identity", "outer_cond", &["oc"], &["oc_out"]),
            inner_loop,
        ],
        input: vec![vi("oi", &[]), vi("oc", &[]), vi("ov", &[])],
        output: vec![vi("oc_out", &[]), vi("ov_out", &[])],
        ..GraphProto::default()
    };
    let mut outer_loop = node("Loop", "outer_loop", &["n", "", "r"], &["final"]);
    outer_loop.attribute = vec![attr_graph("body", outer_body)];

    model(GraphProto {
        name: "main".to_string(),
        node: vec![
            node("Relu", "make_a", &["x"], &["a"]),
            node("Sigmoid", "make_b", &["x"], &["b"]),
            iff,
            outer_loop,
        ],
        initializer: vec![Tensor::scalar(3i64).to_proto("n")],
        input: vec![vi("x", &[]), vi("cond", &[])],
        output: vec![vi("final", &[])],
        ..GraphProto::default()
    })
}

#[test]
fn subgraphs_capture_outer_values_at_every_level() {
    let m = round_trip(&nested_model());
    let g = &m.graph;
    let a = g.find_value("a").unwrap();
    let b = g.find_value("b").unwrap();
    let if_node = g.find_value("r").unwrap().node;
    let outer_loop = g.find_value("final").unwrap().node;

    // The If reads a and b through its branches; the outer Loop reads a two levels down.
    assert!(g.consumers(a).contains(&(if_node, InputSlot::Captured)));
    assert!(g.consumers(b).contains(&(if_node, InputSlot::Captured)));
    assert!(g.consumers(a).contains(&(outer_loop, InputSlot::Captured)));
    assert_eq!(g.captures(if_node), vec![a, b]);
    // `n` too: the inner Loop reads it as its trip count.
    let n = g.find_value("n").unwrap();
    assert_eq!(g.captures(outer_loop), vec![a, n]);

    // The outer body has an Outer node for `a`, captured by the inner Loop node.
    let outer_body = g[outer_loop].subgraphs().next().unwrap();
    let outer_a = outer_body.find_value("a").unwrap();
    assert!(matches!(outer_body[outer_a.node].kind, NodeKind::Outer));
    let inner_loop = outer_body.find_value("ov_out").unwrap().node;
    assert_eq!(outer_body.captures(inner_loop), vec![outer_a]);
    let inner_body = outer_body[inner_loop].subgraphs().next().unwrap();
    assert!(matches!(
        inner_body[inner_body.find_value("a").unwrap().node].kind,
        NodeKind::Outer
    ));
    assert_eq!(g.subgraph_count(), 4);
    assert_eq!(g.stats().subgraphs, 4);
    assert_eq!(g.stats().nodes, 4 + 2 + 2 + 2);
}

#[test]
fn inner_loop_trip_count_from_main_graph_is_captured_by_outer_loop() {
    let p = nested_model();
    let m = Model::from_proto(&p).unwrap();
    let g = &m.graph;
    let n = g.find_value("n").unwrap();
    let outer_loop = g.find_value("final").unwrap().node;
    // `n` feeds the outer Loop as input 0 and the inner Loop (inside the body) by capture.
    assert!(g
        .consumers(n)
        .contains(&(outer_loop, InputSlot::Operand(0))));
    assert!(g.consumers(n).contains(&(outer_loop, InputSlot::Captured)));
}

#[test]
fn removing_a_captured_producer_is_seen() {
    let mut m = Model::from_proto(&nested_model()).unwrap();
    let b = m.graph.find_value("b").unwrap();
    m.graph.remove_node(b.node);
    let e = m.graph.verify();
    // The then-branch's Outer node for `b` is no longer captured.
    assert!(e.unwrap_err().to_string().contains("outer value 'b'"));
}

#[test]
fn replace_all_uses_renames_captured_names_in_bodies() {
    let mut m = Model::from_proto(&nested_model()).unwrap();
    let g = &mut m.graph;
    let a = g.find_value("a").unwrap();
    let b = g.find_value("b").unwrap();
    g.replace_all_uses(a, b);
    g.verify().unwrap();
    assert!(g.consumers(a).is_empty());
    let out = m.to_proto();
    let main = out.graph.as_ref().unwrap();
    let if_node = &main.node[2];
    let then_g = if_node.attribute[0].g.as_ref().unwrap();
    assert_eq!(then_g.node[0].input, vec!["b", "b"]);
    let outer_body = main.node[3].attribute[0].g.as_ref().unwrap();
    let inner_body = outer_body.node[1].attribute[0].g.as_ref().unwrap();
    assert_eq!(inner_body.node[1].input, vec!["iv", "b"]);
    // Dead `make_a` can now go, and the graph still verifies.
    m.graph.remove_node(a.node);
    m.graph.verify().unwrap();
}

#[test]
fn value_info_is_attached_and_leftovers_kept_in_place() {
    let mut g = conv_relu();
    let mut c_info = vi("c", &[1, 2, 4, 4]);
    c_info.doc_string = "conv output".to_string();
    g.value_info = vec![
        vi("nowhere", &[1]), // names nothing
        c_info,
        vi("x", &[1, 1, 4, 4]), // a graph input: its type lives in the input list
        ValueInfoProto {
            name: "w".to_string(), // an initializer: name only
            ..ValueInfoProto::default()
        },
        vi("c", &[9]), // a repeat
    ];
    let m = round_trip(&model(g));
    let c = m.graph.find_value("c").unwrap();
    let info = m.graph.value_info(c);
    assert_eq!(
        info.shape(),
        Some(vec![
            Dim::Known(1),
            Dim::Known(2),
            Dim::Known(4),
            Dim::Known(4)
        ])
    );
    assert_eq!(info.doc_string, "conv output");
    let left: Vec<&str> = m
        .graph
        .unattached_value_info()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(left, vec!["nowhere", "x", "c"]);
}

#[test]
fn new_annotations_are_written_after_existing_value_info() {
    let mut m = Model::from_proto(&model(conv_relu())).unwrap();
    let c = m.graph.find_value("c").unwrap();
    *m.graph.value_info_mut(c) = ValueInfo::tensor("c", DataType::Float, &[Dim::Unknown]);
    let out = m.to_proto();
    assert_eq!(out.graph.unwrap().value_info[0].name, "c");
}

#[test]
fn metadata_docs_functions_and_untyped_attributes_round_trip() {
    let mut g = conv_relu();
    g.doc_string = "graph doc".to_string();
    g.metadata_props.push(StringStringEntryProto {
        key: "gk".into(),
        value: "gv".into(),
    });
    g.node[0].doc_string = "conv doc".to_string();
    g.node[0].metadata_props.push(StringStringEntryProto {
        key: "nk".into(),
        value: "nv".into(),
    });
    // An old exporter's attribute with no `type`.
    g.node[0].attribute.push(AttributeProto {
        name: "group".to_string(),
        i: Some(1),
        ..AttributeProto::default()
    });
    g.node[0].attribute.push(AttributeProto {
        name: "tp".to_string(),
        r#type: AttributeType::TypeProto as i32,
        tp: Some(TypeProto::default()),
        ..AttributeProto::default()
    });
    g.output[0].doc_string = "the result".to_string();
    g.node.push(NodeProto {
        domain: "local".to_string(),
        ..node("MyFunc", "f", &["y"], &["z"])
    });
    g.output.push(vi("z", &[]));
    let mut p = model(g);
    p.doc_string = "model doc".to_string();
    p.producer_version = "1.0".to_string();
    p.domain = "org.example".to_string();
    p.model_version = 7;
    p.metadata_props.push(StringStringEntryProto {
        key: "author".into(),
        value: "me".into(),
    });
    p.opset_import.push(OperatorSetIdProto {
        domain: "local".into(),
        version: 1,
    });
    p.functions.push(FunctionProto {
        name: "MyFunc".to_string(),
        domain: "local".to_string(),
        input: vec!["i".into()],
        output: vec!["o".into()],
        node: vec![node("Identity", "", &["i"], &["o"])],
        ..FunctionProto::default()
    });
    p.training_info.push(TrainingInfoProto::default());
    let m = round_trip(&p);
    assert_eq!(m.graph.stats().op_histogram.get("local.MyFunc"), Some(&1));
    let conv = m.graph.find_value("c").unwrap().node;
    assert_eq!(
        m.graph[conv].attr("group").and_then(AttrValue::as_int),
        Some(1)
    );
}

#[test]
fn exporter_habits_are_accepted() {
    // tf2onnx names, unnamed nodes, an input without type, an initializer as graph output,
    // the same value output twice, a graph input output directly.
    let g = GraphProto {
        node: vec![
            node("Relu", "", &["in:0"], &["model/relu:0"]),
            node("Add", "", &["model/relu:0", "w:0"], &["out:0"]),
        ],
        initializer: vec![weight("w:0", &[1], 1)],
        input: vec![ValueInfoProto {
            name: "in:0".to_string(),
            ..ValueInfoProto::default()
        }],
        output: vec![
            vi("out:0", &[]),
            vi("w:0", &[1]),
            vi("out:0", &[]),
            vi("in:0", &[]),
        ],
        ..GraphProto::default()
    };
    let m = round_trip(&model(g));
    assert_eq!(m.graph.outputs[0].value, m.graph.outputs[2].value);
}

#[test]
fn unsorted_model_comes_out_sorted_and_verifies() {
    let mut g = conv_relu();
    g.node.reverse();
    g.node.push(node("Identity", "late", &["y"], &["y2"]));
    g.node.insert(0, node("Identity", "early", &["x"], &["x2"]));
    g.output.push(vi("y2", &[]));
    g.output.push(vi("x2", &[]));
    let m = Model::from_proto(&model(g)).unwrap();
    m.graph.verify().unwrap();
    let out = m.to_proto();
    let names: Vec<&str> = out
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, vec!["early", "conv1", "relu1", "late"]);
    // And it is stable from then on.
    assert_eq!(Model::from_proto(&out).unwrap().to_proto(), out);
}

#[test]
fn editing_api_builds_valid_graphs() {
    let mut m = Model::from_proto(&model(conv_relu())).unwrap();
    let g = &mut m.graph;
    let y = g.find_value("y").unwrap();
    let scale = g.add_node(Node::initializer("scale", Tensor::scalar(2.0f32)));
    let mul = g.add_node(Node::op("Mul", "mul", &["y_scaled"]));
    g.connect(y, mul, 0);
    g.connect(ValueRef::new(scale, 0), mul, 1);
    let new_out = ValueRef::new(mul, 0);
    for o in &mut g.outputs {
        o.value = new_out;
    }
    g.verify().unwrap();
    assert_eq!(g.consumers(y), vec![(mul, InputSlot::Operand(0))]);
    assert_eq!(g.fresh_name("y"), "y_1");
    let out = m.to_proto();
    let gp = out.graph.unwrap();
    assert_eq!(gp.node.last().unwrap().op_type, "Mul");
    assert_eq!(gp.initializer.last().unwrap().name, "scale");
    assert_eq!(gp.output[0].name, "y_scaled");

    // A slot beyond the arity, or a value fed twice, is caught.
    let mut m = Model::from_proto(&model(conv_relu())).unwrap();
    let relu = m.graph.find_value("y").unwrap().node;
    m.graph[relu].input_arity = 0;
    assert!(m
        .graph
        .verify()
        .unwrap_err()
        .to_string()
        .contains("has 0 input(s)"));
}

// ---- errors ----

#[test]
fn reading_an_unknown_value_is_an_error() {
    let mut g = conv_relu();
    g.node[1].input[0] = "nope".to_string();
    assert_eq!(
        err(&model(g)),
        "node 'relu1' (Relu) reads 'nope', which no node, graph input or initializer produces"
    );
    let mut g = conv_relu();
    g.node[1].name.clear();
    g.node[1].input[0] = "nope".to_string();
    assert!(err(&model(g)).starts_with("node #1 Relu reads 'nope'"));
}

#[test]
fn values_produced_twice_are_errors() {
    let mut g = conv_relu();
    g.node[1].output[0] = "c".to_string();
    assert_eq!(
        err(&model(g)),
        "value 'c' is produced twice: by node 'conv1' (Conv) and by node 'relu1' (Relu)"
    );
    let mut g = conv_relu();
    g.node[1].output[0] = "w".to_string();
    assert_eq!(
        err(&model(g)),
        "value 'w' is produced twice: by node 'relu1' (Relu) and by an initializer"
    );
    let mut g = conv_relu();
    g.node[1].output[0] = "x".to_string();
    assert!(err(&model(g)).contains("by node 'relu1' (Relu) and by a graph input"));
}

#[test]
fn cycles_are_errors() {
    let g = GraphProto {
        node: vec![
            node("Add", "a", &["x", "q"], &["p"]),
            node("Relu", "b", &["p"], &["q"]),
            node("Relu", "c", &["q"], &["y"]),
        ],
        input: vec![vi("x", &[])],
        output: vec![vi("y", &[])],
        ..GraphProto::default()
    };
    assert_eq!(
        err(&model(g)),
        "the graph has a cycle through node(s) 'a' (Add), 'b' (Relu)"
    );
}

#[test]
fn unknown_graph_output_is_an_error() {
    let mut g = conv_relu();
    g.output.push(vi("ghost", &[]));
    assert_eq!(
        err(&model(g)),
        "graph output 'ghost' names no node output, graph input or initializer"
    );
}

#[test]
fn bad_tensors_are_errors_naming_the_tensor() {
    let mut g = conv_relu();
    g.initializer[0] = TensorProto {
        name: "w".to_string(),
        dims: vec![4, 4],
        data_type: DataType::Float.onnx(),
        raw_data: Bytes::from(vec![0u8; 60]),
        ..TensorProto::default()
    };
    assert_eq!(
        err(&model(g)),
        "initializer 'w': raw_data holds 60 bytes but shape [4, 4] of float32 needs 64"
    );
    let mut g = conv_relu();
    let mut c = node("Constant", "k", &[], &["k"]);
    c.attribute.push(AttributeProto {
        name: "value".to_string(),
        r#type: AttributeType::Tensor as i32,
        t: Some(TensorProto {
            data_type: 999,
            ..TensorProto::default()
        }),
        ..AttributeProto::default()
    });
    g.node.push(c);
    assert_eq!(
        err(&model(g)),
        "node 'k' (Constant) attribute 'value': unknown element type 999"
    );
}

#[test]
fn unknown_attribute_type_is_an_error() {
    let mut g = conv_relu();
    g.node[0].attribute.push(AttributeProto {
        name: "weird".to_string(),
        r#type: 42,
        ..AttributeProto::default()
    });
    assert_eq!(
        err(&model(g)),
        "node 'conv1' (Conv) attribute 'weird' has unknown type 42"
    );
    let mut g = conv_relu();
    g.node[0].attribute.push(attr_int("ok", 1));
    g.node[0].attribute.push(AttributeProto {
        name: "empty".to_string(),
        ..AttributeProto::default()
    });
    assert!(err(&model(g)).contains("attribute 'empty' has unknown type 0"));
}

#[test]
fn errors_inside_subgraphs_name_the_owner() {
    let mut p = nested_model();
    let main = p.graph.as_mut().unwrap();
    let body = main.node[3].attribute[0].g.as_mut().unwrap();
    let inner = body.node[1].attribute[0].g.as_mut().unwrap();
    inner.node[1].input[1] = "zzz".to_string();
    assert_eq!(
        err(&p),
        "in attribute 'body' of node 'outer_loop' (Loop): in attribute 'body' of node \
         'inner_loop' (Loop): node 'inner_add' (Add) reads 'zzz', which no node, graph input \
         or initializer produces"
    );
}

#[test]
fn a_model_without_graph_is_an_error() {
    assert_eq!(
        Model::from_proto(&ModelProto::default()).unwrap_err(),
        IrError::MissingGraph
    );
}

#[test]
fn sparse_initializers_are_producers_and_round_trip() {
    use kiln_proto::onnx::SparseTensorProto;
    let sparse = SparseTensorProto {
        values: Some(weight("sp", &[2], 2)),
        indices: Some(
            Tensor::from_vec(vec![2], vec![0i64, 3])
                .unwrap()
                .to_proto(""),
        ),
        dims: vec![4],
    };
    let g = GraphProto {
        node: vec![node("Add", "add", &["x", "sp"], &["y"])],
        sparse_initializer: vec![sparse],
        input: vec![vi("x", &[4]), vi("sp", &[4])],
        output: vec![vi("y", &[4])],
        ..GraphProto::default()
    };
    let m = round_trip(&model(g));
    let sp = m.graph.find_value("sp").unwrap();
    assert!(matches!(
        m.graph[sp.node].kind,
        NodeKind::SparseConstant {
            listed_as_input: true,
            ..
        }
    ));
    assert_eq!(m.graph.graph_inputs[1], sp.node);
}

#[test]
fn explicit_zero_scalars_keep_their_presence_and_absent_ones_stay_absent() {
    use kiln_proto::onnx::AttributeProto;
    let attr = |i: Option<i64>| AttributeProto {
        name: "axis".into(),
        r#type: AttributeType::Int as i32,
        i,
        ..AttributeProto::default()
    };
    for i in [Some(0), None, Some(2)] {
        let mut g = conv_relu();
        g.node[1].attribute.push(attr(i));
        let m = Model::from_proto(&model(g)).unwrap();
        // Through the IR and through the wire: proto2 readers must see `axis: 0` as set.
        let bytes = kiln_proto::encode_model(&m.to_proto()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let back = kiln_proto::decode_model(bytes.into(), &dir.path().join("m.onnx"))
            .unwrap()
            .model;
        let a = back.graph.unwrap().node[1]
            .attribute
            .last()
            .cloned()
            .unwrap();
        assert_eq!(a.i, i);
    }
}
